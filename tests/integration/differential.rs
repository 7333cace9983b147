//! Differential properties of the request guard: whatever a lenient HTTP stack or JSON reader
//! would make of a request, keygate must either agree or refuse.
//!
//! - Paths: targets are generated from a grammar of segments, encodings (percent, double
//!   percent, overlong UTF-8, `%uXXXX`, full-width forms), separators (`//`, `\`, encoded `/`,
//!   dot segments), `;params`, letter case and whitespace/control padding — every one a
//!   transformation that some lenient stack undoes. A target built from a governed path must be
//!   Governed only when it is byte-exact canonical and refused otherwise, never Ungoverned; one
//!   built from another path under `/iam/` is Ungoverned only when it is plain; one built from a
//!   path outside `/iam/` stays Ungoverned.
//! - Bodies: create bodies with duplicate, case-variant, escaped, BOM-prefixed, UTF-16/32,
//!   trailing-document and deep variants. Whenever keygate accepts one, every lenient reader
//!   (case-insensitive or exact, last-wins or first-wins, first document only, BOM and UTF-16/32
//!   decoded) must read the same owner, resource and environment.
//!
//! Each property runs 5,000 cases in the normal test run; the `#[ignore]`d `*_long` variants run
//! 1,000,000 each (`cargo test --release --test integration differential -- --ignored`).

use http::{Method, Uri};
use keygate::guard::{classify, parse_create, Route};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

/// Cases per property in the normal test run.
const CASES: u32 = 5_000;
/// Cases per property in the long (ignored) run.
const LONG_CASES: u32 = 1_000_000;

/// A tape of choices the generators below consume; proptest shrinks it towards zeros, which
/// the generators read as "the plain choice".
struct Tape<'a> {
    choices: &'a [u8],
    at: usize,
}

impl Tape<'_> {
    /// A choice in `0..n` (0 once the tape is used up).
    fn pick(&mut self, n: usize) -> usize {
        let choice = self.choices.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        usize::from(choice) % n
    }

    /// True with probability about `percent` % (false for a zero choice).
    fn chance(&mut self, percent: usize) -> bool {
        self.pick(100) + percent >= 100
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

// === paths ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    /// `/iam/v2/api-keys` or an item path below it.
    Governed,
    /// Another path under `/iam/`.
    UnderIam,
    /// A path outside `/iam/`.
    Outside,
}

const UNDER_IAM: [&[&str]; 4] = [
    &["iam", "v2", "role-bindings"],
    &["iam", "v2", "service-accounts", "sa-1a2b3c"],
    &["iam", "v2", "users"],
    &["iam", "v2", "api-keys-archive"],
];

const OUTSIDE: [&[&str]; 5] = [
    &["org", "v2", "environments"],
    &["cmk", "v2", "clusters", "lkc-9x8y7z"],
    &["srcm", "v3", "clusters"],
    &["v2", "iam", "api-keys"],
    &["iamx", "v2", "api-keys"],
];

/// One ASCII character, encoded as some stack would still read it.
fn encode_char(c: u8, tape: &mut Tape) -> String {
    let c = if c.is_ascii_alphabetic() && tape.chance(20) {
        c ^ 0x20
    } else {
        c
    };
    match tape.pick(24) {
        0 => format!("%{c:02X}"),
        1 => format!("%{c:02x}"),
        2 => format!("%25{c:02X}"),
        3 => format!("%2525{c:02X}"),
        4 => format!("%{:02X}%{:02X}", 0xC0 | (c >> 6), 0x80 | (c & 0x3F)),
        5 => format!("%E0%{:02X}%{:02X}", 0x80 | (c >> 6), 0x80 | (c & 0x3F)),
        6 => format!("%F0%80%{:02X}%{:02X}", 0x80 | (c >> 6), 0x80 | (c & 0x3F)),
        7 => format!("%u{:04X}", c),
        8 if (0x21..=0x7E).contains(&c) => {
            // The full-width form, raw or percent-encoded.
            let wide = char::from_u32(0xFF00 + u32::from(c) - 0x20).unwrap_or('?');
            if tape.chance(50) {
                wide.to_string()
            } else {
                let mut buf = [0u8; 4];
                wide.encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect()
            }
        }
        _ => (c as char).to_string(),
    }
}

