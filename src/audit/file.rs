//! The append-only JSON Lines audit file: hash-chained, size-rotated, group-committed.
//!
//! One writer thread owns the file. Callers hand it [`EncodedEvent`]s through a bounded queue; it
//! takes everything pending (up to `max_batch`), assigns each event the next `sequence` and the
//! previous record's hash (so the file order *is* the chain order), writes the batch, calls
//! `fsync` (`File::sync_data`) once, and only then completes every waiter of the batch. That is
//! the `blocking` mode's promise: [`FileSink::append_durable`] resolves after the fsync covering its
//! event, so a request can be refused when its audit record is not durable ("no durable audit, no
//! action"), while concurrent requests share one fsync.
//!
//! Rotation: before a record would push the file past `max_bytes`, the current file is renamed to
//! `<name>.<first sequence, 20 digits>` and a new one started; the chain simply continues. On
//! start the sink reads the tail of the current file (or of the newest rotated one) to continue the
//! chain. A torn final line (crash mid-write) is kept as evidence: that file is rotated aside
//! unchanged and the chain continues from its last complete record (`verify` reports it as torn).
//!
//! One writer per file: the sink holds an advisory lock (`flock`) on the current file for as long
//! as it runs (and takes it on each new file after a rotation), so a second keygate — or
//! `keygate reconcile` while `serve` runs — cannot interleave records and break the chain; it
//! fails to open with [`AuditError::InUse`]. Dropping the sink waits for its writer to finish
//! what was queued and release the lock.
//!
//! Failure is final: after a failed write, fsync or rotation the sink reports unhealthy and
//! refuses every later event until keygate restarts. Retrying is unsafe — after a failed fsync
//! the kernel may have dropped the dirty pages and a second fsync can succeed without them — and a
//! restart recovers the tail correctly. What this deliberately does not do: create the directory,
//! delete old files (retention is the operator's), or rotate by time.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::chain::{
    parse_link, push_chained_line, read_first_line, read_tail, rotated_files, rotated_name,
    ChainHead, CHAIN_OVERHEAD,
};
use super::sink::EncodedEvent;
use super::AuditError;

/// Rotate at 100 MiB: large enough that rotation is rare, small enough to copy and verify quickly.
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;

/// Queue length: a few seconds of a busy gateway's governed traffic; beyond it async events are
/// dropped (counted) and durable appends wait.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// Events per write + fsync at most, so one batch never holds waiters for long.
pub const DEFAULT_MAX_BATCH: usize = 1024;

/// Name of the writer thread.
const WRITER_THREAD: &str = "keygate-audit-file";

/// Makes the calling thread (the writer) a `SCHED_BATCH` thread on Linux: its wake-ups — an
/// event queued on an empty queue, an fsync finishing — no longer preempt the request worker.
///
/// That is what lets commits group by themselves. With the default policy every wake-up switched
/// to the writer at once, so under load it committed a handful of records at a time and the two
/// threads spent a fifth of a shared core switching (measured: `finish_task_switch` 21 % of
/// keygate's CPU at 256 connections, 4.9 records per fsync). As a batch thread the writer runs
/// when the worker blocks or its time slice ends, and finds everything queued meanwhile in its
/// batch; when keygate is idle it runs at once, so a lone request waits no longer than before.
/// It keeps its fair share of CPU, so it cannot starve. Elsewhere (and if the call fails) the
/// writer keeps the default policy: only grouping, never correctness, depends on it.
fn batch_scheduling() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
            ThreadPriority, ThreadSchedulePolicy,
        };
        let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
        if let Err(err) =
            set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, policy)
        {
            tracing::debug!(error = ?err, "Audit writer keeps the default scheduling policy");
        }
    }
}

