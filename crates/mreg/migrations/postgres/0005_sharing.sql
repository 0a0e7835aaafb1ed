-- Tenant isolation: a server belongs to the tenant of whoever registered it (servers.tenant,
-- NULL when registered without one); an administrator may share it with every tenant.
ALTER TABLE servers ADD COLUMN shared BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX servers_tenant ON servers (tenant);
