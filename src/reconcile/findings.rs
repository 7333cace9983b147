//! Comparing the folded trail with the upstream listing: a plain function over values.
//!
//! - **Unresolved**: a create received (and forwarded) whose outcome keygate never recorded —
//!   keygate stopped, or the upstream never answered. It is matched to the upstream key it most
//!   likely created: same owner, resource (and environment) and display name, created between a
//!   minute before the request and [`MATCH_WINDOW`] after it, not otherwise accounted for; the
//!   closest in time wins, and how many matched is reported.
//! - **Unmanaged**: a key upstream that keygate did not create (Cloud Console, a direct API call,
//!   before keygate), is not in the baseline, and was not reported before.
//! - **Vanished**: a key keygate created that is gone upstream although keygate recorded no delete.
//!
//! Anything younger than the grace period is left for a later run: a create in flight has a
//! request record and no outcome yet, and its key may already be listed. Keys that could belong to
//! a create still in flight are not reported as unmanaged.

use std::collections::{HashMap, HashSet};

use super::listing::{Listing, UpstreamKey};
use super::state::{Managed, Pending, State};

/// How long after a create's request its key may have been created upstream.
pub const MATCH_WINDOW: i64 = 10 * 60;

/// How long before a create's request its key may appear to have been created (clock skew
/// between keygate and Confluent).
pub const MATCH_SKEW: i64 = 60;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A key upstream that never passed keygate.
    Unmanaged(UpstreamKey),
    /// A key keygate created, gone upstream without a recorded delete.
    Vanished {
        /// The key id.
        key_id: Box<str>,
        /// What keygate recorded about it.
        key: Managed,
    },
    /// A create whose outcome keygate never recorded.
    Unresolved {
        /// The create's request id.
        request_id: Box<str>,
        /// What keygate recorded about it.
        create: Pending,
        /// The upstream key it most likely created.
        matched: Option<UpstreamKey>,
        /// How many upstream keys matched.
        candidates: u64,
    },
}

impl Finding {
    /// `unmanaged`, `vanished` or `unresolved`.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::Unmanaged(_) => "unmanaged",
            Finding::Vanished { .. } => "vanished",
            Finding::Unresolved { .. } => "unresolved",
        }
    }
}

/// What a comparison needs.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// The folded trail.
    pub state: &'a State,
    /// The upstream's keys.
    pub listing: &'a Listing,
    /// Keys of the accepted baseline.
    pub baseline: &'a HashSet<Box<str>>,
    /// Now, Unix seconds.
    pub now: i64,
    /// Findings younger than this (seconds) wait for a later run.
    pub grace: i64,
}

/// The findings, unresolved first, then unmanaged, then vanished (each sorted by time or id).
pub fn find(inputs: &Inputs<'_>) -> Vec<Finding> {
    let Inputs {
        state,
        listing,
        baseline,
        now,
        grace,
    } = *inputs;
    let mut findings = Vec::new();
    let mut claimed: HashSet<&str> = HashSet::new();

    if !state.pending.is_empty() {
        let unaccounted =
            |k: &UpstreamKey| !state.managed.contains_key(&k.id) && !baseline.contains(&k.id);
        let mut by_target: HashMap<(&str, &str), Vec<&UpstreamKey>> = HashMap::new();
        for key in listing.keys.values().filter(|k| unaccounted(k)) {
            by_target
                .entry((&key.owner, &key.resource))
                .or_default()
                .push(key);
        }
        let mut pending: Vec<(&Box<str>, &Pending)> = state.pending.iter().collect();
        pending.sort_by(|a, b| a.1.time_unix.cmp(&b.1.time_unix).then(a.0.cmp(b.0)));
        for (request_id, create) in pending {
            let mut candidates: Vec<&UpstreamKey> = by_target
                .get(&(&*create.owner, &*create.resource))
                .into_iter()
                .flatten()
                .copied()
                .filter(|k| !claimed.contains(&*k.id))
                .filter(|k| matches_create(k, create))
                .collect();
            candidates.sort_by_key(|k| ((k.created_unix - create.time_unix).abs(), k.id.clone()));
            if create.time_unix.saturating_add(grace) <= now {
                let best = candidates.first().copied();
                if let Some(k) = best {
                    claimed.insert(&k.id);
                }
                findings.push(Finding::Unresolved {
                    request_id: request_id.clone(),
                    create: create.clone(),
                    matched: best.cloned(),
                    candidates: candidates.len() as u64,
                });
            } else {
                // Still in flight: none of its possible keys is unmanaged (yet).
                claimed.extend(candidates.iter().map(|k| &*k.id));
            }
        }
    }

    let mut unmanaged: Vec<&UpstreamKey> = listing
        .keys
        .values()
        .filter(|k| {
            !state.managed.contains_key(&k.id)
                && !baseline.contains(&k.id)
                && !state.unmanaged.contains(&k.id)
                && !claimed.contains(&*k.id)
                && k.created_unix.saturating_add(grace) <= now
        })
        .collect();
    unmanaged.sort_by(|a, b| a.id.cmp(&b.id));
    findings.extend(unmanaged.into_iter().cloned().map(Finding::Unmanaged));

    let mut vanished: Vec<(&Box<str>, &Managed)> = state
        .managed
        .iter()
        .filter(|(id, m)| {
            !listing.keys.contains_key(*id) && m.created_unix.saturating_add(grace) <= now
        })
        .collect();
    vanished.sort_by(|a, b| a.0.cmp(b.0));
    findings.extend(vanished.into_iter().map(|(id, m)| Finding::Vanished {
        key_id: id.clone(),
        key: m.clone(),
    }));
    findings
}

/// Whether upstream key `k` could be the key `create` made.
fn matches_create(k: &UpstreamKey, create: &Pending) -> bool {
    let environment_ok = match (&k.environment, &create.environment) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    let name_ok = *k.display_name == *create.display_name.as_deref().unwrap_or("");
    let after = create.time_unix.saturating_sub(MATCH_SKEW);
    let before = create.time_unix.saturating_add(MATCH_WINDOW);
    environment_ok && name_ok && (after..=before).contains(&k.created_unix)
}

#[cfg(test)]
mod tests;