/// Blank padding that lenient stacks trim.
fn padding(tape: &mut Tape) -> &'static str {
    const PADS: [&str; 10] = [
        "%20",
        "%09",
        "%0D%0A",
        "%00",
        "%0B",
        "%0C",
        "%7F",
        "%E3%80%80",
        "%2520",
        "%C0%A0",
    ];
    if tape.chance(8) {
        PADS[tape.pick(PADS.len())]
    } else {
        ""
    }
}

/// A separator that some stack reads as one `/`.
fn separator(tape: &mut Tape) -> &'static str {
    const SEPARATORS: [&str; 13] = [
        "//",
        "\\",
        "%2F",
        "%2f",
        "%252F",
        "%5C",
        "%C0%AF",
        "%E0%80%AF",
        "%EF%BC%8F",
        "/./",
        "/x/../",
        "/%2e/",
        "/x/%2E%2E/",
    ];
    if tape.chance(12) {
        SEPARATORS[tape.pick(SEPARATORS.len())]
    } else {
        "/"
    }
}

fn segment(text: &str, tape: &mut Tape) -> String {
    let mut out = String::from(padding(tape));
    for &c in text.as_bytes() {
        if tape.chance(6) {
            out.push_str(&encode_char(c, tape));
        } else if c.is_ascii_alphabetic() && tape.chance(3) {
            out.push((c ^ 0x20) as char);
        } else {
            out.push(c as char);
        }
    }
    if tape.chance(4) {
        out.push_str([";x=1", ";", "%3Bjsessionid=0"][tape.pick(3)]);
    }
    out.push_str(padding(tape));
    out
}

fn key_id(tape: &mut Tape) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..1 + tape.pick(20))
        .map(|_| ALPHABET[tape.pick(ALPHABET.len())] as char)
        .collect()
}

/// A target built from a base path by the transformations above.
fn target(choices: &[u8]) -> (Base, String) {
    let mut tape = Tape { choices, at: 0 };
    let (base, segments): (Base, Vec<String>) = match tape.pick(4) {
        0 | 1 => {
            let mut segments: Vec<String> = ["iam", "v2", "api-keys"].map(String::from).into();
            if tape.chance(50) {
                segments.push(key_id(&mut tape));
            }
            (Base::Governed, segments)
        }
        2 => (
            Base::UnderIam,
            UNDER_IAM[tape.pick(UNDER_IAM.len())]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        ),
        _ => (
            Base::Outside,
            OUTSIDE[tape.pick(OUTSIDE.len())]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        ),
    };
    let mut path = String::new();
    for text in &segments {
        path.push_str(separator(&mut tape));
        path.push_str(&segment(text, &mut tape));
    }
    if tape.chance(5) {
        path.push_str(["%3Fx=1", "%23top", "%00.json", "/"][tape.pick(4)]);
    }
    if tape.chance(20) {
        path.push_str("?page_size=10");
    }
    (base, path)
}

fn is_canonical_governed(path: &str) -> bool {
    path == "/iam/v2/api-keys"
        || path.strip_prefix("/iam/v2/api-keys/").is_some_and(|id| {
            !id.is_empty()
                && id != "."
                && id != ".."
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        })
}

fn is_plain(path: &str) -> bool {
    !path.contains("//")
        && path.split('/').all(|s| {
            s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        })
}

fn check_path(choices: &[u8]) -> Result<(), TestCaseError> {
    let (base, target) = target(choices);
    let Ok(uri) = target.parse::<Uri>() else {
        // Not a request target hyper would deliver (e.g. a raw control character).
        return Ok(());
    };
    let path = uri.path();
    for method in [Method::GET, Method::POST, Method::DELETE] {
        let route = classify(&method, &uri);
        match base {
            Base::Governed => {
                prop_assert!(
                    route != Ok(Route::Ungoverned),
                    "{target} was read as ungoverned"
                );
                if matches!(route, Ok(Route::Governed(_))) {
                    prop_assert!(
                        is_canonical_governed(path),
                        "{target} governed but not exact"
                    );
                }
            }
            Base::UnderIam => {
                if route == Ok(Route::Ungoverned) {
                    prop_assert!(is_plain(path), "{target} under /iam/ passed as ungoverned");
                }
            }
            Base::Outside => {
                prop_assert_eq!(&route, &Ok(Route::Ungoverned), "{} was refused", target);
            }
        }
    }
    Ok(())
}

