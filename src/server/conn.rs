//! One downstream connection, from `accept` to close, under one deadline.
//!
//! The deadline starts at `accept`: the first request head must be complete within
//! `header_read_timeout`, whatever comes before it (the client's first bytes, the TLS handshake,
//! HTTP/2 detection and preface, the first HEADERS). A request is in flight from the moment its
//! head is complete (the service is called) until its response body is finished, and is never cut
//! by these deadlines. Between requests the connection may wait `idle_timeout` for the next one;
//! once the bytes of a later HTTP/1.1 head start to arrive, that head has `header_read_timeout`.
//! HTTP/2 connections also get keep-alive PINGs (closed when unanswered), and an idle one is sent
//! GOAWAY at its deadline.
//!
//! Memory: until a connection sends its first bytes it holds only the socket and this task, no
//! TLS state and no HTTP buffers. An HTTP/1.1 connection idle for a moment ([`PARK_AFTER`]) is
//! *parked*: hyper's connection (its read and write buffers, about 16 KiB) is taken apart and
//! only the socket (and TLS session) is kept; a new hyper connection is made when the next request
//! arrives. hyper cannot release its buffers itself, and a keep-alive connection spends most of
//! its life waiting.
//!
//! The listener's close requests (evict, drain, force; see `limit.rs`) reach the task through
//! its [`ConnState`].

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::Service;

use super::io::{CloseRequest, ConnIo, ConnState, InFlight, Socket};
use super::limit::Slot;
use super::{ConnSettings, Handshake, Handshaken};
use crate::body::Body;
use crate::state::PeerAddr;

/// How long an HTTP/1.1 connection stays idle with hyper's buffers before it is parked (at most
/// a quarter of the idle timeout). Long enough that a client sending request after request
/// never pays for a new hyper connection; short, so that a burst of connections going idle
/// does not hold their buffers (some 30 KiB each) for long.
pub const PARK_AFTER: Duration = Duration::from_millis(100);
/// How long an HTTP/2 connection sent GOAWAY at its idle deadline (or on eviction) may take to
/// close before it is dropped.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);
/// The HTTP/2 connection preface (RFC 9113 §3.4); anything else is HTTP/1.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What every connection of a listener shares.
pub(super) struct Shared<S> {
    service: S,
    tls: Option<TlsAcceptor>,
    handshake: Option<Arc<dyn Handshake>>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    settings: ConnSettings,
    park_after: Duration,
}

impl<S> Shared<S> {
    pub(super) fn new(service: S, tls: Option<TlsAcceptor>, settings: ConnSettings) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            // The deadlines are this module's: hyper's own header timer would also start at
            // every keep-alive wait.
            .header_read_timeout(None)
            .max_buf_size(settings.max_header_bytes.max(8192))
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(settings.h2_keep_alive_interval)
            .keep_alive_timeout(settings.h2_keep_alive_timeout);
        Shared {
            service,
            tls,
            handshake: None,
            http1,
            http2,
            park_after: PARK_AFTER.min(settings.idle_timeout / 4),
            settings,
        }
    }

    /// Starts every connection with `handshake` (instead of plain or TLS).
    pub(super) fn with_handshake(mut self, handshake: Option<Arc<dyn Handshake>>) -> Self {
        self.handshake = handshake;
        self
    }
}

