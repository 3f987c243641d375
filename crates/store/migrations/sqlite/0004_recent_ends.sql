-- Company watches look at active runs and at runs that ended recently (a run that started and
-- ended between two looks is not missed): this index serves the second half.
CREATE INDEX runs_ended ON runs (company_id, end_time) WHERE end_time IS NOT NULL;
