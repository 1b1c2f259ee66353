-- fleetwire schema, version 9: nodes that proved a key the operator has not admitted yet.
-- One row per (node id, key): a stranger asking for an id cannot push out the request of
-- the node that owns it; the operator approves one key for the id.

CREATE TABLE node_requests (
    node_id        text NOT NULL,
    key_id         text NOT NULL,
    public_key     bytea NOT NULL CHECK (length(public_key) = 32),
    region         text NOT NULL DEFAULT '',
    models         text NOT NULL DEFAULT '',
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, key_id)
);