/// The downstream peer, and what the listener adds to every request of the connection.
#[derive(Clone)]
pub(super) struct Peer {
    addr: SocketAddr,
    extensions: Option<Arc<http::Extensions>>,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

/// Serves one accepted connection until it closes; `slot` is given back then.
pub(super) async fn run<S, B>(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared<S>>,
    slot: Slot,
) where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let state = Arc::clone(slot.state());
    let peer = Peer {
        addr: peer,
        extensions: None,
    };
    let deadline =
        tokio::time::sleep_until(state.idle_since() + shared.settings.header_read_timeout);
    tokio::pin!(deadline);
    // Nothing is allocated for a connection until it sends something.
    match until(stream.readable(), &state, deadline.as_mut()).await {
        Some(Ok(())) => {}
        Some(Err(_)) => return,
        None => {
            tracing::debug!(peer = %peer, "Connection closed before it sent anything");
            return;
        }
    }
    // Boxed: the task's own future stays small for as long as the connection is silent, and the
    // TLS state machine (a kilobyte or more) costs only TLS connections.
    match (&shared.handshake, &shared.tls) {
        (Some(handshake), _) => {
            Box::pin(serve_handshaken(
                stream,
                handshake.as_ref(),
                &shared,
                &state,
                peer,
                deadline.as_mut(),
            ))
            .await
        }
        (None, None) => {
            Box::pin(serve(
                stream,
                None,
                &shared,
                &state,
                &peer,
                deadline.as_mut(),
            ))
            .await
        }
        (None, Some(acceptor)) => {
            Box::pin(serve_tls(
                stream,
                acceptor,
                &shared,
                &state,
                &peer,
                deadline.as_mut(),
            ))
            .await;
        }
    }
    drop(slot);
}

/// The listener's own handshake (under the connection's deadline), then HTTP on the stream it
/// hands back, or the connection it took over until that ends.
async fn serve_handshaken<S, B>(
    stream: TcpStream,
    handshake: &dyn Handshake,
    shared: &Arc<Shared<S>>,
    state: &Arc<ConnState>,
    mut peer: Peer,
    mut deadline: Pin<&mut Sleep>,
) where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let handshaken = match until(
        handshake.handshake(stream, peer.addr),
        state,
        deadline.as_mut(),
    )
    .await
    {
        Some(handshaken) => handshaken,
        None => {
            tracing::debug!(peer = %peer, "Handshake not complete in time");
            return;
        }
    };
    match handshaken {
        Handshaken::Closed => {}
        Handshaken::Serve { stream, extensions } => {
            let alpn = stream
                .get_ref()
                .1
                .alpn_protocol()
                .map(|protocol| protocol == b"h2");
            peer.extensions = Some(extensions);
            serve(*stream, alpn, shared, state, &peer, deadline).await;
        }
        Handshaken::Detached(taken) => {
            // Busy for as long as it runs: never evicted, drained only by force.
            let _busy = state.start_request();
            tokio::pin!(taken);
            loop {
                tokio::select! {
                    biased;
                    () = state.notify.notified() => {
                        if state.close_request() == CloseRequest::Force {
                            return;
                        }
                    }
                    () = &mut taken => return,
                }
            }
        }
    }
}

/// The TLS handshake (under the connection's deadline), then HTTP as ALPN says.
async fn serve_tls<S, B>(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    shared: &Arc<Shared<S>>,
    state: &Arc<ConnState>,
    peer: &Peer,
    mut deadline: Pin<&mut Sleep>,
) where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = match until(acceptor.accept(stream), state, deadline.as_mut()).await {
        Some(Ok(stream)) => stream,
        Some(Err(err)) => {
            tracing::debug!(peer = %peer, error = %err, "TLS handshake failed");
            return;
        }
        None => {
            tracing::debug!(peer = %peer, "TLS handshake not complete in time");
            return;
        }
    };
    let alpn = stream
        .get_ref()
        .1
        .alpn_protocol()
        .map(|protocol| protocol == b"h2");
    // A client certificate rustls verified (`identity::mtls`) goes with every request of the
    // connection.
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.clone().into_owned());
    match leaf {
        Some(leaf) => {
            let mut extensions = match &peer.extensions {
                Some(existing) => (**existing).clone(),
                None => http::Extensions::new(),
            };
            extensions.insert(crate::identity::mtls::ClientCertificate(Arc::new(leaf)));
            let peer = Peer {
                addr: peer.addr,
                extensions: Some(Arc::new(extensions)),
            };
            serve(stream, alpn, shared, state, &peer, deadline).await;
        }
        None => serve(stream, alpn, shared, state, peer, deadline).await,
    }
}

