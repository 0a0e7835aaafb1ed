//! What the writer reports about itself (`/readyz`, metrics): queue, spool, refusals, replay.

use super::*;

/// How the writer is doing, for `/readyz` and `/metrics`.
#[derive(Debug, Default)]
pub struct Status {
    pub(crate) spooled_bytes: AtomicU64,
    pub(crate) spooling: AtomicBool,
    pub(crate) written: AtomicU64,
    pub(crate) spooled: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) quarantined: AtomicU64,
    pub(crate) failing: AtomicBool,
    pub(crate) saturated: AtomicBool,
    /// Why the last attempt to replay the spool failed; `None` once one succeeds.
    pub(crate) replay_failure: Mutex<Option<String>>,
    /// Requests waiting until their row is kept, by event id (see [`Status::kept_when`]).
    pub(crate) waiters: Mutex<HashMap<String, oneshot::Sender<()>>>,
    pub(crate) waiting: AtomicU64,
}

impl Status {
    /// Resolves once the event `id` is kept: written to the database, or to the spool (synced).
    pub(crate) fn kept_when(&self, id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), tx);
        self.waiting.fetch_add(1, Ordering::Relaxed);
        rx
    }

    /// Whether anyone waits for a row to be kept (so a batch's ids are worth collecting).
    pub(crate) fn awaited(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Tells whoever waits for the events `ids` that they are kept.
    pub(crate) fn kept(&self, ids: &[String]) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            if let Some(waiter) = waiters.remove(id) {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                let _ = waiter.send(());
            }
        }
    }

    /// Bytes waiting in the spool.
    pub fn spooled_bytes(&self) -> u64 {
        self.spooled_bytes.load(Ordering::Relaxed)
    }

    /// Whether events currently go to the spool (the database is unreachable or catching up).
    pub fn spooling(&self) -> bool {
        self.spooling.load(Ordering::Relaxed)
    }

    /// Whether the last request that found the queue full waited for a place in vain (more
    /// requests audited at once than the queue holds); cleared when one finds a place at once.
    pub fn saturated_now(&self) -> bool {
        self.saturated.load(Ordering::Relaxed)
    }

    pub(crate) fn saturated(&self, now: bool) {
        if self.saturated.load(Ordering::Relaxed) != now {
            self.saturated.store(now, Ordering::Relaxed);
        }
    }

    /// Whether a batch can currently be kept nowhere (requests will be refused when the queue
    /// fills).
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Events written to the database, events written to the spool, and requests refused
    /// because the queue was full.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.written.load(Ordering::Relaxed),
            self.spooled.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }

    /// Events the database refused as data, kept in the quarantine file instead.
    pub fn quarantined(&self) -> u64 {
        self.quarantined.load(Ordering::Relaxed)
    }

    /// Why replaying the spool failed the last time it was tried, while entries still wait in
    /// it; `None` when the last attempt succeeded (or there is nothing to replay).
    pub fn replay_failure(&self) -> Option<String> {
        self.replay_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records the outcome of a replay attempt; says whether the failure is new (not the same as
    /// the last one).
    pub(crate) fn set_replay_failure(&self, failure: Option<String>) -> bool {
        let mut last = self
            .replay_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let new = failure.is_some() && *last != failure;
        *last = failure;
        new
    }

    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
}

/// The writer's figures as metrics, read at each scrape: rows written, spooled, quarantined,
/// requests refused for a full queue, and the bytes waiting in the spool.
impl prometheus_client::collector::Collector for Status {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let (written, spooled, refused) = self.counts();
        let counters = [
            (
                "audit_rows_written",
                "Audit rows written to the database.",
                written,
            ),
            (
                "audit_rows_spooled",
                "Audit rows written to the spool while the database was unreachable.",
                spooled,
            ),
            (
                "audit_refused",
                "Requests refused because the audit queue was full.",
                refused,
            ),
            (
                "audit_rows_quarantined",
                "Audit rows the database refused as data, kept in the quarantine file instead.",
                self.quarantined(),
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let spool = ConstGauge::new(i64::try_from(self.spooled_bytes()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "audit_spool_bytes",
            "Bytes in the audit spool waiting for the database.",
            None,
            spool.metric_type(),
        )?;
        spool.encode(metric)
    }
}
