//! The one mapping from internal errors to HTTP responses.
//!
//! Every module has its own error enum; [`GatewayError`] gathers them and [`GatewayError::parts`]
//! is an exhaustive `match` (no `_` arm) that decides status, Confluent error `code`, `title` and
//! extra headers. Bodies always use Confluent's shape (docs/confluent-api.md §3) so the CLI, Terraform and the
//! SDKs print them: `{"errors":[{"id","status","code","title","detail","source"?}]}`, with the
//! request id as `id`. Policy denials are 4xx, never 5xx/429, which clients retry.
//!
//! Messages never contain credentials, secrets, header values or bodies: each module's errors are
//! written that way. Some quote what the caller or the upstream sent (a path, a key id, an owner
//! id), so [`GatewayError::detail`] — the only form in which an error leaves keygate, in a body, a
//! log line or an audit record — masks anything credential-shaped in it as well.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use serde::Serialize;

use crate::body::Body;
use crate::guard::GuardError;
use crate::identity::IdentityError;
use crate::model::DecidedBy;
use crate::proxy::ProxyError;
use crate::ratelimit::{RateLimited, SharedUnavailable};

/// Everything that can stop a request inside keygate.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request guard rejected an ambiguous or malformed governed request.
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// The caller's identity could not be established.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A policy decided against the request.
    #[error("{}", .0.explanation)]
    Denied(Box<Denial>),
    /// A rate limit refused the request.
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    /// A shared rate limit configured to fail closed could not be checked (Redis unavailable).
    #[error(transparent)]
    RateLimitUnavailable(#[from] SharedUnavailable),
    /// Authorization data is missing or too stale to decide on: fail closed.
    #[error("cannot decide right now: {0}")]
    AuthzUnavailable(String),
    /// The audit record could not be made durable: no durable audit, no action.
    #[error("the audit trail cannot be written, so the request was not carried out: {0}")]
    AuditUnavailable(String),
    /// The upstream could not be reached or did not answer in time.
    #[error(transparent)]
    Upstream(#[from] ProxyError),
    /// The upstream refused the lookup keygate made, with the caller's own credential, before
    /// deciding (the key does not exist, or the caller may not see it): its answer is the answer,
    /// passed through unchanged, and the request is not forwarded.
    #[error("the upstream answered {} to keygate's lookup of API key `{}` made with the caller's credential; its answer was passed through", .0.status.as_u16(), .0.key_id)]
    LookupRefused(Box<UpstreamAnswer>),
    /// A governed request reached the forwarder without a decision: a bug, fail closed.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// An upstream answer keygate passes through as it is (see [`GatewayError::LookupRefused`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAnswer {
    /// The key that was looked up.
    pub key_id: String,
    /// The upstream's status (4xx).
    pub status: StatusCode,
    /// The upstream's headers worth keeping: `Content-Type`, `Retry-After`, `X-RateLimit-*`.
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
    /// The upstream's body.
    pub body: Bytes,
}

impl UpstreamAnswer {
    /// The answer to pass on from an upstream response.
    pub fn new(key_id: &str, status: StatusCode, headers: &http::HeaderMap, body: Bytes) -> Self {
        const KEPT: [&str; 5] = [
            "content-type",
            "retry-after",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ];
        UpstreamAnswer {
            key_id: key_id.to_owned(),
            status,
            headers: KEPT
                .iter()
                .filter_map(|name| {
                    headers
                        .get(*name)
                        .map(|v| (http::HeaderName::from_static(name), v.clone()))
                })
                .collect(),
            body,
        }
    }
}

/// A policy denial, rendered as a 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// A sentence a developer understands: what was asked, what decided, what would allow it
    /// (the whole denial in one line, for the log and the audit record).
    pub explanation: String,
    /// The ids of the rules or policies that denied.
    pub rule_ids: Vec<String>,
    /// The body field that decided, as a JSON pointer.
    pub pointer: Option<&'static str>,
    /// Which layer denied (the matrix or an organisation policy).
    pub by: DecidedBy,
    /// One entry per denying organisation policy, each its own member of `errors[]`; empty for a
    /// matrix denial, which is the one member made of the fields above.
    pub entries: Vec<DenialEntry>,
}

/// One denying policy, as its own member of the 403's `errors[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialEntry {
    /// The policy id.
    pub rule_id: String,
    /// Why, for the caller (the policy's reason with the request's values).
    pub detail: String,
    /// The body field at fault, as a JSON pointer, when the policy names one.
    pub pointer: Option<String>,
}

/// How an error is rendered: status, machine code, title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorParts {
    /// HTTP status.
    pub status: StatusCode,
    /// Confluent-style machine code.
    pub code: &'static str,
    /// Short, stable summary.
    pub title: &'static str,
}

const fn parts(status: StatusCode, code: &'static str, title: &'static str) -> ErrorParts {
    ErrorParts {
        status,
        code,
        title,
    }
}

