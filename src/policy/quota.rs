//! The API-key quota guard: how many Kafka API keys count against each Kafka cluster, and whether a
//! create would take a cluster past its quota.
//!
//! Confluent limits the API keys of a Kafka cluster (`kafka.max_api_keys.per_cluster`), and a
//! Global key counts once against the quota of *every* Dedicated, Enterprise and Freight cluster of
//! the organisation. So a cluster's load is its own Kafka keys plus, for those kinds, every Global
//! key. A Kafka key counts against its own cluster only (whatever the cluster's kind); other keys
//! (Cloud, Schema Registry, ksqlDB, Flink, Tableflow) against none.
//!
//! Two parts:
//! - [`Ledger`]: the live counts — replaced from each reconcile listing of the organisation's keys
//!   (`crate::reconcile`), and adjusted by every create and delete keygate forwards in between
//!   (a create is counted when it is allowed, so a burst cannot slip past the quota, and uncounted
//!   again if the upstream refuses it or it is never forwarded; a delete is counted once the
//!   upstream confirms it).
//! - [`loads`] and [`check`]: plain functions over values — which clusters a create counts against
//!   and with how many keys, and the verdict (allow, warn, deny) for a configured quota.
//!
//! What this does not do: fetch anything (the reconcile listing feeds the ledger), or know the
//! quota Confluent applies (`[quota] kafka_keys_per_cluster` is configuration; keygate never
//! assumes a default). A cluster whose kind keygate does not know counts Global keys too: it may be
//! one that does (fail closed).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::inventory::{ClusterKind, Inventory};

/// Rule id of a denial (or dry-run finding) by the quota guard.
pub const RULE: &str = "quota.kafka_keys_per_cluster";

/// Clusters named in an explanation at most; the rest are counted.
const NAMED_CLUSTERS: usize = 5;

/// What the guard does with a create that would exceed the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaMode {
    /// Deny it (403).
    Enforce,
    /// Allow it, record what would have been denied, and warn.
    DryRun,
}

/// `[quota]`: the guard is on only when this is configured.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaConfig {
    /// Kafka API keys a cluster may hold (Global keys included where they count).
    pub kafka_keys_per_cluster: u64,
    /// Past this share of the quota, an allowed create carries a warning (0 < ratio ≤ 1).
    pub warn_ratio: f64,
    /// Enforce or dry-run.
    pub mode: QuotaMode,
}

/// What a key counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyScope {
    /// A Kafka key: its own cluster.
    Kafka(Box<str>),
    /// A Global key: every Dedicated, Enterprise and Freight cluster.
    Global,
    /// Any other key: no Kafka cluster.
    Other,
}

impl KeyScope {
    /// The scope of a key for `resource_id` (`lkc-…`, `global`, …).
    pub fn of(resource_id: &str) -> KeyScope {
        if resource_id == "global" {
            KeyScope::Global
        } else if resource_id.starts_with("lkc-") {
            KeyScope::Kafka(Box::from(resource_id))
        } else {
            KeyScope::Other
        }
    }
}

/// Whether Global keys count against a cluster of this kind (unknown kinds do: fail closed).
pub fn counts_global_keys(kind: Option<ClusterKind>) -> bool {
    !matches!(kind, Some(ClusterKind::Basic | ClusterKind::Standard))
}

/// One cluster a create would count against, with the keys counting against it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterLoad {
    /// `lkc-…`.
    pub id: String,
    /// Its kind, when known.
    pub kind: Option<ClusterKind>,
    /// Keys that count against its quota now (before this create).
    pub keys: u64,
}

impl ClusterLoad {
    /// The kind as Confluent spells it, `Unknown` when not known.
    pub fn kind_str(&self) -> &'static str {
        self.kind.map_or("Unknown", ClusterKind::as_str)
    }
}