/// Settings of a [`FileSink`].
#[derive(Debug, Clone)]
pub struct FileSinkConfig {
    /// The current file, e.g. `/var/log/keygate/audit.jsonl`; its directory must exist.
    pub path: PathBuf,
    /// Rotate before the current file would exceed this many bytes.
    pub max_bytes: u64,
    /// Bounded queue between callers and the writer.
    pub queue_capacity: usize,
    /// Events per fsync at most.
    pub max_batch: usize,
}

impl FileSinkConfig {
    /// Defaults for everything but the path.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSinkConfig {
            path: path.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// A queued event's durability, awaited later: what [`FileSink::append`] returns, so a caller can
/// queue its record, do other work (forward a create), and only then wait for the fsync.
#[derive(Debug)]
pub struct Receipt {
    wait: oneshot::Receiver<Result<Committed, AuditError>>,
}

impl Receipt {
    /// Resolves once the event is fsynced (with its sequence), or with why it is not durable.
    pub async fn durable(self) -> Result<Committed, AuditError> {
        self.wait
            .await
            .map_err(|_| AuditError::Closed { sink: "file" })?
    }
}

/// An event is on disk (fsync done) as record `sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The record's sequence number in the chain.
    pub sequence: u64,
}

/// Counters of a [`FileSink`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStats {
    /// `fsync` calls (one per batch).
    pub fsyncs: u64,
    /// Records written and fsynced.
    pub events_written: u64,
    /// Async events dropped because the queue was full.
    pub dropped: u64,
    /// Events lost to a write failure (or offered after one).
    pub failed: u64,
    /// File rotations.
    pub rotations: u64,
    /// Torn final lines found (and kept) at start.
    pub torn_recovered: u64,
}

impl FileStats {
    /// Average records per fsync: the group-commit factor.
    pub fn events_per_fsync(&self) -> f64 {
        if self.fsyncs == 0 {
            0.0
        } else {
            self.events_written as f64 / self.fsyncs as f64
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    fsyncs: AtomicU64,
    events_written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    rotations: AtomicU64,
    torn_recovered: AtomicU64,
    unhealthy: AtomicBool,
}

type Waiter = oneshot::Sender<Result<Committed, AuditError>>;

#[derive(Debug)]
enum Message {
    Event {
        event: EncodedEvent,
        done: Option<Waiter>,
    },
    Flush(oneshot::Sender<Result<(), AuditError>>),
}

// === impl FileSink ===

/// The audit file sink. Cloning is not needed: share it behind the [`crate::audit::Auditor`].
#[derive(Debug)]
pub struct FileSink {
    tx: mpsc::Sender<Message>,
    counters: Arc<Counters>,
    path: PathBuf,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FileSink {
    /// Closes the queue and waits for the writer to write what was queued and release the file
    /// (and its lock), so the same file can be opened again right after.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, closed));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl FileSink {
    /// Opens (or creates) the current file, recovers the chain from its tail, and starts the
    /// writer thread. Blocking I/O: call it at startup.
    pub fn open(config: FileSinkConfig) -> Result<Self, AuditError> {
        Self::open_with_gate(config, None)
    }

    fn open_with_gate(
        config: FileSinkConfig,
        gate: Option<std::sync::mpsc::Receiver<()>>,
    ) -> Result<Self, AuditError> {
        let counters = Arc::new(Counters::default());
        let mut writer = Writer::recover(&config, Arc::clone(&counters))?;
        writer.completer = Completer::spawn();
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let path = config.path.clone();
        let writer = std::thread::Builder::new()
            .name(WRITER_THREAD.to_owned())
            .spawn(move || writer.run(rx, gate))
            .map_err(|e| io_error(&path, "start writer thread", e))?;
        Ok(FileSink {
            tx,
            counters,
            path: config.path,
            writer: Some(writer),
        })
    }

    /// Appends `event` and resolves once it is fsynced, with its sequence number. Waits for queue
    /// space (backpressure) rather than dropping. An error means the event is not durable: refuse
    /// the request.
    pub async fn append_durable(&self, event: EncodedEvent) -> Result<Committed, AuditError> {
        self.append(event).await?.durable().await
    }

    /// Queues `event` (waiting for queue space, never dropping) and returns at once with a
    /// [`Receipt`] for its fsync. Events are written in the order they were queued, so a record
    /// queued after this one is durable only once this one is.
    pub async fn append(&self, event: EncodedEvent) -> Result<Receipt, AuditError> {
        if !self.is_healthy() {
            return Err(AuditError::Unhealthy);
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Message::Event {
                event,
                done: Some(done),
            })
            .await
            .map_err(|_| AuditError::Closed { sink: "file" })?;
        Ok(Receipt { wait })
    }

    /// Queues `event` without waiting. On a full queue the event is dropped, counted, and
    /// [`AuditError::QueueFull`] returned.
    pub fn append_async(&self, event: EncodedEvent) -> Result<(), AuditError> {
        if !self.is_healthy() {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            return Err(AuditError::Unhealthy);
        }
        self.tx
            .try_send(Message::Event { event, done: None })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    AuditError::QueueFull { sink: "file" }
                }
                mpsc::error::TrySendError::Closed(_) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    AuditError::Closed { sink: "file" }
                }
            })
    }

    /// Resolves once everything queued before it is fsynced (or failed).
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Message::Flush(done))
            .await
            .map_err(|_| AuditError::Closed { sink: "file" })?;
        wait.await
            .map_err(|_| AuditError::Closed { sink: "file" })?
    }

    /// False once a write, fsync or rotation failed: `/readyz` should say so.
    pub fn is_healthy(&self) -> bool {
        !self.counters.unhealthy.load(Ordering::Relaxed)
    }

    /// The current file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters so far.
    pub fn stats(&self) -> FileStats {
        let c = &self.counters;
        FileStats {
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            events_written: c.events_written.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            rotations: c.rotations.load(Ordering::Relaxed),
            torn_recovered: c.torn_recovered.load(Ordering::Relaxed),
        }
    }

    /// Test hook: a sink whose writer waits for the returned sender before its first batch, so a
    /// test can queue many events and observe one group commit deterministically.
    #[cfg(test)]
    pub(crate) fn open_gated(
        config: FileSinkConfig,
    ) -> Result<(Self, std::sync::mpsc::Sender<()>), AuditError> {
        let (open, gate) = std::sync::mpsc::channel();
        Ok((Self::open_with_gate(config, Some(gate))?, open))
    }

    /// Events waiting in the queue.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

