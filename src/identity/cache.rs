//! The verified-identity cache: bounded in time and size, keyed by an HMAC of the whole credential.
//!
//! The key is HMAC-SHA256 of `key:secret` under a random key made at start-up and never exported,
//! so the cache holds no secret and no value that could be checked against a guessed secret
//! offline; a request with a known key id and a wrong secret has a different HMAC and can never hit
//! an entry. Only positive results are cached. Concurrent misses for the same credential wait for
//! one shared lookup (the first caller's), so a burst of identical requests costs one upstream call.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::hmac;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::{IdentityError, Lookup};
use crate::model::Principal;

/// HMAC-SHA256 tag of a credential.
type CredentialTag = [u8; 32];

type Outcome = Result<Arc<Principal>, IdentityError>;

/// See the module doc.
#[derive(Debug)]
pub struct IdentityCache {
    key: hmac::Key,
    ttl: Duration,
    capacity: usize,
    entries: Mutex<Entries>,
    inflight: Mutex<HashMap<CredentialTag, Arc<OnceCell<Outcome>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    lookups: AtomicU64,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<CredentialTag, (Arc<Principal>, Instant)>,
    /// Insertion order, for eviction when full (oldest first).
    order: VecDeque<CredentialTag>,
}

/// Counters of the cache (for metrics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests served from the cache.
    pub hits: u64,
    /// Requests that needed a lookup (their own or a concurrent one's).
    pub misses: u64,
    /// Lookups actually performed.
    pub lookups: u64,
    /// Entries held now.
    pub entries: usize,
}

