//! Layer 2 of the decision: the organisation's own Cedar `forbid` policies (docs/architecture.md
//! §5) — the platform set, which applies to every request, and team sets, each applying only to
//! the requests inside its team's scope ([`team`]).
//!
//! [`OrgPolicies::load`] reads `keygate.cedarschema` and every `*.cedar` file of the policy
//! directory, appends a schema fragment generated from the config (named regex patterns, named
//! parameters), checks keygate's rules (only `forbid`, every policy has `@id` and `@reason`, ids
//! are unique, `@mode` is `enforce` or `dry-run`), validates STRICTLY, does the same for every
//! team directory (against the platform schema plus the team's own patterns and parameters), and
//! hashes it all into a digest (one input of the policy revision, `policy::revision`). Problems
//! come back as `file:line: message`. This happens once per load or reload, never per request;
//! the result is immutable and `Send + Sync`, meant to sit behind an `ArcSwap`.
//! [`OrgPolicies::reload`] isolates teams: one team's broken files keep that team's last good set.
//!
//! [`OrgPolicies::evaluate`] finds the team sets whose scope covers the request (hash lookups),
//! builds one Cedar request from an [`OrgInput`] (principal entity, resource entity, per-action
//! context) and evaluates, in each set that applies, only the policies that can match it
//! ([`index`]) — with the same findings as evaluating every policy. keygate permits whatever
//! layer 1 allowed, so policies can only narrow that. An enforced forbid that matches denies; a
//! dry-run one is reported as "would deny"; a policy whose evaluation errors denies (fail closed)
//! and is reported separately. A team's policy ids are `<team>/<id>`, and its findings name the
//! team.
//!
//! Deliberately not here: the RBAC matrix (layer 1, `policy::rbac`), combining both layers,
//! rendering the 403, metrics, logging and hot reload (the decide stage and the CLI own those).
//! Policy test files and `explain` are in [`testing`] and [`explain`].

mod config;
pub mod explain;
mod index;
mod load;
mod position;
mod reason;
mod request;
pub mod team;
pub mod testing;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(test)]
use cedar_policy::AuthorizationError;
use cedar_policy::{PolicyId, PolicySet, Schema};
use cedar_policy_core::ast::Value;
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;
use regex::RegexSet;
use serde::Serialize;

pub use config::{
    Mode, OrgPolicyConfig, ParamValue, RawOrgPolicyConfig, DEFAULT_POLICY_DIR, DEFAULT_SCHEMA_FILE,
    DEFAULT_TESTS_DIR,
};
pub use explain::{explain, Explanation};
pub use team::{TeamMatch, Via, PLATFORM_SET};
pub use testing::{run_all_policy_tests, run_policy_tests, SuiteReport, TestReport};

use crate::model::Action;
use crate::model::PrincipalKind;
use crate::policy::bindings::RoleBinding as Binding;

/// Ids with this prefix are keygate's own; organisation policies cannot use them.
const RESERVED_ID_PREFIX: &str = "keygate.";
/// Finding id for a request that could not be expressed in the schema (missing owner, …).
pub const INPUT_ERROR_ID: &str = "keygate.input";

/// Why a policy set could not be loaded. `Display` is `file:line: message` for problems in a
/// file, so editors and CI can jump to them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// A file or directory could not be read, or a problem has no line.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A problem at a line (and column, where known) of a policy or schema file.
    #[error("{}:{line}:{}{message}", path.display(), column.map(|c| format!("{c}: ")).unwrap_or_else(|| " ".into()))]
    Source {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters), when the problem has a precise position.
        column: Option<usize>,
        /// What is wrong there.
        message: String,
    },
    /// A problem in the `[policy]` config (a bad pattern, an override for an unknown id, …).
    #[error("config `{key}`: {message}")]
    Config {
        /// Dotted key, e.g. `policy.patterns.naming`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// One matching (or failing) policy: its id and the `@reason` a caller is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The policy's `@id`.
    pub id: String,
    /// The policy's `@reason` with the request's values filled in; for an evaluation error,
    /// what failed.
    pub reason: String,
    /// The mode the policy was in.
    pub mode: Mode,
    /// The policy's `@pointer`: the request body field at fault (a JSON pointer), if it names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// The team whose set the policy belongs to; `None` for the platform set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

impl Finding {
    /// How a denial names the policy: "organisation policy `x`", or "policy `t/x` of team `t`".
    pub fn source(&self) -> String {
        match &self.team {
            None => format!("organisation policy `{}`", self.id),
            Some(team) => format!("policy `{}` of team `{team}`", self.id),
        }
    }
}

/// The outcome of layer 2 for one request.
///
/// `allowed` is the verdict: no enforced forbid matched and no enforced policy failed to
/// evaluate. Findings are sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OrgDecision {
    /// Whether layer 2 lets the request through.
    pub allowed: bool,
    /// Enforced forbids that matched: the deny reasons.
    pub denied: Vec<Finding>,
    /// Dry-run forbids that matched: "would deny" (count in `keygate_policy_would_deny_total`).
    pub would_deny: Vec<Finding>,
    /// Policies whose evaluation failed. Those with `mode == Enforce` deny (fail closed); dry-run
    /// ones do not. Also holds [`INPUT_ERROR_ID`] when the request could not be built.
    pub errors: Vec<Finding>,
    /// The team sets that applied (the platform set always does), in team order, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<TeamMatch>,
}

