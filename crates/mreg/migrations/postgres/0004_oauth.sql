-- The OAuth authorization server: registered clients and grants (refresh-token families).
-- Times are Unix seconds. Refresh tokens are stored only as SHA-256 hashes; a grant's data
-- (claims, scopes, upstream tokens) is sealed with AES-256-GCM.
CREATE TABLE oauth_clients (
    client_id  TEXT    PRIMARY KEY,
    metadata   TEXT    NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE oauth_grants (
    id           TEXT    PRIMARY KEY,
    client_id    TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    refresh_hash TEXT    NOT NULL UNIQUE,
    data         BYTEA   NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX oauth_grants_expires ON oauth_grants (expires_at);

-- Every refresh token that has been exchanged: presenting one again revokes its family.
CREATE TABLE oauth_spent_refresh (
    hash       TEXT    PRIMARY KEY,
    grant_id   TEXT    NOT NULL,
    spent_at   BIGINT NOT NULL
);
CREATE INDEX oauth_spent_refresh_grant ON oauth_spent_refresh (grant_id);
