-- Lists page in (name, id) order: servers of one name (several tenants' own, migration 9) follow
-- each other by id, and a page's cursor continues after its last server's name and id.
CREATE INDEX servers_name_id ON servers (name, id);
