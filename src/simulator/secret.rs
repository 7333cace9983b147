//! Credential material for the simulator: API key ids, `cflt` secrets and their checksum, random
//! object ids, and the keyed digests the store keeps instead of secrets.
//!
//! Formats follow docs/confluent-api.md §5: a key id is 16 characters `A-Z0-9`; a secret is `cflt` + 54
//! characters from `A-Za-z0-9+/` + a 6-character checksum, the unpadded standard base64 of the
//! little-endian CRC32 of those 54 characters. This module does not decide who may use a key;
//! the store and the routes do that.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use crate::id::hex;

/// Prefix of every secret issued since July 2025.
pub(crate) const SECRET_PREFIX: &str = "cflt";
/// Length of a whole secret, prefix and checksum included.
pub(crate) const SECRET_LEN: usize = 64;
/// Random characters between the prefix and the checksum.
const SECRET_BODY_LEN: usize = 54;
/// Length of an API key id.
pub(crate) const KEY_ID_LEN: usize = 16;

const KEY_ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// Characters of the random part of `sa-…` and `rb-…` ids (lower case, like Confluent's).
const OBJECT_ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The system random number generator failed; nothing can be minted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RandomFailed;

/// The 6-character checksum of the 54 characters after the `cflt` prefix.
pub(crate) fn checksum(body: &str) -> String {
    STANDARD_NO_PAD.encode(crc32fast::hash(body.as_bytes()).to_le_bytes())
}

/// Whether `secret` is a well-formed `cflt` secret whose checksum matches.
pub(crate) fn is_valid_cflt_secret(secret: &str) -> bool {
    let Some(rest) = secret.strip_prefix(SECRET_PREFIX) else {
        return false;
    };
    if secret.len() != SECRET_LEN || !rest.bytes().all(|b| SECRET_ALPHABET.contains(&b)) {
        return false;
    }
    let (body, sum) = rest.split_at(SECRET_BODY_LEN);
    checksum(body) == sum
}

/// Whether `secret` is acceptable in a seed: a valid `cflt` secret, or a legacy 64-character
/// secret without the prefix.
pub(crate) fn is_valid_secret(secret: &str) -> bool {
    if secret.starts_with(SECRET_PREFIX) {
        return is_valid_cflt_secret(secret);
    }
    secret.len() == SECRET_LEN && secret.bytes().all(|b| SECRET_ALPHABET.contains(&b))
}

/// Whether `id` has the shape of an API key id.
pub(crate) fn is_key_id(id: &str) -> bool {
    id.len() == KEY_ID_LEN && id.bytes().all(|b| KEY_ID_ALPHABET.contains(&b))
}

/// The random source of one simulator.
pub(crate) struct Minter {
    rng: SystemRandom,
}

impl Minter {
    pub(crate) fn new() -> Self {
        Self {
            rng: SystemRandom::new(),
        }
    }

    /// A fresh API key id.
    pub(crate) fn key_id(&self) -> Result<String, RandomFailed> {
        self.random_string(KEY_ID_ALPHABET, KEY_ID_LEN)
    }

    /// A fresh `cflt` secret with a valid checksum.
    pub(crate) fn secret(&self) -> Result<String, RandomFailed> {
        let body = self.random_string(SECRET_ALPHABET, SECRET_BODY_LEN)?;
        let sum = checksum(&body);
        Ok(format!("{SECRET_PREFIX}{body}{sum}"))
    }

    /// A fresh object id such as `sa-k3x9q2`.
    pub(crate) fn object_id(&self, prefix: &str) -> Result<String, RandomFailed> {
        Ok(format!(
            "{prefix}{}",
            self.random_string(OBJECT_ID_ALPHABET, 6)?
        ))
    }

    /// 32 lower-case hex characters, used for `X-Request-Id`.
    pub(crate) fn hex_id(&self) -> Result<String, RandomFailed> {
        let mut bytes = [0u8; 16];
        self.rng.fill(&mut bytes).map_err(|_| RandomFailed)?;
        Ok(hex(&bytes))
    }

    /// A random (version 4) UUID, used for error occurrence ids.
    pub(crate) fn uuid(&self) -> Result<String, RandomFailed> {
        let mut b = [0u8; 16];
        self.rng.fill(&mut b).map_err(|_| RandomFailed)?;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex(&b);
        Ok(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ))
    }

    /// `len` characters drawn uniformly from `alphabet` (rejection sampling, no modulo bias).
    fn random_string(&self, alphabet: &[u8], len: usize) -> Result<String, RandomFailed> {
        // INVARIANT: every alphabet here has between 2 and 256 symbols.
        let limit = 256 - 256 % alphabet.len();
        let mut out = String::with_capacity(len);
        let mut pool = [0u8; 64];
        while out.len() < len {
            self.rng.fill(&mut pool).map_err(|_| RandomFailed)?;
            for &b in &pool {
                if usize::from(b) < limit && out.len() < len {
                    out.push(char::from(alphabet[usize::from(b) % alphabet.len()]));
                }
            }
        }
        Ok(out)
    }
}

/// SHA-256 of a secret; the store keeps this instead of the secret. Prints nothing of itself.
#[derive(Clone)]
pub(crate) struct SecretDigest([u8; 32]);

impl SecretDigest {
    pub(crate) fn of(secret: &str) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref());
        Self(out)
    }

    /// Whether `presented` is the secret behind this digest. Compares digests, not secrets, and
    /// without an early exit, so timing reveals nothing useful about the stored secret.
    pub(crate) fn matches(&self, presented: &str) -> bool {
        let other = Self::of(presented);
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDigest(**REDACTED**)")
    }
}
