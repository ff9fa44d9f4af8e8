-- The billing hierarchy: tenant -> customers -> teams -> agents and apps -> API keys,
-- plus client credentials, products, MCP servers and tools, rate plans, subscriptions,
-- spend caps and cost models. Every row carries tenant_id, and every reference between
-- tenant-owned rows is a composite (tenant_id, id) foreign key, so the database itself
-- refuses a link across tenants.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE tenants (
  id          text PRIMARY KEY,
  name        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- Bearer tokens of a tenant: 'ingest' (events, authorize, quote, invoices) and 'admin'.
-- A token reads amt_<lookup_id>_<secret>; only sha256(token) is stored, compared in constant time.
CREATE TABLE tenant_tokens (
  id           text PRIMARY KEY,
  tenant_id    text NOT NULL REFERENCES tenants(id),
  kind         text NOT NULL CHECK (kind IN ('ingest', 'admin')),
  lookup_id    text NOT NULL UNIQUE,
  token_hash   bytea NOT NULL,
  prefix       text NOT NULL,
  last4        text NOT NULL,
  status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
  expires_at   timestamptz,
  created_at   timestamptz NOT NULL DEFAULT now(),
  revoked_at   timestamptz
);
CREATE INDEX tenant_tokens_tenant ON tenant_tokens (tenant_id);

CREATE TABLE customers (
  id           text PRIMARY KEY,
  tenant_id    text NOT NULL REFERENCES tenants(id),
  name         text NOT NULL,
  external_ref text,
  status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
  metadata     jsonb NOT NULL DEFAULT '{}',
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id),
  UNIQUE (tenant_id, external_ref)
);

CREATE TABLE teams (
  id           text PRIMARY KEY,
  tenant_id    text NOT NULL,
  customer_id  text NOT NULL,
  name         text NOT NULL,
  metadata     jsonb NOT NULL DEFAULT '{}',
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id),
  FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id)
);

CREATE TABLE products (
  id           text PRIMARY KEY,
  tenant_id    text NOT NULL REFERENCES tenants(id),
  name         text NOT NULL,
  kind         text NOT NULL CHECK (kind IN ('standard_api', 'agentic_api', 'managed_agent', 'mcp_server')),
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id)
);

CREATE TABLE agents (
  id                      text PRIMARY KEY,
  tenant_id               text NOT NULL,
  team_id                 text NOT NULL,
  product_id              text,
  name                    text NOT NULL,
  agent_type              text NOT NULL CHECK (agent_type IN ('CLAUDE', 'GPT', 'LANGCHAIN', 'CREWAI', 'AUTOGEN', 'CUSTOM')),
  max_concurrent_sessions integer CHECK (max_concurrent_sessions > 0),
  rate_limit_per_minute   integer CHECK (rate_limit_per_minute > 0),
  status                  text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
  metadata                jsonb NOT NULL DEFAULT '{}',
  created_at              timestamptz NOT NULL DEFAULT now(),
  updated_at              timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id),
  FOREIGN KEY (tenant_id, team_id) REFERENCES teams (tenant_id, id),
  FOREIGN KEY (tenant_id, product_id) REFERENCES products (tenant_id, id)
);

CREATE TABLE apps (
  id           text PRIMARY KEY,
  tenant_id    text NOT NULL,
  team_id      text NOT NULL,
  product_id   text,
  name         text NOT NULL,
  status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
  metadata     jsonb NOT NULL DEFAULT '{}',
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id),
  FOREIGN KEY (tenant_id, team_id) REFERENCES teams (tenant_id, id),
  FOREIGN KEY (tenant_id, product_id) REFERENCES products (tenant_id, id)
);

-- API keys belong to an agent or an app. Only sha256(key) is stored (hex), with a visible
-- prefix and the last four characters. Rotation revokes the old key, optionally after a grace
-- period (expires_at), and links the new one to it.
CREATE TABLE api_keys (
  id           text PRIMARY KEY,
  tenant_id    text NOT NULL,
  agent_id     text,
  app_id       text,
  key_hash     text NOT NULL UNIQUE,
  prefix       text NOT NULL,
  last4        text NOT NULL,
  name         text,
  status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
  expires_at   timestamptz,
  rotated_from text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  revoked_at   timestamptz,
  UNIQUE (tenant_id, id),
  CHECK ((agent_id IS NULL) <> (app_id IS NULL)),
  FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id),
  FOREIGN KEY (tenant_id, app_id) REFERENCES apps (tenant_id, id)
);

-- Client credentials of a managed agent or MCP client: a public client_id and a hashed secret.
CREATE TABLE client_credentials (
  id           text PRIMARY KEY,
  tenant_id    text NOT NULL,
  agent_id     text NOT NULL,
  client_id    text NOT NULL UNIQUE,
  secret_hash  bytea NOT NULL,
  prefix       text NOT NULL,
  last4        text NOT NULL,
  status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
  expires_at   timestamptz,
  rotated_from text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  revoked_at   timestamptz,
  UNIQUE (tenant_id, id),
  FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
);

