-- The W3C traceparent of the request span that created a run (NULL when spans are not
-- exported, and for runs stored before): the dispatcher's span that starts the run's workflow is
-- its child, so the whole run sits in the request's trace.
ALTER TABLE runs ADD COLUMN trace_parent TEXT;
