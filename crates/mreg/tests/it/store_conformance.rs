//! One contract, every backend: each function below is run against SQLite and PostgreSQL.

use std::sync::Arc;

use domain::{AuditFilter, AuditStore};
use domain::{AuthStore, GrantRow, Rotation};
use domain::{
    CatalogStore, Credentials, Error, Health, HealthCheck, HealthPolicy, HealthStatus, HealthStore,
    Outcome, SecretStore, Server, ServerDraft, ServerName, ServerQuery, ServerStatus, ServerStore,
    ToolHit, ToolInfo, ToolQuery,
};
use mreg::audit::{AuditEvent, GENESIS};
use mreg::store::{PgStore, SqliteStore};
use serde_json::json;
use time::Duration;

use crate::support::TestDb;

fn server(name: &str, description: &str, tags: &[&str], status: ServerStatus) -> Server {
    ServerDraft {
        name: name.to_owned(),
        url: format!("https://{name}.example.com/mcp"),
        description: Some(description.to_owned()),
        tags: Some(tags.iter().map(|t| (*t).to_owned()).collect()),
        version: Some("1.0.0".to_owned()),
        status: Some(status.as_str().to_owned()),
        metadata: json!({ "team": "search", "nested": { "n": 1 } })
            .as_object()
            .cloned(),
        ..ServerDraft::default()
    }
    .validate()
    .expect("valid draft")
    .into_server("alice", Some("t1"), domain::now())
}

/// The pages these tests read, through the one listing query of the store
/// ([`ServerStore::list_with_health`]): the servers, or with the order by health the servers and
/// their status.
trait Pages {
    /// The one server called `name` (these tests keep one server per name).
    async fn get(&self, name: &ServerName) -> domain::Result<Option<Server>>;
    async fn list(&self, query: &ServerQuery) -> domain::Result<Vec<Server>>;
    async fn list_by_health(
        &self,
        query: &ServerQuery,
    ) -> domain::Result<Vec<(Server, HealthStatus)>>;
}

impl<T: ServerStore + ?Sized> Pages for T {
    async fn get(&self, name: &ServerName) -> domain::Result<Option<Server>> {
        let mut named = self.named(name).await?;
        assert!(named.len() <= 1, "one server per name here: {named:?}");
        Ok(named.pop())
    }

    async fn list(&self, query: &ServerQuery) -> domain::Result<Vec<Server>> {
        let page = self.list_with_health(query).await?;
        Ok(page.into_iter().map(|(server, _)| server).collect())
    }

    async fn list_by_health(
        &self,
        query: &ServerQuery,
    ) -> domain::Result<Vec<(Server, HealthStatus)>> {
        let query = ServerQuery {
            sort: domain::ServerSort::Health,
            ..query.clone()
        };
        let page = self.list_with_health(&query).await?;
        Ok(page
            .into_iter()
            .map(|(server, health)| {
                let status = health.map_or(HealthStatus::Unknown, |h| h.status);
                (server, status)
            })
            .collect())
    }
}

fn name(n: &str) -> ServerName {
    ServerName::parse(n).expect("valid name")
}

fn names(servers: &[Server]) -> Vec<&str> {
    servers.iter().map(|s| s.name.as_str()).collect()
}

async fn a_stored_server_reads_back_equal(store: Arc<dyn ServerStore>) {
    let s = server("alpha", "First server", &["b", "a"], ServerStatus::Active);
    store.insert(&s, None).await.expect("insert");
    let read = store.get(&s.name).await.expect("get").expect("present");
    assert_eq!(read, s);
    assert_eq!(store.get(&name("missing")).await.expect("get"), None);
}

async fn a_duplicate_name_is_already_exists(store: Arc<dyn ServerStore>) {
    store
        .insert(&server("dup", "", &[], ServerStatus::Active), None)
        .await
        .expect("first insert");
    let err = store
        .insert(&server("dup", "other", &[], ServerStatus::Active), None)
        .await
        .expect_err("second insert");
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
}

