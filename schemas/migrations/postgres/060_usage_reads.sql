-- The usage routes (api/usage.ts) read a tenant's ledger for the current billing period, grouped
-- by agent, app, tool, session or day, and the spend of a cap's scope in its period: by tenant
-- and recorded time, so that a read touches the period's rows, not the tenant's whole history.
-- (A customer's reads use usage_ledger_customer_recorded.)
CREATE INDEX usage_ledger_tenant_recorded ON usage_ledger (tenant_id, recorded_at);
