-- Server names are unique per tenant, and among public servers (tenantless or shared), instead
-- of across the whole registry: a tenant's names neither collide with nor reveal another
-- tenant's. A caller means its own tenant's server first, then the public one.
ALTER TABLE servers DROP CONSTRAINT servers_name_key;
CREATE UNIQUE INDEX servers_tenant_name ON servers (name, COALESCE(tenant, ''));
CREATE UNIQUE INDEX servers_public_name ON servers (name) WHERE shared OR tenant IS NULL;
