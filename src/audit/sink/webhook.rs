//! The webhook sink: batches of events POSTed as a JSON array to an HTTP(S) endpoint (a SIEM
//! collector, a log pipeline), so a copy of the trail lives off the host.
//!
//! A tokio task drains a bounded queue into batches (sent when `max_batch_events` are collected or
//! `max_batch_delay` after the first one), POSTs each with the hyper-util legacy client (rustls
//! with the ring provider and webpki roots for https), and retries connect errors, timeouts, 408,
//! 429 and 5xx with exponential backoff. While it retries, new events wait in the queue; when the
//! queue is full they are dropped and counted, so a slow collector never blocks requests. A batch
//! refused with another 4xx, or still failing after `max_retries`, is counted as failed.
//!
//! What this deliberately does not do: persist undelivered batches (the file sink is the durable
//! copy), deduplicate (a retried batch may arrive twice; events carry unique ids), or follow
//! redirects. Credentials for the collector go in `authorization` (a `Secret`, sent as a sensitive
//! header), never in the URL.

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
use tokio::sync::{mpsc, oneshot};

use super::{Counters, EncodedEvent, Message, Queue};
use crate::audit::AuditError;
use crate::redact::Secret;

/// Events per POST at most: keeps request bodies well under typical collector limits (~1 MiB).
pub const DEFAULT_MAX_BATCH_EVENTS: usize = 256;

/// How long the first event of a batch waits for company: bounds delivery latency.
pub const DEFAULT_MAX_BATCH_DELAY: Duration = Duration::from_secs(1);

/// Queue length: about a minute of a busy gateway's events while the collector is down.
pub const DEFAULT_QUEUE_CAPACITY: usize = 8192;

/// Retries per batch before it is counted as failed.
pub const DEFAULT_MAX_RETRIES: u32 = 5;

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
    /// Retries per batch.
    pub max_retries: u32,
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
            max_retries: DEFAULT_MAX_RETRIES,
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
    /// Validates `config` and starts the delivery task. Must be called inside a tokio runtime.
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
        let (queue, rx) = Queue::new("webhook", config.queue_capacity, Arc::clone(&counters));
        let worker = Worker {
            client,
            authorization,
            config,
            counters: Arc::clone(&counters),
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

// === impl Worker ===

struct Worker {
    client: HttpsClient,
    authorization: Option<HeaderValue>,
    config: WebhookConfig,
    counters: Arc<Counters>,
}

/// Why a POST did not succeed.
enum Failure {
    /// Worth another try (connect error, timeout, 408, 429, 5xx).
    Transient,
    /// The collector refused the batch (other 4xx): retrying will not help.
    Refused(StatusCode),
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Message>) {
        let max_events = self.config.max_batch_events.max(1);
        let mut batch: Vec<EncodedEvent> = Vec::with_capacity(max_events);
        let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
        while let Some(first) = rx.recv().await {
            let deadline = tokio::time::Instant::now() + self.config.max_batch_delay;
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Event(event) => batch.push(event),
                    Message::Flush(done) => flushes.push(done),
                }
                if batch.len() >= max_events || !flushes.is_empty() {
                    break;
                }
                next = tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .ok()
                    .flatten();
            }
            if !batch.is_empty() {
                self.deliver(&batch).await;
                batch.clear();
            }
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }

    /// POSTs one batch, retrying transient failures; counts the outcome.
    async fn deliver(&self, batch: &[EncodedEvent]) {
        let body = json_array(batch);
        let mut backoff = self.config.initial_backoff;
        let mut retries = 0u32;
        loop {
            let failure = match self.post(body.clone()).await {
                Ok(()) => {
                    Counters::add(&self.counters.delivered, batch.len());
                    self.counters.batches.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(failure) => failure,
            };
            let give_up = match failure {
                Failure::Refused(status) => Some(format!("refused with {status}")),
                Failure::Transient if retries >= self.config.max_retries => {
                    Some(format!("still failing after {retries} retries"))
                }
                Failure::Transient => None,
            };
            if let Some(why) = give_up {
                Counters::add(&self.counters.failed, batch.len());
                tracing::warn!(
                    audit.sink = "webhook",
                    audit.events = batch.len(),
                    audit.reason = %why,
                    "Audit webhook batch dropped"
                );
                return;
            }
            retries += 1;
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2).min(self.config.max_backoff);
        }
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
