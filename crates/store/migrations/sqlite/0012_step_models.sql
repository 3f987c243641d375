-- What a person compares between two runs of a role. A run may be asked to use another model
-- than the worker's own (a Retry's `model`); each step records the model and prompt version
-- that answered it, and a digest of what it produced (names and scores of its tasks, skills,
-- documents…, and why it deserves a review), since the role graph keeps only the latest run's
-- outputs. NULL for runs and steps stored before.
ALTER TABLE runs ADD COLUMN model TEXT;
ALTER TABLE run_steps ADD COLUMN model TEXT;
ALTER TABLE run_steps ADD COLUMN prompt_version TEXT;
ALTER TABLE run_steps ADD COLUMN digest TEXT;
