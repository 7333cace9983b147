//! The lenient model: every reading of a request path that some HTTP stack might apply.
//!
//! keygate forwards a path byte for byte, but the upstream (or anything between keygate and the
//! upstream: a load balancer, a WAF, a framework router) may normalise it first. A path is only
//! safe to wave through as ungoverned when *no* such reading lands in the governed namespace.
//! [`read`] is that model, in one function, with the union of the most lenient rules known:
//!
//! 1. percent-decoding repeated until nothing changes (`%252F` → `%2F` → `/`), including IIS-style
//!    `%uXXXX` escapes;
//! 2. non-shortest UTF-8 forms (overlong 2-, 3-, 4-byte and older 5-/6-byte sequences) read as the
//!    character they encode (`%C0%AF` → `/`), and Unicode look-alikes folded to ASCII: the
//!    full-width block (`／ ． － Ａ ｚ ０`…), other slash, dot, hyphen and space forms, and the
//!    four non-ASCII letters whose case mapping is ASCII (`İ ı ſ K`);
//! 3. `\` read as `/`;
//! 4. `;params` dropped from each segment;
//! 5. leading and trailing whitespace and control characters (SP, HT, CR, LF, VT, FF, NUL, DEL…)
//!    trimmed from the path and from each segment;
//! 6. the path cut at a decoded `?`, `#` or NUL (a stack that decodes and then re-parses);
//! 7. dot segments resolved before (RFC 3986 §5.2.4, empty segments kept) and after collapsing
//!    `//`, and not at all.
//!
//! Letter case is kept in the readings; callers compare with ASCII case folding. The model never
//! rewrites what is forwarded: the guard uses it only to refuse.

/// Which of the model's rules changed something while reading a path, for the refusal message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// `%XX` escapes were decoded.
    pub percent: bool,
    /// Decoding produced new escapes (`%25…`), decoded again.
    pub double_percent: bool,
    /// IIS-style `%uXXXX` escapes.
    pub iis_unicode: bool,
    /// Overlong (non-shortest) UTF-8 forms.
    pub overlong: bool,
    /// Unicode look-alikes folded to ASCII (full-width forms and friends).
    pub lookalike: bool,
    /// Whitespace or control characters, present only once decoded.
    pub encoded_whitespace: bool,
    /// Whitespace or control characters in the raw path.
    pub raw_whitespace: bool,
    /// A decoded `?`, `#` or NUL that a re-parsing stack would end the path at.
    pub terminator: bool,
    /// `\` used as a separator.
    pub backslash: bool,
    /// `;params` in a segment.
    pub params: bool,
    /// An empty segment (`//`).
    pub empty_segment: bool,
    /// A `.` or `..` segment.
    pub dot_segment: bool,
}

/// The readings of one path: segments as ranges of one decoded buffer (one allocation for the
/// text, a few for the segment lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LenientPath {
    decoded: Vec<u8>,
    readings: Vec<Vec<Segment>>,
    /// The rules that changed something.
    pub applied: Applied,
}

/// A segment as `start..end` of the decoded buffer.
type Segment = (usize, usize);

// === impl LenientPath ===

impl LenientPath {
    /// Each distinct reading, as its segments (letter case as found).
    pub fn readings(&self) -> Vec<Vec<&[u8]>> {
        self.readings.iter().map(|r| self.segments(r)).collect()
    }

    fn segments(&self, reading: &[Segment]) -> Vec<&[u8]> {
        reading.iter().map(|&(s, e)| &self.decoded[s..e]).collect()
    }

    fn segment(&self, reading: &[Segment], at: usize) -> Option<&[u8]> {
        reading.get(at).map(|&(s, e)| &self.decoded[s..e])
    }

    fn starts_with(&self, reading: &[Segment], prefix: &[&[u8]]) -> bool {
        reading.len() >= prefix.len()
            && prefix.iter().enumerate().all(|(at, p)| {
                self.segment(reading, at)
                    .is_some_and(|s| s.eq_ignore_ascii_case(p))
            })
    }

    /// Whether any reading lies under `/iam/` (its first segment is `iam` in any case).
    pub fn under_iam(&self) -> bool {
        self.readings.iter().any(|r| self.starts_with(r, &[b"iam"]))
    }

    /// Whether any reading is `/iam/v2/api-keys` or below it.
    pub fn governed(&self) -> bool {
        self.readings.iter().any(|r| self.starts_with(r, &GOVERNED))
    }

    /// The canonical path a caller most likely meant, when one reading gives one: the governed
    /// collection or item path, or else the first reading under `/iam/` that is plain.
    pub fn suggestion(&self) -> Option<String> {
        if self.governed() {
            return self
                .readings
                .iter()
                .filter(|r| self.starts_with(r, &GOVERNED))
                .find_map(|reading| match self.segments(reading).as_slice() {
                    [_, _, _] => Some("/iam/v2/api-keys".to_owned()),
                    [_, _, _, id]
                        if !is_dot(id)
                            && id.len() <= 255
                            && id.iter().all(|&b| is_unreserved(b)) =>
                    {
                        Some(format!("/iam/v2/api-keys/{}", String::from_utf8_lossy(id)))
                    }
                    _ => None,
                });
        }
        self.readings
            .iter()
            .map(|r| self.segments(r))
            .find(|r| {
                r.first().is_some_and(|s| s.eq_ignore_ascii_case(b"iam"))
                    && r.iter()
                        .all(|s| !is_dot(s) && s.iter().all(|&b| is_unreserved(b)))
            })
            .map(|r| {
                let mut out = String::from("/iam");
                for segment in &r[1..] {
                    out.push('/');
                    out.push_str(&String::from_utf8_lossy(segment));
                }
                out
            })
    }
}