/// A role binding the principal holds (`principal.bindings` in Cedar), borrowed from wherever
/// layer 1 keeps it (e.g. `role()` and `pattern().as_str()` of `bindings::RoleBinding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleBinding<'a> {
    /// Role name, e.g. `OrganizationAdmin`.
    pub role: &'a str,
    /// The binding's CRN pattern.
    pub crn_pattern: &'a str,
}

/// What a key is (or will be) scoped to (`context.resource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyResource<'a> {
    /// `lkc-…`, `lsrc-…`, `lksqlc-…`, `aws.us-east-1`, `cloud`, `global`, `tableflow`.
    pub id: &'a str,
    /// `Cloud`, `Kafka`, `SchemaRegistry`, `Flink`, `Tableflow`, `KsqlDb` or `Global`.
    pub resource_type: &'a str,
    /// The environment, when the resource lives in one.
    pub environment: Option<&'a str>,
    /// The cluster, when the key is scoped to one.
    pub cluster: Option<&'a str>,
}

/// The API-key load of the clusters a create counts against (`context.quota`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaInput<'a> {
    /// `[quota] kafka_keys_per_cluster`, when configured.
    pub limit: Option<u64>,
    /// The clusters, fullest first, with the keys counting against each now.
    pub clusters: &'a [crate::policy::quota::ClusterLoad],
}

/// What keygate knows of an existing key (`context.target_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetKey<'a> {
    /// The key id.
    pub id: &'a str,
    /// The owner, if known.
    pub owner_id: Option<&'a str>,
    /// The resource id, if known (absent for Cloud keys).
    pub resource_id: Option<&'a str>,
    /// The key's description, `""` when it has none.
    pub description: &'a str,
    /// The key's display name, `""` when it has none.
    pub display_name: &'a str,
}

/// Everything layer 2 sees of one governed request. Build it from the request's principal,
/// action and body plus the layer-1 result; it borrows, so building it does not allocate.
///
/// Per action, what matters (see `policies/README.md`): create needs `owner_id` and `resource`
/// (absent `display_name`/`description` mean `""`); list uses `owner_id`/`resource` as its
/// filters; update uses `display_name`/`description` when the PATCH sets them; get, update and
/// delete use `key_id` and `target_key`.
#[derive(Debug, Clone, Copy)]
pub struct OrgInput<'a> {
    /// The caller's Confluent id.
    pub principal_id: &'a str,
    /// The caller's kind (Cedar entity type `User`, `ServiceAccount` or `IdentityPool`).
    pub principal_kind: PrincipalKind,
    /// The caller's groups from the identity stage (config `[policy.groups]` is added).
    pub groups: &'a [String],
    /// The company identity acting as the caller (`principal.external` in Cedar), if any.
    pub external: Option<&'a crate::model::External>,
    /// The role bindings that apply to the caller.
    pub bindings: &'a [RoleBinding<'a>],
    /// The governed action.
    pub action: Action,
    /// The key id from the path (get, update, delete).
    pub key_id: Option<&'a str>,
    /// `spec.owner.id` (create) or the owner filter (list).
    pub owner_id: Option<&'a str>,
    /// `spec.resource` (create) or the resource filter (list).
    pub resource: Option<KeyResource<'a>>,
    /// `spec.display_name`.
    pub display_name: Option<&'a str>,
    /// `spec.description`.
    pub description: Option<&'a str>,
    /// Layer 1's verdict.
    pub matrix_allowed: bool,
    /// The layer-1 rule that decided.
    pub matrix_rule: &'a str,
    /// How many keys the owner already holds; `None` = unknown (policies see the attribute
    /// absent and must test it with `has`).
    pub owner_key_count: Option<u64>,
    /// Request time, unix seconds.
    pub time: i64,
    /// The downstream address.
    pub source_ip: Option<IpAddr>,
    /// The request id.
    pub request_id: &'a str,
    /// The existing key, as far as keygate knows it (get, update, delete).
    pub target_key: Option<TargetKey<'a>>,
    /// For a create, the key counts of the clusters it would count against, when known.
    pub quota: Option<QuotaInput<'a>>,
}

/// What keygate knows about a loaded policy.
#[derive(Debug, Clone)]
struct PolicyMeta {
    /// The id as reported: `<team>/<id>` in a team's set.
    id: String,
    team: Option<Arc<str>>,
    reason: String,
    template: reason::ReasonTemplate,
    pointer: Option<String>,
    mode: Mode,
    file: PathBuf,
    file_index: usize,
    line: usize,
}

