//! The `[ratelimit]` section of the config file: [`RawRateLimitConfig`] mirrors the TOML, and
//! [`RateLimitConfig`] is the validated form a [`RateLimiter`](super::RateLimiter) is built from.
//!
//! ```toml
//! [[ratelimit.limits]]
//! id = "create-per-principal"     # stable: shows in the 429 body, metrics and audit
//! key = "principal_action"        # principal | principal_action | global
//! actions = ["CreateApiKey"]      # optional, principal_action only
//! match = { principals = ["sa-ci"], groups = ["platform"] }   # optional, not on global
//! quota = { per = "1h", requests = 10, burst = 3 }            # burst defaults to requests
//! shared = true                   # optional: one budget for all replicas, through Redis
//! on_unavailable = "deny"         # optional, shared only: local (default) | deny | allow
//! ```
//!
//! `[ratelimit.shared]` (connection to Redis or Valkey) is validated in `shared/config.rs`; it is
//! the only part that names a secret (the password, by environment variable or file).
//!
//! Validation only; no limiter state lives here.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::Quota;
use serde::Deserialize;

use super::shared::config::{OnUnavailable, RawSharedConfig, SharedConfig};
use super::{KeyKind, RateLimitError};
use crate::env::Secrets;
use crate::model::Action;

/// Upper bound on the number of limits in one config.
///
/// Every request evaluates every limit, and the hot path keeps per-limit scratch state on the
/// stack in an array of this size; a config with more limits than this is almost certainly a
/// generated mistake rather than a policy.
pub const MAX_LIMITS: usize = 64;

/// Longest limit id accepted: ids become metric label values and audit fields.
const MAX_ID_LEN: usize = 64;

/// Every governed action, in [`action_index`] order, for parsing `actions` names.
///
/// `action_index` matches exhaustively on [`Action`], so a new variant must be given an index
/// there; until it is also listed here, naming it in `actions` is a load error (never a limit
/// that silently does not apply).
pub(super) const ALL_ACTIONS: [Action; 5] = [
    Action::CreateApiKey,
    Action::ListApiKeys,
    Action::GetApiKey,
    Action::UpdateApiKey,
    Action::DeleteApiKey,
];

/// Position of an action in a [`ActionSet`] bit mask and in action-keyed bucket keys.
pub(super) fn action_index(action: Action) -> u8 {
    match action {
        Action::CreateApiKey => 0,
        Action::ListApiKeys => 1,
        Action::GetApiKey => 2,
        Action::UpdateApiKey => 3,
        Action::DeleteApiKey => 4,
    }
}

// === raw (serde) ===

/// The `[ratelimit]` table as written in the file. An absent table means no limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimitConfig {
    /// `[[ratelimit.limits]]`, checked in the order described on [`RateLimiter`](super::RateLimiter).
    #[serde(default)]
    pub limits: Vec<RawLimit>,
    /// `[ratelimit.shared]`: the Redis (or Valkey) that replicas share limits through.
    #[serde(default)]
    pub shared: Option<RawSharedConfig>,
}

/// One `[[ratelimit.limits]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    /// Stable id (`[A-Za-z0-9._-]`, at most 64 characters).
    pub id: String,
    /// `principal`, `principal_action` or `global`.
    pub key: String,
    /// Action names (`CreateApiKey`, …); only with `key = "principal_action"`.
    #[serde(default)]
    pub actions: Option<Vec<String>>,
    /// Which principals the limit applies to; absent means everyone.
    #[serde(default, rename = "match")]
    pub matches: Option<RawMatch>,
    /// The token bucket.
    pub quota: RawQuota,
    /// Whether the bucket lives in Redis, shared by every replica (default: `[ratelimit.shared]
    /// all`, else no).
    #[serde(default)]
    pub shared: Option<bool>,
    /// What a shared limit does while Redis cannot answer: `local` (default), `deny` or `allow`.
    #[serde(default)]
    pub on_unavailable: Option<String>,
}

