-- The audit listing filters by actor as `actor_subject = $1 OR actor_email = $1`, which this
-- index on the subject alone cannot serve: the planner never used it, while every appended row
-- paid for maintaining it (about a third of an insert's cost in PostgreSQL). Listings walk the
-- chain backwards from the newest row (or the time index, for a time range) instead.
DROP INDEX IF EXISTS audit_log_actor;
