//! Hop-by-hop header handling (RFC 9110 §7.6.1).
//!
//! A proxy must not forward connection-specific fields: the fixed set below, plus every field named
//! in `Connection`. This runs in both directions, before keygate adds any header of its own, so a
//! caller cannot make keygate drop a header it sets (e.g. by listing `x-request-id` in
//! `Connection`).

use http::header::{self, HeaderMap, HeaderName};

/// Fields that are hop-by-hop whatever `Connection` says (RFC 9110 §7.6.1, and the legacy
/// `Keep-Alive` / `Proxy-Connection` of RFC 7230 §A.1.2).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop fields and every field listed in `Connection` (and `Upgrade`, which keygate
/// never tunnels).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Fields named in Connection are hop-by-hop too (RFC 9110 §7.6.1). Collect first: the map
    // cannot be mutated while `Connection` values are borrowed.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
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
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type", "x-ratelimit-limit"]);
    }

    #[test]
    fn fields_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close, X-Foo"));
        h.append(header::CONNECTION, HeaderValue::from_static(" x-bar ,"));
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("x-bar", HeaderValue::from_static("2"));
        h.insert("x-baz", HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-foo").is_none());
        assert!(h.get("x-bar").is_none());
        assert_eq!(h["x-baz"], "3");
        assert!(h.get(header::CONNECTION).is_none());
    }
}