async fn lists_are_in_name_order_and_page_with_after_and_limit(store: Arc<dyn ServerStore>) {
    for n in ["delta", "alpha", "charlie", "bravo", "echo", "a-1", "a1"] {
        store
            .insert(&server(n, "", &[], ServerStatus::Active), None)
            .await
            .expect("insert");
    }
    let all = store
        .list(&ServerQuery {
            limit: 100,
            ..ServerQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(
        names(&all),
        ["a-1", "a1", "alpha", "bravo", "charlie", "delta", "echo"]
    );
    let page = store
        .list(&ServerQuery {
            limit: 2,
            after: Some(name("alpha")),
            ..ServerQuery::default()
        })
        .await
        .expect("page");
    assert_eq!(names(&page), ["bravo", "charlie"]);
    let last = store
        .list(&ServerQuery {
            limit: 2,
            after: Some(name("echo")),
            ..ServerQuery::default()
        })
        .await
        .expect("last");
    assert!(last.is_empty());
}

async fn lists_filter_by_tag_status_text_and_update_time(store: Arc<dyn ServerStore>) {
    let mut old = server(
        "old-weather",
        "Forecasts",
        &["weather", "api"],
        ServerStatus::Deprecated,
    );
    old.updated_at -= Duration::hours(2);
    for s in [
        old,
        server(
            "weather",
            "Daily FORECASTS for cities",
            &["weather"],
            ServerStatus::Active,
        ),
        server("files", "File storage", &["storage"], ServerStatus::Active),
        server("percent", "100%_done", &["misc"], ServerStatus::Disabled),
    ] {
        store.insert(&s, None).await.expect("insert");
    }
    let query = |f: fn(&mut ServerQuery)| {
        let mut q = ServerQuery {
            limit: 100,
            ..ServerQuery::default()
        };
        f(&mut q);
        q
    };
    let by_tag = store
        .list(&query(|q| q.tag = Some("weather".into())))
        .await
        .expect("tag");
    assert_eq!(names(&by_tag), ["old-weather", "weather"]);
    let by_status = store
        .list(&query(|q| q.status = Some(ServerStatus::Active)))
        .await
        .expect("status");
    assert_eq!(names(&by_status), ["files", "weather"]);
    let by_text = store
        .list(&query(|q| q.text = Some("forecast".into())))
        .await
        .expect("text");
    assert_eq!(names(&by_text), ["old-weather", "weather"]);
    let by_tag_text = store
        .list(&query(|q| q.text = Some("storage".into())))
        .await
        .expect("tag text");
    assert_eq!(names(&by_tag_text), ["files"]);
    let literal = store
        .list(&query(|q| q.text = Some("%_d".into())))
        .await
        .expect("literal");
    assert_eq!(names(&literal), ["percent"]);
    let wildcard = store
        .list(&query(|q| q.text = Some("_".into())))
        .await
        .expect("underscore");
    assert_eq!(names(&wildcard), ["percent"]);
    let combined = store
        .list(&query(|q| {
            q.tag = Some("weather".into());
            q.status = Some(ServerStatus::Active);
            q.text = Some("cities".into());
        }))
        .await
        .expect("combined");
    assert_eq!(names(&combined), ["weather"]);
    let recent = store
        .list(&query(|q| {
            q.updated_since = Some(domain::now() - Duration::minutes(5))
        }))
        .await
        .expect("since");
    assert_eq!(names(&recent), ["files", "percent", "weather"]);
}

async fn an_update_needs_the_current_revision(store: Arc<dyn ServerStore>) {
    let original = server("rev", "v1", &["a"], ServerStatus::Active);
    store.insert(&original, None).await.expect("insert");
    let mut changed = original.clone();
    changed.description = "v2 searchable".into();
    changed.tags = vec!["z".into()];
    changed.metadata = json!({ "k": [1, 2] })
        .as_object()
        .cloned()
        .unwrap_or_default();
    changed.version = None;
    changed.status = ServerStatus::Disabled;
    changed.updated_at = domain::now();
    changed.revision = 2;
    assert!(
        store
            .update(&changed, 1, Credentials::Keep)
            .await
            .expect("update")
    );
    assert_eq!(
        store.get(&original.name).await.expect("get"),
        Some(changed.clone())
    );
    let found = store
        .list(&ServerQuery {
            text: Some("searchable".into()),
            ..ServerQuery::default()
        })
        .await
        .expect("search sees the update");
    assert_eq!(names(&found), ["rev"]);
    let mut stale = original.clone();
    stale.description = "lost".into();
    assert!(
        !store
            .update(&stale, 1, Credentials::Keep)
            .await
            .expect("stale update")
    );
    assert_eq!(store.get(&original.name).await.expect("get"), Some(changed));
}

async fn delete_reports_whether_it_removed_something(store: Arc<dyn ServerStore>) {
    let s = server("gone", "", &[], ServerStatus::Active);
    store.insert(&s, None).await.expect("insert");
    assert!(store.delete(s.id).await.expect("delete"));
    assert!(!store.delete(s.id).await.expect("second delete"));
    assert_eq!(store.get(&s.name).await.expect("get"), None);
    let mut ghost = s.clone();
    ghost.revision = 2;
    assert!(
        !store
            .update(&ghost, 1, Credentials::Keep)
            .await
            .expect("update of deleted")
    );
    store.ping().await.expect("ping");
}

async fn sealed_credentials_are_stored_kept_replaced_and_cleared(store: Arc<dyn ServerStore>) {
    let mut s = server("creds", "", &[], ServerStatus::Active);
    s.has_upstream_credentials = true;
    store.insert(&s, Some(b"sealed-1")).await.expect("insert");
    assert_eq!(
        store.credentials(s.id).await.expect("read"),
        Some(b"sealed-1".to_vec())
    );
    let read = store.get(&s.name).await.expect("get").expect("present");
    assert!(read.has_upstream_credentials);

    let mut next = read.clone();
    next.revision = 2;
    next.timeout_secs = Some(5);
    assert!(
        store
            .update(&next, 1, Credentials::Keep)
            .await
            .expect("keep")
    );
    assert_eq!(
        store.credentials(s.id).await.expect("read"),
        Some(b"sealed-1".to_vec())
    );
    assert_eq!(
        store
            .get(&s.name)
            .await
            .expect("get")
            .map(|s| s.timeout_secs),
        Some(Some(5))
    );

    next.revision = 3;
    assert!(
        store
            .update(&next, 2, Credentials::Set(b"sealed-2"))
            .await
            .expect("set")
    );
    assert_eq!(
        store.credentials(s.id).await.expect("read"),
        Some(b"sealed-2".to_vec())
    );

    next.revision = 4;
    next.has_upstream_credentials = false;
    assert!(
        store
            .update(&next, 3, Credentials::Clear)
            .await
            .expect("clear")
    );
    assert_eq!(store.credentials(s.id).await.expect("read"), None);
    let read = store.get(&s.name).await.expect("get").expect("present");
    assert!(!read.has_upstream_credentials);
    assert_eq!(
        store
            .credentials(uuid::Uuid::now_v7())
            .await
            .expect("unknown id"),
        None
    );
}

async fn a_secret_is_created_once_and_then_shared(store: Arc<dyn SecretStore>) {
    let first = store.get_or_insert("k", b"one").await.expect("first");
    assert_eq!(first, b"one");
    let second = store.get_or_insert("k", b"two").await.expect("second");
    assert_eq!(second, b"one", "the first stored value wins");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .get_or_insert("race", format!("v{i}").as_bytes())
                    .await
            })
        })
        .collect();
    let mut values = Vec::new();
    for task in tasks {
        values.push(task.await.expect("task").expect("secret"));
    }
    values.dedup();
    assert_eq!(
        values.len(),
        1,
        "every concurrent caller sees the same secret"
    );
}

