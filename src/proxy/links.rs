//! Upstream links lead back through keygate.
//!
//! Confluent writes absolute URLs into its answers: `Location` on a create, `metadata.self`,
//! `first`/`next`/`prev`/`last` on lists, `related` on every reference. A client that follows one
//! (several SDKs follow `next` verbatim; some delete through `metadata.self`) would talk to the
//! upstream directly, past every decision and audit record — or, where direct egress is blocked,
//! fail. So, as nginx's `proxy_redirect` does for `Location`, keygate rewrites the upstream's
//! origin (`upstream.link_origins`, by default the origin of `upstream.url`) to its own public
//! origin (`listener.public_url`, or the scheme and `Host` the request arrived with):
//!
//! - in `Location` and `Content-Location` headers of every response;
//! - in JSON response bodies (`application/json`, `*+json`) on every route: bodies with a
//!   `Content-Length` up to [`BUFFER_LIMIT`] are read whole (within `upstream.body_timeout`, else
//!   504) and rewritten with an exact length; larger
//!   or chunked ones are rewritten as they stream (a match split across chunks is carried over),
//!   without `Content-Length` when the replacement changes the length. Memory stays flat.
//!
//! An origin matches only when the next byte ends it (`/`, `?`, `#`, `"`, …), so
//! `https://api.confluent.cloud.example` is left alone. A body with a `Content-Encoding` cannot be
//! rewritten; keygate asks for identity encoding when rewriting is on (see `forward`) and counts
//! such responses (`keygate_link_rewrite_skipped_total`) if an upstream compresses anyway.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_LOCATION, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use memchr::memmem::Finder;

use super::pool::BodyIdleTimeout;
use super::ProxyError;
use crate::body::Body;

/// JSON bodies with a `Content-Length` up to this are read whole and rewritten with an exact
/// length (Confluent's list pages are a few KiB); larger ones stream.
pub const BUFFER_LIMIT: u64 = 256 * 1024;

/// One upstream origin (`scheme://authority`, lowercase) and its searcher.
#[derive(Debug)]
struct Origin {
    text: Vec<u8>,
    finder: Finder<'static>,
}

/// The rewriting rule: which origins become which.
#[derive(Debug)]
pub struct Links {
    origins: Vec<Origin>,
    /// `listener.public_url` as an origin, if configured.
    public: Option<Bytes>,
    /// `http` or `https`, for an origin built from a request's `Host`.
    scheme: &'static str,
    /// Deadline for a body read whole (`upstream.body_timeout`).
    body_timeout: Duration,
}

/// The origin a given response's links are rewritten to.
#[derive(Debug, Clone)]
pub struct Target(Bytes);

// === impl Links ===

impl Links {
    /// Rewrites `origins` (each `scheme://authority`) to `public` or, when that is unset, to
    /// `scheme` and the request's `Host`; a body read whole must arrive within `body_timeout`.
    pub fn new(
        origins: &[String],
        public: Option<&Uri>,
        scheme: &'static str,
        body_timeout: Duration,
    ) -> Arc<Links> {
        let origins = origins
            .iter()
            .map(|o| {
                let text = o.trim_end_matches('/').to_ascii_lowercase().into_bytes();
                Origin {
                    finder: Finder::new(&text).into_owned(),
                    text,
                }
            })
            .collect();
        let public = public.map(|uri| Bytes::from(origin(uri)));
        Arc::new(Links {
            origins,
            public,
            scheme,
            body_timeout,
        })
    }

