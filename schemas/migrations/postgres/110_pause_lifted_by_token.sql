-- Which admin lifted a pause: the id of the admin token that called the lift route or the console
-- (tenant_tokens.id; a tenant may hold several while one is rotated). Null for the lifts no person
-- made (cap_raised, cap_disabled, period_rollover) and for lifts recorded before this column.
ALTER TABLE cap_pauses ADD COLUMN lifted_by_token_id text;
ALTER TABLE cap_pause_log ADD COLUMN lifted_by_token_id text;