/// `future`'s output, or `None` when the deadline passes or the listener asks the connection to
/// close first.
async fn until<F: Future>(
    future: F,
    state: &ConnState,
    mut deadline: Pin<&mut Sleep>,
) -> Option<F::Output> {
    tokio::pin!(future);
    loop {
        if state.close_request() != CloseRequest::None {
            return None;
        }
        tokio::select! {
            biased;
            () = state.notify.notified() => {}
            output = &mut future => return Some(output),
            () = deadline.as_mut() => return None,
        }
    }
}

/// Reads until the bytes are the HTTP/2 preface or cannot be: (the bytes read, whether HTTP/2).
async fn detect<T: Socket>(
    io: &mut T,
    state: &ConnState,
    mut deadline: Pin<&mut Sleep>,
) -> Option<(Bytes, bool)> {
    let mut read = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    loop {
        match until(io.read(&mut read[n..]), state, deadline.as_mut()).await? {
            Ok(0) | Err(_) => return None,
            Ok(k) => n += k,
        }
        if read[..n] != H2_PREFACE[..n] {
            return Some((Bytes::copy_from_slice(&read[..n]), false));
        }
        if n == H2_PREFACE.len() {
            return Some((Bytes::copy_from_slice(&read), true));
        }
    }
}

/// Serves `io` as HTTP/2 when `alpn` says so or (without ALPN) the client sends the preface.
async fn serve<S, B, T>(
    mut io: T,
    alpn: Option<bool>,
    shared: &Arc<Shared<S>>,
    state: &Arc<ConnState>,
    peer: &Peer,
    mut deadline: Pin<&mut Sleep>,
) where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T: Socket,
{
    let (prefix, h2) = match alpn {
        Some(h2) => (Bytes::new(), h2),
        None => match detect(&mut io, state, deadline.as_mut()).await {
            Some(detected) => detected,
            None => {
                tracing::debug!(peer = %peer, "Connection closed before its protocol was known");
                return;
            }
        },
    };
    if h2 {
        serve_h2(io, prefix, shared, state, peer, deadline).await;
    } else {
        serve_h1(io, prefix, shared, state, peer, deadline).await;
    }
}

/// What the HTTP/1.1 connection's deadline found.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    /// A deadline passed with nothing in flight: close.
    Expired,
    /// Idle long enough: park.
    Park,
    /// Nothing yet; look again then.
    At(Instant),
}

/// What woke an HTTP/1.1 connection's task.
enum H1Event {
    /// hyper's connection ended (or let go of an idle connection being parked).
    Ended(hyper::Result<()>),
    /// The listener asked the connection to close.
    CloseRequested,
    /// The timer fired.
    Deadline,
}

/// The HTTP/1.1 deadlines at `now`; `served` requests were started before the current hyper
/// connection was made (it may only be parked once it has completed one of its own).
fn h1_due(
    state: &ConnState,
    settings: &ConnSettings,
    park_after: Duration,
    served: u32,
    now: Instant,
) -> Due {
    if state.in_flight() > 0 {
        // The task looks again when the response has finished.
        return Due::At(now + settings.idle_timeout);
    }
    let requests = state.requests();
    let head = state.head_since();
    let expires = match head {
        // The first head is timed from the accept.
        _ if requests == 0 => state.idle_since() + settings.header_read_timeout,
        Some(head) => head + settings.header_read_timeout,
        None => state.idle_since() + settings.idle_timeout,
    };
    if now >= expires {
        return Due::Expired;
    }
    if requests > served && head.is_none() {
        let park = state.idle_since() + park_after;
        if now < park {
            return Due::At(park.min(expires));
        }
        if state.is_quiet() {
            return Due::Park;
        }
        return Due::At((now + park_after).min(expires));
    }
    Due::At(expires)
}

/// The HTTP/2 idle deadline at `now`: `None` when it passed with nothing in flight.
fn h2_due(state: &ConnState, settings: &ConnSettings, now: Instant) -> Option<Instant> {
    if state.in_flight() > 0 {
        return Some(now + settings.idle_timeout);
    }
    let expires = if state.requests() == 0 {
        state.idle_since() + settings.header_read_timeout
    } else {
        state.idle_since() + settings.idle_timeout
    };
    (now < expires).then_some(expires)
}

