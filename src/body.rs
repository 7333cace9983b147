//! The one body type that flows through the pipeline, in both directions.
//!
//! Ungoverned requests and all upstream responses stream (`Incoming`) without buffering; governed
//! requests, once read whole by the guard, and responses keygate generates itself are `Full`.
//! An enum rather than a boxed trait object: no allocation per request, and `size_hint` /
//! `is_end_stream` stay exact so framing (Content-Length) is preserved end to end.
//!
//! Errors are boxed: hyper's, and keygate's own for an upstream body that stopped arriving
//! (`proxy::pool::BodyIdleTimeout`), which aborts the downstream response like a broken one.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use crate::proxy::pool::UpstreamBody;

/// A body's error: hyper's or keygate's own.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body inside keygate.
#[derive(Debug, Default)]
pub enum Body {
    /// No body at all.
    #[default]
    Empty,
    /// A body held in memory; `None` once it has been yielded.
    Full(Option<Bytes>),
    /// A body streamed from a peer (downstream request, upstream h2 response).
    Incoming(Incoming),
    /// An upstream response body, with an idle-read deadline; an HTTP/1.1 one returns its
    /// connection to the pool once it is read.
    Upstream(UpstreamBody),
    /// A body transformed as it streams (an upstream JSON body with its links rewritten,
    /// `proxy::links`): boxed, since it is rare and holds a body of its own.
    Boxed(Boxed),
}

/// A [`Body::Boxed`] body.
pub struct Boxed(Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static>>);

impl Boxed {
    /// Boxes `body`.
    pub fn new(
        body: impl http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
    ) -> Self {
        Boxed(Box::pin(body))
    }
}

impl std::fmt::Debug for Boxed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Boxed")
    }
}

impl Body {
    /// A body from bytes held in memory (an empty buffer is an empty body).
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Body::Empty
        } else {
            Body::Full(Some(bytes))
        }
    }
}

impl From<Incoming> for Body {
    fn from(incoming: Incoming) -> Self {
        Body::Incoming(incoming)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Incoming(incoming) => match Pin::new(incoming).poll_frame(cx) {
                Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            Body::Upstream(upstream) => Pin::new(upstream).poll_frame(cx),
            Body::Boxed(boxed) => boxed.0.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(bytes) => bytes.is_none(),
            Body::Incoming(incoming) => incoming.is_end_stream(),
            Body::Upstream(upstream) => upstream.is_end_stream(),
            Body::Boxed(boxed) => boxed.0.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Incoming(incoming) => incoming.size_hint(),
            Body::Upstream(upstream) => upstream.size_hint(),
            Body::Boxed(boxed) => boxed.0.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn full_body_yields_its_bytes_once_with_exact_size() {
        let body = Body::full("hello");
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(5));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello");
    }

    #[test]
    fn empty_bytes_make_an_empty_body() {
        let body = Body::full(Bytes::new());
        assert!(http_body::Body::is_end_stream(&body));
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(0));
    }
}
