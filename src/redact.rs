//! Redaction by type: the [`Secret`] wrapper, and scrubbers for free text and JSON.
//!
//! `Secret` holds a credential (upstream API secret, webhook token, JWT key material) so that no
//! `Debug`, `Display` or log line can print it; reading it is an explicit [`Secret::expose`].
//! [`redact_text`] scrubs strings we did not write ourselves (dependency error messages, anything a
//! careless caller put into an audit explanation) and [`redact_json_secrets`] scrubs JSON documents
//! (create responses, STS replies) before they are logged or audited (docs/architecture.md §8, docs/confluent-api.md §5).
//!
//! What this deliberately does not do: mark HTTP headers sensitive (that is the outermost layer's
//! job, with `HeaderValue::set_sensitive`), zeroize memory, or recognise pre-2025 secrets that have
//! no `cflt` prefix by shape alone (64 base64 characters also describe a SHA-256 hex digest, which
//! the audit chain must keep) — those are caught by structure: the header, `spec.secret`, `secret`.
//! Scrubbing sits on the output side of every stage: the audit sinks run [`redact_text`] over each
//! encoded event, and the log output goes through a [`RedactingWriter`], as a last line of defence
//! for text keygate did not write itself (paths, upstream data, dependency messages).

use std::borrow::Cow;
use std::fmt;
use std::io;

use serde::{Deserialize, Deserializer};

/// What a masked value is replaced with, everywhere.
pub const REDACTED: &str = "**REDACTED**";

/// The prefix of every Confluent secret issued since 30 July 2025 (docs/confluent-api.md §5).
const CFLT_PREFIX: &[u8] = b"cflt";

/// Characters after `cflt` in a Confluent secret: 60 of them, from `A–Za–z0–9+/` (docs/confluent-api.md §5).
const CFLT_BODY_LEN: usize = 60;

/// JSON member names whose values are credentials, compared ASCII-case-insensitively
/// (docs/confluent-api.md §5: `spec.secret` — covered by `secret` at any depth — STS `subject_token` and
/// `access_token`; the others are the usual OAuth and form names).
const SECRET_MEMBERS: &[&str] = &[
    "secret",
    "subject_token",
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "password",
    "authorization",
];

/// HTTP authentication schemes whose credential follows after whitespace (RFC 9110 §11.4).
const AUTH_SCHEMES: &[&[u8]] = &[b"basic", b"bearer"];

/// A `Bearer` token of only letters is taken for a token from this length on: real tokens are
/// far longer, and English words after "bearer" ("bearer of", "Bearer tokens") far shorter.
const MIN_BARE_TOKEN_LEN: usize = 16;

// === impl Secret ===

/// A credential that must never be printed.
///
/// `Debug` and `Display` print `**REDACTED**`; there is no `Serialize`, so a `Secret` cannot leak
/// through a config dump or an audit record. `Deserialize` exists so config structs can hold one.
#[derive(Clone)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into().into_boxed_str())
    }

    /// The credential itself. Call this only where the value is used (a header being built, a MAC
    /// being computed), never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::from)
    }
}

// === text scrubbing ===

