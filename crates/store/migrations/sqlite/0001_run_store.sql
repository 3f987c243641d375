-- The run store for the embedded SQLite default: the same tables as the PostgreSQL
-- schema. Times are INTEGER microseconds since the Unix epoch (exact and ordered, unlike SQLite's
-- text dates); JSON is TEXT; tables are STRICT so a wrongly typed bind fails instead of being stored.

CREATE TABLE roles (
    role_id          TEXT PRIMARY KEY,
    company_id       TEXT NOT NULL,
    role_name        TEXT NOT NULL,
    draup_role_id    TEXT,
    last_run_number  INTEGER NOT NULL DEFAULT 0,
    create_time      INTEGER NOT NULL,
    update_time      INTEGER NOT NULL
) STRICT;
CREATE INDEX roles_company ON roles (company_id);

CREATE TABLE batches (
    batch_id     TEXT PRIMARY KEY,
    company_id   TEXT NOT NULL,
    request_id   TEXT,
    item_count   INTEGER NOT NULL,
    create_time  INTEGER NOT NULL
) STRICT;
CREATE INDEX batches_company ON batches (company_id, create_time DESC);

CREATE TABLE runs (
    workflow_id       TEXT PRIMARY KEY,
    role_id           TEXT NOT NULL REFERENCES roles (role_id),
    company_id        TEXT NOT NULL,
    role_name         TEXT NOT NULL,
    draup_role_id     TEXT,
    run_number        INTEGER NOT NULL,
    input_identity    TEXT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN
                        ('QUEUED', 'PROCESSING', 'READY', 'DEGRADED', 'FAILED', 'STALE', 'CANCELLED', 'VALIDATION_ERROR')),
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
    UNIQUE (role_id, run_number)
) STRICT;
CREATE INDEX runs_history ON runs (company_id, create_time DESC, workflow_id DESC);
CREATE INDEX runs_queue ON runs (company_id, priority DESC, create_time, workflow_id) WHERE state = 'QUEUED';
CREATE INDEX runs_active ON runs (company_id, state) WHERE state IN ('QUEUED', 'PROCESSING');
CREATE INDEX runs_batch ON runs (batch_id) WHERE batch_id IS NOT NULL;

CREATE TABLE run_steps (
    workflow_id  TEXT NOT NULL REFERENCES runs (workflow_id) ON DELETE CASCADE,
    step         TEXT NOT NULL,
    attempt      INTEGER NOT NULL CHECK (attempt >= 1),
    status       TEXT NOT NULL CHECK (status IN
                   ('pending', 'running', 'retrying', 'completed', 'failed', 'skipped', 'reused', 'cancelled')),
    started_at   INTEGER,
    finished_at  INTEGER,
    tokens_in    INTEGER NOT NULL DEFAULT 0,
    tokens_out   INTEGER NOT NULL DEFAULT 0,
    input_hash   TEXT,
    output_hash  TEXT,
    error        TEXT,
    reused_from  TEXT,
    update_time  INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, step, attempt)
) STRICT;

CREATE TABLE run_events (
    workflow_id  TEXT NOT NULL REFERENCES runs (workflow_id) ON DELETE CASCADE,
    sequence     INTEGER NOT NULL CHECK (sequence >= 1),
    event_time   INTEGER NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('status', 'step')),
    step         TEXT,
    attempt      INTEGER,
    step_status  TEXT,
    payload      TEXT NOT NULL,
    PRIMARY KEY (workflow_id, sequence)
) STRICT;
CREATE UNIQUE INDEX run_events_step_key ON run_events (workflow_id, step, attempt, step_status) WHERE kind = 'step';

CREATE TABLE idempotency_keys (
    company_id    TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    payload_hash  TEXT NOT NULL,
    response      BLOB NOT NULL,
    create_time   INTEGER NOT NULL,
    expire_time   INTEGER NOT NULL,
    PRIMARY KEY (company_id, request_id)
) STRICT;
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expire_time);

CREATE TABLE document_hashes (
    uri           TEXT PRIMARY KEY,
    content_hash  TEXT NOT NULL,
    seen_time     INTEGER NOT NULL
) STRICT;

-- `day` is the UTC date as `YYYY-MM-DD`, which sorts in date order.
CREATE TABLE token_usage (
    company_id     TEXT NOT NULL,
    day            TEXT NOT NULL,
    step           TEXT NOT NULL,
    input_tokens   INTEGER NOT NULL DEFAULT 0,
    output_tokens  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (company_id, day, step)
) STRICT;
