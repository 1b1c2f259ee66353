-- fleetwire schema, version 3: every penalty a node earned, and its exclusions.

CREATE TABLE node_penalties (
    id             bigserial PRIMARY KEY,
    node_id        text NOT NULL,
    offence        text NOT NULL,
    points         double precision NOT NULL,
    job_id         uuid,
    attempt        integer,
    excluded_until timestamptz,   -- set when this offence excluded the node
    scheduler_id   text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX node_penalties_node_idx ON node_penalties (node_id, created_at);
