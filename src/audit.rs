//! The audit trail: one CloudEvents record per governed request (and, if configured, per
//! ungoverned one), fanned out to a hash-chained JSON Lines file, stdout and a webhook.
//!
//! Auditors treat these events as evidence, so the trail is complete (a `blocking` file sink makes
//! every governed request wait for its record's fsync, and an audit failure refuses the request),
//! ordered and tamper-evident (`sequence` + `keygateprevhash` chain, checked by
//! [`chain::run_verify_cli`]), and free of secrets (typed records that hold no credential, plus a
//! scrub of every encoded event, see [`sink::EncodedEvent`]).
//!
//! Where it sits: the audit layer, outside error mapping, builds an [`AuditEvent`] from the
//! request context and calls [`Auditor::emit`] (governed) or [`Auditor::emit_nowait`]
//! (ungoverned). An `Err` from `emit` becomes 503 "no durable audit, no action". Only the file sink
//! can block, and only in [`FileMode::Blocking`]; every other sink sits behind a bounded queue and
//! drops (counting) when full, so a slow webhook never stalls requests.
//!
//! What this deliberately does not do: decide anything, read bodies, or serve metrics — the
//! counters are exposed for the telemetry module to export.

pub mod chain;
pub mod event;
pub mod file;
pub mod sink;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use chain::{run_verify_cli, verify, verify_anchored, VerifyReport};
pub use event::{
    method_name, AuditEvent, AuditRecord, AuthMethod, DecisionInfo, DecisionResult, EgressInfo,
    EventSource, EventType, HttpInfo, Outcome, PrincipalInfo, PrincipalKind, ReconcileInfo, Stage,
    Target,
};
pub use file::{Committed, FileSink, FileSinkConfig, FileStats, Receipt};
pub use sink::stdout::StdoutSink;
pub use sink::webhook::{WebhookConfig, WebhookSink};
pub use sink::{EncodedEvent, Queue, Sink, SinkStats};

/// Everything that can go wrong while auditing. Messages never contain event contents.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// A bounded queue was full; the event was dropped and counted.
    #[error("audit sink `{sink}`: queue full, event dropped")]
    QueueFull {
        /// The sink's name.
        sink: &'static str,
    },
    /// The sink's worker has stopped.
    #[error("audit sink `{sink}`: closed")]
    Closed {
        /// The sink's name.
        sink: &'static str,
    },
    /// Reading or writing the audit file failed.
    #[error("audit file `{path}`: {op}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// What was being done.
        op: &'static str,
        /// The I/O error (shared: one failure completes many waiters).
        #[source]
        source: Arc<io::Error>,
    },
    /// The existing file's tail is not a valid record, so the chain cannot continue safely.
    #[error("audit file `{path}`: cannot continue the chain: {reason}")]
    Chain {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process (another keygate, or `keygate reconcile` while `serve` runs) writes the
    /// file: two writers would break the chain.
    #[error("audit file `{path}` is in use by another keygate process")]
    InUse {
        /// The file.
        path: String,
    },
    /// The file sink failed earlier; it refuses events until restart.
    #[error("audit file sink is unhealthy after a write failure: no durable audit until restart")]
    Unhealthy,
    /// The event could not be serialized.
    #[error("audit event: cannot encode: {reason}")]
    Encode {
        /// The serializer's message.
        reason: String,
    },
    /// The webhook sink's settings are unusable.
    #[error("audit webhook: {reason}")]
    Webhook {
        /// What is wrong (never the URL's credentials).
        reason: String,
    },
}

/// How the file sink treats governed requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileMode {
    /// [`Auditor::emit`] waits for the fsync covering the event; failure refuses the request.
    Blocking,
    /// [`Auditor::emit`] queues the event and returns; a full queue drops it (counted).
    Async,
}

/// At most one warning per this interval about lost audit events: under overload every request
/// could drop one, and the log must not become a second overload. The metrics count every one.
const LOSS_LOG_INTERVAL: Duration = Duration::from_secs(10);

// === impl Auditor ===

/// Fans each event out to the configured sinks. Share it (`Arc`) across the service.
pub struct Auditor {
    file: Option<(FileSink, FileMode)>,
    sinks: Vec<Box<dyn Sink>>,
    scrubbed: AtomicU64,
    encode_failures: AtomicU64,
    losses: LossLog,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.sinks.iter().map(|s| s.name()).collect();
        f.debug_struct("Auditor")
            .field("file", &self.file)
            .field("sinks", &names)
            .finish_non_exhaustive()
    }
}

impl Auditor {
    /// An auditor writing to `file` (if any) and the other `sinks`.
    pub fn new(file: Option<(FileSink, FileMode)>, sinks: Vec<Box<dyn Sink>>) -> Self {
        Auditor {
            file,
            sinks,
            scrubbed: AtomicU64::new(0),
            encode_failures: AtomicU64::new(0),
            losses: LossLog::new(),
        }
    }

    /// Records a governed request's event. With a [`FileMode::Blocking`] file sink this resolves
    /// after the event is fsynced and returns its sequence; an `Err` means there is no durable
    /// record, and the request must be refused (503). Other sinks are offered the event without
    /// waiting.
    pub async fn emit(&self, event: &AuditEvent) -> Result<Option<Committed>, AuditError> {
        // Async mode never refuses a request: a lost event is counted and logged.
        self.emit_deferred(event).await?.durable().await
    }

