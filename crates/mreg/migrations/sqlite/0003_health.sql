-- Current health of each server (one row per server, leased by the replica probing it), the
-- history of probes, and the tool catalog refreshed by successful probes.
CREATE TABLE server_health (
    server_id             TEXT    PRIMARY KEY REFERENCES servers (id) ON DELETE CASCADE,
    status                TEXT    NOT NULL DEFAULT 'unknown',
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    last_checked_at       INTEGER,
    last_outcome          TEXT,
    last_detail           TEXT,
    last_latency_ms       INTEGER,
    last_protocol_version TEXT,
    last_checked_by       TEXT,
    last_ok_at            INTEGER,
    next_check_at         INTEGER NOT NULL DEFAULT 0,
    lease_owner           TEXT,
    lease_until           INTEGER
);
CREATE INDEX server_health_due ON server_health (next_check_at);
CREATE INDEX server_health_checked ON server_health (last_checked_at);

CREATE TABLE health_checks (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    server_id        TEXT    NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    checked_at       INTEGER NOT NULL,
    outcome          TEXT    NOT NULL,
    detail           TEXT,
    latency_ms       INTEGER NOT NULL,
    protocol_version TEXT,
    checked_by       TEXT    NOT NULL
);
CREATE INDEX health_checks_server_time ON health_checks (server_id, checked_at);
CREATE INDEX health_checks_time ON health_checks (checked_at);

CREATE TABLE server_tools (
    server_id    TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    title        TEXT,
    description  TEXT NOT NULL,
    input_schema TEXT NOT NULL,
    search_text  TEXT NOT NULL,
    PRIMARY KEY (server_id, name)
);

-- Every server has a health row from the start (new servers get theirs on insert).
INSERT INTO server_health (server_id) SELECT id FROM servers;
