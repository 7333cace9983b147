//! The stdout sink: one JSON line per event, for container log collectors.
//!
//! A dedicated thread drains a bounded queue and writes each batch with one flush, so a blocked
//! stdout pipe fills the queue and drops events (counted) instead of stalling requests. The writer
//! is generic so tests can capture the output. What this deliberately does not do: chain records
//! (see `audit/chain.rs`) or retry a failed write (stdout errors are counted as failed).

use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Counters, Message, Queue};
use crate::audit::AuditError;

/// Queue length of the stdout sink.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// Events written per flush at most.
const MAX_BATCH: usize = 1024;

/// Writes events as JSON lines to stdout (or any writer): the constructors of that [`Queue`].
#[derive(Debug)]
pub struct StdoutSink;

impl StdoutSink {
    /// A sink writing to the process's stdout.
    pub fn stdout(queue_capacity: usize) -> Result<Queue, AuditError> {
        Self::with_writer(io::stdout(), queue_capacity)
    }

    /// A sink writing to `writer` from its own thread.
    pub fn with_writer<W: Write + Send + 'static>(
        writer: W,
        queue_capacity: usize,
    ) -> Result<Queue, AuditError> {
        let counters = Arc::new(Counters::default());
        let (queue, rx) = Queue::new("stdout", queue_capacity, Arc::clone(&counters));
        let worker_counters = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("keygate-audit-stdout".to_owned())
            .spawn(move || run(writer, rx, &worker_counters))
            .map_err(|e| AuditError::Io {
                path: "stdout".to_owned(),
                op: "start writer thread",
                source: Arc::new(e),
            })?;
        Ok(queue)
    }
}

fn run<W: Write>(mut writer: W, mut rx: mpsc::Receiver<Message>, counters: &Counters) {
    let mut buf = Vec::new();
    let mut flushes = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut events = 0usize;
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Event(event) => {
                    buf.extend_from_slice(event.as_bytes());
                    buf.push(b'\n');
                    events += 1;
                }
                Message::Flush(done) => flushes.push(done),
            }
            next = if events < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if events > 0 {
            if writer.write_all(&buf).and_then(|()| writer.flush()).is_ok() {
                Counters::add(&counters.delivered, events);
                counters.batches.fetch_add(1, Ordering::Relaxed);
            } else {
                Counters::add(&counters.failed, events);
            }
            buf.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}
