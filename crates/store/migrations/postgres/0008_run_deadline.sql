-- A run's deadline (RunOptions.deadline): a run still queued when it passes is cancelled. The
-- dispatcher looks for those every round; the partial index keeps that look to the few runs
-- that have one.
ALTER TABLE runs ADD COLUMN deadline TIMESTAMPTZ;
CREATE INDEX runs_queued_deadline ON runs (deadline) WHERE state = 'QUEUED' AND deadline IS NOT NULL;
-- Estimates measure the most recent runs that ended in a state, across companies.
CREATE INDEX runs_state_ended ON runs (state, end_time) WHERE end_time IS NOT NULL;
