-- fleetwire schema, version 12: the networks an operator granted each node. Like subclouds,
-- a node's claim to a network counts only when granted (unless the mesh trusts claims).

CREATE TABLE node_network_grants (
    node_id     text NOT NULL,
    network     text NOT NULL CHECK (network IN ('mainnet', 'testnet')),
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, network)
);

-- Nodes registered before grants existed served the networks they claimed: they keep both.
INSERT INTO node_network_grants (node_id, network)
SELECT node_id, network FROM nodes CROSS JOIN (VALUES ('mainnet'), ('testnet')) AS n(network)
ON CONFLICT DO NOTHING;
