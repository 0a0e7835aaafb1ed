-- Registry of MCP servers. Times are Unix microseconds (UTC); tags and metadata are JSON text.
CREATE TABLE servers (
    id            TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    url           TEXT    NOT NULL,
    transport     TEXT    NOT NULL,
    description   TEXT    NOT NULL DEFAULT '',
    tags          TEXT    NOT NULL DEFAULT '[]',
    version       TEXT,
    registered_by TEXT    NOT NULL,
    tenant        TEXT,
    status        TEXT    NOT NULL,
    metadata      TEXT    NOT NULL DEFAULT '{}',
    search_text   TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    revision      INTEGER NOT NULL
);

CREATE INDEX servers_updated_at ON servers (updated_at);
CREATE INDEX servers_status ON servers (status, name);
