-- fleetwire schema, version 7: the jobs table is its own outbox, and live jobs are found by
-- their deadline.

-- A job row whose message is not yet known to be in RabbitMQ carries the claim of whoever
-- publishes it (the bridge that wrote it, a retry of its request, an outbox relay) and the
-- time after which the claim lapses: any bridge's outbox relay then publishes it. NULL in
-- both once published (or taken by a scheduler, or terminal). Rows written before this
-- migration were all published.
ALTER TABLE jobs ADD COLUMN publish_claim uuid, ADD COLUMN publish_due_at timestamptz;

CREATE INDEX jobs_unpublished_idx ON jobs (publish_due_at) WHERE publish_due_at IS NOT NULL;

-- The deadline reaper's scan: live jobs in deadline order, whatever the table's size.
CREATE INDEX jobs_live_deadline_idx ON jobs (expires_at)
    WHERE state IN ('QUEUED', 'DISPATCHED', 'RUNNING', 'RETRYING');
