//! Route classification: is this request aimed at the api-keys endpoints, and is its path exact?
//!
//! Runs on every request, so the common case, a *plain* path (RFC 3986 unreserved characters and
//! single `/` separators, no dot segments), is one pass over the path bytes with no allocation:
//! a plain path means the same to every parser up to letter case, so it is governed when it
//! starts with `/iam/v2/api-keys` in any case (and must then be byte-for-byte canonical).
//!
//! Any other path is read by the lenient model ([`super::lenient`]): if *any* reading some HTTP
//! stack might apply lies under `/iam/`, the request is refused (400), whatever the method, since
//! keygate cannot know what the upstream would make of it. Otherwise it is ungoverned (`%` in an
//! ordinary `/org/` or `/cmk/` path streams through untouched). Nothing here rewrites the
//! request: the forwarder sends the same URI it was given.

use http::{Method, Uri};

use super::lenient::{self, is_unreserved, LenientPath};
use super::GuardError;
use crate::model::Action;
use crate::model::GovernedRoute;

/// The governed collection path, byte for byte.
const COLLECTION: &str = "/iam/v2/api-keys";

/// The prefix of an item path (`/iam/v2/api-keys/{id}`).
const ITEM_PREFIX: &str = "/iam/v2/api-keys/";

/// Longest key id accepted in a path: docs/confluent-api.md §4 says ids are opaque strings of at most 255
/// characters, so anything longer is not an id the upstream could have issued.
const MAX_KEY_ID_LEN: usize = 255;

/// `Allow` for the collection path.
const COLLECTION_ALLOW: &str = "GET, POST";

/// `Allow` for an item path.
const ITEM_ALLOW: &str = "GET, PATCH, DELETE";

/// Query parameters that web frameworks read as a method override.
const OVERRIDE_PARAMS: [&str; 4] = [
    "_method",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// What a request is, as far as governance is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Not aimed at `/iam/v2/api-keys`: forwarded transparently.
    Ungoverned,
    /// A canonical request to one of the five governed method/path combinations.
    Governed(GovernedRoute),
}

/// Classifies a request by method and URI (as parsed by hyper).
///
/// Returns [`Route::Ungoverned`] for anything not aimed at the api-keys endpoints (without
/// allocating in the common case); for a path that is aimed at them, either a [`GovernedRoute`]
/// or an error: non-canonical path (400), malformed query or `_method` parameter (400), method
/// not governed on that path (405, see [`GuardError::allow`]).
///
/// `http::Uri` silently drops a `#fragment` when it parses a request target, so the URI seen here
/// and the URI forwarded are both fragment-free; callers holding the raw target use
/// [`classify_target`].
pub fn classify(method: &Method, uri: &Uri) -> Result<Route, GuardError> {
    classify_parts(method, uri.path(), uri.query(), false)
}

/// Like [`classify`], for a raw request target string (e.g. one typed into `keygate explain`):
/// additionally rejects a `#` fragment on governed paths, which `http::Uri` would drop.
pub fn classify_target(method: &Method, target: &str) -> Result<Route, GuardError> {
    let (before, fragment) = match target.find('#') {
        Some(at) => (&target[..at], true),
        None => (target, false),
    };
    let uri: Uri = before.parse().map_err(|_| GuardError::InvalidTarget)?;
    classify_parts(method, uri.path(), uri.query(), fragment)
}

fn classify_parts(
    method: &Method,
    path: &str,
    query: Option<&str>,
    fragment: bool,
) -> Result<Route, GuardError> {
    let bytes = path.as_bytes();
    if !is_plain(bytes) {
        // Not plain: refused if any lenient reading lies under `/iam/`, whatever the method.
        return if lenient::read(bytes).under_iam() {
            Err(refusal(path))
        } else {
            Ok(Route::Ungoverned)
        };
    }
    if !plain_is_aimed(bytes) {
        return Ok(Route::Ungoverned);
    }
    if fragment {
        return Err(GuardError::non_canonical(
            path,
            "fragment (`#`) in the request target",
            canonical_suggestion(path),
        ));
    }
    let key_id = canonical_key_id(path).ok_or_else(|| refusal(path))?;
    if let Some(query) = query {
        check_query(query)?;
    }
    let action = match &key_id {
        None if method == Method::POST => Action::CreateApiKey,
        None if method == Method::GET => Action::ListApiKeys,
        None => return Err(not_allowed(method, COLLECTION, COLLECTION_ALLOW)),
        Some(_) if method == Method::GET => Action::GetApiKey,
        Some(_) if method == Method::PATCH => Action::UpdateApiKey,
        Some(_) if method == Method::DELETE => Action::DeleteApiKey,
        Some(_) => return Err(not_allowed(method, "/iam/v2/api-keys/{id}", ITEM_ALLOW)),
    };
    Ok(Route::Governed(GovernedRoute { action, key_id }))
}

fn not_allowed(method: &Method, path: &'static str, allow: &'static str) -> GuardError {
    GuardError::MethodNotAllowed {
        method: method.clone(),
        path,
        allow,
    }
}

// === the fast path ===

