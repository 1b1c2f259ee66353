-- fleetwire schema, version 5: a double-entry credit ledger, and who owns each node.

ALTER TABLE nodes ADD COLUMN owner text;  -- NULL: the node is its own account

-- Each finalised mainnet job writes exactly two entries that sum to zero: a charge to the
-- tenant and an earning to the node's owner. The unique index is what makes it once.
CREATE TABLE ledger_entries (
    entry_id    bigserial PRIMARY KEY,
    job_id      uuid NOT NULL REFERENCES jobs (job_id),
    account     text NOT NULL,                 -- 'tenant:<id>' or 'owner:<id>'
    kind        text NOT NULL CHECK (kind IN ('JOB_CHARGE', 'NODE_EARNING')),
    amount      bigint NOT NULL,               -- micro-credits; negative is a debit
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX ledger_entries_once ON ledger_entries (job_id, kind);
CREATE INDEX ledger_entries_account_idx ON ledger_entries (account);
