//! The audit log: one row per tool call, proxied request, REST mutation, policy refusal, login
//! and token event, written by the policy chain (never by handlers) and hash-chained so that an
//! altered, removed or reordered row is detected by [`verify`].
//!
//! A request opens an [`Entry`] before it runs, which reserves a place in a bounded queue: when
//! the queue is full (the database is down and the spool cannot take more), the request is
//! refused rather than run unaudited. The entry is completed with the outcome and duration and
//! handed to the [`writer`], which writes batches to the database, or to a local append-only
//! spool file while the database is unreachable and replays it, in order and exactly once (rows
//! are keyed by their event id), when it returns. Request latency never waits for the database.

mod note;
mod refusals;
pub mod writer;

use std::sync::Arc;
use std::time::Instant;

/// Most characters of an audit row's `error`.
const MAX_ERROR_CHARS: usize = 4096;

/// Most characters of an audit row's `operation`, `tool` and `server`: they come from callers
/// (a tool name, a server name in a tool's arguments) before anything has checked them, and a
/// caller without a single role could otherwise write megabytes into every row it causes (the
/// chain keeps rows for the whole retention period).
const MAX_NAME_CHARS: usize = 256;

/// `name`, cut to [`MAX_NAME_CHARS`] (saying how long it was) when it is longer.
fn bounded(name: &str) -> String {
    domain::text::clipped(name, MAX_NAME_CHARS)
}

use domain::Principal;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::policy::Refusal;
use domain::AuditStore;

pub use domain::audit::{
    AuditEvent, AuditRecord, GENESIS, NUL_REPLACEMENT, chain, decision, outcome, sanitise,
    sanitise_json,
};
pub use note::Note;

/// Longest a request waits for a place in a full audit queue while the writer catches up.
pub const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Arguments longer than this (as JSON) are not kept, only their size.
const MAX_ARGUMENTS_BYTES: usize = 16 * 1024;

/// The audit log cannot take another entry: the request must not run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditUnavailable {
    /// Entries can be kept nowhere.
    #[error(
        "the audit log cannot record this request (its queue is full: the database is unreachable and the spool cannot take more); the request was not run, try again later"
    )]
    Failing,
    /// The writer keeps up, but more requests are being audited at once than the queue holds.
    #[error(
        "the audit log cannot record this request (its queue is saturated: more requests are being audited at once than MREG_AUDIT_QUEUE holds, and none finished within {} s); the request was not run, try again shortly",
        QUEUE_WAIT.as_secs()
    )]
    Saturated,
}

impl From<AuditUnavailable> for domain::Error {
    fn from(e: AuditUnavailable) -> Self {
        domain::Error::unavailable("audit log", e)
    }
}

/// Which argument keys are masked: every key that, lower-cased and without `_` and `-`,
/// contains one of the patterns.
#[derive(Debug, Clone)]
pub struct Redaction {
    patterns: Vec<String>,
}

/// Patterns always masked: the usual names of secrets, plus `credential`, `cookie` and
/// `upstream_headers` (a registration's upstream credentials, whatever the header is called).
pub const DEFAULT_REDACTED: &[&str] = &[
    "password",
    "secret",
    "token",
    "authorization",
    "apikey",
    "credential",
    "cookie",
    "upstreamheaders",
];

fn normalise(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect()
}

impl Redaction {
    /// The defaults plus `extra` patterns (from the policy file's `[audit] redact`).
    pub fn new(extra: &[String]) -> Self {
        let mut patterns: Vec<String> = DEFAULT_REDACTED.iter().map(|p| normalise(p)).collect();
        patterns.extend(extra.iter().map(|p| normalise(p)).filter(|p| !p.is_empty()));
        Self { patterns }
    }

    fn masks(&self, key: &str) -> bool {
        let key = normalise(key);
        self.patterns.iter().any(|p| key.contains(p.as_str()))
    }

    /// `value` with every masked key's value replaced, as JSON text (or only its size when it
    /// is too large to keep).
    pub fn apply(&self, mut value: Value) -> String {
        self.mask(&mut value);
        sanitise_json(&mut value);
        let text = value.to_string();
        if text.len() > MAX_ARGUMENTS_BYTES {
            return serde_json::json!({ "truncated_bytes": text.len() }).to_string();
        }
        text
    }

