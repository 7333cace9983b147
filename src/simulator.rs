//! An in-memory simulator of the Confluent Cloud management API: keygate's upstream in tests and
//! in `keygate dev`.
//!
//! It answers the IAM v2 endpoints keygate governs or depends on (`/iam/v2/api-keys`,
//! `/iam/v2/role-bindings`, `/iam/v2/service-accounts`, `/iam/v2/users`), the inventory endpoints
//! keygate syncs from (`/org/v2/environments`, `/cmk/v2/clusters`, `/srcm/v3/clusters`,
//! `/ksqldbcm/v2/clusters`), with the shapes, ids, status codes, error bodies and headers of
//! `docs/confluent-api.md`. Every path outside `/_simulator/` requires
//! `Authorization: Basic` with a live Cloud or Global key of the store, or `Authorization: Bearer`
//! with a live session token (anything else is 401 with `WWW-Authenticate`); only then is an
//! unknown path 404 and a wrong method 405.
//!
//! It also plays the Confluent CLI's counterpart on Confluent's web host: `POST /api/sessions`
//! (a seeded user's email and password, or a refresh token → a JWT-shaped session token with
//! `exp`, and a refresh token) and `GET /api/me` (who a session token belongs to). It answers for
//! both hosts by `Host`: `confluent.cloud` serves only `/api/…`, `api.confluent.cloud` only the
//! rest, and any other host (a loopback address in tests and `keygate dev`) both.
//!
//! It deliberately does **not** enforce Confluent's RBAC (any valid Cloud/Global key may do
//! anything: keygate is what is under test), quotas, rate limits (the `X-RateLimit-*` headers are
//! informational) or key propagation delay. It sits where `api.confluent.cloud` sits: at the far
//! end of keygate's forward stage.
//!
//! # Test-support endpoints (no authentication)
//!
//! - `GET /_simulator/requests`: the request log as a JSON array of
//!   `{method, path_and_query, authority, version, headers: [[name, value]…], body_len,
//!   body_base64, body_text}` (both null when the body was over 64 KiB; `body_text` also when it
//!   is not UTF-8). It shows credentials as received. `DELETE` clears it.
//! - `POST /_simulator/faults` with `{method?, path_prefix, status, headers?: [[name, value]…],
//!   body?, times? (default 1)}`: the next `times` requests whose method and path prefix match get
//!   exactly that answer (plus `X-Request-Id`). `DELETE` drops every pending fault.
//! - `POST /_simulator/echo`: streams the request body through SHA-256 without buffering it and
//!   answers `{"bytes": N, "sha256": "<hex>"}`.
//! - `GET /_simulator/blob?bytes=N`: N bytes where byte `i` is `i % 251`, generated as they are
//!   sent, with `Content-Length`.
//! - `POST /_simulator/api-keys` with `{owner, resource? (default "cloud"), environment?,
//!   display_name?, description?, created_at?, count? (default 1)}`: creates keys "behind
//!   keygate's back", as the Cloud Console or a direct API call would, and answers 201
//!   `{"keys": [{"id", "secret"}…]}`. `DELETE /_simulator/api-keys/{id}` deletes one (204, or 404).
//! - `POST /_simulator/stall` with `{method?, path_prefix, times? (default 1)}`: the next `times`
//!   matching requests are carried out (a create creates its key) but their answers are held back
//!   until `DELETE /_simulator/stall` — an upstream that acted and has not answered yet.
//!
//! The log records every request except those to `/_simulator/requests` and
//! `/_simulator/faults` (so reading the log does not change it), as received: method,
//! path-and-query, URI authority (HTTP/2 `:authority`), HTTP version, every header name and value,
//! body length, and the body itself when at most 64 KiB. It keeps the newest
//! [`MAX_LOGGED_REQUESTS`] entries. Faults never apply to those two control paths either.

mod body;
mod render;
mod routes;
mod secret;
mod seed;
mod session;
mod store;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use seed::Seed;

use secret::Minter;
use store::Store;

/// Base of absolute links and `Location` headers unless [`Simulator::set_public_base`] says
/// otherwise: the real API's, so responses look exactly like Confluent's.
pub const DEFAULT_PUBLIC_BASE: &str = "https://api.confluent.cloud";

