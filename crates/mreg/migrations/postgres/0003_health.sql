-- Current health of each server (one row per server, leased by the replica probing it), the
-- history of probes, and the tool catalog refreshed by successful probes.
CREATE TABLE server_health (
    server_id             uuid        PRIMARY KEY REFERENCES servers (id) ON DELETE CASCADE,
    status                text        NOT NULL DEFAULT 'unknown',
    consecutive_failures  integer     NOT NULL DEFAULT 0,
    last_checked_at       timestamptz,
    last_outcome          text,
    last_detail           text,
    last_latency_ms       bigint,
    last_protocol_version text,
    last_checked_by       text,
    last_ok_at            timestamptz,
    next_check_at         timestamptz NOT NULL DEFAULT '-infinity',
    lease_owner           text,
    lease_until           timestamptz
);
CREATE INDEX server_health_due ON server_health (next_check_at);
CREATE INDEX server_health_checked ON server_health (last_checked_at);

CREATE TABLE health_checks (
    id               bigserial   PRIMARY KEY,
    server_id        uuid        NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    checked_at       timestamptz NOT NULL,
    outcome          text        NOT NULL,
    detail           text,
    latency_ms       bigint      NOT NULL,
    protocol_version text,
    checked_by       text        NOT NULL
);
CREATE INDEX health_checks_server_time ON health_checks (server_id, checked_at);
CREATE INDEX health_checks_time ON health_checks (checked_at);

CREATE TABLE server_tools (
    server_id    uuid  NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    name         text  NOT NULL,
    title        text,
    description  text  NOT NULL,
    input_schema jsonb NOT NULL,
    search_text  text  NOT NULL,
    PRIMARY KEY (server_id, name)
);

DO $$
DECLARE
    trgm_schema text;
BEGIN
    SELECT n.nspname INTO trgm_schema
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_trgm';
    IF trgm_schema IS NOT NULL THEN
        EXECUTE format(
            'CREATE INDEX server_tools_search_trgm ON server_tools USING gin (search_text %I.gin_trgm_ops)',
            trgm_schema);
    END IF;
END
$$;

-- Every server has a health row from the start (new servers get theirs on insert).
INSERT INTO server_health (server_id) SELECT id FROM servers;
