-- The tenant of the server an audit row addresses: server names are per tenant (migration 9),
-- so a name alone does not say which server a row means. NULL for tenantless servers and for
-- rows written before this column existed (their hashes do not cover it).
ALTER TABLE audit_log ADD COLUMN server_tenant TEXT;
