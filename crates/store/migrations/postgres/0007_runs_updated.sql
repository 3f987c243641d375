-- A server without Redis looks for runs other processes changed (the worker's steps) every few
-- milliseconds, by their update_time.
CREATE INDEX runs_updated ON runs (update_time);
