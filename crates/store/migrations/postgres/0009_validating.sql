-- VALIDATING: the items of a large batch whose documents are in a remote store are stored at
-- once in this state and queued once a background checker has checked their documents. It is an
-- active state: it counts against the queue caps and the token budget, it can be cancelled, and
-- its deadline is kept like a queued run's.
ALTER TABLE runs DROP CONSTRAINT runs_state_check;
ALTER TABLE runs ADD CONSTRAINT runs_state_check CHECK (state IN
    ('VALIDATING', 'QUEUED', 'PROCESSING', 'READY', 'DEGRADED', 'FAILED', 'STALE', 'CANCELLED', 'VALIDATION_ERROR'));
DROP INDEX runs_active;
CREATE INDEX runs_active ON runs (company_id, state) WHERE state IN ('VALIDATING', 'QUEUED', 'PROCESSING');
DROP INDEX runs_queued_deadline;
CREATE INDEX runs_waiting_deadline ON runs (deadline)
    WHERE state IN ('VALIDATING', 'QUEUED') AND deadline IS NOT NULL;
-- The checker claims VALIDATING runs as the dispatcher claims queued ones.
CREATE INDEX runs_validating ON runs (priority DESC, create_time, workflow_id) WHERE state = 'VALIDATING';
