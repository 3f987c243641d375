-- The W3C trace id of the request that created a run (Push, PushBatch, Retry): the dispatcher
-- hands it to the workflow, whose activities log under it. NULL for runs stored before.
ALTER TABLE runs ADD COLUMN trace_id TEXT;
