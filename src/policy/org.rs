//! Layer 2 of the decision: the organisation's own Cedar `forbid` policies (docs/architecture.md §5).
//!
//! [`OrgPolicies::load`] reads `keygate.cedarschema` and every `*.cedar` file of the policy
//! directory, appends a schema fragment generated from the config (named regex patterns, named
//! parameters), checks keygate's rules (only `forbid`, every policy has `@id` and `@reason`, ids
//! are unique, `@mode` is `enforce` or `dry-run`), validates STRICTLY, and hashes it all into a
//! digest (one input of the policy revision, `policy::revision`). Problems come back as `file:line: message`. This happens once per load or reload,
//! never per request; the result is immutable and `Send + Sync`, meant to sit behind an
//! `ArcSwap`.
//!
//! [`OrgPolicies::evaluate`] builds one Cedar request from an [`OrgInput`] (principal entity,
//! resource entity, per-action context) and runs every policy. keygate supplies the only
//! `permit`, so policies can only narrow what layer 1 allowed. An enforced forbid that matches
//! denies; a dry-run one is reported as "would deny"; a policy whose evaluation errors denies
//! (fail closed) and is reported separately.
//!
//! Deliberately not here: the RBAC matrix (layer 1, `policy::rbac`), combining both layers,
//! rendering the 403, metrics, logging and hot reload (the decide stage and the CLI own those).
//! Policy test files and `explain` are in [`testing`] and [`explain`].

mod config;
pub mod explain;
mod load;
mod reason;
mod request;
pub mod testing;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use cedar_policy::{
    AuthorizationError, Authorizer, PolicyId, PolicySet, RestrictedExpression, Schema,
};
use regex::RegexSet;
use serde::Serialize;

pub use config::{
    Mode, OrgPolicyConfig, ParamValue, RawOrgPolicyConfig, DEFAULT_POLICY_DIR, DEFAULT_SCHEMA_FILE,
    DEFAULT_TESTS_DIR,
};
pub use explain::{explain, Explanation};
pub use testing::{run_policy_tests, TestReport};

use crate::policy::action::{Action, CreateSpec, UpdateSpec};
use crate::policy::bindings::RoleBinding as Binding;
use crate::policy::decision::Decision;
use crate::policy::principal::{Principal, PrincipalKind};

/// Policy id of the `permit` keygate adds to every set (never reported).
const KEYGATE_PERMIT_ID: &str = "keygate.permit";
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
}

/// What keygate knows about a loaded policy.
#[derive(Debug, Clone)]
struct PolicyMeta {
    id: String,
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
        }
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

impl<'a> OrgInput<'a> {
    /// The input for a request layer 1 has decided: who asks (`principal`, with `bindings` from
    /// [`RoleBinding::all_of`]), what (`action`, `key_id`, the create `spec` or the `update`), and
    /// layer 1's decision and target; the time is now. The facts keygate looks up (owner key
    /// count, target key) and the request's own details (source address, id) are left empty for
    /// the caller to fill in with struct update syntax. The one place both the request path and
    /// `keygate explain` build layer 2's input, so both evaluate the same thing.
    pub fn for_decision(
        principal: &'a Principal,
        bindings: &'a [RoleBinding<'a>],
        action: Action,
        key_id: Option<&'a str>,
        decision: &'a Decision,
        spec: Option<&'a CreateSpec>,
        update: Option<&'a UpdateSpec>,
    ) -> Self {
        let target = &decision.target;
        OrgInput {
            principal_id: principal.id(),
            principal_kind: principal.kind(),
            groups: principal.groups(),
            bindings,
            action,
            key_id,
            owner_id: target.owner_id.as_deref(),
            resource: match (&target.resource_id, target.resource_type) {
                (Some(id), Some(t)) => Some(KeyResource {
                    id,
                    resource_type: t.as_str(),
                    environment: target.environment.as_deref(),
                    cluster: target.kafka_cluster.as_deref(),
                }),
                _ => None,
            },
            display_name: spec
                .map(|s| s.display_name.as_str())
                .or(update.and_then(|u| u.display_name.as_deref())),
            description: spec
                .map(|s| s.description.as_str())
                .or(update.and_then(|u| u.description.as_deref())),
            matrix_allowed: decision.allow,
            matrix_rule: decision.rule,
            owner_key_count: None,
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0),
            source_ip: None,
            request_id: "",
            target_key: None,
        }
    }
}

/// A loaded, validated organisational policy set. Immutable; reload by loading a new one.
pub struct OrgPolicies {
    digest: String,
    schema: Schema,
    /// The policy set per action (index: `request::action_index`), each holding keygate's permit
    /// and only the forbids whose action scope can match that action. Cedar evaluates every
    /// policy of a set, so this keeps, say, delete rules off the create path.
    by_action: [PolicySet; 5],
    /// Per action (same index): whether any organisation policy can apply to it.
    governs: [bool; 5],
    meta: HashMap<PolicyId, PolicyMeta>,
    authorizer: Authorizer,
    pattern_names: Vec<String>,
    pattern_set: RegexSet,
    params: RestrictedExpression,
    groups: HashMap<String, Vec<String>>,
    vocabulary: request::Vocabulary,
}