/// `match = { principals = [...], groups = [...] }`: a principal matches if its id is listed or
/// it is in any listed group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Principal ids (`sa-…`, `u-…`, `pool-…`).
    #[serde(default)]
    pub principals: Vec<String>,
    /// Group names as identity reports them.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `quota = { per = "1h", requests = 10, burst = 3 }`: `requests` per `per` sustained (one token
/// every `per / requests`), at most `burst` at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    /// The period, as `humantime` reads it (`1s`, `1m`, `1h`, `1day`).
    pub per: String,
    /// Requests per period.
    pub requests: u32,
    /// Bucket size; defaults to `requests`.
    #[serde(default)]
    pub burst: Option<u32>,
}

// === validated ===

/// The validated rate-limit configuration; build a [`RateLimiter`](super::RateLimiter) from it.
#[derive(Debug, Clone, Default)]
pub struct RateLimitConfig {
    pub(super) limits: Vec<LimitSpec>,
    /// Where shared limits live; `None` when `[ratelimit.shared]` is absent.
    pub(super) shared: Option<SharedConfig>,
    /// The limits as written, in a stable text form (empty without limits): an input of the
    /// policy revision.
    canonical: Arc<str>,
}

impl RateLimitConfig {
    /// The limits as configured, in a stable text form (the same file gives the same text, in
    /// every process); empty when there are none. Hashed into the policy revision.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// Parses and validates a `[ratelimit]` table given as TOML text (without the header), for
    /// tests, benchmarks and `keygate check`. Secrets of `[ratelimit.shared]` are not read, and
    /// its relative paths are relative to the working directory.
    pub fn from_toml(text: &str) -> Result<RateLimitConfig, RateLimitError> {
        let raw: RawRateLimitConfig =
            toml::from_str(text).map_err(|e| RateLimitError::Syntax(e.message().to_owned()))?;
        RateLimitConfig::try_from(raw)
    }

    /// Validates the `[ratelimit]` table of a config file: relative paths in `[ratelimit.shared]`
    /// are resolved against `base`, and its credentials are read or not as `secrets` says.
    pub fn validate(
        raw: RawRateLimitConfig,
        base: &std::path::Path,
        secrets: Secrets<'_>,
    ) -> Result<RateLimitConfig, RateLimitError> {
        if raw.limits.len() > MAX_LIMITS {
            return Err(RateLimitError::TooManyLimits {
                count: raw.limits.len(),
                max: MAX_LIMITS,
            });
        }
        let shared = raw
            .shared
            .map(|s| SharedConfig::validate(s, base, secrets))
            .transpose()?;
        let share_all = shared.as_ref().is_some_and(SharedConfig::all);
        let canonical: Arc<str> = if raw.limits.is_empty() {
            Arc::from("")
        } else if share_all {
            Arc::from(format!("{:?};shared.all", raw.limits))
        } else {
            Arc::from(format!("{:?}", raw.limits))
        };
        let mut limits: Vec<LimitSpec> = Vec::with_capacity(raw.limits.len());
        for (index, raw) in raw.limits.into_iter().enumerate() {
            let spec = limit(index, raw, shared.as_ref())?;
            if limits.iter().any(|l| l.id == spec.id) {
                return Err(RateLimitError::DuplicateId {
                    id: spec.id.to_string(),
                });
            }
            limits.push(spec);
        }
        Ok(RateLimitConfig {
            limits,
            shared,
            canonical,
        })
    }

    /// The `[ratelimit.shared]` section, if any.
    pub fn shared(&self) -> Option<&SharedConfig> {
        self.shared.as_ref()
    }

    /// The `[ratelimit.shared]` section, to read its credentials later (`check --connect`).
    pub fn shared_mut(&mut self) -> Option<&mut SharedConfig> {
        self.shared.as_mut()
    }