/// The clusters a key of `scope` counts against, with their loads, from `counts`. Inventory
/// clusters without keys are included (they count 0 of their own); a Kafka cluster with keys but
/// unknown to the inventory is included with an unknown kind.
pub fn loads(scope: &KeyScope, counts: &Counts, inventory: &Inventory) -> Vec<ClusterLoad> {
    let load = |id: &str, kind: Option<ClusterKind>| ClusterLoad {
        id: id.to_owned(),
        kind,
        keys: counts.kafka.get(id).copied().unwrap_or(0)
            + if counts_global_keys(kind) {
                counts.global
            } else {
                0
            },
    };
    let mut loads: Vec<ClusterLoad> = match scope {
        KeyScope::Other => Vec::new(),
        KeyScope::Kafka(id) => {
            let kind = inventory.cluster(id).and_then(|c| c.kind());
            vec![load(id, kind)]
        }
        KeyScope::Global => {
            let mut seen: HashMap<&str, Option<ClusterKind>> = inventory.kafka_clusters().collect();
            for id in counts.kafka.keys() {
                seen.entry(id).or_insert(None);
            }
            seen.into_iter()
                .filter(|(_, kind)| counts_global_keys(*kind))
                .map(|(id, kind)| load(id, kind))
                .collect()
        }
    };
    // Fullest first (then by id), so explanations and Cedar see the cluster that matters first.
    loads.sort_by(|a, b| b.keys.cmp(&a.keys).then_with(|| a.id.cmp(&b.id)));
    loads
}

/// Every Kafka cluster (of the inventory, and any with keys) with the keys counting against its
/// quota: for the per-cluster metrics.
pub fn all_loads(counts: &Counts, inventory: &Inventory) -> Vec<ClusterLoad> {
    let mut seen: HashMap<&str, Option<ClusterKind>> = inventory.kafka_clusters().collect();
    for id in counts.kafka.keys() {
        seen.entry(id).or_insert(None);
    }
    let mut all: Vec<ClusterLoad> = seen
        .into_iter()
        .map(|(id, kind)| ClusterLoad {
            id: id.to_owned(),
            kind,
            keys: counts.kafka.get(id).copied().unwrap_or(0)
                + if counts_global_keys(kind) {
                    counts.global
                } else {
                    0
                },
        })
        .collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    all
}

/// The guard's verdict on one create.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Within the quota (and below the warning ratio).
    Allow,
    /// Within the quota, but past the warning ratio; the warning names the clusters.
    Warn(String),
    /// Past the quota; the explanation names the clusters and their counts. In dry-run mode the
    /// caller allows and records it.
    Exceeds(String),
}

/// Checks a create of `scope` whose clusters have `loads` against `config`.
pub fn check(config: &QuotaConfig, scope: &KeyScope, loads: &[ClusterLoad]) -> Verdict {
    let limit = config.kafka_keys_per_cluster;
    let over: Vec<&ClusterLoad> = loads
        .iter()
        .filter(|l| l.keys.saturating_add(1) > limit)
        .collect();
    let what = match scope {
        KeyScope::Global => {
            "a Global key (it counts against every Dedicated, Enterprise and Freight cluster)"
        }
        KeyScope::Kafka(_) => "a Kafka key",
        KeyScope::Other => return Verdict::Allow,
    };
    if !over.is_empty() {
        return Verdict::Exceeds(format!(
            "creating {what} would take {} past the quota of {limit} Kafka API keys per cluster",
            name_clusters(&over)
        ));
    }
    // The warning threshold in keys, rounded down: at 0.9 of 2000, the 1800th key warns.
    let threshold = (limit as f64 * config.warn_ratio).floor() as u64;
    let near: Vec<&ClusterLoad> = loads
        .iter()
        .filter(|l| l.keys.saturating_add(1) > threshold)
        .collect();
    if near.is_empty() {
        Verdict::Allow
    } else {
        Verdict::Warn(format!(
            "{} near the quota of {limit} Kafka API keys per cluster",
            name_clusters(&near)
        ))
    }
}

/// "Dedicated cluster `lkc-1` (2000 keys)", up to [`NAMED_CLUSTERS`], then how many more.
fn name_clusters(clusters: &[&ClusterLoad]) -> String {
    let mut named: Vec<String> = clusters
        .iter()
        .take(NAMED_CLUSTERS)
        .map(|c| format!("{} cluster `{}` ({} keys)", c.kind_str(), c.id, c.keys))
        .collect();
    if clusters.len() > NAMED_CLUSTERS {
        named.push(format!("{} more clusters", clusters.len() - NAMED_CLUSTERS));
    }
    named.join(", ")
}

// === Ledger ===

/// Key counts: Kafka keys per cluster and Global keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Kafka keys per cluster id.
    pub kafka: HashMap<Box<str>, u64>,
    /// Global keys of the organisation.
    pub global: u64,
}

