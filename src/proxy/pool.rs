//! Connections to the upstream, kept alive between exchanges.
//!
//! There is one upstream, so there is no keyed pool: HTTP/1.1 connections wait in a LIFO idle
//! stack and carry one exchange at a time; a connection goes back on the stack when its response
//! body has been read to the end ([`UpstreamBody`]), and a response dropped half-read closes it.
//! When ALPN selects h2, one connection is shared by every request until it closes.
//!
//! Replaces hyper-util's legacy client on the forwarding path, which per exchange spawned a task to
//! return the connection, raced checkout against connect with a `select`, and hashed a pool key.
//! What it did that matters is kept: a request that a pooled connection gives back unsent (the
//! upstream closed it while idle) is retried on another connection; idle connections expire.
//!
//! Every response body ([`UpstreamBody`]) has an idle-read deadline: an upstream that stops
//! sending mid-body cannot pin a downstream connection (and an upstream one) forever; the body
//! fails with [`BodyIdleTimeout`] and the downstream response is aborted like a broken one.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::ServiceExt;

use crate::body::Body;

/// Why an exchange failed, before classification into a `ProxyError`.
#[derive(Debug)]
pub(super) enum SendError {
    /// TCP connect or TLS handshake (from the connector).
    Connect(Box<dyn StdError + Send + Sync>),
    /// HTTP handshake, writing the request or reading the response head.
    Http(hyper::Error),
    /// No response head within the request timeout.
    Timeout,
}

impl SendError {
    /// The error whose source chain describes the cause.
    pub(super) fn as_error(&self) -> &(dyn StdError + 'static) {
        match self {
            SendError::Connect(err) => err.as_ref(),
            SendError::Http(err) => err,
            SendError::Timeout => &TimedOut,
        }
    }
}

/// The error behind [`SendError::Timeout`].
#[derive(Debug, thiserror::Error)]
#[error("no response head within the request timeout")]
struct TimedOut;

/// The error of an upstream response body that sent nothing for the body idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream response body sent nothing for {0:?}")]
pub struct BodyIdleTimeout(pub Duration);

/// What hyper's `try_send_request` resolves to.
pub(super) type Exchanged =
    Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Body>>>;

/// A boxed exchange on the general path.
type GeneralSend<'a> = Pin<Box<dyn Future<Output = Result<Response<Body>, SendError>> + Send + 'a>>;

pin_project_lite::pin_project! {
    /// [`Pool::send`]'s future.
    #[project = PoolSendProj]
    pub(super) enum PoolSend<'a, E> {
        /// On a pooled HTTP/1.1 connection.
        Fast { #[pin] fast: FastSend<'a, E> },
        /// Anything else.
        General { general: GeneralSend<'a> },
    }
}

impl<E: Future<Output = Exchanged>> Future for PoolSend<'_, E> {
    type Output = Result<Response<Body>, SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            PoolSendProj::Fast { fast } => fast.poll(cx),
            PoolSendProj::General { general } => general.as_mut().poll(cx),
        }
    }
}

pin_project_lite::pin_project! {
    /// One exchange on a pooled HTTP/1.1 connection: the response head, or the connection's
    /// timer firing first; a request the connection hands back unsent goes to the general path.
    pub(super) struct FastSend<'a, E> {
        pool: &'a Arc<Pool>,
        #[pin]
        exchange: E,
        // `None` once the exchange has ended.
        conn: Option<H1>,
        retry: Option<GeneralSend<'a>>,
    }
}

