-- The audit log: one row per audited operation, hash-chained in `seq` order (each row's hash
-- covers its contents, its position and the previous row's hash). Times are microseconds since
-- the Unix epoch; `arguments` is redacted JSON text, stored as text so that it hashes the same
-- after a round trip.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    at_us BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    actor_subject TEXT NOT NULL,
    actor_email TEXT,
    actor_tenant TEXT,
    actor_client_id TEXT,
    operation TEXT NOT NULL,
    tool TEXT,
    server TEXT,
    arguments TEXT,
    decision TEXT NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    duration_us BIGINT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at_us);
CREATE INDEX audit_log_actor ON audit_log (actor_subject, seq);

-- Retention removes a prefix of the chain; the last removed row's position and hash stay here,
-- so that the rest still verifies and a removed head is still detected.
CREATE TABLE audit_checkpoints (
    seq BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    pruned_at_us BIGINT NOT NULL
);
