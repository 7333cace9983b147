//! The [`Sink`] trait every non-file audit destination implements, and the encoded form of an event
//! that all sinks (the file sink too) accept.
//!
//! An [`EncodedEvent`] is the JSON of an [`AuditEvent`] after [`redact_text`] scrubbed it: the
//! last line of defence against a caller that copied a credential into free text (an explanation,
//! an upstream error). Its constructor is the only way to get one, so no sink can receive an
//! unscrubbed event. Every sink sits behind a bounded queue and never blocks its caller: when the
//! queue is full the event is dropped, counted, and [`AuditError::QueueFull`] returned.
//!
//! What this deliberately does not do: chain or order events across sinks (the chain belongs to
//! the file, see `audit/chain.rs`); sinks here receive events without `sequence` /
//! `keygateprevhash`, and match file records by event `id`.

pub mod stdout;
pub mod webhook;

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::event::AuditEvent;
use super::AuditError;
use crate::redact::redact_text;

/// A boxed future returned by [`Sink::flush`].
pub type FlushFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

// === impl EncodedEvent ===

/// The size of the largest event encoded so far: the capacity the next one starts with.
static ENCODE_HINT: AtomicUsize = AtomicUsize::new(1024);

/// Bound on [`ENCODE_HINT`]: one huge event does not make every later buffer huge.
const MAX_ENCODE_HINT: usize = 16 * 1024;

/// One audit event as a scrubbed JSON object (no trailing newline). Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    json: Bytes,
    scrubbed: bool,
}

impl EncodedEvent {
    /// Serializes `event` and masks anything credential-shaped in it.
    pub fn new(event: &AuditEvent) -> Result<Self, AuditError> {
        // Encoded into a buffer the size of the largest event so far, not one grown from 128
        // bytes by doubling (a create's records are 1–3 KB: four or five copies each).
        let mut buf = Vec::with_capacity(ENCODE_HINT.load(Ordering::Relaxed));
        serde_json::to_writer(&mut buf, event).map_err(|e| AuditError::Encode {
            reason: e.to_string(),
        })?;
        if buf.len() > ENCODE_HINT.load(Ordering::Relaxed) {
            ENCODE_HINT.store(buf.len().min(MAX_ENCODE_HINT), Ordering::Relaxed);
        }
        let json = String::from_utf8(buf).map_err(|e| AuditError::Encode {
            reason: e.to_string(),
        })?;
        Ok(match redact_text(&json) {
            Cow::Borrowed(_) => EncodedEvent {
                json: Bytes::from(json),
                scrubbed: false,
            },
            Cow::Owned(masked) => EncodedEvent {
                json: Bytes::from(masked),
                scrubbed: true,
            },
        })
    }

    /// The JSON bytes (one object, starting with `{`).
    pub fn as_bytes(&self) -> &[u8] {
        &self.json
    }

    /// Whether scrubbing masked something: a caller put a credential where none belongs.
    pub fn was_scrubbed(&self) -> bool {
        self.scrubbed
    }
}

// === Sink ===

/// A destination for audit events that never blocks the request path.
pub trait Sink: Send + Sync {
    /// Short stable name for metrics and errors (`stdout`, `webhook`).
    fn name(&self) -> &'static str;

    /// Queues `event` without waiting. `Err(QueueFull)` means it was dropped (and counted).
    fn offer(&self, event: EncodedEvent) -> Result<(), AuditError>;

    /// Resolves once every event offered before this call has been handled (written, delivered,
    /// or given up on). For graceful shutdown and tests.
    fn flush(&self) -> FlushFuture<'_>;

    /// Counters so far.
    fn stats(&self) -> SinkStats;
}

/// Counters of a [`Sink`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Events written or delivered.
    pub delivered: u64,
    /// Batches written or delivered.
    pub batches: u64,
    /// Delivery attempts repeated after a failure.
    pub retries: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// Events given up on after retries (or refused by the destination).
    pub failed: u64,
    /// Events waiting in the sink's spool for delivery (webhook).
    pub spooled: u64,
}

/// Shared counters behind [`SinkStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) spooled: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> SinkStats {
        SinkStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            spooled: self.spooled.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// What travels through a sink's queue.
#[derive(Debug)]
pub(crate) enum Message {
    Event(EncodedEvent),
    Flush(oneshot::Sender<()>),
}

/// A sink whose events go through a bounded queue to a worker of its own (the stdout writer
/// thread, the webhook delivery task): the sending side, counting drops. The constructors are
/// [`StdoutSink`](super::StdoutSink) and [`WebhookSink`](super::WebhookSink).
#[derive(Debug)]
pub struct Queue {
    name: &'static str,
    tx: mpsc::Sender<Message>,
    counters: Arc<Counters>,
}

impl Queue {
    pub(crate) fn new(
        name: &'static str,
        capacity: usize,
        counters: Arc<Counters>,
    ) -> (Self, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Queue { name, tx, counters }, rx)
    }
}

impl Sink for Queue {
    fn name(&self) -> &'static str {
        self.name
    }

    fn offer(&self, event: EncodedEvent) -> Result<(), AuditError> {
        self.tx
            .try_send(Message::Event(event))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    AuditError::QueueFull { sink: self.name }
                }
                mpsc::error::TrySendError::Closed(_) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    AuditError::Closed { sink: self.name }
                }
            })
    }

    fn flush(&self) -> FlushFuture<'_> {
        Box::pin(async move {
            let (done, wait) = oneshot::channel();
            if self.tx.send(Message::Flush(done)).await.is_ok() {
                // An Err means the worker is gone: nothing left to wait for.
                let _ = wait.await;
            }
        })
    }

    fn stats(&self) -> SinkStats {
        self.counters.snapshot()
    }
}
