//! Team policy sets: who a team's set governs (its scope), and finding the sets that apply to a
//! request by hash lookups.
//!
//! Every subdirectory of `[policy] teams_dir` that holds a `scope.toml` is one team's set; the
//! directory's name is the team's name. The platform set (the policy directory itself) applies to
//! every request; a team's set applies to a request inside its scope:
//!
//! ```toml
//! # scope.toml: owned by the platform team (it decides whose requests the team's rules see)
//! service_accounts = ["sa-checkout", "sa-checkout-*"]  # the key's owner; `*` only at the end
//! environments = ["env-checkout01"]                    # the key's environment
//! groups = ["team-checkout"]                           # the caller's groups
//! allow_overlap_with = []                              # teams whose scope may overlap this one
//! ```
//!
//! A request is inside the scope when ANY listed part matches it: its owner (the `spec.owner` of a
//! create, the owner filter of a list, the owner of the existing key for get, update and delete)
//! is one of the service accounts, its resource (create, list) lies in one of the environments,
//! or the caller is in one of the groups. Two teams may not claim the same service account (or
//! overlapping patterns), environment or group unless one lists the other in
//! `allow_overlap_with`; requests that fall into several scopes anyway (a team's service account
//! creating a key in another team's environment) are decided by every set that applies — each can
//! only forbid, so more sets can only deny more.
//!
//! `team.toml` (optional, owned by the team) holds the team's own `[patterns]` and `[params]`,
//! named `<team>_…` (the team's name with `-` as `_`), so they cannot collide with the platform's
//! or another team's: the set is validated against the platform schema with them added.
//!
//! Deliberately not here: compiling a set (`load`), evaluating it (`index`, `super`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::ParamValue;
use super::LoadError;

/// The name of the set in the policy directory itself, which applies to every request. No team
/// can be called that.
pub const PLATFORM_SET: &str = "platform";
/// Longest team name: names are metric labels.
const MAX_TEAM_NAME_LEN: usize = 50;

/// An owner id or id prefix in a scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum OwnerPattern {
    /// Exactly this id.
    Exact(Arc<str>),
    /// Ids starting with this (written with a trailing `*`).
    Prefix(Arc<str>),
}

impl OwnerPattern {
    fn text(&self) -> String {
        match self {
            OwnerPattern::Exact(id) => id.to_string(),
            OwnerPattern::Prefix(prefix) => format!("{prefix}*"),
        }
    }

    fn covers(&self, id: &str) -> bool {
        match self {
            OwnerPattern::Exact(e) => &**e == id,
            OwnerPattern::Prefix(p) => id.starts_with(&**p),
        }
    }
}

/// Whose requests a team's set governs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub(crate) service_accounts: Vec<OwnerPattern>,
    pub(crate) environments: Vec<Arc<str>>,
    pub(crate) groups: Vec<Arc<str>>,
    pub(crate) allow_overlap_with: BTreeSet<String>,
}

impl Scope {
    /// Whether the scope covers a request with this owner, environment and caller groups: the
    /// plain reading of the rule, scanning every entry (the index must agree with it).
    pub(crate) fn covers<'a>(
        &self,
        owner: Option<&str>,
        environment: Option<&str>,
        mut groups: impl Iterator<Item = &'a str>,
    ) -> Option<Via> {
        if let Some(o) = owner {
            // The reason named is the id itself if listed, else the shortest matching pattern.
            let exact = self
                .service_accounts
                .iter()
                .find(|p| matches!(p, OwnerPattern::Exact(_)) && p.covers(o));
            let pattern = || {
                self.service_accounts
                    .iter()
                    .filter(|p| matches!(p, OwnerPattern::Prefix(_)) && p.covers(o))
                    .min_by_key(|p| p.text().len())
            };
            if let Some(p) = exact.or_else(pattern) {
                return Some(Via::ServiceAccount(Arc::from(p.text())));
            }
        }
        if let Some(e) = environment {
            if let Some(env) = self.environments.iter().find(|x| &***x == e) {
                return Some(Via::Environment(env.clone()));
            }
        }
        groups
            .find_map(|g| self.groups.iter().find(|x| &***x == g))
            .map(|g| Via::Group(g.clone()))
    }

    /// One line for people: `service accounts sa-a, sa-b-*; groups team-b`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let list = |items: Vec<String>| items.join(", ");
        if !self.service_accounts.is_empty() {
            parts.push(format!(
                "service accounts {}",
                list(
                    self.service_accounts
                        .iter()
                        .map(OwnerPattern::text)
                        .collect()
                )
            ));
        }
        if !self.environments.is_empty() {
            parts.push(format!(
                "environments {}",
                list(self.environments.iter().map(|e| e.to_string()).collect())
            ));
        }
        if !self.groups.is_empty() {
            parts.push(format!(
                "groups {}",
                list(self.groups.iter().map(|g| g.to_string()).collect())
            ));
        }
        parts.join("; ")
    }
}