impl std::fmt::Debug for OrgPolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgPolicies")
            .field("digest", &self.digest)
            .field("policies", &self.meta.len())
            .finish_non_exhaustive()
    }
}

// === impl OrgPolicies ===

impl OrgPolicies {
    /// Reads, checks and strictly validates the schema and every `*.cedar` file in `cfg.dir`.
    /// All problems are returned, each as `file:line: message` where a file is involved.
    pub fn load(cfg: &OrgPolicyConfig) -> Result<OrgPolicies, Vec<LoadError>> {
        let loaded = load::load(cfg)?;
        let vocabulary = request::Vocabulary::new().map_err(|message| {
            vec![LoadError::Config {
                key: "policy".into(),
                message: format!("internal: {message}"),
            }]
        })?;
        let by_action = vocabulary.partition(&loaded.policies).map_err(|message| {
            vec![LoadError::Config {
                key: "policy".into(),
                message: format!("internal: {message}"),
            }]
        })?;
        let governs = std::array::from_fn(|i| {
            by_action.get(i).is_some_and(|set| {
                set.policies()
                    .any(|p| AsRef::<str>::as_ref(p.id()) != KEYGATE_PERMIT_ID)
            })
        });
        Ok(OrgPolicies {
            governs,
            digest: loaded.digest,
            schema: loaded.schema,
            by_action,
            meta: loaded.meta,
            authorizer: Authorizer::new(),
            pattern_names: loaded.pattern_names,
            pattern_set: loaded.pattern_set,
            params: loaded.params,
            groups: cfg.groups.clone(),
            vocabulary,
        })
    }

    /// SHA-256 (hex) of the schema, the policy files and the `[policy]` values that affect
    /// decisions: equal digests decide equally. Not shown on its own anywhere: it is one input of
    /// the policy revision (`policy::revision`), the one id keygate reports.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Whether any loaded policy can apply to `action`: when none can, keygate has nothing to
    /// look up or evaluate for it.
    pub fn governs(&self, action: Action) -> bool {
        self.governs[request::action_index(action)]
    }

    /// The ids of all loaded policies, sorted.
    pub fn policy_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.meta.values().map(|m| m.id.as_str()).collect();
        ids.sort_unstable();
        ids
    }

    /// The mode a policy is in after config overrides, or `None` for an unknown id.
    pub fn mode(&self, id: &str) -> Option<Mode> {
        self.meta.get(&PolicyId::new(id)).map(|m| m.mode)
    }

    /// The `@reason` of a policy as written (placeholders unfilled), or `None` for an unknown id.
    pub fn reason(&self, id: &str) -> Option<&str> {
        self.meta.get(&PolicyId::new(id)).map(|m| m.reason.as_str())
    }

    /// The effective schema (base file + generated fragment).
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Decides one request. Never fails: anything that cannot be evaluated denies.
    pub fn evaluate(&self, input: &OrgInput<'_>) -> OrgDecision {
        let (request, entities) = match self.build_request(input) {
            Ok(built) => built,
            Err(message) => {
                return OrgDecision {
                    allowed: false,
                    errors: vec![Finding {
                        id: INPUT_ERROR_ID.to_owned(),
                        reason: format!("the request cannot be evaluated: {message}"),
                        mode: Mode::Enforce,
                        pointer: None,
                    }],
                    ..OrgDecision::default()
                }
            }
        };
        let policies = &self.by_action[request::action_index(input.action)];
        let response = self.authorizer.is_authorized(&request, policies, &entities);
        let diagnostics = response.diagnostics();
        let mut decision = OrgDecision::default();
        // The reason set holds the forbids that matched (or keygate's permit, if none did).
        for id in diagnostics.reason() {
            if let Some(meta) = self.meta.get(id) {
                match meta.mode {
                    Mode::Enforce => decision.denied.push(meta.finding(input)),
                    Mode::DryRun => decision.would_deny.push(meta.finding(input)),
                }
            }
        }
        for error in diagnostics.errors() {
            let AuthorizationError::PolicyEvaluationError(e) = error;
            let (id, mode) = match self.meta.get(e.policy_id()) {
                Some(meta) => (meta.id.clone(), meta.mode),
                None => (e.policy_id().to_string(), Mode::Enforce),
            };
            decision.errors.push(Finding {
                id,
                reason: format!("policy evaluation failed, so the request is denied: {e}"),
                mode,
                pointer: None,
            });
        }
        decision.denied.sort_by(|a, b| a.id.cmp(&b.id));
        decision.would_deny.sort_by(|a, b| a.id.cmp(&b.id));
        decision.errors.sort_by(|a, b| a.id.cmp(&b.id));
        decision.allowed =
            decision.denied.is_empty() && decision.errors.iter().all(|e| e.mode == Mode::DryRun);
        decision
    }
}

#[cfg(test)]
mod tests;
