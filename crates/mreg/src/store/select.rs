//! The queries both backends build at run time (a page of servers, a tool search), written once
//! over a [`Dialect`]: what differs between SQLite and PostgreSQL in them is how a time, a tag
//! and a limit are written, nothing else. Each backend runs the statement and reads its rows.

use domain::{ServerQuery, ServerSort, ToolQuery, Visibility};
use sqlx::{Database, QueryBuilder};
use time::OffsetDateTime;

/// The columns of a server row, the same in both schemas.
pub(super) const SERVER_COLUMNS: &str = "id, name, url, transport, description, tags, version, \
     registered_by, tenant, shared, status, metadata, created_at, updated_at, revision, \
     timeout_secs, upstream_credentials IS NOT NULL AS has_upstream_credentials";

/// The columns of `server_health` (aliased `h`) read beside a server, each named `h_COLUMN`; the
/// dialect adds `next_check_at` ([`Dialect::PREFIXED_NEXT_CHECK`]).
const PREFIXED_HEALTH_COLUMNS: &str = "h.server_id AS h_server_id, h.status AS h_status, \
     h.consecutive_failures AS h_consecutive_failures, h.last_checked_at AS h_last_checked_at, \
     h.last_outcome AS h_last_outcome, h.last_detail AS h_last_detail, \
     h.last_latency_ms AS h_last_latency_ms, h.last_protocol_version AS h_last_protocol_version, \
     h.last_checked_by AS h_last_checked_by, h.last_ok_at AS h_last_ok_at, \
     h.status_since AS h_status_since";

/// Health statuses in rank order, healthiest first, as SQL over `column`.
fn health_rank(column: &str) -> String {
    format!(
        "CASE {column} WHEN 'healthy' THEN 0 WHEN 'degraded' THEN 1 WHEN 'unknown' THEN 2 \
         ELSE 3 END"
    )
}

/// What the two SQL dialects write differently in the queries of this module.
pub(super) trait Dialect: Database + Sized {
    /// What follows a `LIKE` pattern: the escape character `\` of [`like_pattern`].
    const LIKE_ESCAPE: &'static str;

    /// `server_health.next_check_at` (aliased `h`) as a column named `h_next_check_at…`.
    const PREFIXED_NEXT_CHECK: &'static str;

    /// Binds a text value.
    fn bind_text(sql: &mut QueryBuilder<Self>, value: String);

    /// Binds a health rank.
    fn bind_rank(sql: &mut QueryBuilder<Self>, rank: i32);

    /// Binds a server's id as the schema stores it (a `uuid`, or its text).
    fn bind_id(sql: &mut QueryBuilder<Self>, id: uuid::Uuid);

    /// Binds a point in time as the schema stores it.
    fn bind_time(sql: &mut QueryBuilder<Self>, at: OffsetDateTime);

    /// Pushes the condition "the server's tags hold `tag`" (`servers` not aliased).
    fn push_has_tag(sql: &mut QueryBuilder<Self>, tag: String);

    /// Pushes ` LIMIT n`.
    fn push_limit(sql: &mut QueryBuilder<Self>, limit: u32);
}

/// One page of servers matching `query`, each row with its health columns (`h_…`), in the order of `query.sort` (see
/// [`domain::ServerStore::list_with_health`]).
pub(super) fn servers_with_health<DB: Dialect>(query: &ServerQuery) -> QueryBuilder<DB> {
    let mut sql = QueryBuilder::default();
    sql.push(format!(
        "SELECT page.*, {PREFIXED_HEALTH_COLUMNS}, {} FROM (",
        DB::PREFIXED_NEXT_CHECK
    ));
    let order = match query.sort {
        ServerSort::Name => {
            push_page(&mut sql, query);
            "page.name, page.id"
        }
        ServerSort::Health => {
            push_page_by_health(&mut sql, query);
            "page.health_rank, page.name, page.id"
        }
    };
    sql.push(format!(
        ") AS page LEFT JOIN server_health h ON h.server_id = page.id ORDER BY {order}"
    ));
    sql
}

/// Pushes the query of one page of servers in name order.
fn push_page<DB: Dialect>(sql: &mut QueryBuilder<DB>, query: &ServerQuery) {
    sql.push(format!("SELECT {SERVER_COLUMNS} FROM servers WHERE true"));
    if let Some(after) = &query.after {
        sql.push(" AND ");
        push_after(sql, None, after, query.after_id);
    }
    push_filters(sql, query);
    sql.push(" ORDER BY name, id");
    DB::push_limit(sql, query.limit);
}

/// Pushes the query of one page of servers healthiest first; each row has the columns `health`
/// and `health_rank`.
fn push_page_by_health<DB: Dialect>(sql: &mut QueryBuilder<DB>, query: &ServerQuery) {
    sql.push(format!(
        "SELECT * FROM (SELECT *, {} AS health_rank FROM (SELECT {SERVER_COLUMNS}, \
         COALESCE((SELECT h.status FROM server_health h WHERE h.server_id = servers.id), \
         'unknown') AS health FROM servers WHERE true",
        health_rank("health")
    ));
    push_filters(sql, query);
    sql.push(") AS inner_servers) AS ranked");
    if let (Some(after), Some(rank)) = (&query.after, query.after_rank) {
        sql.push(" WHERE ");
        push_after(sql, Some(rank), after, query.after_id);
    }
    sql.push(" ORDER BY health_rank, name, id");
    DB::push_limit(sql, query.limit);
}

