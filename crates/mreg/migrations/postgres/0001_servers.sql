-- Registry of MCP servers. Names sort bytewise (COLLATE "C") so that cursors behave the same
-- on every backend.
CREATE TABLE servers (
    id            uuid        PRIMARY KEY,
    name          text        COLLATE "C" NOT NULL UNIQUE,
    url           text        NOT NULL,
    transport     text        NOT NULL,
    description   text        NOT NULL DEFAULT '',
    tags          text[]      NOT NULL DEFAULT '{}',
    version       text,
    registered_by text        NOT NULL,
    tenant        text,
    status        text        NOT NULL,
    metadata      jsonb       NOT NULL DEFAULT '{}',
    search_text   text        NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    revision      bigint      NOT NULL
);

CREATE INDEX servers_tags ON servers USING gin (tags);
CREATE INDEX servers_updated_at ON servers (updated_at);
CREATE INDEX servers_status ON servers (status, name);

-- Substring search uses a trigram index when pg_trgm can be installed; without it (no
-- privilege, no contrib package) search still works, by scanning.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm is not available (%); text search will scan', SQLERRM;
END
$$;

DO $$
DECLARE
    trgm_schema text;
BEGIN
    SELECT n.nspname INTO trgm_schema
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_trgm';
    IF trgm_schema IS NOT NULL THEN
        EXECUTE format(
            'CREATE INDEX servers_search_trgm ON servers USING gin (search_text %I.gin_trgm_ops)',
            trgm_schema);
    END IF;
END
$$;
