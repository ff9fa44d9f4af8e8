-- Rolling-window caps (the spend of the last window_seconds, counted in Redis in 60 buckets) and
-- caps on a rate plan that apply to each session of every customer on that plan.
ALTER TABLE spend_caps ADD COLUMN window_seconds integer;
ALTER TABLE spend_caps DROP CONSTRAINT IF EXISTS spend_caps_period_check;
ALTER TABLE spend_caps ADD CONSTRAINT spend_caps_period_check
  CHECK (period IN ('session', 'day', 'month', 'rolling'));
-- A window only with period rolling: whole minutes, from one minute to 31 days.
ALTER TABLE spend_caps ADD CONSTRAINT spend_caps_window_check
  CHECK ((period = 'rolling') = (window_seconds IS NOT NULL)
         AND (window_seconds IS NULL OR (window_seconds BETWEEN 60 AND 2678400 AND window_seconds % 60 = 0)));
ALTER TABLE spend_caps DROP CONSTRAINT IF EXISTS spend_caps_scope_kind_check;
ALTER TABLE spend_caps ADD CONSTRAINT spend_caps_scope_kind_check
  CHECK (scope_kind IN ('api_key', 'app', 'agent', 'team', 'customer', 'session', 'plan'));
-- A plan's totals are kept per session (a plan-wide total would span every customer's partition).
ALTER TABLE spend_caps ADD CONSTRAINT spend_caps_plan_per_session_check
  CHECK (scope_kind <> 'plan' OR period = 'session');