fn probe(at: time::OffsetDateTime, outcome: Outcome, by: &str) -> HealthCheck {
    HealthCheck {
        checked_at: at,
        outcome,
        detail: (!outcome.is_up()).then(|| "connection refused".to_owned()),
        latency_ms: 12,
        protocol_version: outcome.is_up().then(|| "2025-11-25".to_owned()),
        checked_by: by.to_owned(),
    }
}

fn policy() -> HealthPolicy {
    HealthPolicy {
        interval: std::time::Duration::from_secs(30),
        unhealthy_after: 2,
        max_backoff: std::time::Duration::from_secs(300),
    }
}

async fn due_servers_are_leased_to_one_owner_at_a_time(
    store: Arc<dyn ServerStore>,
    health: Arc<dyn HealthStore>,
) {
    let now = domain::now();
    for name in ["due-a", "due-b", "off"] {
        let status = if name == "off" {
            ServerStatus::Disabled
        } else {
            ServerStatus::Active
        };
        store
            .insert(&server(name, "", &[], status), None)
            .await
            .expect("insert");
    }
    let lease = std::time::Duration::from_secs(60);
    let first = health
        .claim_due("one", now, lease, 10)
        .await
        .expect("claim");
    let mut names: Vec<String> = first.iter().map(|(_, n)| n.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        ["due-a", "due-b"],
        "new servers are due at once; disabled ones never"
    );
    assert!(
        health
            .claim_due("two", now, lease, 10)
            .await
            .expect("claim")
            .is_empty(),
        "leased servers are not claimed again"
    );
    let later = now + time::Duration::seconds(61);
    let one = health
        .claim_due("two", later, lease, 1)
        .await
        .expect("claim");
    let rest = health
        .claim_due("two", later, lease, 10)
        .await
        .expect("claim");
    assert_eq!(
        (one.len(), rest.len()),
        (1, 1),
        "expired leases can be taken, up to the limit"
    );

    let (id, _) = first[0].clone();
    let mut state = health
        .health(id)
        .await
        .expect("health")
        .expect("a row for every server");
    assert_eq!(state.status, HealthStatus::Unknown);
    state.record(probe(later, Outcome::Ok, "one"), &policy(), 0.0);
    health.record(&state).await.expect("record");
    let soon = later + time::Duration::seconds(1);
    assert!(
        health
            .claim_due("three", soon, lease, 10)
            .await
            .expect("claim")
            .is_empty(),
        "a recorded server is not due before its next check, and the other is still leased"
    );
    let next = later + time::Duration::seconds(31);
    let claimed = health
        .claim_due("three", next, lease, 10)
        .await
        .expect("claim");
    assert_eq!(
        claimed.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        [id],
        "it is due again after its interval"
    );
}

async fn health_is_recorded_with_history_changes_and_pruning(
    store: Arc<dyn ServerStore>,
    health: Arc<dyn HealthStore>,
) {
    let s = server("watched", "", &[], ServerStatus::Active);
    store.insert(&s, None).await.expect("insert");
    let start = domain::now() - time::Duration::minutes(10);
    let mut state = Health::unknown(s.id, start);
    for (minute, outcome) in [
        (0, Outcome::Ok),
        (1, Outcome::Refused),
        (2, Outcome::Timeout),
        (3, Outcome::Ok),
    ] {
        state.record(
            probe(start + time::Duration::minutes(minute), outcome, "me"),
            &policy(),
            0.0,
        );
        health.record(&state).await.expect("record");
        if minute == 2 {
            let stored = health.health(s.id).await.expect("health").expect("row");
            assert_eq!(stored.status, HealthStatus::Unhealthy);
            assert_eq!(stored.consecutive_failures, 2);
            assert_eq!(
                stored.status_since,
                state.last_check.as_ref().map(|c| c.checked_at),
                "unhealthy since the probe that made it so"
            );
        }
        if minute == 1 {
            // A second failure keeps the status (degraded → unhealthy changes it, see above);
            // here the first failure changed healthy to degraded.
            let stored = health.health(s.id).await.expect("health").expect("row");
            assert_eq!(stored.status, HealthStatus::Degraded);
            assert_eq!(stored.status_since, state.status_since);
        }
    }
    let stored = health.health(s.id).await.expect("health").expect("row");
    assert_eq!(stored, state, "the current health reads back as recorded");
    let since = stored
        .status_since
        .expect("a status that changed has a start");
    state.record(
        probe(start + time::Duration::minutes(4), Outcome::Ok, "me"),
        &policy(),
        0.0,
    );
    health.record(&state).await.expect("record");
    let stored = health.health(s.id).await.expect("health").expect("row");
    assert_eq!(
        stored.status_since,
        Some(since),
        "healthy again: it stays healthy since the probe that recovered it"
    );
    let quiet = server("never-probed", "", &[], ServerStatus::Active);
    store.insert(&quiet, None).await.expect("insert");
    for sort in [domain::ServerSort::Name, domain::ServerSort::Health] {
        let page = store
            .list_with_health(&ServerQuery {
                sort,
                ..ServerQuery::default()
            })
            .await
            .expect("list with health");
        let names: Vec<&str> = page.iter().map(|(s, _)| s.name.as_str()).collect();
        let expected = match sort {
            domain::ServerSort::Name => ["never-probed", "watched"],
            domain::ServerSort::Health => ["watched", "never-probed"],
        };
        assert_eq!(
            names, expected,
            "{sort:?}: the page order by name, or by health and then name"
        );
        let of = |name: &str| {
            page.iter()
                .find(|(s, _)| s.name.as_str() == name)
                .map(|(_, h)| h.clone())
        };
        assert_eq!(
            of("watched"),
            Some(Some(stored.clone())),
            "{sort:?}: a page reads each server's health as health() does"
        );
        assert!(
            matches!(of("never-probed"), Some(None))
                || matches!(of("never-probed"), Some(Some(ref h)) if h.status == HealthStatus::Unknown),
            "{sort:?}: a server never probed has no health or an unknown one: {page:?}"
        );
    }
    store.delete(quiet.id).await.expect("delete");
    let history = health.history(s.id, start, 10).await.expect("history");
    let outcomes: Vec<Outcome> = history.iter().map(|c| c.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Ok,
            Outcome::Ok,
            Outcome::Timeout,
            Outcome::Refused,
            Outcome::Ok
        ],
        "newest first"
    );
    assert_eq!(history[2].detail.as_deref(), Some("connection refused"));
    assert_eq!(
        health.history(s.id, start, 2).await.expect("limited").len(),
        2
    );
    let changed = health
        .changed_since(start + time::Duration::minutes(3))
        .await
        .expect("changed");
    assert_eq!(changed, [(s.id, HealthStatus::Healthy)]);
    assert!(
        health
            .changed_since(domain::now() + time::Duration::minutes(1))
            .await
            .expect("changed")
            .is_empty()
    );
    assert_eq!(
        health
            .prune(start + time::Duration::seconds(150))
            .await
            .expect("prune"),
        3
    );
    assert_eq!(
        health
            .history(s.id, start, 10)
            .await
            .expect("history")
            .len(),
        2
    );
    store.delete(s.id).await.expect("delete");
    assert_eq!(
        health.health(s.id).await.expect("health"),
        None,
        "health goes with its server"
    );
    state.record(probe(domain::now(), Outcome::Ok, "me"), &policy(), 0.0);
    assert!(
        !health
            .record(&state)
            .await
            .expect("recording a deleted server's probe is not an error"),
        "it stores nothing and says so"
    );
}

