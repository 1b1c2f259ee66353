-- fleetwire schema, version 18: validation (blind) jobs and the answers that make reputation.
--
-- A challenge is one prompt with temperature-0 sampling; the mesh sends it, as an ordinary
-- job of the mesh's own tenant, to several nodes serving its model. Its answer is settled
-- when two nodes agree (scheduler/validation_rules.py); every answer is then judged PASS or
-- WRONG against it. A challenge nobody agrees on within a few answers is UNRESOLVED and
-- judges nobody (an engine that is not deterministic must not make honest nodes liars).

CREATE TABLE validation_challenges (
    challenge_id  uuid PRIMARY KEY,
    model         text NOT NULL,           -- a name of the mesh's registry (FLEETWIRE_MODELS)
    spec          bytea NOT NULL,          -- the JobSpec every validation job of it carries
    status        text NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'SETTLED', 'UNRESOLVED')),
    answer        bytea,                   -- the agreed output, once SETTLED
    created_at    timestamptz NOT NULL DEFAULT now(),
    settled_at    timestamptz
);

CREATE INDEX validation_challenges_open_idx ON validation_challenges (model, status, created_at);
-- Per model *name*, not per version: a version is a node's claim, and a version nobody
-- else claims would otherwise put a node beyond every comparison. Nodes serving one name
-- must answer alike; a different model needs a name of its own in the registry.

CREATE TABLE validation_answers (
    challenge_id uuid NOT NULL REFERENCES validation_challenges (challenge_id),
    node_id      text NOT NULL,
    job_id       uuid NOT NULL,            -- the validation job that asked the node
    output       bytea,                    -- NULL until the node answered (it may never)
    verdict      text CHECK (verdict IN ('PASS', 'WRONG')),  -- NULL until the challenge settles
    asked_at     timestamptz NOT NULL DEFAULT now(),
    answered_at  timestamptz,
    judged_at    timestamptz,
    PRIMARY KEY (challenge_id, node_id)
);

CREATE INDEX validation_answers_node_idx ON validation_answers (node_id, judged_at);

-- The job a validation job is; NULL for every tenant job.
ALTER TABLE jobs ADD COLUMN validation_challenge uuid REFERENCES validation_challenges (challenge_id);

-- The mesh's own account: validation jobs are its jobs, billed to it like any job, so a
-- node is paid for them and payment gives nothing away.
INSERT INTO tenants (tenant_id) VALUES ('mesh-validation') ON CONFLICT DO NOTHING;
