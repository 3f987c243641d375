-- notify_on_complete: whether a run's end is announced to its company's webhook, and
-- the outbox of those announcements. A row is written in the same transaction as the run's final
-- state, so an ended run is never left unannounced; the server's deliverer claims due rows
-- (SKIP LOCKED, so replicas share the work), posts them, and records the result.
ALTER TABLE runs ADD COLUMN notify BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE notifications (
    id                 BIGSERIAL PRIMARY KEY,
    workflow_id        TEXT NOT NULL UNIQUE REFERENCES runs (workflow_id),
    company_id         TEXT NOT NULL,
    state              TEXT NOT NULL,
    create_time        TIMESTAMPTZ NOT NULL,
    attempts           BIGINT NOT NULL DEFAULT 0,
    next_attempt_time  TIMESTAMPTZ NOT NULL,
    claimed_by         TEXT,
    claim_expires_at   TIMESTAMPTZ,
    delivered_time     TIMESTAMPTZ,
    gave_up            BOOLEAN NOT NULL DEFAULT FALSE,
    last_error         TEXT
);
CREATE INDEX notifications_due ON notifications (next_attempt_time)
    WHERE delivered_time IS NULL AND NOT gave_up;