/// Request-log capacity; the oldest entries go first, so a long `keygate dev` session stays
/// bounded in memory.
pub const MAX_LOGGED_REQUESTS: usize = 10_000;

/// Length of the informational rate-limit window reported in `X-RateLimit-Reset`.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Requests per window reported in `X-RateLimit-Limit` (not enforced).
const RATE_LIMIT: u64 = 1_000;

/// How long `serve` waits for in-flight connections after `shutdown` resolves.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// A TLS handshake that takes longer than this is abandoned.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Errors of the simulator's setup (loading a seed). Requests never fail with these.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// The seed file could not be read.
    #[error("seed `{path}`: cannot read: {source}")]
    ReadSeed {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The seed file is not valid TOML or does not match the seed schema.
    #[error("seed `{path}`: line {line}: {message}")]
    ParseSeed {
        path: String,
        line: usize,
        message: String,
    },
    /// The seed parsed but is inconsistent (dangling reference, duplicate id, bad secret …).
    #[error("seed `{path}`: {reason}")]
    InvalidSeed { path: String, reason: String },
}

/// One request as the simulator received it.
#[derive(Clone)]
pub struct RecordedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The request target's path and query, exactly as received.
    pub path_and_query: String,
    /// The URI authority (HTTP/2 `:authority`, or an absolute-form HTTP/1 target); HTTP/1
    /// requests normally carry theirs in the `host` header instead.
    pub authority: Option<String>,
    /// `HTTP/1.1`, `HTTP/2.0`, …
    pub version: String,
    /// Every header, in received order per name; names are lower case.
    pub headers: Vec<(String, String)>,
    /// Length of the whole body.
    pub body_len: u64,
    /// The body, when it was at most 64 KiB.
    pub body: Option<Vec<u8>>,
}

impl RecordedRequest {
    /// Values of header `name` (case-insensitive), in received order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Headers whose values are credentials; `Debug` masks them.
const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let sensitive = SENSITIVE_HEADERS.iter().any(|s| n.eq_ignore_ascii_case(s));
                (
                    n.as_str(),
                    if sensitive {
                        "**REDACTED**"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path_and_query", &self.path_and_query)
            .field("authority", &self.authority)
            .field("version", &self.version)
            .field("headers", &headers)
            .field("body_len", &self.body_len)
            .finish_non_exhaustive()
    }
}

/// A scripted answer: the next `times` requests whose method (any, when `None`) and path prefix
/// match get exactly this status, these headers and this body (plus `X-Request-Id`, and the
/// `X-RateLimit-*` headers on a 2xx unless given), before authentication or routing. The request
/// is still logged. Use it for 429s, 5xx, or odd bodies.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Only requests with this method match; `None` matches any.
    pub method: Option<Method>,
    /// Requests whose path (without the query) starts with this match, e.g. `/iam/v2/api-keys`.
    pub path_prefix: String,
    /// The status to answer with (an invalid code becomes 500).
    pub status: u16,
    /// Headers to answer with, in order (invalid ones are skipped).
    pub headers: Vec<(String, String)>,
    /// The body, sent verbatim; no `Content-Type` is added.
    pub body: String,
    /// How many matching requests get this answer; 0 makes the fault a no-op.
    pub times: u32,
}

/// Answers to hold back: the next `times` requests whose method (any, when `None`) and path prefix
/// match are carried out, and their answers wait until [`Simulator::release_stalled`].
#[derive(Clone, Debug)]
pub struct Stall {
    /// Only requests with this method match; `None` matches any.
    pub method: Option<Method>,
    /// Requests whose path starts with this match.
    pub path_prefix: String,
    /// How many matching requests are held.
    pub times: u32,
}

/// An API key created directly in the simulated organisation, bypassing keygate (what the Cloud
/// Console or a direct API call does).
#[derive(Clone, Debug)]
pub struct DirectKey {
    /// `u-…` or `sa-…` (must exist).
    pub owner: String,
    /// `cloud`, `global`, `tableflow`, a cluster id, or a Flink region (with `environment`).
    pub resource: String,
    /// The environment of a Flink key.
    pub environment: Option<String>,
    /// `spec.display_name`.
    pub display_name: String,
    /// `spec.description`.
    pub description: String,
    /// `metadata.created_at` (RFC 3339); now when `None`.
    pub created_at: Option<String>,
}