/// True when the path is plain: only RFC 3986 unreserved characters and single `/` separators,
/// no dot segments. Such a path means the same thing to every parser, up to letter case, so the
/// lenient model is not needed (and nothing is allocated).
fn is_plain(path: &[u8]) -> bool {
    let mut segment_start = 0;
    for (at, &byte) in path.iter().enumerate() {
        if byte == b'/' {
            let segment = &path[segment_start..at];
            if (at > 0 && segment.is_empty()) || is_dot_segment(segment) {
                return false;
            }
            segment_start = at + 1;
        } else if !is_unreserved(byte) {
            return false;
        }
    }
    !is_dot_segment(&path[segment_start..])
}

/// A plain path is aimed when it starts with the governed prefix in any letter case, followed by
/// the end or a `/`.
fn plain_is_aimed(path: &[u8]) -> bool {
    let prefix = COLLECTION.as_bytes();
    path.len() >= prefix.len()
        && path[..prefix.len()].eq_ignore_ascii_case(prefix)
        && matches!(path.get(prefix.len()), None | Some(b'/'))
}

fn is_dot_segment(segment: &[u8]) -> bool {
    segment == b"." || segment == b".."
}

// === canonical form ===

/// The key id of a byte-exact canonical governed path (`None` for the collection), or `None`
/// altogether when the path is not canonical.
fn canonical_key_id(path: &str) -> Option<Option<String>> {
    if path == COLLECTION {
        return Some(None);
    }
    let id = path.strip_prefix(ITEM_PREFIX)?;
    (!id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && !is_dot_segment(id.as_bytes())
        && id.bytes().all(is_unreserved))
    .then(|| Some(id.to_owned()))
}

/// The 400 for a path under `/iam/` that is not canonical: the first rule it breaks, and the
/// canonical form when the lenient model yields one.
fn refusal(path: &str) -> GuardError {
    let model = lenient::read(path.as_bytes());
    GuardError::non_canonical(path, non_canonical_reason(path, &model), model.suggestion())
}

fn canonical_suggestion(path: &str) -> Option<String> {
    lenient::read(path.as_bytes()).suggestion()
}

/// The first rule a non-canonical path breaks, most specific first, for the error message.
fn non_canonical_reason(path: &str, model: &LenientPath) -> &'static str {
    let applied = &model.applied;
    let rules = [
        (applied.overlong, "overlong UTF-8 encoding"),
        (applied.iis_unicode, "IIS-style `%u` escape"),
        (
            applied.lookalike,
            "Unicode look-alike characters (full-width or other forms of ASCII)",
        ),
        (
            applied.encoded_whitespace,
            "encoded whitespace or control character",
        ),
        (applied.raw_whitespace, "whitespace or control character"),
        (applied.terminator, "encoded `?`, `#` or NUL"),
        (applied.double_percent, "double percent-encoding"),
        (applied.percent, "percent-encoded characters"),
        (applied.backslash, "backslash (`\\`)"),
        (applied.params, "`;` parameters"),
        (applied.empty_segment, "empty segment (`//`)"),
        (applied.dot_segment, "dot segment (`.` or `..`)"),
    ];
    if let Some((_, reason)) = rules.iter().find(|(applies, _)| *applies) {
        return reason;
    }
    let bytes = path.as_bytes();
    if !bytes.iter().all(|&b| b == b'/' || is_unreserved(b)) {
        return "characters other than letters, digits, `-._~` and `/`";
    }
    if bytes.ends_with(b"/") {
        return "trailing `/`";
    }
    if !model.governed() {
        return "not `/iam/v2/api-keys` or `/iam/v2/api-keys/{id}`";
    }
    if !path.starts_with(COLLECTION) {
        return "letter case differs from `/iam/v2/api-keys`";
    }
    match path.strip_prefix(ITEM_PREFIX) {
        Some(id) if id.contains('/') => "unexpected segment after the key id",
        Some(id) if id.len() > MAX_KEY_ID_LEN => "key id is longer than 255 characters",
        Some(_) => "key id has characters other than `A-Z a-z 0-9 - . _ ~`",
        None => "not `/iam/v2/api-keys` or `/iam/v2/api-keys/{id}`",
    }
}

// === query ===

/// A governed query must have valid percent-encoding and no method-override parameter. It is
/// forwarded as is.
fn check_query(query: &str) -> Result<(), GuardError> {
    let bytes = query.as_bytes();
    for (at, _) in bytes.iter().enumerate().filter(|(_, &b)| b == b'%') {
        let valid = matches!(
            (bytes.get(at + 1), bytes.get(at + 2)),
            (Some(&h), Some(&l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit()
        );
        if !valid {
            return Err(GuardError::InvalidQuery {
                reason: "`%` not followed by two hexadecimal digits",
            });
        }
    }
    // `;` separated parameters in older servers, so treat it as a separator too.
    for pair in query.split(['&', ';']) {
        let raw_name = pair.split_once('=').map_or(pair, |(name, _)| name);
        let decoded;
        let name = if raw_name.bytes().all(is_unreserved) {
            raw_name.as_bytes()
        } else {
            decoded = lenient::decode(raw_name.as_bytes()).0;
            lenient::trim(&decoded)
        };
        if let Some(param) = OVERRIDE_PARAMS
            .iter()
            .find(|param| name.eq_ignore_ascii_case(param.as_bytes()))
        {
            return Err(GuardError::Override {
                location: "query parameter",
                name: param,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
