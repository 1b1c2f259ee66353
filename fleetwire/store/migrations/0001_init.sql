-- fleetwire schema, version 1: nodes and their keys, jobs, attempts.

CREATE TABLE nodes (
    node_id        text PRIMARY KEY,
    public_key     bytea NOT NULL CHECK (length(public_key) = 32),
    key_id         text NOT NULL,
    revoked        boolean NOT NULL DEFAULT false,
    registered_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz
);

CREATE TABLE jobs (
    job_id             uuid PRIMARY KEY,
    state              text NOT NULL CHECK (state IN ('QUEUED', 'DISPATCHED', 'RUNNING',
                           'RETRYING', 'SUCCEEDED', 'FAILED', 'EXPIRED', 'CANCELLED',
                           'DEAD_LETTERED')),
    spec               bytea NOT NULL,          -- fleetwire.v1.JobSpec, defaults applied
    model              text NOT NULL,
    network            text NOT NULL,
    priority           text NOT NULL,
    route_key          text NOT NULL,
    request_digest     bytea NOT NULL,
    trace_id           text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    attempts           integer NOT NULL DEFAULT 0,
    node_id            text,
    output             bytea,                   -- UTF-8; text columns cannot hold NUL
    finish_reason      text,
    prompt_tokens      bigint,
    completion_tokens  bigint,
    timings            jsonb,
    signature          bytea,
    public_key         bytea,
    key_id             text,
    signed_attempt     integer,
    finished_at_ms     bigint,
    error_reason       text,
    error_message      text
);

CREATE INDEX jobs_live_idx ON jobs (state)
    WHERE state IN ('QUEUED', 'DISPATCHED', 'RUNNING', 'RETRYING');

CREATE TABLE attempts (
    job_id         uuid NOT NULL REFERENCES jobs (job_id),
    attempt        integer NOT NULL,
    node_id        text NOT NULL,
    scheduler_id   text NOT NULL,
    outcome        text NOT NULL CHECK (outcome IN ('DISPATCHED', 'RUNNING', 'SUCCEEDED',
                       'FAILED', 'LOST', 'REJECTED', 'CANCELLED')),
    dispatched_at  timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    ended_at       timestamptz,
    error_reason   text,
    error_message  text,
    PRIMARY KEY (job_id, attempt)
);
