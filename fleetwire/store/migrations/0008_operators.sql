-- fleetwire schema, version 8: operators' keys for the admin surface, and the audit log of
-- what they did.

CREATE TABLE operator_keys (
    key_id        text PRIMARY KEY,             -- public part of the key, for lookup
    name          text NOT NULL,                -- who holds it (a person, a service)
    role          text NOT NULL CHECK (role IN ('viewer', 'admin')),
    secret_hash   bytea NOT NULL CHECK (length(secret_hash) = 32),  -- SHA-256 of the key
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

-- One row per admin action: who (an operator key, or the local CLI with database access),
-- what, on what, and when.
CREATE TABLE audit_log (
    entry_id   bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    action     text NOT NULL,
    target     text NOT NULL DEFAULT '',
    detail     jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_log_at_idx ON audit_log (at);
