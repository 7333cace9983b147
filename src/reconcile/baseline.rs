//! The baseline: keys that predate keygate, accepted once (`keygate reconcile --accept-baseline`)
//! so they are not reported as unmanaged.
//!
//! It is a JSON file beside the audit file listing the accepted keys, and the acceptance is a
//! record of the trail (`io.keygate.apikey.baseline`) carrying the file's SHA-256. A baseline file
//! that does not match the digest the trail recorded — edited to hide a key, or replaced — is not
//! used: every key in it is reported like any other (fail closed), and the run says why.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::listing::UpstreamKey;
use super::state::{write_atomically, BaselineRecord};
use crate::id::hex;

#[derive(Debug, Serialize, Deserialize)]
struct BaselineFile {
    accepted_at: String,
    keys: Vec<BaselineKey>,
}

#[derive(Debug, Serialize, Deserialize)]
struct BaselineKey {
    id: String,
    owner: String,
    resource: String,
    created_at: String,
}

/// Writes the baseline file for `keys` (atomically); returns its SHA-256 (hex).
pub fn write(path: &Path, accepted_at: &str, keys: &[&UpstreamKey]) -> io::Result<String> {
    let file = BaselineFile {
        accepted_at: accepted_at.to_owned(),
        keys: keys
            .iter()
            .map(|k| BaselineKey {
                id: k.id.to_string(),
                owner: k.owner.to_string(),
                resource: k.resource.to_string(),
                created_at: k.created_at.to_string(),
            })
            .collect(),
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
    write_atomically(path, |out| out.write_all(&bytes))?;
    Ok(sha256(&bytes))
}

/// The key ids of the baseline file, if it matches what the trail recorded.
pub fn load(path: &Path, recorded: &BaselineRecord) -> Result<HashSet<Box<str>>, String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "the baseline accepted at {} cannot be read from `{}`: {e}",
            recorded.accepted_at,
            path.display()
        )
    })?;
    if sha256(&bytes) != *recorded.sha256 {
        return Err(format!(
            "`{}` does not match the baseline the audit trail recorded at {} (SHA-256 {}): it was \
             changed, so it is not used",
            path.display(),
            recorded.accepted_at,
            recorded.sha256
        ));
    }
    let file: BaselineFile = serde_json::from_slice(&bytes)
        .map_err(|e| format!("`{}` is not a baseline file: {e}", path.display()))?;
    Ok(file.keys.into_iter().map(|k| Box::from(k.id)).collect())
}

fn sha256(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}
