//! Bucket keys and the governor state store that holds them.
//!
//! A bucket key is a 64-bit keyed SipHash of what the limit is keyed by (principal id, source
//! address, plus the action for `principal_action`), computed once per request. Hashing to a
//! `Copy` key keeps the hot path free of allocation: governor's keyed stores look a key up by
//! `&K`, so an owned string key would have to be allocated per request. The hash key is random
//! per process and shared by all limits (and kept across reconfiguration), so nobody can aim two
//! principals at one bucket; an accidental collision among a million live keys has a probability
//! of about 3·10⁻⁸ and would only make two callers share a bucket.
//!
//! [`PeekStore`] wraps the DashMap store governor itself uses, adding a dry-run mode: a
//! [`Probe`] with [`Mode::Peek`] runs governor's GCRA decision on the current state without
//! writing it back, and without inserting a missing key. That lets the limiter ask "would every
//! applicable limit allow this?" before it spends a token anywhere.
//!
//! Nothing here decides which limits apply; that is in the parent module.

use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::Arc;

use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};

use super::config::action_index;
use super::Subject;
use crate::model::Action;

/// Prefix length an IPv6 source address is keyed by: one customer site or host usually holds a
/// whole /64, so keying by full address would let a single caller rotate through 2⁶⁴ buckets.
const IPV6_KEY_PREFIX_BITS: u32 = 64;

/// The one key of a `global` limit's store.
pub(super) const GLOBAL_KEY: u64 = 0;

/// Domain tags, so a principal id and an address can never hash from the same input.
const TAG_PRINCIPAL: u8 = 1;
const TAG_IPV4: u8 = 2;
const TAG_IPV6: u8 = 3;

/// Computes bucket keys; one per limiter, cloned into a reconfigured limiter so keys stay stable.
#[derive(Debug, Clone, Default)]
pub(super) struct KeyHasher(RandomState);

impl KeyHasher {
    /// The key of `who` for `principal` limits.
    pub(super) fn subject(&self, who: &Subject<'_>) -> u64 {
        match who {
            Subject::Principal { id, .. } => self.0.hash_one((TAG_PRINCIPAL, *id)),
            Subject::Address(ip) => match ip.to_canonical() {
                IpAddr::V4(v4) => self.0.hash_one((TAG_IPV4, v4.to_bits())),
                IpAddr::V6(v6) => self
                    .0
                    .hash_one((TAG_IPV6, v6.to_bits() >> (128 - IPV6_KEY_PREFIX_BITS))),
            },
        }
    }

    /// The key of `who` (already hashed by [`KeyHasher::subject`]) for `principal_action`
    /// limits.
    pub(super) fn subject_action(&self, subject: u64, action: Action) -> u64 {
        self.0.hash_one((subject, action_index(action)))
    }
}

/// Whether a state-store access may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Mode {
    /// Decide and store the new state (a normal governor check).
    Consume,
    /// Decide only; the stored state is left unchanged and a missing key is not inserted.
    Peek,
}

/// The key governor sees: the bucket key plus the access [`Mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Probe {
    pub(super) key: u64,
    pub(super) mode: Mode,
}

/// The bucket map: key → GCRA state.
pub(super) type BucketMap = DashMapStateStore<u64, Prehashed>;

/// A keyed governor state store with a dry-run mode; see the module docs.
#[derive(Debug)]
pub(super) struct PeekStore {
    map: Arc<BucketMap>,
}

impl PeekStore {
    /// A store on `map`; the caller may keep a handle to read its size.
    pub(super) fn new(map: Arc<BucketMap>) -> PeekStore {
        PeekStore { map }
    }
}

impl StateStore for PeekStore {
    type Key = Probe;

    fn measure_and_replace<T, F, E>(&self, probe: &Probe, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.map.get(&probe.key) {
            return match probe.mode {
                Mode::Consume => state.measure_and_replace(&NotKeyed::NonKey, f),
                Mode::Peek => peek(&state, f),
            };
        }
        match probe.mode {
            // A missing key is a fresh bucket, which is what `None` means to governor.
            Mode::Peek => f(None).map(|(outcome, _)| outcome),
            Mode::Consume => self
                .map
                .entry(probe.key)
                .or_default()
                .measure_and_replace(&NotKeyed::NonKey, f),
        }
    }
}

/// Runs governor's decision `f` on `state` without storing its result: the decision is smuggled
/// out through the error channel, which `InMemoryState` never writes back.
fn peek<T, E, F>(state: &InMemoryState, f: F) -> Result<T, E>
where
    F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
{
    let never_stored: Result<Infallible, Result<T, E>> =
        state.measure_and_replace(&NotKeyed::NonKey, |tat| match f(tat) {
            Ok((outcome, _)) => Err(Ok(outcome)),
            Err(refusal) => Err(Err(refusal)),
        });
    match never_stored {
        Ok(never) => match never {},
        Err(decision) => decision,
    }
}

impl ShrinkableKeyedStateStore<Probe> for PeekStore {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::<u64>::retain_recent(&*self.map, drop_below);
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A `BuildHasher` for keys that are already uniformly distributed keyed hashes: it passes the
/// `u64` through instead of hashing it a second time.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Prehashed;

impl BuildHasher for Prehashed {
    type Hasher = PrehashedHasher;

    fn build_hasher(&self) -> PrehashedHasher {
        PrehashedHasher(0)
    }
}

/// The hasher of [`Prehashed`].
#[derive(Debug)]
pub(super) struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    /// Not used for `u64` keys; folds bytes so the hasher stays correct for any input.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}
