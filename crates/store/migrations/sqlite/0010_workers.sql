-- Workers record that they are running every few seconds (worker.presence_interval); the server
-- counts those seen recently, so a worker that stopped is noticed within
-- dispatch.worker_presence_within instead of once Temporal forgets its last poll. A worker that
-- stops cleanly marks itself gone at once.
CREATE TABLE workers (
    worker_id   TEXT PRIMARY KEY,
    task_queue  TEXT NOT NULL,
    start_time  INTEGER NOT NULL,
    seen_time   INTEGER NOT NULL
) STRICT;
CREATE INDEX workers_seen ON workers (task_queue, seen_time);