impl PolicyMeta {
    fn finding(&self, input: &OrgInput<'_>) -> Finding {
        Finding {
            id: self.id.clone(),
            reason: self.template.render(input),
            mode: self.mode,
            pointer: self.pointer.clone(),
            team: self.team_name(),
        }
    }

    fn team_name(&self) -> Option<String> {
        self.team.as_deref().map(str::to_owned)
    }
}

impl<'a> RoleBinding<'a> {
    /// The bindings a principal holds, as layer 2 sees them.
    pub fn all_of(bindings: &'a [Binding]) -> Vec<RoleBinding<'a>> {
        bindings
            .iter()
            .map(|b| RoleBinding {
                role: b.role(),
                crn_pattern: b.pattern().as_str(),
            })
            .collect()
    }
}

/// What happened to one team's set in a load or reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamOutcome {
    /// The team's name.
    pub team: String,
    /// What happened.
    pub result: TeamResult,
}

/// See [`TeamOutcome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeamResult {
    /// The team's files loaded (or were unchanged).
    Loaded,
    /// The team's files did not load; the last good set stays in force. Only on reload.
    KeptLastGood(Vec<LoadError>),
    /// The team's files did not load and it had no last good set: it has no set. Only on reload.
    NotLoaded(Vec<LoadError>),
    /// The team's directory is gone: so is its set.
    Removed,
}

impl TeamResult {
    /// The `result` label of `keygate_reloads_total`: `ok`, `rejected` or `removed`.
    pub fn label(&self) -> &'static str {
        match self {
            TeamResult::Loaded => "ok",
            TeamResult::KeptLastGood(_) | TeamResult::NotLoaded(_) => "rejected",
            TeamResult::Removed => "removed",
        }
    }
}

/// A loaded team set, as `keygate check` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamInfo<'a> {
    /// The team's name.
    pub name: &'a str,
    /// Its directory (policy tests are in `tests/` below it).
    pub dir: &'a Path,
    /// Its scope, in words.
    pub scope: String,
    /// How many policies it has.
    pub policies: usize,
}

/// One compiled set: its index and what keygate knows about its policies.
struct CompiledSet {
    index: index::SetIndex,
    /// Per policy, in the order of `index.policies()`.
    meta: Vec<PolicyMeta>,
    /// Policy id as reported → position.
    by_id: HashMap<String, usize>,
    /// Per policy, its text as Cedar prints it (what `keygate policy diff` compares).
    texts: Vec<String>,
}

impl CompiledSet {
    fn new(
        policies: &PolicySet,
        mut meta: HashMap<PolicyId, PolicyMeta>,
        vocabulary: &request::Vocabulary,
    ) -> Result<CompiledSet, String> {
        let ordered: Vec<&cedar_policy::Policy> = policies.policies().collect();
        let index = index::SetIndex::new(ordered.iter().copied(), vocabulary)?;
        let meta: Vec<PolicyMeta> = ordered
            .iter()
            .map(|p| {
                meta.remove(p.id())
                    .ok_or_else(|| format!("internal: no metadata for policy `{}`", p.id()))
            })
            .collect::<Result<_, _>>()?;
        let by_id = meta
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        let texts = ordered.iter().map(|p| p.to_string()).collect();
        Ok(CompiledSet {
            index,
            meta,
            by_id,
            texts,
        })
    }

    fn meta_of(&self, id: &str) -> Option<&PolicyMeta> {
        self.by_id.get(id).and_then(|i| self.meta.get(*i))
    }

    /// Adds what one policy's evaluation found to `decision`.
    fn record(
        &self,
        decision: &mut OrgDecision,
        input: &OrgInput<'_>,
        policy: usize,
        outcome: index::Outcome,
    ) {
        let (Some(meta), Some(compiled)) =
            (self.meta.get(policy), self.index.policies().get(policy))
        else {
            return;
        };
        let failure = match outcome {
            index::Outcome::Satisfied => {
                match meta.mode {
                    Mode::Enforce => decision.denied.push(meta.finding(input)),
                    Mode::DryRun => decision.would_deny.push(meta.finding(input)),
                }
                return;
            }
            // Worded as `cedar-policy`'s authorizer words it.
            index::Outcome::Failed(error) => cedar_policy::AuthorizationError::from(
                cedar_policy::authorization_errors::PolicyEvaluationError::from(
                    cedar_policy_core::authorizer::AuthorizationError::PolicyEvaluationError {
                        id: compiled.id.clone(),
                        error: *error,
                    },
                ),
            )
            .to_string(),
            index::Outcome::NotBoolean => format!(
                "error while evaluating policy `{}`: the condition is not a boolean",
                meta.id
            ),
        };
        decision.errors.push(Finding {
            id: meta.id.clone(),
            reason: format!("policy evaluation failed, so the request is denied: {failure}"),
            mode: meta.mode,
            pointer: None,
            team: meta.team_name(),
        });
    }

