//! The audit writer: one task per process that takes completed entries off the queue in batches
//! and writes them to the database. When a write fails or takes too long, the batch goes to the
//! spool, a local append-only file of JSON lines (synced before the batch counts as kept), and
//! so does every later batch until the spool has been replayed into the database, oldest first:
//! rows keep their order, and a replayed row the database already holds is skipped, so each is
//! stored exactly once. When neither the database nor the spool takes a batch, the writer keeps
//! retrying it and stops taking new ones; the queue fills and requests are refused (fail
//! closed). At shutdown the queue is closed and drained.
//!
//! A batch the database refuses as data (a data exception, SQLSTATE class 22: a value it cannot
//! store) is split until the offending entries are alone: the others are stored, and each of
//! those is quarantined: logged, counted, and appended to the quarantine file next to the spool
//! (`<spool>.quarantine`, JSON lines), never retried, so that one bad entry cannot stop the log.

mod spool;
mod status;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::refusals::Refusals;
use super::{AuditEvent, Auditor, Inner, Redaction};
use crate::store::data_error_sqlstate;
use domain::AuditStore;
pub use spool::quarantine_path;
use spool::*;
pub use status::Status;

/// Most events written in one transaction.
const BATCH: usize = 1000;

/// How long the writer gathers entries into one batch after the first arrives.
const LINGER: Duration = Duration::from_millis(20);

/// How long one database write may take before the batch is spooled instead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest pause between attempts to replay the spool while the database is down.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Entries that may wait in memory.
    pub queue: usize,
    /// The spool file (entries the database refuses as data go to the same path plus
    /// `.quarantine`).
    pub spool: PathBuf,
    /// Largest spool, in bytes.
    pub spool_max_bytes: u64,
    /// Extra argument keys to mask.
    pub redact: Vec<String>,
    /// Rate-limit refusals of one caller within this long are one row and a count
    /// (`MREG_AUDIT_REFUSAL_WINDOW`; zero: a row each).
    pub refusal_window: Duration,
}

/// The running writer.
pub struct Writer {
    stop: CancellationToken,
    task: JoinHandle<()>,
    refusals: Arc<Refusals>,
    queue: mpsc::Sender<AuditEvent>,
}

impl Writer {
    /// Closes the queue, writes what it holds (to the database, or the spool) and stops, within
    /// `deadline`.
    pub async fn close(self, deadline: Duration) {
        // The counts of refusals folded into open windows are written too.
        for mut row in self.refusals.ended(true) {
            row.sanitise();
            if tokio::time::timeout(deadline, self.queue.send(row))
                .await
                .is_err()
            {
                tracing::error!("the audit queue stayed full: a count of folded refusals is lost");
            }
        }
        drop(self.queue);
        self.stop.cancel();
        if tokio::time::timeout(deadline, self.task).await.is_err() {
            tracing::error!(
                "the audit writer did not finish within {} s; entries still queued are lost",
                deadline.as_secs()
            );
        }
    }
}

/// Opens the spool (refusing one another process holds) and starts the writer.
pub fn spawn(
    store: Arc<dyn AuditStore>,
    config: &WriterConfig,
) -> anyhow::Result<(Auditor, Writer)> {
    let spool = Spool::open(&config.spool, config.spool_max_bytes)?;
    let status = Arc::new(Status::default());
    status
        .spooled_bytes
        .store(spool.pending_bytes(), Ordering::Relaxed);
    if spool.pending() {
        tracing::warn!(
            spool = %config.spool.display(),
            bytes = spool.pending_bytes(),
            "audit entries from an earlier run are in the spool; replaying them"
        );
        // Until they are replayed, new entries queue behind them, and `/readyz` says so.
        status.spooling.store(true, Ordering::Relaxed);
    }
    let (tx, rx) = mpsc::channel(config.queue.max(1));
    let stop = CancellationToken::new();
    let mut task = Task::new(store, spool, status.clone(), quarantine_path(&config.spool));
    let token = stop.clone();
    #[allow(
        clippy::disallowed_methods,
        reason = "the writer is awaited by AuditWriter::close, which drains it at shutdown"
    )]
    let task = tokio::spawn(async move { task.run(rx, token).await });
    let refusals = Arc::new(Refusals::new(config.refusal_window));
    #[allow(
        clippy::disallowed_methods,
        reason = "the sweep ends with the writer (stop), which AuditWriter::close awaits"
    )]
    tokio::spawn(sweep_refusals(refusals.clone(), tx.clone(), stop.clone()));
    let auditor = Auditor {
        inner: Some(Arc::new(Inner {
            queue: tx.clone(),
            redaction: Redaction::new(&config.redact),
            status,
            refusals: refusals.clone(),
            cutting_off: Default::default(),
        })),
    };
    Ok((
        auditor,
        Writer {
            stop,
            task,
            refusals,
            queue: tx,
        },
    ))
}

