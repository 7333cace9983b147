//! One test per rule of the lenient model, plus what it must leave alone.

use super::*;

fn governed(path: &str) -> bool {
    read(path.as_bytes()).governed()
}

fn under_iam(path: &str) -> bool {
    read(path.as_bytes()).under_iam()
}

fn applied(path: &str) -> Applied {
    read(path.as_bytes()).applied
}

#[test]
fn plain_paths_have_one_reading_as_written() {
    let model = read(b"/iam/v2/api-keys/ABC");
    let expected: [&[u8]; 4] = [b"iam", b"v2", b"api-keys", b"ABC"];
    assert_eq!(model.readings(), vec![expected.to_vec()]);
    assert_eq!(model.applied, Applied::default());
    assert!(model.governed());
}

#[test]
fn rule_1_percent_decoding_repeats_until_stable() {
    assert!(governed("/iam%2Fv2%2Fapi-keys"));
    assert!(governed("/iam%252Fv2%252Fapi-keys"));
    assert!(governed("/%2569am/v2/api-keys"));
    assert!(governed(&format!("/iam%{}2Fv2/api-keys", "25".repeat(20))));
    let flags = applied("/iam%252Fv2/api-keys");
    assert!(flags.percent && flags.double_percent);
    assert!(applied("/iam%2Fv2/api-keys").percent);
    assert!(!applied("/iam%2Fv2/api-keys").double_percent);
    // A `%` that starts no escape stays as it is.
    assert!(!under_iam("/org/100%/iam"));
    assert!(!under_iam("/iam%zz/x"));
}

#[test]
fn rule_1_iis_unicode_escapes_are_decoded() {
    assert!(governed("/iam%u002Fv2%u002fapi-keys"));
    assert!(governed("/%u0069am/v2/api-keys"));
    assert!(governed("/iam/v2/api%U002Dkeys"));
    assert!(applied("/%u0069am/v2/api-keys").iis_unicode);
    // `%u` with fewer than four hex digits is no escape.
    assert!(!under_iam("/%u69am/v2/api-keys"));
}

#[test]
fn rule_2_overlong_utf8_reads_as_the_ascii_it_encodes() {
    // 2-, 3-, 4-, 5- and 6-byte forms of `/`.
    for slash in [
        "%C0%AF",
        "%E0%80%AF",
        "%F0%80%80%AF",
        "%F8%80%80%80%AF",
        "%FC%80%80%80%80%AF",
    ] {
        let path = format!("/iam/v2{slash}api-keys");
        assert!(governed(&path), "{path}");
        assert!(applied(&path).overlong, "{path}");
    }
    // Overlong dots make dot segments; overlong letters spell the prefix.
    assert!(governed("/x/%C0%AE%C0%AE/iam/v2/api-keys"));
    assert!(governed("/%C1%A9am/v2/api-keys"));
    // Raw (already decoded) overlong bytes are read the same way.
    assert!(read(b"/iam/v2\xC0\xAFapi-keys").governed());
}

#[test]
fn rule_2_overlong_non_ascii_is_re_encoded_shortest_and_then_folded() {
    // An overlong 4-byte form of U+FF0F (full-width solidus) is a `/` too.
    assert!(governed("/iam/v2%F0%8F%BC%8Fapi-keys"));
}

#[test]
fn rule_2_unicode_lookalikes_fold_to_ascii() {
    // Full-width letters, digits, solidus and hyphen, raw and percent-encoded.
    assert!(governed("/ｉａｍ／ｖ２／ａｐｉ－ｋｅｙｓ"));
    assert!(governed("/iam/v2%EF%BC%8Fapi%EF%BC%8Dkeys"));
    // A full-width `%` starts an escape once folded.
    assert!(governed("/iam/v2％２Ｆapi-keys"));
    // Other slashes, dots and hyphens.
    assert!(governed("/iam∕v2⁄api‐keys"));
    assert!(governed("/x/․․/iam/v2/api-keys"));
    // Letters whose case mapping is ASCII.
    assert!(governed("/ıam/v2/api-\u{212A}ey\u{017F}"));
    assert!(governed("/İAM/v2/api-keys"));
    assert!(applied("/ｉam").lookalike);
}

#[test]
fn rule_3_backslash_is_a_separator() {
    assert!(governed("/iam\\v2\\api-keys"));
    assert!(governed("/iam%5Cv2%5capi-keys"));
    assert!(governed("/iam/v2/api-keys%EF%BC%BCID"));
    assert!(applied("/iam\\v2").backslash);
}