async fn the_catalog_is_replaced_per_server_and_searched_healthiest_first(
    store: Arc<dyn ServerStore>,
    health: Arc<dyn HealthStore>,
    catalog: Arc<dyn CatalogStore>,
) {
    let tool = |name: &str, description: &str| ToolInfo {
        name: name.to_owned(),
        title: None,
        description: description.to_owned(),
        input_schema: json!({ "type": "object", "properties": { "q": { "type": "string" } } }),
    };
    let mut ids = Vec::new();
    for name in ["zeta", "alpha", "hidden"] {
        let status = if name == "hidden" {
            ServerStatus::Disabled
        } else {
            ServerStatus::Active
        };
        let s = server(name, "", &[], status);
        store.insert(&s, None).await.expect("insert");
        catalog
            .replace_tools(
                s.id,
                &[
                    tool("search_docs", "Search the 100%_docs"),
                    tool(&format!("{name}_only"), "other"),
                ],
            )
            .await
            .expect("tools");
        ids.push(s.id);
    }
    let mut zeta = Health::unknown(ids[0], domain::now());
    zeta.record(probe(domain::now(), Outcome::Ok, "me"), &policy(), 0.0);
    health.record(&zeta).await.expect("record");
    let mut alpha = Health::unknown(ids[1], domain::now());
    for _ in 0..2 {
        alpha.record(probe(domain::now(), Outcome::Refused, "me"), &policy(), 0.0);
    }
    health.record(&alpha).await.expect("record");

    let query = |text: &str, health: Option<HealthStatus>| ToolQuery {
        visibility: domain::Visibility::All,
        text: Some(text.to_owned()),
        health,
        limit: 50,
    };
    let hits = catalog
        .search_tools(&query("search", None))
        .await
        .expect("search");
    let found: Vec<(String, HealthStatus)> = hits
        .iter()
        .map(|h| (h.server.to_string(), h.health))
        .collect();
    assert_eq!(
        found,
        [
            ("zeta".to_owned(), HealthStatus::Healthy),
            ("alpha".to_owned(), HealthStatus::Unhealthy)
        ]
    );
    assert_eq!(
        hits[0].tool.input_schema["properties"]["q"]["type"],
        "string"
    );
    assert_eq!(
        catalog
            .search_tools(&query("%_docs", None))
            .await
            .expect("literal")
            .len(),
        2
    );
    assert_eq!(
        catalog
            .search_tools(&query("_", Some(HealthStatus::Healthy)))
            .await
            .expect("filtered")
            .len(),
        2
    );
    assert!(
        catalog
            .search_tools(&query("hidden_only", None))
            .await
            .expect("disabled")
            .is_empty()
    );
    // Several words: each somewhere, in any order, as an agent phrases a search; tools whose
    // name holds more of the words first (within one health).
    let names = |hits: Vec<ToolHit>| {
        hits.into_iter()
            .map(|h| format!("{}/{}", h.server, h.tool.name))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            catalog
                .search_tools(&query("docs search", None))
                .await
                .expect("words")
        ),
        ["zeta/search_docs", "alpha/search_docs"]
    );
    assert!(
        catalog
            .search_tools(&query("search weather", None))
            .await
            .expect("words")
            .is_empty(),
        "every word must match"
    );
    assert_eq!(
        names(
            catalog
                .search_tools(&query("other zeta", None))
                .await
                .expect("words")
        ),
        ["zeta/zeta_only"]
    );
    catalog
        .replace_tools(
            ids[0],
            &[
                tool("search_docs", "Search the 100%_docs"),
                tool("zeta_only", "other"),
                tool("lookup", "search the docs of zeta"),
            ],
        )
        .await
        .expect("tools");
    assert_eq!(
        names(
            catalog
                .search_tools(&query("zeta docs", None))
                .await
                .expect("ranked")
        ),
        ["zeta/lookup"],
        "both words, in the description"
    );
    assert_eq!(
        names(
            catalog
                .search_tools(&query("docs search", None))
                .await
                .expect("ranked")
        )[..2],
        ["zeta/search_docs".to_owned(), "zeta/lookup".to_owned()],
        "the tool whose name holds both words ranks before the one whose text does"
    );
    catalog
        .replace_tools(
            ids[0],
            &[
                tool("search_docs", "Search the 100%_docs"),
                tool("zeta_only", "other"),
            ],
        )
        .await
        .expect("tools");

    catalog
        .replace_tools(ids[0], &[tool("renamed", "new")])
        .await
        .expect("replace");
    let hits = catalog
        .search_tools(&query("search", None))
        .await
        .expect("search");
    assert_eq!(hits.len(), 1, "replacing drops the old tools");
    catalog
        .replace_tools(uuid::Uuid::now_v7(), &[tool("orphan", "x")])
        .await
        .expect("unknown server is ignored");
    assert!(
        catalog
            .search_tools(&query("orphan", None))
            .await
            .expect("search")
            .is_empty()
    );
}

