-- fleetwire schema, version 2: tenants, their API keys (hashed), job ownership,
-- idempotency keys and batches.

CREATE TABLE tenants (
    tenant_id        text PRIMARY KEY CHECK (tenant_id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    rate_per_second  double precision CHECK (rate_per_second > 0),  -- NULL: bridge default
    burst            integer CHECK (burst > 0)                      -- NULL: bridge default
);

-- The tenant of a bridge that does not require API keys (local meshes, the demo).
INSERT INTO tenants (tenant_id) VALUES ('anonymous');

CREATE TABLE api_keys (
    key_id        text PRIMARY KEY,             -- public part of the key, for lookup
    tenant_id     text NOT NULL REFERENCES tenants (tenant_id),
    secret_hash   bytea NOT NULL CHECK (length(secret_hash) = 32),  -- SHA-256 of the key
    name          text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

CREATE TABLE batches (
    batch_id           uuid PRIMARY KEY,
    tenant_id          text NOT NULL REFERENCES tenants (tenant_id),
    client_request_id  text,
    request_digest     bytea NOT NULL,
    job_count          integer NOT NULL,
    trace_id           text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT batches_tenant_request_key UNIQUE (tenant_id, client_request_id)
);

ALTER TABLE jobs
    ADD COLUMN tenant_id text NOT NULL DEFAULT 'anonymous' REFERENCES tenants (tenant_id),
    ADD COLUMN client_request_id text,             -- NULL: no idempotency key
    ADD COLUMN submit_digest bytea,                -- SHA-256 of the spec as submitted
    ADD COLUMN batch_id uuid REFERENCES batches (batch_id),
    ADD COLUMN batch_index integer,                -- position in SubmitBatchRequest.jobs
    -- NULLs are distinct: only jobs with a request id are constrained. The last word on
    -- idempotency, whatever Redis says.
    ADD CONSTRAINT jobs_tenant_request_key UNIQUE (tenant_id, client_request_id);

CREATE INDEX jobs_batch_idx ON jobs (batch_id) WHERE batch_id IS NOT NULL;

-- The bridge counts a tenant's waiting jobs on every Submit (its backlog cap).
CREATE INDEX jobs_tenant_waiting_idx ON jobs (tenant_id) WHERE state IN ('QUEUED', 'RETRYING');
