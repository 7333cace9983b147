//! The hash chain that makes the audit file tamper-evident, and `keygate audit verify`.
//!
//! Each line of the audit file is one CloudEvents JSON object whose first two members are
//! `sequence` (20-digit zero-padded decimal, +1 per record, the first record is 1) and
//! `keygateprevhash` (lowercase hex SHA-256 of the previous record's line bytes, without its `\n`;
//! 64 zeros for record 1). The chain runs across rotated files (`audit.jsonl.<first sequence>`, in
//! sequence order) into the current file, so deleting, editing, inserting or reordering a record
//! breaks it at that sequence. The hash covers the exact bytes, so no JSON canonicalisation is
//! involved.
//!
//! A line without a trailing `\n` at the end of a file is a *torn* line: the writer crashed
//! mid-write, before the fsync that would have acknowledged it, so no request acted on it. On
//! restart the file sink keeps such a file untouched (it is rotated aside, evidence kept) and
//! continues the chain from the last complete record; `verify` reports torn lines as torn, never
//! as tampering. Garbage on a complete line, however, is a break.
//!
//! What this deliberately does not do: prove that nobody rewrote the whole chain from some record
//! on (anyone with write access can recompute hashes), nor notice an edit of the very last record.
//! Both need the final hash anchored elsewhere: the verify output prints it, and the webhook sink
//! ships every event off the host.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::id::hex;

/// `keygateprevhash` of the first record: no predecessor.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Digits of the zero-padded `sequence` attribute: enough for `u64::MAX`.
const SEQUENCE_DIGITS: usize = 20;

/// Line prefix before the sequence digits.
const PREFIX_SEQUENCE: &[u8] = br#"{"sequence":""#;
/// Between the sequence digits and the previous hash.
const PREFIX_PREV_HASH: &[u8] = br#"","keygateprevhash":""#;
/// After the previous hash, before the rest of the event's members.
const PREFIX_END: &[u8] = br#"","#;

/// Bytes a chained line adds to an encoded event: the two attributes, minus the event's own
/// opening brace, plus the newline.
pub(crate) const CHAIN_OVERHEAD: usize = PREFIX_SEQUENCE.len()
    + SEQUENCE_DIGITS
    + PREFIX_PREV_HASH.len()
    + GENESIS_HASH.len()
    + PREFIX_END.len()
    + 1
    - 1;

/// Chunk size for reading a file backwards to find its last line.
const TAIL_CHUNK: u64 = 64 * 1024;

/// Where the chain continues: the next sequence and the hash of the last record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainHead {
    pub(crate) next_sequence: u64,
    pub(crate) prev_hash: String,
}

impl ChainHead {
    pub(crate) fn genesis() -> Self {
        ChainHead {
            next_sequence: 1,
            prev_hash: GENESIS_HASH.to_owned(),
        }
    }

    /// The head after `line` (a complete record line, without `\n`) with sequence `sequence`.
    pub(crate) fn after(sequence: u64, line: &[u8]) -> Self {
        ChainHead {
            next_sequence: sequence.saturating_add(1),
            prev_hash: hash_line(line),
        }
    }
}

/// Lowercase hex SHA-256 of a record line (without its `\n`).
pub(crate) fn hash_line(line: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, line).as_ref())
}

/// `sequence` as [`SEQUENCE_DIGITS`] zero-padded decimal digits (`u64::MAX` has 20).
fn sequence_digits(mut sequence: u64) -> [u8; SEQUENCE_DIGITS] {
    let mut digits = [b'0'; SEQUENCE_DIGITS];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (sequence % 10) as u8;
        sequence /= 10;
    }
    digits
}