    /// Adds the findings of `cedar-policy`'s authorizer over this set to `decision`: the
    /// reference the sliced evaluation is tested against.
    #[cfg(test)]
    fn record_response(
        &self,
        decision: &mut OrgDecision,
        input: &OrgInput<'_>,
        response: &cedar_policy::Response,
    ) {
        let diagnostics = response.diagnostics();
        for id in diagnostics.reason() {
            if let Some(meta) = self.meta_of(id.as_ref()) {
                match meta.mode {
                    Mode::Enforce => decision.denied.push(meta.finding(input)),
                    Mode::DryRun => decision.would_deny.push(meta.finding(input)),
                }
            }
        }
        for error in diagnostics.errors() {
            let AuthorizationError::PolicyEvaluationError(e) = error;
            let (id, mode, team) = match self.meta_of(e.policy_id().as_ref()) {
                Some(meta) => (meta.id.clone(), meta.mode, meta.team_name()),
                None => (e.policy_id().to_string(), Mode::Enforce, None),
            };
            decision.errors.push(Finding {
                id,
                reason: format!("policy evaluation failed, so the request is denied: {error}"),
                mode,
                pointer: None,
                team,
            });
        }
    }
}

/// A team's loaded set.
struct TeamSet {
    name: Arc<str>,
    scope: team::Scope,
    set: CompiledSet,
    pattern_names: Vec<String>,
    pattern_set: Option<RegexSet>,
    /// The team's own parameters.
    params: Vec<(String, ParamValue)>,
    /// The platform's and the team's parameters as one record, when the team has any.
    params_value: Option<Value>,
    sources: load::TeamSources,
    digest: String,
    /// The platform's compile key this set was compiled against.
    compile_key: String,
}

/// A loaded, validated organisational policy set — the platform set and every team set.
/// Immutable; reload by loading a new one.
pub struct OrgPolicies {
    digest: String,
    schema: Schema,
    platform: CompiledSet,
    /// Sorted by name.
    teams: Vec<Arc<TeamSet>>,
    scopes: team::ScopeIndex,
    /// Per action (index: `request::action_index`): whether any policy of any set can apply.
    governs: [bool; 5],
    pattern_names: Vec<String>,
    pattern_set: RegexSet,
    /// `context.params`, built once.
    params: Value,
    param_values: Vec<(String, ParamValue)>,
    groups: HashMap<String, Vec<String>>,
    vocabulary: request::Vocabulary,
    outcomes: Vec<TeamOutcome>,
}

impl std::fmt::Debug for OrgPolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgPolicies")
            .field("digest", &self.digest)
            .field("policies", &self.platform.meta.len())
            .field("teams", &self.teams.len())
            .finish_non_exhaustive()
    }
}

fn internal(message: String) -> Vec<LoadError> {
    vec![LoadError::Config {
        key: "policy".into(),
        message: format!("internal: {message}"),
    }]
}

// === impl OrgPolicies ===

impl OrgPolicies {
    /// Reads, checks and strictly validates the schema, every `*.cedar` file in `cfg.dir`, and
    /// every team set in `cfg.teams_dir`. All problems are returned, each as `file:line: message`
    /// where a file is involved; any problem fails the load.
    pub fn load(cfg: &OrgPolicyConfig) -> Result<OrgPolicies, Vec<LoadError>> {
        Self::load_with(cfg, None)
    }

    /// Loads anew while `previous` is in force. A problem with the platform set (the schema, the
    /// policy directory, the config) fails the reload as [`OrgPolicies::load`] would; a problem
    /// with one team's files (or a scope change that overlaps another team) keeps that team's
    /// last good set — or no set, for a team that never loaded — and loads everything else.
    /// [`OrgPolicies::team_outcomes`] says what happened to each team.
    pub fn reload(
        cfg: &OrgPolicyConfig,
        previous: &OrgPolicies,
    ) -> Result<OrgPolicies, Vec<LoadError>> {
        Self::load_with(cfg, Some(previous))
    }

