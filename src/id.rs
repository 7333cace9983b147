//! Identifiers keygate mints itself (request ids, audit event ids) and the lower-case hex they are
//! written in. Not secrets: unique, cheap, no system call per id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        let [hi, lo] = hex_byte(b);
        out.push(char::from(hi));
        out.push(char::from(lo));
    }
    out
}

fn hex_byte(b: u8) -> [u8; 2] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]]
}

/// 32 lower-case hex digits: a random 64-bit prefix drawn once per process, then the next value of
/// `counter`. Unique within the process by construction (per counter) and across processes and
/// restarts by the prefix; one system-RNG call per process, not per id. Written in place: this
/// runs for most requests.
pub(crate) fn unique_hex(counter: &AtomicU64) -> [u8; 32] {
    // The prefix's hex is computed once; per id only the counter's 8 bytes are written.
    static PREFIX: OnceLock<[u8; 16]> = OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 8];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
            // The system RNG essentially never fails on Linux; if it does, derive the prefix from
            // the time and the process id.
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(&nanos.to_le_bytes());
            ctx.update(&std::process::id().to_le_bytes());
            bytes.copy_from_slice(&ctx.finish().as_ref()[..8]);
        }
        let mut text = [0u8; 16];
        for (pair, byte) in text.chunks_exact_mut(2).zip(bytes) {
            pair.copy_from_slice(&hex_byte(byte));
        }
        text
    });
    let count = counter.fetch_add(1, Ordering::Relaxed);
    let mut text = [0u8; 32];
    text[..16].copy_from_slice(prefix);
    for (i, digit) in text[16..].iter_mut().enumerate() {
        // Nibble i of the counter, most significant first.
        let nibble = (count >> (60 - 4 * i)) & 0x0f;
        *digit = b"0123456789abcdef"[nibble as usize];
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_and_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn unique_ids_share_the_prefix_and_count_up() {
        let counter = AtomicU64::new(41);
        let a = unique_hex(&counter);
        let b = unique_hex(&counter);
        assert!(a.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(a[..16], b[..16]);
        assert_eq!(&a[16..], b"0000000000000029");
        assert_eq!(&b[16..], b"000000000000002a");
        let wide = AtomicU64::new(0x0123_4567_89ab_cdef);
        assert_eq!(&unique_hex(&wide)[16..], b"0123456789abcdef");
        assert_eq!(&unique_hex(&wide)[16..], b"0123456789abcdf0");
    }
}