impl IdentityCache {
    /// A cache whose entries live `ttl` and that holds at most `capacity` of them.
    pub fn new(ttl: Duration, capacity: usize) -> Result<IdentityCache, ring::error::Unspecified> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())?;
        Ok(IdentityCache {
            key,
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(Entries::default()),
            inflight: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
        })
    }

    fn tag(&self, credential: &[u8]) -> CredentialTag {
        let mut tag = [0u8; 32];
        tag.copy_from_slice(hmac::sign(&self.key, credential).as_ref());
        tag
    }

    /// The cached principal for `credential`, counted as a hit; `None` (not counted) otherwise.
    pub fn peek(&self, credential: &[u8]) -> Option<Arc<Principal>> {
        let principal = self.get(&self.tag(credential))?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(principal)
    }

    /// The cached principal for `credential` (`key:secret`), or the result of `resolve` — shared
    /// with any concurrent caller for the same credential. Errors are not cached.
    pub async fn get_or_resolve<F, Fut>(
        &self,
        credential: &[u8],
        resolve: F,
    ) -> Result<(Arc<Principal>, Lookup), IdentityError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let tag = self.tag(credential);
        if let Some(principal) = self.get(&tag) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((principal, Lookup::Hit));
        }
        // Boxed: the lookup's state (an upstream exchange) would otherwise be part of every
        // request's future, hit or miss.
        Box::pin(self.miss(tag, None, resolve)).await
    }

    /// Like [`IdentityCache::get_or_resolve`] for a credential that expires: on a miss, `until`
    /// says when (an error refuses the credential without a lookup), and the entry lives no
    /// longer than that.
    pub async fn get_or_resolve_until<U, F, Fut>(
        &self,
        credential: &[u8],
        until: U,
        resolve: F,
    ) -> Result<(Arc<Principal>, Lookup), IdentityError>
    where
        U: FnOnce() -> Result<Instant, IdentityError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let tag = self.tag(credential);
        if let Some(principal) = self.get(&tag) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((principal, Lookup::Hit));
        }
        let cap = until()?;
        Box::pin(self.miss(tag, Some(cap), resolve)).await
    }

    async fn miss<F, Fut>(
        &self,
        tag: CredentialTag,
        cap: Option<Instant>,
        resolve: F,
    ) -> Result<(Arc<Principal>, Lookup), IdentityError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let cell = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            // A lookup that finished between the cache check and this lock has already cached
            // its principal (it inserts before it leaves `inflight`): no second lookup.
            if let Some(principal) = self.get(&tag) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok((principal, Lookup::Hit));
            }
            inflight.entry(tag).or_default().clone()
        };
        self.misses.fetch_add(1, Ordering::Relaxed);
        let outcome = cell
            .get_or_init(|| async {
                self.lookups.fetch_add(1, Ordering::Relaxed);
                let outcome = resolve().await;
                if let Ok(principal) = &outcome {
                    self.insert(tag, principal.clone(), cap);
                }
                outcome
            })
            .await
            .clone();
        {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            if inflight.get(&tag).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                inflight.remove(&tag);
            }
        }
        outcome.map(|p| (p, Lookup::Miss))
    }

    fn get(&self, tag: &CredentialTag) -> Option<Arc<Principal>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.map.get(tag) {
            Some((principal, expires)) if *expires > Instant::now() => Some(principal.clone()),
            Some(_) => {
                entries.map.remove(tag);
                None
            }
            None => None,
        }
    }

    fn insert(&self, tag: CredentialTag, principal: Arc<Principal>, cap: Option<Instant>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        while entries.map.len() >= self.capacity {
            match entries.order.pop_front() {
                Some(old) => {
                    entries.map.remove(&old);
                }
                None => break,
            }
        }
        // `order` may hold tags already removed (expired); drop them so it stays bounded.
        if entries.order.len() > self.capacity * 2 {
            let Entries { map, order } = &mut *entries;
            order.retain(|t| map.contains_key(t));
        }
        let expires = match cap {
            Some(cap) => cap.min(Instant::now() + self.ttl),
            None => Instant::now() + self.ttl,
        };
        if entries.map.insert(tag, (principal, expires)).is_none() {
            entries.order.push_back(tag);
        }
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            lookups: self.lookups.load(Ordering::Relaxed),
            entries: self
                .entries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .map
                .len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::model::AuthMethod;

    fn principal(id: &str) -> Arc<Principal> {
        Arc::new(
            Principal::new(
                id,
                AuthMethod::ApiKey {
                    key_id: "KEY".into(),
                },
            )
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn second_request_with_the_same_credential_hits() {
        let cache = IdentityCache::new(Duration::from_secs(60), 10).unwrap();
        let (_, first) = cache
            .get_or_resolve(b"KEY:right", || async { Ok(principal("u-a")) })
            .await
            .unwrap();
        let (p, second) = cache
            .get_or_resolve(b"KEY:right", || async { panic!("must not resolve") })
            .await
            .unwrap();
        assert_eq!((first, second), (Lookup::Miss, Lookup::Hit));
        assert_eq!(p.id(), "u-a");
    }

    #[tokio::test]
    async fn known_key_id_with_wrong_secret_never_hits() {
        let cache = IdentityCache::new(Duration::from_secs(60), 10).unwrap();
        cache
            .get_or_resolve(b"KEY:right", || async { Ok(principal("u-a")) })
            .await
            .unwrap();
        let err = cache
            .get_or_resolve(b"KEY:wrong", || async {
                Err(IdentityError::Rejected {
                    key_id: "KEY".into(),
                })
            })
            .await
            .unwrap_err();
        assert!(matches!(err, IdentityError::Rejected { .. }));
        assert_eq!(cache.stats().hits, 0);
        assert_eq!(cache.stats().lookups, 2);
    }

    #[tokio::test]
    async fn failures_are_not_cached() {
        let cache = IdentityCache::new(Duration::from_secs(60), 10).unwrap();
        let _ = cache
            .get_or_resolve(b"KEY:s", || async {
                Err(IdentityError::Unavailable("down".into()))
            })
            .await;
        let (_, lookup) = cache
            .get_or_resolve(b"KEY:s", || async { Ok(principal("u-a")) })
            .await
            .unwrap();
        assert_eq!(lookup, Lookup::Miss);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl() {
        let cache = IdentityCache::new(Duration::from_secs(60), 10).unwrap();
        cache
            .get_or_resolve(b"KEY:s", || async { Ok(principal("u-a")) })
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        let (_, lookup) = cache
            .get_or_resolve(b"KEY:s", || async { panic!("still fresh") })
            .await
            .unwrap();
        assert_eq!(lookup, Lookup::Hit);
        tokio::time::advance(Duration::from_secs(2)).await;
        let (_, lookup) = cache
            .get_or_resolve(b"KEY:s", || async { Ok(principal("u-a")) })
            .await
            .unwrap();
        assert_eq!(lookup, Lookup::Miss);
    }

    #[tokio::test]
    async fn size_is_bounded_by_evicting_the_oldest() {
        let cache = IdentityCache::new(Duration::from_secs(60), 3).unwrap();
        for i in 0..10 {
            cache
                .get_or_resolve(format!("KEY{i}:s").as_bytes(), || async {
                    Ok(principal("u-a"))
                })
                .await
                .unwrap();
        }
        assert_eq!(cache.stats().entries, 3);
        let (_, lookup) = cache
            .get_or_resolve(b"KEY9:s", || async { Ok(principal("u-a")) })
            .await
            .unwrap();
        assert_eq!(lookup, Lookup::Hit);
        let (_, lookup) = cache
            .get_or_resolve(b"KEY0:s", || async { Ok(principal("u-a")) })
            .await
            .unwrap();
        assert_eq!(lookup, Lookup::Miss);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_lookup() {
        let cache = Arc::new(IdentityCache::new(Duration::from_secs(60), 10).unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let cache = cache.clone();
            let calls = calls.clone();
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_resolve(b"KEY:s", || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        Ok(principal("u-a"))
                    })
                    .await
                    .map(|(p, _)| p.id().to_string())
            }));
        }
        // Every task is waiting once the one lookup has started and all 16 counted a miss.
        while cache.stats().misses < 16 || calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), "u-a");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats().lookups, 1);
    }
}