impl DirectKey {
    /// A key of `owner` for `resource`, created now, without name or description.
    pub fn new(owner: &str, resource: &str) -> Self {
        DirectKey {
            owner: owner.to_owned(),
            resource: resource.to_owned(),
            environment: None,
            display_name: String::new(),
            description: String::new(),
            created_at: None,
        }
    }
}

/// A key created by [`Simulator::create_keys_directly`]: its id and its secret.
#[derive(Clone)]
pub struct CreatedKey {
    /// The key id.
    pub id: String,
    /// The secret (shown once, as Confluent does).
    pub secret: String,
}

impl fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedKey")
            .field("id", &self.id)
            .field("secret", &"**REDACTED**")
            .finish()
    }
}

/// A seeded Cloud or Global API key, for the `keygate dev` banner.
#[derive(Clone)]
pub struct DemoKey {
    /// `u-…` or `sa-…`.
    pub principal_id: String,
    /// The owner's full name (users) or display name (service accounts).
    pub display_name: String,
    pub key_id: String,
    pub secret: String,
}

impl fmt::Debug for DemoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoKey")
            .field("principal_id", &self.principal_id)
            .field("display_name", &self.display_name)
            .field("key_id", &self.key_id)
            .field("secret", &"**REDACTED**")
            .finish()
    }
}

/// The simulated Confluent Cloud organisation and everything observable about its traffic.
/// Shared across connections behind an `Arc`; all state sits behind short-lived locks.
pub struct Simulator {
    org_id: String,
    public_base: RwLock<String>,
    lenient_paths: std::sync::atomic::AtomicBool,
    store: Mutex<Store>,
    log: Mutex<VecDeque<RecordedRequest>>,
    faults: Mutex<Vec<Fault>>,
    stalls: Mutex<Vec<Stall>>,
    /// Bumped by [`Simulator::release_stalled`]; a held answer waits for a later value.
    released: tokio::sync::watch::Sender<u64>,
    /// Answers held back right now.
    held: tokio::sync::watch::Sender<usize>,
    rate: Mutex<RateWindow>,
    minter: Minter,
    demo_keys: Vec<DemoKey>,
    sessions: session::Sessions,
}

struct RateWindow {
    started: Instant,
    used: u64,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("org_id", &self.org_id)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, carrying on after a panic elsewhere: every critical section leaves the state
/// consistent, so a poisoned lock holds nothing half-written.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl Simulator ===

impl Simulator {
    /// A simulator whose organisation starts as `seed` describes.
    pub fn new(seed: Seed) -> Self {
        let store = Store::from_seed(&seed);
        let demo_keys = seed
            .api_keys
            .iter()
            .filter(|k| matches!(k.resource.as_str(), "cloud" | "global"))
            .map(|k| DemoKey {
                principal_id: k.owner.clone(),
                display_name: store.identity_name(&k.owner).unwrap_or_default().to_owned(),
                key_id: k.id.clone(),
                secret: k.secret.clone(),
            })
            .collect();
        Self {
            org_id: seed.org_id.clone(),
            public_base: RwLock::new(DEFAULT_PUBLIC_BASE.to_owned()),
            lenient_paths: std::sync::atomic::AtomicBool::new(false),
            store: Mutex::new(store),
            log: Mutex::new(VecDeque::new()),
            faults: Mutex::new(Vec::new()),
            stalls: Mutex::new(Vec::new()),
            released: tokio::sync::watch::Sender::new(0),
            held: tokio::sync::watch::Sender::new(0),
            rate: Mutex::new(RateWindow {
                started: Instant::now(),
                used: 0,
            }),
            minter: Minter::new(),
            demo_keys,
            sessions: session::Sessions::new(),
        }
    }