impl Counts {
    fn add(&mut self, scope: &KeyScope, n: i64) {
        let count = match scope {
            KeyScope::Kafka(id) => self.kafka.entry(id.clone()).or_insert(0),
            KeyScope::Global => &mut self.global,
            KeyScope::Other => return,
        };
        *count = count.saturating_add_signed(n);
    }
}

/// The live key counts (see the module doc). Cheap to share (`Arc`).
#[derive(Debug, Default)]
pub struct Ledger {
    state: Mutex<LedgerState>,
}

#[derive(Debug, Default)]
struct LedgerState {
    /// When the last listing started; `None` until one completed.
    listed_at: Option<Instant>,
    /// The scope of every key the last listing saw (for deletes).
    keys: HashMap<Box<str>, KeyScope>,
    /// Counts: the listing's, plus the changes keygate forwarded since.
    counts: Counts,
    /// Creates allowed and not settled yet (in flight): counted on top of `counts`.
    reserved: Counts,
    /// Changes confirmed since the last listing started, re-applied over the next listing when
    /// they are newer than its start (the listing may not contain them; counting one twice errs
    /// on the safe side). A queue: at the bound, the oldest is dropped in O(1) on every change
    /// (without reconcile nothing else ever prunes it).
    changes: VecDeque<(Instant, KeyScope, i64)>,
}

/// Changes kept between listings at most (beyond it the oldest are dropped).
const MAX_CHANGES: usize = 100_000;

impl Ledger {
    /// An empty ledger: counts unknown until the first listing.
    pub fn new() -> Arc<Ledger> {
        Arc::new(Ledger::default())
    }

    fn state(&self) -> MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the counts with a listing that started at `started`: `keys` yields every key's
    /// id and resource id.
    pub fn replace<'a>(
        &self,
        started: Instant,
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        let mut map = HashMap::new();
        let mut counts = Counts::default();
        for (id, resource) in keys {
            let scope = KeyScope::of(resource);
            counts.add(&scope, 1);
            map.insert(Box::from(id), scope);
        }
        let mut state = self.state();
        state.changes.retain(|(at, _, _)| *at >= started);
        for (_, scope, n) in &state.changes {
            counts.add(scope, *n);
        }
        state.keys = map;
        state.counts = counts;
        state.listed_at = Some(started);
    }

    /// The counts now (creates in flight included), and when the listing they come from
    /// started; `None` before the first.
    pub fn counts(&self) -> Option<(Counts, Instant)> {
        let state = self.state();
        let at = state.listed_at?;
        let mut counts = state.counts.clone();
        for (id, n) in &state.reserved.kafka {
            *counts.kafka.entry(id.clone()).or_insert(0) += n;
        }
        counts.global += state.reserved.global;
        Some((counts, at))
    }

    /// Counts a create of `scope` now (it was just allowed); the [`Hold`] settles it.
    pub fn reserve(self: &Arc<Self>, scope: KeyScope) -> Hold {
        self.state().reserved.add(&scope, 1);
        Hold {
            ledger: Arc::clone(self),
            change: Some(Change::Create(scope)),
        }
    }

    /// A hold for deleting `key_id`, counted once the upstream confirms it.
    pub fn delete(self: &Arc<Self>, key_id: &str) -> Hold {
        Hold {
            ledger: Arc::clone(self),
            change: Some(Change::Delete(Box::from(key_id))),
        }
    }

    /// A forwarded change happened: counted now and over the next listing (see `changes`).
    fn confirm(state: &mut LedgerState, scope: KeyScope, n: i64) {
        state.counts.add(&scope, n);
        if state.changes.len() >= MAX_CHANGES {
            state.changes.pop_front();
        }
        state.changes.push_back((Instant::now(), scope, n));
    }
}

/// How a forwarded create or delete ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered 2xx.
    Succeeded,
    /// The upstream answered something else: nothing changed.
    Refused,
    /// No answer (timeout, connection lost): it may have happened.
    Unknown,
}

#[derive(Debug)]
enum Change {
    Create(KeyScope),
    Delete(Box<str>),
}

/// A create counted in the [`Ledger`] (or a delete waiting to be) until its outcome is known.
/// Dropped unsettled — the request never reached the upstream — a create is uncounted.
#[derive(Debug)]
pub struct Hold {
    ledger: Arc<Ledger>,
    change: Option<Change>,
}