async fn serve_h1<S, B, T>(
    mut io: T,
    mut prefix: Bytes,
    shared: &Arc<Shared<S>>,
    state: &Arc<ConnState>,
    peer: &Peer,
    mut deadline: Pin<&mut Sleep>,
) where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T: Socket,
{
    let settings = &shared.settings;
    loop {
        let served = state.requests();
        // Boxed: the task keeps only a pointer while parked or waiting for first bytes.
        let mut conn = Box::new(shared.http1.serve_connection(
            TokioIo::new(ConnIo::new(io, prefix, Arc::clone(state))),
            ConnService::new(Arc::clone(shared), Arc::clone(state), peer.clone()),
        ));
        let mut closing = false;
        let mut seen = served;
        let notified = state.notify.notified();
        tokio::pin!(notified);
        let parked = loop {
            let event = poll_fn(|cx| {
                if let Poll::Ready(result) = Pin::new(&mut *conn).poll(cx) {
                    return Poll::Ready(H1Event::Ended(result));
                }
                // A response finished since the last look (they finish inside hyper's poll): the
                // connection may park `park_after` from now, likely before the timer fires. During
                // back-to-back requests the timer is already that close: no reset.
                let ended = state.requests().wrapping_sub(state.in_flight());
                if ended != seen {
                    seen = ended;
                    let park = state.idle_since() + shared.park_after;
                    if deadline.deadline() > park {
                        deadline.as_mut().reset(park);
                    }
                }
                // A later head is arriving (slowly, or it would be a request by now): it has the
                // header-read timeout, which may be sooner than the idle deadline.
                if let Some(head) = state.head_since() {
                    let due = head + settings.header_read_timeout;
                    if deadline.deadline() > due {
                        deadline.as_mut().reset(due);
                    }
                }
                if notified.as_mut().poll(cx).is_ready() {
                    notified.set(state.notify.notified());
                    return Poll::Ready(H1Event::CloseRequested);
                }
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(H1Event::Deadline);
                }
                Poll::Pending
            })
            .await;
            match event {
                H1Event::Ended(result) => {
                    if let Err(err) = &result {
                        tracing::debug!(peer = %peer, error = %err, "Connection ended with an error");
                    }
                    break result.is_ok() && state.is_parking();
                }
                H1Event::CloseRequested => match state.close_request() {
                    CloseRequest::Force => return,
                    CloseRequest::Evict if state.in_flight() == 0 => return,
                    CloseRequest::Evict | CloseRequest::Drain if !closing => {
                        // Idle: closes now; else after the response in flight.
                        closing = true;
                        Pin::new(&mut *conn).graceful_shutdown();
                    }
                    _ => {}
                },
                H1Event::Deadline => {
                    let now = Instant::now();
                    match h1_due(state, settings, shared.park_after, served, now) {
                        Due::Expired => {
                            tracing::debug!(peer = %peer, requests = state.requests(), "Connection deadline passed");
                            return;
                        }
                        Due::At(at) => deadline.as_mut().reset(at),
                        Due::Park if closing => {
                            deadline.as_mut().reset(now + settings.idle_timeout)
                        }
                        Due::Park => {
                            state.set_parking(true);
                            Pin::new(&mut *conn).graceful_shutdown();
                            match poll_fn(|cx| Poll::Ready(Pin::new(&mut *conn).poll(cx))).await {
                                Poll::Ready(Ok(())) => break true,
                                Poll::Ready(Err(err)) => {
                                    tracing::debug!(peer = %peer, error = %err, "Connection ended with an error");
                                    return;
                                }
                                Poll::Pending => {
                                    // hyper was not idle after all: it closes after this exchange.
                                    state.set_parking(false);
                                    closing = true;
                                    deadline.as_mut().reset(now + settings.idle_timeout);
                                }
                            }
                        }
                    }
                }
            }
        };
        if !parked {
            return;
        }
        state.set_parking(false);
        tracing::trace!(peer = %peer, requests = state.requests(), "Connection parked");
        let http1::Parts {
            io: parked,
            read_buf,
            ..
        } = conn.into_parts();
        io = parked.into_inner().into_inner();
        // The remainder shares hyper's whole read buffer (16 KiB after a keep-alive read): keep a
        // copy of what is left, never the buffer.
        prefix = if read_buf.is_empty() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(&read_buf)
        };
        drop(read_buf);
        if !prefix.is_empty() {
            // The next request had started to arrive: serve it right away.
            continue;
        }
        deadline
            .as_mut()
            .reset(state.idle_since() + settings.idle_timeout);
        match until(io.tcp().readable(), state, deadline.as_mut()).await {
            Some(Ok(())) => {}
            Some(Err(_)) | None => return,
        }
    }
}

