use std::borrow::Cow;

use serde_json::json;

use super::*;

/// A canary shaped like a real post-2025 Confluent secret: `cflt` + 60 base64 characters.
const CANARY: &str = "cfltAbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/AbCdEfGhIjKlMnOpQrStUv";

#[test]
fn canary_has_the_documented_shape() {
    assert_eq!(CANARY.len(), 64);
}

#[test]
fn secret_debug_and_display_are_masked() {
    let secret = Secret::new(CANARY);
    assert_eq!(format!("{secret:?}"), REDACTED);
    assert_eq!(format!("{secret}"), REDACTED);
    assert_eq!(format!("{:?}", Some(&secret)), format!("Some({REDACTED})"));
    assert_eq!(secret.expose(), CANARY);
}

#[test]
fn secret_deserializes_from_a_string_and_stays_masked() {
    #[derive(Debug, serde::Deserialize)]
    struct Config {
        api_secret: Secret,
    }
    let config: Config = serde_json::from_value(json!({ "api_secret": CANARY })).unwrap();
    assert_eq!(config.api_secret.expose(), CANARY);
    assert!(!format!("{config:?}").contains(CANARY));
}

#[test]
fn text_without_secrets_is_borrowed() {
    let text = "upstream `api.confluent.cloud`: connect timed out after 5s";
    assert!(matches!(redact_text(text), Cow::Borrowed(_)));
    assert!(!contains_secret(text));
}

#[test]
fn cflt_secret_is_masked_wherever_it_appears() {
    let text = format!("bad key {CANARY}, retry; again:{CANARY}");
    let masked = redact_text(&text);
    assert_eq!(
        masked,
        format!("bad key {REDACTED}, retry; again:{REDACTED}")
    );
    assert!(contains_secret(&text));
}

#[test]
fn cflt_followed_by_too_few_characters_is_kept() {
    let text = CANARY[..63].to_owned();
    assert_eq!(redact_text(&text), text);
    assert_eq!(redact_text("the cflt prefix"), "the cflt prefix");
}

#[test]
fn cflt_inside_a_longer_run_masks_the_whole_run() {
    let text = format!("x=AAAA{CANARY}ZZZZ!");
    assert_eq!(redact_text(&text), format!("x=AAAA{REDACTED}!"));
}

#[test]
fn sha256_hex_is_not_mistaken_for_a_secret() {
    let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert_eq!(redact_text(hex), hex);
}

#[test]
fn basic_and_bearer_credentials_are_masked_keeping_the_scheme() {
    assert_eq!(
        redact_text("Authorization: Basic QUJDRDpzZWNyZXQ="),
        format!("Authorization: Basic {REDACTED}")
    );
    assert_eq!(
        redact_text("got bearer\teyJhbGciOi.eyJzdWIiOi.c2ln_-~ from caller"),
        format!("got bearer\t{REDACTED} from caller")
    );
    assert_eq!(
        redact_text("BEARER   abc==, then"),
        format!("BEARER   {REDACTED}, then")
    );
}

#[test]
fn words_after_a_scheme_name_are_not_credentials() {
    // keygate's own help text names the scheme and describes the credential.
    let help = "send `Authorization: Basic base64(key:secret)` with a Cloud or Global API key";
    assert!(
        matches!(redact_text(help), Cow::Borrowed(_)),
        "{}",
        redact_text(help)
    );
    for text in [
        "Basic authentication failed",
        "the bearer of news",
        "use Bearer tokens from your IdP",
        "Basic QUJD is not a pair",
        "Basic base64",
    ] {
        assert_eq!(redact_text(text), text, "{text}");
    }
}

#[test]
fn basic_credentials_are_masked_by_shape() {
    use base64::Engine as _;
    let pair = "DEMOALICE0000001:qL1GO8awy5MBEqYjJVuhDeAW+BMBcfRkr4eJ4wBi17ytg0HjFMQSmoN5UNwxxxx";
    for encoded in [
        base64::engine::general_purpose::STANDARD.encode(pair),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(pair),
        base64::engine::general_purpose::URL_SAFE.encode(pair),
    ] {
        let text = format!("Authorization: Basic {encoded} sent");
        assert_eq!(
            redact_text(&text),
            format!("Authorization: Basic {REDACTED} sent"),
            "{encoded}"
        );
    }
    // A caller that forgot to encode: the whole pair goes, secret included.
    assert_eq!(
        redact_text(&format!("header was Basic {pair}; rejected")),
        format!("header was Basic {REDACTED}; rejected")
    );
}

#[test]
fn scheme_names_without_a_credential_are_kept() {
    for text in [
        "auth method basic",
        "authenticated via Basic; ok",
        "Basic ",
        "Basicfoo bar",
        "xbasic abc",
        "\"authenticationMethod\":\"basic\"",
    ] {
        assert_eq!(redact_text(text), text, "{text}");
    }
}

#[test]
fn masking_inside_json_text_keeps_it_valid_json() {
    let doc = json!({
        "explanation": format!("caller sent Bearer tok.en and {CANARY}"),
        "other": "Basic QUJDRDpzZWNyZXQ=\"quoted",
    });
    let text = serde_json::to_string(&doc).unwrap();
    let masked = redact_text(&text);
    let back: serde_json::Value = serde_json::from_str(&masked).unwrap();
    assert_eq!(
        back["explanation"],
        format!("caller sent Bearer {REDACTED} and {REDACTED}")
    );
    assert_eq!(back["other"], format!("Basic {REDACTED}\"quoted"));
}

