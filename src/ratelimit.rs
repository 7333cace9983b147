//! Rate limiting: keyed GCRA token buckets (governor) per principal, per principal and action,
//! and one global bucket, answering "may this request go upstream now?".
//!
//! Pipeline position: after identity (a bucket is keyed by who the caller is) and before
//! forwarding; the composition in `app.rs` decides whether it runs before or after the policy
//! decision. A refusal is a [`RateLimited`], which `error.rs` maps to 429 with the headers from
//! [`RateLimited::headers`].
//!
//! Deliberately not here: sharing limits between replicas (Redis, docs/architecture.md §6), metrics
//! registration (the lead owns the registry; this module exposes [`RateLimited::limit_id`] and
//! [`RateLimiter::key_count`]), and the periodic timer that calls
//! [`RateLimiter::housekeeping`]. Nothing here sees a credential: a principal is an id.
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
pub mod stage;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::NotUntil;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};

use self::key::{BucketMap, KeyHasher, Mode, PeekStore, Probe, GLOBAL_KEY};
use crate::policy::action::Action;

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

/// Seconds, rounded up, at least 1: a client told "0" would retry at once.
fn whole_seconds(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

type Governor<C> =
    governor::RateLimiter<Probe, PeekStore, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One configured limit and its buckets.
struct Limit<C: Clock> {
    spec: LimitSpec,
    /// Shared with the limiters that [`RateLimiter::reconfigure`] derives, while unchanged.
    buckets: Arc<Buckets<C>>,
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
    hasher: KeyHasher,
    clock: C,
}

impl RateLimiter<DefaultClock> {
    /// Builds the limiter with governor's default clock.
    pub fn new(config: &RateLimitConfig) -> Self {
        RateLimiter::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// Builds the limiter on `clock`.
    pub fn with_clock(config: &RateLimitConfig, clock: C) -> Self {
        RateLimiter::build(config, KeyHasher::default(), clock, |_| None)
    }

    /// A limiter for `new`, keeping the buckets (shared, not copied) of every limit whose id, key
    /// kind and quota are unchanged; any other limit starts with full buckets. Changes to
    /// `match` or `actions` alone keep the buckets. `self` keeps working until it is dropped.
    pub fn reconfigure(&self, new: &RateLimitConfig) -> RateLimiter<C> {
        RateLimiter::build(new, self.hasher.clone(), self.clock.clone(), |spec| {
            self.limits
                .iter()
                .find(|old| {
                    old.spec.id == spec.id
                        && old.spec.kind == spec.kind
                        && old.spec.quota == spec.quota
                })
                .map(|old| Arc::clone(&old.buckets))
        })
    }

    fn build(
        config: &RateLimitConfig,
        hasher: KeyHasher,
        clock: C,
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
            })
            .collect();
        // Stable: config order within a kind.
        limits.sort_by_key(|l| l.spec.kind as u8);
        // INVARIANT: `check` keeps per-limit scratch space in arrays of MAX_LIMITS; the validated
        // config never holds more.
        debug_assert!(limits.len() <= MAX_LIMITS);
        RateLimiter {
            limits: limits.into_boxed_slice(),
            hasher,
            clock,
        }
    }

    /// No limit is configured: every check passes without work.
    pub fn is_unlimited(&self) -> bool {
        self.limits.is_empty()
    }

    /// Charges one request by `who` (doing `action` on a governed route, `None` elsewhere) to
    /// every applicable limit, or refuses it without charging any (see the module docs for
    /// precedence and order).
    pub fn check(&self, who: &Subject<'_>, action: Option<Action>) -> Result<(), RateLimited> {
        // Which limits apply: the best tier per key kind, then the limits on it.
        let mut tiers = [0u8; MAX_LIMITS];
        let mut best = [0u8; KeyKind::COUNT];
        for (limit, tier) in self.limits.iter().zip(tiers.iter_mut()) {
            *tier = limit.spec.tier(who, action);
            let kind_best = &mut best[limit.spec.kind as usize];
            *kind_best = (*kind_best).max(*tier);
        }
        let mut applicable = self
            .limits
            .iter()
            .zip(tiers)
            .filter(|(limit, tier)| *tier != 0 && *tier == best[limit.spec.kind as usize])
            .map(|(limit, _)| limit);
        let Some(first) = applicable.next() else {
            return Ok(());
        };
        let keys = Keys::new(&self.hasher, who, action, &best);

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
    fn new(hasher: &KeyHasher, who: &Subject<'_>, action: Option<Action>, best: &[u8]) -> Keys {
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