fn run_paths(cases: u32) {
    runner(cases)
        .run(&proptest::collection::vec(any::<u8>(), 160), |choices| {
            check_path(&choices)
        })
        .unwrap();
}

#[test]
fn lenient_readings_of_governed_paths_are_never_ungoverned() {
    run_paths(CASES);
}

#[test]
#[ignore = "long run: cargo test --release --test integration differential -- --ignored"]
fn lenient_readings_of_governed_paths_are_never_ungoverned_long() {
    run_paths(LONG_CASES);
}

#[test]
fn the_issue_examples_are_refused() {
    for path in [
        "/iam/v2%C0%AFapi-keys",
        "/iam/v2%E0%80%AFapi-keys",
        "/iam/v2/x/%C0%AE%C0%AE/api-keys",
        "/iam/v2/api-keys%20",
        "/iam/v2/api-keys%09",
    ] {
        let uri: Uri = path.parse().unwrap();
        assert!(classify(&Method::POST, &uri).is_err(), "{path}");
    }
}

// === bodies ===

/// A JSON value with duplicate members kept, as lenient readers differ on them.
#[derive(Debug, Clone)]
enum Node {
    String(String),
    Object(Vec<(String, Node)>),
    Other,
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        struct NodeVisitor;
        impl<'de> serde::de::Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::String(v.to_owned()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                while seq.next_element::<Node>()?.is_some() {}
                Ok(Node::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Node>()? {
                    members.push((key, value));
                }
                Ok(Node::Object(members))
            }
        }
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// How a lenient reader matches member names and resolves duplicates.
#[derive(Debug, Clone, Copy)]
struct Reader {
    case_insensitive: bool,
    last_wins: bool,
}

/// Go's `strings.EqualFold` for member names: ASCII case, KELVIN SIGN and LONG S.
fn go_fold(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '\u{212A}' => 'k',
            '\u{017F}' => 's',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Text from bytes the way lenient readers detect it: a UTF-8 BOM is skipped, UTF-16/32 are
/// recognised by BOM or by the zero bytes of an ASCII first character (RFC 4627 §3).
fn lenient_text(bytes: &[u8]) -> Option<String> {
    let units = |width: usize, big: bool, skip: usize| -> Option<String> {
        let body = bytes.get(skip..)?;
        if body.len() % width != 0 {
            return None;
        }
        if width == 2 {
            let units = body.chunks(2).map(|c| {
                if big {
                    u16::from_be_bytes([c[0], c[1]])
                } else {
                    u16::from_le_bytes([c[0], c[1]])
                }
            });
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        } else {
            body.chunks(4)
                .map(|c| {
                    let v = if big {
                        u32::from_be_bytes([c[0], c[1], c[2], c[3]])
                    } else {
                        u32::from_le_bytes([c[0], c[1], c[2], c[3]])
                    };
                    char::from_u32(v)
                })
                .collect()
        }
    };
    match bytes {
        [0xEF, 0xBB, 0xBF, ..] => String::from_utf8(bytes[3..].to_vec()).ok(),
        [0x00, 0x00, 0xFE, 0xFF, ..] => units(4, true, 4),
        [0xFF, 0xFE, 0x00, 0x00, ..] => units(4, false, 4),
        [0xFE, 0xFF, ..] => units(2, true, 2),
        [0xFF, 0xFE, ..] => units(2, false, 2),
        [0, 0, 0, _, ..] => units(4, true, 0),
        [_, 0, 0, 0, ..] => units(4, false, 0),
        [0, _, ..] => units(2, true, 0),
        [_, 0, ..] => units(2, false, 0),
        _ => String::from_utf8(bytes.to_vec()).ok(),
    }
}

impl Reader {
    fn member<'n>(&self, node: &'n Node, name: &str) -> Option<&'n Node> {
        let Node::Object(members) = node else {
            return None;
        };
        let matches = |key: &str| {
            if self.case_insensitive {
                go_fold(key) == go_fold(name)
            } else {
                key == name
            }
        };
        let mut found = members.iter().filter(|(key, _)| matches(key));
        if self.last_wins {
            found.next_back().map(|(_, v)| v)
        } else {
            found.next().map(|(_, v)| v)
        }
    }

    fn string(&self, node: &Node, path: &[&str]) -> Option<Option<String>> {
        let mut current = node;
        for name in path {
            match self.member(current, name) {
                Some(next) => current = next,
                None => return Some(None),
            }
        }
        match current {
            Node::String(s) => Some(Some(s.clone())),
            Node::Other => Some(None),
            Node::Object(_) => None,
        }
    }

    /// Owner, resource and environment as this reader sees them; `None` when it would refuse.
    fn read(&self, bytes: &[u8]) -> Option<(String, Option<String>, Option<String>)> {
        let text = lenient_text(bytes)?;
        let root = serde_json::Deserializer::from_str(&text)
            .into_iter::<Node>()
            .next()?
            .ok()?;
        let owner = self.string(&root, &["spec", "owner", "id"])??;
        let resource = self.string(&root, &["spec", "resource", "id"])?;
        let environment = self
            .string(&root, &["spec", "resource", "environment"])?
            .filter(|e| !e.is_empty());
        let environment = environment.filter(|_| resource.is_some());
        Some((owner, resource, environment))
    }
}