    /// Sets the base of absolute links (`metadata.self`, `first`, `next`, `Location`), e.g.
    /// `http://127.0.0.1:8081`; a trailing `/` is ignored.
    pub fn set_public_base(&self, base: &str) {
        let mut current = self
            .public_base
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *current = base.trim_end_matches('/').to_owned();
    }

    /// Makes the simulator route paths as leniently as any HTTP stack might (percent-decoded
    /// until stable, overlong UTF-8 and full-width forms read as ASCII, dot segments resolved,
    /// whitespace trimmed, any case): the upstream an attacker hopes for, to show that what keygate
    /// refuses would otherwise have been acted on.
    pub fn set_lenient_paths(&self, lenient: bool) {
        self.lenient_paths
            .store(lenient, std::sync::atomic::Ordering::Relaxed);
    }

    fn lenient_paths(&self) -> bool {
        self.lenient_paths
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A snapshot of the request log, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.log).iter().cloned().collect()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        lock(&self.log).clear();
    }

    /// Queues a fault; faults are tried in the order they were injected.
    pub fn inject_fault(&self, fault: Fault) {
        if fault.times > 0 {
            lock(&self.faults).push(fault);
        }
    }

    /// Drops every pending fault.
    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    /// Holds back the answers of the next matching requests (see [`Stall`]).
    pub fn stall(&self, stall: Stall) {
        if stall.times > 0 {
            lock(&self.stalls).push(stall);
        }
    }

    /// Sends every held answer and drops the pending stalls.
    pub fn release_stalled(&self) {
        lock(&self.stalls).clear();
        self.released.send_modify(|generation| *generation += 1);
    }

    /// Waits until at least `n` answers are being held back.
    pub async fn stalled(&self, n: usize) {
        let mut held = self.held.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = held.wait_for(|held| *held >= n).await;
    }

    /// Creates `count` API keys directly, bypassing keygate, as the Cloud Console would. Each
    /// gets a fresh id and secret; the error names what does not exist.
    pub fn create_keys_directly(
        &self,
        spec: &DirectKey,
        count: usize,
    ) -> Result<Vec<CreatedKey>, String> {
        let mut store = self.store();
        if !store.identity_exists(&spec.owner) {
            return Err(format!("owner `{}` does not exist", spec.owner));
        }
        let resource = store
            .resolve_resource(&spec.resource, spec.environment.as_deref())
            .map_err(|_| format!("resource `{}` does not exist", spec.resource))?;
        let created_at = match &spec.created_at {
            Some(at) => {
                humantime::parse_rfc3339_weak(at)
                    .map_err(|_| format!("created_at `{at}` is not an RFC 3339 time"))?;
                at.clone()
            }
            None => store::now(),
        };
        let mut created = Vec::with_capacity(count);
        for _ in 0..count {
            let id = loop {
                let id = self.minter.key_id().map_err(|_| "no randomness")?;
                if !store.api_keys.contains_key(&id) {
                    break id;
                }
            };
            let secret = self.minter.secret().map_err(|_| "no randomness")?;
            store.api_keys.insert(
                id.clone(),
                store::ApiKey {
                    id: id.clone(),
                    digest: secret::SecretDigest::of(&secret),
                    owner: spec.owner.clone(),
                    resource: resource.clone(),
                    display_name: spec.display_name.clone(),
                    description: spec.description.clone(),
                    created_at: created_at.clone(),
                    updated_at: created_at.clone(),
                },
            );
            created.push(CreatedKey { id, secret });
        }
        Ok(created)
    }

    /// Deletes an API key directly, bypassing keygate. Returns whether it existed.
    pub fn delete_key_directly(&self, id: &str) -> bool {
        self.store().api_keys.remove(id).is_some()
    }

    /// The ids of every API key in the organisation, sorted.
    pub fn api_key_ids(&self) -> Vec<String> {
        self.store().api_keys.keys().cloned().collect()
    }

    /// The seeded Cloud and Global keys with their secrets, for the `keygate dev` banner.
    pub fn demo_keys(&self) -> Vec<DemoKey> {
        self.demo_keys.clone()
    }

    /// The organisation id (a UUID).
    pub fn org_id(&self) -> &str {
        &self.org_id
    }