    /// The origin for a response to a request with these `Host` and URI authority values: the
    /// public URL, or the request's own scheme and host (`None` when the host is not a plain
    /// `host[:port]`, which a real client never sends).
    pub fn target(&self, host: Option<&HeaderValue>, authority: Option<&str>) -> Option<Target> {
        if let Some(public) = &self.public {
            return Some(Target(public.clone()));
        }
        let host = authority.or_else(|| host.and_then(|h| h.to_str().ok()))?;
        let plain = !host.is_empty()
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
            });
        plain.then(|| Target(Bytes::from(format!("{}://{host}", self.scheme))))
    }

    /// Rewrites the response's link headers and, for JSON, its body.
    pub async fn rewrite(
        self: Arc<Self>,
        method: &Method,
        target: Target,
        mut response: Response<Body>,
        skipped: &prometheus_client::metrics::counter::Counter,
    ) -> Result<Response<Body>, ProxyError> {
        for name in [LOCATION, CONTENT_LOCATION] {
            if let Some(value) = response.headers().get(&name) {
                if let Some(rewritten) = self.rewrite_all(value.as_bytes(), &target.0) {
                    if let Ok(value) = HeaderValue::from_bytes(&rewritten) {
                        response.headers_mut().insert(name, value);
                    }
                }
            }
        }
        if !has_body(method, response.status()) || !is_json(response.headers()) {
            return Ok(response);
        }
        if !identity_encoded(response.headers()) {
            skipped.inc();
            tracing::warn!(
                "Upstream JSON response is content-encoded; its links were not rewritten"
            );
            return Ok(response);
        }
        let length = content_length(response.headers());
        let (mut parts, body) = response.into_parts();
        match length {
            Some(length) if length <= BUFFER_LIMIT => {
                let read = tokio::time::timeout(
                    self.body_timeout,
                    Limited::new(body, BUFFER_LIMIT as usize).collect(),
                )
                .await;
                let bytes = match read {
                    Ok(Ok(collected)) => collected.to_bytes(),
                    Ok(Err(e)) => {
                        return Err(match e.downcast_ref::<BodyIdleTimeout>() {
                            Some(idle) => ProxyError::BodyTimeout(idle.0),
                            None => ProxyError::Protocol(format!(
                                "response body could not be read: {e}"
                            )),
                        })
                    }
                    Err(_) => return Err(ProxyError::BodyTimeout(self.body_timeout)),
                };
                let bytes = match self.rewrite_all(&bytes, &target.0) {
                    Some(rewritten) => {
                        parts
                            .headers
                            .insert(CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
                        Bytes::from(rewritten)
                    }
                    None => bytes,
                };
                Ok(Response::from_parts(parts, Body::full(bytes)))
            }
            _ => {
                if self.origins.iter().any(|o| o.text.len() != target.0.len()) {
                    parts.headers.remove(CONTENT_LENGTH);
                }
                let rewriting = Rewriting {
                    inner: body,
                    links: self,
                    target: target.0,
                    carry: BytesMut::new(),
                    trailers: None,
                    done: false,
                };
                Ok(Response::from_parts(
                    parts,
                    Body::Boxed(crate::body::Boxed::new(rewriting)),
                ))
            }
        }
    }

    /// `text` with every upstream origin replaced by `target`; `None` when nothing matched.
    pub fn rewrite_all(&self, text: &[u8], target: &[u8]) -> Option<Vec<u8>> {
        let (rewritten, consumed) = self.rewrite_prefix(text, target, true);
        debug_assert_eq!(consumed, text.len());
        rewritten
    }

    /// Rewrites the longest prefix of `text` that can be decided now: unless this is the `end`
    /// of the body, a match whose boundary byte has not arrived, or a tail that could begin an
    /// origin, is left for later. Returns the rewritten prefix (`None`: unchanged) and its length
    /// in `text`.
    fn rewrite_prefix(&self, text: &[u8], target: &[u8], end: bool) -> (Option<Vec<u8>>, usize) {
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        let mut at = 0;
        let mut consumed = None;
        while let Some((start, len)) = self.next_match(text, at) {
            let stop = start + len;
            match text.get(stop) {
                None if !end => {
                    consumed = Some(start);
                    break;
                }
                next if ends_origin(next) => {
                    let out = out.get_or_insert_with(|| Vec::with_capacity(text.len() + 256));
                    out.extend_from_slice(&text[copied..start]);
                    out.extend_from_slice(target);
                    copied = stop;
                }
                _ => {}
            }
            at = stop;
        }
        let consumed = consumed.unwrap_or_else(|| {
            if end {
                text.len()
            } else {
                text.len() - self.partial_suffix(&text[at..])
            }
        });
        let rewritten = out.map(|mut out| {
            out.extend_from_slice(&text[copied..consumed]);
            out
        });
        (rewritten, consumed)
    }

    /// The earliest origin match at or after `from`: (start, length).
    fn next_match(&self, text: &[u8], from: usize) -> Option<(usize, usize)> {
        self.origins
            .iter()
            .filter_map(|o| {
                o.finder
                    .find(&text[from..])
                    .map(|at| (from + at, o.text.len()))
            })
            .min()
    }

    /// Length of the longest suffix of `text` shorter than an origin that could begin one.
    fn partial_suffix(&self, text: &[u8]) -> usize {
        let longest = self.origins.iter().map(|o| o.text.len()).max().unwrap_or(0);
        (1..longest.min(text.len() + 1))
            .rev()
            .find(|&n| {
                let suffix = &text[text.len() - n..];
                self.origins.iter().any(|o| o.text.starts_with(suffix))
            })
            .unwrap_or(0)
    }
}

/// Whether the byte after a matched origin ends it (so `https://host` does not match
/// `https://host.evil` or `https://host:8443`).
fn ends_origin(next: Option<&u8>) -> bool {
    match next {
        None => true,
        Some(b) => !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'@' | b'_')),
    }
}

fn has_body(method: &Method, status: StatusCode) -> bool {
    method != Method::HEAD
        && !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

/// `application/json` or a `+json` structured syntax (RFC 6839).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .rsplit_once('+')
            .is_some_and(|(_, suffix)| suffix.eq_ignore_ascii_case("json"))
}

fn identity_encoded(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// `scheme://authority` of a base URL, lowercase.
pub fn origin(uri: &Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map_or("", |a| a.as_str())
    )
    .to_ascii_lowercase()
}

// === impl Rewriting ===

/// A streamed JSON body with its upstream links rewritten as they pass.
#[derive(Debug)]
pub struct Rewriting {
    inner: Body,
    links: Arc<Links>,
    target: Bytes,
    /// Bytes held back because they could be the start of an origin split across frames.
    carry: BytesMut,
    trailers: Option<HeaderMap>,
    done: bool,
}

impl Rewriting {
    /// Rewrites `data` (after what was carried); holds back what cannot be decided until more
    /// arrives, unless this is the `end`.
    fn process(&mut self, data: Bytes, end: bool) -> Bytes {
        let joined: Bytes = if self.carry.is_empty() {
            data
        } else {
            self.carry.extend_from_slice(&data);
            self.carry.split().freeze()
        };
        let (rewritten, consumed) = self.links.rewrite_prefix(&joined, &self.target, end);
        self.carry.extend_from_slice(&joined[consumed..]);
        match rewritten {
            Some(rewritten) => Bytes::from(rewritten),
            None => joined.slice(..consumed),
        }
    }
}

impl http_body::Body for Rewriting {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::body::BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.process(data, false);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        this.trailers = frame.into_trailers().ok();
                        this.done = true;
                        let out = this.process(Bytes::new(), true);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                },
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => {
                    this.done = true;
                    let out = this.process(Bytes::new(), true);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Exact only when every replacement keeps the length (and `Content-Length` was kept).
        let same_length = self
            .links
            .origins
            .iter()
            .all(|o| o.text.len() == self.target.len());
        match self.inner.size_hint().exact() {
            Some(rest) if same_length => SizeHint::with_exact(rest + self.carry.len() as u64),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