const READERS: [Reader; 4] = [
    Reader {
        case_insensitive: true,
        last_wins: true,
    },
    Reader {
        case_insensitive: true,
        last_wins: false,
    },
    Reader {
        case_insensitive: false,
        last_wins: true,
    },
    Reader {
        case_insensitive: false,
        last_wins: false,
    },
];

/// A member name spelled as some encoder might: exact, escaped, in another case, with the
/// non-ASCII letters Go folds onto ASCII.
fn name(name: &str, tape: &mut Tape) -> String {
    if !tape.chance(15) {
        return name.to_owned();
    }
    match tape.pick(6) {
        0 => name
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect(),
        1 => {
            let mut chars = name.chars();
            let first = chars.next().map_or(0, |c| c as u32);
            format!("\\u{first:04X}{}", chars.as_str())
        }
        2 => name.to_ascii_uppercase(),
        3 => {
            let mut out = name.to_owned();
            out[..1].make_ascii_uppercase();
            out
        }
        4 => name
            .replacen('s', "\u{017F}", 1)
            .replacen('k', "\u{212A}", 1),
        _ => name.replacen('s', "\\u017f", 1),
    }
}

/// `"name": value` members of one object, with duplicates and extra members mixed in.
fn object(members: &[(&str, String, String)], tape: &mut Tape) -> String {
    let mut parts = Vec::new();
    for (key, value, evil) in members {
        let duplicate = tape.chance(10);
        if duplicate && tape.chance(50) {
            parts.push(format!("\"{}\":{evil}", name(key, tape)));
        }
        parts.push(format!("\"{}\":{value}", name(key, tape)));
        if duplicate {
            parts.push(format!("\"{}\":{evil}", name(key, tape)));
        }
        if tape.chance(5) {
            parts.push("\"x-extra\":[1,{\"a\":null}]".to_owned());
        }
    }
    if tape.chance(20) {
        let at = tape.pick(parts.len() + 1);
        let deep = if tape.chance(10) {
            format!("{}0{}", "[".repeat(200), "]".repeat(200))
        } else {
            "true".to_owned()
        };
        parts.insert(at, format!("\"unknown\":{deep}"));
    }
    format!(
        "{{{}}}",
        parts.join(if tape.chance(10) { " ,\n " } else { "," })
    )
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// A create body (as bytes) generated from a choice tape.
fn body(choices: &[u8]) -> Vec<u8> {
    let mut tape = Tape { choices, at: 0 };
    let owner = object(
        &[(
            "id",
            quoted(["sa-orders", "u-alice"][tape.pick(2)]),
            quoted("sa-evil"),
        )],
        &mut tape,
    );
    let mut resource_members = vec![(
        "id",
        quoted(["lkc-prod01", "global", "aws.us-east-1"][tape.pick(3)]),
        quoted("lkc-evil"),
    )];
    if tape.chance(40) {
        resource_members.push(("environment", quoted("env-prod01"), quoted("env-evil")));
    }
    let resource = object(&resource_members, &mut tape);
    let mut spec_members = vec![("owner", owner, "{\"id\":\"sa-evil\"}".to_owned())];
    match tape.pick(4) {
        0 => {}
        1 => spec_members.push((
            "resource",
            "null".to_owned(),
            "{\"id\":\"lkc-evil\"}".to_owned(),
        )),
        _ => spec_members.push(("resource", resource, "{\"id\":\"lkc-evil\"}".to_owned())),
    }
    spec_members.push(("display_name", quoted("orders"), quoted("x")));
    let spec = object(&spec_members, &mut tape);
    let mut text = object(
        &[("spec", spec, "{\"owner\":{\"id\":\"sa-evil\"}}".to_owned())],
        &mut tape,
    );
    if tape.chance(5) {
        text.push_str(
            [
                "{\"spec\":{\"owner\":{\"id\":\"sa-evil\"}}}",
                " x",
                "\n{}",
                "]",
            ][tape.pick(4)],
        );
    }
    if tape.chance(5) {
        text.insert_str(0, " \n\t");
    }
    let bom = tape.chance(5);
    let mut bytes = match tape.pick(20) {
        16 => text
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect::<Vec<u8>>(),
        17 => text.encode_utf16().flat_map(u16::to_be_bytes).collect(),
        18 => text
            .chars()
            .flat_map(|c| (c as u32).to_le_bytes())
            .collect(),
        19 => text
            .chars()
            .flat_map(|c| (c as u32).to_be_bytes())
            .collect(),
        _ => text.into_bytes(),
    };
    if bom {
        bytes.splice(0..0, [0xEF, 0xBB, 0xBF]);
    }
    bytes
}

fn check_body(choices: &[u8]) -> Result<(), TestCaseError> {
    let bytes = body(choices);
    let Ok(spec) = parse_create(&bytes) else {
        return Ok(());
    };
    let keygate = (
        spec.owner_id.clone(),
        spec.resource.as_ref().map(|r| r.id.clone()),
        spec.resource.as_ref().and_then(|r| r.environment.clone()),
    );
    for reader in READERS {
        if let Some(lenient) = reader.read(&bytes) {
            prop_assert_eq!(
                &lenient,
                &keygate,
                "{:?} reads {} differently",
                reader,
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    Ok(())
}

fn run_bodies(cases: u32) {
    runner(cases)
        .run(&proptest::collection::vec(any::<u8>(), 120), |choices| {
            check_body(&choices)
        })
        .unwrap();
}

#[test]
fn accepted_bodies_mean_the_same_to_every_lenient_reader() {
    run_bodies(CASES);
}

#[test]
#[ignore = "long run: cargo test --release --test integration differential -- --ignored"]
fn accepted_bodies_mean_the_same_to_every_lenient_reader_long() {
    run_bodies(LONG_CASES);
}

#[test]
fn the_generators_reach_both_outcomes() {
    // The properties mean something only if the generators produce accepted and refused inputs
    // of every kind; zero-choice tapes are the plain forms.
    let (base, plain) = target(&[0; 160]);
    assert_eq!(base, Base::Governed);
    assert!(matches!(
        classify(&Method::GET, &plain.parse().unwrap()),
        Ok(Route::Governed(_))
    ));
    assert!(parse_create(&body(&[0; 120])).is_ok());
    let mut runner = runner(2_000);
    let mut tape = || {
        proptest::collection::vec(any::<u8>(), 160)
            .new_tree(&mut runner)
            .unwrap()
            .current()
    };
    let (mut accepted, mut refused, mut governed, mut governed_refused) = (0, 0, 0, 0);
    for _ in 0..2_000 {
        let choices = tape();
        match parse_create(&body(&choices)) {
            Ok(_) => accepted += 1,
            Err(_) => refused += 1,
        }
        let (base, target) = target(&choices);
        if base == Base::Governed {
            if let Ok(uri) = target.parse::<Uri>() {
                governed += 1;
                if classify(&Method::GET, &uri).is_err() {
                    governed_refused += 1;
                }
            }
        }
    }
    assert!(
        accepted > 200 && refused > 200,
        "{accepted} accepted, {refused} refused"
    );
    assert!(
        governed_refused > governed / 4 && governed_refused < governed,
        "{governed_refused} of {governed} governed targets refused"
    );
}