    fn load_with(
        cfg: &OrgPolicyConfig,
        previous: Option<&OrgPolicies>,
    ) -> Result<OrgPolicies, Vec<LoadError>> {
        let vocabulary = request::Vocabulary::new().map_err(internal)?;
        let platform = load::load_platform(cfg);
        let dirs = match &cfg.teams_dir {
            None => Ok(Vec::new()),
            Some(dir) => load::team_dirs(dir).map_err(|e| vec![e]),
        };
        let (platform, dirs) = match (platform, dirs) {
            (Ok(platform), Ok(dirs)) => (platform, dirs),
            (platform, dirs) => {
                let mut errors = platform.err().unwrap_or_default();
                errors.extend(dirs.err().unwrap_or_default());
                return Err(errors);
            }
        };
        let mut errors = Vec::new();
        let mut outcomes = Vec::new();
        let mut teams: Vec<Arc<TeamSet>> = Vec::new();
        let compile = |sources: load::TeamSources| -> Result<Arc<TeamSet>, Vec<LoadError>> {
            Self::compile_team(sources, &platform, cfg, &vocabulary, previous)
        };
        for (name, dir) in &dirs {
            let fresh = load::read_team(name, dir).and_then(compile);
            let result = match fresh {
                Ok(set) => {
                    teams.push(set);
                    TeamResult::Loaded
                }
                Err(problems) if previous.is_none() => {
                    errors.extend(problems);
                    continue;
                }
                Err(problems) => match previous.and_then(|p| p.team(name)) {
                    None => TeamResult::NotLoaded(problems),
                    Some(last) => match compile(last.sources.clone()) {
                        Ok(set) => {
                            teams.push(set);
                            TeamResult::KeptLastGood(problems)
                        }
                        Err(broken) => {
                            errors.extend(problems);
                            errors.extend(broken.into_iter().map(|e| last_good_broken(name, e)));
                            continue;
                        }
                    },
                },
            };
            outcomes.push(TeamOutcome {
                team: name.clone(),
                result,
            });
        }
        if let Some(previous) = previous {
            for gone in previous
                .teams
                .iter()
                .filter(|t| !dirs.iter().any(|(n, _)| **n == *t.name))
            {
                outcomes.push(TeamOutcome {
                    team: gone.name.to_string(),
                    result: TeamResult::Removed,
                });
            }
        }
        let mut team_modes: Vec<&String> = cfg.modes.keys().filter(|id| id.contains('/')).collect();
        team_modes.sort();
        for id in team_modes {
            let team = id.split('/').next().unwrap_or_default();
            if !dirs.iter().any(|(n, _)| n == team) {
                errors.push(LoadError::Config {
                    key: format!("policy.modes.{id}"),
                    message: format!("there is no team `{team}` in `policy.teams_dir`"),
                });
            }
        }
        Self::resolve_overlaps(&mut teams, &mut outcomes, previous, &mut errors, &compile);
        if !errors.is_empty() {
            return Err(errors);
        }

        let platform_set =
            CompiledSet::new(&platform.policies, platform.meta, &vocabulary).map_err(internal)?;
        let governs = std::array::from_fn(|i| {
            platform_set.index.governs(i) || teams.iter().any(|t| t.set.index.governs(i))
        });
        let digest = if teams.is_empty() {
            platform.digest
        } else {
            load::combined_digest(
                &platform.digest,
                teams.iter().map(|t| (&*t.name, t.digest.as_str())),
            )
        };
        Ok(OrgPolicies {
            digest,
            schema: platform.schema,
            platform: platform_set,
            scopes: team::ScopeIndex::new(teams.iter().map(|t| &t.scope)),
            teams,
            governs,
            pattern_names: platform.pattern_names,
            pattern_set: platform.pattern_set,
            params: request::params_value(&cfg.params),
            param_values: cfg.params.clone(),
            groups: cfg.groups.clone(),
            vocabulary,
            outcomes,
        })
    }

    /// A team's set from its sources: the previous load's, when the sources and what they are
    /// compiled against are unchanged, else compiled anew.
    fn compile_team(
        sources: load::TeamSources,
        platform: &load::Platform,
        cfg: &OrgPolicyConfig,
        vocabulary: &request::Vocabulary,
        previous: Option<&OrgPolicies>,
    ) -> Result<Arc<TeamSet>, Vec<LoadError>> {
        if let Some(last) = previous.and_then(|p| p.team(&sources.name)) {
            if last.sources == sources && last.compile_key == platform.compile_key {
                return Ok(Arc::clone(last));
            }
        }
        let mut compiled = load::compile_team(&sources, platform, cfg)?;
        let clashes: Vec<LoadError> = compiled
            .values
            .patterns
            .iter()
            .map(|(n, _)| n)
            .filter(|n| platform.pattern_names.contains(n))
            .chain(
                compiled
                    .values
                    .params
                    .iter()
                    .map(|(n, _)| n)
                    .filter(|n| cfg.params.iter().any(|(p, _)| &p == n)),
            )
            .map(|n| LoadError::Io {
                path: sources.dir.join(config::TEAM_FILE),
                message: format!("`{n}` is already a platform pattern or parameter"),
            })
            .collect();
        if !clashes.is_empty() {
            return Err(clashes);
        }
        let set = CompiledSet::new(
            &compiled.policies,
            std::mem::take(&mut compiled.meta),
            vocabulary,
        )
        .map_err(internal)?;
        Ok(Arc::new(TeamSet {
            name: Arc::from(sources.name.as_str()),
            scope: compiled.scope,
            set,
            pattern_names: compiled.pattern_names,
            pattern_set: compiled.pattern_set,
            params: compiled.values.params.clone(),
            params_value: (!compiled.values.params.is_empty())
                .then(|| request::params_value(cfg.params.iter().chain(&compiled.values.params))),
            digest: compiled.digest,
            compile_key: platform.compile_key.clone(),
            sources,
        }))
    }