/// The governed prefix, as segments.
const GOVERNED: [&[u8]; 3] = [b"iam", b"v2", b"api-keys"];

/// RFC 3986 §2.3 unreserved characters.
pub fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn is_dot(segment: &[u8]) -> bool {
    segment == b"." || segment == b".."
}

/// Whitespace and control characters trimmed by lenient stacks (and never part of a plain path).
fn is_blank(byte: u8) -> bool {
    byte <= b' ' || byte == 0x7F
}

/// Reads `path` the way the most lenient HTTP stack might (see the module doc).
pub fn read(path: &[u8]) -> LenientPath {
    let (mut decoded, mut applied) = decode(path);

    // 3: `\` as `/`.
    if decoded.contains(&b'\\') {
        applied.backslash = true;
        for byte in &mut decoded {
            if *byte == b'\\' {
                *byte = b'/';
            }
        }
    }

    // 6: the whole path, and the path cut at the first decoded terminator.
    let mut ends = vec![decoded.len()];
    if let Some(end) = decoded.iter().position(|&b| matches!(b, b'?' | b'#' | 0)) {
        applied.terminator = true;
        ends.push(end);
    }

    let mut readings: Vec<Vec<Segment>> = Vec::new();
    for end in ends {
        // 4 + 5: segments without params, trimmed, as ranges of `decoded`.
        let mut segments: Vec<Segment> = Vec::new();
        let mut start = 0;
        for piece in decoded[..end].split(|&b| b == b'/') {
            let kept = match piece.iter().position(|&b| b == b';') {
                Some(at) => {
                    applied.params = true;
                    &piece[..at]
                }
                None => piece,
            };
            let (lead, tail) = trim_bounds(kept);
            segments.push((start + lead, start + tail));
            start += piece.len() + 1;
        }
        let is_empty = |&(s, e): &Segment| s == e;
        let is_dot_at = |&(s, e): &Segment| is_dot(&decoded[s..e]);
        // The piece before the first `/` is normally empty (and a non-empty one is a segment
        // too); an empty one after it, other than a trailing `/`, is a `//`.
        if let Some((_, inner)) = segments.split_last() {
            applied.empty_segment |= inner.iter().skip(1).any(is_empty);
        }
        applied.dot_segment |= segments.iter().any(is_dot_at);
        // 7: three ways of dealing with empty and dot segments.
        let collapsed: Vec<Segment> = segments.iter().copied().filter(|s| !is_empty(s)).collect();
        let mut rfc = resolve_dots(&decoded, &segments);
        rfc.retain(|s| !is_empty(s));
        for reading in [resolve_dots(&decoded, &collapsed), rfc, collapsed] {
            if !readings.contains(&reading) {
                readings.push(reading);
            }
        }
    }
    LenientPath {
        decoded,
        readings,
        applied,
    }
}

/// Rules 1 and 2: decodes `input` until nothing changes (every change shortens it, so this
/// terminates), and says which rules applied. Also used for query parameter names.
pub fn decode(input: &[u8]) -> (Vec<u8>, Applied) {
    let mut applied = Applied {
        raw_whitespace: input.iter().any(|&b| is_blank(b)),
        ..Applied::default()
    };
    let mut decoded = input.to_vec();
    let mut percent_rounds = 0;
    loop {
        let mut changed = false;
        if let Some(next) = percent_decode_once(&decoded, &mut applied) {
            percent_rounds += 1;
            decoded = next;
            changed = true;
        }
        if let Some(next) = fold_unicode(&decoded, &mut applied) {
            decoded = next;
            changed = true;
        }
        if !changed {
            break;
        }
    }
    applied.percent = percent_rounds > 0;
    applied.double_percent = percent_rounds > 1;
    applied.encoded_whitespace = !applied.raw_whitespace && decoded.iter().any(|&b| is_blank(b));
    (decoded, applied)
}

/// Rule 5's trim, for one segment or name.
pub fn trim(segment: &[u8]) -> &[u8] {
    let (start, end) = trim_bounds(segment);
    &segment[start..end]
}

/// Where `segment` starts and ends once blanks are trimmed from both sides.
fn trim_bounds(segment: &[u8]) -> (usize, usize) {
    let start = segment
        .iter()
        .position(|&b| !is_blank(b))
        .unwrap_or(segment.len());
    let end = segment
        .iter()
        .rposition(|&b| !is_blank(b))
        .map_or(start, |at| at + 1);
    (start, end)
}