/// Queues the summary rows of refusal windows as they end, until `stop`.
async fn sweep_refusals(
    refusals: Arc<Refusals>,
    queue: mpsc::Sender<AuditEvent>,
    stop: CancellationToken,
) {
    let every = refusals.sweep_every();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        for mut row in refusals.ended(false) {
            row.sanitise();
            if queue.send(row).await.is_err() {
                return;
            }
        }
    }
}

/// Moves waiting entries into `batch`, up to a full batch.
fn drain(rx: &mut mpsc::Receiver<AuditEvent>, batch: &mut Vec<AuditEvent>) {
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(event) => batch.push(event),
            Err(_) => break,
        }
    }
}

/// The next entry. Closing, the listeners have stopped, so an entry still reserved belongs to a
/// request stuck past the grace period: wait briefly for it, not for ever.
async fn next_event(rx: &mut mpsc::Receiver<AuditEvent>, closing: bool) -> Option<AuditEvent> {
    if !closing {
        return rx.recv().await;
    }
    match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
        Ok(event) => event,
        Err(_) => {
            tracing::warn!("requests still running at shutdown are not audited");
            None
        }
    }
}

/// How far [`Task::write`] got.
enum Written {
    /// Every event is stored or quarantined.
    All,
    /// The first `done` events are stored or quarantined, the others not: the database failed
    /// (`error`), or did not answer in time (`None`).
    Partly {
        done: usize,
        error: Option<domain::Error>,
    },
}

/// A failed write, in full for the log.
fn describe(error: Option<&domain::Error>) -> String {
    error.map_or_else(
        || {
            format!(
                "the database did not answer within {} s",
                WRITE_TIMEOUT.as_secs()
            )
        },
        ToString::to_string,
    )
}

/// A failed write as `/readyz` may show it: the database's own message (an internal error)
/// goes to the log only.
fn reason(error: Option<&domain::Error>) -> String {
    match error {
        Some(domain::Error::Internal(_)) => {
            "the database refuses the entries (see the log)".to_owned()
        }
        other => describe(other),
    }
}

struct Task {
    store: Arc<dyn AuditStore>,
    spool: Spool,
    status: Arc<Status>,
    /// The quarantine file.
    quarantine: PathBuf,
    /// Pause before the next replay attempt (grows while the database stays down).
    retry: Duration,
    next_replay: Instant,
}

impl Task {
    fn new(
        store: Arc<dyn AuditStore>,
        spool: Spool,
        status: Arc<Status>,
        quarantine: PathBuf,
    ) -> Self {
        Self {
            store,
            spool,
            status,
            quarantine,
            retry: Duration::ZERO,
            next_replay: Instant::now(),
        }
    }

