//! Rate limiting: keyed GCRA token buckets (governor) per principal, per principal and action,
//! and one global bucket, answering "may this request go upstream now?".
//!
//! Pipeline position: after identity (a bucket is keyed by who the caller is) and before
//! forwarding; the composition in `app.rs` decides whether it runs before or after the policy
//! decision. A refusal is a [`RateLimited`], which `error.rs` maps to 429 with the headers from
//! [`RateLimited::headers`].
//!
//! Limits marked `shared` live in Redis instead, one budget for every replica (see `shared.rs`);
//! [`RateLimiter::admit`] is the check the pipeline makes, deciding local limits here and shared
//! ones in one round trip to Redis, falling back per limit when Redis cannot answer.
//!
//! Deliberately not here: metrics registration (the lead owns the registry; this module exposes
//! [`RateLimited::limit_id`], [`RateLimiter::key_count`] and [`SharedStore::up_gauge`]), and the
//! tasks that call [`RateLimiter::housekeeping`] and [`SharedStore::run`]. Nothing here sees a
//! credential: a principal is an id.
//!
//! # Model
//!
//! A limit is keyed by one of three key kinds: `principal` (one bucket per principal),
//! `principal_action` (one bucket per principal *and* action; optionally only for the listed
//! actions; never for requests without an action, i.e. ungoverned routes) or `global` (one bucket
//! for all traffic, protecting the organisation's own Confluent rate limit). A caller without a
//! verified identity is a [`Subject::Address`]: principal-keyed limits key it by source address
//! (IPv6 by its /64), and only limits without `match` apply to it.
//!
//! # Precedence
//!
//! `match` selects the principals a limit applies to; the bucket is still per principal. Among
//! the limits of one key kind that apply to a request, only the most specific tier counts: a
//! limit naming the principal id beats one matching through a group, which beats one without
//! `match`. So a group-matched limit *replaces* the general one for that group's members (for the
//! actions it covers), rather than adding to it. Limits of the same kind on the same tier all
//! apply (e.g. 10/s and 1000/day for everyone). Key kinds are independent: a principal limit and
//! a principal_action limit both apply to a create.
//!
//! # Order and token accounting
//!
//! A request is refused if any applicable limit refuses, and then no limit is charged: every
//! applicable limit but the first is first *peeked* (governor's decision run without storing
//! it), and only if all would allow are tokens spent, first-applicable first. Limits are checked
//! narrowest first: `principal_action`, then `principal`, then `global`, each in config order, so
//! a caller refused by its own limits never spends the shared global budget. Between the peek and
//! the spend another request may take the last token of a later limit; in that rare race the
//! earlier limits stay charged. Retry-After is the longest wait among the refusing limits, so a
//! client that waits that long is not refused again by a limit that was already refusing.
//!
//! # Shared limits
//!
//! A request's shared limits are decided by Redis after its local limits were peeked (so a caller
//! refused by a local limit costs no round trip) and before the local limits are charged. While
//! Redis is unavailable, a shared limit with `on_unavailable = "local"` is checked like a local
//! limit on this replica's own bucket for it (which is otherwise unused), `"allow"` drops it, and
//! `"deny"` refuses the request with [`SharedUnavailable`] (a 503) — unless a limit that could be
//! checked refuses it first, which is a real 429.
//!
//! # Headers
//!
//! `X-RateLimit-Limit` is the refusing limit's bucket size (`burst`, which defaults to
//! `requests`); `X-RateLimit-Remaining` is the tokens left in it, always 0 on a refusal (so no
//! governor state snapshot is taken: the allow path stays the cheapest middleware);
//! `X-RateLimit-Reset` is the relative number of seconds until that bucket is full again;
//! `Retry-After` the whole seconds until the request would be allowed. Both round up and are at
//! least 1, as in Confluent's responses (docs/confluent-api.md §3).
//!
//! # Memory
//!
//! A bucket is 16 bytes plus map overhead, keyed by a 64-bit hash (see `key.rs`), so an existing
//! caller costs no allocation. [`RateLimiter::housekeeping`] drops every bucket that has been idle
//! long enough to be full again (plus one token interval) and shrinks the maps.