fn resolve_dots(decoded: &[u8], segments: &[Segment]) -> Vec<Segment> {
    let mut out = Vec::with_capacity(segments.len());
    for &(s, e) in segments {
        match &decoded[s..e] {
            b"." => {}
            b".." => {
                out.pop();
            }
            _ => out.push((s, e)),
        }
    }
    out
}

/// One round of `%XX` and `%uXXXX` decoding; `None` when there was nothing to decode.
fn percent_decode_once(input: &[u8], applied: &mut Applied) -> Option<Vec<u8>> {
    if !input.contains(&b'%') {
        return None;
    }
    let mut out = Vec::with_capacity(input.len());
    let mut changed = false;
    let mut at = 0;
    while at < input.len() {
        if input[at] == b'%' {
            if let Some(byte) = hex_pair(input.get(at + 1..at + 3)) {
                out.push(byte);
                at += 3;
                changed = true;
                continue;
            }
            if matches!(input.get(at + 1), Some(b'u' | b'U')) {
                if let Some(c) = hex_quad(input.get(at + 2..at + 6)).and_then(char::from_u32) {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    applied.iis_unicode = true;
                    at += 6;
                    changed = true;
                    continue;
                }
            }
        }
        out.push(input[at]);
        at += 1;
    }
    changed.then_some(out)
}

fn hex_pair(digits: Option<&[u8]>) -> Option<u8> {
    let digits = digits?;
    Some(hex_value(digits[0])? << 4 | hex_value(digits[1])?)
}

fn hex_quad(digits: Option<&[u8]>) -> Option<u32> {
    digits?
        .iter()
        .try_fold(0u32, |acc, &b| Some(acc << 4 | u32::from(hex_value(b)?)))
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Reads UTF-8 leniently: overlong forms become the character they encode (recorded), and
/// look-alikes become ASCII; `None` when nothing changed. Bytes that are not UTF-8 at all stay.
fn fold_unicode(input: &[u8], applied: &mut Applied) -> Option<Vec<u8>> {
    if input.is_ascii() {
        return None;
    }
    let mut out = Vec::with_capacity(input.len());
    let mut changed = false;
    let mut at = 0;
    while at < input.len() {
        let lead = input[at];
        let Some((code_point, len)) = lenient_utf8(&input[at..]) else {
            out.push(lead);
            at += 1;
            continue;
        };
        let overlong = len > shortest_len(code_point);
        if overlong {
            applied.overlong = true;
        }
        match fold_lookalike(code_point) {
            Some(ascii) => {
                applied.lookalike = true;
                out.push(ascii);
                changed = true;
            }
            None => match char::from_u32(code_point) {
                Some(c) if overlong => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    changed = true;
                }
                Some(c) if c.is_ascii() => out.push(code_point as u8),
                _ => out.extend_from_slice(&input[at..at + len]),
            },
        }
        at += len;
    }
    changed.then_some(out)
}

/// Decodes one UTF-8-shaped sequence at the start of `bytes` without rejecting overlong forms:
/// a lead byte of 2 to 6 bytes followed by that many continuation bytes.
fn lenient_utf8(bytes: &[u8]) -> Option<(u32, usize)> {
    let lead = *bytes.first()?;
    let (len, bits) = match lead {
        0x00..=0x7F => return Some((u32::from(lead), 1)),
        0xC0..=0xDF => (2, lead & 0x1F),
        0xE0..=0xEF => (3, lead & 0x0F),
        0xF0..=0xF7 => (4, lead & 0x07),
        0xF8..=0xFB => (5, lead & 0x03),
        0xFC..=0xFD => (6, lead & 0x01),
        _ => return None,
    };
    let continuation = bytes.get(1..len)?;
    let mut code_point = u32::from(bits);
    for &byte in continuation {
        if byte & 0xC0 != 0x80 {
            return None;
        }
        code_point = code_point << 6 | u32::from(byte & 0x3F);
    }
    Some((code_point, len))
}

fn shortest_len(code_point: u32) -> usize {
    match code_point {
        0..=0x7F => 1,
        0x80..=0x7FF => 2,
        0x800..=0xFFFF => 3,
        _ => 4,
    }
}

/// The ASCII a look-alike character stands for, if it is one.
fn fold_lookalike(code_point: u32) -> Option<u8> {
    match code_point {
        // The full-width forms of every printable ASCII character.
        0xFF01..=0xFF5E => u8::try_from(code_point - 0xFEE0).ok(),
        // Spaces: ideographic, no-break, the typographic ones, zero width, BOM.
        0x3000 | 0x00A0 | 0x2000..=0x200B | 0x202F | 0x205F | 0xFEFF => Some(b' '),
        // Slashes and backslashes.
        0x2215 | 0x2044 | 0x29F8 => Some(b'/'),
        0x29F5 | 0x29F9 | 0xFE68 => Some(b'\\'),
        // Dots and hyphens.
        0x2024 | 0xFE52 => Some(b'.'),
        0x2010..=0x2013 | 0x2212 | 0xFE63 => Some(b'-'),
        // Letters whose Unicode case mapping is an ASCII letter.
        0x0130 | 0x0131 => Some(b'i'),
        0x017F => Some(b's'),
        0x212A => Some(b'k'),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
