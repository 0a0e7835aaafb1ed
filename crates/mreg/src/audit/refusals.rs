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

/// Most targets (operation, server, tool) of one caller kept apart in a window; the refusals of
/// any more share one window of that caller. The names come from the caller: a new one per
/// request otherwise made every refusal a row of its own (500 a second).
const MAX_TARGETS_PER_CALLER: usize = 16;

/// The open windows of an instance.
#[derive(Debug)]
pub struct Refusals {
    window: Duration,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    windows: HashMap<String, Window>,
    /// Windows kept apart per caller (see [`MAX_TARGETS_PER_CALLER`]).
    targets: HashMap<String, usize>,
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    /// The row written for the first refusal (what the summary repeats: actor, operation).
    first: AuditEvent,
    /// Refusals counted, not written.
    folded: u64,
    last_at_us: i64,
    /// Whose window it is.
    caller: String,
    /// The window of a caller's refusals beyond its kept-apart targets.
    many: bool,
}

impl Refusals {
    /// Windows of `window`; [`Duration::ZERO`] folds nothing (one row per refusal).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            open: Mutex::new(Open::default()),
        }
    }

    /// How often [`Refusals::ended`] should be asked for rows.
    pub fn sweep_every(&self) -> Duration {
        (self.window / 4).max(Duration::from_millis(100))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
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
        // of their own, so the log still shows everything a caller went after (up to
        // MAX_TARGETS_PER_CALLER of them).
        let caller = format!(
            "{}\u{0}{}\u{0}{}",
            event.actor_tenant.as_deref().unwrap_or_default(),
            event.actor_subject,
            event.actor_client_id.as_deref().unwrap_or_default(),
        );
        let target = format!(
            "{caller}\u{0}{}\u{0}{}\u{0}{}",
            event.operation,
            event.server.as_deref().unwrap_or_default(),
            event.tool.as_deref().unwrap_or_default(),
        );
        let now = Instant::now();
        let mut open = self.lock();
        let Open { windows, targets } = &mut *open;
        let is_open = |w: &Window| now.duration_since(w.opened) < self.window;
        if let Some(window) = windows.get_mut(&target).filter(|w| is_open(w)) {
            window.folded += 1;
            window.last_at_us = event.at_us;
            return false;
        }
        let many = !windows.contains_key(&target)
            && targets.get(&caller).copied().unwrap_or(0) >= MAX_TARGETS_PER_CALLER;
        let key = if many {
            let key = format!("{caller}\u{0}*");
            if let Some(window) = windows.get_mut(&key).filter(|w| is_open(w)) {
                window.folded += 1;
                window.last_at_us = event.at_us;
                return false;
            }
            key
        } else {
            target
        };
        if windows.len() < MAX_WINDOWS || windows.contains_key(&key) {
            // A window that ended but was not swept yet keeps its count until the sweep: the
            // new one replaces it only when nothing was folded into it.
            let ended = windows.insert(
                key.clone(),
                Window {
                    opened: now,
                    first: event.clone(),
                    folded: 0,
                    last_at_us: event.at_us,
                    caller: caller.clone(),
                    many,
                },
            );
            match ended {
                Some(ended) if ended.folded > 0 => {
                    // Put it back under a key of its own, swept with the others.
                    if !ended.many {
                        *targets.entry(caller).or_insert(0) += 1;
                    }
                    windows.insert(format!("{key}\u{0}{}", ended.first.id), ended);
                }
                Some(_) => {}
                None if !many => *targets.entry(caller).or_insert(0) += 1,
                None => {}
            }
        }
        true
    }

    /// The summary rows of windows that have ended (all of them when `all`, at shutdown),
    /// removing those windows.
    pub fn ended(&self, all: bool) -> Vec<AuditEvent> {
        let now = Instant::now();
        let mut rows = Vec::new();
        let mut open = self.lock();
        let Open { windows, targets } = &mut *open;
        windows.retain(|_, window| {
            if !all && now.duration_since(window.opened) < self.window {
                return true;
            }
            if window.folded > 0 {
                rows.push(summary(window));
            }
            if !window.many
                && let Some(count) = targets.get_mut(&window.caller)
            {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    targets.remove(&window.caller);
                }
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
        error: Some(if window.many {
            format!(
                "{} more requests of this caller refused over the rate limit after the row {}, \
                 for more operations, servers or tools than are kept apart ({MAX_TARGETS_PER_CALLER}) \
                 (folded into this row)",
                window.folded, first.id
            )
        } else {
            format!(
                "{} more requests of this caller refused over the rate limit after the row {} \
                 (folded into this row)",
                window.folded, first.id
            )
        }),
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
    fn a_caller_naming_a_new_target_each_time_gets_no_row_each() {
        let refusals = Refusals::new(Duration::from_secs(60));
        let mut written = 0;
        for at in 0..1000 {
            let mut event = refusal("a", at);
            event.server = Some(format!("made-up-{at}"));
            if refusals.write(&event) {
                written += 1;
            }
        }
        assert_eq!(
            written,
            MAX_TARGETS_PER_CALLER + 1,
            "the kept-apart targets, then one row for the rest"
        );
        assert!(refusals.write(&refusal("b", 1)), "another caller is apart");
        let rows = refusals.ended(true);
        let counted: u64 = rows.iter().map(folded).sum();
        assert_eq!(
            written as u64 + counted,
            1000,
            "every refusal is a row or a count"
        );
        assert!(
            rows.iter()
                .any(|r| r.error.as_deref().is_some_and(|e| e.contains("kept apart"))),
            "{rows:?}"
        );
        // The windows are gone, and with them the caller's count of targets.
        assert!(refusals.lock().targets.is_empty());
        let mut event = refusal("a", 2000);
        event.server = Some("fresh".to_owned());
        assert!(refusals.write(&event));
    }

    #[test]
    fn a_zero_window_folds_nothing() {
        let refusals = Refusals::new(Duration::ZERO);
        assert!(refusals.write(&refusal("a", 1)));
        assert!(refusals.write(&refusal("a", 2)));
        assert!(refusals.ended(true).is_empty());
    }
}