/// Appends the chained line for `event` (an encoded JSON object with at least one member) to
/// `out`, including the trailing `\n`. Returns the line's length without the `\n`.
pub(crate) fn push_chained_line(out: &mut Vec<u8>, event: &[u8], head: &ChainHead) -> usize {
    let start = out.len();
    out.extend_from_slice(PREFIX_SEQUENCE);
    out.extend_from_slice(&sequence_digits(head.next_sequence));
    out.extend_from_slice(PREFIX_PREV_HASH);
    out.extend_from_slice(head.prev_hash.as_bytes());
    out.extend_from_slice(PREFIX_END);
    // INVARIANT: `event` starts with `{` and has at least one member (an encoded AuditEvent), so
    // dropping its brace and prepending `..."keygateprevhash":"…",` yields one valid object.
    out.extend_from_slice(event.get(1..).unwrap_or_default());
    let len = out.len() - start;
    out.push(b'\n');
    len
}

/// The chain attributes of a record line.
#[derive(Debug, Deserialize)]
struct Link {
    sequence: String,
    keygateprevhash: String,
}

/// `(sequence, prev_hash)` of a record line, or why it is not a record.
pub(crate) fn parse_link(line: &[u8]) -> Result<(u64, String), String> {
    let link: Link = serde_json::from_slice(line)
        .map_err(|e| format!("not an audit record: {}", json_error_kind(&e)))?;
    let seq = &link.sequence;
    if seq.len() != SEQUENCE_DIGITS || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return Err("`sequence` is not a 20-digit number".to_owned());
    }
    let sequence = seq
        .parse::<u64>()
        .map_err(|_| "`sequence` is out of range".to_owned())?;
    let prev = link.keygateprevhash;
    if prev.len() != GENESIS_HASH.len()
        || !prev
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("`keygateprevhash` is not a lowercase SHA-256 hex digest".to_owned());
    }
    Ok((sequence, prev))
}

fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "i/o error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "missing or invalid chain attributes",
        serde_json::error::Category::Eof => "truncated JSON",
    }
}

// === files ===

/// A rotated file: `<current>.<first sequence, 20 digits>[.<n>]`, ordered by `(first, n)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rotated {
    pub(crate) first_sequence: u64,
    pub(crate) n: u32,
    pub(crate) path: PathBuf,
}

/// The rotated files that belong to `current`, oldest first.
pub(crate) fn rotated_files(current: &Path) -> io::Result<Vec<Rotated>> {
    let (dir, name) = split_path(current)?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let Some(suffix) = file_name
            .strip_prefix(name.as_str())
            .and_then(|s| s.strip_prefix('.'))
        else {
            continue;
        };
        let (seq, n) = match suffix.split_once('.') {
            Some((seq, n)) => (seq, n.parse::<u32>().ok()),
            None => (suffix, Some(0)),
        };
        let Some(n) = n else { continue };
        if seq.len() != SEQUENCE_DIGITS || !seq.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(first_sequence) = seq.parse::<u64>() else {
            continue;
        };
        files.push(Rotated {
            first_sequence,
            n,
            path: entry.path(),
        });
    }
    files.sort();
    Ok(files)
}

/// A free name for rotating `current` whose first record is `first_sequence`.
pub(crate) fn rotated_name(current: &Path, first_sequence: u64) -> io::Result<PathBuf> {
    let (dir, name) = split_path(current)?;
    let base = format!("{name}.{first_sequence:0SEQUENCE_DIGITS$}");
    let mut candidate = dir.join(&base);
    let mut n = 0u32;
    while candidate.try_exists()? {
        n += 1;
        candidate = dir.join(format!("{base}.{n}"));
    }
    Ok(candidate)
}

fn split_path(current: &Path) -> io::Result<(PathBuf, String)> {
    let name = current
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "audit path has no file name")
        })?;
    let dir = match current.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_owned()))
}

/// The end of a file, as far as the chain is concerned.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    /// The last complete line (without `\n`), if any.
    pub(crate) last_line: Option<Vec<u8>>,
    /// The file ends with bytes after the last `\n`.
    pub(crate) torn: bool,
}