/// Masks credentials in free text, by their shape:
/// - a Confluent secret: `cflt` followed by at least 60 characters of `A–Za–z0–9+/` (the whole
///   run is masked);
/// - after the `Basic` scheme name (any letter case, at a word start, then spaces or tabs): a
///   base64 token that decodes to RFC 7617's `user-id:password`, or such a pair written out
///   unencoded (`Basic KEY:SECRET`, a caller that forgot to encode it);
/// - after the `Bearer` scheme name: an RFC 9110 §11.2 token68 that looks like a token — at least
///   16 characters, or with a digit or one of `-._~+/=` in it (JWTs, opaque access tokens).
///
/// The scheme name is kept. Words that merely follow a scheme name in prose (`Basic
/// base64(key:secret)`, "bearer of news") are not credentials and stay as they are, so keygate's
/// own help texts survive the scrub.
///
/// Borrows when nothing matched, so the common case does not allocate. The result is still valid
/// JSON when the input was a JSON text: masks are printable ASCII without `"` or `\`, and every
/// masked run consists of characters that JSON never escapes.
pub fn redact_text(s: &str) -> Cow<'_, str> {
    let bytes = s.as_bytes();
    let mut out: Option<String> = None;
    // INVARIANT: `copied` and `i` always sit on char boundaries: every match starts and ends on
    // ASCII bytes.
    let mut copied = 0;
    let mut i = 0;
    // Every match starts with `cflt` or with `b`/`B` (an auth scheme). The next place of each is
    // found with a vectorised search and kept until the scan passes it, so the scan jumps from
    // candidate to candidate (`c` alone was a candidate in every third word of a JSON text).
    let mut next_cflt = Candidate::default();
    let mut next_scheme = Candidate::default();
    while i < bytes.len() {
        let cflt = next_cflt.at_or_after(bytes, i, |rest| memchr::memmem::find(rest, CFLT_PREFIX));
        let scheme = next_scheme.at_or_after(bytes, i, |rest| memchr::memchr2(b'b', b'B', rest));
        i = match (cflt, scheme) {
            (Some(c), Some(b)) => c.min(b),
            (Some(at), None) | (None, Some(at)) => at,
            (None, None) => break,
        };
        if let Some(end) = cflt_secret_end(bytes, i) {
            let buf = out.get_or_insert_with(|| String::with_capacity(s.len()));
            buf.push_str(&s[copied..i]);
            buf.push_str(REDACTED);
            copied = end;
            i = end;
        } else if let Some((value_start, end)) = auth_credential(bytes, i) {
            let buf = out.get_or_insert_with(|| String::with_capacity(s.len()));
            buf.push_str(&s[copied..value_start]);
            buf.push_str(REDACTED);
            copied = end;
            i = end;
        } else {
            i += 1;
        }
    }
    match out {
        None => Cow::Borrowed(s),
        Some(mut buf) => {
            buf.push_str(&s[copied..]);
            Cow::Owned(buf)
        }
    }
}

/// The next place a search found in a text being scanned, kept until the scan passes it.
#[derive(Debug, Default)]
enum Candidate {
    /// Not searched yet (or passed).
    #[default]
    Unknown,
    /// Found at this byte offset.
    At(usize),
    /// No further occurrence.
    None,
}

impl Candidate {
    /// The next occurrence in `bytes` at or after `from`, searching `bytes[from..]` with `find`
    /// only when the one kept lies before `from`.
    fn at_or_after(
        &mut self,
        bytes: &[u8],
        from: usize,
        find: impl FnOnce(&[u8]) -> Option<usize>,
    ) -> Option<usize> {
        match *self {
            Candidate::At(at) if at >= from => return Some(at),
            Candidate::None => return None,
            Candidate::Unknown | Candidate::At(_) => {}
        }
        let found = find(&bytes[from..]).map(|offset| from + offset);
        *self = found.map_or(Candidate::None, Candidate::At);
        found
    }
}

/// [`redact_text`] for a request path (or query): it also finds secrets hidden behind
/// percent-encoding (`cflt%2Bab…`, where a plain scan sees the run of secret characters broken).
/// When the decoded path holds something to mask, the decoded path is returned masked, so what is
/// logged or exported never contains the secret in either spelling; otherwise the path is
/// returned as [`redact_text`] leaves it.
pub fn redact_path(path: &str) -> Cow<'_, str> {
    let direct = redact_text(path);
    if !path.contains('%') {
        return direct;
    }
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    match redact_text(&decoded) {
        Cow::Owned(masked) => Cow::Owned(masked),
        Cow::Borrowed(_) => direct,
    }
}

/// Whether `s` contains anything [`redact_text`] would mask.
pub fn contains_secret(s: &str) -> bool {
    matches!(redact_text(s), Cow::Owned(_))
}

fn is_secret_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// RFC 9110 §11.2 `token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_token68_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

/// End of a `cflt` secret starting at `at`, if one starts there.
fn cflt_secret_end(bytes: &[u8], at: usize) -> Option<usize> {
    let rest = bytes.get(at..)?;
    if !rest.starts_with(CFLT_PREFIX) {
        return None;
    }
    let body = rest[CFLT_PREFIX.len()..]
        .iter()
        .take_while(|&&b| is_secret_char(b))
        .count();
    (body >= CFLT_BODY_LEN).then_some(at + CFLT_PREFIX.len() + body)
}

