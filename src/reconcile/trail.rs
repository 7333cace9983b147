//! Reading the audit trail from where the index left off: the rotated files (oldest first) and the
//! current file, record by record, with bounded memory.
//!
//! A [`Position`] names the last record folded in: the first sequence of its file (a rotated file
//! keeps its first sequence in its name), the offset of its line, its sequence and the hash of its
//! line. Resuming checks that the line at that offset still hashes the same — the file was rotated
//! meanwhile, or the trail replaced: then every file is read again from the start. Only the records
//! reconcile folds in (creates, deletes, its own findings) are parsed; the others are recognised by
//! their `type` and skipped. A torn final line (a crash mid-write) is not a record and is not
//! passed.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::state::{Position, Record, State};
use crate::audit::chain::{hash_line, parse_link, read_first_line, rotated_files};

/// The prefix of every governed event's type in a record line.
const TYPE_PREFIX: &[u8] = br#""type":"io.keygate.apikey."#;

/// Read buffer per file.
const READ_BUFFER: usize = 256 * 1024;

/// What one catch-up read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Complete record lines read.
    pub records: u64,
    /// Of them, records folded into the state.
    pub folded: u64,
    /// The index's position was not found: the state was rebuilt from the whole trail.
    pub rebuilt: bool,
    /// Places where the sequence does not continue (a missing or edited file).
    pub gaps: Vec<(u64, u64)>,
}

/// One file of the trail with its first sequence.
struct TrailFile {
    first: u64,
    path: PathBuf,
}