    fn mask(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if self.masks(key) {
                        *v = Value::String("[redacted]".to_owned());
                    } else {
                        self.mask(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.mask(v)),
            _ => {}
        }
    }
}

/// The handle the policy chain records through. Cloning shares the queue.
#[derive(Clone)]
pub struct Auditor {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    queue: mpsc::Sender<AuditEvent>,
    redaction: Redaction,
    status: Arc<writer::Status>,
    /// Rate-limit refusals folded into one row per caller and window.
    refusals: Arc<refusals::Refusals>,
    /// Set when shutdown starts cutting off what still runs (see [`Auditor::cutting_off`]).
    cutting_off: std::sync::atomic::AtomicBool,
}

impl Auditor {
    /// An auditor that records nothing (`MREG_AUDIT=off`).
    pub fn off() -> Self {
        Self { inner: None }
    }

    /// Marks that shutdown is now cutting off what still runs (the grace period is over, or
    /// the listeners have drained and MCP sessions are being ended): an entry dropped unfinished
    /// from now on is recorded as cancelled by the shutdown, not by its caller.
    pub fn cutting_off(&self) {
        if let Some(inner) = &self.inner {
            inner
                .cutting_off
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether anything is recorded.
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// The writer's state, for `/readyz` and metrics; `None` when auditing is off.
    pub fn status(&self) -> Option<&writer::Status> {
        self.inner.as_deref().map(|i| i.status.as_ref())
    }

    /// The writer's status, shared (for the metrics it reports at each scrape).
    pub fn shared_status(&self) -> Option<Arc<writer::Status>> {
        self.inner.as_deref().map(|i| i.status.clone())
    }

    /// Opens the entry of an operation by `actor`, reserving its place in the queue. When the
    /// queue is full because the writer is behind, waits for a place (back-pressure, at most
    /// [`QUEUE_WAIT`]); when it is full because the writer can keep nothing (database
    /// unreachable and spool full), fails at once: the operation must then not run.
    pub async fn open(
        &self,
        actor: &Principal,
        request_id: &str,
        operation: impl Into<String>,
    ) -> Result<Entry, AuditUnavailable> {
        let Some(inner) = &self.inner else {
            return Ok(Entry::disabled());
        };
        let permit = match inner.queue.clone().try_reserve_owned() {
            Ok(permit) => {
                inner.status.saturated(false);
                permit
            }
            Err(mpsc::error::TrySendError::Full(queue)) if !inner.status.failing() => {
                match tokio::time::timeout(QUEUE_WAIT, queue.reserve_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => {
                        inner.status.refused();
                        inner.status.saturated(true);
                        return Err(AuditUnavailable::Saturated);
                    }
                }
            }
            Err(_) => {
                inner.status.refused();
                return Err(AuditUnavailable::Failing);
            }
        };
        let now = domain::now();
        Ok(Entry {
            permit: Some(Place::Reserved(permit)),
            inner: Some(inner.clone()),
            observer: None,
            started: Instant::now(),
            event: AuditEvent {
                id: uuid::Uuid::now_v7().to_string(),
                at_us: (now.unix_timestamp_nanos() / 1000) as i64,
                request_id: request_id.to_owned(),
                actor_subject: actor.subject.clone(),
                actor_email: actor.email.clone(),
                actor_tenant: actor.tenant.clone(),
                actor_client_id: actor.client_id.clone(),
                operation: {
                    let operation = operation.into();
                    if operation.len() > MAX_NAME_CHARS {
                        bounded(&operation)
                    } else {
                        operation
                    }
                },
                tool: None,
                server: None,
                arguments: None,
                decision: decision::ALLOW.to_owned(),
                outcome: outcome::CANCELLED.to_owned(),
                error: None,
                duration_us: 0,
                server_tenant: None,
            },
        })
    }
}

/// An operation being audited. Completed by [`Entry::finish`] or [`Entry::refused`]; dropped
/// unfinished (the caller went away), it is recorded as cancelled.
pub struct Entry {
    permit: Option<Place>,
    /// The auditor's redaction rules; `None` when auditing is off.
    inner: Option<Arc<Inner>>,
    started: Instant,
    event: AuditEvent,
    /// Told the outcome and duration when the entry completes, also with auditing off.
    observer: Option<Observer>,
}

/// Where an entry's event goes when it completes.
enum Place {
    /// A place reserved in the queue.
    Reserved(mpsc::OwnedPermit<AuditEvent>),
    /// None reserved (a stream, see [`Entry::detach`]): the event waits for one when it completes.
    Detached(mpsc::Sender<AuditEvent>),
}

/// See [`Entry::observe`].
type Observer = Box<dyn FnOnce(&str, std::time::Duration) + Send>;

impl Entry {
    /// Gives back the entry's place in the queue, for an operation that may last long (a
    /// streamed answer): it must not hold a place other requests need to be admitted. When it
    /// completes, its event waits for a place (it is never dropped).
    pub fn detach(&mut self) {
        if let Some(Place::Reserved(permit)) = self.permit.take() {
            self.permit = Some(Place::Detached(permit.release()));
        }
    }

    fn disabled() -> Self {
        Self {
            permit: None,
            inner: None,
            observer: None,
            started: Instant::now(),
            event: blank(),
        }
    }

    /// Names the tool and server addressed (kept with auditing off too, for [`Entry::tool`]).
    pub fn target(&mut self, tool: Option<&str>, server: Option<&str>) -> &mut Self {
        self.event.tool = tool.map(bounded);
        self.event.server = server.map(bounded);
        self
    }

    /// The tenant of the server addressed (`None`: a tenantless server, or none resolved).
    pub fn server_tenant(&mut self, tenant: Option<&str>) -> &mut Self {
        self.event.server_tenant = tenant.map(str::to_owned);
        self
    }

    /// Records what a [`watch`]ed operation learnt: the chain's inner refusal, the tenant of
    /// the server it resolved.
    pub fn watched(&mut self, watched: &Watched) -> &mut Self {
        if let Some(decision) = watched.refusal {
            self.decided(decision);
        }
        if watched.server_tenant.is_some() {
            self.event.server_tenant.clone_from(&watched.server_tenant);
        }
        self
    }

    /// The tool addressed, once known.
    pub fn tool(&self) -> Option<&str> {
        self.event.tool.as_deref()
    }

    /// The operation (for MCP traffic: the JSON-RPC method, once read).
    pub fn operation_name(&self) -> &str {
        &self.event.operation
    }

    /// Calls `observer` with the outcome (`ok`, `error`, `cancelled`) and the duration when the
    /// entry completes, whether or not auditing is on: the per-server metrics hang off it, so
    /// they count exactly what the audit log records.
    pub fn observe(
        &mut self,
        observer: impl FnOnce(&str, std::time::Duration) + Send + 'static,
    ) -> &mut Self {
        self.observer = Some(Box::new(observer));
        self
    }

    /// Records the arguments, redacted.
    pub fn arguments(&mut self, arguments: Value) -> &mut Self {
        if let Some(inner) = &self.inner {
            self.event.arguments = Some(inner.redaction.apply(arguments));
        }
        self
    }

    /// Replaces the actor (for sign-ins, where the caller is known only at the end).
    pub fn actor(&mut self, actor: &Principal) -> &mut Self {
        if self.permit.is_some() {
            self.event.actor_subject = actor.subject.clone();
            self.event.actor_email = actor.email.clone();
            self.event.actor_tenant = actor.tenant.clone();
            self.event.actor_client_id = actor.client_id.clone();
        }
        self
    }

    /// Sets the OAuth client of the actor.
    pub fn client(&mut self, client_id: &str) -> &mut Self {
        if self.permit.is_some() {
            self.event.actor_client_id = Some(client_id.to_owned());
        }
        self
    }

    /// Renames the operation.
    pub fn operation(&mut self, operation: &str) -> &mut Self {
        self.event.operation = bounded(operation);
        self
    }

    /// Records that the chain refused the operation (complete it with [`Entry::finish`]).
    pub fn decide(&mut self, refusal: &Refusal) -> &mut Self {
        self.decided(decision_of(refusal))
    }

    /// Records a [`decision`].
    pub fn decided(&mut self, decision: &str) -> &mut Self {
        decision.clone_into(&mut self.event.decision);
        self
    }

    /// Completes the entry of a refused operation.
    pub fn refused(mut self, refusal: &Refusal) {
        self.decide(refusal);
        self.complete(outcome::ERROR, Some(refusal.message()));
    }

    /// Completes the entry of a mutation and waits until its row is kept (in the database, or
    /// in the synced spool) — at most [`QUEUE_WAIT`] — so an answered change is never missing
    /// from the log, even if the process is killed the next moment.
    pub async fn finish_kept(self, result: Result<(), String>) {
        let kept = match (&self.inner, &self.permit) {
            (Some(inner), Some(_)) => Some(inner.status.kept_when(&self.event.id)),
            _ => None,
        };
        self.finish(result);
        if let Some(kept) = kept
            && !matches!(tokio::time::timeout(QUEUE_WAIT, kept).await, Ok(Ok(())))
        {
            tracing::warn!(
                "the audit row of a change was not confirmed kept within {} s; answering anyway",
                QUEUE_WAIT.as_secs()
            );
        }
    }

    /// Completes the entry of an admitted operation: `Err` carries why it failed.
    pub fn finish(mut self, result: Result<(), String>) {
        match result {
            Ok(()) => self.complete(outcome::OK, None),
            Err(why) => self.complete(outcome::ERROR, Some(why)),
        }
    }

    fn complete(&mut self, outcome: &str, error: Option<String>) {
        if let Some(observer) = self.observer.take() {
            observer(outcome, self.started.elapsed());
        }
        let Some(permit) = self.permit.take() else {
            return;
        };
        outcome.clone_into(&mut self.event.outcome);
        // Bounded like the arguments: the text of an error may come from an upstream.
        self.event.error = error.map(|e| domain::text::clipped(&e, MAX_ERROR_CHARS));
        self.event.duration_us = self.started.elapsed().as_micros() as i64;
        let mut event = std::mem::replace(&mut self.event, blank());
        if let Some(inner) = &self.inner
            && !inner.refusals.write(&event)
        {
            // Counted in its caller's window (its place in the queue is given back).
            return;
        }
        // Once, here: what is queued is what is hashed, spooled and stored.
        event.sanitise();
        match permit {
            Place::Reserved(permit) => {
                permit.send(event);
            }
            Place::Detached(queue) => {
                if let Err(full) = queue.try_send(event) {
                    let mpsc::error::TrySendError::Full(event) = full else {
                        tracing::error!("the audit writer has stopped: an entry is lost");
                        return;
                    };
                    #[allow(
                        clippy::disallowed_methods,
                        reason = "the audit log sits below the task driver; the send ends when the writer takes the entry or stops"
                    )]
                    tokio::spawn(async move {
                        if queue.send(event).await.is_err() {
                            tracing::error!("the audit writer has stopped: an entry is lost");
                        }
                    });
                }
            }
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if self.permit.is_some() || self.observer.is_some() {
            let shutdown = self
                .inner
                .as_ref()
                .is_some_and(|i| i.cutting_off.load(std::sync::atomic::Ordering::Relaxed));
            let why = if shutdown {
                SHUTDOWN_CUT
            } else {
                "the caller went away before the operation ended"
            };
            self.complete(outcome::CANCELLED, Some(why.to_owned()));
        }
    }
}

/// The `error` of an operation cut off by shutdown.
pub const SHUTDOWN_CUT: &str =
    "cancelled (shutdown): mreg stopped before the operation ended (MREG_SHUTDOWN_GRACE_SECS)";

fn blank() -> AuditEvent {
    AuditEvent {
        id: String::new(),
        at_us: 0,
        request_id: String::new(),
        actor_subject: String::new(),
        actor_email: None,
        actor_tenant: None,
        actor_client_id: None,
        operation: String::new(),
        tool: None,
        server: None,
        arguments: None,
        decision: String::new(),
        outcome: String::new(),
        error: None,
        duration_us: 0,
        server_tenant: None,
    }
}

tokio::task_local! {
    static WATCHED: std::cell::RefCell<Watched>;
}

/// What an operation learnt on the way that its row should say (see [`watch`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watched {
    /// A refusal by the chain of something the operation asked for (`proxy_request`
    /// forwarding to a server the caller may not use).
    pub refusal: Option<&'static str>,
    /// The tenant of the server the operation resolved its name to, when it has one.
    pub server_tenant: Option<String>,
}