CREATE TABLE mcp_servers (
  id           text PRIMARY KEY,
  tenant_id    text NOT NULL,
  product_id   text,
  name         text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id),
  FOREIGN KEY (tenant_id, product_id) REFERENCES products (tenant_id, id)
);

CREATE TABLE mcp_tools (
  id            text PRIMARY KEY,
  tenant_id     text NOT NULL,
  mcp_server_id text NOT NULL,
  name          text NOT NULL,
  aliases       text[] NOT NULL DEFAULT '{}',
  version       text,
  deprecated    boolean NOT NULL DEFAULT false,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id),
  UNIQUE (tenant_id, mcp_server_id, name),
  FOREIGN KEY (tenant_id, mcp_server_id) REFERENCES mcp_servers (tenant_id, id)
);

-- A rate plan is a name and a currency; its pricing lives in immutable, numbered versions.
CREATE TABLE rate_plans (
  id           text PRIMARY KEY,
  tenant_id    text NOT NULL REFERENCES tenants(id),
  name         text NOT NULL,
  currency     text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id)
);

CREATE TABLE rate_plan_versions (
  id           text PRIMARY KEY,
  tenant_id    text NOT NULL,
  rate_plan_id text NOT NULL,
  version      integer NOT NULL CHECK (version > 0),
  pricing      jsonb NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id),
  UNIQUE (rate_plan_id, version),
  FOREIGN KEY (tenant_id, rate_plan_id) REFERENCES rate_plans (tenant_id, id)
);

-- Subscriptions are immutable snapshots. The scope is the customer, or one of its teams,
-- agents or apps (the most specific active one rates an event). A plan change closes one
-- (effective_to) and opens the next; overlapping periods for one scope are refused.
CREATE TABLE subscriptions (
  id                   text PRIMARY KEY,
  tenant_id            text NOT NULL,
  customer_id          text NOT NULL,
  team_id              text,
  agent_id             text,
  app_id               text,
  rate_plan_version_id text NOT NULL,
  effective_from       timestamptz NOT NULL,
  effective_to         timestamptz,
  overrides            jsonb NOT NULL DEFAULT '{}',
  commitment           jsonb,
  allocation           jsonb,
  supersedes           text,
  created_at           timestamptz NOT NULL DEFAULT now(),
  scope_key            text GENERATED ALWAYS AS (
    customer_id || '/' || coalesce(team_id, '') || '/' || coalesce(agent_id, '') || '/' || coalesce(app_id, '')
  ) STORED,
  UNIQUE (tenant_id, id),
  CHECK (effective_to IS NULL OR effective_to > effective_from),
  CHECK (num_nonnulls(team_id, agent_id, app_id) <= 1),
  FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id),
  FOREIGN KEY (tenant_id, team_id) REFERENCES teams (tenant_id, id),
  FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id),
  FOREIGN KEY (tenant_id, app_id) REFERENCES apps (tenant_id, id),
  FOREIGN KEY (tenant_id, rate_plan_version_id) REFERENCES rate_plan_versions (tenant_id, id),
  CONSTRAINT subscriptions_no_overlap EXCLUDE USING gist (
    tenant_id WITH =, scope_key WITH =,
    tstzrange(effective_from, coalesce(effective_to, 'infinity'::timestamptz)) WITH &&
  )
);
CREATE INDEX subscriptions_customer ON subscriptions (tenant_id, customer_id);

-- A hard spend cap: a limit on the cost an agent, team or customer runs up per session,
-- day or month. Crossing it pauses that scope (or the session, for per-session caps).
CREATE TABLE spend_caps (
  id           text PRIMARY KEY,
  tenant_id    text NOT NULL REFERENCES tenants(id),
  scope_kind   text NOT NULL CHECK (scope_kind IN ('agent', 'team', 'customer')),
  scope_id     text NOT NULL,
  period       text NOT NULL CHECK (period IN ('session', 'day', 'month')),
  limit_nano   bigint NOT NULL CHECK (limit_nano > 0),
  action       text NOT NULL DEFAULT 'pause' CHECK (action IN ('pause', 'alert')),
  status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id)
);
CREATE INDEX spend_caps_scope ON spend_caps (tenant_id, scope_kind, scope_id);

-- The provider's cost model: what each tool, each model's tokens and each compute
-- millisecond cost the tenant (decimal strings in the currency's major unit).
CREATE TABLE cost_models (
  id             text PRIMARY KEY,
  tenant_id      text NOT NULL REFERENCES tenants(id),
  name           text NOT NULL,
  currency       text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  model          jsonb NOT NULL,
  effective_from timestamptz NOT NULL DEFAULT '-infinity',
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id)
);