#[test]
fn rule_4_params_are_dropped_per_segment() {
    assert!(governed("/iam;x=1/v2;/api-keys;jsessionid=0"));
    assert!(governed("/iam%3Bx/v2/api-keys"));
    assert!(governed("/x/..;/iam/v2/api-keys"));
    assert!(applied("/iam;x/v2").params);
}

#[test]
fn rule_5_whitespace_and_control_characters_are_trimmed() {
    for pad in [
        "%20", "%09", "%0D", "%0A", "%0B", "%0C", "%00", "%7F", "%0D%0A",
    ] {
        let path = format!("/iam/v2/api-keys{pad}");
        assert!(governed(&path), "{path}");
        assert!(applied(&path).encoded_whitespace, "{path}");
        let path = format!("/{pad}iam{pad}/v2/{pad}api-keys");
        assert!(governed(&path), "{path}");
    }
    // Raw whitespace (only a raw request target can carry it) and a whole padded path.
    assert!(read(b" /iam/v2/api-keys\t").governed());
    assert!(read(b"/iam/v2/api-keys ").applied.raw_whitespace);
    // Unicode spaces become spaces, then are trimmed.
    assert!(governed("/iam/v2/api-keys\u{3000}"));
    assert!(governed("/iam/v2/api-keys%E2%80%8B"));
    // A segment of nothing but blanks disappears once `//` collapses.
    assert!(governed("/%20/iam/v2/api-keys"));
}

#[test]
fn rule_6_a_decoded_terminator_ends_the_path() {
    assert!(governed("/iam/v2/api-keys%3Fx=1"));
    assert!(governed("/iam/v2/api-keys%23frag"));
    assert!(under_iam("/iam%3F/../../org/v2/environments"));
    assert!(applied("/iam/v2/api-keys%3F").terminator);
}

#[test]
fn rule_7_dot_segments_resolve_before_and_after_collapsing() {
    // Collapsing `//` first: `..` removes `x`.
    assert!(governed("/x//../iam/v2/api-keys"));
    // Resolving first (RFC 3986 §5.2.4): `..` removes the empty segment.
    assert!(governed("/iam/v2//../api-keys"));
    // Not resolving at all: still under `/iam/`.
    assert!(under_iam("/iam/v2/../../org/v2/environments"));
    assert!(governed("/org/../iam/./v2/api-keys"));
    let flags = applied("/iam//v2/./api-keys");
    assert!(flags.empty_segment && flags.dot_segment);
    // A trailing `/` is not an empty segment.
    assert!(!applied("/iam/v2/api-keys/").empty_segment);
}

#[test]
fn ascii_case_is_folded_when_comparing() {
    assert!(governed("/IAM/V2/API-KEYS"));
    assert!(under_iam("/Iam/v2/role-bindings"));
}

#[test]
fn paths_that_no_reading_puts_under_iam_stay_outside() {
    for path in [
        "/org/v2/environments/env%2D5q6w7e",
        "/cmk/v2/clusters/lkc%2Dx?environment=env-1",
        "/iamx/v2/api-keys",
        "/v2/iam/api-keys",
        "/i%20am/v2/api-keys",
        "/org/v2/%FF%FE",
        "/%C0%AF%C0%AForg",
    ] {
        assert!(!under_iam(path), "{path}");
        assert!(!governed(path), "{path}");
    }
}

#[test]
fn bytes_that_are_not_utf8_are_kept() {
    let (decoded, _) = decode(b"/a%FF%C0b");
    assert_eq!(decoded, b"/a\xFF\xC0b");
}

#[test]
fn suggestion_is_the_canonical_path_a_reading_gives() {
    let suggest = |path: &str| read(path.as_bytes()).suggestion();
    assert_eq!(
        suggest("/iam/v2/api-keys%20").as_deref(),
        Some("/iam/v2/api-keys")
    );
    assert_eq!(
        suggest("/IAM/v2/api-keys/ABCD1234%09").as_deref(),
        Some("/iam/v2/api-keys/ABCD1234")
    );
    assert_eq!(
        suggest("/iam/v2/role-bindings%20").as_deref(),
        Some("/iam/v2/role-bindings")
    );
    // No plain reading: no suggestion.
    assert_eq!(suggest("/iam/v2/api-keys/a%2Cb"), None);
}
