-- fleetwire schema, version 17: a ledger entry may be billed for the mesh's own token
-- counts (the model's tokenizer, FLEETWIRE_SCHEDULER_TOKENIZERS): usage_source 'counted'.

ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_usage_source_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_usage_source_check
    CHECK (usage_source IN ('claimed', 'capped', 'counted'));
