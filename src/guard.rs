//! Request guard: refuses governed requests whose meaning keygate and the upstream could disagree on.
//!
//! A guardrail is only as good as its agreement with the upstream about what a request means
//! (docs/architecture.md). This module is the first stage of the pipeline, before identity and
//! any decision: [`classify`] runs on every request and decides whether it is aimed at the
//! `/iam/v2/api-keys` endpoints — refusing any path that is not plain and that some lenient HTTP
//! stack could read as lying under `/iam/` ([`lenient`]); for governed requests (and only those)
//! [`check_headers`], [`read_body`] and
//! [`parse_body`] reject anything ambiguous — non-canonical paths, method overrides, duplicate
//! framing or credentials, foreign media types or encodings, oversized bodies, and JSON with
//! duplicate or case-colliding keys. A rejected request is answered by keygate and never forwarded.
//!
//! It deliberately does not normalise anything: a request is either canonical, and then forwarded
//! byte for byte, or refused with 400/405/413/415. It does not decide (that is `policy`), does not
//! authenticate, and never puts body content into an error: errors carry a category, a position
//! and, for known schema members only, a JSON pointer.

mod body;
mod headers;
mod json;
pub mod lenient;
mod route;
mod spec;

use http::{Method, StatusCode};

pub use body::read_body;
pub use headers::{check_headers, declared_content_length};
pub use route::{classify, classify_target, Route};
pub use spec::{parse_body, parse_create, parse_update, GovernedBody};

/// The longest path quoted in an error message; longer paths are cut (with `…`), so one request
/// cannot make keygate write 64 KiB error bodies and log lines.
const MAX_PATH_IN_MESSAGE: usize = 256;

