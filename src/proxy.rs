//! The last stage: forward a request to the upstream and stream its response back.
//!
//! [`Upstream`] is the client (rustls with webpki roots plus an optional CA, or plain HTTP for
//! loopback tests) over keep-alive connections from [`pool`]; [`forward`] rewrites the request for the upstream (authority,
//! hop-by-hop headers, request id) and maps failures to [`ProxyError`]: connect/TLS failure → 502,
//! no response head within the deadline → 504. Bodies are streamed, never buffered here. Whether a
//! request may be forwarded at all is decided before this stage (see `app.rs`).

pub mod config;
pub mod forward;
pub mod headers;
pub mod links;
pub mod pool;
pub mod upstream;

use std::time::Duration;

pub use forward::forward;
pub use upstream::Upstream;

/// Why the upstream exchange failed. Messages name the cause, never headers or bodies.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// TCP connect failed (refused, unreachable, DNS).
    #[error("upstream connect failed: {0}")]
    Connect(String),
    /// The TLS handshake with the upstream failed.
    #[error("upstream TLS handshake failed: {0}")]
    Tls(String),
    /// TCP connect did not complete in time.
    #[error("upstream connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The upstream accepted the request but sent no response head in time.
    #[error("upstream did not respond within {0:?}")]
    Timeout(Duration),
    /// The upstream sent a response head but not the body keygate must read (a create's) in time.
    #[error("upstream response body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    /// The connection broke or the upstream spoke invalid HTTP.
    #[error("upstream connection failed: {0}")]
    Protocol(String),
}

impl ProxyError {
    /// A short label for metrics (`keygate_upstream_errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::Connect(_) => "connect",
            ProxyError::Tls(_) => "tls",
            ProxyError::ConnectTimeout(_) => "connect_timeout",
            ProxyError::Timeout(_) => "timeout",
            ProxyError::BodyTimeout(_) => "body_timeout",
            ProxyError::Protocol(_) => "protocol",
        }
    }
}

pin_project_lite::pin_project! {
    /// A future's output passed through `finish` when it is ready: what an `async` block that
    /// awaits a future it captured would do, without keeping the captured future a second time
    /// (an async block stores what it captures for its whole life, next to the future it awaits).
    /// The forwarding path's futures are in every request's future, so their size is copied per
    /// request.
    pub struct Then<F, C> {
        #[pin]
        future: F,
        finish: Option<C>,
    }
}

impl<F, C> Then<F, C> {
    /// `future`, then `finish` on its output.
    pub fn new(future: F, finish: C) -> Self {
        Then {
            future,
            finish: Some(finish),
        }
    }
}

impl<F, C, T> std::future::Future for Then<F, C>
where
    F: std::future::Future,
    C: FnOnce(F::Output) -> T,
{
    type Output = T;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        let this = self.project();
        let output = std::task::ready!(this.future.poll(cx));
        match this.finish.take() {
            Some(finish) => std::task::Poll::Ready(finish(output)),
            // Polled again after completion: nothing more will come.
            None => std::task::Poll::Pending,
        }
    }
}
