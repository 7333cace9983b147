//! A static directory of API keys: key id → principal, with the secret stored only as a salted
//! HMAC-SHA256 (`hmac-sha256:<salt b64>:<tag b64>`). For development and air-gapped setups where
//! keygate cannot ask the upstream. Verification is constant-time (ring's `hmac::verify`).
//!
//! File format (TOML):
//! ```toml
//! [[keys]]
//! id = "ABCD1234567890AB"
//! principal = "u-alice"
//! groups = ["platform"]
//! secret_hash = "hmac-sha256:…:…"    # from `keygate hash-secret`
//! ```

use std::collections::HashMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::Deserialize;

use super::{BasicCredential, IdentityError};
use crate::model::{AuthMethod, Principal};

/// Scheme prefix of a stored secret hash.
const HASH_SCHEME: &str = "hmac-sha256";

/// A directory load error, naming the file and entry.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The file could not be read or parsed.
    #[error("`{path}`: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An entry is invalid.
    #[error("`{path}`: key `{key_id}`: {message}")]
    Entry {
        /// The file.
        path: String,
        /// The entry's key id.
        key_id: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    #[serde(default)]
    keys: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    id: String,
    principal: String,
    #[serde(default)]
    groups: Vec<String>,
    secret_hash: String,
}

#[derive(Debug)]
struct Entry {
    principal: String,
    groups: Vec<String>,
    salt: Vec<u8>,
    tag: Vec<u8>,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct Directory {
    entries: HashMap<String, Entry>,
}

impl Directory {
    /// Loads and validates a directory file.
    pub fn load(path: &Path) -> Result<Directory, DirectoryError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| DirectoryError::File {
            path: shown.clone(),
            message: format!("cannot read: {e}"),
        })?;
        Directory::parse(&text, &shown)
    }

    /// Parses directory text; `shown` names the source in errors.
    pub fn parse(text: &str, shown: &str) -> Result<Directory, DirectoryError> {
        let raw: RawDirectory = toml::from_str(text).map_err(|e| DirectoryError::File {
            path: shown.to_string(),
            message: e.message().to_string(),
        })?;
        let mut entries = HashMap::new();
        for entry in raw.keys {
            let err = |message: &str| DirectoryError::Entry {
                path: shown.to_string(),
                key_id: entry.id.clone(),
                message: message.to_string(),
            };
            if Principal::new(
                entry.principal.clone(),
                AuthMethod::Directory {
                    key_id: String::new(),
                },
            )
            .is_err()
            {
                return Err(err("`principal` must be a `u-…`, `sa-…` or `pool-…` id"));
            }
            let (salt, tag) = parse_hash(&entry.secret_hash).ok_or_else(|| {
                err("`secret_hash` must be `hmac-sha256:<salt>:<tag>` (see `keygate hash-secret`)")
            })?;
            let previous = entries.insert(
                entry.id.clone(),
                Entry {
                    principal: entry.principal.clone(),
                    groups: entry.groups.clone(),
                    salt,
                    tag,
                },
            );
            if previous.is_some() {
                return Err(err("duplicate key id"));
            }
        }
        Ok(Directory { entries })
    }

    /// Verifies a credential against the directory.
    pub fn verify(&self, credential: &BasicCredential<'_>) -> Result<Principal, IdentityError> {
        let rejected = || IdentityError::Rejected {
            key_id: credential.key_id.to_string(),
        };
        let entry = self.entries.get(credential.key_id).ok_or_else(rejected)?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &entry.salt);
        hmac::verify(&key, credential.secret().as_bytes(), &entry.tag).map_err(|_| rejected())?;
        Principal::new(
            entry.principal.clone(),
            AuthMethod::Directory {
                key_id: credential.key_id.to_string(),
            },
        )
        .map(|p| p.with_groups(entry.groups.clone()))
        .map_err(|_| rejected())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the directory is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn parse_hash(text: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut parts = text.split(':');
    if parts.next()? != HASH_SCHEME {
        return None;
    }
    let salt = STANDARD_NO_PAD.decode(parts.next()?).ok()?;
    let tag = STANDARD_NO_PAD.decode(parts.next()?).ok()?;
    (parts.next().is_none() && salt.len() >= 16 && tag.len() == 32).then_some((salt, tag))
}

/// Hashes a secret for the directory with a fresh random salt.
pub fn hash_secret(secret: &str) -> Result<String, ring::error::Unspecified> {
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)?;
    Ok(hash_with_salt(secret, &salt))
}

fn hash_with_salt(secret: &str, salt: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
    let tag = hmac::sign(&key, secret.as_bytes());
    format!(
        "{HASH_SCHEME}:{}:{}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(tag.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use http::{header::AUTHORIZATION, HeaderMap, HeaderValue};

    use super::*;
    use crate::identity::parse_basic;

    fn directory(secret: &str) -> Directory {
        let text = format!(
            "[[keys]]\nid = \"ABCD1234567890AB\"\nprincipal = \"u-alice\"\ngroups = [\"platform\"]\nsecret_hash = \"{}\"\n",
            hash_secret(secret).unwrap()
        );
        Directory::parse(&text, "dir.toml").unwrap()
    }

    fn verify(dir: &Directory, pair: &str) -> Result<Principal, IdentityError> {
        let mut h = HeaderMap::new();
        let encoded = STANDARD_NO_PAD.encode(pair);
        let padded = format!("{encoded}{}", "=".repeat((4 - encoded.len() % 4) % 4));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {padded}")).unwrap(),
        );
        let mut scratch = String::new();
        let c = parse_basic(&h, &mut scratch).unwrap();
        dir.verify(&c)
    }

    #[test]
    fn right_secret_gives_the_principal_with_groups() {
        let dir = directory("cfltSECRET");
        let p = verify(&dir, "ABCD1234567890AB:cfltSECRET").unwrap();
        assert_eq!(p.id(), "u-alice");
        assert_eq!(p.groups(), ["platform"]);
    }

    #[test]
    fn wrong_secret_or_unknown_key_is_rejected() {
        let dir = directory("cfltSECRET");
        assert!(matches!(
            verify(&dir, "ABCD1234567890AB:cfltWRONG"),
            Err(IdentityError::Rejected { .. })
        ));
        assert!(matches!(
            verify(&dir, "ZZZZ1234567890AB:cfltSECRET"),
            Err(IdentityError::Rejected { .. })
        ));
    }

    #[test]
    fn hashes_are_salted() {
        assert_ne!(hash_secret("x").unwrap(), hash_secret("x").unwrap());
        assert!(!hash_secret("cfltSECRET").unwrap().contains("cfltSECRET"));
    }

    #[test]
    fn bad_entries_name_the_key() {
        let err = Directory::parse(
            "[[keys]]\nid = \"K1\"\nprincipal = \"u-a\"\nsecret_hash = \"plain\"\n",
            "d.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("`K1`"), "{err}");
        let err = Directory::parse(
            &format!(
                "[[keys]]\nid = \"K1\"\nprincipal = \"env-1\"\nsecret_hash = \"{}\"\n",
                hash_secret("x").unwrap()
            ),
            "d.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("principal"), "{err}");
    }
}