#[test]
fn non_ascii_text_around_a_secret_survives() {
    let text = format!("clé: {CANARY} — fin");
    assert_eq!(redact_text(&text), format!("clé: {REDACTED} — fin"));
}

#[test]
fn json_secret_members_are_masked_at_any_depth() {
    let mut doc = json!({
        "api_version": "iam/v2",
        "spec": { "secret": CANARY, "display_name": "ci" },
        "items": [{ "Password": { "nested": 1 } }, { "client_secret": "x" }],
        "sts": { "subject_token": "eyJ", "access_token": "eyJ2" },
        "note": format!("leaked {CANARY}"),
        "count": 3,
    });
    redact_json_secrets(&mut doc);
    assert_eq!(doc["spec"]["secret"], REDACTED);
    assert_eq!(doc["spec"]["display_name"], "ci");
    assert_eq!(doc["items"][0]["Password"], REDACTED);
    assert_eq!(doc["items"][1]["client_secret"], REDACTED);
    assert_eq!(doc["sts"]["subject_token"], REDACTED);
    assert_eq!(doc["sts"]["access_token"], REDACTED);
    assert_eq!(doc["note"], format!("leaked {REDACTED}"));
    assert_eq!(doc["count"], 3);
    assert!(!doc.to_string().contains(CANARY));
}

#[test]
fn redacting_writer_masks_secrets_in_each_write() {
    use std::io::Write;
    let mut out = Vec::new();
    {
        let mut writer = RedactingWriter::new(&mut out);
        let line = format!("{{\"path\":\"/x/{CANARY}\",\"auth\":\"Bearer abc.def\"}}\n");
        writer.write_all(line.as_bytes()).unwrap();
        writer.write_all(b"plain line\n").unwrap();
        writer.write_all(&[0xff, 0xfe, b'\n']).unwrap();
        writer.flush().unwrap();
    }
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains(CANARY), "{text}");
    assert!(!text.contains("abc.def"), "{text}");
    assert!(text.contains(&format!("/x/{REDACTED}")), "{text}");
    assert!(text.contains("plain line\n"));
    assert!(out.ends_with(&[0xff, 0xfe, b'\n']));
}

#[test]
fn secrets_behind_percent_encoding_in_a_path_are_masked() {
    let encoded = CANARY.replace('+', "%2B").replace('/', "%2F");
    let path = format!("/cmk/v2/clusters/{encoded}.json");
    // A plain scan misses it: the `%2B` breaks the run of secret characters.
    assert!(!contains_secret(&path));
    let masked = redact_path(&path);
    assert!(!masked.contains(CANARY), "{masked}");
    assert!(!masked.contains(&encoded), "{masked}");
    assert_eq!(masked, format!("/cmk/v2/clusters/{REDACTED}.json"));

    // Every character encoded, and an auth scheme behind `%20`.
    let all: String = CANARY.bytes().map(|b| format!("%{b:02X}")).collect();
    assert_eq!(redact_path(&format!("/a/{all}")), format!("/a/{REDACTED}"));
    assert!(!redact_path("/x/Bearer%20abcdefgh1234").contains("abcdefgh1234"));

    // Literal secrets are masked as before; paths without secrets come back untouched, escapes
    // included, and without a copy.
    assert_eq!(
        redact_path(&format!("/a/{CANARY}")),
        format!("/a/{REDACTED}")
    );
    for clean in ["/org/v2/environments", "/a%20b/c%2Fd", "/%ZZ/%"] {
        assert!(
            matches!(redact_path(clean), Cow::Borrowed(p) if p == clean),
            "{clean}"
        );
    }
}

/// The scan jumps between candidates (`cflt`, `b`, `B`) found by two searches; a plain
/// byte-by-byte scan trying both matchers at every offset must mask exactly the same.
fn redact_every_offset(s: &str) -> String {
    let bytes = s.as_bytes();
    let (mut out, mut copied, mut i) = (String::new(), 0, 0);
    while i < bytes.len() {
        let found = cflt_secret_end(bytes, i)
            .map(|end| (i, end))
            .or_else(|| auth_credential(bytes, i));
        match found {
            Some((start, end)) => {
                out.push_str(&s[copied..start]);
                out.push_str(REDACTED);
                (copied, i) = (end, end);
            }
            None => i += 1,
        }
    }
    out.push_str(&s[copied..]);
    out
}

#[test]
fn the_candidate_scan_masks_what_a_scan_of_every_offset_masks() {
    let short_cflt = "cfltAbCd";
    let pieces = [
        CANARY,
        short_cflt,
        "Bearer tok-123",
        "basic",
        "u-bench01",
        "Basic a2V5OnNlY3JldA==",
        "bearer of news",
        "crn://confluent.cloud/organization=o/cloud-cluster=lkc-1",
        "\"clientAddress\":\"127.0.0.1\"",
        "bBbB",
        "ccflt",
        "é",
    ];
    let mut texts = Vec::new();
    for a in pieces {
        for b in pieces {
            for sep in ["", " ", ",", "\""] {
                texts.push(format!("{a}{sep}{b}{sep}{CANARY}"));
                texts.push(format!("x{sep}{a}{b}"));
            }
        }
    }
    for text in &texts {
        assert_eq!(redact_text(text), redact_every_offset(text), "{text}");
    }
}
