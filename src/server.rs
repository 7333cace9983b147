//! Downstream listeners: TCP or TLS accept, HTTP/1.1 and HTTP/2, connection limits, graceful
//! drain.
//!
//! One accept loop per listener; each connection runs in its own task (`server/conn.rs`): HTTP/1.1,
//! or HTTP/2 by prior knowledge (h2c) on plain TCP and by ALPN over TLS. Hostile clients cannot
//! hold connections for free: from `accept` to a complete first request head (TLS handshake and
//! HTTP/2 preface included) a connection has the header-read timeout, between requests the idle
//! timeout, HTTP/2 connections are pinged, and a listener holds at most `max_connections`
//! (`server/limit.rs`: when full it stops accepting and evicts a waiting connection). Idle
//! HTTP/1.1 connections shed hyper's buffers. On shutdown the loop stops accepting, open
//! connections are told to finish (HTTP/1 closes after the in-flight response, HTTP/2 sends GOAWAY)
//! and are closed when the grace period is over.
//!
//! A listener may put a [`Handshake`] in front of HTTP (the egress listener's CONNECT, see
//! `egress.rs`): it runs under the same deadline as a TLS handshake, and either hands back a TLS
//! stream to serve HTTP on, with extensions every request on it carries, or takes the connection
//! over (a tunnel), which then holds its place in the listener until it ends.
//!
//! The server knows nothing about policy: it hands each request, with the peer address in its
//! extensions, to the service composed in `app.rs`.

mod conn;
mod io;
mod limit;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::Service;

use crate::body::Body;
pub use conn::PARK_AFTER;
use io::CloseRequest;
use limit::Connections;
pub use limit::{default_max_connections, open_file_limit, ADMIN_MAX_CONNECTIONS};

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again, so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// While the listener is full and no connection could be evicted, how often it looks again.
const FULL_RETRY: Duration = Duration::from_millis(100);
/// At most one "listener full" warning per this interval.
const FULL_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// A bound listener, optionally terminating TLS.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    handshake: Option<Arc<dyn Handshake>>,
    local: SocketAddr,
}

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What a listener does with a new connection before HTTP (see the module doc).
pub trait Handshake: Send + Sync + 'static {
    /// Runs on a connection that has sent its first bytes, under the connection's deadline.
    fn handshake(&self, stream: TcpStream, peer: SocketAddr) -> BoxFuture<'_, Handshaken>;
}

/// How a [`Handshake`] ended.
pub enum Handshaken {
    /// Serve HTTP (as ALPN says) on this stream; every request carries `extensions`.
    Serve {
        /// The TLS stream.
        stream: Box<tokio_rustls::server::TlsStream<TcpStream>>,
        /// Added to every request's extensions.
        extensions: Arc<http::Extensions>,
    },
    /// The handshake took the connection over: run this until it ends (the connection counts as
    /// busy meanwhile and is closed at the end of a shutdown's grace period).
    Detached(BoxFuture<'static, ()>),
    /// Nothing more to do: the connection is closed.
    Closed,
}

impl Listener {
    /// Wraps an already-bound TCP listener.
    pub fn new(tcp: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        Ok(Listener {
            tcp,
            tls: tls.map(TlsAcceptor::from),
            handshake: None,
            local,
        })
    }

