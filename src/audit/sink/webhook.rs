//! The webhook sink: batches of events POSTed as a JSON array to an HTTP(S) endpoint (a SIEM
//! collector, a log pipeline), so a copy of the trail lives off the host — and loses nothing the
//! collector was not there to take.
//!
//! A tokio task drains a bounded queue into batches (sealed when `max_batch_events` are collected
//! or `max_batch_delay` after the first one). A sealed batch goes to the **spool** first — a file
//! in the spool directory (`audit.webhook_spool`; in memory when there is none) — and is deleted
//! once the collector took it. Batches are POSTed oldest first, one at a time, with the hyper-util
//! legacy client (rustls, ring, webpki roots for https). Connect errors, timeouts, 408, 429 and 5xx
//! are retried with exponential backoff, for as long as it takes: meanwhile new batches wait in the
//! spool, and after a restart the spooled ones are delivered first. Delivery is at least once (a
//! batch delivered just before a crash is sent again: receivers deduplicate by event `id`). A batch
//! the collector refuses with another 4xx is dropped and counted as failed (retrying cannot help,
//! and it must not block the rest).
//!
//! Bounded: when the spool holds `spool_max_bytes`, new batches are dropped, counted and logged;
//! the request path only ever offers events to the queue, which drops (and counts) when full, so a
//! slow or absent collector never blocks traffic. The spool directory is locked by the one keygate
//! that uses it.
//!
//! What this deliberately does not do: fsync the spool (a batch survives keygate crashing, not the
//! host losing power: the fsynced audit file is the complete record), order events across sinks,
//! or follow redirects. Credentials for the collector go in `authorization` (a `Secret`, sent as a
//! sensitive header), never in the URL.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::mpsc;

use super::{Counters, EncodedEvent, Message, Queue};
use crate::audit::AuditError;
use crate::redact::Secret;

/// Events per POST at most: keeps request bodies well under typical collector limits (~1 MiB).
pub const DEFAULT_MAX_BATCH_EVENTS: usize = 256;

/// How long the first event of a batch waits for company: bounds delivery latency.
pub const DEFAULT_MAX_BATCH_DELAY: Duration = Duration::from_secs(1);

/// Queue length: about a minute of a busy gateway's events while the collector is down.
pub const DEFAULT_QUEUE_CAPACITY: usize = 8192;

/// Spool bound: at about 1 KiB an event, some 64k events while the collector is away.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Spool files end in this; their names are 20-digit sequence numbers, oldest first.
const SPOOL_SUFFIX: &str = ".json";

/// At most one warning about spool-full drops per this interval (each one is counted).
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// First retry delay; doubles per retry up to [`DEFAULT_MAX_BACKOFF`].
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(200);

/// Longest delay between retries.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Deadline for one POST, response headers included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Response bodies are read (to keep the connection reusable) up to this size and discarded.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Settings of a [`WebhookSink`].
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http://` or `https://` endpoint, without credentials.
    pub url: Uri,
    /// Value of the `Authorization` header, if the collector needs one.
    pub authorization: Option<Secret>,
    /// Events per POST at most.
    pub max_batch_events: usize,
    /// Longest wait before a partial batch is sent.
    pub max_batch_delay: Duration,
    /// Bounded queue length.
    pub queue_capacity: usize,
    /// Where undelivered batches wait (created if missing); `None`: in memory, lost at exit.
    pub spool_dir: Option<PathBuf>,
    /// The spool's bound; past it new batches are dropped (counted and logged).
    pub spool_max_bytes: u64,
    /// First retry delay.
    pub initial_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Deadline per POST.
    pub request_timeout: Duration,
}