/// Reads the last complete line of `file` (of length `len`) and whether a torn line follows it.
pub(crate) fn read_tail(file: &mut File, len: u64) -> io::Result<Tail> {
    if len == 0 {
        return Ok(Tail::default());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    let torn = last[0] != b'\n';
    let end = if torn {
        match rfind_newline(file, len)? {
            Some(pos) => pos,
            None => {
                return Ok(Tail {
                    last_line: None,
                    torn,
                })
            }
        }
    } else {
        len - 1
    };
    let start = rfind_newline(file, end)?.map_or(0, |pos| pos + 1);
    let mut line = vec![0u8; usize::try_from(end - start).map_err(io::Error::other)?];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut line)?;
    Ok(Tail {
        last_line: Some(line),
        torn,
    })
}

/// Position of the last `\n` before `before`.
fn rfind_newline(file: &mut File, before: u64) -> io::Result<Option<u64>> {
    let mut end = before;
    let mut buf = vec![0u8; usize::try_from(TAIL_CHUNK.min(before)).map_err(io::Error::other)?];
    while end > 0 {
        let start = end.saturating_sub(TAIL_CHUNK);
        let chunk = &mut buf[..usize::try_from(end - start).map_err(io::Error::other)?];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        end = start;
    }
    Ok(None)
}

/// The first complete line of `file`, if it has one.
pub(crate) fn read_first_line(file: &mut File) -> io::Result<Option<Vec<u8>>> {
    file.seek(SeekFrom::Start(0))?;
    let mut line = Vec::new();
    BufReader::new(file).read_until(b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
        Ok(Some(line))
    } else {
        Ok(None)
    }
}

// === verify ===

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyReport {
    /// The chain is intact from record 1 to the last record.
    Ok {
        /// Records verified.
        count: u64,
        /// Hash of the last record's line: compare it with a copy kept elsewhere.
        final_hash: String,
        /// Sequences after which a torn line was found and the chain correctly continued in the
        /// next file (crash recoveries).
        recovered_torn: Vec<u64>,
    },
    /// The chain is intact, but the current file ends with a torn line (a crash mid-write that has
    /// not been recovered yet). Not tampering.
    TornTail {
        /// The last complete record before the torn line (0: none).
        after_sequence: u64,
        /// Records verified.
        count: u64,
        /// Hash of the last complete record's line.
        final_hash: String,
    },
    /// The chain is broken: `sequence` is the first record that is missing, altered or out of
    /// place.
    Broken {
        /// First sequence that cannot be trusted.
        sequence: u64,
        /// What was found there.
        reason: String,
    },
    /// The files could not be read.
    Unreadable {
        /// The I/O error.
        reason: String,
    },
}

/// Verifies the chain through the rotated files of `path` (oldest first) and `path` itself.
pub fn verify(path: &Path) -> VerifyReport {
    verify_anchored(path, None).0
}

/// [`verify`], also looking for `anchor` (a hash an earlier verify printed as the final hash, or
/// one shipped off the host): the sequence of the record whose hash it is, if the chain passes
/// through it. A trail cut back before that record, or rewritten from before it, does not.
pub fn verify_anchored(path: &Path, anchor: Option<&str>) -> (VerifyReport, Option<u64>) {
    match verify_files(path, anchor) {
        Ok(verified) => verified,
        Err(e) => (
            VerifyReport::Unreadable {
                reason: format!("`{}`: {e}", path.display()),
            },
            None,
        ),
    }
}

