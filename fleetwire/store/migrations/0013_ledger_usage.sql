-- fleetwire schema, version 13: what a ledger entry was billed for. A node signs its own
-- token counts; the mesh bills them only up to what the job's spec allows, and records
-- which counts it used ('claimed', or 'capped' when the node claimed more). NULL on entries
-- written before this version.

ALTER TABLE ledger_entries
    ADD COLUMN prompt_tokens     bigint,
    ADD COLUMN completion_tokens bigint,
    ADD COLUMN usage_source      text CHECK (usage_source IN ('claimed', 'capped'));
