//! Repeated rate-limit refusals of one caller, folded into one row per window. A client that
//! keeps retrying past its budget would otherwise write a row per refusal — 116,000 in a minute
//! grew a SQLite file by 70 MB. The first refusal of a caller for an operation (server, tool) in
//! a window is written as it is;
//! the next ones in that window are counted, and when the window ends (or mreg stops) one more
//! row records how many there were and between which times. Nothing is dropped: every refusal is
//! in a row or in a count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{AuditEvent, decision, outcome};

/// Most callers with an open window; beyond that, refusals are written one row each (the map
/// must not grow without bound under a flood of distinct callers).
const MAX_WINDOWS: usize = 100_000;

/// The open windows of an instance.
#[derive(Debug)]
pub struct Refusals {
    window: Duration,
    open: Mutex<HashMap<String, Window>>,
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    /// The row written for the first refusal (what the summary repeats: actor, operation).
    first: AuditEvent,
    /// Refusals counted, not written.
    folded: u64,
    last_at_us: i64,
}

impl Refusals {
    /// Windows of `window`; [`Duration::ZERO`] folds nothing (one row per refusal).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// How often [`Refusals::ended`] should be asked for rows.
    pub fn sweep_every(&self) -> Duration {
        (self.window / 4).max(Duration::from_millis(100))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        // Entries are updated whole, so a poisoned map is still consistent.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `event` is to be written: `false` when it is a rate-limit refusal of a caller
    /// whose window is open, in which case it is counted in that window.
    pub fn write(&self, event: &AuditEvent) -> bool {
        if self.window.is_zero() || event.decision != decision::RATE_LIMITED {
            return true;
        }
        // What was asked for is part of the key: refusals of other servers or tools are rows
        // of their own, so the log still shows everything a caller went after.
        let key = format!(
            "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            event.actor_tenant.as_deref().unwrap_or_default(),
            event.actor_subject,
            event.actor_client_id.as_deref().unwrap_or_default(),
            event.operation,
            event.server.as_deref().unwrap_or_default(),
            event.tool.as_deref().unwrap_or_default(),
        );
        let now = Instant::now();
        let mut open = self.lock();
        if let Some(window) = open.get_mut(&key)
            && now.duration_since(window.opened) < self.window
        {
            window.folded += 1;
            window.last_at_us = event.at_us;
            return false;
        }
        if open.len() < MAX_WINDOWS || open.contains_key(&key) {
            // A window that ended but was not swept yet keeps its count until the sweep: the
            // new one replaces it only when nothing was folded into it.
            let ended = open.insert(
                key.clone(),
                Window {
                    opened: now,
                    first: event.clone(),
                    folded: 0,
                    last_at_us: event.at_us,
                },
            );
            if let Some(ended) = ended.filter(|w| w.folded > 0) {
                // Put it back under a key of its own, swept with the others.
                open.insert(format!("{key}\u{0}{}", ended.first.id), ended);
            }
        }
        true
    }

    /// The summary rows of windows that have ended (all of them when `all`, at shutdown),
    /// removing those windows.
    pub fn ended(&self, all: bool) -> Vec<AuditEvent> {
        let now = Instant::now();
        let mut rows = Vec::new();
        self.lock().retain(|_, window| {
            if !all && now.duration_since(window.opened) < self.window {
                return true;
            }
            if window.folded > 0 {
                rows.push(summary(window));
            }
            false
        });
        rows
    }
}

/// The row that stands for the refusals folded into `window`.
fn summary(window: &Window) -> AuditEvent {
    let first = &window.first;
    let at = domain::now();
    AuditEvent {
        id: uuid::Uuid::now_v7().to_string(),
        at_us: (at.unix_timestamp_nanos() / 1000) as i64,
        request_id: first.request_id.clone(),
        actor_subject: first.actor_subject.clone(),
        actor_email: first.actor_email.clone(),
        actor_tenant: first.actor_tenant.clone(),
        actor_client_id: first.actor_client_id.clone(),
        operation: first.operation.clone(),
        tool: first.tool.clone(),
        server: first.server.clone(),
        arguments: Some(
            json!({
                "refusals": window.folded,
                "first_at_us": first.at_us,
                "last_at_us": window.last_at_us,
                "first_id": first.id,
            })
            .to_string(),
        ),
        decision: decision::RATE_LIMITED.to_owned(),
        outcome: outcome::ERROR.to_owned(),
        error: Some(format!(
            "{} more requests of this caller refused over the rate limit after the row {} \
             (folded into this row)",
            window.folded, first.id
        )),
        duration_us: 0,
        server_tenant: first.server_tenant.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(subject: &str, at_us: i64) -> AuditEvent {
        AuditEvent {
            id: uuid::Uuid::now_v7().to_string(),
            at_us,
            request_id: format!("r{at_us}"),
            actor_subject: subject.to_owned(),
            actor_email: None,
            actor_tenant: Some("t".to_owned()),
            actor_client_id: None,
            operation: "GET /api/v1/whoami".to_owned(),
            tool: None,
            server: None,
            arguments: None,
            decision: decision::RATE_LIMITED.to_owned(),
            outcome: outcome::ERROR.to_owned(),
            error: Some("rate limited".to_owned()),
            duration_us: 1,
            server_tenant: None,
        }
    }

    fn folded(row: &AuditEvent) -> u64 {
        let arguments: serde_json::Value =
            serde_json::from_str(row.arguments.as_deref().unwrap_or_default()).expect("json");
        arguments["refusals"].as_u64().expect("a count")
    }

    #[test]
    fn the_first_refusal_is_written_and_the_rest_are_counted_per_caller() {
        let refusals = Refusals::new(Duration::from_secs(60));
        assert!(refusals.write(&refusal("a", 1)));
        assert!(refusals.write(&refusal("b", 2)));
        for at in 3..10 {
            assert!(!refusals.write(&refusal("a", at)));
        }
        let mut other_tool = refusal("a", 10);
        other_tool.tool = Some("delete_everything".to_owned());
        assert!(
            refusals.write(&other_tool),
            "another tool is a row of its own"
        );
        let mut allowed = refusal("a", 11);
        allowed.decision = decision::ALLOW.to_owned();
        assert!(refusals.write(&allowed), "only refusals are folded");
        assert!(refusals.ended(false).is_empty(), "the window is open");
        let rows = refusals.ended(true);
        assert_eq!(rows.len(), 1, "b folded nothing: no summary");
        let row = &rows[0];
        assert_eq!(row.actor_subject, "a");
        assert_eq!(row.decision, decision::RATE_LIMITED);
        let arguments: serde_json::Value =
            serde_json::from_str(row.arguments.as_deref().unwrap_or_default()).expect("json");
        assert_eq!(arguments["refusals"], 7);
        assert_eq!(arguments["first_at_us"], 1);
        assert_eq!(arguments["last_at_us"], 9);
        assert!(
            refusals.ended(true).is_empty(),
            "each window summarised once"
        );
    }

    #[test]
    fn an_ended_window_keeps_its_count_when_the_next_one_opens_before_the_sweep() {
        let refusals = Refusals::new(Duration::from_millis(20));
        assert!(refusals.write(&refusal("a", 1)));
        assert!(!refusals.write(&refusal("a", 2)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(refusals.write(&refusal("a", 3)), "a new window");
        assert!(!refusals.write(&refusal("a", 4)));
        std::thread::sleep(Duration::from_millis(30));
        let rows = refusals.ended(false);
        let counts: Vec<_> = rows.iter().map(folded).collect();
        assert_eq!(
            counts,
            vec![1, 1],
            "both windows ended: the sweep writes both counts"
        );
        assert!(refusals.ended(true).is_empty());
    }

    #[test]
    fn a_zero_window_folds_nothing() {
        let refusals = Refusals::new(Duration::ZERO);
        assert!(refusals.write(&refusal("a", 1)));
        assert!(refusals.write(&refusal("a", 2)));
        assert!(refusals.ended(true).is_empty());
    }
}
