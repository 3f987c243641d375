-- no-transaction
-- VALIDATING: the items of a large batch whose documents are in a remote store are stored at
-- once in this state and queued once a background checker has checked their documents. It is an
-- active state: it counts against the queue caps and the token budget, it can be cancelled, and
-- its deadline is kept like a queued run's.
--
-- SQLite cannot change a CHECK constraint in place, so the runs table is rebuilt as SQLite's
-- documentation prescribes: foreign keys off (outside the transaction, where the pragma takes
-- effect; otherwise dropping the old table would cascade to the steps and events), the new table
-- filled with the same rows, unchanged (so every reference holds as before), and renamed in one
-- transaction. Run again after an interruption, it rebuilds the table again from the same rows.
PRAGMA foreign_keys = OFF;
BEGIN;
DROP TABLE IF EXISTS runs_rebuilt;
CREATE TABLE runs_rebuilt (
    workflow_id       TEXT PRIMARY KEY,
    role_id           TEXT NOT NULL REFERENCES roles (role_id),
    company_id        TEXT NOT NULL,
    role_name         TEXT NOT NULL,
    draup_role_id     TEXT,
    run_number        INTEGER NOT NULL,
    input_identity    TEXT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN
                        ('VALIDATING', 'QUEUED', 'PROCESSING', 'READY', 'DEGRADED', 'FAILED', 'STALE', 'CANCELLED',
                         'VALIDATION_ERROR')),
    superseded_by     TEXT REFERENCES runs (workflow_id),
    supersedes        TEXT REFERENCES runs (workflow_id),
    batch_id          TEXT REFERENCES batches (batch_id),
    priority          INTEGER NOT NULL,
    options           TEXT NOT NULL,
    documents         TEXT NOT NULL,
    error             TEXT,
    needs_review      INTEGER NOT NULL DEFAULT 0,
    field_violations  TEXT NOT NULL DEFAULT '[]',
    token_estimate    INTEGER NOT NULL DEFAULT 0,
    tokens_in         INTEGER NOT NULL DEFAULT 0,
    tokens_out        INTEGER NOT NULL DEFAULT 0,
    last_sequence     INTEGER NOT NULL DEFAULT 0,
    claimed_by        TEXT,
    claim_expires_at  INTEGER,
    create_time       INTEGER NOT NULL,
    start_time        INTEGER,
    end_time          INTEGER,
    update_time       INTEGER NOT NULL,
    plan              TEXT,
    notify            INTEGER NOT NULL DEFAULT 0,
    trace_id          TEXT,
    deadline          INTEGER,
    UNIQUE (role_id, run_number)
) STRICT;
INSERT INTO runs_rebuilt (
    workflow_id, role_id, company_id, role_name, draup_role_id, run_number, input_identity, state,
    superseded_by, supersedes, batch_id, priority, options, documents, error, needs_review,
    field_violations, token_estimate, tokens_in, tokens_out, last_sequence, claimed_by,
    claim_expires_at, create_time, start_time, end_time, update_time, plan, notify, trace_id, deadline)
SELECT
    workflow_id, role_id, company_id, role_name, draup_role_id, run_number, input_identity, state,
    superseded_by, supersedes, batch_id, priority, options, documents, error, needs_review,
    field_violations, token_estimate, tokens_in, tokens_out, last_sequence, claimed_by,
    claim_expires_at, create_time, start_time, end_time, update_time, plan, notify, trace_id, deadline
FROM runs;
DROP TABLE runs;
ALTER TABLE runs_rebuilt RENAME TO runs;
CREATE INDEX runs_history ON runs (company_id, create_time DESC, workflow_id DESC);
CREATE INDEX runs_queue ON runs (company_id, priority DESC, create_time, workflow_id) WHERE state = 'QUEUED';
CREATE INDEX runs_active ON runs (company_id, state) WHERE state IN ('VALIDATING', 'QUEUED', 'PROCESSING');
CREATE INDEX runs_batch ON runs (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX runs_ended ON runs (company_id, end_time) WHERE end_time IS NOT NULL;
CREATE INDEX runs_updated ON runs (update_time);
CREATE INDEX runs_state_ended ON runs (state, end_time) WHERE end_time IS NOT NULL;
CREATE INDEX runs_waiting_deadline ON runs (deadline)
    WHERE state IN ('VALIDATING', 'QUEUED') AND deadline IS NOT NULL;
-- The checker claims VALIDATING runs as the dispatcher claims queued ones.
CREATE INDEX runs_validating ON runs (priority DESC, create_time, workflow_id) WHERE state = 'VALIDATING';
COMMIT;
PRAGMA foreign_keys = ON;
