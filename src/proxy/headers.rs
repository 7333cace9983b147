//! Hop-by-hop header handling (RFC 9110 §7.6.1).
//!
//! A proxy must not forward connection-specific fields: the fixed set below, plus every field named
//! in `Connection`. This runs in both directions, before keygate adds any header of its own, so a
//! caller cannot make keygate drop a header it sets (e.g. by listing `x-request-id` in
//! `Connection`).

use http::header::{self, HeaderMap, HeaderName};

/// Whether `name` is hop-by-hop whatever `Connection` says (RFC 9110 §7.6.1, the legacy
/// `Keep-Alive` / `Proxy-Connection` of RFC 7230 §A.1.2, and `Upgrade`, which keygate never
/// tunnels). One string match: the names are lower case, and a `match` on `&str` dispatches on
/// the length before comparing bytes, so most names are rejected by their length alone.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "keep-alive"
            | "proxy-connection"
    )
}

/// Removes hop-by-hop fields and every field listed in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Scan the names (a handful, compared without hashing); most messages carry no hop-by-hop
    // field, or only `Connection: keep-alive`, so this usually ends after one or two scans with
    // nothing allocated. Each pass removes one name, then looks again: the map cannot change
    // while it is borrowed, and collecting the names first would allocate on every response.
    loop {
        let Some(name) = headers.keys().find(|name| is_hop_by_hop(name)).cloned() else {
            return;
        };
        if name == header::CONNECTION {
            remove_listed(headers);
        }
        headers.remove(name);
    }
}

/// Removes the fields named in `Connection` (RFC 9110 §7.6.1), but not `Connection` itself.
fn remove_listed(headers: &mut HeaderMap) {
    let values = headers.get_all(header::CONNECTION);
    // What nearly every message says: nothing to look up.
    let mut iter = values.iter();
    if let (Some(only), None) = (iter.next(), iter.next()) {
        let only = only.as_bytes();
        if only.eq_ignore_ascii_case(b"keep-alive") || only.eq_ignore_ascii_case(b"close") {
            return;
        }
    }
    let listed: Vec<HeaderName> = values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim_matches(|c| c == ' ' || c == '\t'))
        // `keep-alive` (the usual token) is a fixed hop-by-hop field, removed by the caller's
        // scan; `close` names no field. Neither needs a lookup.
        .filter(|token| {
            !token.is_empty()
                && !token.eq_ignore_ascii_case("keep-alive")
                && !token.eq_ignore_ascii_case("close")
        })
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
    for name in listed {
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