fn io_error(path: &Path, op: &'static str, e: io::Error) -> AuditError {
    AuditError::Io {
        path: path.display().to_string(),
        op,
        source: Arc::new(e),
    }
}

// === impl Writer ===

/// State owned by the writer thread.
struct Writer {
    path: PathBuf,
    dir: PathBuf,
    file: File,
    /// Bytes in the current file.
    size: u64,
    /// Sequence of the first record in the current file (or the next one, while it is empty).
    file_first: u64,
    head: ChainHead,
    max_bytes: u64,
    max_batch: usize,
    counters: Arc<Counters>,
    failed: bool,
    /// Where the waiters of a committed batch are completed: a task on the runtime that opened
    /// the sink, when there is one (see [`Completer`]); otherwise the writer completes them.
    completer: Option<Completer>,
}

/// Completes a committed batch's waiters on the tokio runtime, with one cross-thread wake-up per
/// batch.
///
/// Completing a waiter wakes the request task that awaits it. Done from the writer thread, each of
/// those wakes is a cross-thread wake of the runtime; when the worker is parked (all its requests
/// wait for this commit) the first one unparks it through its event fd, the worker preempts the
/// writer, runs that one task, parks again — and the writer's next completion does the same. Under
/// load that ping-pong cost more than the fsyncs (measured at 256 connections: the event-fd writes
/// and the switches they caused were about a third of keygate's CPU). Sent to a task on the
/// runtime, a batch costs one wake-up, and the task's completions are local wakes of the worker.
#[derive(Debug)]
struct Completer(tokio::sync::mpsc::UnboundedSender<Vec<Completion>>);

