-- The billing lifecycle: billing periods per subscription, closed invoices and credit notes,
-- corrections to the ledger (append-only), prepaid credits.

-- A subscription bills by calendar month (UTC) or by anniversary: periods of one month counted
-- from billing_anchor (its start; a successor made by a change keeps its predecessor's anchor).
ALTER TABLE subscriptions
  ADD COLUMN billing_period text NOT NULL DEFAULT 'calendar_month' CHECK (billing_period IN ('calendar_month', 'anniversary')),
  ADD COLUMN billing_anchor timestamptz;

-- Gapless numbers per tenant and kind of document: taken under the row lock, in the
-- transaction that writes the document, so a rolled-back close consumes no number.
CREATE TABLE invoice_sequences (
  tenant_id   text NOT NULL,
  kind        text NOT NULL CHECK (kind IN ('invoice', 'credit_note')),
  last_number bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, kind)
);

-- Closed invoices and credit notes: written once, never updated or deleted (trigger below).
-- `document` is the whole frozen JSON as the API serves it (lines with step and rule, totals,
-- currency, plan versions, credits applied, adjustments).
CREATE TABLE invoices (
  tenant_id        text NOT NULL,
  id               text NOT NULL,
  kind             text NOT NULL CHECK (kind IN ('invoice', 'credit_note')),
  number           text NOT NULL,
  customer_id      text NOT NULL,
  period_start     timestamptz NOT NULL,
  period_end       timestamptz NOT NULL,
  issued_at        timestamptz NOT NULL DEFAULT now(),
  currency         text NOT NULL,
  subscription_ids text[] NOT NULL,
  total_nano       numeric NOT NULL,
  -- A credit note: the invoice it corrects.
  corrects_invoice_id text,
  document         jsonb NOT NULL,
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, kind, number),
  FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id)
);
-- One invoice per customer and billing period, whoever closes it.
CREATE UNIQUE INDEX invoices_one_per_period ON invoices (tenant_id, customer_id, period_start, period_end) WHERE kind = 'invoice';
CREATE INDEX invoices_customer ON invoices (tenant_id, customer_id, issued_at);

CREATE FUNCTION invoices_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'invoice % is closed: invoices and credit notes are never changed or deleted', OLD.number
    USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices
  FOR EACH ROW EXECUTE FUNCTION invoices_immutable();

-- What has been billed so far for a closed period: its invoice's lines, then every adjustment
-- (on a later invoice) or credit note since. Late events and corrections change the period's
-- usage; the difference between the period rated again and these lines is what is still to bill.
CREATE TABLE invoice_settlements (
  tenant_id     text NOT NULL,
  invoice_id    text NOT NULL,
  -- [{"key", "description", "amount_nano", "rounded_nano"}] per line, and the credits applied.
  settled_lines jsonb NOT NULL,
  settled_credits_nano numeric NOT NULL DEFAULT 0,
  -- invoice_period_calls.events of the period's subscriptions when settled: every event or
  -- correction applied to the period adds to it, so a different sum means there is more to bill.
  settled_events numeric NOT NULL,
  settled_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (tenant_id, invoice_id),
  FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, id)
);

-- Corrections: a voided or amended event keeps its ledger row; the ledger gets a reversing row
-- (every quantity and the cost negated) and, for an amendment, a new row, both naming it.
ALTER TABLE usage_ledger
  ADD COLUMN corrects_event_id text,
  ADD COLUMN correction text CHECK (correction IN ('reversal', 'amendment'));

-- The state of each corrected event: which ledger row currently stands for it (its last
-- amendment), or that it is voided. Locked by each correction, so two never interleave.
CREATE TABLE ledger_corrections (
  tenant_id        text NOT NULL,
  event_id         text NOT NULL,
  status           text NOT NULL CHECK (status IN ('voided', 'amended')),
  current_event_id text,
  revision         integer NOT NULL,
  updated_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, event_id)
);

CREATE TABLE correction_log (
  tenant_id          text NOT NULL,
  id                 text NOT NULL,
  event_id           text NOT NULL,
  kind               text NOT NULL CHECK (kind IN ('void', 'amend')),
  reason             text,
  reversal_event_id  text NOT NULL,
  amendment_event_id text,
  delta_nano         bigint NOT NULL,
  -- The period was closed: the correction is settled by a credit note or on the next invoice.
  closed_invoice_id  text,
  credit_note_id     text,
  created_at         timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id)
);
CREATE INDEX correction_log_event ON correction_log (tenant_id, event_id);

-- Prepaid credits: grants per customer, drawn in priority order (lower first), then earliest
-- expiry, then oldest, as invoice-rollup applies rated usage.
CREATE TABLE credit_grants (
  tenant_id      text NOT NULL,
  id             text NOT NULL,
  customer_id    text NOT NULL,
  currency       text NOT NULL,
  amount_nano    numeric NOT NULL CHECK (amount_nano > 0),
  remaining_nano numeric NOT NULL CHECK (remaining_nano >= 0),
  priority       integer NOT NULL DEFAULT 100,
  source         text NOT NULL CHECK (source IN ('purchase', 'promotion')),
  expires_at     timestamptz,
  description    text,
  created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id)
);
CREATE INDEX credit_grants_drawable ON credit_grants (tenant_id, customer_id, currency, priority, expires_at, created_at) WHERE remaining_nano > 0;

-- Per customer and currency: whether a zero balance pauses the customer (the hard cap).
CREATE TABLE credit_accounts (
  tenant_id   text NOT NULL,
  customer_id text NOT NULL,
  currency    text NOT NULL,
  hard_cap    boolean NOT NULL DEFAULT true,
  PRIMARY KEY (tenant_id, customer_id, currency),
  FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id)
);

-- Every movement of a grant: granted (+), consumed by usage (-), returned by a correction (+),
-- expired (-). Consumption is one row per grant, subscription period and rollup batch.
CREATE TABLE credit_movements (
  tenant_id       text NOT NULL,
  id              bigserial,
  grant_id        text NOT NULL,
  customer_id     text NOT NULL,
  kind            text NOT NULL CHECK (kind IN ('granted', 'consumed', 'returned', 'expired')),
  amount_nano     numeric NOT NULL,
  subscription_id text,
  period_start    timestamptz,
  event_id        text,
  created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, grant_id) REFERENCES credit_grants (tenant_id, id)
);
CREATE INDEX credit_movements_grant ON credit_movements (tenant_id, grant_id, id);
CREATE INDEX credit_movements_period ON credit_movements (tenant_id, subscription_id, period_start) WHERE subscription_id IS NOT NULL;
