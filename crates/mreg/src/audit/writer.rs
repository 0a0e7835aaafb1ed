//! The audit writer: one task per process that takes completed entries off the queue in batches
//! and writes them to the database. When a write fails or takes too long, the batch goes to the
//! spool, a local append-only file of JSON lines (synced before the batch counts as kept), and
//! so does every later batch until the spool has been replayed into the database, oldest first:
//! rows keep their order, and a replayed row the database already holds is skipped, so each is
//! stored exactly once. When neither the database nor the spool takes a batch, the writer keeps
//! retrying it and stops taking new ones; the queue fills and requests are refused (fail
//! closed). At shutdown the queue is closed and drained.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{AuditEvent, Auditor, Inner, Redaction};
use crate::store::audit::AuditStore;

/// Most events written in one transaction.
const BATCH: usize = 1000;
/// How long the writer gathers entries into one batch after the first arrives.
const LINGER: Duration = Duration::from_millis(20);
/// How long one database write may take before the batch is spooled instead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest pause between attempts to replay the spool while the database is down.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// How the writer is doing, for `/readyz` and `/metrics`.
#[derive(Debug, Default)]
pub struct Status {
    spooled_bytes: AtomicU64,
    spooling: AtomicBool,
    written: AtomicU64,
    spooled: AtomicU64,
    refused: AtomicU64,
    failing: AtomicBool,
}

impl Status {
    /// Bytes waiting in the spool.
    pub fn spooled_bytes(&self) -> u64 {
        self.spooled_bytes.load(Ordering::Relaxed)
    }

    /// Whether events currently go to the spool (the database is unreachable or catching up).
    pub fn spooling(&self) -> bool {
        self.spooling.load(Ordering::Relaxed)
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

    pub(super) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Entries that may wait in memory.
    pub queue: usize,
    /// The spool file.
    pub spool: PathBuf,
    /// Largest spool, in bytes.
    pub spool_max_bytes: u64,
    /// Extra argument keys to mask.
    pub redact: Vec<String>,
}

/// The running writer.
pub struct Writer {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Writer {
    /// Closes the queue, writes what it holds (to the database, or the spool) and stops, within
    /// `deadline`.
    pub async fn close(self, deadline: Duration) {
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
    }
    let (tx, rx) = mpsc::channel(config.queue.max(1));
    let stop = CancellationToken::new();
    let mut task = Task {
        store,
        spool,
        status: status.clone(),
        retry: Duration::ZERO,
        next_replay: Instant::now(),
    };
    let token = stop.clone();
    let task = tokio::spawn(async move { task.run(rx, token).await });
    let auditor = Auditor {
        inner: Some(Arc::new(Inner {
            queue: tx,
            redaction: Redaction::new(&config.redact),
            status,
        })),
    };
    Ok((auditor, Writer { stop, task }))
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

struct Task {
    store: Arc<dyn AuditStore>,
    spool: Spool,
    status: Arc<Status>,
    /// Pause before the next replay attempt (grows while the database stays down).
    retry: Duration,
    next_replay: Instant,
}

impl Task {
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
            self.deliver(batch).await;
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
    async fn deliver(&mut self, batch: Vec<AuditEvent>) {
        let mut pause = Duration::from_millis(50);
        // A failed attempt may have been stored all the same (its answer lost): every later
        // attempt skips what is already there.
        let mut retry = false;
        loop {
            if self.spool.pending() && Instant::now() >= self.next_replay {
                self.replay().await;
            }
            if !self.spool.pending() {
                let attempt = self.store.append(&batch, retry);
                retry = true;
                match tokio::time::timeout(WRITE_TIMEOUT, attempt).await {
                    Ok(Ok(_)) => {
                        self.status
                            .written
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        self.status.failing.store(false, Ordering::Relaxed);
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot write audit entries to the database; spooling them")
                    }
                    Err(_) => tracing::warn!(
                        "writing audit entries to the database takes too long; spooling them"
                    ),
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
                            error = %e,
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

    /// Writes the spool to the database, oldest first, until it is empty or a write fails.
    async fn replay(&mut self) {
        loop {
            let chunk = match self.spool.read_chunk(BATCH) {
                Ok(chunk) => chunk,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the audit spool");
                    self.back_off();
                    return;
                }
            };
            let Some((events, next)) = chunk else {
                // Replayed to the end: start afresh.
                if let Err(e) = self.spool.clear() {
                    tracing::error!(error = %e, "cannot truncate the audit spool");
                    self.back_off();
                    return;
                }
                self.status.spooled_bytes.store(0, Ordering::Relaxed);
                if self.status.spooling.swap(false, Ordering::Relaxed) {
                    tracing::info!("the audit spool is replayed; writing to the database again");
                }
                return;
            };
            match tokio::time::timeout(WRITE_TIMEOUT, self.store.append(&events, true)).await {
                Ok(Ok(_)) => {
                    self.status
                        .written
                        .fetch_add(events.len() as u64, Ordering::Relaxed);
                    self.spool.advance(next);
                    self.status
                        .spooled_bytes
                        .store(self.spool.pending_bytes(), Ordering::Relaxed);
                    self.retry = Duration::from_millis(250);
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "audit spool replay: the database is still unavailable");
                    self.back_off();
                    return;
                }
                Err(_) => {
                    self.back_off();
                    return;
                }
            }
        }
    }

    fn back_off(&mut self) {
        self.next_replay = Instant::now() + self.retry;
        self.retry = (self.retry * 2).clamp(Duration::from_millis(250), MAX_RETRY);
    }
}

/// The spool file: JSON lines, appended and synced; `read` is where replay has got to.
struct Spool {
    path: PathBuf,
    file: File,
    len: u64,
    read: u64,
    max: u64,
}

impl Spool {
    fn open(path: &Path, max: u64) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the directory of {}", path.display()))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("cannot open the audit spool {}", path.display()))?;
        file.try_lock().map_err(|_| {
            anyhow::anyhow!(
                "the audit spool {} is in use by another mreg process; give each instance its own MREG_AUDIT_SPOOL (or MREG_DATA_DIR)",
                path.display()
            )
        })?;
        // A line cut short by a crash is dropped; everything before it is whole.
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut text)?;
        let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if whole < text.len() {
            tracing::warn!(
                spool = %path.display(),
                bytes = text.len() - whole,
                "the audit spool ends in an incomplete entry (written during a crash); dropping it"
            );
            file.set_len(whole as u64)?;
        }
        file.seek(SeekFrom::End(0))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            len: whole as u64,
            read: 0,
            max,
        })
    }