impl WebhookConfig {
    /// Defaults for everything but the URL.
    pub fn new(url: Uri) -> Self {
        WebhookConfig {
            url,
            authorization: None,
            max_batch_events: DEFAULT_MAX_BATCH_EVENTS,
            max_batch_delay: DEFAULT_MAX_BATCH_DELAY,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            spool_dir: None,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// POSTs batches of events to a URL: the constructor of that [`Queue`].
#[derive(Debug)]
pub struct WebhookSink;

impl WebhookSink {
    /// Validates `config`, opens the spool (redelivering what it holds) and starts the delivery
    /// task. Must be called inside a tokio runtime.
    pub fn spawn(config: WebhookConfig) -> Result<Queue, AuditError> {
        let url = &config.url;
        let scheme_ok = matches!(url.scheme_str(), Some("http" | "https"));
        let authority = url
            .authority()
            .ok_or_else(|| webhook_error("url has no host"))?;
        if !scheme_ok {
            return Err(webhook_error("url scheme must be `http` or `https`"));
        }
        if authority.as_str().contains('@') {
            return Err(webhook_error(
                "credentials in the url are not supported; use `authorization`",
            ));
        }
        let authorization = match &config.authorization {
            Some(secret) => {
                let mut value = HeaderValue::from_str(secret.expose())
                    .map_err(|_| webhook_error("`authorization` is not a valid header value"))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| webhook_error("no tokio runtime to run the delivery task"))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| webhook_error(&format!("tls setup: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(connector);

        let counters = Arc::new(Counters::default());
        let spool = Spool::open(config.spool_dir.as_deref(), config.spool_max_bytes)?;
        Counters::add(&counters.spooled, spool.events);
        if !spool.entries.is_empty() {
            tracing::info!(
                audit.sink = "webhook",
                audit.events = spool.events,
                "Redelivering spooled audit events"
            );
        }
        let (queue, rx) = Queue::new("webhook", config.queue_capacity, Arc::clone(&counters));
        let worker = Worker {
            client,
            authorization,
            backoff: config.initial_backoff,
            config,
            counters: Arc::clone(&counters),
            spool,
            retry_at: None,
            drops: DropLog::default(),
        };
        runtime.spawn(worker.run(rx));
        Ok(queue)
    }
}

fn webhook_error(reason: &str) -> AuditError {
    AuditError::Webhook {
        reason: reason.to_owned(),
    }
}

// === impl Spool ===

/// Undelivered batches, oldest first: files in a directory, or bodies in memory.
struct Spool {
    /// The directory and the handle holding its lock.
    dir: Option<(PathBuf, File)>,
    entries: VecDeque<Entry>,
    bytes: u64,
    /// Events in `entries`.
    events: usize,
    max_bytes: u64,
    next: u64,
}

struct Entry {
    seq: u64,
    events: usize,
    size: u64,
    /// The body, in memory mode.
    body: Option<Bytes>,
}

enum Refusal {
    Full,
    Io(io::Error),
}

impl Spool {
    fn open(dir: Option<&Path>, max_bytes: u64) -> Result<Spool, AuditError> {
        let mut spool = Spool {
            dir: None,
            entries: VecDeque::new(),
            bytes: 0,
            events: 0,
            max_bytes,
            next: 1,
        };
        let Some(dir) = dir else {
            return Ok(spool);
        };
        let fail = |op: &str, e: io::Error| {
            webhook_error(&format!("spool `{}`: {op}: {e}", dir.display()))
        };
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail("create", e)),
        }
        let lock = File::open(dir).map_err(|e| fail("open", e))?;
        lock.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => AuditError::InUse {
                path: dir.display().to_string(),
            },
            std::fs::TryLockError::Error(e) => fail("lock", e),
        })?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| fail("list", e))? {
            let entry = entry.map_err(|e| fail("list", e))?;
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SPOOL_SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            found.push((seq, entry.path()));
        }
        found.sort();
        for (seq, path) in found {
            let body = std::fs::read(&path).map_err(|e| fail("read", e))?;
            let Ok(events) = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&body) else {
                // Not a batch this sink wrote (a torn write): nothing to deliver.
                tracing::warn!(audit.sink = "webhook", file = %path.display(), "Unreadable spool file skipped");
                continue;
            };
            spool.bytes += body.len() as u64;
            spool.events += events.len();
            spool.entries.push_back(Entry {
                seq,
                events: events.len(),
                size: body.len() as u64,
                body: None,
            });
            spool.next = seq + 1;
        }
        spool.dir = Some((dir.to_path_buf(), lock));
        Ok(spool)
    }

    fn path(dir: &Path, seq: u64) -> PathBuf {
        dir.join(format!("{seq:020}{SPOOL_SUFFIX}"))
    }

