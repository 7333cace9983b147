//! Header checks for governed requests: one credential, no overrides, unambiguous framing, JSON.
//!
//! Only called for governed routes (after [`super::classify`]). It reads header names and the
//! values of framing and media-type headers; it never reads, copies or quotes the value of
//! `Authorization` or any other header in an error.

use http::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING,
};
use http::{HeaderMap, HeaderValue, Method};

use super::GuardError;

/// Headers that some servers and frameworks read as a replacement method or path, with the
/// spelling used in error messages. The last two are the IIS/Symfony path overrides.
const OVERRIDE_HEADERS: [(&str, &str); 5] = [
    ("x-http-method-override", "X-HTTP-Method-Override"),
    ("x-http-method", "X-HTTP-Method"),
    ("x-method-override", "X-Method-Override"),
    ("x-original-url", "X-Original-URL"),
    ("x-rewrite-url", "X-Rewrite-URL"),
];

/// Longest `Content-Length` value parsed: 19 digits always fit a `u64`.
const MAX_CONTENT_LENGTH_DIGITS: usize = 19;

/// Checks the headers of a governed request (docs/architecture.md §2).
///
/// 400 for a second `Authorization`, any method/path override header, both `Content-Length` and
/// `Transfer-Encoding`, more than one or a malformed `Content-Length`, or a transfer coding other
/// than `chunked`. When the request has a body (POST, PATCH, or any request announcing one):
/// 415 unless `Content-Type` is `application/json` with at most `charset=utf-8`, and 415 for a
/// `Content-Encoding` other than `identity`.
pub fn check_headers(method: &Method, headers: &HeaderMap) -> Result<(), GuardError> {
    if headers.get_all(AUTHORIZATION).iter().nth(1).is_some() {
        return Err(GuardError::DuplicateAuthorization);
    }
    // One scan of the request's (few) names; every override header starts with `x-`.
    let overriding = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-"))
        .find_map(|name| OVERRIDE_HEADERS.iter().find(|(h, _)| *h == name.as_str()));
    if let Some((_, name)) = overriding {
        return Err(GuardError::Override {
            location: "header",
            name,
        });
    }
    let content_length = framing(headers)?;
    let has_body = method == Method::POST
        || method == Method::PATCH
        || content_length.is_some_and(|length| length > 0)
        || headers.contains_key(TRANSFER_ENCODING);
    if has_body {
        check_content_type(headers)?;
        check_content_encoding(headers)?;
    }
    Ok(())
}

/// The `Content-Length` of a request, if it has exactly one well-formed value. Meant for
/// [`super::read_body`] after [`check_headers`] succeeded.
pub fn declared_content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => parse_content_length(value),
        _ => None,
    }
}

/// RFC 9112 §6.1–6.3: refuse anything a front end and the upstream could frame differently.
fn framing(headers: &HeaderMap) -> Result<Option<u64>, GuardError> {
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let length = lengths.next();
    if lengths.next().is_some() {
        return Err(GuardError::Framing {
            reason: "more than one `content-length`",
        });
    }
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter();
    let coding = codings.next();
    if length.is_some() && coding.is_some() {
        return Err(GuardError::Framing {
            reason: "both `content-length` and `transfer-encoding`",
        });
    }
    if let Some(coding) = coding {
        let chunked = coding
            .to_str()
            .is_ok_and(|value| value.trim_matches(is_ows).eq_ignore_ascii_case("chunked"));
        if !chunked || codings.next().is_some() {
            return Err(GuardError::Framing {
                reason: "`transfer-encoding` other than `chunked`",
            });
        }
    }
    match length {
        None => Ok(None),
        Some(value) => parse_content_length(value)
            .map(Some)
            .ok_or(GuardError::Framing {
                reason: "malformed `content-length`",
            }),
    }
}

/// `Content-Length = 1*DIGIT` (RFC 9110 §8.6), nothing else: no sign, no list, no spaces.
fn parse_content_length(value: &HeaderValue) -> Option<u64> {
    let bytes = value.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_CONTENT_LENGTH_DIGITS
        || !bytes.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    bytes.iter().try_fold(0u64, |total, &digit| {
        total.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// `application/json`, optionally with one `charset=utf-8` parameter (RFC 9110 §8.3.1: type,
/// subtype, parameter name and charset value are case-insensitive; the value may be quoted).
fn check_content_type(headers: &HeaderMap) -> Result<(), GuardError> {
    let unsupported = |reason| GuardError::UnsupportedMediaType { reason };
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let value = values
        .next()
        .ok_or(unsupported("no `content-type` header"))?;
    if values.next().is_some() {
        return Err(unsupported("more than one `content-type` header"));
    }
    let value = value
        .to_str()
        .map_err(|_| unsupported("`content-type` is not visible ASCII"))?;
    let mut parts = value.split(';');
    let media_type = parts.next().unwrap_or_default().trim_matches(is_ows);
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(unsupported("media type is not `application/json`"));
    }
    let mut charset_seen = false;
    for parameter in parts {
        let parameter = parameter.trim_matches(is_ows);
        let Some((name, value)) = parameter.split_once('=') else {
            return Err(unsupported("malformed media type parameter"));
        };
        if !name.eq_ignore_ascii_case("charset") {
            return Err(unsupported("media type parameter other than `charset`"));
        }
        let value = value
            .strip_prefix('"')
            .and_then(|quoted| quoted.strip_suffix('"'))
            .unwrap_or(value);
        if !value.eq_ignore_ascii_case("utf-8") {
            return Err(unsupported("charset other than `utf-8`"));
        }
        if charset_seen {
            return Err(unsupported("more than one `charset` parameter"));
        }
        charset_seen = true;
    }
    Ok(())
}

/// Only `identity` (RFC 9110 §8.4): keygate must parse exactly the bytes the upstream will.
fn check_content_encoding(headers: &HeaderMap) -> Result<(), GuardError> {
    for value in headers.get_all(CONTENT_ENCODING) {
        let identity_only = value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .all(|coding| coding.trim_matches(is_ows).eq_ignore_ascii_case("identity"))
        });
        if !identity_only {
            return Err(GuardError::UnsupportedContentEncoding);
        }
    }
    Ok(())
}

/// RFC 9110 §5.6.3 optional whitespace.
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

#[cfg(test)]
mod tests;