mod config;
mod key;
pub mod shared;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::NotUntil;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};

use self::key::{BucketMap, KeyHasher, Mode, PeekStore, Probe, GLOBAL_KEY};
use self::shared::{OnUnavailable, SharedLimit, Verdict};
pub use self::shared::{SharedStore, SharedUnavailable};
use crate::model::Action;

use self::config::LimitSpec;
pub use self::config::{
    RateLimitConfig, RawLimit, RawMatch, RawQuota, RawRateLimitConfig, MAX_LIMITS,
};

/// `X-RateLimit-Limit`: the bucket size of the refusing limit.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`: requests left in that bucket right now.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`: seconds (relative, not a timestamp) until that bucket is full again.
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Invalid rate-limit configuration.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// The TOML could not be read (only from [`RateLimitConfig::from_toml`]).
    #[error("ratelimit: {0}")]
    Syntax(String),
    /// More limits than [`MAX_LIMITS`].
    #[error("ratelimit: {count} limits configured, at most {max} are supported")]
    TooManyLimits {
        /// Limits in the file.
        count: usize,
        /// [`MAX_LIMITS`].
        max: usize,
    },
    /// A limit without an id.
    #[error("ratelimit: limit #{index}: `id` must not be empty")]
    EmptyId {
        /// Zero-based position in `[[ratelimit.limits]]`.
        index: usize,
    },
    /// An id with characters unfit for metrics and audit.
    #[error(
        "ratelimit: limit id `{id}` must be at most 64 characters of A-Z, a-z, 0-9, `.`, `_`, `-`"
    )]
    InvalidId {
        /// The id.
        id: String,
    },
    /// Two limits with one id.
    #[error("ratelimit: limit id `{id}` is used twice")]
    DuplicateId {
        /// The id.
        id: String,
    },
    /// `key` is not a known key kind.
    #[error("ratelimit: limit `{id}`: unknown key `{key}`, expected `principal`, `principal_action` or `global`")]
    UnknownKeyKind {
        /// The limit.
        id: String,
        /// What the file said.
        key: String,
    },
    /// `actions` on a limit that is not keyed by action.
    #[error("ratelimit: limit `{id}`: `actions` is only allowed with key `principal_action`, not `{key}`")]
    ActionsNotAllowed {
        /// The limit.
        id: String,
        /// Its key kind.
        key: &'static str,
    },
    /// `actions = []`, which would make the limit apply to nothing.
    #[error("ratelimit: limit `{id}`: `actions` must name at least one action (omit it for all)")]
    EmptyActions {
        /// The limit.
        id: String,
    },
    /// An action name that is not a governed action.
    #[error("ratelimit: limit `{id}`: unknown action `{action}`, expected one of CreateApiKey, ListApiKeys, GetApiKey, UpdateApiKey, DeleteApiKey")]
    UnknownAction {
        /// The limit.
        id: String,
        /// What the file said.
        action: String,
    },
    /// `match` on the global limit, which has no principal to match.
    #[error("ratelimit: limit `{id}`: `match` is not allowed with key `global`, which is one bucket for all traffic")]
    MatchOnGlobal {
        /// The limit.
        id: String,
    },
    /// `match = {}`, which would make the limit apply to nobody.
    #[error("ratelimit: limit `{id}`: `match` must name at least one principal or group (omit it for everyone)")]
    EmptyMatch {
        /// The limit.
        id: String,
    },
    /// `quota.per` is not a duration.
    #[error("ratelimit: limit `{id}`: quota.per `{per}` is not a duration like `1s`, `1m` or `1h`: {reason}")]
    InvalidPeriod {
        /// The limit.
        id: String,
        /// What the file said.
        per: String,
        /// The parser's explanation.
        reason: String,
    },
    /// A zero `per`, `requests` or `burst`.
    #[error("ratelimit: limit `{id}`: quota.{field} must be greater than zero")]
    ZeroQuota {
        /// The limit.
        id: String,
        /// `per`, `requests` or `burst`.
        field: &'static str,
    },
    /// `shared = true` (or `[ratelimit.shared] all`) without a `[ratelimit.shared]` store.
    #[error("ratelimit: limit `{id}`: `shared = true` needs a `[ratelimit.shared]` section with the Redis `url`")]
    SharedWithoutStore {
        /// The limit.
        id: String,
    },
    /// `on_unavailable` on a limit that is not shared.
    #[error("ratelimit: limit `{id}`: `on_unavailable` is only used with `shared = true`")]
    FallbackWithoutShared {
        /// The limit.
        id: String,
    },
    /// `on_unavailable` is not a known mode.
    #[error("ratelimit: limit `{id}`: unknown on_unavailable `{mode}`, expected `local`, `deny` or `allow`")]
    UnknownFallback {
        /// The limit.
        id: String,
        /// What the file said.
        mode: String,
    },
    /// A quota that the shared store cannot represent exactly.
    #[error("ratelimit: limit `{id}`: cannot be shared: {reason}")]
    NotShareable {
        /// The limit.
        id: String,
        /// Why.
        reason: &'static str,
    },
    /// A field of `[ratelimit.shared]` is invalid.
    #[error("`{field}`: {message}")]
    Field {
        /// The dotted path (`ratelimit.shared.url`).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// `per / requests` is below governor's 1 ns resolution.
    #[error("ratelimit: limit `{id}`: quota of {requests} requests per `{per}` is finer than 1ns per request")]
    QuotaTooFine {
        /// The limit.
        id: String,
        /// What the file said.
        per: String,
        /// What the file said.
        requests: u32,
    },
}