async fn serve_h2<S, B, T>(
    io: T,
    prefix: Bytes,
    shared: &Arc<Shared<S>>,
    state: &Arc<ConnState>,
    peer: &Peer,
    mut deadline: Pin<&mut Sleep>,
) where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T: Socket,
{
    state.set_h2();
    let settings = &shared.settings;
    let mut conn = Box::pin(shared.http2.serve_connection(
        TokioIo::new(ConnIo::new(io, prefix, Arc::clone(state))),
        ConnService::new(Arc::clone(shared), Arc::clone(state), peer.clone()),
    ));
    // GOAWAY sent: for a drain the listener's grace period bounds the rest; for an idle or evicted
    // connection, GOAWAY_GRACE does.
    let mut goaway = false;
    let mut give_up = false;
    loop {
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(peer = %peer, error = %err, "Connection ended with an error");
                }
                return;
            }
            () = state.notify.notified() => match state.close_request() {
                CloseRequest::Force => return,
                CloseRequest::Evict if !goaway => {
                    goaway = true;
                    give_up = true;
                    conn.as_mut().graceful_shutdown();
                    deadline.as_mut().reset(Instant::now() + GOAWAY_GRACE);
                }
                CloseRequest::Drain if !goaway => {
                    goaway = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ => {}
            },
            () = deadline.as_mut() => {
                if give_up {
                    tracing::debug!(peer = %peer, "Connection not closed in time after GOAWAY");
                    return;
                }
                let now = Instant::now();
                match h2_due(state, settings, now) {
                    Some(at) => deadline.as_mut().reset(at),
                    None if goaway => {
                        give_up = true;
                        deadline.as_mut().reset(now + GOAWAY_GRACE);
                    }
                    None => {
                        tracing::debug!(peer = %peer, requests = state.requests(), "Connection deadline passed; GOAWAY");
                        goaway = true;
                        give_up = true;
                        conn.as_mut().graceful_shutdown();
                        if state.requests() == 0 {
                            // No request ever came: send the GOAWAY and close, without waiting for
                            // the peer.
                            let _ = poll_fn(|cx| Poll::Ready(conn.as_mut().poll(cx))).await;
                            return;
                        }
                        deadline.as_mut().reset(now + GOAWAY_GRACE);
                    }
                }
            }
        }
    }
}

// === impl ConnService ===

/// The listener's service for one connection: records each request in the [`ConnState`] and
/// hands it on with the peer address.
pub(super) struct ConnService<S> {
    shared: Arc<Shared<S>>,
    state: Arc<ConnState>,
    peer: Peer,
}

