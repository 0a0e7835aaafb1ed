//! The spool: entries the database could not take wait on disk, in order, and are replayed once
//! it answers; a batch the database refuses as data is quarantined beside it.

use super::*;

/// Where entries the database refuses as data are kept: the spool's path plus `.quarantine`.
pub fn quarantine_path(spool: &Path) -> PathBuf {
    let mut path = spool.as_os_str().to_owned();
    path.push(".quarantine");
    path.into()
}

/// Events read from the spool for replay.
pub(super) struct Chunk {
    pub(super) events: Vec<AuditEvent>,
    /// The spool position after each event.
    pub(super) ends: Vec<u64>,
    /// The position after the chunk (past any unreadable line after the last event).
    pub(super) next: u64,
}

/// The spool file: JSON lines, appended and synced; `read` is where replay has got to.
pub(super) struct Spool {
    pub(super) path: PathBuf,
    pub(super) file: File,
    pub(super) len: u64,
    pub(super) read: u64,
    pub(super) max: u64,
}

impl Spool {
    pub(super) fn open(path: &Path, max: u64) -> anyhow::Result<Self> {
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
        // A device (`/dev/full`, `/dev/zero`) or a pipe is not a spool: reading one never ends.
        let metadata = file
            .metadata()
            .with_context(|| format!("cannot read the audit spool {}", path.display()))?;
        anyhow::ensure!(
            metadata.is_file(),
            "the audit spool {} is not a regular file (MREG_AUDIT_SPOOL names a file mreg creates)",
            path.display()
        );
        file.try_lock().map_err(|_| {
            anyhow::anyhow!(
                "the audit spool {} is in use by another mreg process; give each instance its own MREG_AUDIT_SPOOL (or MREG_DATA_DIR)",
                path.display()
            )
        })?;
        // A line cut short by a crash is dropped; everything before it is whole.
        // Never more than the spool may hold (plus a line): a larger file is not one mreg wrote.
        anyhow::ensure!(
            metadata.len() <= max.saturating_add(1024 * 1024),
            "the audit spool {} holds {} bytes, more than MREG_AUDIT_SPOOL_MAX_MB allows ({max}); it is not one this configuration wrote: move it aside, or raise the limit to replay it",
            path.display(),
            metadata.len()
        );
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut text)
            .with_context(|| format!("cannot read the audit spool {}", path.display()))?;
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

    pub(super) fn pending(&self) -> bool {
        self.read < self.len
    }

    pub(super) fn pending_bytes(&self) -> u64 {
        self.len - self.read
    }

    pub(super) fn append(&mut self, events: &[AuditEvent]) -> anyhow::Result<()> {
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

    /// Up to `max` events from the replay position (sanitised: a spool written before NULs were
    /// replaced may hold some), and the positions after them; `None` at the end.
    pub(super) fn read_chunk(&mut self, max: usize) -> anyhow::Result<Option<Chunk>> {
        if !self.pending() {
            return Ok(None);
        }
        let mut reader = BufReader::new(File::open(&self.path)?);
        reader.seek(SeekFrom::Start(self.read))?;
        let mut events = Vec::new();
        let mut ends = Vec::new();
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
                Ok(mut event) => {
                    event.sanitise();
                    events.push(event);
                    ends.push(at);
                }
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
        Ok(Some(Chunk {
            events,
            ends,
            next: at,
        }))
    }

    pub(super) fn advance(&mut self, to: u64) {
        self.read = to;
    }

    pub(super) fn clear(&mut self) -> anyhow::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.len = 0;
        self.read = 0;
        Ok(())
    }
}
