-- What the admin API needs beyond 001: indexes behind its filtered lists and behind the
-- credential lookups that follow a hierarchy change, and the database's own guard on the
-- immutability of subscriptions and rate plan versions.

CREATE INDEX teams_customer ON teams (tenant_id, customer_id);
CREATE INDEX agents_team ON agents (tenant_id, team_id);
CREATE INDEX apps_team ON apps (tenant_id, team_id);
CREATE INDEX api_keys_agent ON api_keys (tenant_id, agent_id) WHERE agent_id IS NOT NULL;
CREATE INDEX api_keys_app ON api_keys (tenant_id, app_id) WHERE app_id IS NOT NULL;
CREATE INDEX client_credentials_agent ON client_credentials (tenant_id, agent_id);

-- A plan change forms a chain, never a fork: a subscription is superseded at most once.
CREATE UNIQUE INDEX subscriptions_superseded_once ON subscriptions (tenant_id, supersedes) WHERE supersedes IS NOT NULL;

-- Subscriptions are immutable snapshots. The one change allowed is closing one: setting
-- effective_to, or moving it earlier. Nothing else is updated and nothing is deleted.
CREATE FUNCTION subscriptions_only_close() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'subscription % cannot be deleted: subscriptions are history; end it instead', OLD.id
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  -- scope_key is generated, so not yet computed in NEW; it follows the columns compared here.
  IF to_jsonb(NEW) - 'effective_to' - 'scope_key' IS DISTINCT FROM to_jsonb(OLD) - 'effective_to' - 'scope_key' THEN
    RAISE EXCEPTION 'subscription % is immutable: only effective_to may be set, to close it', OLD.id
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  IF NEW.effective_to IS NULL AND OLD.effective_to IS NOT NULL
     OR NEW.effective_to > OLD.effective_to THEN
    RAISE EXCEPTION 'subscription % ends at %; it cannot be reopened or extended', OLD.id, OLD.effective_to
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END $$;

CREATE TRIGGER subscriptions_only_close BEFORE UPDATE OR DELETE ON subscriptions
  FOR EACH ROW EXECUTE FUNCTION subscriptions_only_close();

-- A rate plan version never changes once made: subscriptions and ledger rows name it.
CREATE FUNCTION rate_plan_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'rate plan version % is immutable: add a new version instead', OLD.id
    USING ERRCODE = 'integrity_constraint_violation';
END $$;

CREATE TRIGGER rate_plan_versions_immutable BEFORE UPDATE OR DELETE ON rate_plan_versions
  FOR EACH ROW EXECUTE FUNCTION rate_plan_versions_immutable();