/// Why a team's set applies to a request: the scope entry that matched, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The owner matched this service account id or pattern.
    ServiceAccount(Arc<str>),
    /// The resource lies in this environment.
    Environment(Arc<str>),
    /// The caller is in this group.
    Group(Arc<str>),
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::ServiceAccount(p) => write!(f, "the owner is one of its service accounts (`{p}`)"),
            Via::Environment(e) => write!(f, "the key is in its environment `{e}`"),
            Via::Group(g) => write!(f, "the caller is in its group `{g}`"),
        }
    }
}

/// A team set that applies to a request, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamMatch {
    /// The team's name.
    pub team: Arc<str>,
    /// The scope entry that matched.
    pub via: Via,
}

impl Serialize for TeamMatch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (kind, value) = match &self.via {
            Via::ServiceAccount(v) => ("service_account", v),
            Via::Environment(v) => ("environment", v),
            Via::Group(v) => ("group", v),
        };
        let mut st = s.serialize_struct("TeamMatch", 4)?;
        st.serialize_field("team", &*self.team)?;
        st.serialize_field("via", kind)?;
        st.serialize_field("matched", &**value)?;
        st.serialize_field("why", &self.via.to_string())?;
        st.end()
    }
}

// === Manifests ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScope {
    #[serde(default)]
    service_accounts: Vec<String>,
    #[serde(default)]
    environments: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    allow_overlap_with: Vec<String>,
    /// For people; not used.
    #[serde(default)]
    #[expect(dead_code, reason = "documentation for people, accepted and ignored")]
    description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTeamFile {
    #[serde(default)]
    patterns: BTreeMap<String, String>,
    #[serde(default)]
    params: BTreeMap<String, toml::Value>,
}

/// A team's own patterns and parameters, from `team.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TeamValues {
    pub(crate) patterns: Vec<(String, String)>,
    pub(crate) params: Vec<(String, ParamValue)>,
}

/// Whether `name` can name a team: a lowercase letter, then lowercase letters, digits and `-`.
pub(crate) fn is_team_name(name: &str) -> bool {
    name.len() <= MAX_TEAM_NAME_LEN
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name != PLATFORM_SET
}

/// The prefix a team's pattern and parameter names must start with.
pub(crate) fn value_prefix(team: &str) -> String {
    format!("{}_", team.replace('-', "_"))
}

fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> LoadError {
    LoadError::Source {
        path: path.to_path_buf(),
        line: e
            .span()
            .map_or(1, |s| super::position::line_of(text, s.start)),
        column: e.span().map(|s| super::position::column_of(text, s.start)),
        message: e.message().to_owned(),
    }
}

/// Parses and checks `scope.toml`.
pub(crate) fn parse_scope(path: &Path, text: &str) -> Result<Scope, Vec<LoadError>> {
    let raw: RawScope = toml::from_str(text).map_err(|e| vec![toml_error(path, text, &e)])?;
    let mut errors = Vec::new();
    let mut problem = |message: String| {
        errors.push(LoadError::Io {
            path: path.to_path_buf(),
            message,
        })
    };
    let mut scope = Scope::default();
    for entry in &raw.service_accounts {
        let (body, prefix) = match entry.strip_suffix('*') {
            Some(body) => (body, true),
            None => (entry.as_str(), false),
        };
        let valid = body.starts_with("sa-")
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            problem(format!(
                "service_accounts: `{entry}` is not a service account id (`sa-…`) or a pattern ending in `*`"
            ));
        } else if prefix && body.len() <= "sa-".len() {
            problem(format!(
                "service_accounts: `{entry}` would claim every service account: name part of the id before the `*`"
            ));
        } else if prefix {
            scope
                .service_accounts
                .push(OwnerPattern::Prefix(body.into()));
        } else {
            scope
                .service_accounts
                .push(OwnerPattern::Exact(body.into()));
        }
    }
    for env in &raw.environments {
        if !env.starts_with("env-") || env.len() <= "env-".len() {
            problem(format!(
                "environments: `{env}` is not an environment id (`env-…`)"
            ));
        } else {
            scope.environments.push(env.as_str().into());
        }
    }
    for group in &raw.groups {
        if group.trim().is_empty() || group.trim() != group {
            problem(format!("groups: `{group}` is not a group name"));
        } else {
            scope.groups.push(group.as_str().into());
        }
    }
    if raw.service_accounts.is_empty() && raw.environments.is_empty() && raw.groups.is_empty() {
        problem(
            "the scope is empty: list the team's service_accounts, environments or groups (a set whose scope covers nothing would never apply)"
                .into(),
        );
    }
    scope.allow_overlap_with = raw.allow_overlap_with.into_iter().collect();
    if errors.is_empty() {
        Ok(scope)
    } else {
        Err(errors)
    }
}