fn decision_of(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::Denied(_) => decision::DENY,
        Refusal::Limited(_) => decision::RATE_LIMITED,
    }
}

/// Runs `operation` (a gateway tool, a REST change) and says what it learnt on the way that its
/// row should carry ([`Entry::watched`]): whether the chain refused something it asked for,
/// and which tenant's server its name meant.
pub async fn watch<F: Future>(operation: F) -> (F::Output, Watched) {
    WATCHED
        .scope(std::cell::RefCell::default(), async {
            let output = operation.await;
            (output, WATCHED.with(|w| w.take()))
        })
        .await
}

/// Tells the enclosing [`watch`], if any, that the chain refused `refusal`.
pub fn note_refusal(refusal: &Refusal) {
    let _ = WATCHED.try_with(|w| w.borrow_mut().refusal = Some(decision_of(refusal)));
}

/// Tells the enclosing [`watch`], if any, that the operation was refused as forbidden (another
/// tenant's server, a change only an admin may make): its row says `deny`, not `allow`. Called
/// where a forbidden error becomes an answer, so no refusal path can forget it.
pub fn note_denied() {
    let _ = WATCHED.try_with(|w| w.borrow_mut().refusal = Some(decision::DENY));
}

/// Tells the enclosing [`watch`], if any, that a name was resolved to `server` (the registry
/// calls it on every resolution).
pub fn note_server(server: &domain::Server) {
    let _ = WATCHED.try_with(|w| w.borrow_mut().server_tenant.clone_from(&server.tenant));
}