    /// Refuses overlapping scopes. On a load, every overlap is an error. On a reload, a team
    /// whose scope changed into an overlap goes back to its last good set (or to none); an
    /// overlap between unchanged scopes (a change of the platform's config) fails the reload.
    fn resolve_overlaps(
        teams: &mut Vec<Arc<TeamSet>>,
        outcomes: &mut [TeamOutcome],
        previous: Option<&OrgPolicies>,
        errors: &mut Vec<LoadError>,
        compile: &dyn Fn(load::TeamSources) -> Result<Arc<TeamSet>, Vec<LoadError>>,
    ) {
        let overlap = |t: &TeamSet, other: &str, what: &str| {
            LoadError::Io {
            path: t.sources.dir.join(config::SCOPE_FILE),
            message: format!(
                "the scope of team `{}` overlaps team `{other}`'s: both claim {what}. Every set whose scope covers a request decides it, so an overlap must be deliberate: add `allow_overlap_with = [\"{other}\"]` to one of the two scopes",
                t.name
            ),
        }
        };
        loop {
            let names: Vec<&str> = teams.iter().map(|t| &*t.name).collect();
            let scopes: Vec<&team::Scope> = teams.iter().map(|t| &t.scope).collect();
            let found = team::overlaps(&names, &scopes);
            if found.is_empty() {
                return;
            }
            let team_at = |i: u32| teams.get(i as usize);
            let changed = |t: &TeamSet| {
                previous
                    .and_then(|p| p.team(&t.name))
                    .is_none_or(|last| last.scope != t.scope)
            };
            let mut blamed: BTreeMap<u32, Vec<LoadError>> = BTreeMap::new();
            for (a, b, what) in &found {
                for (x, y) in [(*a, *b), (*b, *a)] {
                    if let (Some(tx), Some(ty)) = (team_at(x), team_at(y)) {
                        if previous.is_none() || changed(tx) {
                            blamed
                                .entry(x)
                                .or_default()
                                .push(overlap(tx, &ty.name, what));
                        }
                    }
                }
            }
            if previous.is_none() || blamed.is_empty() {
                for (a, b, what) in &found {
                    if let (Some(ta), Some(tb)) = (team_at(*a), team_at(*b)) {
                        errors.push(overlap(ta, &tb.name, what));
                    }
                }
                return;
            }
            for (i, problems) in blamed.into_iter().rev() {
                let i = i as usize;
                let Some(name) = teams.get(i).map(|t| t.name.to_string()) else {
                    continue;
                };
                let outcome = outcomes.iter_mut().find(|o| o.team == name);
                let last = previous.and_then(|p| p.team(&name));
                let result = match last.map(|l| compile(l.sources.clone())) {
                    Some(Ok(set)) => {
                        teams[i] = set;
                        TeamResult::KeptLastGood(problems)
                    }
                    Some(Err(broken)) => {
                        errors.extend(broken.into_iter().map(|e| last_good_broken(&name, e)));
                        return;
                    }
                    None => {
                        teams.remove(i);
                        TeamResult::NotLoaded(problems)
                    }
                };
                if let Some(outcome) = outcome {
                    outcome.result = result;
                }
            }
        }
    }

    fn team(&self, name: &str) -> Option<&Arc<TeamSet>> {
        self.teams
            .binary_search_by(|t| (*t.name).cmp(name))
            .ok()
            .and_then(|i| self.teams.get(i))
    }

    /// SHA-256 (hex) of the schema, the policy files, the team sets and the `[policy]` values
    /// that affect decisions: equal digests decide equally. Not shown on its own anywhere: it is
    /// one input of the policy revision (`policy::revision`), the one id keygate reports.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Whether any loaded policy (of any set) can apply to `action`: when none can, keygate has
    /// nothing to look up or evaluate for it.
    pub fn governs(&self, action: Action) -> bool {
        self.governs[request::action_index(action)]
    }

