//! Route classification: is this request aimed at the api-keys endpoints, and is its path exact?
//!
//! Runs on every request, so the common case (an ordinary path with no `%`, `\`, `;`, dot
//! segment or `//`) is one pass over the path bytes with no allocation. Only a path that could
//! be read as the governed prefix by *some* interpretation (percent-decoded any number of times,
//! `\` as `/`, `;params` dropped, dot segments resolved either before or after collapsing `//`,
//! any letter case) is examined further, and such a path must then be byte-for-byte canonical.
//! Nothing here rewrites the request: the forwarder sends the same URI it was given.

use http::{Method, Uri};

use super::GuardError;
use crate::policy::action::Action;

/// The governed collection path, byte for byte.
const COLLECTION: &str = "/iam/v2/api-keys";

/// The prefix of an item path (`/iam/v2/api-keys/{id}`).
const ITEM_PREFIX: &str = "/iam/v2/api-keys/";

/// The governed prefix as normalised segments.
const PREFIX_SEGMENTS: [&[u8]; 3] = [b"iam", b"v2", b"api-keys"];

/// Longest key id accepted in a path: reference §4 says ids are opaque strings of at most 255
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

/// A canonical governed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GovernedRoute {
    /// What the request does.
    pub action: Action,
    /// The `{id}` of `/iam/v2/api-keys/{id}` (unreserved characters only), `None` for the
    /// collection.
    pub key_id: Option<String>,
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
    let aimed = if is_plain(bytes) {
        plain_is_aimed(bytes)
    } else {
        suspicious_is_aimed(bytes)
    };
    if !aimed {
        return Ok(Route::Ungoverned);
    }
    if fragment {
        return Err(GuardError::non_canonical(
            path,
            "fragment (`#`) in the request target",
        ));
    }
    let key_id =
        canonical_key_id(path).map_err(|reason| GuardError::non_canonical(path, reason))?;
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

/// True when the path has nothing any server could normalise: no `%`, `\`, `;`, `//` or dot
/// segment. Such a path means the same thing to every parser, up to letter case.
fn is_plain(path: &[u8]) -> bool {
    let mut segment_start = 0;
    for (at, &byte) in path.iter().enumerate() {
        match byte {
            b'%' | b'\\' | b';' => return false,
            b'/' => {
                let segment = &path[segment_start..at];
                if (at > 0 && segment.is_empty()) || is_dot_segment(segment) {
                    return false;
                }
                segment_start = at + 1;
            }
            _ => {}
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

// === the slow path ===

/// Whether any plausible server interpretation of `path` lands on the governed prefix.
fn suspicious_is_aimed(path: &[u8]) -> bool {
    let mut normalised: Vec<u8> = percent_decode_fully(path)
        .into_iter()
        .map(|byte| match byte {
            b'\\' => b'/',
            other => other.to_ascii_lowercase(),
        })
        .collect();
    if normalised_is_aimed(&normalised) {
        return true;
    }
    // A server that decodes and then re-parses could end the path at a decoded `?`, `#` or NUL.
    match normalised
        .iter()
        .position(|&b| matches!(b, b'?' | b'#' | 0))
    {
        Some(end) => {
            normalised.truncate(end);
            normalised_is_aimed(&normalised)
        }
        None => false,
    }
}

/// `path` is decoded, lowercased and uses `/` only. Checks it as written (empty segments
/// dropped), with dot segments resolved after collapsing `//`, and resolved RFC 3986 §5.2.4
/// style (empty segments kept while resolving).
fn normalised_is_aimed(path: &[u8]) -> bool {
    let segments: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .skip(1)
        .map(|segment| match segment.iter().position(|&b| b == b';') {
            Some(at) => &segment[..at],
            None => segment,
        })
        .collect();
    let non_empty: Vec<&[u8]> = segments.iter().copied().filter(|s| !s.is_empty()).collect();
    let mut rfc = resolve_dots(&segments);
    rfc.retain(|s| !s.is_empty());
    starts_with_prefix(&non_empty)
        || starts_with_prefix(&resolve_dots(&non_empty))
        || starts_with_prefix(&rfc)
}

fn resolve_dots<'a>(segments: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(segments.len());
    for &segment in segments {
        match segment {
            b"." => {}
            b".." => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn starts_with_prefix(segments: &[&[u8]]) -> bool {
    segments.len() >= PREFIX_SEGMENTS.len() && segments[..PREFIX_SEGMENTS.len()] == PREFIX_SEGMENTS
}

/// Decodes `%XX` until nothing changes (each round shortens the input, so this terminates).
fn percent_decode_fully(input: &[u8]) -> Vec<u8> {
    let mut current = input.to_vec();
    loop {
        let next = percent_decode_once(&current);
        if next.len() == current.len() {
            return current;
        }
        current = next;
    }
}

fn percent_decode_once(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut at = 0;
    while at < input.len() {
        if input[at] == b'%' {
            if let (Some(high), Some(low)) = (
                input.get(at + 1).and_then(|&b| hex_value(b)),
                input.get(at + 2).and_then(|&b| hex_value(b)),
            ) {
                out.push(high << 4 | low);
                at += 3;
                continue;
            }
        }
        out.push(input[at]);
        at += 1;
    }
    out
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

// === canonical form ===

/// The key id of a canonical governed path, or why the path is not canonical.
fn canonical_key_id(path: &str) -> Result<Option<String>, &'static str> {
    if path == COLLECTION {
        return Ok(None);
    }
    if let Some(id) = path.strip_prefix(ITEM_PREFIX) {
        if !id.is_empty()
            && id.len() <= MAX_KEY_ID_LEN
            && !is_dot_segment(id.as_bytes())
            && id.bytes().all(is_unreserved)
        {
            return Ok(Some(id.to_owned()));
        }
    }
    Err(non_canonical_reason(path))
}

/// RFC 3986 §2.3 unreserved characters.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// The first rule a non-canonical governed path breaks, for the error message.
fn non_canonical_reason(path: &str) -> &'static str {
    let bytes = path.as_bytes();
    if bytes.contains(&b'%') {
        return "percent-encoded characters";
    }
    if bytes.contains(&b'\\') {
        return "backslash (`\\`)";
    }
    if bytes.contains(&b';') {
        return "`;` parameters";
    }
    if bytes.windows(2).any(|pair| pair == b"//") {
        return "empty segment (`//`)";
    }
    if bytes.split(|&b| b == b'/').any(is_dot_segment) {
        return "dot segment (`.` or `..`)";
    }
    if bytes.ends_with(b"/") {
        return "trailing `/`";
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
        let name = if raw_name.contains('%') {
            decoded = percent_decode_fully(raw_name.as_bytes());
            decoded.as_slice()
        } else {
            raw_name.as_bytes()
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