    async fn run(&mut self, mut rx: mpsc::Receiver<AuditEvent>, stop: CancellationToken) {
        let mut closing = false;
        loop {
            let wait = self.next_replay.saturating_duration_since(Instant::now());
            let first = tokio::select! {
                biased;
                () = stop.cancelled(), if !closing => {
                    // No new entries; those already reserved still arrive.
                    rx.close();
                    closing = true;
                    continue;
                }
                event = next_event(&mut rx, closing) => event,
                () = tokio::time::sleep(wait), if self.spool.pending() => {
                    self.replay().await;
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut batch = Vec::with_capacity(64);
            batch.push(first);
            // Gather for a moment: under load, one transaction of many rows costs the database
            // far less than many of a few; nobody waits for the row but the writer.
            // (One timer per batch rather than a wake-up per entry; none when a whole batch is
            // already waiting.)
            drain(&mut rx, &mut batch);
            if !closing && batch.len() < BATCH {
                tokio::time::sleep(LINGER).await;
                drain(&mut rx, &mut batch);
            }
            let awaited = self
                .status
                .awaited()
                .then(|| batch.iter().map(|e| e.id.clone()).collect::<Vec<_>>());
            self.deliver(batch).await;
            if let Some(ids) = awaited {
                self.status.kept(&ids);
            }
        }
        if self.spool.pending() {
            self.next_replay = Instant::now();
            self.replay().await;
        }
        if self.spool.pending() {
            tracing::warn!(
                bytes = self.spool.pending_bytes(),
                "audit entries remain in the spool; they are replayed at the next start"
            );
        }
    }

    /// Keeps `batch` in the database or the spool, retrying until one takes it.
    async fn deliver(&mut self, mut batch: Vec<AuditEvent>) {
        let mut pause = Duration::from_millis(50);
        // A failed attempt may have been stored all the same (its answer lost): every later
        // attempt skips what is already there.
        let mut retry = false;
        loop {
            if self.spool.pending() && Instant::now() >= self.next_replay {
                self.replay().await;
            }
            if !self.spool.pending() {
                let written = self.write(&batch, retry).await;
                retry = true;
                match written {
                    Written::All => {
                        self.status.failing.store(false, Ordering::Relaxed);
                        return;
                    }
                    Written::Partly { done, error } => {
                        tracing::warn!(
                            error = %describe(error.as_ref()),
                            "cannot write audit entries to the database; spooling them"
                        );
                        batch.drain(..done);
                    }
                }
                self.start_spooling();
            }
            match self.spool.append(&batch) {
                Ok(()) => {
                    self.status
                        .spooled
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    self.status
                        .spooled_bytes
                        .store(self.spool.pending_bytes(), Ordering::Relaxed);
                    self.status.failing.store(false, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    if !self.status.failing.swap(true, Ordering::Relaxed) {
                        tracing::error!(
                            // With its cause (no space left on the device, …).
                            error = %format_args!("{e:#}"),
                            "audit entries can be kept neither in the database nor in the spool; new requests are refused once the queue is full"
                        );
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY);
        }
    }

    fn start_spooling(&mut self) {
        if !self.status.spooling.swap(true, Ordering::Relaxed) {
            self.retry = Duration::from_millis(250);
            self.next_replay = Instant::now() + self.retry;
        }
    }

    /// Writes `events` to the database, in order, stopping at the first failure. A write the
    /// database refuses as data (a data exception) is split in halves until each offending event
    /// is alone, which is then quarantined: the others are stored.
    async fn write(&mut self, events: &[AuditEvent], skip_stored: bool) -> Written {
        // Ranges still to write, the next one last.
        let mut todo = Vec::with_capacity(8);
        todo.push(0..events.len());
        while let Some(range) = todo.pop() {
            let part = &events[range.clone()];
            match tokio::time::timeout(WRITE_TIMEOUT, self.store.append(part, skip_stored)).await {
                Ok(Ok(_)) => {
                    self.status
                        .written
                        .fetch_add(part.len() as u64, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    // Refused as data: the write stored nothing (its transaction was rolled
                    // back); narrow it down.
                    if let Some(sqlstate) = data_error_sqlstate(&e) {
                        if let [event] = part {
                            self.quarantine(event, sqlstate, &e);
                        } else {
                            let middle = range.start + part.len() / 2;
                            todo.push(middle..range.end);
                            todo.push(range.start..middle);
                        }
                        continue;
                    }
                    return Written::Partly {
                        done: range.start,
                        error: Some(e),
                    };
                }
                Err(_) => {
                    return Written::Partly {
                        done: range.start,
                        error: None,
                    };
                }
            }
        }
        Written::All
    }

    /// Keeps `event`, which the database refuses as data, out of the chain: counted, logged, and
    /// appended to the quarantine file (or, when that cannot be written, logged whole).
    fn quarantine(&mut self, event: &AuditEvent, sqlstate: &str, error: &domain::Error) {
        self.status.quarantined.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            request_id = %event.request_id,
            id = %event.id,
            sqlstate,
            error = %error,
            quarantine = %self.quarantine.display(),
            "the database refuses an audit entry as data; it is quarantined, not in the chain"
        );
        let line = serde_json::json!({
            "quarantined_at_us": domain::now().unix_timestamp_nanos() / 1000,
            "sqlstate": sqlstate,
            "error": error.to_string(),
            "event": event,
        })
        .to_string();
        let kept = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.quarantine)
            .and_then(|mut file| {
                file.write_all(format!("{line}\n").as_bytes())?;
                file.sync_data()
            });
        if let Err(e) = kept {
            tracing::error!(
                error = %e,
                quarantine = %self.quarantine.display(),
                entry = %line,
                "cannot write the audit quarantine file; the quarantined entry is only in this log"
            );
        }
    }

    /// Writes the spool to the database, oldest first, until it is empty or a write fails.
    async fn replay(&mut self) {
        loop {
            let chunk = match self.spool.read_chunk(BATCH) {
                Ok(chunk) => chunk,
                Err(e) => {
                    tracing::error!(error = %format_args!("{e:#}"), "cannot read the audit spool");
                    self.status
                        .set_replay_failure(Some("cannot read the spool (see the log)".to_owned()));
                    self.back_off();
                    return;
                }
            };
            let Some(Chunk { events, ends, next }) = chunk else {
                // Replayed to the end: start afresh.
                if let Err(e) = self.spool.clear() {
                    tracing::error!(error = %format_args!("{e:#}"), "cannot truncate the audit spool");
                    self.status.set_replay_failure(Some(
                        "cannot truncate the spool (see the log)".to_owned(),
                    ));
                    self.back_off();
                    return;
                }
                self.status.spooled_bytes.store(0, Ordering::Relaxed);
                self.status.set_replay_failure(None);
                if self.status.spooling.swap(false, Ordering::Relaxed) {
                    tracing::info!("the audit spool is replayed; writing to the database again");
                }
                return;
            };
            let written = self.write(&events, true).await;
            let failure = match written {
                Written::All => {
                    self.spool.advance(next);
                    None
                }
                Written::Partly { done, error } => {
                    if let Some(end) = done.checked_sub(1).map(|last| ends[last]) {
                        self.spool.advance(end);
                    }
                    Some(error)
                }
            };
            self.status
                .spooled_bytes
                .store(self.spool.pending_bytes(), Ordering::Relaxed);
            let Some(error) = failure else {
                self.status.set_replay_failure(None);
                self.retry = Duration::from_millis(250);
                continue;
            };
            // Once per distinct failure at `warn` (a long outage would otherwise repeat it every
            // few seconds), then at `debug`.
            let error = error.as_ref();
            if self.status.set_replay_failure(Some(reason(error))) {
                tracing::warn!(
                    error = %describe(error),
                    bytes = self.spool.pending_bytes(),
                    "cannot replay the audit spool into the database; retrying"
                );
            } else {
                tracing::debug!(error = %describe(error), "audit spool replay still fails");
            }
            self.back_off();
            return;
        }
    }

    fn back_off(&mut self) {
        self.next_replay = Instant::now() + self.retry;
        self.retry = (self.retry * 2).clamp(Duration::from_millis(250), MAX_RETRY);
    }
}

/// Deletes rows older than `retention` (one run of the hourly `audit_prune` task).
pub async fn prune(store: Arc<dyn AuditStore>, retention: Duration) -> Result<String, String> {
    let now = domain::now().unix_timestamp_nanos() / 1000;
    let before = now - retention.as_micros() as i128;
    match store.prune(before as i64, now as i64).await {
        Ok(0) => Ok(String::new()),
        Ok(n) => Ok(format!("pruned {n} audit row(s) past retention")),
        Err(e) => Err(format!("cannot prune the audit log: {e}")),
    }
}

#[cfg(test)]
mod tests;