    /// Answers one request in-process (what `serve` does per request).
    pub(crate) async fn handle<B>(&self, req: Request<B>) -> Response<body::SimBody>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
    {
        routes::handle(self, req).await
    }

    fn public_base(&self) -> String {
        self.public_base
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    fn record(&self, request: RecordedRequest) {
        let mut log = lock(&self.log);
        if log.len() >= MAX_LOGGED_REQUESTS {
            log.pop_front();
        }
        log.push_back(request);
    }

    /// Takes one use of the first pending fault matching `method` and `path`.
    fn take_fault(&self, method: &Method, path: &str) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let index = faults.iter().position(|f| {
            f.method.as_ref().is_none_or(|m| m == method) && path.starts_with(&f.path_prefix)
        })?;
        let fault = faults.get_mut(index)?;
        fault.times -= 1;
        let taken = fault.clone();
        if fault.times == 0 {
            faults.remove(index);
        }
        Some(taken)
    }

    /// Takes one use of the first pending stall matching `method` and `path`.
    fn take_stall(&self, method: &Method, path: &str) -> bool {
        let mut stalls = lock(&self.stalls);
        let Some(index) = stalls.iter().position(|s| {
            s.method.as_ref().is_none_or(|m| m == method) && path.starts_with(&s.path_prefix)
        }) else {
            return false;
        };
        if let Some(stall) = stalls.get_mut(index) {
            stall.times -= 1;
            if stall.times == 0 {
                stalls.remove(index);
            }
        }
        true
    }

    /// Holds an answer back until the next [`Simulator::release_stalled`].
    async fn hold(&self) {
        let mut released = self.released.subscribe();
        let generation = *released.borrow_and_update();
        self.held.send_modify(|held| *held += 1);
        let _ = released.wait_for(|g| *g > generation).await;
        self.held.send_modify(|held| *held -= 1);
    }

    /// Counts a successful request in the informational rate window; returns the values of
    /// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (relative seconds, docs/confluent-api.md §3).
    fn rate_tick(&self) -> (u64, u64, u64) {
        let mut window = lock(&self.rate);
        let now = Instant::now();
        if now.duration_since(window.started) >= RATE_WINDOW {
            window.started = now;
            window.used = 0;
        }
        window.used += 1;
        let reset = RATE_WINDOW
            .saturating_sub(now.duration_since(window.started))
            .as_secs()
            .max(1);
        (RATE_LIMIT, RATE_LIMIT.saturating_sub(window.used), reset)
    }
}

// === serve ===

/// Serves `sim` on `listener` until `shutdown` resolves, then lets in-flight connections finish
/// (for at most a few seconds). Speaks HTTP/1.1 and HTTP/2 (h2c with prior knowledge on plain
/// TCP); with `tls`, offers ALPN `h2` and `http/1.1` unless the config already names protocols.
pub async fn serve(
    listener: TcpListener,
    sim: Arc<Simulator>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(|config| {
        let mut config = (*config).clone();
        if config.alpn_protocols.is_empty() {
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        }
        TlsAcceptor::from(Arc::new(config))
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "Simulator accept failed; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
                Err(e) => return Err(e),
            },
            () = &mut shutdown => break,
        };
        // Nagle only adds latency to small request/response exchanges.
        let _ = stream.set_nodelay(true);
        let sim = Arc::clone(&sim);
        let service = service_fn(move |req| {
            let sim = Arc::clone(&sim);
            async move { Ok::<_, Infallible>(sim.handle(req).await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let result = match acceptor {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(tls)) => {
                            let conn = builder.serve_connection(TokioIo::new(tls), service);
                            watcher.watch(conn).await
                        }
                        Ok(Err(e)) => Err(e.into()),
                        Err(elapsed) => Err(elapsed.into()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "Simulator connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("Simulator drain timed out");
    }
    Ok(())
}

/// Accept errors that concern one connection or a momentary shortage, not the listener.
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted
            | ConnectionReset
            | ConnectionRefused
            | Interrupted
            | WouldBlock
            | TimedOut
    ) || matches!(e.raw_os_error(), Some(12 | 23 | 24 | 105)) // ENOMEM, ENFILE, EMFILE, ENOBUFS
}