/// The trail's files in chain order: the rotated ones, then the current one (when it holds a
/// record).
fn files(current: &Path) -> io::Result<Vec<TrailFile>> {
    let mut files: Vec<TrailFile> = match rotated_files(current) {
        Ok(rotated) => rotated
            .into_iter()
            .map(|r| TrailFile {
                first: r.first_sequence,
                path: r.path,
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    match File::open(current) {
        Ok(mut file) => {
            if let Some(line) = read_first_line(&mut file)? {
                if let Ok((first, _)) = parse_link(&line) {
                    files.push(TrailFile {
                        first,
                        path: current.to_path_buf(),
                    });
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(files)
}

/// Folds every record after `state`'s position into it and moves the position to the last one.
pub fn catch_up(current: &Path, state: &mut State) -> io::Result<Scan> {
    let files = files(current)?;
    let mut scan = Scan::default();
    // Where to resume: the file holding the position and the offset after its line.
    let resume = match &state.position {
        None => Some((0, 0, None)),
        Some(pos) => find(&files, pos)?.map(|(index, next)| (index, next, Some(pos.sequence))),
    };
    let (start, offset, last_sequence) = match resume {
        Some(resume) => resume,
        None => {
            tracing::warn!(
                audit.path = %current.display(),
                "The reconcile index does not match the audit trail (replaced or rewritten?); \
                 rebuilding it from the whole trail"
            );
            *state = State::new();
            scan.rebuilt = true;
            (0, 0, None)
        }
    };
    let mut reader = Reader {
        state,
        scan: &mut scan,
        last_sequence,
        line: Vec::with_capacity(4096),
        last: Vec::with_capacity(4096),
    };
    for (i, file) in files.iter().enumerate().skip(start) {
        let from = if i == start { offset } else { 0 };
        reader.file(file, from)?;
    }
    let last = std::mem::take(&mut reader.last);
    if reader.scan.records > 0 {
        // Hashed once, for the last record read: the position a later run resumes from.
        if let Some(pos) = reader.state.position.as_mut() {
            pos.hash = hash_line(&last);
        }
    }
    Ok(scan)
}

/// The index of the file holding `pos` and the offset after its line, if the line is still there.
fn find(files: &[TrailFile], pos: &Position) -> io::Result<Option<(usize, u64)>> {
    for (i, f) in files.iter().enumerate() {
        if f.first != pos.file_first {
            continue;
        }
        let mut file = File::open(&f.path)?;
        file.seek(SeekFrom::Start(pos.line_start))?;
        let mut line = Vec::new();
        BufReader::new(file).read_until(b'\n', &mut line)?;
        if line.pop() != Some(b'\n') {
            continue;
        }
        if hash_line(&line) == pos.hash {
            return Ok(Some((i, pos.line_start + line.len() as u64 + 1)));
        }
    }
    Ok(None)
}

struct Reader<'s> {
    state: &'s mut State,
    scan: &'s mut Scan,
    last_sequence: Option<u64>,
    /// The line being read.
    line: Vec<u8>,
    /// The last complete line (its hash becomes the position).
    last: Vec<u8>,
}

impl Reader<'_> {
    fn file(&mut self, f: &TrailFile, from: u64) -> io::Result<()> {
        let mut file = File::open(&f.path)?;
        file.seek(SeekFrom::Start(from))?;
        let mut reader = BufReader::with_capacity(READ_BUFFER, file);
        let mut offset = from;
        loop {
            self.line.clear();
            let n = reader.read_until(b'\n', &mut self.line)?;
            if n == 0 || self.line.last() != Some(&b'\n') {
                // End of file, or a torn final line: not a record.
                return Ok(());
            }
            self.line.pop();
            let line_start = offset;
            offset += n as u64;
            self.record(f.first, line_start)?;
        }
    }

    fn record(&mut self, file_first: u64, line_start: u64) -> io::Result<()> {
        let Some(sequence) = sequence_of(&self.line) else {
            // Garbage on a complete line: `keygate audit verify` reports it; reconcile skips it.
            return Ok(());
        };
        if let Some(last) = self.last_sequence {
            if sequence != last + 1 {
                self.scan.gaps.push((last, sequence));
            }
        }
        self.last_sequence = Some(sequence);
        self.scan.records += 1;
        if self.state.first_time.is_none() {
            self.state.first_time = time_of(&self.line).map(Box::from);
        }
        if let Some(verb) = relevant_verb(&self.line) {
            if let Ok(line) = serde_json::from_slice::<Line<'_>>(&self.line) {
                let record = line.record(verb);
                self.state.apply(&record);
                self.scan.folded += 1;
            }
        }
        // Kept (not hashed) until the end of the catch-up: only the last record's hash is needed.
        std::mem::swap(&mut self.line, &mut self.last);
        self.state.position = Some(Position {
            file_first,
            line_start,
            sequence,
            hash: String::new(),
        });
        Ok(())
    }
}

/// The 20-digit `sequence` at the start of a record line.
fn sequence_of(line: &[u8]) -> Option<u64> {
    const PREFIX: &[u8] = br#"{"sequence":""#;
    let digits = line.strip_prefix(PREFIX)?.get(..20)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The event `time` of a record line, without parsing it.
fn time_of(line: &[u8]) -> Option<&str> {
    const KEY: &[u8] = br#""time":""#;
    let at = memchr::memmem::find(line, KEY)? + KEY.len();
    let rest = line.get(at..)?;
    let end = memchr::memchr(b'"', rest)?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// The verb of a record reconcile folds in, found without parsing the line.
fn relevant_verb(line: &[u8]) -> Option<&'static str> {
    let at = memchr::memmem::find(line, TYPE_PREFIX)? + TYPE_PREFIX.len();
    let rest = line.get(at..)?;
    [
        "create",
        "delete",
        "unmanaged",
        "vanished",
        "unresolved",
        "baseline",
    ]
    .into_iter()
    .find(|verb| {
        rest.strip_prefix(verb.as_bytes())
            .is_some_and(|after| after.first() == Some(&b'"'))
    })
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow)]
    data: Data<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data<'a> {
    #[serde(borrow)]
    stage: Cow<'a, str>,
    #[serde(borrow)]
    request_id: Cow<'a, str>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    upstream_status: Option<u16>,
    #[serde(borrow, default)]
    created_key_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    target: Option<Target<'a>>,
    #[serde(borrow, default)]
    reconcile: Option<Reconcile<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Target<'a> {
    #[serde(borrow, default)]
    owner: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    resource_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    environment: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    key_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    display_name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reconcile<'a> {
    #[serde(borrow, default)]
    key_created_at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    create_request_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    baseline_sha256: Option<Cow<'a, str>>,
    #[serde(default)]
    baseline_keys: Option<u64>,
}

impl<'a> Line<'a> {
    fn record(&'a self, verb: &'a str) -> Record<'a> {
        let target = self.data.target.as_ref();
        let t = |f: fn(&'a Target<'a>) -> &'a Option<Cow<'a, str>>| {
            target.and_then(|t| f(t).as_deref())
        };
        let reconcile = self.data.reconcile.as_ref();
        Record {
            verb,
            stage: &self.data.stage,
            time: &self.time,
            request_id: &self.data.request_id,
            status: self.data.status,
            upstream_status: self.data.upstream_status,
            created_key_id: self.data.created_key_id.as_deref(),
            owner: t(|t| &t.owner),
            resource: t(|t| &t.resource_id),
            environment: t(|t| &t.environment),
            key_id: t(|t| &t.key_id),
            display_name: t(|t| &t.display_name),
            create_request_id: reconcile.and_then(|r| r.create_request_id.as_deref()),
            key_created_at: reconcile.and_then(|r| r.key_created_at.as_deref()),
            baseline_sha256: reconcile.and_then(|r| r.baseline_sha256.as_deref()),
            baseline_keys: reconcile.and_then(|r| r.baseline_keys),
        }
    }
}
