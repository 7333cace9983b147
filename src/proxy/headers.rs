//! Hop-by-hop header handling (RFC 9110 §7.6.1).
//!
//! A proxy must not forward connection-specific fields: the fixed set below, plus every field named
//! in `Connection`. This runs in both directions, before keygate adds any header of its own, so a
//! caller cannot make keygate drop a header it sets (e.g. by listing `x-request-id` in
//! `Connection`).

use http::header::{self, HeaderMap, HeaderName};

/// Whether `name` is hop-by-hop whatever `Connection` says (RFC 9110 §7.6.1, the legacy
/// `Keep-Alive` / `Proxy-Connection` of RFC 7230 §A.1.2, and `Upgrade`, which keygate never
/// tunnels).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::PROXY_AUTHENTICATE
        || *name == header::PROXY_AUTHORIZATION
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Removes hop-by-hop fields and every field listed in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One scan of the names (a handful, compared without hashing) finds what to remove; most
    // messages carry none, or only `Connection: keep-alive`. Collected first: the map cannot be
    // changed while it is borrowed.
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if is_hop_by_hop(name) {
            doomed.push(name.clone());
        }
    }
    if doomed.is_empty() {
        return;
    }
    // Fields named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
    let listed = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim_matches(|c| c == ' ' || c == '\t'))
        // `keep-alive`, the usual token, is a fixed hop-by-hop field: already in `doomed`.
        .filter(|token| !token.is_empty() && !token.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .filter(|name| headers.contains_key(name));
    let listed: Vec<HeaderName> = listed.collect();
    for name in doomed.into_iter().chain(listed) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn fixed_hop_by_hop_fields_are_removed_and_end_to_end_kept() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic abc"),
            ("content-type", "application/json"),
            ("x-ratelimit-limit", "25"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        // The order of different field names carries no meaning (RFC 9110 §5.3), and removing
        // from a `HeaderMap` may reorder them.
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-ratelimit-limit"]);
    }

    #[test]
    fn fields_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close, X-Foo"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static(" x-bar ,\tKeep-Alive"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("x-bar", HeaderValue::from_static("2"));
        h.insert("x-baz", HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-foo").is_none());
        assert!(h.get("x-bar").is_none());
        assert!(h.get("keep-alive").is_none());
        assert_eq!(h["x-baz"], "3");
        assert!(h.get(header::CONNECTION).is_none());
    }
}
