-- How the gateway reaches each server, and secrets shared by every replica.
ALTER TABLE servers ADD COLUMN timeout_secs INTEGER;
-- Sealed (AES-256-GCM) JSON object of upstream headers; never stored in the clear.
ALTER TABLE servers ADD COLUMN upstream_credentials BLOB;

CREATE TABLE secrets (
    name       TEXT    PRIMARY KEY,
    value      BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);