/// One waiter and what it is told.
enum Completion {
    Event(Waiter, Result<Committed, AuditError>),
    Flush(
        oneshot::Sender<Result<(), AuditError>>,
        Result<(), AuditError>,
    ),
}

impl Completion {
    fn send(self) {
        match self {
            Completion::Event(done, outcome) => {
                let _ = done.send(outcome);
            }
            Completion::Flush(done, outcome) => {
                let _ = done.send(outcome);
            }
        }
    }
}

impl Completer {
    /// A completer task on the current runtime, if the caller runs on one.
    fn spawn() -> Option<Completer> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Completion>>();
        runtime.spawn(async move {
            while let Some(batch) = rx.recv().await {
                batch.into_iter().for_each(Completion::send);
            }
        });
        Some(Completer(tx))
    }
}

/// A waiter of the batch being written, and how many records were committed when it may be
/// completed.
enum Pending {
    Event(Waiter, u64),
    Flush(oneshot::Sender<Result<(), AuditError>>),
}

impl Writer {
    /// Opens the current file and finds where the chain continues.
    fn recover(config: &FileSinkConfig, counters: Arc<Counters>) -> Result<Self, AuditError> {
        let path = config.path.clone();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut file = open_append(&path).map_err(|e| io_error(&path, "open", e))?;
        lock(&file, &path)?;
        sync_dir(&dir).map_err(|e| io_error(&dir, "fsync directory", e))?;
        let len = file
            .metadata()
            .map_err(|e| io_error(&path, "stat", e))?
            .len();
        let tail = read_tail(&mut file, len).map_err(|e| io_error(&path, "read tail", e))?;

        let mut file_first = None;
        let head = match &tail.last_line {
            Some(line) => {
                let (sequence, _) =
                    parse_link(line).map_err(|reason| chain_error(&path, "last record", reason))?;
                let first = read_first_line(&mut file)
                    .map_err(|e| io_error(&path, "read first record", e))?
                    .unwrap_or_default();
                let (first_sequence, _) = parse_link(&first)
                    .map_err(|reason| chain_error(&path, "first record", reason))?;
                file_first = Some(first_sequence);
                ChainHead::after(sequence, line)
            }
            None => head_from_rotated(&path)?.unwrap_or_else(ChainHead::genesis),
        };

        let mut writer = Writer {
            file_first: file_first.unwrap_or(head.next_sequence),
            path,
            dir,
            file,
            size: len,
            head,
            max_bytes: config.max_bytes,
            max_batch: config.max_batch.max(1),
            counters,
            failed: false,
            completer: None,
        };
        if tail.torn {
            // Keep the evidence: the torn file is rotated aside byte for byte, never truncated.
            let after = writer.head.next_sequence - 1;
            writer
                .start_new_file()
                .map_err(|e| io_error(&writer.path, "rotate torn file", e))?;
            writer
                .counters
                .torn_recovered
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                audit.path = %writer.path.display(),
                audit.after_sequence = after,
                "Audit file ended with a torn line; kept it in a rotated file and continued the chain"
            );
        }
        Ok(writer)
    }

    fn run(mut self, mut rx: mpsc::Receiver<Message>, gate: Option<std::sync::mpsc::Receiver<()>>) {
        batch_scheduling();
        if let Some(gate) = gate {
            // A dropped sender opens the gate too.
            let _ = gate.recv();
        }
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut buf = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            self.write_batch(&mut batch, &mut buf);
        }
    }

    /// Writes, fsyncs and completes one batch (draining `batch`).
    fn write_batch(&mut self, batch: &mut Vec<Message>, buf: &mut Vec<u8>) {
        if self.failed {
            let counters = &self.counters;
            let refused = batch
                .drain(..)
                .filter_map(|message| match message {
                    Message::Event { done, .. } => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        done.map(|done| Completion::Event(done, Err(AuditError::Unhealthy)))
                    }
                    Message::Flush(done) => {
                        Some(Completion::Flush(done, Err(AuditError::Unhealthy)))
                    }
                })
                .collect();
            self.complete(refused);
            return;
        }
        buf.clear();
        let mut pending = Vec::with_capacity(batch.len());
        let mut in_buf = 0u64;
        let mut result = Ok(());
        for message in batch.drain(..) {
            let (event, done) = match message {
                Message::Event { event, done } => (event, done),
                Message::Flush(done) => {
                    pending.push(Pending::Flush(done));
                    continue;
                }
            };
            if result.is_ok() {
                let line_len = (event.as_bytes().len() + CHAIN_OVERHEAD) as u64;
                let used = self.size + buf.len() as u64;
                if used > 0 && used + line_len > self.max_bytes {
                    result = self.commit(buf, &mut in_buf).and_then(|()| {
                        self.start_new_file()
                            .map_err(|e| io_error(&self.path, "rotate", e))?;
                        self.counters.rotations.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    });
                    if let Err(e) = &result {
                        self.mark_failed(e);
                    }
                }
            }
            if let Err(e) = &result {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                if let Some(done) = done {
                    let _ = done.send(Err(e.clone()));
                }
                continue;
            }
            let sequence = self.head.next_sequence;
            let start = buf.len();
            let len = push_chained_line(buf, event.as_bytes(), &self.head);
            self.head = ChainHead::after(sequence, &buf[start..start + len]);
            in_buf += 1;
            if let Some(done) = done {
                pending.push(Pending::Event(done, sequence));
            }
        }
        if result.is_ok() {
            result = self.commit(buf, &mut in_buf);
            if let Err(e) = &result {
                self.mark_failed(e);
            }
        }
        if result.is_err() {
            self.counters.failed.fetch_add(in_buf, Ordering::Relaxed);
        }
        let durable_upto = self.head.next_sequence - in_buf;
        let completions: Vec<Completion> = pending
            .into_iter()
            .map(|waiter| match waiter {
                Pending::Event(done, sequence) => {
                    let outcome = if sequence < durable_upto {
                        Ok(Committed { sequence })
                    } else {
                        Err(result.clone().err().unwrap_or(AuditError::Unhealthy))
                    };
                    Completion::Event(done, outcome)
                }
                Pending::Flush(done) => Completion::Flush(done, result.clone()),
            })
            .collect();
        self.complete(completions);
    }

    /// Hands a batch's completions to the completer task, or completes them here when there is
    /// none (or its runtime is gone).
    fn complete(&mut self, completions: Vec<Completion>) {
        if completions.is_empty() {
            return;
        }
        let completions = match &self.completer {
            Some(Completer(tx)) => match tx.send(completions) {
                Ok(()) => return,
                Err(tokio::sync::mpsc::error::SendError(back)) => {
                    self.completer = None;
                    back
                }
            },
            None => completions,
        };
        completions.into_iter().for_each(Completion::send);
    }

    /// Stops the writer for good. Runs before any waiter hears of the failure, so a caller that
    /// got an error also sees the sink unhealthy.
    fn mark_failed(&mut self, e: &AuditError) {
        self.failed = true;
        self.counters.unhealthy.store(true, Ordering::Relaxed);
        tracing::error!(
            audit.path = %self.path.display(),
            error = %e,
            "Audit file write failed; refusing audit events until restart"
        );
    }

    /// Writes and fsyncs `buf`; `in_buf` records become durable.
    fn commit(&mut self, buf: &mut Vec<u8>, in_buf: &mut u64) -> Result<(), AuditError> {
        if buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(buf)
            .map_err(|e| io_error(&self.path, "write", e))?;
        self.file
            .sync_data()
            .map_err(|e| io_error(&self.path, "fsync", e))?;
        self.size += buf.len() as u64;
        buf.clear();
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.counters
            .events_written
            .fetch_add(*in_buf, Ordering::Relaxed);
        *in_buf = 0;
        Ok(())
    }

    /// Renames the current file after its first record and starts a new, empty one.
    fn start_new_file(&mut self) -> io::Result<()> {
        let target = rotated_name(&self.path, self.file_first)?;
        std::fs::rename(&self.path, &target)?;
        let file = open_append(&self.path)?;
        lock(&file, &self.path).map_err(io::Error::other)?;
        self.file = file;
        sync_dir(&self.dir)?;
        self.size = 0;
        self.file_first = self.head.next_sequence;
        Ok(())
    }
}