    fn pending(&self) -> bool {
        self.read < self.len
    }

    fn pending_bytes(&self) -> u64 {
        self.len - self.read
    }

    fn append(&mut self, events: &[AuditEvent]) -> anyhow::Result<()> {
        let mut buf = Vec::with_capacity(events.len() * 512);
        for event in events {
            serde_json::to_writer(&mut buf, event)?;
            buf.push(b'\n');
        }
        if self.len + buf.len() as u64 > self.max {
            anyhow::bail!(
                "the audit spool {} is full ({} of {} bytes; MREG_AUDIT_SPOOL_MAX_MB)",
                self.path.display(),
                self.len,
                self.max
            );
        }
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Cut back whatever part was written, so that the batch is either whole or absent.
            let _ = self.file.set_len(self.len);
            return Err(e).with_context(|| format!("cannot write to {}", self.path.display()));
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Up to `max` events from the replay position, and the position after them; `None` at the
    /// end.
    fn read_chunk(&mut self, max: usize) -> anyhow::Result<Option<(Vec<AuditEvent>, u64)>> {
        if !self.pending() {
            return Ok(None);
        }
        let mut reader = BufReader::new(File::open(&self.path)?);
        reader.seek(SeekFrom::Start(self.read))?;
        let mut events = Vec::new();
        let mut at = self.read;
        let mut line = String::new();
        while events.len() < max && at < self.len {
            line.clear();
            let n = reader.read_line(&mut line)?;
            if n == 0 {
                break;
            }
            at += n as u64;
            match serde_json::from_str::<AuditEvent>(line.trim_end()) {
                Ok(event) => events.push(event),
                Err(e) => tracing::error!(
                    error = %e,
                    offset = at - n as u64,
                    "an audit spool line is not an entry; skipping it"
                ),
            }
        }
        if events.is_empty() && at >= self.len {
            self.read = at;
            return Ok(None);
        }
        Ok(Some((events, at)))
    }

    fn advance(&mut self, to: u64) {
        self.read = to;
    }

    fn clear(&mut self) -> anyhow::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.len = 0;
        self.read = 0;
        Ok(())
    }
}

/// Deletes rows older than `retention` every hour, until `stop`.
pub async fn prune(store: Arc<dyn AuditStore>, retention: Duration, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
        let before = now - retention.as_micros() as i128;
        match store.prune(before as i64, now as i64).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned audit rows past retention"),
            Err(e) => tracing::warn!(error = %e, "cannot prune the audit log"),
        }
    }
}