    /// The ids of the limits kept in Redis, in config order.
    pub fn shared_limit_ids(&self) -> impl Iterator<Item = &str> {
        self.limits
            .iter()
            .filter(|l| l.shared.is_some())
            .map(|l| &*l.id)
    }

    /// The ids of the configured limits, in config order.
    pub fn limit_ids(&self) -> impl Iterator<Item = &str> {
        self.limits.iter().map(|l| &*l.id)
    }
}

/// One validated limit.
#[derive(Debug, Clone)]
pub(super) struct LimitSpec {
    pub(super) id: Arc<str>,
    pub(super) kind: KeyKind,
    /// `None`: every action (principal_action) or not applicable (other kinds).
    pub(super) actions: Option<ActionSet>,
    pub(super) matcher: Option<Matcher>,
    pub(super) quota: Quota,
    /// `Some` when the bucket lives in Redis: what to do while Redis cannot answer.
    pub(super) shared: Option<OnUnavailable>,
}

impl LimitSpec {
    /// The bucket size, advertised as `X-RateLimit-Limit`.
    pub(super) fn burst(&self) -> u32 {
        self.quota.burst_size().get()
    }

    /// The GCRA `tau`, `interval * (burst - 1)`: how long after a request is next allowed the
    /// bucket becomes full again.
    pub(super) fn tau(&self) -> Duration {
        self.quota.replenish_interval() * (self.burst() - 1)
    }

    /// How specifically this limit applies to `who` doing `action`: `0` not at all, `1` for
    /// everyone, `2` through a group, `3` by principal id. See "Precedence" on
    /// [`RateLimiter`](super::RateLimiter).
    pub(super) fn tier(&self, who: &super::Subject<'_>, action: Option<Action>) -> u8 {
        if self.kind == KeyKind::PrincipalAction {
            let Some(action) = action else { return 0 };
            if let Some(set) = self.actions {
                if !set.contains(action) {
                    return 0;
                }
            }
        }
        match (&self.matcher, who) {
            (None, _) => TIER_EVERYONE,
            (Some(_), super::Subject::Address(_)) => 0,
            (Some(m), super::Subject::Principal { id, groups }) => m.tier(id, groups),
        }
    }
}

/// Tier of a limit without `match`.
const TIER_EVERYONE: u8 = 1;
/// Tier of a limit matched through one of the principal's groups.
const TIER_GROUP: u8 = 2;
/// Tier of a limit that names the principal.
const TIER_PRINCIPAL: u8 = 3;

/// A set of actions as a bit mask over [`action_index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ActionSet(u8);

impl ActionSet {
    fn insert(&mut self, action: Action) {
        self.0 |= 1 << action_index(action);
    }

    fn contains(self, action: Action) -> bool {
        self.0 & (1 << action_index(action)) != 0
    }
}

/// The validated `match` table.
#[derive(Debug, Clone)]
pub(super) struct Matcher {
    principals: Box<[Box<str>]>,
    groups: Box<[Box<str>]>,
}

impl Matcher {
    fn tier(&self, id: &str, groups: &[String]) -> u8 {
        if self.principals.iter().any(|p| **p == *id) {
            TIER_PRINCIPAL
        } else if groups
            .iter()
            .any(|g| self.groups.iter().any(|m| **m == **g))
        {
            TIER_GROUP
        } else {
            0
        }
    }
}

impl TryFrom<RawRateLimitConfig> for RateLimitConfig {
    type Error = RateLimitError;

    /// [`RateLimitConfig::validate`] relative to the working directory, without reading secrets.
    fn try_from(raw: RawRateLimitConfig) -> Result<Self, Self::Error> {
        RateLimitConfig::validate(raw, std::path::Path::new(""), Secrets::Skip)
    }
}

