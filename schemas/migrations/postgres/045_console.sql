-- What the console reads besides ClickHouse: a tenant's open and its ended sessions by last
-- activity, and the pauses not lifted yet. Indexes, so that each of its
-- panels reads a few rows whatever the size of the tenant's history.
CREATE INDEX mcp_sessions_tenant_ended ON mcp_sessions (tenant_id, last_event_at DESC) WHERE status IN ('COMPLETED', 'FAILED', 'EXPIRED');
CREATE INDEX mcp_sessions_tenant_open ON mcp_sessions (tenant_id, last_event_at DESC) WHERE status IN ('ACTIVE', 'IDLE', 'PAUSED');
CREATE INDEX cap_pauses_in_force ON cap_pauses (tenant_id, paused_at DESC) WHERE lifted_at IS NULL;
