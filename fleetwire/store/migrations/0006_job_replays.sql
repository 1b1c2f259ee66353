-- fleetwire schema, version 6: dead-lettered jobs replayed as new jobs.

-- The job a replay was made from (MeshAdminService.ReplayDeadLetter). The original row is
-- never changed: it stays DEAD_LETTERED, and its trail finds the replacement through this.
ALTER TABLE jobs ADD COLUMN replay_of uuid REFERENCES jobs (job_id);

-- Once per dead letter, whatever replicas or operators do concurrently.
CREATE UNIQUE INDEX jobs_replay_once ON jobs (replay_of) WHERE replay_of IS NOT NULL;