/// Checks, without creating or writing anything, what [`FileSink::open`] needs: the directory
/// exists and is a writable directory, and an existing file (or its rotated predecessors) ends in
/// a record the chain can continue from. For `keygate check` and `serve`'s start-up check.
pub fn preflight(path: &Path) -> Result<(), AuditError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let meta = std::fs::metadata(&dir).map_err(|e| io_error(&dir, "directory", e))?;
    if !meta.is_dir() {
        return Err(io_error(
            &dir,
            "directory",
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    if meta.permissions().readonly() {
        return Err(io_error(
            &dir,
            "directory",
            io::Error::new(io::ErrorKind::PermissionDenied, "read-only"),
        ));
    }
    match File::open(path) {
        Ok(mut file) => {
            let len = file
                .metadata()
                .map_err(|e| io_error(path, "stat", e))?
                .len();
            if file.metadata().is_ok_and(|m| m.permissions().readonly()) {
                return Err(io_error(
                    path,
                    "open",
                    io::Error::new(io::ErrorKind::PermissionDenied, "read-only"),
                ));
            }
            let tail = read_tail(&mut file, len).map_err(|e| io_error(path, "read tail", e))?;
            if let Some(line) = &tail.last_line {
                parse_link(line).map_err(|reason| chain_error(path, "last record", reason))?;
                let first = read_first_line(&mut file)
                    .map_err(|e| io_error(path, "read first record", e))?
                    .unwrap_or_default();
                parse_link(&first).map_err(|reason| chain_error(path, "first record", reason))?;
            } else {
                head_from_rotated(path)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => head_from_rotated(path).map(|_| ()),
        Err(e) => Err(io_error(path, "open", e)),
    }
}

/// The chain head after the last complete record of the newest rotated file that has one.
fn head_from_rotated(path: &Path) -> Result<Option<ChainHead>, AuditError> {
    let rotated = rotated_files(path).map_err(|e| io_error(path, "list rotated files", e))?;
    for older in rotated.iter().rev() {
        let mut file = File::open(&older.path).map_err(|e| io_error(&older.path, "open", e))?;
        let len = file
            .metadata()
            .map_err(|e| io_error(&older.path, "stat", e))?
            .len();
        let tail = read_tail(&mut file, len).map_err(|e| io_error(&older.path, "read tail", e))?;
        if let Some(line) = tail.last_line {
            let (sequence, _) = parse_link(&line)
                .map_err(|reason| chain_error(&older.path, "last record", reason))?;
            return Ok(Some(ChainHead::after(sequence, &line)));
        }
    }
    Ok(None)
}

fn chain_error(path: &Path, which: &str, reason: String) -> AuditError {
    AuditError::Chain {
        path: path.display().to_string(),
        reason: format!("{which}: {reason}"),
    }
}

/// Takes the writer's advisory lock on a regular file (devices such as `/dev/full` are left
/// alone); another holder means another writer.
fn lock(file: &File, path: &Path) -> Result<(), AuditError> {
    let regular = file
        .metadata()
        .map_err(|e| io_error(path, "stat", e))?
        .is_file();
    if !regular {
        return Ok(());
    }
    file.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => AuditError::InUse {
            path: path.display().to_string(),
        },
        std::fs::TryLockError::Error(e) => io_error(path, "lock", e),
    })
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
}

/// Makes a rename or create in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
