-- fleetwire schema, version 15: a penalty row may stand for many offences. Per node and
-- offence, the first few of a window get a row each (with job and attempt); the rest of
-- the window are one row with their count, so a node sending offences as fast as it can
-- costs the database a bounded number of rows.

ALTER TABLE node_penalties ADD COLUMN count integer NOT NULL DEFAULT 1 CHECK (count >= 1);