/// Parses and checks `team.toml` of team `team`.
pub(crate) fn parse_team_file(
    path: &Path,
    text: &str,
    team: &str,
) -> Result<TeamValues, Vec<LoadError>> {
    let raw: RawTeamFile = toml::from_str(text).map_err(|e| vec![toml_error(path, text, &e)])?;
    let prefix = value_prefix(team);
    let mut errors = Vec::new();
    let mut values = TeamValues::default();
    let check_name = |errors: &mut Vec<LoadError>, kind: &str, name: &str| {
        if name.starts_with(&prefix) && name.len() > prefix.len() {
            true
        } else {
            errors.push(LoadError::Io {
                path: path.to_path_buf(),
                message: format!(
                    "{kind}.{name}: a team's {kind} are named `{prefix}…`, so they cannot collide with the platform's or another team's"
                ),
            });
            false
        }
    };
    for (name, pattern) in raw.patterns {
        if check_name(&mut errors, "patterns", &name) {
            values.patterns.push((name, pattern));
        }
    }
    for (name, value) in raw.params {
        if !check_name(&mut errors, "params", &name) {
            continue;
        }
        match ParamValue::from_toml(&value) {
            Some(v) => values.params.push((name, v)),
            None => errors.push(LoadError::Io {
                path: path.to_path_buf(),
                message: format!(
                    "params.{name}: expected a string, integer, boolean, or an array of strings or of integers"
                ),
            }),
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

// === Finding the sets of a request ===

/// Team scopes as hash maps: which teams claim an owner id, an id prefix, an environment, a
/// group. Built once per load; a request costs one lookup per part (and one per distinct prefix
/// length), whatever the number of teams.
#[derive(Debug, Default)]
pub(crate) struct ScopeIndex {
    exact: HashMap<Box<str>, Vec<(u32, Arc<str>)>>,
    prefixes: HashMap<Box<str>, Vec<(u32, Arc<str>)>>,
    /// Distinct prefix lengths, ascending.
    prefix_lens: Vec<usize>,
    environments: HashMap<Box<str>, Vec<(u32, Arc<str>)>>,
    groups: HashMap<Box<str>, Vec<(u32, Arc<str>)>>,
}

impl ScopeIndex {
    /// Indexes the scopes of `teams` (team `i` is `teams[i]`).
    pub(crate) fn new<'a>(teams: impl Iterator<Item = &'a Scope>) -> ScopeIndex {
        let mut index = ScopeIndex::default();
        for (i, scope) in teams.enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            for p in &scope.service_accounts {
                let written: Arc<str> = Arc::from(p.text());
                match p {
                    OwnerPattern::Exact(id) => index
                        .exact
                        .entry((**id).into())
                        .or_default()
                        .push((i, written)),
                    OwnerPattern::Prefix(prefix) => index
                        .prefixes
                        .entry((**prefix).into())
                        .or_default()
                        .push((i, written)),
                }
            }
            for e in &scope.environments {
                index
                    .environments
                    .entry((**e).into())
                    .or_default()
                    .push((i, e.clone()));
            }
            for g in &scope.groups {
                index
                    .groups
                    .entry((**g).into())
                    .or_default()
                    .push((i, g.clone()));
            }
        }
        let mut lens: Vec<usize> = index.prefixes.keys().map(|p| p.len()).collect();
        lens.sort_unstable();
        lens.dedup();
        index.prefix_lens = lens;
        index
    }

    /// Whether no team has a scope.
    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.prefixes.is_empty()
            && self.environments.is_empty()
            && self.groups.is_empty()
    }

    /// The teams whose scope covers the request, each once with the first reason found (owner,
    /// then environment, then group), in team order.
    pub(crate) fn lookup<'a>(
        &self,
        owner: Option<&str>,
        environment: Option<&str>,
        groups: impl Iterator<Item = &'a str>,
        out: &mut Vec<(u32, Via)>,
    ) {
        let mut push = |team: u32, via: &dyn Fn() -> Via| {
            if !out.iter().any(|(t, _)| *t == team) {
                out.push((team, via()));
            }
        };
        if let Some(o) = owner {
            for (team, written) in self.exact.get(o).into_iter().flatten() {
                push(*team, &|| Via::ServiceAccount(written.clone()));
            }
            for &len in &self.prefix_lens {
                let Some(head) = o.get(..len) else {
                    break;
                };
                for (team, written) in self.prefixes.get(head).into_iter().flatten() {
                    push(*team, &|| Via::ServiceAccount(written.clone()));
                }
            }
        }
        if let Some(e) = environment {
            for (team, env) in self.environments.get(e).into_iter().flatten() {
                push(*team, &|| Via::Environment(env.clone()));
            }
        }
        if !self.groups.is_empty() {
            for g in groups {
                for (team, group) in self.groups.get(g).into_iter().flatten() {
                    push(*team, &|| Via::Group(group.clone()));
                }
            }
        }
        out.sort_by_key(|(t, _)| *t);
    }
}