    /// The ids of all loaded policies, sorted; a team's are `<team>/<id>`.
    pub fn policy_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .platform
            .meta
            .iter()
            .chain(self.teams.iter().flat_map(|t| t.set.meta.iter()))
            .map(|m| m.id.as_str())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Every loaded policy's id (a team's as `<team>/<id>`) with a digest of what it decides by:
    /// its text as Cedar prints it, its mode after config overrides, its reason and pointer.
    /// Equal digests, same policy (what `keygate policy diff` compares).
    pub fn policy_digests(&self) -> BTreeMap<String, String> {
        std::iter::once(&self.platform)
            .chain(self.teams.iter().map(|t| &t.set))
            .flat_map(|set| set.meta.iter().zip(&set.texts))
            .map(|(meta, text)| {
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
                for part in [
                    text.as_str(),
                    meta.mode.as_str(),
                    meta.reason.as_str(),
                    meta.pointer.as_deref().unwrap_or(""),
                ] {
                    ctx.update(&(part.len() as u64).to_be_bytes());
                    ctx.update(part.as_bytes());
                }
                let digest = ctx.finish();
                (meta.id.clone(), crate::id::hex(&digest.as_ref()[..8]))
            })
            .collect()
    }

    /// The ids of one set's policies, sorted: the platform's (`None`) or a team's (as
    /// `<team>/<id>`). Empty for an unknown team.
    pub fn set_policy_ids(&self, team: Option<&str>) -> Vec<&str> {
        let meta = match team {
            None => Some(&self.platform.meta),
            Some(name) => self.team(name).map(|t| &t.set.meta),
        };
        let mut ids: Vec<&str> = meta
            .into_iter()
            .flat_map(|m| m.iter().map(|m| m.id.as_str()))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The team sets in force, by name.
    pub fn teams(&self) -> Vec<TeamInfo<'_>> {
        self.teams
            .iter()
            .map(|t| TeamInfo {
                name: &t.name,
                dir: &t.sources.dir,
                scope: t.scope.describe(),
                policies: t.set.meta.len(),
            })
            .collect()
    }

    /// What this load did with each team's files (see [`OrgPolicies::reload`]).
    pub fn team_outcomes(&self) -> &[TeamOutcome] {
        &self.outcomes
    }

    fn meta_of(&self, id: &str) -> Option<&PolicyMeta> {
        match id.split_once('/') {
            Some((team, _)) => self.team(team)?.set.meta_of(id),
            None => self.platform.meta_of(id),
        }
    }

    /// The mode a policy is in after config overrides, or `None` for an unknown id.
    pub fn mode(&self, id: &str) -> Option<Mode> {
        self.meta_of(id).map(|m| m.mode)
    }

    /// The `@reason` of a policy as written (placeholders unfilled), or `None` for an unknown id.
    pub fn reason(&self, id: &str) -> Option<&str> {
        self.meta_of(id).map(|m| m.reason.as_str())
    }

    /// The effective schema of the platform set (base file + generated fragment).
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The caller's groups as policies see them: the identity stage's plus `[policy.groups]`,
    /// each once.
    fn groups_of<'a>(&'a self, input: &OrgInput<'a>) -> Vec<&'a str> {
        let extra = self
            .groups
            .get(input.principal_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut out: Vec<&str> = Vec::new();
        for g in input.groups.iter().chain(extra) {
            if !out.contains(&g.as_str()) {
                out.push(g);
            }
        }
        out
    }

    /// Decides one request with the platform set and every team set whose scope covers it. Never
    /// fails: anything that cannot be evaluated denies.
    pub fn evaluate(&self, input: &OrgInput<'_>) -> OrgDecision {
        let groups = self.groups_of(input);
        let mut teams = Vec::new();
        if !self.scopes.is_empty() {
            let (owner, environment) = scope_keys(input);
            self.scopes
                .lookup(owner, environment, groups.iter().copied(), &mut teams);
        }
        self.decide(input, &groups, true, &teams)
    }

    /// Decides one request with one set alone — the platform's (`None`) or a team's, if its
    /// scope covers the request — as the set's policy tests do. `None` for an unknown team.
    pub fn evaluate_set(&self, team: Option<&str>, input: &OrgInput<'_>) -> Option<OrgDecision> {
        let groups = self.groups_of(input);
        let Some(name) = team else {
            return Some(self.decide(input, &groups, true, &[]));
        };
        let i = self.teams.binary_search_by(|t| (*t.name).cmp(name)).ok()?;
        let set = self.teams.get(i)?;
        let (owner, environment) = scope_keys(input);
        let Some(via) = set.scope.covers(owner, environment, groups.iter().copied()) else {
            return Some(OrgDecision {
                allowed: true,
                ..OrgDecision::default()
            });
        };
        let i = u32::try_from(i).ok()?;
        Some(self.decide(input, &groups, false, &[(i, via)]))
    }

    /// Evaluates `input` with the platform set (when `platform`) and the given team sets.
    fn decide(
        &self,
        input: &OrgInput<'_>,
        groups: &[&str],
        platform: bool,
        teams: &[(u32, team::Via)],
    ) -> OrgDecision {
        let sets: Vec<&TeamSet> = teams
            .iter()
            .filter_map(|(i, _)| self.teams.get(*i as usize).map(|t| &**t))
            .collect();
        let matches = teams
            .iter()
            .filter_map(|(i, via)| {
                self.teams.get(*i as usize).map(|t| TeamMatch {
                    team: t.name.clone(),
                    via: via.clone(),
                })
            })
            .collect();
        let built = match self.build_request(input, groups, &sets) {
            Ok(built) => built,
            Err(message) => {
                return OrgDecision {
                    allowed: false,
                    errors: vec![Finding {
                        id: INPUT_ERROR_ID.to_owned(),
                        reason: format!("the request cannot be evaluated: {message}"),
                        mode: Mode::Enforce,
                        pointer: None,
                        team: None,
                    }],
                    teams: matches,
                    ..OrgDecision::default()
                }
            }
        };
        let keys = index::Keys::of(input, request::resource_id(input));
        let mut decision = OrgDecision {
            teams: matches,
            ..OrgDecision::default()
        };
        // One evaluator for the request, shared by every set that applies.
        let evaluator = Evaluator::new(built.request, &built.entities, Extensions::all_available());
        let compiled = platform
            .then_some(&self.platform)
            .into_iter()
            .chain(sets.iter().map(|t| &t.set));
        for set in compiled {
            set.index.evaluate(
                &evaluator,
                input.action,
                &keys,
                groups,
                |policy, outcome| set.record(&mut decision, input, policy, outcome),
            );
        }
        decision.finish();
        decision
    }

    /// Like [`OrgPolicies::evaluate`], without any index: every team's scope is tested in turn
    /// and every policy of each set that applies is evaluated. What the index must agree with.
    #[cfg(test)]
    pub(crate) fn evaluate_whole(&self, input: &OrgInput<'_>) -> OrgDecision {
        let groups = self.groups_of(input);
        let (owner, environment) = scope_keys(input);
        let teams: Vec<(u32, team::Via)> = self
            .teams
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                t.scope
                    .covers(owner, environment, groups.iter().copied())
                    .map(|via| (u32::try_from(i).unwrap_or(u32::MAX), via))
            })
            .collect();
        let sets: Vec<&TeamSet> = teams
            .iter()
            .map(|(i, _)| &*self.teams[*i as usize])
            .collect();
        let mut decision = OrgDecision {
            teams: teams
                .iter()
                .map(|(i, via)| TeamMatch {
                    team: self.teams[*i as usize].name.clone(),
                    via: via.clone(),
                })
                .collect(),
            ..OrgDecision::default()
        };
        let Ok(built) = self.build_request(input, &groups, &sets) else {
            return self.decide(input, &groups, true, &teams);
        };
        let request = cedar_policy::Request::from(built.request);
        let entities = cedar_policy::Entities::from(built.entities);
        let authorizer = cedar_policy::Authorizer::new();
        for set in std::iter::once(&self.platform).chain(sets.iter().map(|t| &t.set)) {
            let response =
                authorizer.is_authorized(&request, set.index.whole(input.action), &entities);
            set.record_response(&mut decision, input, &response);
        }
        decision.finish();
        decision
    }

    /// How many policies the index has `input` evaluate, over every set that applies.
    #[cfg(test)]
    pub(crate) fn evaluated(&self, input: &OrgInput<'_>) -> usize {
        let groups = self.groups_of(input);
        let decision = self.evaluate(input);
        let keys = index::Keys::of(input, request::resource_id(input));
        std::iter::once(&self.platform)
            .chain(
                decision
                    .teams
                    .iter()
                    .filter_map(|m| self.team(&m.team).map(|t| &t.set)),
            )
            .map(|set| set.index.evaluated(input.action, &keys, &groups))
            .sum()
    }
}