/// Pushes the condition "after the cursor": after (`rank`,) `name`, `id` in that order, or, for a
/// cursor without an id, after every server called `name`.
fn push_after<DB: Dialect>(
    sql: &mut QueryBuilder<DB>,
    rank: Option<u8>,
    name: &domain::ServerName,
    id: Option<uuid::Uuid>,
) {
    let columns = match (rank, id) {
        (Some(_), Some(_)) => "(health_rank, name, id) > (",
        (Some(_), None) => "(health_rank, name) > (",
        (None, Some(_)) => "(name, id) > (",
        (None, None) => "(name) > (",
    };
    sql.push(columns);
    if let Some(rank) = rank {
        DB::bind_rank(sql, i32::from(rank));
        sql.push(", ");
    }
    DB::bind_text(sql, name.as_str().to_owned());
    if let Some(id) = id {
        sql.push(", ");
        DB::bind_id(sql, id);
    }
    sql.push(")");
}

/// Appends the filters of `query` (all but the cursor) to a `WHERE` clause over `servers`.
fn push_filters<DB: Dialect>(sql: &mut QueryBuilder<DB>, query: &ServerQuery) {
    push_visibility(sql, &query.visibility, "servers.");
    if let Some(tag) = &query.tag {
        sql.push(" AND ");
        DB::push_has_tag(sql, tag.clone());
    }
    if let Some(status) = query.status {
        sql.push(" AND status = ");
        DB::bind_text(sql, status.as_str().to_owned());
    }
    if let Some(text) = &query.text {
        sql.push(" AND search_text LIKE ");
        DB::bind_text(sql, like_pattern(text));
        sql.push(DB::LIKE_ESCAPE);
    }
    if let Some(since) = query.updated_since {
        sql.push(" AND updated_at >= ");
        DB::bind_time(sql, since);
    }
    if let Some(health) = query.health {
        sql.push(
            " AND EXISTS (SELECT 1 FROM server_health h WHERE h.server_id = servers.id \
             AND h.status = ",
        );
        DB::bind_text(sql, health.as_str().to_owned());
        sql.push(")");
    }
}

/// Restricts a query of `servers` (named `alias`, with its dot) to what `visibility` allows,
/// as [`Visibility::pick`] resolves names: a caller's own tenant's server, and the public ones
/// (tenantless or shared) whose name its tenant does not use itself.
fn push_visibility<DB: Dialect>(sql: &mut QueryBuilder<DB>, visibility: &Visibility, alias: &str) {
    match visibility {
        Visibility::All => {}
        Visibility::Tenant(None) => {
            sql.push(format!(" AND ({alias}tenant IS NULL OR {alias}shared)"));
        }
        Visibility::Tenant(Some(tenant)) => {
            sql.push(format!(" AND ({alias}tenant = "));
            DB::bind_text(sql, tenant.clone());
            sql.push(format!(
                " OR (({alias}tenant IS NULL OR {alias}shared) AND NOT EXISTS (SELECT 1 FROM \
                 servers own WHERE own.name = {alias}name AND own.tenant = "
            ));
            DB::bind_text(sql, tenant.clone());
            sql.push(")))");
        }
    }
}

/// The tool search of `query`: rows `server`, `health`, `name`, `title`, `description`,
/// `input_schema`; tools of enabled servers the caller may see, healthiest server first, then
/// those whose name holds more of the words, then by server and tool name.
pub(super) fn tool_search<DB: Dialect>(query: &ToolQuery) -> QueryBuilder<DB> {
    let mut sql = QueryBuilder::default();
    sql.push(
        "SELECT s.name AS server, s.tenant, COALESCE(h.status, 'unknown') AS health, t.name, t.title, \
         t.description, t.input_schema FROM server_tools t \
         JOIN servers s ON s.id = t.server_id \
         LEFT JOIN server_health h ON h.server_id = t.server_id \
         WHERE s.status <> 'disabled'",
    );
    push_visibility(&mut sql, &query.visibility, "s.");
    // Every word, in any order; tools whose name holds more of them rank first.
    let words = query.text.as_deref().map(search_words).unwrap_or_default();
    for word in &words {
        sql.push(" AND t.search_text LIKE ");
        DB::bind_text(&mut sql, like_pattern(word));
        sql.push(DB::LIKE_ESCAPE);
    }
    if let Some(health) = query.health {
        sql.push(" AND COALESCE(h.status, 'unknown') = ");
        DB::bind_text(&mut sql, health.as_str().to_owned());
    }
    sql.push(format!(
        " ORDER BY {}",
        health_rank("COALESCE(h.status, 'unknown')")
    ));
    if !words.is_empty() {
        sql.push(", (0");
        for word in &words {
            sql.push(" + CASE WHEN LOWER(t.name) LIKE ");
            DB::bind_text(&mut sql, like_pattern(word));
            sql.push(DB::LIKE_ESCAPE);
            sql.push(" THEN 1 ELSE 0 END");
        }
        sql.push(") DESC");
    }
    sql.push(", s.name, t.name");
    DB::push_limit(&mut sql, query.limit);
    sql
}

/// Most words of a tool search that are matched (the rest are ignored).
const MAX_SEARCH_WORDS: usize = 8;

/// The words of a tool search, each to be found somewhere in a tool's text, in any order.
fn search_words(text: &str) -> Vec<&str> {
    let mut words: Vec<&str> = text.split_whitespace().collect();
    words.dedup();
    words.truncate(MAX_SEARCH_WORDS);
    words
}

/// `%text%`, with `%`, `_` and `\` escaped so that `text` matches literally inside a `LIKE`
/// pattern whose escape character is `\`.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(super::like_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }

    #[test]
    fn search_words_are_deduplicated_and_capped() {
        assert_eq!(super::search_words(" a  a b "), vec!["a", "b"]);
        let many = "w ".repeat(3) + "a b c d e f g h i j";
        assert_eq!(super::search_words(&many).len(), super::MAX_SEARCH_WORDS);
    }
}