/// What a limit is keyed by; the discriminant is the check order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// One bucket per principal and action.
    PrincipalAction = 0,
    /// One bucket per principal (or source address).
    Principal = 1,
    /// One bucket for everything.
    Global = 2,
}

impl KeyKind {
    const COUNT: usize = 3;

    /// The config spelling.
    fn as_str(self) -> &'static str {
        match self {
            KeyKind::PrincipalAction => "principal_action",
            KeyKind::Principal => "principal",
            KeyKind::Global => "global",
        }
    }
}

/// Who a request is charged to.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A verified principal with its groups.
    Principal {
        /// `u-…`, `sa-…`, `pool-…`.
        id: &'a str,
        /// Groups identity established, matched against `match.groups`.
        groups: &'a [String],
    },
    /// Anonymous or unverified traffic (ungoverned routes), keyed by source address.
    Address(IpAddr),
}

/// A refused request: which limit refused and the numbers for the 429 headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limit `{limit_id}` exceeded: retry after {}s", whole_seconds(*.retry_after))]
pub struct RateLimited {
    limit_id: Arc<str>,
    retry_after: Duration,
    limit: u32,
    remaining: u32,
    reset: Duration,
}

impl RateLimited {
    /// A refusal by `limit_id`, for tests of how refusals are rendered.
    #[cfg(test)]
    pub(crate) fn sample(limit_id: &str) -> RateLimited {
        RateLimited {
            limit_id: Arc::from(limit_id),
            retry_after: Duration::from_secs(7),
            limit: 10,
            remaining: 0,
            reset: Duration::from_secs(60),
        }
    }

    /// The id of the refusing limit (for the 429 body, the metric label and the audit event).
    pub fn limit_id(&self) -> &str {
        &self.limit_id
    }

    /// Exact time until this request would be allowed.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The refusing limit's bucket size.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Tokens left in the refusing bucket: 0.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    /// Exact time until the refusing bucket is full again.
    pub fn reset(&self) -> Duration {
        self.reset
    }

    /// `Retry-After`, `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`, in
    /// whole seconds rounded up (at least 1; Reset is never below Retry-After).
    pub fn headers(&self) -> [(HeaderName, HeaderValue); 4] {
        let retry = whole_seconds(self.retry_after);
        let reset = whole_seconds(self.reset).max(retry);
        [
            (RETRY_AFTER, HeaderValue::from(retry)),
            (X_RATELIMIT_LIMIT, HeaderValue::from(self.limit)),
            (X_RATELIMIT_REMAINING, HeaderValue::from(self.remaining)),
            (X_RATELIMIT_RESET, HeaderValue::from(reset)),
        ]
    }
}