impl<E: Future<Output = Exchanged>> Future for FastSend<'_, E> {
    type Output = Result<Response<Body>, SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(retry) = this.retry {
            return retry.as_mut().poll(cx);
        }
        let Some(conn) = this.conn.as_mut() else {
            // Polled after completion; nothing more will come.
            return Poll::Pending;
        };
        if let Poll::Ready(sent) = this.exchange.poll(cx) {
            let Some(conn) = this.conn.take() else {
                return Poll::Pending;
            };
            return match sent {
                Ok(response) => Poll::Ready(Ok(this.pool.h1_response(response, conn))),
                Err(mut err) => match err.take_message() {
                    Some(unsent) => {
                        let retry = this.retry.insert(this.pool.send_general(unsent, None));
                        retry.as_mut().poll(cx)
                    }
                    None => Poll::Ready(Err(SendError::Http(err.into_error()))),
                },
            };
        }
        match conn.timer.as_mut().poll(cx) {
            // The exchange is abandoned mid-way: the connection closes when `conn` is dropped.
            Poll::Ready(()) => {
                this.conn.take();
                Poll::Ready(Err(SendError::Timeout))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A connection ready for one request.
enum Conn {
    H1(H1),
    H2(http2::SendRequest<Body>),
}

/// An HTTP/1.1 connection and its request timer. The timer lives as long as the connection and is
/// re-armed for each exchange: moving a registered tokio timer's deadline later is one atomic
/// update, where a fresh `tokio::time::timeout` per request registers and deregisters a timer
/// under the driver's lock and reads the clock twice more.
struct H1 {
    sender: http1::SendRequest<Body>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl H1 {
    fn new(sender: http1::SendRequest<Body>) -> H1 {
        H1 {
            sender,
            timer: Box::pin(tokio::time::sleep_until(far_future())),
        }
    }
}

/// A deadline no exchange reaches, for a timer that is not armed yet.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

struct Idle {
    conn: H1,
    since: Instant,
}

/// The upstream's connections: idle HTTP/1.1 ones and the shared h2 one.
pub(super) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority/`, what the connector dials.
    target: Uri,
    scheme: Scheme,
    authority: Authority,
    /// `Host` for HTTP/1.1 (the authority without a default port).
    host: HeaderValue,
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<Option<http2::SendRequest<Body>>>,
    idle_timeout: Duration,
    max_idle: usize,
    /// The longest wait for a response head, connecting included.
    request_timeout: Duration,
    /// The longest wait for the next bytes of a response body.
    body_idle_timeout: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool dialing `scheme://authority` through `connector`. Inside a tokio runtime it also
    /// starts a task that closes connections idle for longer than `idle_timeout`.
    pub(super) fn new(
        connector: HttpsConnector<HttpConnector>,
        scheme: Scheme,
        authority: Authority,
        idle_timeout: Duration,
        max_idle: usize,
        request_timeout: Duration,
        body_idle_timeout: Duration,
    ) -> Arc<Pool> {
        let target = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_else(|_| Uri::from_static("/"));
        let pool = Arc::new(Pool {
            connector,
            target,
            host: host_header(&scheme, &authority),
            scheme,
            authority,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            idle_timeout,
            max_idle,
            request_timeout,
            body_idle_timeout,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reap(Arc::downgrade(&pool)));
        }
        pool
    }

    /// Sends `request` (its URI origin-form, `/path?query`) and returns the response head, waiting
    /// at most the request timeout for it; the body streams from the connection.
    ///
    /// The common case is a pooled HTTP/1.1 connection that is ready now: the request is queued
    /// on it here and [`FastSend`], a small hand-written future, waits for the answer or the
    /// connection's timer. Everything else (h2, connecting, waiting for readiness, retrying) takes
    /// the general path, boxed so its state stays out of line. (Every request's future embeds
    /// this one; as an `async fn` it kept the request and the exchange twice over, 3.3 KB.)
    pub(super) fn send(
        self: &Arc<Self>,
        request: Request<Body>,
    ) -> PoolSend<'_, impl Future<Output = Exchanged> + Send> {
        let mut conn = match self.checkout() {
            Some(Conn::H1(conn)) if conn.sender.is_ready() => conn,
            first => {
                return PoolSend::General {
                    general: self.send_general(request, first),
                }
            }
        };
        conn.timer
            .as_mut()
            .reset(tokio::time::Instant::now() + self.request_timeout);
        let exchange = conn.sender.try_send_request(self.h1_form(request));
        PoolSend::Fast {
            fast: FastSend {
                pool: self,
                exchange,
                conn: Some(conn),
                retry: None,
            },
        }
    }

    /// [`Pool::send_any`] under the request timeout, boxed whole: the general path's state (a
    /// connect, a tokio timer) stays out of the future of every request, which embeds `send`.
    fn send_general(
        self: &Arc<Self>,
        request: Request<Body>,
        first: Option<Conn>,
    ) -> GeneralSend<'_> {
        Box::pin(async move {
            match tokio::time::timeout(self.request_timeout, self.send_any(request, first)).await {
                Ok(sent) => sent,
                Err(_) => Err(SendError::Timeout),
            }
        })
    }

    /// The general path: on `first` (a pooled connection) if given, then on further pooled
    /// connections, then on a new one. Each pass takes a connection off the stack (or clears the
    /// h2 slot), so a request handed back unsent is retried at most once per pooled connection.
    async fn send_any(
        self: &Arc<Self>,
        mut request: Request<Body>,
        mut first: Option<Conn>,
    ) -> Result<Response<Body>, SendError> {
        loop {
            let (conn, pooled) = match first.take().or_else(|| self.checkout()) {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            let unsent = match conn {
                Conn::H1(mut conn) => {
                    if pooled && conn.sender.ready().await.is_err() {
                        continue;
                    }
                    match conn.sender.try_send_request(self.h1_form(request)).await {
                        Ok(response) => return Ok(self.h1_response(response, conn)),
                        Err(mut err) => match err.take_message() {
                            Some(unsent) if pooled => unsent,
                            _ => return Err(SendError::Http(err.into_error())),
                        },
                    }
                }
                Conn::H2(mut sender) => {
                    match sender.try_send_request(self.h2_form(request)).await {
                        Ok(response) => {
                            return Ok(response.map(|inner| {
                                Body::Upstream(UpstreamBody::new(
                                    inner,
                                    None,
                                    self.body_idle_timeout,
                                ))
                            }))
                        }
                        Err(mut err) => match err.take_message() {
                            Some(unsent) if pooled => {
                                *lock(&self.h2) = None;
                                unsent
                            }
                            _ => return Err(SendError::Http(err.into_error())),
                        },
                    }
                }
            };
            request = unsent;
        }
    }

    fn checkout(&self) -> Option<Conn> {
        if let Some(h2) = lock(&self.h2).as_ref() {
            if !h2.is_closed() {
                return Some(Conn::H2(h2.clone()));
            }
        }
        let mut idle = lock(&self.idle);
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() > self.idle_timeout {
                // The stack is ordered by age: everything below is older still.
                idle.clear();
                break;
            }
            if !entry.conn.sender.is_closed() {
                return Some(Conn::H1(entry.conn));
            }
        }
        None
    }

    /// Returns a connection whose exchange is complete to the idle stack.
    fn put(&self, conn: H1) {
        if conn.sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < self.max_idle {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let stream = self
            .connector
            .clone()
            .oneshot(self.target.clone())
            .await
            .map_err(SendError::Connect)?;
        if stream.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(stream)
                .await
                .map_err(SendError::Http)?;
            drive(connection);
            *lock(&self.h2) = Some(sender.clone());
            Ok(Conn::H2(sender))
        } else {
            let (sender, connection) = http1::Builder::new()
                .handshake(stream)
                .await
                .map_err(SendError::Http)?;
            drive(connection);
            Ok(Conn::H1(H1::new(sender)))
        }
    }

    /// HTTP/1.1 sends the origin-form URI as it is, and wants a `Host` header.
    fn h1_form(&self, mut request: Request<Body>) -> Request<Body> {
        request.headers_mut().insert(HOST, self.host.clone());
        request
    }

    /// h2 wants an absolute URI (`:scheme`, `:authority`) and no `Host`. A request handed back
    /// unsent by an HTTP/1.1 connection arrives here with its `Host` set.
    fn h2_form(&self, mut request: Request<Body>) -> Request<Body> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(
            request
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        request.headers_mut().remove(HOST);
        request
    }

    /// The longest wait for a response head.
    pub(super) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The upstream authority (what `Host` or `:authority` becomes).
    pub(super) fn authority(&self) -> &Authority {
        &self.authority
    }

    fn h1_response(self: &Arc<Self>, response: Response<Incoming>, conn: H1) -> Response<Body> {
        response.map(|inner| {
            let mut body = UpstreamBody::new(
                inner,
                Some((Arc::clone(self), conn)),
                self.body_idle_timeout,
            );
            body.release_if_done();
            Body::Upstream(body)
        })
    }
}