/// Where a chain check stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    /// The first row that does not verify.
    pub seq: i64,
    /// What is wrong with it.
    pub reason: String,
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Rows checked.
    pub rows: u64,
    /// The first row's sequence number (after any pruned prefix).
    pub first_seq: Option<i64>,
    /// The last row's sequence number.
    pub last_seq: Option<i64>,
    /// The hash of the last row: record it elsewhere to detect a truncated tail later.
    pub head: String,
    /// The first broken link, if any.
    pub broken: Option<Break>,
}

/// Walks the whole chain in order, from the last retention checkpoint (or the start).
pub async fn verify(store: &dyn AuditStore) -> domain::Result<Verification> {
    let (mut seq, mut hash) = store.anchor().await?.unwrap_or((0, GENESIS.to_owned()));
    let mut result = Verification {
        rows: 0,
        first_seq: None,
        last_seq: None,
        head: hash.clone(),
        broken: None,
    };
    loop {
        let page = store.chain_after(seq, 5000).await?;
        let Some(last) = page.last() else {
            return Ok(result);
        };
        let last_seq = last.seq;
        for row in page {
            let broken = if row.seq != seq + 1 {
                Some(format!(
                    "rows {} to {} are missing (removed)",
                    seq + 1,
                    row.seq - 1
                ))
            } else if row.prev_hash != hash {
                Some("its previous-row hash does not match the row before it (rows were removed, reordered or rewritten)".to_owned())
            } else if row.event.chain_hash(row.seq, &row.prev_hash) != row.hash {
                Some("its contents do not match its hash (the row was altered)".to_owned())
            } else {
                None
            };
            if let Some(reason) = broken {
                result.broken = Some(Break {
                    seq: row.seq,
                    reason,
                });
                return Ok(result);
            }
            result.rows += 1;
            result.first_seq.get_or_insert(row.seq);
            result.last_seq = Some(row.seq);
            seq = row.seq;
            hash = row.hash;
            result.head.clone_from(&hash);
        }
        debug_assert_eq!(seq, last_seq);
    }
}

#[cfg(test)]
mod tests;
