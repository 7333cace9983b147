//! The one mapping from internal errors to HTTP responses.
//!
//! Every module has its own error enum; [`GatewayError`] gathers them and [`GatewayError::parts`]
//! is an exhaustive `match` (no `_` arm) that decides status, Confluent error `code`, `title` and
//! extra headers. Bodies always use Confluent's shape (reference §3) so the CLI, Terraform and the
//! SDKs print them: `{"errors":[{"id","status","code","title","detail","source"?}]}`, with the
//! request id as `id`. Policy denials are 4xx, never 5xx/429, which clients retry.
//!
//! Messages never contain credentials, secrets, header values or bodies: each module's errors are
//! written that way, and this module only formats them.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use serde::Serialize;
use tower::{Layer, Service};

use crate::body::Body;
use crate::context::RequestContext;
use crate::proxy::ProxyError;

/// Everything that can stop a request inside keygate.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The upstream could not be reached or did not answer in time.
    #[error(transparent)]
    Upstream(#[from] ProxyError),
    /// A governed request reached the forwarder without a decision: a bug, fail closed.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// How an error is rendered: status, machine code, title, optional JSON pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorParts {
    /// HTTP status.
    pub status: StatusCode,
    /// Confluent-style machine code.
    pub code: &'static str,
    /// Short, stable summary.
    pub title: &'static str,
    /// `WWW-Authenticate` challenge, for 401s.
    pub challenge: Option<&'static str>,
}

impl GatewayError {
    /// The response this error becomes. INVARIANT: exhaustive, no `_` arm.
    pub fn parts(&self) -> ErrorParts {
        match self {
            GatewayError::Upstream(ProxyError::Connect(_)) => ErrorParts {
                status: StatusCode::BAD_GATEWAY,
                code: "upstream_unavailable",
                title: "Bad Gateway",
                challenge: None,
            },
            GatewayError::Upstream(ProxyError::Tls(_)) => ErrorParts {
                status: StatusCode::BAD_GATEWAY,
                code: "upstream_tls_failure",
                title: "Bad Gateway",
                challenge: None,
            },
            GatewayError::Upstream(ProxyError::Protocol(_)) => ErrorParts {
                status: StatusCode::BAD_GATEWAY,
                code: "upstream_protocol_error",
                title: "Bad Gateway",
                challenge: None,
            },
            GatewayError::Upstream(ProxyError::ConnectTimeout(_))
            | GatewayError::Upstream(ProxyError::Timeout(_)) => ErrorParts {
                status: StatusCode::GATEWAY_TIMEOUT,
                code: "upstream_timeout",
                title: "Gateway Timeout",
                challenge: None,
            },
            GatewayError::Internal(_) => ErrorParts {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "internal_error",
                title: "Internal Server Error",
                challenge: None,
            },
        }
    }

    /// The JSON pointer into the request body that the error is about, if any.
    pub fn pointer(&self) -> Option<&str> {
        None
    }

    /// Renders the error as a Confluent-shaped response carrying `request_id`.
    pub fn to_response(&self, request_id: &str) -> Response<Body> {
        let parts = self.parts();
        let detail = self.to_string();
        let mut response = error_response(
            parts.status,
            &ErrorBody {
                id: request_id,
                status: parts.status.as_str(),
                code: parts.code,
                title: parts.title,
                detail: &detail,
                source: self.pointer().map(|pointer| Source { pointer }),
            },
        );
        if let Some(challenge) = parts.challenge {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

/// One member of Confluent's `errors[]`.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// Unique per occurrence: keygate uses the request id.
    pub id: &'a str,
    /// The HTTP status as a string.
    pub status: &'a str,
    /// Machine code.
    pub code: &'a str,
    /// Short summary.
    pub title: &'a str,
    /// What happened, for people.
    pub detail: &'a str,
    /// The field the error is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source<'a>>,
}

/// `source` of an error member.
#[derive(Debug, Serialize)]
pub struct Source<'a> {
    /// JSON pointer into the request body.
    pub pointer: &'a str,
}

#[derive(Serialize)]
struct Envelope<'a> {
    errors: [&'a ErrorBody<'a>; 1],
}

/// A Confluent-shaped JSON error response (used for every response keygate generates itself).
pub fn error_response(status: StatusCode, body: &ErrorBody<'_>) -> Response<Body> {
    let json = serde_json::to_vec(&Envelope { errors: [body] }).unwrap_or_else(|_| {
        // Serialising plain strings cannot fail; keep a valid body regardless.
        br#"{"errors":[{"status":"500","code":"internal_error","title":"Internal Server Error"}]}"#
            .to_vec()
    });
    let mut response = Response::new(Body::full(Bytes::from(json)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Builds [`Rescue`].
#[derive(Debug, Clone, Default)]
pub struct RescueLayer;

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;
    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue { inner }
    }
}

/// Turns a [`GatewayError`] from any inner stage into its response, and records the error's code
/// and detail in the request context for the access log and audit (logged once, there).
#[derive(Debug, Clone)]
pub struct Rescue<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for Rescue<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Inner stages are always ready; an error here would be a bug, reported on `call`.
        let _ = self.inner.poll_ready(cx);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let ctx = request.extensions().get::<Arc<RequestContext>>().cloned();
        let future = self.inner.call(request);
        Box::pin(async move {
            match future.await {
                Ok(response) => Ok(response),
                Err(err) => {
                    let id = ctx.as_ref().map(|c| c.id_str()).unwrap_or("-");
                    let response = err.to_response(id);
                    if let Some(ctx) = &ctx {
                        let mut state = ctx.state();
                        state.error_code = Some(err.parts().code);
                        state.error_detail = Some(err.to_string());
                    }
                    Ok(response)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