impl Hold {
    /// Settles the change: a create stays counted unless the upstream refused it (an unknown
    /// outcome is counted: fail closed); a delete is counted only when the upstream confirmed it.
    pub fn settle(mut self, outcome: Outcome) {
        let mut state = self.ledger.state();
        match self.change.take() {
            Some(Change::Create(scope)) => {
                state.reserved.add(&scope, -1);
                if outcome != Outcome::Refused {
                    Ledger::confirm(&mut state, scope, 1);
                }
            }
            Some(Change::Delete(key_id)) if outcome == Outcome::Succeeded => {
                // A key keygate has not listed yet is uncounted by the next listing.
                if let Some(scope) = state.keys.remove(&key_id) {
                    Ledger::confirm(&mut state, scope, -1);
                }
            }
            Some(Change::Delete(_)) => {}
            None => {}
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(Change::Create(scope)) = self.change.take() {
            self.ledger.state().reserved.add(&scope, -1);
        }
    }
}

#[cfg(test)]
mod tests;

// === Guard ===

/// What the decision stage consults: the configured quota (if any), the ledger, and how old its
/// counts may be.
#[derive(Debug)]
pub struct Guard {
    config: Option<QuotaConfig>,
    ledger: Arc<Ledger>,
    max_staleness: std::time::Duration,
}

/// What the guard knows about one create: the clusters it counts against, with their loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// What the key counts against.
    pub scope: KeyScope,
    /// The clusters, fullest first; `None` when the counts are unknown or too old.
    pub loads: Option<Vec<ClusterLoad>>,
}

/// The guard's decision on one create.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing to say.
    Allow,
    /// Allowed, with warnings (near the quota, or what dry-run would have denied).
    Warn {
        /// The warnings, in words.
        warnings: Vec<String>,
        /// Set in dry-run when enforcing would have denied.
        would_deny: bool,
    },
    /// Denied: past the quota.
    Deny(String),
    /// The counts are not known (or too old) for a key that counts against a cluster: fail
    /// closed.
    Unknown(String),
}

impl Guard {
    /// A guard over `ledger`; `config` `None` means no quota (counts are still kept for policies).
    pub fn new(
        config: Option<QuotaConfig>,
        ledger: Arc<Ledger>,
        max_staleness: std::time::Duration,
    ) -> Arc<Guard> {
        Arc::new(Guard {
            config,
            ledger,
            max_staleness,
        })
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The configured quota, if any.
    pub fn config(&self) -> Option<&QuotaConfig> {
        self.config.as_ref()
    }

    /// The facts for a create for `resource_id`, with `inventory` giving cluster kinds.
    pub fn facts(&self, resource_id: &str, inventory: &Inventory) -> Facts {
        let scope = KeyScope::of(resource_id);
        let loads = self
            .ledger
            .counts()
            .filter(|(_, listed_at)| listed_at.elapsed() <= self.max_staleness)
            .map(|(counts, _)| loads(&scope, &counts, inventory));
        Facts { scope, loads }
    }

    /// The decision for a create with `facts` ([`decide`] with this guard's quota).
    pub fn decide(&self, facts: &Facts) -> Decision {
        decide(self.config.as_ref(), facts)
    }
}

/// The quota's decision on a create with `facts`, under `config` (`None`: no quota). A plain
/// function over values: the request path and `keygate policy replay` both call it.
pub fn decide(config: Option<&QuotaConfig>, facts: &Facts) -> Decision {
    let Some(config) = config else {
        return Decision::Allow;
    };
    if facts.scope == KeyScope::Other {
        return Decision::Allow;
    }
    let verdict = match &facts.loads {
        Some(loads) => check(config, &facts.scope, loads),
        None => {
            let why = "the API-key counts per cluster are not known (no reconcile listing \
                       has completed recently), so keygate cannot check the Kafka API-key \
                       quota"
                .to_owned();
            return match config.mode {
                QuotaMode::Enforce => Decision::Unknown(why),
                QuotaMode::DryRun => Decision::Warn {
                    warnings: vec![why],
                    would_deny: false,
                },
            };
        }
    };
    match (verdict, config.mode) {
        (Verdict::Allow, _) => Decision::Allow,
        (Verdict::Warn(warning), _) => Decision::Warn {
            warnings: vec![warning],
            would_deny: false,
        },
        (Verdict::Exceeds(why), QuotaMode::Enforce) => Decision::Deny(why),
        (Verdict::Exceeds(why), QuotaMode::DryRun) => Decision::Warn {
            warnings: vec![format!("dry-run: would deny: {why}")],
            would_deny: true,
        },
    }
}