/// Pairs of teams (by index, lower first) whose scopes claim the same thing, with what they share,
/// leaving out pairs where either team allows the overlap. Looked up through the index, so it
/// costs one lookup per scope entry (and prefix length), not one per pair of teams.
pub(crate) fn overlaps(names: &[&str], scopes: &[&Scope]) -> Vec<(u32, u32, String)> {
    let index = ScopeIndex::new(scopes.iter().copied());
    let mut found: BTreeMap<(u32, u32), String> = BTreeMap::new();
    let mut note = |a: u32, b: u32, what: String| {
        if a != b {
            found.entry((a.min(b), a.max(b))).or_insert(what);
        }
    };
    let mut seen_prefix_pairs = |list: &[(u32, Arc<str>)], what: &dyn Fn(&str) -> String| {
        for (i, (a, wa)) in list.iter().enumerate() {
            for (b, _) in list.iter().skip(i + 1) {
                note(*a, *b, what(wa));
            }
        }
    };
    for list in index.exact.values() {
        seen_prefix_pairs(list, &|w| format!("service account `{w}`"));
    }
    for list in index.prefixes.values() {
        seen_prefix_pairs(list, &|w| format!("service accounts `{w}`"));
    }
    for list in index.environments.values() {
        seen_prefix_pairs(list, &|w| format!("environment `{w}`"));
    }
    for list in index.groups.values() {
        seen_prefix_pairs(list, &|w| format!("group `{w}`"));
    }
    // An id or a longer prefix that a (shorter or equal) prefix covers.
    let entries = index
        .exact
        .iter()
        .chain(index.prefixes.iter())
        .flat_map(|(key, list)| list.iter().map(move |(t, w)| (key, *t, w)));
    for (key, team, written) in entries {
        for &len in &index.prefix_lens {
            let Some(head) = key.get(..len) else {
                break;
            };
            for (other, pattern) in index.prefixes.get(head).into_iter().flatten() {
                if *other != team {
                    note(
                        team,
                        *other,
                        format!("service accounts `{written}` and `{pattern}`"),
                    );
                }
            }
        }
    }
    found
        .into_iter()
        .filter(|((a, b), _)| {
            let (a, b) = (*a as usize, *b as usize);
            let allows = |x: usize, y: usize| {
                scopes.get(x).is_some_and(|s| {
                    names
                        .get(y)
                        .is_some_and(|n| s.allow_overlap_with.contains(*n))
                })
            };
            !allows(a, b) && !allows(b, a)
        })
        .map(|((a, b), what)| (a, b, what))
        .collect()
}

#[cfg(test)]
mod tests;