    /// Wraps an already-bound TCP listener whose connections start with `handshake`.
    pub fn with_handshake(
        tcp: TcpListener,
        handshake: Arc<dyn Handshake>,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        Ok(Listener {
            tcp,
            tls: None,
            handshake: Some(handshake),
            local,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// Connection-level settings.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// Deadline from `accept` to a complete first request head (TLS handshake included), and for
    /// a later request head once its first bytes arrived.
    pub header_read_timeout: Duration,
    /// How long a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// Connections the listener holds at most.
    pub max_connections: usize,
    /// Connections one source address may hold at most.
    pub max_connections_per_ip: Option<usize>,
    /// Interval of HTTP/2 keep-alive PINGs (none when `None`).
    pub h2_keep_alive_interval: Option<Duration>,
    /// How long an HTTP/2 PING may go unanswered before the connection is closed.
    pub h2_keep_alive_timeout: Duration,
}

/// Long enough for a slow mobile link to send a request head, short enough to shed slowloris.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Above the 60 s idle timeout of the usual cloud load balancers in front of keygate, so the
/// balancer closes an idle connection first and never sends a request on one keygate just closed
/// (nginx's `keepalive_timeout` is 75 s too).
pub const DEFAULT_LISTENER_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Detects a vanished HTTP/2 peer within a minute without chattering on healthy connections.
pub const DEFAULT_H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// A live peer answers a PING in milliseconds; 20 s allows for a congested path.
pub const DEFAULT_H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Confluent's own requests have small heads; 64 KiB leaves room for large bearer tokens.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Matches Kubernetes' default termination grace period.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
impl Default for ConnSettings {
    fn default() -> Self {
        ConnSettings {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_LISTENER_IDLE_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_connections: default_max_connections(),
            max_connections_per_ip: None,
            h2_keep_alive_interval: Some(DEFAULT_H2_KEEP_ALIVE_INTERVAL),
            h2_keep_alive_timeout: DEFAULT_H2_KEEP_ALIVE_TIMEOUT,
        }
    }
}

/// A shutdown signal shared by every accept loop: flips to `true` once.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The sending side of [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// A new, untriggered shutdown pair.
pub fn shutdown_pair() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    /// Starts the shutdown of everything watching.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown has been triggered (or the trigger was dropped).
    pub async fn wait(&mut self) {
        // Err: the trigger is gone, which also means shut down.
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

/// Serves `listener` with `service` until `shutdown`, then drains connections for the grace period.
pub async fn serve<S, B>(
    listener: Listener,
    service: S,
    settings: ConnSettings,
    mut shutdown: Shutdown,
) where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connections = Connections::new(settings.max_connections, settings.max_connections_per_ip);
    let grace = settings.shutdown_grace;
    let shared = Arc::new(
        conn::Shared::new(service, listener.tls.clone(), settings)
            .with_handshake(listener.handshake.clone()),
    );
    let mut warned: Option<Instant> = None;
    loop {
        if !connections.has_room() && !connections.can_evict() {
            if warned.is_none_or(|at| at.elapsed() >= FULL_WARNING_INTERVAL) {
                warned = Some(Instant::now());
                tracing::warn!(
                    listener = %listener.local,
                    connections = connections.open(),
                    "Listener full of busy connections: not accepting until one closes"
                );
            }
            tokio::select! {
                biased;
                () = shutdown.wait() => break,
                () = connections.freed.notified() => {}
                () = tokio::time::sleep(FULL_RETRY) => {}
            }
            continue;
        }
        let accepted = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            accepted = listener.tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(listener = %listener.local, error = %err, "Accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let slot = match connections.admit(peer.ip(), Instant::now()) {
            Ok(slot) => slot,
            Err(limit::PerIpLimit) => {
                tracing::debug!(peer = %peer, "Source address at its connection limit; closed");
                continue;
            }
        };
        if connections.is_over()
            && connections.evict_one(Some(slot.state()))
            && warned.is_none_or(|at| at.elapsed() >= FULL_WARNING_INTERVAL)
        {
            warned = Some(Instant::now());
            tracing::warn!(
                listener = %listener.local,
                connections = connections.open(),
                "Listener full: closing waiting connections to make room"
            );
        }
        // Small request/response exchanges: do not wait for Nagle.
        let _ = stream.set_nodelay(true);
        tokio::spawn(conn::run(stream, peer, Arc::clone(&shared), slot));
    }
    drop(listener);
    connections.close_all(CloseRequest::Drain);
    let drained = async {
        while connections.open() > 0 {
            connections.freed.notified().await;
        }
    };
    tokio::select! {
        () = drained => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace = ?grace, "Shutdown grace period over, closing remaining connections");
            connections.close_all(CloseRequest::Force);
        }
    }
}
