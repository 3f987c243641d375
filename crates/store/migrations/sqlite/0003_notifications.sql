-- notify_on_complete: whether a run's end is announced to its company's webhook, and
-- the outbox of those announcements. A row is written in the same transaction as the run's final
-- state, so an ended run is never left unannounced; the server's deliverer claims due rows, posts
-- them, and records the result.
ALTER TABLE runs ADD COLUMN notify INTEGER NOT NULL DEFAULT 0;

CREATE TABLE notifications (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id        TEXT NOT NULL UNIQUE REFERENCES runs (workflow_id),
    company_id         TEXT NOT NULL,
    state              TEXT NOT NULL,
    create_time        INTEGER NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_time  INTEGER NOT NULL,
    claimed_by         TEXT,
    claim_expires_at   INTEGER,
    delivered_time     INTEGER,
    gave_up            INTEGER NOT NULL DEFAULT 0,
    last_error         TEXT
) STRICT;
CREATE INDEX notifications_due ON notifications (next_attempt_time)
    WHERE delivered_time IS NULL AND gave_up = 0;
