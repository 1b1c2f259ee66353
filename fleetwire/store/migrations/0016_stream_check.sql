-- fleetwire schema, version 16: whether a succeeded job's streamed text was its signed
-- output (Job.stream_check). NULL: not compared (nothing streamed, a gap, a reconnect, or
-- finished before this version).

ALTER TABLE jobs ADD COLUMN stream_check text CHECK (stream_check IN ('MATCHED', 'MISMATCHED'));
