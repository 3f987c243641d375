-- The audit log: append-only, hash-chained entries, and the checkpointed chain head
-- (updated in the same transaction as every append, so a truncated tail is detected).
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    time        INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    company_id  TEXT,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    request_id  TEXT,
    trace_id    TEXT,
    peer        TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
) STRICT;
CREATE INDEX audit_log_company ON audit_log (company_id, seq);

CREATE TABLE audit_head (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    seq          INTEGER NOT NULL,
    hash         TEXT NOT NULL,
    update_time  INTEGER NOT NULL
) STRICT;
INSERT INTO audit_head (id, seq, hash, update_time)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0);