    /// Adds a batch at the end, or refuses it (full, or the file could not be written).
    fn push(&mut self, body: Bytes, events: usize) -> Result<(), Refusal> {
        let size = body.len() as u64;
        if self.bytes.saturating_add(size) > self.max_bytes && !self.entries.is_empty() {
            return Err(Refusal::Full);
        }
        let seq = self.next;
        let body = match &self.dir {
            Some((dir, _)) => {
                let path = Spool::path(dir, seq);
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, &body)
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(Refusal::Io)?;
                None
            }
            None => Some(body),
        };
        self.next += 1;
        self.bytes += size;
        self.events += events;
        self.entries.push_back(Entry {
            seq,
            events,
            size,
            body,
        });
        Ok(())
    }

    /// The oldest batch's body and event count.
    fn front(&self) -> Option<io::Result<(Bytes, usize)>> {
        let entry = self.entries.front()?;
        Some(match (&entry.body, &self.dir) {
            (Some(body), _) => Ok((body.clone(), entry.events)),
            (None, Some((dir, _))) => {
                std::fs::read(Spool::path(dir, entry.seq)).map(|b| (Bytes::from(b), entry.events))
            }
            (None, None) => Err(io::Error::other("spool entry without a body")),
        })
    }

    /// Removes the oldest batch.
    fn pop(&mut self) {
        let Some(entry) = self.entries.pop_front() else {
            return;
        };
        self.bytes -= entry.size;
        self.events -= entry.events;
        if let Some((dir, _)) = &self.dir {
            if let Err(e) = std::fs::remove_file(Spool::path(dir, entry.seq)) {
                tracing::warn!(audit.sink = "webhook", error = %e, "Delivered spool file not removed; it will be sent again");
            }
        }
    }
}

/// Logs spool-full drops at most once per [`DROP_LOG_INTERVAL`], with the count since the last
/// warning.
#[derive(Default)]
struct DropLog {
    last: Option<tokio::time::Instant>,
    unreported: usize,
}

impl DropLog {
    fn note(&mut self, events: usize, why: &str) {
        self.unreported += events;
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|at| now < at + DROP_LOG_INTERVAL) {
            return;
        }
        self.last = Some(now);
        tracing::warn!(
            audit.sink = "webhook",
            audit.lost = self.unreported,
            reason = why,
            "Audit webhook events dropped (see keygate_audit_events_dropped_total)"
        );
        self.unreported = 0;
    }
}

// === impl Worker ===

struct Worker {
    client: HttpsClient,
    authorization: Option<HeaderValue>,
    config: WebhookConfig,
    counters: Arc<Counters>,
    spool: Spool,
    /// When to try the oldest spooled batch again; `None` while nothing waits for a retry.
    retry_at: Option<tokio::time::Instant>,
    backoff: Duration,
    drops: DropLog,
}

/// Why a POST did not succeed.
enum Failure {
    /// Worth another try (connect error, timeout, 408, 429, 5xx).
    Transient,
    /// The collector refused the batch (other 4xx): retrying will not help.
    Refused(StatusCode),
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let max_events = self.config.max_batch_events.max(1);
        let mut batch: Vec<EncodedEvent> = Vec::with_capacity(max_events);
        let mut sealed_at: Option<tokio::time::Instant> = None;
        if !self.spool.entries.is_empty() {
            self.retry_at = Some(tokio::time::Instant::now());
        }
        loop {
            let seal = async {
                match sealed_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let retry = async {
                match self.retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                message = rx.recv() => match message {
                    Some(Message::Event(event)) => {
                        if batch.is_empty() {
                            sealed_at = Some(tokio::time::Instant::now() + self.config.max_batch_delay);
                        }
                        batch.push(event);
                        if batch.len() >= max_events {
                            sealed_at = None;
                            self.seal(&mut batch).await;
                        }
                    }
                    Some(Message::Flush(done)) => {
                        sealed_at = None;
                        self.seal(&mut batch).await;
                        // One attempt now, whatever the backoff: a flush (shutdown) must not
                        // wait for a collector that is away; what is left stays spooled.
                        self.drain().await;
                        let _ = done.send(());
                    }
                    None => {
                        self.seal(&mut batch).await;
                        if self.spool.dir.is_none() && self.spool.events > 0 {
                            // In memory only: what was not delivered is lost with the process.
                            Counters::add(&self.counters.failed, self.spool.events);
                            self.drops.note(self.spool.events, "undelivered at shutdown (no spool directory)");
                        }
                        return;
                    }
                },
                () = seal => {
                    sealed_at = None;
                    self.seal(&mut batch).await;
                }
                () = retry => self.drain().await,
            }
        }
    }