fn limit(
    index: usize,
    raw: RawLimit,
    store: Option<&SharedConfig>,
) -> Result<LimitSpec, RateLimitError> {
    let id = limit_id(index, raw.id)?;
    let err_id = || id.to_string();
    let kind = match raw.key.as_str() {
        "principal" => KeyKind::Principal,
        "principal_action" => KeyKind::PrincipalAction,
        "global" => KeyKind::Global,
        _ => {
            return Err(RateLimitError::UnknownKeyKind {
                id: err_id(),
                key: raw.key,
            })
        }
    };
    let actions = match raw.actions {
        None => None,
        Some(_) if kind != KeyKind::PrincipalAction => {
            return Err(RateLimitError::ActionsNotAllowed {
                id: err_id(),
                key: kind.as_str(),
            })
        }
        Some(names) if names.is_empty() => {
            return Err(RateLimitError::EmptyActions { id: err_id() })
        }
        Some(names) => {
            let mut set = ActionSet(0);
            for name in names {
                let action = ALL_ACTIONS
                    .into_iter()
                    .find(|a| a.as_str() == name)
                    .ok_or_else(|| RateLimitError::UnknownAction {
                        id: err_id(),
                        action: name,
                    })?;
                set.insert(action);
            }
            Some(set)
        }
    };
    let matcher = match raw.matches {
        None => None,
        Some(_) if kind == KeyKind::Global => {
            return Err(RateLimitError::MatchOnGlobal { id: err_id() })
        }
        Some(m) if m.principals.is_empty() && m.groups.is_empty() => {
            return Err(RateLimitError::EmptyMatch { id: err_id() })
        }
        Some(m) => Some(Matcher {
            principals: m.principals.into_iter().map(Into::into).collect(),
            groups: m.groups.into_iter().map(Into::into).collect(),
        }),
    };
    let quota = quota(&id, raw.quota)?;
    let shared = match (
        raw.shared.or(store.map(SharedConfig::all)),
        raw.on_unavailable,
    ) {
        (Some(true), mode) => {
            if store.is_none() {
                return Err(RateLimitError::SharedWithoutStore { id: err_id() });
            }
            super::shared::config::check_quota(&id, &quota)?;
            Some(match mode.as_deref() {
                None | Some("local") => OnUnavailable::Local,
                Some("deny") => OnUnavailable::Deny,
                Some("allow") => OnUnavailable::Allow,
                Some(_) => {
                    return Err(RateLimitError::UnknownFallback {
                        id: err_id(),
                        mode: mode.unwrap_or_default(),
                    })
                }
            })
        }
        (_, Some(_)) => return Err(RateLimitError::FallbackWithoutShared { id: err_id() }),
        (_, None) => None,
    };
    Ok(LimitSpec {
        id,
        kind,
        actions,
        matcher,
        quota,
        shared,
    })
}

fn limit_id(index: usize, id: String) -> Result<Arc<str>, RateLimitError> {
    if id.is_empty() {
        return Err(RateLimitError::EmptyId { index });
    }
    let valid = id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        return Err(RateLimitError::InvalidId { id });
    }
    Ok(id.into())
}

fn quota(id: &str, raw: RawQuota) -> Result<Quota, RateLimitError> {
    let per = humantime::parse_duration(&raw.per).map_err(|e| RateLimitError::InvalidPeriod {
        id: id.to_owned(),
        per: raw.per.clone(),
        reason: e.to_string(),
    })?;
    if per.is_zero() {
        return Err(RateLimitError::ZeroQuota {
            id: id.to_owned(),
            field: "per",
        });
    }
    let requests = NonZeroU32::new(raw.requests).ok_or_else(|| RateLimitError::ZeroQuota {
        id: id.to_owned(),
        field: "requests",
    })?;
    let burst = match raw.burst {
        None => requests,
        Some(b) => NonZeroU32::new(b).ok_or_else(|| RateLimitError::ZeroQuota {
            id: id.to_owned(),
            field: "burst",
        })?,
    };
    let quota =
        Quota::with_period(per / requests.get()).ok_or_else(|| RateLimitError::QuotaTooFine {
            id: id.to_owned(),
            per: raw.per,
            requests: requests.get(),
        })?;
    Ok(quota.allow_burst(burst))
}
