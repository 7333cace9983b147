//! Downstream listeners: TCP or TLS accept, HTTP/1.1 and HTTP/2, graceful drain.
//!
//! One accept loop per listener. Each connection is served by hyper-util's auto builder: HTTP/1.1,
//! or HTTP/2 by prior knowledge (h2c) on plain TCP and by ALPN over TLS. The request head must
//! arrive within the header-read timeout (slowloris guard) and fit the header limit. On shutdown the
//! loop stops accepting, open connections are told to finish (HTTP/1 closes after the in-flight
//! response, HTTP/2 sends GOAWAY) and are given the grace period before they are dropped.
//!
//! The server knows nothing about policy: it hands each request, with the peer address in its
//! extensions, to the service composed in `app.rs`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::Service;

use crate::body::Body;
use crate::context::PeerAddr;

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again, so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// A bound listener, optionally terminating TLS.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    local: SocketAddr,
}

impl Listener {
    /// Wraps an already-bound TCP listener.
    pub fn new(tcp: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        Ok(Listener {
            tcp,
            tls: tls.map(TlsAcceptor::from),
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
    /// Deadline for a complete request head (and the TLS handshake).
    pub header_read_timeout: Duration,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
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
    let builder = Arc::new(conn_builder(&settings));
    let graceful = GracefulShutdown::new();
    loop {
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
        // Small request/response exchanges: do not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let service = service.clone();
        let tls = listener.tls.clone();
        let handshake_timeout = settings.header_read_timeout;
        tokio::spawn(async move {
            let hyper_service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let mut service = service.clone();
                let mut request = request.map(Body::Incoming);
                request.extensions_mut().insert(PeerAddr(peer));
                service.call(request)
            });
            match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), hyper_service);
                    if let Err(err) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(peer = %peer, error = %err, "Connection ended with an error");
                    }
                }
                Some(acceptor) => {
                    let Some(stream) =
                        tls_handshake(acceptor, stream, peer, handshake_timeout).await
                    else {
                        return;
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), hyper_service);
                    if let Err(err) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(peer = %peer, error = %err, "Connection ended with an error");
                    }
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(settings.shutdown_grace) => {
            tracing::warn!(grace = ?settings.shutdown_grace, "Shutdown grace period over, closing remaining connections");
        }
    }
}

async fn tls_handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(err)) => {
            tracing::debug!(peer = %peer, error = %err, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(peer = %peer, "TLS handshake timed out");
            None
        }
    }
}

fn conn_builder(settings: &ConnSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    builder
}
