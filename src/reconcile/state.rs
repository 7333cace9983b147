//! What keygate's audit trail says about the organisation's keys, folded into a bounded state,
//! and the index file that keeps it between runs.
//!
//! The trail is the source of truth; the index is a cache of it, so a run reads only the records
//! written since the previous one. It holds the keys keygate created and has not deleted, the
//! creates whose outcome is not recorded yet, the unmanaged keys already reported (as long as they
//! exist upstream), the accepted baseline (its digest, from the trail), running totals per kind of
//! finding, and the position in the trail it was folded up to. Its size follows the number of keys,
//! never the number of events. Lost or stale (the trail does not contain its position), it is
//! rebuilt from the whole trail, with the same result: reconcile's own findings are records of the
//! trail too, so "reported once" survives a rebuild.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::listing::unix_seconds;

/// Where in the trail the index has folded up to (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The first sequence of the file that holds the record.
    pub file_first: u64,
    /// The byte offset of the record's line in that file.
    pub line_start: u64,
    /// The record's sequence.
    pub sequence: u64,
    /// SHA-256 (hex) of the record's line.
    pub hash: String,
}

/// Format version of the index file; another version is rebuilt from the trail.
const VERSION: u32 = 1;

/// A key keygate created (or matched to an unresolved create) and has not deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Managed {
    /// `spec.owner.id`.
    pub owner: Box<str>,
    /// `spec.resource.id`.
    pub resource: Box<str>,
    /// The resource's environment, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Box<str>>,
    /// When keygate recorded the create (or the key's creation time upstream, when matched).
    pub created: Box<str>,
    /// `created` in Unix seconds.
    pub created_unix: i64,
}

/// A create whose `request_received` record has no `response_complete` with an outcome yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// `spec.owner.id`.
    pub owner: Box<str>,
    /// `spec.resource.id`.
    pub resource: Box<str>,
    /// The resource's environment, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Box<str>>,
    /// `spec.display_name`, when the create set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Box<str>>,
    /// When the create was received.
    pub time: Box<str>,
    /// `time` in Unix seconds.
    pub time_unix: i64,
}

/// The baseline the trail records as accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineRecord {
    /// SHA-256 (hex) of the baseline file.
    pub sha256: Box<str>,
    /// How many keys it holds.
    pub keys: u64,
    /// When it was accepted.
    pub accepted_at: Box<str>,
}

/// Findings recorded in the trail so far, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// `io.keygate.apikey.unmanaged` records.
    pub unmanaged: u64,
    /// `io.keygate.apikey.vanished` records.
    pub vanished: u64,
    /// `io.keygate.apikey.unresolved` records.
    pub unresolved: u64,
}

/// The folded trail (see the module doc).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    version: u32,
    /// How far the trail has been folded in.
    pub(crate) position: Option<Position>,
    /// The time of the trail's first record: keys created before it predate keygate.
    pub first_time: Option<Box<str>>,
    /// Keys keygate created and has not deleted, by id.
    pub managed: HashMap<Box<str>, Managed>,
    /// Creates without a recorded outcome, by request id.
    pub pending: HashMap<Box<str>, Pending>,
    /// Unmanaged keys already reported (pruned once gone upstream).
    pub unmanaged: HashSet<Box<str>>,
    /// The accepted baseline, if any.
    pub baseline: Option<BaselineRecord>,
    /// Findings so far.
    pub totals: Totals,
}

/// What a record of the trail says, as far as reconcile cares.
#[derive(Debug, Default)]
pub struct Record<'a> {
    /// The CloudEvents `type` after `io.keygate.apikey.` (`create`, `delete`, `unmanaged`, …).
    pub verb: &'a str,
    /// `data.stage`.
    pub stage: &'a str,
    /// The event `time`.
    pub time: &'a str,
    /// `data.requestId`.
    pub request_id: &'a str,
    /// `data.status`.
    pub status: Option<u16>,
    /// `data.upstreamStatus`.
    pub upstream_status: Option<u16>,
    /// `data.createdKeyId`.
    pub created_key_id: Option<&'a str>,
    /// `data.target.owner`.
    pub owner: Option<&'a str>,
    /// `data.target.resourceId`.
    pub resource: Option<&'a str>,
    /// `data.target.environment`.
    pub environment: Option<&'a str>,
    /// `data.target.keyId`.
    pub key_id: Option<&'a str>,
    /// `data.target.displayName`.
    pub display_name: Option<&'a str>,
    /// `data.reconcile.createRequestId`.
    pub create_request_id: Option<&'a str>,
    /// `data.reconcile.keyCreatedAt`.
    pub key_created_at: Option<&'a str>,
    /// `data.reconcile.baselineSha256`.
    pub baseline_sha256: Option<&'a str>,
    /// `data.reconcile.baselineKeys`.
    pub baseline_keys: Option<u64>,
}