    /// Queues a governed request's event and returns without waiting for it to be durable (only
    /// for queue space): the [`Deferred`] resolves once it is. For a create's `request_received`
    /// record, committed while the create is forwarded. An `Err` here already means no durable
    /// record.
    pub async fn emit_deferred(&self, event: &AuditEvent) -> Result<Deferred, AuditError> {
        let encoded = self.encode(event)?;
        self.offer_to_sinks(&encoded);
        match &self.file {
            Some((file, FileMode::Blocking)) => {
                file.append(encoded).await.map(|r| Deferred(Some(r)))
            }
            Some((file, FileMode::Async)) => {
                if let Err(err) = file.append_async(encoded) {
                    self.losses.note(&err);
                }
                Ok(Deferred(None))
            }
            None => Ok(Deferred(None)),
        }
    }

    /// Records an event without ever waiting (ungoverned requests): every sink, the file included,
    /// gets it through its queue or drops it (counted).
    pub fn emit_nowait(&self, event: &AuditEvent) {
        let Ok(encoded) = self.encode(event) else {
            return;
        };
        self.offer_to_sinks(&encoded);
        if let Some((file, _)) = &self.file {
            if let Err(err) = file.append_async(encoded) {
                self.losses.note(&err);
            }
        }
    }

    /// Whether any sink is configured; without one, no event is built at all.
    pub fn is_enabled(&self) -> bool {
        self.file.is_some() || !self.sinks.is_empty()
    }

    /// False when the file sink can no longer write (for `/readyz`).
    pub fn is_healthy(&self) -> bool {
        self.file.as_ref().is_none_or(|(file, _)| file.is_healthy())
    }

    /// The file sink, for its counters.
    pub fn file(&self) -> Option<&FileSink> {
        self.file.as_ref().map(|(file, _)| file)
    }

    /// The other sinks, for their counters.
    pub fn sinks(&self) -> &[Box<dyn Sink>] {
        &self.sinks
    }

    /// Events in which scrubbing masked a credential-shaped value: each one is a caller bug.
    pub fn scrubbed(&self) -> u64 {
        self.scrubbed.load(Ordering::Relaxed)
    }

    /// Events that could not be serialized (none expected; counted, not silently lost).
    pub fn encode_failures(&self) -> u64 {
        self.encode_failures.load(Ordering::Relaxed)
    }

    /// Waits until every event emitted so far has been handled by every sink (graceful shutdown).
    pub async fn flush(&self) -> Result<(), AuditError> {
        for sink in &self.sinks {
            sink.flush().await;
        }
        match &self.file {
            Some((file, _)) => file.flush().await,
            None => Ok(()),
        }
    }

    /// Waits until every event emitted so far is in the file (fsynced), without waiting for the
    /// other sinks (a webhook may be retrying for minutes).
    pub async fn flush_file(&self) -> Result<(), AuditError> {
        match &self.file {
            Some((file, _)) => file.flush().await,
            None => Ok(()),
        }
    }

    fn encode(&self, event: &AuditEvent) -> Result<EncodedEvent, AuditError> {
        let encoded = EncodedEvent::new(event).inspect_err(|e| {
            self.encode_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(audit.type = %event.event_type(), error = %e, "Audit event not encoded");
        })?;
        if encoded.was_scrubbed() {
            self.scrubbed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                audit.type = %event.event_type(),
                audit.request_id = %crate::redact::redact_text(&event.data().request_id),
                "Audit event contained a credential-shaped value; masked before writing"
            );
        }
        Ok(encoded)
    }

    fn offer_to_sinks(&self, encoded: &EncodedEvent) {
        for sink in &self.sinks {
            // A full queue drops and counts inside the sink; the log hears of it here.
            if let Err(err) = sink.offer(encoded.clone()) {
                self.losses.note(&err);
            }
        }
    }
}

// === impl Deferred ===

/// An event queued by [`Auditor::emit_deferred`], whose durability is awaited later.
#[derive(Debug)]
pub struct Deferred(Option<Receipt>);

impl Deferred {
    /// With a blocking file sink, resolves once the event is fsynced; otherwise at once.
    pub async fn durable(self) -> Result<Option<Committed>, AuditError> {
        match self.0 {
            Some(receipt) => receipt.durable().await.map(Some),
            None => Ok(None),
        }
    }
}

// === impl LossLog ===

/// Logs lost audit events (dropped on a full queue, or refused by a failed sink) at most once per
/// [`LOSS_LOG_INTERVAL`], with how many were lost since the previous warning.
#[derive(Debug)]
struct LossLog {
    started: Instant,
    /// Milliseconds after `started` before which no further warning is written.
    quiet_until_ms: AtomicU64,
    /// Losses not yet reported in a warning.
    unreported: AtomicU64,
}

impl LossLog {
    fn new() -> Self {
        LossLog {
            started: Instant::now(),
            quiet_until_ms: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
        }
    }

    fn note(&self, err: &AuditError) {
        self.unreported.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let quiet_until = self.quiet_until_ms.load(Ordering::Relaxed);
        let next =
            now.saturating_add(u64::try_from(LOSS_LOG_INTERVAL.as_millis()).unwrap_or(u64::MAX));
        // One caller per interval wins the exchange and writes the warning.
        if now < quiet_until
            || self
                .quiet_until_ms
                .compare_exchange(quiet_until, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let lost = self.unreported.swap(0, Ordering::Relaxed);
        tracing::warn!(
            audit.lost = lost,
            error = %err,
            "Audit events lost (see keygate_audit_events_dropped_total and _failed_total)"
        );
    }

    #[cfg(test)]
    fn unreported(&self) -> u64 {
        self.unreported.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
pub(crate) mod tests;