/// Runs a connection's I/O until it closes (its senders dropped, or the upstream hung up).
fn drive(connection: impl Future<Output = hyper::Result<()>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "upstream connection ended");
        }
    });
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values stay consistent whatever a panicking holder did (push/pop/replace).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn host_header(scheme: &Scheme, authority: &Authority) -> HeaderValue {
    let default_port = match scheme.as_str() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    let host = if authority.port_u16().is_some() && authority.port_u16() == default_port {
        authority.host()
    } else {
        authority.as_str()
    };
    HeaderValue::from_str(host).unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

/// Closes idle connections past the idle timeout, until the pool is gone.
async fn reap(pool: Weak<Pool>) {
    let period = match pool.upgrade() {
        Some(pool) => (pool.idle_timeout / 2).max(Duration::from_millis(100)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let timeout = pool.idle_timeout;
        lock(&pool.idle).retain(|e| e.since.elapsed() <= timeout && !e.conn.sender.is_closed());
    }
}

/// An upstream response body with an idle-read deadline; over HTTP/1.1 it returns its connection
/// to the pool once read to the end.
pub struct UpstreamBody {
    inner: Incoming,
    home: Option<(Arc<Pool>, H1)>,
    /// The deadline's timer when there is no HTTP/1.1 connection to lend its own; made on the
    /// first wait.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    idle_timeout: Duration,
    /// The timer is armed for the current wait (reset when bytes arrive).
    waiting: bool,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("inner", &self.inner)
            .field("pooled", &self.home.is_some())
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl UpstreamBody {
    fn new(inner: Incoming, home: Option<(Arc<Pool>, H1)>, idle_timeout: Duration) -> Self {
        UpstreamBody {
            inner,
            home,
            timer: None,
            idle_timeout,
            waiting: false,
        }
    }

    /// Returns the connection to the pool (once).
    fn release(&mut self) {
        if let Some((pool, conn)) = self.home.take() {
            pool.put(conn);
        }
    }

    fn release_if_done(&mut self) {
        if http_body::Body::is_end_stream(&self.inner) {
            self.release();
        }
    }

    /// Whether the current wait for bytes has lasted the idle timeout. The first wait arms the
    /// timer (the HTTP/1.1 connection's request timer, free once the head arrived); bytes that
    /// arrive disarm it, so a body that streams without pause never reads the clock.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let mut timer = match &mut self.home {
            Some((_, conn)) => conn.timer.as_mut(),
            None => self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(far_future())))
                .as_mut(),
        };
        if !self.waiting {
            self.waiting = true;
            timer
                .as_mut()
                .reset(tokio::time::Instant::now() + self.idle_timeout);
        }
        timer.poll(cx).is_ready()
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::body::BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                this.release_if_done();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                // A broken body leaves the connection unusable: it closes with `home`.
                this.home = None;
                Poll::Ready(Some(Err(err.into())))
            }
            Poll::Pending => {
                if this.idle_expired(cx) {
                    // The exchange is abandoned: the connection closes with `home`, and the
                    // stream is reset when `inner` is dropped.
                    this.home = None;
                    return Poll::Ready(Some(Err(Box::new(BodyIdleTimeout(this.idle_timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