/// Why [`RateLimiter::admit`] refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// A limit was exceeded: 429.
    #[error(transparent)]
    Limited(#[from] RateLimited),
    /// A shared limit with `on_unavailable = "deny"` could not be checked: 503.
    #[error(transparent)]
    Unavailable(#[from] SharedUnavailable),
}

/// Seconds, rounded up, at least 1: a client told "0" would retry at once.
fn whole_seconds(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

type Governor<C> =
    governor::RateLimiter<Probe, PeekStore, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One configured limit and its buckets.
struct Limit<C: Clock> {
    spec: LimitSpec,
    /// Shared with the limiters that [`RateLimiter::reconfigure`] derives, while unchanged. For a
    /// shared limit: the fallback bucket, used only while Redis is unavailable.
    buckets: Arc<Buckets<C>>,
    /// Key stem and quota in Redis, for a shared limit when a store is configured.
    shared: Option<SharedLimit>,
}

/// A governor keyed limiter and a handle on its map.
struct Buckets<C: Clock> {
    governor: Governor<C>,
    /// The map inside `governor`'s store, for sizes.
    map: Arc<BucketMap>,
}

/// The rate limiter: all configured limits and their buckets.
///
/// Cheap to share (`Send + Sync`); swap in a reconfigured one with `arc_swap`. Generic over
/// governor's clock so tests can use `FakeRelativeClock`; production uses the default (quanta).
pub struct RateLimiter<C: Clock = DefaultClock> {
    /// Sorted by key kind (narrowest first), config order within a kind.
    limits: Box<[Limit<C>]>,
    /// Bit `i` set: `limits[i]` lives in the shared store.
    shared_mask: u64,
    /// The shared store, when `[ratelimit.shared]` is configured.
    store: Option<SharedStore>,
    hasher: KeyHasher,
    clock: C,
}

impl RateLimiter<DefaultClock> {
    /// Builds the limiter with governor's default clock. With `[ratelimit.shared]`, this creates
    /// the store (it connects on first use; spawn [`SharedStore::run`] from
    /// [`RateLimiter::shared_store`] to probe it and bring it back after failures).
    pub fn new(config: &RateLimitConfig) -> Self {
        RateLimiter::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// Builds the limiter on `clock`.
    pub fn with_clock(config: &RateLimitConfig, clock: C) -> Self {
        let store = config.shared.as_ref().map(SharedStore::new);
        RateLimiter::build(config, KeyHasher::default(), clock, store, |_| None)
    }

    /// A limiter for `new`, keeping the buckets (shared, not copied) of every limit whose id, key
    /// kind and quota are unchanged; any other limit starts with full buckets. Changes to
    /// `match` or `actions` alone keep the buckets. `self` keeps working until it is dropped.
    ///
    /// The shared store is kept as it is (its connection settings are read at start-up only), and
    /// with it the counts of shared limits whose id and quota are unchanged.
    pub fn reconfigure(&self, new: &RateLimitConfig) -> RateLimiter<C> {
        match (&self.store, &new.shared) {
            (Some(store), Some(settings)) if !store.config().same_store(settings) => {
                tracing::warn!(
                    "ratelimit.shared changed: the new connection settings take effect at the \
                     next restart; the running store is kept"
                );
            }
            (None, Some(_)) => tracing::warn!(
                "ratelimit.shared was added: it takes effect at the next restart; until then \
                 shared limits behave as if Redis were unavailable"
            ),
            _ => {}
        }
        RateLimiter::build(
            new,
            self.hasher.clone(),
            self.clock.clone(),
            self.store.clone(),
            |spec| {
                self.limits
                    .iter()
                    .find(|old| {
                        old.spec.id == spec.id
                            && old.spec.kind == spec.kind
                            && old.spec.quota == spec.quota
                    })
                    .map(|old| Arc::clone(&old.buckets))
            },
        )
    }

    fn build(
        config: &RateLimitConfig,
        hasher: KeyHasher,
        clock: C,
        store: Option<SharedStore>,
        reuse: impl Fn(&LimitSpec) -> Option<Arc<Buckets<C>>>,
    ) -> Self {
        let mut limits: Vec<Limit<C>> = config
            .limits
            .iter()
            .map(|spec| Limit {
                spec: spec.clone(),
                buckets: reuse(spec).unwrap_or_else(|| {
                    let map = Arc::new(BucketMap::default());
                    Arc::new(Buckets {
                        governor: governor::RateLimiter::new(
                            spec.quota,
                            PeekStore::new(Arc::clone(&map)),
                            clock.clone(),
                        ),
                        map,
                    })
                }),
                shared: match (&store, spec.shared) {
                    (Some(store), Some(_)) => Some(SharedLimit::new(store, spec)),
                    _ => None,
                },
            })
            .collect();
        // Stable: config order within a kind.
        limits.sort_by_key(|l| l.spec.kind as u8);
        // INVARIANT: `check` keeps per-limit scratch space in arrays of MAX_LIMITS and sets of
        // limits in a u64; the validated config never holds more.
        debug_assert!(limits.len() <= MAX_LIMITS);
        let shared_mask = limits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.spec.shared.is_some())
            .fold(0u64, |mask, (i, _)| mask | 1 << i);
        RateLimiter {
            limits: limits.into_boxed_slice(),
            shared_mask,
            store,
            hasher,
            clock,
        }
    }

    /// The shared store, to spawn [`SharedStore::run`] and register its gauge.
    pub fn shared_store(&self) -> Option<&SharedStore> {
        self.store.as_ref()
    }

    /// Whether any limit lives in the shared store ([`RateLimiter::admit`] may then wait for it).
    pub fn has_shared_limits(&self) -> bool {
        self.shared_mask != 0
    }

    /// No limit is configured: every check passes without work.
    pub fn is_unlimited(&self) -> bool {
        self.limits.is_empty()
    }

    /// Charges one request by `who` (doing `action` on a governed route, `None` elsewhere) to
    /// every applicable limit, or refuses it without charging any (see the module docs for
    /// precedence and order). Every limit is checked on this replica's buckets, shared ones too:
    /// the pipeline calls [`RateLimiter::admit`].
    pub fn check(&self, who: &Subject<'_>, action: Option<Action>) -> Result<(), RateLimited> {
        let (applicable, best) = self.applicable(who, action);
        self.check_local(applicable, who, action, &best)
    }

    /// Charges one request by `who` doing `action` to every applicable limit, or refuses it: local
    /// limits on this replica, shared ones in one round trip to Redis (see "Shared limits" in the
    /// module docs). Without applicable shared limits this never waits.
    pub async fn admit(&self, who: &Subject<'_>, action: Option<Action>) -> Result<(), Rejected> {
        let (applicable, best) = self.applicable(who, action);
        let shared = applicable & self.shared_mask;
        if shared == 0 {
            return Ok(self.check_local(applicable, who, action, &best)?);
        }
        let local = applicable & !shared;
        if let Some(store) = self.store.as_ref().filter(|s| s.is_usable()) {
            // A caller refused here costs no round trip.
            self.peek_local(local, who, action, &best)?;
            // Which limit each pushed key belongs to, to name the one that refused.
            let mut pushed = [0u8; MAX_LIMITS];
            let mut count = 0;
            for i in Bits(shared) {
                if self.limits[i].shared.is_some() {
                    // INVARIANT: i < MAX_LIMITS <= u8::MAX.
                    pushed[count] = i as u8;
                    count += 1;
                }
            }
            let pushed = &pushed[..count];
            let limits = pushed.iter().filter_map(|&i| {
                let limit = &self.limits[usize::from(i)];
                Some((limit.shared.as_ref()?, limit.spec.kind))
            });
            match store.check(limits, who, action).await {
                Ok(Verdict::Allowed) => return Ok(self.check_local(local, who, action, &best)?),
                Ok(Verdict::Refused {
                    position,
                    wait,
                    reset,
                }) => {
                    // `check` only answers positions of pushed keys.
                    let spec = &self.limits[usize::from(pushed[position])].spec;
                    return Err(Rejected::Limited(RateLimited {
                        limit_id: Arc::clone(&spec.id),
                        retry_after: wait,
                        limit: spec.burst(),
                        remaining: 0,
                        reset,
                    }));
                }
                Err(err) => store.fail(&err),
            }
        }
        self.fallback(applicable, shared, who, action, &best)
    }

    /// The decision while the shared store cannot answer: each shared limit as its
    /// `on_unavailable` says.
    fn fallback(
        &self,
        applicable: u64,
        shared: u64,
        who: &Subject<'_>,
        action: Option<Action>,
        best: &[u8; KeyKind::COUNT],
    ) -> Result<(), Rejected> {
        let mut local = applicable & !shared;
        let mut denied: Option<&LimitSpec> = None;
        for i in Bits(shared) {
            let spec = &self.limits[i].spec;
            match spec.shared.unwrap_or(OnUnavailable::Local) {
                OnUnavailable::Local => local |= 1 << i,
                OnUnavailable::Allow => {}
                OnUnavailable::Deny => {
                    denied.get_or_insert(spec);
                }
            }
        }
        if let Some(spec) = denied {
            // A limit that can be checked and refuses is a real 429, and says when to retry.
            self.peek_local(local, who, action, best)?;
            let retry = self
                .store
                .as_ref()
                .map_or(Duration::from_secs(1), SharedStore::probe_interval);
            return Err(SharedUnavailable::new(&spec.id, retry).into());
        }
        Ok(self.check_local(local, who, action, best)?)
    }

    /// The limits that apply to `who` doing `action` (a set of indices into `limits`), and the
    /// best tier per key kind.
    fn applicable(&self, who: &Subject<'_>, action: Option<Action>) -> (u64, [u8; KeyKind::COUNT]) {
        // Which limits apply: the best tier per key kind, then the limits on it.
        let mut tiers = [0u8; MAX_LIMITS];
        let mut best = [0u8; KeyKind::COUNT];
        for (limit, tier) in self.limits.iter().zip(tiers.iter_mut()) {
            *tier = limit.spec.tier(who, action);
            let kind_best = &mut best[limit.spec.kind as usize];
            *kind_best = (*kind_best).max(*tier);
        }
        let mut applicable = 0u64;
        for (i, (limit, tier)) in self.limits.iter().zip(tiers).enumerate() {
            if tier != 0 && tier == best[limit.spec.kind as usize] {
                applicable |= 1 << i;
            }
        }
        (applicable, best)
    }

    /// Refuses if any limit in `set` would refuse now, charging none.
    fn peek_local(
        &self,
        set: u64,
        who: &Subject<'_>,
        action: Option<Action>,
        best: &[u8; KeyKind::COUNT],
    ) -> Result<(), RateLimited> {
        if set == 0 {
            return Ok(());
        }
        let keys = Keys::new(&self.hasher, who, action, best);
        let mut refusal: Option<Refusal<'_, C>> = None;
        for i in Bits(set) {
            let limit = &self.limits[i];
            if let Err(not_until) = limit.probe(keys.of(limit), Mode::Peek) {
                refusal = Some(Refusal::longest(refusal, limit, not_until, &self.clock));
            }
        }
        match refusal {
            Some(refusal) => Err(refusal.into_error()),
            None => Ok(()),
        }
    }

    /// Charges every limit in `set` on this replica's buckets, or refuses without charging any.
    fn check_local(
        &self,
        set: u64,
        who: &Subject<'_>,
        action: Option<Action>,
        best: &[u8; KeyKind::COUNT],
    ) -> Result<(), RateLimited> {
        let mut applicable = Bits(set).map(|i| &self.limits[i]);
        let Some(first) = applicable.next() else {
            return Ok(());
        };
        let keys = Keys::new(&self.hasher, who, action, best);

        // Peek all but the first; the first is decided by spending its token.
        let mut refusal: Option<Refusal<'_, C>> = None;
        for limit in applicable.clone() {
            if let Err(not_until) = limit.probe(keys.of(limit), Mode::Peek) {
                refusal = Some(Refusal::longest(refusal, limit, not_until, &self.clock));
            }
        }
        if let Some(refusal) = refusal {
            let refusal = match first.probe(keys.of(first), Mode::Peek) {
                Err(not_until) => Refusal::longest(Some(refusal), first, not_until, &self.clock),
                Ok(()) => refusal,
            };
            return Err(refusal.into_error());
        }
        for limit in std::iter::once(first).chain(applicable) {
            if let Err(not_until) = limit.probe(keys.of(limit), Mode::Consume) {
                return Err(Refusal::longest(None, limit, not_until, &self.clock).into_error());
            }
        }
        Ok(())
    }

    /// Drops buckets that are indistinguishable from full ones (idle for a whole refill) and
    /// releases their memory. Call it periodically (every few seconds to minutes); the cost is a
    /// pass over all keys.
    pub fn housekeeping(&self) {
        for limit in self.limits.iter() {
            limit.buckets.governor.retain_recent();
            limit.buckets.governor.shrink_to_fit();
        }
    }

    /// Live buckets over all limits, for a gauge.
    pub fn key_count(&self) -> usize {
        self.limits.iter().map(|l| l.buckets.map.len()).sum()
    }

    /// Allocated bucket slots over all limits, to show memory is released.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.limits.iter().map(|l| l.buckets.map.capacity()).sum()
    }

    /// Live buckets per limit id, for a labelled gauge.
    pub fn key_counts(&self) -> impl Iterator<Item = (&str, usize)> {
        self.limits
            .iter()
            .map(|l| (&*l.spec.id, l.buckets.map.len()))
    }
}

impl<C: Clock> fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field(
                "limits",
                &self.limits.iter().map(|l| &*l.spec.id).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The indices of the set bits of a limit set, lowest first.
#[derive(Debug, Clone, Copy)]
struct Bits(u64);

impl Iterator for Bits {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let i = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(i)
    }
}

// === impl Limit ===

impl<C: Clock> Limit<C> {
    fn probe(&self, key: u64, mode: Mode) -> Result<(), NotUntil<C::Instant>> {
        self.buckets.governor.check_key(&Probe { key, mode })
    }
}

/// The bucket keys of one request, computed once.
struct Keys {
    subject: u64,
    subject_action: u64,
}

impl Keys {
    fn new(
        hasher: &KeyHasher,
        who: &Subject<'_>,
        action: Option<Action>,
        best: &[u8; KeyKind::COUNT],
    ) -> Keys {
        let wanted = |kind: KeyKind| best[kind as usize] != 0;
        let subject = if wanted(KeyKind::Principal) || wanted(KeyKind::PrincipalAction) {
            hasher.subject(who)
        } else {
            GLOBAL_KEY
        };
        let subject_action = match action {
            Some(action) if wanted(KeyKind::PrincipalAction) => {
                hasher.subject_action(subject, action)
            }
            _ => GLOBAL_KEY,
        };
        Keys {
            subject,
            subject_action,
        }
    }

    fn of<C: Clock>(&self, limit: &Limit<C>) -> u64 {
        match limit.spec.kind {
            KeyKind::PrincipalAction => self.subject_action,
            KeyKind::Principal => self.subject,
            KeyKind::Global => GLOBAL_KEY,
        }
    }
}

/// The refusal with the longest wait so far.
struct Refusal<'a, C: Clock> {
    limit: &'a Limit<C>,
    wait: Duration,
}

impl<'a, C: Clock> Refusal<'a, C> {
    /// The refusal by `limit`, or `current` if that one waits at least as long.
    fn longest(
        current: Option<Self>,
        limit: &'a Limit<C>,
        not_until: NotUntil<C::Instant>,
        clock: &C,
    ) -> Self {
        let wait = not_until.wait_time_from(clock.now());
        match current {
            Some(current) if current.wait >= wait => current,
            _ => Refusal { limit, wait },
        }
    }

    fn into_error(self) -> RateLimited {
        let spec = &self.limit.spec;
        RateLimited {
            limit_id: Arc::clone(&spec.id),
            retry_after: self.wait,
            limit: spec.burst(),
            remaining: 0,
            reset: self.wait + spec.tau(),
        }
    }
}

#[cfg(test)]
mod tests;
