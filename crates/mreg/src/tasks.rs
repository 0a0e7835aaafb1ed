//! Background work behind one driver. Every task the gateway runs besides serving requests is
//! started here: periodic ones (pruning), long-running loops (the health monitor), and short
//! tasks on the side that a request starts on demand (a probe of a server that may have come
//! back, a revocation marker kept trying while the cache is down). Each runs in a span named
//! after it; each is tracked, so shutdown waits for what is still running; a panic is caught
//! and recorded instead of vanishing with a dropped `JoinHandle`; and the last run of each
//! named task is kept for `/readyz`.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// What `/readyz` says of a run that failed or panicked; the log has the cause.
pub const FAILED: &str = "the last run failed; the log says why";

/// The driver. Cloning shares it.
#[derive(Clone)]
pub struct Tasks(Arc<Inner>);

struct Inner {
    tracker: TaskTracker,
    stop: CancellationToken,
    /// Cancelled when shutdown's grace period ends (see [`Tasks::cut_off`]).
    cut_off: CancellationToken,
    board: Mutex<BTreeMap<&'static str, Status>>,
}

/// What a task's last run found, as `/readyz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Runs completed since the start.
    pub runs: u64,
    /// When the last run ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_run: Option<OffsetDateTime>,
    /// Whether it succeeded.
    pub ok: bool,
    /// What it did, or that it failed (why is in the log: `/readyz` answers anyone).
    pub detail: String,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new(CancellationToken::new())
    }
}

impl Tasks {
    /// A driver with nothing running yet, whose tasks stop when `stop` is cancelled (or at
    /// [`Tasks::close`]).
    pub fn new(stop: CancellationToken) -> Self {
        Self(Arc::new(Inner {
            tracker: TaskTracker::new(),
            stop,
            cut_off: CancellationToken::new(),
            board: Mutex::new(BTreeMap::new()),
        }))
    }

    /// Cancelled when the driver stops: long-running tasks end on it.
    pub fn stopping(&self) -> CancellationToken {
        self.0.stop.clone()
    }

    /// Cancelled when shutdown's grace period ends with requests still running: what still
    /// answers one (a tool call in an MCP session, a proxied stream) ends it now with a last
    /// word saying why, before the connections are closed.
    pub fn cut_off(&self) -> CancellationToken {
        self.0.cut_off.clone()
    }

    /// Runs `run` at once and then every `every`, until the driver stops. Each run's result (what it did, or why it failed) is its status.
    pub fn periodic<F, Fut>(&self, name: &'static str, every: Duration, mut run: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        let (tasks, stop) = (self.clone(), self.stopping());
        self.start(name, async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let outcome = AssertUnwindSafe(run())
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| Err(panicked(panic.as_ref())));
                match &outcome {
                    Ok(detail) if !detail.is_empty() => tracing::info!("{detail}"),
                    Ok(_) => {}
                    Err(why) => tracing::warn!(error = %why, "background task failed"),
                }
                // `/readyz` answers anyone: it says that the run failed, the log says why.
                tasks.record(name, outcome.map_err(|_| FAILED));
            }
        });
    }

    /// Runs a long-running task (a loop of its own, ending when [`Tasks::stopping`] is
    /// cancelled). A panic is recorded as its status.
    pub fn service(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let tasks = self.clone();
        self.start(name, async move {
            if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
                let why = panicked(panic.as_ref());
                tracing::error!(error = %why, "background task panicked");
                tasks.record(name, Err(FAILED));
            }
        });
    }

    /// Runs a short task on the side, started on demand by a request or another task. It is
    /// not listed in `/readyz`; a panic is logged.
    pub fn spawn(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.start(name, async move {
            if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
                tracing::error!(error = %panicked(panic.as_ref()), "background task panicked");
            }
        });
    }

    /// Records a run of the task `name` that reports its own status (a [`Tasks::service`]). A
    /// failure is shown to anyone who asks `/readyz`, so it is a fixed text saying what failed;
    /// the error itself goes to the log.
    pub fn record(&self, name: &'static str, outcome: Result<String, &'static str>) {
        let mut board = self
            .0
            .board
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let status = board.entry(name).or_insert(Status {
            runs: 0,
            last_run: None,
            ok: true,
            detail: String::new(),
        });
        status.runs += 1;
        status.last_run = Some(domain::now());
        (status.ok, status.detail) = match outcome {
            Ok(detail) => (true, detail),
            Err(what) => (false, what.to_owned()),
        };
    }

    /// The last run of every task that has completed one, by name.
    pub fn statuses(&self) -> BTreeMap<&'static str, Status> {
        self.0
            .board
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Stops the driver: cancels [`Tasks::stopping`] and waits up to `grace` for every task
    /// (on-demand ones included) to end. Returns whether all did.
    pub async fn close(&self, grace: Duration) -> bool {
        self.0.stop.cancel();
        self.0.tracker.close();
        let ended = tokio::time::timeout(grace, self.0.tracker.wait())
            .await
            .is_ok();
        if !ended {
            tracing::warn!(
                still_running = self.0.tracker.len(),
                "background tasks did not end within the grace period"
            );
        }
        ended
    }

    fn start(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let span = tracing::info_span!("task", name);
        #[allow(clippy::disallowed_methods, reason = "the one place tasks are spawned")]
        self.0.tracker.spawn(task.instrument(span));
    }
}

/// The message of a caught panic.
fn panicked(panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    format!("panicked: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_periodic_task_runs_at_once_then_each_interval_and_keeps_its_last_status() {
        let tasks = Tasks::default();
        let count = Arc::new(AtomicU32::new(0));
        let seen = count.clone();
        tasks.periodic("count", Duration::from_secs(60), move || {
            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n == 2 {
                    Err(format!("run {n} failed"))
                } else {
                    Ok(format!("run {n}"))
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let status = tasks.statuses()["count"].clone();
        assert_eq!(
            (status.runs, status.ok, status.detail.as_str()),
            (1, true, "run 1")
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        let status = tasks.statuses()["count"].clone();
        assert_eq!((status.runs, status.ok), (2, false));
        assert_eq!(status.detail, FAILED, "the cause stays in the log");
        assert!(
            tasks.close(Duration::from_secs(1)).await,
            "the loop ends on close"
        );
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_is_recorded_and_close_waits_for_on_demand_tasks() {
        let tasks = Tasks::default();
        tasks.periodic("boom", Duration::from_secs(1), || async { panic!("kaput") });
        let done = Arc::new(AtomicU32::new(0));
        let flag = done.clone();
        tasks.spawn("slow", async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            flag.store(1, Ordering::SeqCst);
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let status = tasks.statuses()["boom"].clone();
        assert!(!status.ok);
        assert_eq!(
            status.detail, FAILED,
            "the panic's message stays in the log"
        );
        assert!(tasks.close(Duration::from_secs(10)).await);
        assert_eq!(
            done.load(Ordering::SeqCst),
            1,
            "close waited for the on-demand task"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn close_gives_up_after_the_grace_period() {
        let tasks = Tasks::default();
        tasks.spawn("stuck", std::future::pending());
        assert!(!tasks.close(Duration::from_secs(1)).await);
    }
}
