-- fleetwire schema, version 10: the subclouds an operator granted each node. A node's claim
-- to a subcloud counts only when granted (unless the mesh trusts claims: the dev profile).

CREATE TABLE node_grants (
    node_id     text NOT NULL,
    subcloud    text NOT NULL CHECK (subcloud ~ '^[a-z0-9-]{1,64}$'),
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, subcloud)
);