/// `(start, end)` of the credential after an auth scheme name starting at `at`, if one does.
fn auth_credential(bytes: &[u8], at: usize) -> Option<(usize, usize)> {
    if at > 0 && bytes[at - 1].is_ascii_alphanumeric() {
        return None;
    }
    let rest = &bytes[at..];
    let scheme = AUTH_SCHEMES.iter().find(|scheme| {
        rest.len() > scheme.len() && rest[..scheme.len()].eq_ignore_ascii_case(scheme)
    })?;
    let after = at + scheme.len();
    let spaces = bytes[after..]
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    if spaces == 0 {
        return None;
    }
    let start = after + spaces;
    let token = bytes[start..]
        .iter()
        .take_while(|&&b| is_token68_char(b))
        .count();
    if token == 0 {
        return None;
    }
    let padding = bytes[start + token..]
        .iter()
        .take_while(|&&b| b == b'=')
        .count();
    let end = start + token + padding;
    let credential = &bytes[start..end];
    if scheme.eq_ignore_ascii_case(b"basic") {
        // `KEY:SECRET` unencoded: the pair, up to the end of the secret's characters.
        if padding == 0 && bytes.get(end) == Some(&b':') {
            let secret = bytes[end + 1..]
                .iter()
                .take_while(|&&b| is_token68_char(b))
                .count();
            if secret > 0 {
                return Some((start, end + 1 + secret));
            }
        }
        is_basic_user_pass(credential).then_some((start, end))
    } else {
        looks_like_token(credential).then_some((start, end))
    }
}

/// Whether `token` is base64 (either alphabet, padded or not) of a `user-id:password` pair.
fn is_basic_user_pass(token: &[u8]) -> bool {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine as _;
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    [STANDARD, URL_SAFE].iter().any(|engine| {
        engine
            .decode(token)
            .is_ok_and(|decoded| decoded.contains(&b':'))
    })
}

/// Whether a token68 after `Bearer` has the shape of a token rather than of a word.
fn looks_like_token(token: &[u8]) -> bool {
    token.len() >= MIN_BARE_TOKEN_LEN
        || token.iter().any(|&b| {
            b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
        })
}

// === impl RedactingWriter ===

/// An `io::Write` that runs [`redact_text`] over everything written through it before passing it
/// on: the log output's last line of defence, so a secret that reached a log line by any route (a
/// request path, an upstream's answer quoted in an error, a dependency's message) is masked anyway.
///
/// Each `write` call is scrubbed on its own, so callers must write a whole record per call (the
/// `tracing` formatter writes each event with one `write_all`). Bytes that are not UTF-8 are
/// passed through unchanged.
#[derive(Debug)]
pub struct RedactingWriter<W> {
    inner: W,
}

impl<W: io::Write> RedactingWriter<W> {
    /// Scrubs what is written to `inner`.
    pub fn new(inner: W) -> Self {
        RedactingWriter { inner }
    }
}

impl<W: io::Write> io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => self.inner.write_all(redact_text(text).as_bytes())?,
            Err(_) => self.inner.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// === JSON scrubbing ===

/// Masks credentials in a JSON document in place: the value of every member named in the secret
/// list (`secret` — so `spec.secret` of a create response —, `subject_token`, `access_token`,
/// `client_secret`, `password`, …; any depth, any letter case, whatever the value's type) becomes
/// `"**REDACTED**"`, and every other string goes through [`redact_text`]. Member names are not
/// rewritten.
pub fn redact_json_secrets(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(members) => {
            for (name, value) in members.iter_mut() {
                if is_secret_member(name) {
                    *value = serde_json::Value::String(REDACTED.to_owned());
                } else {
                    redact_json_secrets(value);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json_secrets),
        serde_json::Value::String(s) => {
            if let Cow::Owned(masked) = redact_text(s) {
                *s = masked;
            }
        }
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {}
    }
}

fn is_secret_member(name: &str) -> bool {
    SECRET_MEMBERS
        .iter()
        .any(|member| member.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests;