/// The challenge sent with every 401 (RFC 9110 §11.6.1): keygate accepts Basic API keys.
const BASIC_CHALLENGE: &str = r#"Basic realm="keygate", charset="UTF-8""#;
/// The challenge of a 401 for a bearer token (RFC 6750 §3): the Confluent CLI logs in again.
const BEARER_CHALLENGE: &str = r#"Bearer realm="keygate", error="invalid_token""#;

impl GatewayError {
    /// The response this error becomes. INVARIANT: exhaustive, no `_` arm.
    pub fn parts(&self) -> ErrorParts {
        match self {
            GatewayError::Guard(e) => parts(
                e.status(),
                e.code(),
                match e.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => "Payload Too Large",
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => "Unsupported Media Type",
                    StatusCode::METHOD_NOT_ALLOWED => "Method Not Allowed",
                    _ => "Bad Request",
                },
            ),
            GatewayError::Identity(IdentityError::UpstreamRateLimited(_)) => parts(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "Too Many Requests",
            ),
            GatewayError::Identity(IdentityError::Unavailable(_)) => parts(
                StatusCode::SERVICE_UNAVAILABLE,
                "identity_unavailable",
                "Service Unavailable",
            ),
            GatewayError::Identity(
                IdentityError::Missing
                | IdentityError::Malformed(_)
                | IdentityError::UnsupportedScheme(_)
                | IdentityError::Rejected { .. }
                | IdentityError::UnknownOwner { .. }
                | IdentityError::SessionMalformed(_)
                | IdentityError::SessionExpired
                | IdentityError::SessionRejected
                | IdentityError::SessionOtherOrganization
                | IdentityError::Jwt(_)
                | IdentityError::Unmapped { .. }
                | IdentityError::Certificate
                | IdentityError::Exchange(_),
            ) => parts(
                StatusCode::UNAUTHORIZED,
                "user_unauthenticated",
                "Authentication Required",
            ),
            GatewayError::Denied(_) => parts(
                StatusCode::FORBIDDEN,
                "user_unauthorized",
                "Forbidden by keygate policy",
            ),
            GatewayError::RateLimited(_) => parts(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "Too Many Requests",
            ),
            GatewayError::RateLimitUnavailable(_) => parts(
                StatusCode::SERVICE_UNAVAILABLE,
                "ratelimit_unavailable",
                "Service Unavailable",
            ),
            GatewayError::AuthzUnavailable(_) => parts(
                StatusCode::SERVICE_UNAVAILABLE,
                "authorization_unavailable",
                "Service Unavailable",
            ),
            GatewayError::AuditUnavailable(_) => parts(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                "Service Unavailable",
            ),
            GatewayError::Upstream(ProxyError::Connect(_)) => parts(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "Bad Gateway",
            ),
            GatewayError::Upstream(ProxyError::Tls(_)) => parts(
                StatusCode::BAD_GATEWAY,
                "upstream_tls_failure",
                "Bad Gateway",
            ),
            GatewayError::Upstream(ProxyError::Protocol(_)) => parts(
                StatusCode::BAD_GATEWAY,
                "upstream_protocol_error",
                "Bad Gateway",
            ),
            GatewayError::Upstream(
                ProxyError::ConnectTimeout(_) | ProxyError::Timeout(_) | ProxyError::BodyTimeout(_),
            ) => parts(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "Gateway Timeout",
            ),
            GatewayError::LookupRefused(answer) => parts(
                answer.status,
                "upstream_answer",
                answer
                    .status
                    .canonical_reason()
                    .unwrap_or("Upstream Answer"),
            ),
            GatewayError::Internal(_) => parts(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Internal Server Error",
            ),
        }
    }

    /// The pipeline stage this error ended the request in (for audit), if it is one.
    pub fn decided_by(&self) -> Option<DecidedBy> {
        match self {
            GatewayError::Guard(_) => Some(DecidedBy::Guard),
            GatewayError::Identity(_) => Some(DecidedBy::Identity),
            GatewayError::Denied(d) => Some(d.by),
            GatewayError::RateLimited(_) | GatewayError::RateLimitUnavailable(_) => {
                Some(DecidedBy::RateLimit)
            }
            GatewayError::AuthzUnavailable(_) => Some(DecidedBy::Matrix),
            GatewayError::AuditUnavailable(_) => Some(DecidedBy::Audit),
            GatewayError::Upstream(_) | GatewayError::LookupRefused(_) => Some(DecidedBy::Upstream),
            GatewayError::Internal(_) => None,
        }
    }

    /// The JSON pointer into the request body that the error is about, if any.
    pub fn pointer(&self) -> Option<&str> {
        match self {
            GatewayError::Guard(e) => e.pointer(),
            GatewayError::Denied(d) => d.pointer,
            _ => None,
        }
    }

    /// The human-readable detail, with anything credential-shaped masked
    /// ([`crate::redact::redact_text`]): what the error body, the access log and the audit
    /// record say.
    pub fn detail(&self) -> String {
        let message = self.to_string();
        match crate::redact::redact_text(&message) {
            std::borrow::Cow::Borrowed(_) => message,
            std::borrow::Cow::Owned(masked) => masked,
        }
    }

    /// Renders the error as a Confluent-shaped response carrying `request_id` (or, for an
    /// upstream answer passed through, that answer).
    pub fn to_response(&self, request_id: &str) -> Response<Body> {
        if let GatewayError::LookupRefused(answer) = self {
            let mut response = Response::new(Body::full(answer.body.clone()));
            *response.status_mut() = answer.status;
            for (name, value) in &answer.headers {
                response.headers_mut().insert(name.clone(), value.clone());
            }
            return response;
        }
        let parts = self.parts();
        if let GatewayError::Denied(denial) = self {
            if !denial.entries.is_empty() {
                let details: Vec<String> = denial
                    .entries
                    .iter()
                    .map(|e| crate::redact::redact_text(&e.detail).into_owned())
                    .collect();
                let metas: Vec<serde_json::Value> = denial
                    .entries
                    .iter()
                    .map(|e| serde_json::json!({ "rule_ids": [e.rule_id] }))
                    .collect();
                let bodies: Vec<ErrorBody<'_>> = denial
                    .entries
                    .iter()
                    .zip(details.iter().zip(metas))
                    .map(|(entry, (detail, meta))| ErrorBody {
                        id: request_id,
                        status: parts.status.as_str(),
                        code: parts.code,
                        title: parts.title,
                        detail,
                        source: entry.pointer.as_deref().map(|pointer| Source { pointer }),
                        meta: Some(meta),
                    })
                    .collect();
                return error_response_all(parts.status, &bodies);
            }
        }
        let detail = self.detail();
        let meta = match self {
            GatewayError::Denied(d) => Some(serde_json::json!({ "rule_ids": d.rule_ids })),
            GatewayError::RateLimited(r) => Some(serde_json::json!({ "limit_id": r.limit_id() })),
            GatewayError::RateLimitUnavailable(u) => {
                Some(serde_json::json!({ "limit_id": u.limit_id() }))
            }
            _ => None,
        };
        let mut response = error_response(
            parts.status,
            &ErrorBody {
                id: request_id,
                status: parts.status.as_str(),
                code: parts.code,
                title: parts.title,
                detail: &detail,
                source: self.pointer().map(|pointer| Source { pointer }),
                meta,
            },
        );
        let headers = response.headers_mut();
        if parts.status == StatusCode::UNAUTHORIZED {
            let challenge = match self {
                GatewayError::Identity(e) if e.is_bearer() => BEARER_CHALLENGE,
                _ => BASIC_CHALLENGE,
            };
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        match self {
            GatewayError::Guard(e) => {
                if let Some(allow) = e.allow() {
                    headers.insert(ALLOW, HeaderValue::from_static(allow));
                }
            }
            GatewayError::RateLimited(r) => {
                for (name, value) in r.headers() {
                    headers.insert(name, value);
                }
            }
            GatewayError::RateLimitUnavailable(u) => {
                headers.insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(u.retry_after_secs()),
                );
            }
            GatewayError::Identity(IdentityError::UpstreamRateLimited(upstream)) => {
                for (name, value) in upstream.iter() {
                    headers.insert(name.clone(), value.clone());
                }
            }
            _ => {}
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
    /// Machine-readable details (the deciding rule or policy ids, the rate limit hit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

/// `source` of an error member.
#[derive(Debug, Serialize)]
pub struct Source<'a> {
    /// JSON pointer into the request body.
    pub pointer: &'a str,
}

#[derive(Serialize)]
struct Envelope<'a> {
    errors: &'a [ErrorBody<'a>],
}

