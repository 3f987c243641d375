-- The plan of each run (steps and what the run does with each), kept so the dispatcher hands
-- Retry and STALE re-runs exactly what was planned when they were created. NULL for runs created
-- before plans were kept, and for rejected batch items (they never run).
ALTER TABLE runs ADD COLUMN plan TEXT;