impl<S> ConnService<S> {
    fn new(shared: Arc<Shared<S>>, state: Arc<ConnState>, peer: Peer) -> Self {
        ConnService {
            shared,
            state,
            peer,
        }
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for ConnService<S>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone,
{
    type Response = Response<Tracked<B>>;
    type Error = Infallible;
    type Future = Counted<S::Future>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let guard = self.state.start_request();
        let mut request = request.map(Body::Incoming);
        if let Some(extensions) = &self.peer.extensions {
            request.extensions_mut().extend((**extensions).clone());
        }
        request.extensions_mut().insert(PeerAddr(self.peer.addr));
        let mut service = self.shared.service.clone();
        Counted {
            inner: service.call(request),
            guard: Some(guard),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's response future, holding its [`InFlight`] guard until the body takes it.
    pub(super) struct Counted<F> {
        #[pin]
        inner: F,
        guard: Option<InFlight>,
    }
}

impl<F, B> Future for Counted<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<Tracked<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| Tracked {
            inner,
            _guard: guard,
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until hyper is done with it.
    pub(super) struct Tracked<B> {
        #[pin]
        inner: B,
        _guard: Option<InFlight>,
    }
}

impl<B: http_body::Body> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ConnSettings {
        ConnSettings {
            header_read_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(60),
            ..ConnSettings::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn first_head_is_due_header_read_timeout_after_the_accept() {
        let settings = settings();
        let state = ConnState::new(Instant::now());
        // Kept in whole microseconds.
        let accepted = state.idle_since();
        let park = PARK_AFTER;
        assert_eq!(
            h1_due(
                &state,
                &settings,
                park,
                0,
                accepted + Duration::from_secs(1)
            ),
            Due::At(accepted + Duration::from_secs(3))
        );
        assert_eq!(
            h1_due(
                &state,
                &settings,
                park,
                0,
                accepted + Duration::from_secs(3)
            ),
            Due::Expired
        );
        assert_eq!(
            h2_due(&state, &settings, accepted + Duration::from_secs(3)),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_due() {
        let settings = settings();
        let state = ConnState::new(Instant::now());
        let accepted = state.idle_since();
        let _guard = state.start_request();
        let late = accepted + Duration::from_secs(3600);
        assert!(matches!(h1_due(&state, &settings, PARK_AFTER, 0, late), Due::At(at) if at > late));
        assert!(h2_due(&state, &settings, late).is_some_and(|at| at > late));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keep_alive_parks_then_expires_after_the_idle_timeout() {
        let settings = settings();
        let state = ConnState::new(Instant::now());
        drop(state.start_request());
        let idle = state.idle_since();
        // Served by this hyper connection, not quiet yet (hyper has not read since).
        assert_eq!(
            h1_due(&state, &settings, PARK_AFTER, 0, idle),
            Due::At(idle + PARK_AFTER)
        );
        assert_eq!(
            h1_due(&state, &settings, PARK_AFTER, 0, idle + PARK_AFTER),
            Due::At(idle + PARK_AFTER + PARK_AFTER)
        );
        // A hyper connection made after the park has served nothing: only the idle deadline.
        assert_eq!(
            h1_due(&state, &settings, PARK_AFTER, 1, idle + PARK_AFTER),
            Due::At(idle + Duration::from_secs(60))
        );
        assert_eq!(
            h1_due(
                &state,
                &settings,
                PARK_AFTER,
                1,
                idle + Duration::from_secs(60)
            ),
            Due::Expired
        );
        assert_eq!(
            h2_due(&state, &settings, idle + Duration::from_secs(59)),
            Some(idle + Duration::from_secs(60))
        );
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    async fn accepted(listener: &tokio::net::TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        (listener.accept().await.unwrap().0, client)
    }

    /// Every idle connection holds its task's future (and, once it spoke, the boxed serving
    /// future): they must stay small. (A kilobyte or two, where the TLS state machine alone is
    /// more; the bounds leave room for compiler differences.)
    #[tokio::test]
    async fn connection_futures_stay_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let service = tower::service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::Empty))
        });
        let shared = Arc::new(Shared::new(service, None, ConnSettings::default()));
        let connections = super::super::limit::Connections::new(10, None);
        let (stream, _client) = accepted(&listener).await;
        let peer = stream.peer_addr().unwrap();
        let slot = connections.admit(peer.ip(), Instant::now()).unwrap();
        let task = run(stream, peer, shared.clone(), slot);
        assert!(
            std::mem::size_of_val(&task) <= 1536,
            "{}",
            std::mem::size_of_val(&task)
        );

        let state = ConnState::new(Instant::now());
        let mut deadline = Box::pin(tokio::time::sleep(Duration::from_secs(1)));
        let (stream, _client) = accepted(&listener).await;
        let peer = Peer {
            addr: peer,
            extensions: None,
        };
        let serving = serve(stream, None, &shared, &state, &peer, deadline.as_mut());
        assert!(
            std::mem::size_of_val(&serving) <= 2048,
            "{}",
            std::mem::size_of_val(&serving)
        );
    }
}