    /// Spools the collected batch and, when nothing older waits for a retry, delivers it now.
    async fn seal(&mut self, batch: &mut Vec<EncodedEvent>) {
        if batch.is_empty() {
            return;
        }
        let events = batch.len();
        let body = json_array(batch);
        batch.clear();
        match self.spool.push(body, events) {
            Ok(()) => Counters::add(&self.counters.spooled, events),
            Err(Refusal::Full) => {
                Counters::add(&self.counters.dropped, events);
                self.drops.note(events, "spool full");
                return;
            }
            Err(Refusal::Io(e)) => {
                Counters::add(&self.counters.dropped, events);
                self.drops.note(events, &format!("spool write failed: {e}"));
                return;
            }
        }
        if self.retry_at.is_none() {
            self.drain().await;
        }
    }

    /// POSTs spooled batches, oldest first, until the spool is empty or one fails; a transient
    /// failure schedules the next attempt with backoff.
    async fn drain(&mut self) {
        self.retry_at = None;
        while let Some(front) = self.spool.front() {
            let (body, events) = match front {
                Ok(front) => front,
                Err(e) => {
                    // The file is gone or unreadable: nothing to send.
                    Counters::add(
                        &self.counters.failed,
                        self.spool.entries.front().map_or(0, |e| e.events),
                    );
                    tracing::warn!(audit.sink = "webhook", error = %e, "Spooled audit batch unreadable; dropped");
                    self.forget_front();
                    continue;
                }
            };
            match self.post(body).await {
                Ok(()) => {
                    Counters::add(&self.counters.delivered, events);
                    self.counters.batches.fetch_add(1, Ordering::Relaxed);
                    self.forget_front();
                    self.backoff = self.config.initial_backoff;
                }
                Err(Failure::Refused(status)) => {
                    Counters::add(&self.counters.failed, events);
                    tracing::warn!(
                        audit.sink = "webhook",
                        audit.events = events,
                        audit.reason = %format!("refused with {status}"),
                        "Audit webhook batch dropped"
                    );
                    self.forget_front();
                }
                Err(Failure::Transient) => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    self.retry_at = Some(tokio::time::Instant::now() + self.backoff);
                    self.backoff = self.backoff.saturating_mul(2).min(self.config.max_backoff);
                    return;
                }
            }
        }
    }

    fn forget_front(&mut self) {
        let events = self.spool.entries.front().map_or(0, |e| e.events);
        self.spool.pop();
        self.counters
            .spooled
            .fetch_sub(u64::try_from(events).unwrap_or(0), Ordering::Relaxed);
    }

    async fn post(&self, body: Bytes) -> Result<(), Failure> {
        let mut request = Request::post(self.config.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(body))
            .map_err(|_| Failure::Refused(StatusCode::BAD_REQUEST))?;
        if let Some(value) = &self.authorization {
            request.headers_mut().insert(AUTHORIZATION, value.clone());
        }
        let response =
            tokio::time::timeout(self.config.request_timeout, self.client.request(request))
                .await
                .map_err(|_| Failure::Transient)?
                .map_err(|_| Failure::Transient)?;
        let status = response.status();
        // Read a bounded body so the connection can be reused; its content does not matter.
        let _ = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await;
        if status.is_success() {
            Ok(())
        } else if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            Err(Failure::Transient)
        } else {
            Err(Failure::Refused(status))
        }
    }
}

/// `[e1,e2,…]` from encoded events.
fn json_array(batch: &[EncodedEvent]) -> Bytes {
    let len = batch.iter().map(|e| e.as_bytes().len() + 1).sum::<usize>() + 1;
    let mut body = BytesMut::with_capacity(len);
    body.put_u8(b'[');
    for (i, event) in batch.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(event.as_bytes());
    }
    body.put_u8(b']');
    body.freeze()
}

#[cfg(test)]
mod tests;
