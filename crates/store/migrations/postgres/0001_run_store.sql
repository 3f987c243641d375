-- The run store: roles, batches, runs, steps, events, idempotency keys, document
-- content hashes and token usage. Times are TIMESTAMPTZ (microseconds); JSON is JSONB; every integer
-- is BIGINT so the Rust side decodes one integer type on both backends.

-- A company's role. `role_id` is derived from (company_id, role_name); two names that slug to the same
-- id are refused by the store, not here, so the message can name both.
CREATE TABLE roles (
    role_id          TEXT PRIMARY KEY,
    company_id       TEXT NOT NULL,
    role_name        TEXT NOT NULL,
    -- The Draup role of the latest run.
    draup_role_id    TEXT,
    -- Run number of the latest run (0 = none yet); bumped under this row's lock, so numbers are dense.
    last_run_number  BIGINT NOT NULL DEFAULT 0,
    create_time      TIMESTAMPTZ NOT NULL,
    update_time      TIMESTAMPTZ NOT NULL
);
CREATE INDEX roles_company ON roles (company_id);

CREATE TABLE batches (
    batch_id     TEXT PRIMARY KEY,
    company_id   TEXT NOT NULL,
    request_id   TEXT,
    item_count   BIGINT NOT NULL,
    create_time  TIMESTAMPTZ NOT NULL
);
CREATE INDEX batches_company ON batches (company_id, create_time DESC);

CREATE TABLE runs (
    workflow_id       TEXT PRIMARY KEY,
    role_id           TEXT NOT NULL REFERENCES roles (role_id),
    company_id        TEXT NOT NULL,
    role_name         TEXT NOT NULL,
    draup_role_id     TEXT,
    run_number        BIGINT NOT NULL,
    -- Hex hash of the run's inputs, computed by the caller; equal identities deduplicate.
    input_identity    TEXT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN
                        ('QUEUED', 'PROCESSING', 'READY', 'DEGRADED', 'FAILED', 'STALE', 'CANCELLED', 'VALIDATION_ERROR')),
    superseded_by     TEXT REFERENCES runs (workflow_id),
    supersedes        TEXT REFERENCES runs (workflow_id),
    batch_id          TEXT REFERENCES batches (batch_id),
    -- 1 low, 2 normal, 3 high: dispatch order within a company is priority DESC, create_time, workflow_id.
    priority          BIGINT NOT NULL,
    options           JSONB NOT NULL,
    documents         JSONB NOT NULL,
    error             JSONB,
    needs_review      BOOLEAN NOT NULL DEFAULT FALSE,
    field_violations  JSONB NOT NULL DEFAULT '[]',
    token_estimate    BIGINT NOT NULL DEFAULT 0,
    tokens_in         BIGINT NOT NULL DEFAULT 0,
    tokens_out        BIGINT NOT NULL DEFAULT 0,
    -- Sequence of the run's latest event; the next event gets last_sequence + 1 under this row's lock.
    last_sequence     BIGINT NOT NULL DEFAULT 0,
    -- A dispatcher's lease on a QUEUED run (see claim_queued); expired leases are free to take.
    claimed_by        TEXT,
    claim_expires_at  TIMESTAMPTZ,
    create_time       TIMESTAMPTZ NOT NULL,
    start_time        TIMESTAMPTZ,
    end_time          TIMESTAMPTZ,
    update_time       TIMESTAMPTZ NOT NULL,
    UNIQUE (role_id, run_number)
);
-- History: a company's runs newest first, keyset-paginated on (create_time, workflow_id).
CREATE INDEX runs_history ON runs (company_id, create_time DESC, workflow_id DESC);
-- Dispatch order of queued runs.
CREATE INDEX runs_queue ON runs (company_id, priority DESC, create_time, workflow_id) WHERE state = 'QUEUED';
-- Concurrency caps and company watches look at active runs only.
CREATE INDEX runs_active ON runs (company_id, state) WHERE state IN ('QUEUED', 'PROCESSING');
CREATE INDEX runs_batch ON runs (batch_id) WHERE batch_id IS NOT NULL;

-- One attempt of one step of a run.
CREATE TABLE run_steps (
    workflow_id  TEXT NOT NULL REFERENCES runs (workflow_id) ON DELETE CASCADE,
    step         TEXT NOT NULL,
    attempt      BIGINT NOT NULL CHECK (attempt >= 1),
    status       TEXT NOT NULL CHECK (status IN
                   ('pending', 'running', 'retrying', 'completed', 'failed', 'skipped', 'reused', 'cancelled')),
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,
    tokens_in    BIGINT NOT NULL DEFAULT 0,
    tokens_out   BIGINT NOT NULL DEFAULT 0,
    input_hash   TEXT,
    output_hash  TEXT,
    error        JSONB,
    reused_from  TEXT,
    update_time  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (workflow_id, step, attempt)
);

-- Every state and step change of a run, numbered per run without gaps.
CREATE TABLE run_events (
    workflow_id  TEXT NOT NULL REFERENCES runs (workflow_id) ON DELETE CASCADE,
    sequence     BIGINT NOT NULL CHECK (sequence >= 1),
    event_time   TIMESTAMPTZ NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('status', 'step')),
    -- Step events only: the idempotency key of a step transition is (run, step, attempt, status).
    step         TEXT,
    attempt      BIGINT,
    step_status  TEXT,
    payload      JSONB NOT NULL,
    PRIMARY KEY (workflow_id, sequence)
);
CREATE UNIQUE INDEX run_events_step_key ON run_events (workflow_id, step, attempt, step_status) WHERE kind = 'step';

-- A client's request id (scope: company) and the first answer to it, kept 24 hours.
CREATE TABLE idempotency_keys (
    company_id    TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    payload_hash  TEXT NOT NULL,
    response      BYTEA NOT NULL,
    create_time   TIMESTAMPTZ NOT NULL,
    expire_time   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (company_id, request_id)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expire_time);

-- The last content hash seen for each document URI (staleness scans compare against it).
CREATE TABLE document_hashes (
    uri           TEXT PRIMARY KEY,
    content_hash  TEXT NOT NULL,
    seen_time     TIMESTAMPTZ NOT NULL
);

-- LLM tokens per company, day (UTC) and step; fed by step transitions that report tokens.
CREATE TABLE token_usage (
    company_id     TEXT NOT NULL,
    day            DATE NOT NULL,
    step           TEXT NOT NULL,
    input_tokens   BIGINT NOT NULL DEFAULT 0,
    output_tokens  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (company_id, day, step)
);
