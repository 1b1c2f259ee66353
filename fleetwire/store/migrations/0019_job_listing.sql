-- fleetwire schema, version 19: operators list jobs, count finished ones over time and see
-- nodes' offences and exclusions mesh-wide (MeshAdminService.ListJobs, JobThroughput,
-- ListNodes, ListRegisteredNodes; the console reads them).

-- ListJobs pages newest first by (created_at, job_id), over every tenant or one.
CREATE INDEX jobs_created_idx ON jobs (created_at DESC, job_id DESC);
CREATE INDEX jobs_tenant_created_idx ON jobs (tenant_id, created_at DESC, job_id DESC);

-- ListJobs by state (a rare state among many jobs is found without scanning them all); one
-- more entry to maintain per state change, like the partial indexes of live jobs.
CREATE INDEX jobs_state_created_idx ON jobs (state, created_at DESC, job_id DESC);

-- ListDeadLetters (newest first) and the console's count of them: only dead letters.
CREATE INDEX jobs_dead_letters_idx ON jobs (updated_at DESC) WHERE state = 'DEAD_LETTERED';

-- JobThroughput counts terminal jobs by the minute they finished: a terminal state never
-- changes again, so updated_at is when the job finished.
CREATE INDEX jobs_finished_idx ON jobs (updated_at)
    WHERE state IN ('SUCCEEDED', 'FAILED', 'EXPIRED', 'CANCELLED', 'DEAD_LETTERED');

-- The nodes still excluded: only the rows of offences that excluded one.
CREATE INDEX node_penalties_exclusion_idx ON node_penalties (excluded_until)
    WHERE excluded_until IS NOT NULL;

-- Offences of the last day over every node (by kind).
CREATE INDEX node_penalties_created_idx ON node_penalties (created_at);