/// Why the guard refused a request. Display is the human `detail` sentence; [`GuardError::status`],
/// [`GuardError::code`] and [`GuardError::pointer`] give the rest of the Confluent error shape.
///
/// No variant holds body content, header values or credentials; paths are quoted (they are not
/// secret), bodies are described by line, column and category only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The path could be read (by some HTTP stack) as lying under `/iam/`, but it is not plain,
    /// or it is aimed at the api-keys endpoints but not byte-for-byte canonical.
    #[error("path `{path}` is not canonical: {reason}; {}", advice(.canonical.as_deref()))]
    NonCanonicalPath {
        /// The path as received (cut to [`MAX_PATH_IN_MESSAGE`]).
        path: String,
        /// Which rule it breaks.
        reason: &'static str,
        /// The canonical path the caller most likely meant, when there is one.
        canonical: Option<String>,
    },
    /// The request target could not be parsed at all ([`classify_target`] only).
    #[error("request target is not a valid URI")]
    InvalidTarget,
    /// The query string of a governed request is malformed.
    #[error("query string is not valid: {reason}")]
    InvalidQuery {
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A header or query parameter tries to override the method or path.
    #[error("{location} `{name}` is not accepted on the api-keys endpoints: it could make the upstream see a different method or path than keygate")]
    Override {
        /// `header` or `query parameter`.
        location: &'static str,
        /// The header or parameter name (canonical spelling).
        name: &'static str,
    },
    /// The method is not one of the governed combinations for this path.
    #[error("method `{method}` is not allowed on `{path}`; allowed: {allow}")]
    MethodNotAllowed {
        /// The method received.
        method: Method,
        /// The canonical path template.
        path: &'static str,
        /// Value for the `Allow` header.
        allow: &'static str,
    },
    /// More than one `Authorization` header.
    #[error("more than one `authorization` header")]
    DuplicateAuthorization,
    /// The message framing is ambiguous or unsupported (RFC 9112 §6).
    #[error("ambiguous message framing: {reason}")]
    Framing {
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// `Content-Type` is missing or not `application/json` (with at most `charset=utf-8`).
    #[error("unsupported content type: {reason}; send `application/json` (optionally with `charset=utf-8`)")]
    UnsupportedMediaType {
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// `Content-Encoding` other than `identity`.
    #[error("unsupported content encoding: only `identity` is accepted on the api-keys endpoints")]
    UnsupportedContentEncoding,
    /// The body is larger than the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Reading the body failed (the connection broke, the framing was invalid).
    #[error("request body could not be read")]
    BodyRead,
    /// The body carried trailer fields, which could smuggle headers past the checks.
    #[error("request trailers are not accepted on the api-keys endpoints")]
    Trailers,
    /// The body is not valid UTF-8.
    #[error("request body is not valid UTF-8 (first invalid byte at offset {offset})")]
    InvalidUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// A GET or DELETE carried a body.
    #[error("a `{method}` request to the api-keys endpoints must not have a body")]
    UnexpectedBody {
        /// The method received.
        method: Method,
    },
    /// The body is not one complete JSON document.
    #[error("request body is not valid JSON: {category} at line {line} column {column}")]
    InvalidJson {
        /// `syntax error`, `unexpected end of input`, …
        category: &'static str,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// An object has the same key twice, or two keys differing only in letter case.
    #[error("request body has {kind} at line {line} column {column}")]
    DuplicateKey {
        /// `a duplicate key` or `keys that differ only in letter case`.
        kind: &'static str,
        /// JSON pointer, only when every segment is a known schema member name.
        pointer: Option<String>,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// The body is valid JSON but not an object.
    #[error("request body must be a JSON object")]
    NotAnObject,
    /// A member is spelled with a different letter case than the schema (`Resource`).
    #[error("member `{pointer}` must be spelled exactly `{expected}`")]
    NonCanonicalMember {
        /// JSON pointer of the member, spelled canonically.
        pointer: String,
        /// The canonical member name.
        expected: &'static str,
    },
    /// A member is missing, empty, or has the wrong type.
    #[error("`{pointer}` {reason}")]
    InvalidField {
        /// JSON pointer of the member.
        pointer: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An update tries to change an immutable member.
    #[error("`{pointer}` cannot be changed: only `/spec/display_name` and `/spec/description` are mutable")]
    ImmutableField {
        /// JSON pointer of the member.
        pointer: &'static str,
    },
}

// === impl GuardError ===

impl GuardError {
    /// The HTTP status: 400, 405, 413 or 415.
    pub fn status(&self) -> StatusCode {
        match self {
            GuardError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GuardError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GuardError::UnsupportedMediaType { .. } | GuardError::UnsupportedContentEncoding => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            GuardError::NonCanonicalPath { .. }
            | GuardError::InvalidTarget
            | GuardError::InvalidQuery { .. }
            | GuardError::Override { .. }
            | GuardError::DuplicateAuthorization
            | GuardError::Framing { .. }
            | GuardError::BodyRead
            | GuardError::Trailers
            | GuardError::InvalidUtf8 { .. }
            | GuardError::UnexpectedBody { .. }
            | GuardError::InvalidJson { .. }
            | GuardError::DuplicateKey { .. }
            | GuardError::NotAnObject
            | GuardError::NonCanonicalMember { .. }
            | GuardError::InvalidField { .. }
            | GuardError::ImmutableField { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// Confluent-style machine code for the `code` member of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            GuardError::NonCanonicalPath { .. } => "non_canonical_path",
            GuardError::InvalidTarget | GuardError::BodyRead | GuardError::Trailers => {
                "invalid_request"
            }
            GuardError::InvalidQuery { .. } => "invalid_query",
            GuardError::Override { .. } => "method_override",
            GuardError::MethodNotAllowed { .. } => "method_not_allowed",
            GuardError::DuplicateAuthorization => "duplicate_authorization",
            GuardError::Framing { .. } => "ambiguous_framing",
            GuardError::UnsupportedMediaType { .. } | GuardError::UnsupportedContentEncoding => {
                "unsupported_media_type"
            }
            GuardError::PayloadTooLarge { .. } => "payload_too_large",
            GuardError::InvalidUtf8 { .. } | GuardError::InvalidJson { .. } => "invalid_json",
            GuardError::UnexpectedBody { .. } => "unexpected_body",
            GuardError::DuplicateKey { .. } => "duplicate_key",
            GuardError::NonCanonicalMember { .. } => "non_canonical_member",
            GuardError::NotAnObject | GuardError::InvalidField { .. } => "invalid_field",
            GuardError::ImmutableField { .. } => "immutable_field",
        }
    }

    /// JSON pointer into the body (for `source.pointer`), when known and safe to show.
    pub fn pointer(&self) -> Option<&str> {
        match self {
            GuardError::DuplicateKey { pointer, .. } => pointer.as_deref(),
            GuardError::NonCanonicalMember { pointer, .. } => Some(pointer),
            GuardError::InvalidField { pointer, .. } | GuardError::ImmutableField { pointer } => {
                Some(pointer)
            }
            GuardError::NonCanonicalPath { .. }
            | GuardError::InvalidTarget
            | GuardError::InvalidQuery { .. }
            | GuardError::Override { .. }
            | GuardError::MethodNotAllowed { .. }
            | GuardError::DuplicateAuthorization
            | GuardError::Framing { .. }
            | GuardError::UnsupportedMediaType { .. }
            | GuardError::UnsupportedContentEncoding
            | GuardError::PayloadTooLarge { .. }
            | GuardError::BodyRead
            | GuardError::Trailers
            | GuardError::InvalidUtf8 { .. }
            | GuardError::UnexpectedBody { .. }
            | GuardError::InvalidJson { .. }
            | GuardError::NotAnObject => None,
        }
    }

    /// The `Allow` header value for a 405, `None` otherwise.
    pub fn allow(&self) -> Option<&'static str> {
        match self {
            GuardError::MethodNotAllowed { allow, .. } => Some(allow),
            _ => None,
        }
    }

    /// A [`GuardError::NonCanonicalPath`] quoting at most [`MAX_PATH_IN_MESSAGE`] bytes of `path`
    /// (and of the suggested canonical path).
    fn non_canonical(path: &str, reason: &'static str, canonical: Option<String>) -> Self {
        GuardError::NonCanonicalPath {
            path: cut(path),
            reason,
            canonical: canonical.map(|c| cut(&c)),
        }
    }
}

/// `text` cut to at most [`MAX_PATH_IN_MESSAGE`] bytes (with `…`).
fn cut(text: &str) -> String {
    if text.len() <= MAX_PATH_IN_MESSAGE {
        return text.to_owned();
    }
    let mut end = MAX_PATH_IN_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// What a refused path should have been.
fn advice(canonical: Option<&str>) -> String {
    match canonical {
        Some(canonical) => format!("send `{canonical}`"),
        None => "paths under `/iam/` must be plain: letters, digits, `-._~` and single `/` \
                 separators"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests;