async fn lists_sort_by_health_and_page_by_rank_and_name(
    store: Arc<dyn ServerStore>,
    health: Arc<dyn HealthStore>,
) {
    let now = domain::now();
    let mut ids = std::collections::HashMap::new();
    for name in ["a", "b", "c", "d", "e"] {
        let s = server(name, "", &["t"], ServerStatus::Active);
        store.insert(&s, None).await.expect("insert");
        ids.insert(name, s.id);
    }
    let set = async |name: &str, outcomes: &[Outcome]| {
        let mut state = Health::unknown(ids[name], now);
        for outcome in outcomes {
            state.record(probe(now, *outcome, "me"), &policy(), 0.0);
        }
        health.record(&state).await.expect("record");
    };
    set("a", &[Outcome::Refused, Outcome::Refused]).await;
    set("b", &[Outcome::Refused]).await;
    set("c", &[Outcome::Ok]).await;
    set("e", &[Outcome::Ok]).await;
    let page = |after: Option<(u8, &str)>, limit: u32| ServerQuery {
        limit,
        sort: domain::ServerSort::Health,
        after: after.map(|(_, n)| name(n)),
        after_rank: after.map(|(r, _)| r),
        ..ServerQuery::default()
    };
    let all = store.list_by_health(&page(None, 10)).await.expect("list");
    let order: Vec<(&str, HealthStatus)> = all.iter().map(|(s, h)| (s.name.as_str(), *h)).collect();
    assert_eq!(
        order,
        [
            ("c", HealthStatus::Healthy),
            ("e", HealthStatus::Healthy),
            ("b", HealthStatus::Degraded),
            ("d", HealthStatus::Unknown),
            ("a", HealthStatus::Unhealthy),
        ]
    );
    let second = store
        .list_by_health(&page(Some((0, "e")), 2))
        .await
        .expect("page");
    assert_eq!(
        second
            .iter()
            .map(|(s, _)| s.name.as_str())
            .collect::<Vec<_>>(),
        ["b", "d"]
    );
    let last = store
        .list_by_health(&page(Some((2, "d")), 2))
        .await
        .expect("page");
    assert_eq!(
        last.iter()
            .map(|(s, _)| s.name.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    let filtered = ServerQuery {
        health: Some(HealthStatus::Healthy),
        ..page(None, 10)
    };
    assert_eq!(
        store
            .list_by_health(&filtered)
            .await
            .expect("filtered")
            .len(),
        2
    );
}

async fn oauth_grants_rotate_once_and_remember_spent_tokens(store: Arc<dyn AuthStore>) {
    store
        .insert_client("client-1", r#"{"client_id":"client-1"}"#, 1)
        .await
        .expect("client");
    assert_eq!(
        store.client("client-1").await.expect("read").as_deref(),
        Some(r#"{"client_id":"client-1"}"#)
    );
    assert_eq!(store.client("nobody").await.expect("read"), None);
    assert!(matches!(
        store.insert_client("client-1", "{}", 2).await,
        Err(domain::Error::AlreadyExists { .. })
    ));
    let grant = GrantRow {
        id: "grant-1".to_owned(),
        client_id: "client-1".to_owned(),
        subject: "alice".to_owned(),
        refresh_hash: "h0".to_owned(),
        data: vec![1, 2, 3],
        expires_at: 1_000,
        revoked_at: None,
    };
    store.insert_grant(&grant, 10).await.expect("grant");
    assert_eq!(
        store.grant_by_refresh("h0").await.expect("read"),
        Some(grant.clone())
    );
    // Of concurrent rotations of one token exactly one wins.
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .rotate_refresh("grant-1", "h0", &format!("h1-{i}"), &[9], 20)
                    .await
                    .expect("rotate")
            })
        })
        .collect();
    let mut rotated = 0;
    for attempt in attempts {
        if attempt.await.expect("task") == Rotation::Rotated {
            rotated += 1;
        }
    }
    assert_eq!(rotated, 1, "exactly one rotation wins");
    assert_eq!(store.grant_by_refresh("h0").await.expect("read"), None);
    assert_eq!(
        store.spent_refresh("h0").await.expect("spent").as_deref(),
        Some("grant-1")
    );
    assert_eq!(store.spent_refresh("never").await.expect("spent"), None);
    let mut current = None;
    for i in 0..8 {
        if let Some(g) = store
            .grant_by_refresh(&format!("h1-{i}"))
            .await
            .expect("read")
        {
            current = Some(g);
        }
    }
    let current = current.expect("the winner's hash is current");
    assert_eq!(current.data, vec![9]);
    assert!(store.revoke_grant("grant-1", 30).await.expect("revoke"));
    assert!(
        !store.revoke_grant("grant-1", 31).await.expect("again"),
        "already revoked"
    );
    let revoked = store
        .grant_by_refresh(&current.refresh_hash)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(revoked.revoked_at, Some(30));
    assert_eq!(
        store
            .rotate_refresh("grant-1", &current.refresh_hash, "h2", &[], 40)
            .await
            .expect("rotate"),
        Rotation::Lost,
        "a revoked grant does not rotate"
    );
    store
        .insert_client("idle", r#"{"client_id":"idle"}"#, 1)
        .await
        .expect("client");
    assert_eq!(
        store.prune_clients(5).await.expect("prune clients"),
        1,
        "the client without grants goes; client-1 holds one"
    );
    assert_eq!(store.client("idle").await.expect("read"), None);
    assert!(store.client("client-1").await.expect("read").is_some());
    assert_eq!(
        store.prune_grants(999).await.expect("prune"),
        0,
        "not expired yet"
    );
    assert_eq!(store.prune_grants(1_001).await.expect("prune"), 1);
    assert_eq!(
        store.spent_refresh("h0").await.expect("spent"),
        None,
        "spent hashes go too"
    );
}

async fn lists_show_a_tenant_its_own_tenantless_and_shared_servers(store: Arc<dyn ServerStore>) {
    let mut own = server("own", "", &[], ServerStatus::Active);
    own.tenant = Some("t1".to_owned());
    let mut foreign = server("foreign", "", &[], ServerStatus::Active);
    foreign.tenant = Some("t2".to_owned());
    let mut shared = server("shared", "", &[], ServerStatus::Active);
    shared.tenant = Some("t2".to_owned());
    shared.shared = true;
    let mut global = server("global", "", &[], ServerStatus::Active);
    global.tenant = None;
    for s in [&own, &foreign, &shared, &global] {
        store.insert(s, None).await.expect("insert");
    }
    let names = |servers: Vec<Server>| -> Vec<String> {
        servers.iter().map(|s| s.name.as_str().to_owned()).collect()
    };
    let seen = |visibility: domain::Visibility| {
        let store = store.clone();
        async move {
            let query = ServerQuery {
                visibility,
                ..ServerQuery::default()
            };
            names(store.list(&query).await.expect("list"))
        }
    };
    assert_eq!(
        seen(domain::Visibility::All).await,
        ["foreign", "global", "own", "shared"]
    );
    assert_eq!(
        seen(domain::Visibility::Tenant(Some("t1".to_owned()))).await,
        ["global", "own", "shared"]
    );
    assert_eq!(
        seen(domain::Visibility::Tenant(None)).await,
        ["global", "shared"]
    );
    let by_health = store
        .list_by_health(&ServerQuery {
            visibility: domain::Visibility::Tenant(Some("t2".to_owned())),
            ..ServerQuery::default()
        })
        .await
        .expect("list");
    let mut names: Vec<String> = by_health
        .iter()
        .map(|(s, _)| s.name.as_str().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["foreign", "global", "shared"]);
    // Sharing survives an update and reads back.
    let mut changed = store.get(&own.name).await.expect("get").expect("own");
    changed.shared = true;
    changed.revision += 1;
    assert!(
        store
            .update(&changed, 1, domain::Credentials::Keep)
            .await
            .expect("update")
    );
    assert!(
        store
            .get(&own.name)
            .await
            .expect("get")
            .expect("own")
            .shared
    );
}

async fn names_are_unique_per_tenant_and_among_public_servers(store: Arc<dyn ServerStore>) {
    let in_tenant = |tenant: Option<&str>, shared: bool| {
        let mut s = server("payroll", "", &[], ServerStatus::Active);
        s.tenant = tenant.map(str::to_owned);
        s.shared = shared;
        s
    };
    let (t1, t2, global) = (
        in_tenant(Some("t1"), false),
        in_tenant(Some("t2"), false),
        in_tenant(None, false),
    );
    for s in [&t2, &t1, &global] {
        store
            .insert(s, None)
            .await
            .expect("one per tenant, one public");
    }
    let ids = |servers: Vec<Server>| servers.iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.named(&name("payroll")).await.expect("named")),
        [global.id, t1.id, t2.id],
        "the tenantless one first, then by tenant"
    );
    assert!(
        store
            .named(&name("nobody"))
            .await
            .expect("named")
            .is_empty()
    );
    for (clash, why) in [
        (in_tenant(Some("t1"), false), "twice in one tenant"),
        (in_tenant(None, false), "two tenantless"),
        (
            in_tenant(Some("t3"), true),
            "a shared one beside the tenantless one",
        ),
    ] {
        let err = store.insert(&clash, None).await.expect_err(why);
        assert!(matches!(err, Error::AlreadyExists { .. }), "{why}: {err:?}");
    }
    // Sharing t2's would make two public servers of one name.
    let mut sharing = t2.clone();
    sharing.shared = true;
    sharing.revision += 1;
    let err = store
        .update(&sharing, t2.revision, domain::Credentials::Keep)
        .await
        .expect_err("two public");
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    // A tenant lists its own server of a name, not the public one it hides; another tenant
    // lists the public one; the local operator every one.
    let listed = |visibility: domain::Visibility| {
        let store = store.clone();
        async move {
            let query = ServerQuery {
                visibility,
                ..ServerQuery::default()
            };
            ids(store.list(&query).await.expect("list"))
        }
    };
    let tenant = |t: &str| domain::Visibility::Tenant(Some(t.to_owned()));
    assert_eq!(listed(tenant("t1")).await, [t1.id]);
    assert_eq!(listed(tenant("t3")).await, [global.id]);
    assert_eq!(listed(domain::Visibility::Tenant(None)).await, [global.id]);
    assert_eq!(listed(domain::Visibility::All).await.len(), 3);
    let by_health = store
        .list_by_health(&ServerQuery {
            visibility: tenant("t2"),
            ..ServerQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(
        ids(by_health.into_iter().map(|(s, _)| s).collect()),
        [t2.id]
    );
    // The local operator pages through all three one at a time, in either order: a page may
    // end between servers of one name, and the next one starts after the last server's id.
    for sort in [domain::ServerSort::Name, domain::ServerSort::Health] {
        let mut query = ServerQuery {
            limit: 1,
            sort,
            ..ServerQuery::default()
        };
        let mut seen = Vec::new();
        while seen.len() < 5 {
            let page = store.list_with_health(&query).await.expect("page");
            let Some((last, health)) = page.last() else {
                break;
            };
            seen.push(last.id);
            query.after = Some(last.name.clone());
            query.after_id = Some(last.id);
            query.after_rank = (sort == domain::ServerSort::Health).then(|| {
                health
                    .as_ref()
                    .map_or(HealthStatus::Unknown, |h| h.status)
                    .rank()
            });
        }
        let mut expected = vec![global.id, t1.id, t2.id];
        expected.sort();
        assert_eq!(seen, expected, "{sort:?}: each once, by id within the name");
        // A cursor from before ids were part of it continues after every server of the name.
        query.after_id = None;
        query.after = Some(name("payroll"));
        assert!(
            store.list(&query).await.expect("page").is_empty(),
            "{sort:?}"
        );
    }
    // Deleting one tenant's leaves the others'.
    assert!(store.delete(t1.id).await.expect("delete"));
    assert_eq!(
        ids(store.named(&name("payroll")).await.expect("named")),
        [global.id, t2.id]
    );
}

fn event(n: i64, actor: &str, tool: Option<&str>, decision: &str) -> AuditEvent {
    AuditEvent {
        id: format!("00000000-0000-7000-8000-{n:012}"),
        at_us: 1_000_000 * n,
        request_id: format!("r{n}"),
        actor_subject: actor.to_owned(),
        actor_email: Some(format!("{actor}@example.com")),
        actor_tenant: Some(if actor == "bob" { "t2" } else { "t1" }.to_owned()),
        actor_client_id: None,
        operation: tool.unwrap_or("POST /api/v1/servers").to_owned(),
        tool: tool.map(str::to_owned),
        server: Some("weather".to_owned()),
        arguments: Some(format!("{{\"n\":{n}}}")),
        decision: decision.to_owned(),
        outcome: "ok".to_owned(),
        error: None,
        duration_us: 10,
        // Odd rows name the server's tenant, even ones do not (a tenantless server).
        server_tenant: (n % 2 == 1).then(|| "t1".to_owned()),
    }
}

async fn audit_rows_chain_in_order_once_each_and_filter(store: Arc<dyn AuditStore>) {
    // Text that a bulk format could mangle: separators, quotes, line breaks, escapes, an empty
    // string (not NULL), non-ASCII.
    let mut awkward = event(3, "alice", None, "allow");
    awkward.arguments = Some(r#"{"q":"a,b\n\"c\" \\N ü","e":""}"#.to_owned());
    awkward.error = Some("line one\r\nline \"two\",\t\\N, \u{2028}end".to_owned());
    awkward.actor_client_id = Some(String::new());
    let first = [
        event(1, "alice", Some("register_server"), "allow"),
        event(2, "bob", Some("delete_server"), "deny"),
        awkward,
    ];
    assert_eq!(store.append(&first, false).await.expect("append"), 3);
    // A replay of stored events (e.g. from the spool) stores only the new one.
    let mut again = first.to_vec();
    again.push(event(4, "bob", None, "rate_limited"));
    assert_eq!(store.append(&again, true).await.expect("append"), 1);
    // Without the check, a stored event fails the whole append and stores nothing.
    assert!(store.append(&again, false).await.is_err());
    // Concurrent appends extend one chain.
    let (one, two) = (
        [
            event(5, "alice", None, "allow"),
            event(6, "alice", None, "allow"),
        ],
        [event(7, "bob", None, "allow")],
    );
    let (a, b) = tokio::join!(store.append(&one, false), store.append(&two, false));
    assert_eq!(a.expect("append") + b.expect("append"), 3);
    let chain = store.chain_after(0, 100).await.expect("chain");
    assert_eq!(
        chain.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(chain[0].prev_hash, GENESIS);
    for pair in chain.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    assert_eq!(chain[0].event, first[0], "an event reads back equal");
    assert_eq!(chain[2].event, first[2], "awkward text reads back equal");
    let verified = mreg::audit::verify(store.as_ref()).await.expect("verify");
    assert_eq!((verified.rows, verified.broken), (7, None));
    assert_eq!(verified.head, chain[6].hash);

    let list = |f: AuditFilter| {
        let store = store.clone();
        async move {
            store
                .list(&AuditFilter { limit: 100, ..f })
                .await
                .expect("list")
                .iter()
                .map(|r| r.event.request_id.clone())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(AuditFilter::default()).await.len(), 7);
    assert_eq!(
        list(AuditFilter {
            actor: Some("bob@example.com".to_owned()),
            ..AuditFilter::default()
        })
        .await
        .len(),
        3
    );
    assert_eq!(
        list(AuditFilter {
            tool: Some("delete_server".to_owned()),
            ..AuditFilter::default()
        })
        .await,
        ["r2"]
    );
    assert_eq!(
        list(AuditFilter {
            decision: Some("rate_limited".to_owned()),
            ..AuditFilter::default()
        })
        .await,
        ["r4"]
    );
    assert_eq!(
        list(AuditFilter {
            since_us: Some(2_000_000),
            until_us: Some(4_000_000),
            ..AuditFilter::default()
        })
        .await,
        ["r3", "r2"],
        "newest first"
    );
    assert_eq!(
        list(AuditFilter {
            tenant: Some("t2".to_owned()),
            ..AuditFilter::default()
        })
        .await
        .len(),
        3
    );
    let page = store
        .list(&AuditFilter {
            limit: 2,
            ..AuditFilter::default()
        })
        .await
        .expect("page");
    let next = store
        .list(&AuditFilter {
            limit: 2,
            before_seq: Some(page[1].seq),
            ..AuditFilter::default()
        })
        .await
        .expect("next page");
    assert_eq!(
        page.iter().chain(&next).map(|r| r.seq).collect::<Vec<_>>(),
        [7, 6, 5, 4]
    );
}

async fn audit_pruning_leaves_a_checkpoint_the_rest_verifies_from(store: Arc<dyn AuditStore>) {
    let events: Vec<_> = (1..=5).map(|n| event(n, "alice", None, "allow")).collect();
    store.append(&events, false).await.expect("append");
    let chain = store.chain_after(0, 10).await.expect("chain");
    // Rows that started before 3 s go; a checkpoint keeps the last one's place and hash.
    assert_eq!(store.prune(3_000_000, 99).await.expect("prune"), 2);
    assert_eq!(
        store.anchor().await.expect("anchor"),
        Some((2, chain[1].hash.clone()))
    );
    let verified = mreg::audit::verify(store.as_ref()).await.expect("verify");
    assert_eq!(
        (verified.first_seq, verified.rows, verified.broken),
        (Some(3), 3, None)
    );
    // Everything goes; the chain goes on from the checkpoint.
    assert_eq!(store.prune(i64::MAX, 99).await.expect("prune"), 3);
    assert_eq!(store.prune(i64::MAX, 99).await.expect("prune"), 0);
    store
        .append(&[event(6, "alice", None, "allow")], false)
        .await
        .expect("append");
    let after = store.chain_after(0, 10).await.expect("chain");
    assert_eq!(after.len(), 1);
    assert_eq!(
        (after[0].seq, after[0].prev_hash.as_str()),
        (6, chain[4].hash.as_str())
    );
    let verified = mreg::audit::verify(store.as_ref()).await.expect("verify");
    assert_eq!((verified.rows, verified.broken), (1, None));
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            #[tokio::test]
            async fn health_and_catalog_contracts() {
                let store = std::sync::Arc::new(mreg::store::SqliteStore::in_memory().await.expect("sqlite"));
                super::due_servers_are_leased_to_one_owner_at_a_time(store.clone(), store.clone()).await;
                let store = std::sync::Arc::new(mreg::store::SqliteStore::in_memory().await.expect("sqlite"));
                super::health_is_recorded_with_history_changes_and_pruning(store.clone(), store.clone()).await;
                let store = std::sync::Arc::new(mreg::store::SqliteStore::in_memory().await.expect("sqlite"));
                super::the_catalog_is_replaced_per_server_and_searched_healthiest_first(store.clone(), store.clone(), store).await;
                let store = std::sync::Arc::new(mreg::store::SqliteStore::in_memory().await.expect("sqlite"));
                super::lists_sort_by_health_and_page_by_rank_and_name(store.clone(), store).await;
            }

            $(
                #[tokio::test]
                async fn $test() {
                    let store = mreg::store::SqliteStore::in_memory().await.expect("sqlite");
                    super::$test(std::sync::Arc::new(store)).await;
                }
            )*

            #[tokio::test]
            async fn a_database_file_survives_reopening() {
                let dir = crate::support::TempDir::new();
                let path = dir.0.join("nested/mreg.db");
                let store = super::SqliteStore::open(&path, 4).await.expect("open");
                super::a_stored_server_reads_back_equal(std::sync::Arc::new(store)).await;
                let reopened = super::SqliteStore::open(&path, 4).await.expect("reopen");
                assert_eq!(domain::ServerStore::named(&reopened, &super::name("alpha")).await.expect("named").len(), 1);
            }
        }

        mod postgres {
            #[tokio::test]
            async fn health_and_catalog_contracts() {
                for step in 0..4 {
                    let Some(db) = super::TestDb::create().await else { return };
                    let store = std::sync::Arc::new(super::PgStore::connect(&db.url.clone().into(), 4).await.expect("postgres"));
                    match step {
                        0 => super::due_servers_are_leased_to_one_owner_at_a_time(store.clone(), store.clone()).await,
                        1 => super::health_is_recorded_with_history_changes_and_pruning(store.clone(), store.clone()).await,
                        2 => super::the_catalog_is_replaced_per_server_and_searched_healthiest_first(store.clone(), store.clone(), store.clone()).await,
                        _ => super::lists_sort_by_health_and_page_by_rank_and_name(store.clone(), store.clone()).await,
                    }
                    db.drop_db().await;
                }
            }

            $(
                #[tokio::test]
                async fn $test() {
                    let Some(db) = super::TestDb::create().await else { return };
                    let store = super::PgStore::connect(&db.url.clone().into(), 4).await.expect("postgres");
                    super::$test(std::sync::Arc::new(store.clone())).await;
                    db.drop_db().await;
                }
            )*
        }
    };
}

conformance!(
    a_stored_server_reads_back_equal,
    a_duplicate_name_is_already_exists,
    lists_are_in_name_order_and_page_with_after_and_limit,
    lists_filter_by_tag_status_text_and_update_time,
    an_update_needs_the_current_revision,
    delete_reports_whether_it_removed_something,
    sealed_credentials_are_stored_kept_replaced_and_cleared,
    a_secret_is_created_once_and_then_shared,
    oauth_grants_rotate_once_and_remember_spent_tokens,
    lists_show_a_tenant_its_own_tenantless_and_shared_servers,
    names_are_unique_per_tenant_and_among_public_servers,
    audit_rows_chain_in_order_once_each_and_filter,
    audit_pruning_leaves_a_checkpoint_the_rest_verifies_from,
);

/// Two replicas on one PostgreSQL database take turns appending: each remembers the tail it
/// wrote and extends it without the lock, so each append after the other's finds its position
/// taken and goes through the lock instead. Every row is stored once and the chain verifies.
#[tokio::test]
async fn replicas_sharing_postgres_extend_one_chain() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let url = db.url.clone().into();
    let a = PgStore::connect(&url, 2).await.expect("replica a");
    let b = PgStore::connect(&url, 2).await.expect("replica b");
    for n in 1..=6 {
        let (store, other) = if n % 3 == 0 { (&b, &a) } else { (&a, &b) };
        let events = [
            event(2 * n, "alice", None, "allow"),
            event(2 * n + 1, "bob", None, "allow"),
        ];
        assert_eq!(
            store.append(&events, false).await.expect("append"),
            2,
            "{n}"
        );
        // A replay of what was just written stores nothing more.
        assert_eq!(other.append(&events, true).await.expect("replay"), 0, "{n}");
    }
    let verified = mreg::audit::verify(&a).await.expect("verify");
    assert_eq!((verified.rows, verified.broken), (12, None));
    let seqs: Vec<i64> = a
        .chain_after(0, 100)
        .await
        .expect("chain")
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    db.drop_db().await;
}