/// The owner and environment a request's team scope is looked up by: the owner of a create, the
/// owner filter of a list, or the owner of the existing key; the environment of the key's
/// resource (create, list).
fn scope_keys<'a>(input: &OrgInput<'a>) -> (Option<&'a str>, Option<&'a str>) {
    let owner = input
        .owner_id
        .or_else(|| input.target_key.as_ref().and_then(|k| k.owner_id));
    let environment = input.resource.as_ref().and_then(|r| r.environment);
    (owner, environment)
}

/// A load error of a team's last good set, which no longer loads against the new platform set.
fn last_good_broken(team: &str, e: LoadError) -> LoadError {
    LoadError::Config {
        key: format!("policy.teams_dir/{team}"),
        message: format!(
            "team `{team}`'s files do not load, and neither does its last good set with the new platform set: {e}"
        ),
    }
}

impl OrgDecision {
    /// Sorts the findings and settles the verdict.
    fn finish(&mut self) {
        self.denied.sort_by(|a, b| a.id.cmp(&b.id));
        self.would_deny.sort_by(|a, b| a.id.cmp(&b.id));
        self.errors.sort_by(|a, b| a.id.cmp(&b.id));
        self.allowed = self.denied.is_empty() && self.errors.iter().all(|e| e.mode == Mode::DryRun);
    }
}

#[cfg(test)]
mod tests;