fn verify_files(path: &Path, anchor: Option<&str>) -> io::Result<(VerifyReport, Option<u64>)> {
    let mut files: Vec<PathBuf> = rotated_files(path)?.into_iter().map(|r| r.path).collect();
    if path.try_exists()? {
        files.push(path.to_path_buf());
    } else if files.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no audit file"));
    }
    let mut head = ChainHead::genesis();
    let mut count = 0u64;
    let mut recovered_torn = Vec::new();
    let mut anchored = None;
    let last_index = files.len() - 1;
    for (index, file) in files.iter().enumerate() {
        let mut reader = BufReader::new(File::open(file)?);
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                let after_sequence = head.next_sequence - 1;
                if index == last_index {
                    return Ok((
                        VerifyReport::TornTail {
                            after_sequence,
                            count,
                            final_hash: head.prev_hash,
                        },
                        anchored,
                    ));
                }
                recovered_torn.push(after_sequence);
                break;
            }
            line.pop();
            if let Err((sequence, reason)) = check_link(&line, &head) {
                return Ok((VerifyReport::Broken { sequence, reason }, anchored));
            }
            head = ChainHead::after(head.next_sequence, &line);
            if anchor.is_some_and(|a| a.eq_ignore_ascii_case(&head.prev_hash)) {
                anchored = Some(head.next_sequence - 1);
            }
            count += 1;
        }
    }
    Ok((
        VerifyReport::Ok {
            count,
            final_hash: head.prev_hash,
            recovered_torn,
        },
        anchored,
    ))
}

/// Checks that `line` is the record the chain expects next.
fn check_link(line: &[u8], head: &ChainHead) -> Result<(), (u64, String)> {
    let expected = head.next_sequence;
    let (sequence, prev_hash) = parse_link(line).map_err(|reason| (expected, reason))?;
    if sequence != expected {
        let reason = if sequence > expected {
            format!("record {expected} is missing: found record {sequence} in its place (deleted or reordered)")
        } else {
            format!("found record {sequence} again where record {expected} belongs (duplicated or reordered)")
        };
        return Err((expected, reason));
    }
    if prev_hash != head.prev_hash {
        return Err(if expected == 1 {
            (
                1,
                "record 1 does not start a chain (`keygateprevhash` is not the genesis hash)"
                    .to_owned(),
            )
        } else {
            (
                expected - 1,
                format!(
                    "record {} does not match the hash recorded in record {expected} (one of them was altered)",
                    expected - 1
                ),
            )
        });
    }
    Ok(())
}

/// `keygate audit verify FILE [--expect-hash H]`: prints one line (stdout when the chain holds,
/// stderr otherwise) and returns the exit code: 0 intact (also with a torn final line), 1 broken
/// or, with `expect_hash`, not passing through that hash, 2 unreadable.
pub fn run_verify_cli(path: &Path, expect_hash: Option<&str>) -> i32 {
    let (report, anchored) = verify_anchored(path, expect_hash);
    if let (Some(expected), VerifyReport::Ok { count, .. } | VerifyReport::TornTail { count, .. }) =
        (expect_hash, &report)
    {
        match anchored {
            Some(sequence) => println!(
                "anchored: record {sequence} has the expected hash {expected}; {} records after it",
                count - sequence
            ),
            None => {
                eprintln!(
                    "not anchored: no record of the {count} in the chain has the expected hash {expected} (the trail was cut back, replaced or rewritten before that point, or the hash belongs to another trail)"
                );
                return 1;
            }
        }
    }
    match report {
        VerifyReport::Ok {
            count,
            final_hash,
            recovered_torn,
        } => {
            let recovered = if recovered_torn.is_empty() {
                String::new()
            } else {
                let seqs: Vec<String> = recovered_torn.iter().map(u64::to_string).collect();
                format!("; recovered torn lines after sequence {}", seqs.join(", "))
            };
            println!("ok: {count} records, final hash {final_hash}{recovered}");
            0
        }
        VerifyReport::TornTail {
            after_sequence,
            count,
            final_hash,
        } => {
            println!(
                "ok: {count} records, final hash {final_hash}; torn final line after sequence {after_sequence} (interrupted write, not tampering)"
            );
            0
        }
        VerifyReport::Broken { sequence, reason } => {
            eprintln!("broken at sequence {sequence}: {reason}");
            1
        }
        VerifyReport::Unreadable { reason } => {
            eprintln!("cannot verify: {reason}");
            2
        }
    }
}

#[cfg(test)]
mod tests;
