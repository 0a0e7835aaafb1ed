-- How the gateway reaches each server, and secrets shared by every replica.
ALTER TABLE servers ADD COLUMN timeout_secs integer;
-- Sealed (AES-256-GCM) JSON object of upstream headers; never stored in the clear.
ALTER TABLE servers ADD COLUMN upstream_credentials bytea;

CREATE TABLE secrets (
    name       text        PRIMARY KEY,
    value      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