fn boxed(s: Option<&str>) -> Option<Box<str>> {
    s.map(Box::from)
}

fn success(status: Option<u16>) -> bool {
    status.is_some_and(|s| (200..300).contains(&s))
}

impl State {
    /// An empty state: nothing folded in yet.
    pub fn new() -> State {
        State {
            version: VERSION,
            ..State::default()
        }
    }

    /// Folds one record in. Every kind of record is idempotent to fold twice except the totals,
    /// and a record is only ever folded once (the position moves past it).
    pub fn apply(&mut self, r: &Record<'_>) {
        match (r.verb, r.stage) {
            ("create", "request_received") => {
                let (Some(owner), Some(resource)) = (r.owner, r.resource) else {
                    return;
                };
                self.pending.insert(
                    Box::from(r.request_id),
                    Pending {
                        owner: owner.into(),
                        resource: resource.into(),
                        environment: boxed(r.environment),
                        display_name: boxed(r.display_name),
                        time: r.time.into(),
                        time_unix: unix_seconds(r.time).unwrap_or(0),
                    },
                );
            }
            ("create", "response_complete") => {
                let Some(pending) = self.pending.remove(r.request_id) else {
                    // Denied or refused before forwarding: nothing was created.
                    return;
                };
                if let Some(key_id) = r.created_key_id.filter(|_| success(r.status)) {
                    self.managed.insert(
                        key_id.into(),
                        Managed {
                            owner: pending.owner,
                            resource: pending.resource,
                            environment: pending.environment,
                            created: r.time.into(),
                            created_unix: unix_seconds(r.time).unwrap_or(0),
                        },
                    );
                } else if r.upstream_status.is_some() && !success(r.upstream_status) {
                    // The upstream refused the create: no key.
                } else {
                    // No answer from the upstream (timeout, connection lost), or an answer keygate
                    // could not read: a key may exist. Still unresolved.
                    self.pending.insert(Box::from(r.request_id), pending);
                }
            }
            ("delete", "response_complete") if success(r.upstream_status) => {
                if let Some(key_id) = r.key_id {
                    self.managed.remove(key_id);
                    self.unmanaged.remove(key_id);
                }
            }
            ("unmanaged", _) => {
                if let Some(key_id) = r.key_id {
                    self.unmanaged.insert(key_id.into());
                }
                self.totals.unmanaged += 1;
            }
            ("vanished", _) => {
                if let Some(key_id) = r.key_id {
                    self.managed.remove(key_id);
                }
                self.totals.vanished += 1;
            }
            ("unresolved", _) => {
                if let Some(request_id) = r.create_request_id {
                    self.pending.remove(request_id);
                }
                if let (Some(key_id), Some(owner), Some(resource)) = (r.key_id, r.owner, r.resource)
                {
                    let created = r.key_created_at.unwrap_or(r.time);
                    self.managed.insert(
                        key_id.into(),
                        Managed {
                            owner: owner.into(),
                            resource: resource.into(),
                            environment: boxed(r.environment),
                            created: created.into(),
                            created_unix: unix_seconds(created).unwrap_or(0),
                        },
                    );
                    self.unmanaged.remove(key_id);
                }
                self.totals.unresolved += 1;
            }
            ("baseline", _) => {
                if let Some(sha256) = r.baseline_sha256 {
                    self.baseline = Some(BaselineRecord {
                        sha256: sha256.into(),
                        keys: r.baseline_keys.unwrap_or(0),
                        accepted_at: r.time.into(),
                    });
                }
            }
            _ => {}
        }
    }

    /// Reads the index file; `None` when there is none or it cannot be used (another version, not
    /// an index): the caller rebuilds from the trail.
    pub fn load(path: &Path) -> io::Result<Option<State>> {
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let reader = io::BufReader::with_capacity(1 << 20, file);
        match serde_json::from_reader::<_, State>(reader) {
            Ok(state) if state.version == VERSION => Ok(Some(state)),
            Ok(_) => Ok(None),
            Err(e) if e.is_io() => Err(io::Error::other(e)),
            Err(_) => Ok(None),
        }
    }

    /// Writes the index file atomically (a temporary file, fsynced, renamed over it).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        write_atomically(path, |out| {
            serde_json::to_writer(&mut *out, self).map_err(io::Error::other)
        })
    }
}

/// Writes `path` through a temporary file beside it: written, fsynced, renamed, directory fsynced,
/// so a crash leaves the old file or the new one, never half of one.
pub(crate) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> io::Result<()>,
) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file = std::fs::File::create(&tmp)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    write(&mut out)?;
    out.flush()?;
    out.get_ref().sync_all()?;
    drop(out);
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}
