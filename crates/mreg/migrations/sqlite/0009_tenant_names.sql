-- no-transaction
-- Server names are unique per tenant, and among public servers (tenantless or shared), instead
-- of across the whole registry: a tenant's names neither collide with nor reveal another
-- tenant's. A caller means its own tenant's server first, then the public one.
-- SQLite cannot drop a column's UNIQUE constraint, so the table is rebuilt, with foreign keys
-- off (which only works outside a transaction) so that dropping the old table does not cascade
-- to the health rows and tool catalog that refer to it.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE servers_new (
    id                   TEXT    PRIMARY KEY,
    name                 TEXT    NOT NULL,
    url                  TEXT    NOT NULL,
    transport            TEXT    NOT NULL,
    description          TEXT    NOT NULL DEFAULT '',
    tags                 TEXT    NOT NULL DEFAULT '[]',
    version              TEXT,
    registered_by        TEXT    NOT NULL,
    tenant               TEXT,
    status               TEXT    NOT NULL,
    metadata             TEXT    NOT NULL DEFAULT '{}',
    search_text          TEXT    NOT NULL,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    revision             INTEGER NOT NULL,
    timeout_secs         INTEGER,
    upstream_credentials BLOB,
    shared               BOOLEAN NOT NULL DEFAULT FALSE
);
INSERT INTO servers_new (id, name, url, transport, description, tags, version, registered_by,
    tenant, status, metadata, search_text, created_at, updated_at, revision, timeout_secs,
    upstream_credentials, shared)
SELECT id, name, url, transport, description, tags, version, registered_by, tenant, status,
    metadata, search_text, created_at, updated_at, revision, timeout_secs, upstream_credentials,
    shared
FROM servers;
DROP TABLE servers;
ALTER TABLE servers_new RENAME TO servers;
CREATE INDEX servers_updated_at ON servers (updated_at);
CREATE INDEX servers_status ON servers (status, name);
CREATE INDEX servers_tenant ON servers (tenant);
CREATE UNIQUE INDEX servers_tenant_name ON servers (name, COALESCE(tenant, ''));
CREATE UNIQUE INDEX servers_public_name ON servers (name) WHERE shared OR tenant IS NULL;
COMMIT;
PRAGMA foreign_keys = ON;