/// A Confluent-shaped JSON error response (used for every response keygate generates itself).
pub fn error_response(status: StatusCode, body: &ErrorBody<'_>) -> Response<Body> {
    error_response_all(status, std::slice::from_ref(body))
}

/// A Confluent-shaped JSON error response with one `errors[]` member per problem.
pub fn error_response_all(status: StatusCode, bodies: &[ErrorBody<'_>]) -> Response<Body> {
    let json = serde_json::to_vec(&Envelope { errors: bodies }).unwrap_or_else(|_| {
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

/// What a rescued error leaves in the request's record (access log, audit, traces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescued {
    /// The error's code (`Confluent`'s `code` member).
    pub code: &'static str,
    /// Its detail, free of secrets ([`GatewayError::detail`]).
    pub detail: String,
    /// The stage it stands for, when it decided the request (even after an allow: an upstream
    /// failure, no durable audit).
    pub decided_by: Option<DecidedBy>,
}

/// THE error → response mapping of the pipeline: whatever ended a request inside keygate becomes
/// its Confluent-shaped response (carrying `request_id`), and what the request's record must say
/// about it. Called once, by the pipeline's root (`app.rs`), for every error of every stage; and
/// for the errors found after the chain (a create's body that did not arrive, an audit record
/// that could not be written).
pub fn rescue(err: &GatewayError, request_id: &str) -> (Response<Body>, Rescued) {
    let rescued = Rescued {
        code: err.parts().code,
        detail: err.detail(),
        decided_by: err.decided_by(),
    };
    (err.to_response(request_id), rescued)
}

#[cfg(test)]
mod tests;
