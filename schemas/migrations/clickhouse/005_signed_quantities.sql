-- Corrections (schema version 3): a voided or amended event keeps its row, and the ledger gets a
-- reversing row whose quantities and cost are the original's negated (store/corrections.ts). Its
-- analytics row carries those negative quantities, so the quantity columns become signed; every
-- rollup already sums them as Int64, and a sum over an event and its reversal is 0.
-- Valid on ClickHouse 18.16 (MODIFY COLUMN rewrites the parts) and on current releases.
ALTER TABLE {db}.invocations MODIFY COLUMN duration_ms Int64;
ALTER TABLE {db}.invocations MODIFY COLUMN input_tokens Int64;
ALTER TABLE {db}.invocations MODIFY COLUMN output_tokens Int64;
ALTER TABLE {db}.invocations MODIFY COLUMN total_tokens Int64;
