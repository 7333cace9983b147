//! The whole decision on one governed request, as a plain function over values: layer 1 (the RBAC
//! matrix, [`super::rbac::decide_matrix`]), layer 2 (the organisation's Cedar policies,
//! [`super::org`]) and the API-key quota ([`super::quota::decide`]), combined into one
//! [`Response`] — the verdict with what decided it and every finding on the way (Cedar's
//! `Response { decision, diagnostics }` is the model).
//!
//! [`decide`] performs no I/O, takes no lock and never sees a credential. What needs I/O is
//! gathered before the call, into [`Facts`]: the owner's key count and the target key (through
//! [`super::source::Fetch`]), the quota counts (from the ledger). Three callers, one function: the
//! decide stage (`stages::decide`), `keygate explain` and `keygate policy replay`, so what replay
//! reports is what the request path would have done.

use std::net::IpAddr;

use super::decision::{pointer, Decision};
use super::org::{KeyResource, Mode, OrgDecision, OrgInput, QuotaInput, RoleBinding, TargetKey};
use super::quota::{self, QuotaConfig};
use super::snapshot::AuthzSnapshot;
use super::source::KeyFacts;
use crate::model::{Action, CreateSpec, DecidedBy, Principal, UpdateSpec};

/// What is asked: who, what, on what, with which body, when and from where.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The verified principal.
    pub principal: &'a Principal,
    /// The governed action.
    pub action: Action,
    /// The key id from the path (get, update, delete).
    pub key_id: Option<&'a str>,
    /// A create's body.
    pub spec: Option<&'a CreateSpec>,
    /// An update's body.
    pub update: Option<&'a UpdateSpec>,
    /// The request id.
    pub request_id: &'a str,
    /// The downstream address.
    pub source_ip: Option<IpAddr>,
    /// Request time, unix seconds.
    pub time: i64,
}

/// What keygate looked up for the decision (never a secret). `None` = not known or not needed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// How many keys the create's owner already holds.
    pub owner_key_count: Option<u64>,
    /// The existing key a get, update or delete is about.
    pub target_key: Option<KeyFacts>,
    /// What the quota guard knows about a create's clusters.
    pub quota: Option<quota::Facts>,
}

/// What decides: the authorization data and policies (a snapshot) and the quota in force.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// Matrix, role bindings, inventory, organisation policies, revision.
    pub snapshot: &'a AuthzSnapshot,
    /// `[quota]`, when configured.
    pub quota: Option<&'a QuotaConfig>,
}

/// One member of a denial's explanation: a denying policy, with its own reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The policy id.
    pub rule_id: String,
    /// Why, for the caller.
    pub detail: String,
    /// The body field at fault, as a JSON pointer, if the policy names one.
    pub pointer: Option<String>,
}

/// The decision with its diagnostics. Never holds a secret.
#[derive(Debug, Clone)]
pub struct Response {
    /// The verdict: forward (`true`) or refuse.
    pub allow: bool,
    /// Set when the decision cannot be made (the quota counts are unknown): fail closed with 503;
    /// `allow` is then `false`.
    pub unavailable: Option<String>,
    /// What decided: the matrix, a policy or the quota guard.
    pub by: DecidedBy,
    /// The deciding matrix rule, then the denying policy ids (or the quota rule).
    pub rule_ids: Vec<String>,
    /// What decided and why, in one sentence.
    pub explanation: String,
    /// The body field that decided (matrix or quota denials).
    pub pointer: Option<&'static str>,
    /// Per denying policy, its own reason (organisation-policy denials).
    pub entries: Vec<Entry>,
    /// Dry-run findings that would have denied (policy ids, the quota rule).
    pub dry_run: Vec<String>,
    /// Warnings of an allowed request.
    pub warnings: Vec<String>,
    /// Layer 1's decision.
    pub matrix: Decision,
    /// Layer 2's decision, when policies were evaluated.
    pub org: Option<OrgDecision>,
    /// The quota guard's decision, when it was consulted.
    pub quota: Option<quota::Decision>,
}

impl Response {
    /// The ids of what denied: the matrix rule, or the denying policies, or the quota rule (the
    /// 403's rule ids; [`Response::rule_ids`] also names the matrix rule that allowed first).
    pub fn denying_rule_ids(&self) -> &[String] {
        match self.by {
            DecidedBy::Matrix => &self.rule_ids,
            _ => self.rule_ids.get(1..).unwrap_or_default(),
        }
    }
}

/// Decides `request` under `rules` with `facts` (see the module doc).
pub fn decide(rules: &Rules<'_>, request: &Request<'_>, facts: &Facts) -> Response {
    let matrix = super::rbac::decide_matrix(
        rules.snapshot,
        request.principal,
        request.action,
        request.spec,
    );
    decide_after(matrix, rules, request, facts)
}

/// [`decide`] with layer 1 already decided (the request path decides it first: a matrix denial
/// needs no lookups, and an unknown cluster may refresh the inventory).
pub fn decide_after(
    matrix: Decision,
    rules: &Rules<'_>,
    request: &Request<'_>,
    facts: &Facts,
) -> Response {
    let mut response = Response {
        allow: matrix.allow,
        unavailable: None,
        by: DecidedBy::Matrix,
        rule_ids: vec![matrix.rule.to_owned()],
        explanation: matrix.explanation.clone(),
        pointer: matrix.pointer,
        entries: Vec::new(),
        dry_run: Vec::new(),
        warnings: Vec::new(),
        matrix,
        org: None,
        quota: None,
    };
    if !response.allow {
        return response;
    }
    if let Some(org) = rules.snapshot.org_policies() {
        let bindings = org_bindings(rules.snapshot, request.principal);
        let input = org_input(request, &bindings, &response.matrix, facts, rules.quota);
        let outcome = org.evaluate(&input);
        response.dry_run = outcome.would_deny.iter().map(|f| f.id.clone()).collect();
        if !outcome.allowed {
            deny_by_policies(&mut response, &outcome);
        }
        response.org = Some(outcome);
        if !response.allow {
            return response;
        }
    }
    if let Some(quota_facts) = &facts.quota {
        let verdict = quota::decide(rules.quota, quota_facts);
        match &verdict {
            quota::Decision::Allow => {}
            quota::Decision::Warn {
                warnings,
                would_deny,
            } => {
                if *would_deny {
                    response.dry_run.push(quota::RULE.to_owned());
                }
                response.warnings.extend(warnings.iter().cloned());
            }
            quota::Decision::Deny(explanation) => {
                response.allow = false;
                response.by = DecidedBy::Quota;
                response.rule_ids.push(quota::RULE.to_owned());
                response.explanation = explanation.clone();
                response.pointer = Some(pointer::RESOURCE_ID);
            }
            quota::Decision::Unknown(why) => {
                response.allow = false;
                response.by = DecidedBy::Quota;
                response.unavailable = Some(why.clone());
            }
        }
        response.quota = Some(verdict);
    }
    response
}

/// The role bindings layer 2 sees as `principal.bindings`: those of the Confluent principal the
/// caller acts as (none without one), then the keygate-side bindings of its external identity.
pub fn org_bindings<'a>(
    snapshot: &'a AuthzSnapshot,
    principal: &'a Principal,
) -> Vec<RoleBinding<'a>> {
    let mut bindings = principal.acting_as().map_or_else(Vec::new, |id| {
        RoleBinding::all_of(snapshot.bindings().of(id))
    });
    if let Some(external) = principal.external() {
        bindings.extend(
            snapshot
                .external_bindings()
                .of_external(external)
                .map(|(_, _, b)| RoleBinding {
                    role: b.role(),
                    crn_pattern: b.pattern().as_str(),
                }),
        );
    }
    bindings
}

/// Layer 2's input: the request, layer 1's decision and the facts looked up. The one place layer
/// 2's input is built (the request path, replay and `keygate explain`'s per-policy rendering).
pub fn org_input<'a>(
    request: &Request<'a>,
    bindings: &'a [RoleBinding<'a>],
    matrix: &'a Decision,
    facts: &'a Facts,
    quota: Option<&QuotaConfig>,
) -> OrgInput<'a> {
    let target = &matrix.target;
    let (spec, update) = (request.spec, request.update);
    OrgInput {
        principal_id: request.principal.id(),
        principal_kind: request.principal.kind(),
        external: request.principal.external(),
        // Without a Confluent principal, its groups are the external identity's.
        groups: match request.principal.external() {
            Some(external) if !request.principal.is_confluent() => &external.groups,
            _ => request.principal.groups(),
        },
        bindings,
        action: request.action,
        key_id: request.key_id,
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
        matrix_allowed: matrix.allow,
        matrix_rule: matrix.rule,
        owner_key_count: facts.owner_key_count,
        time: request.time,
        source_ip: request.source_ip,
        request_id: request.request_id,
        target_key: facts.target_key.as_ref().map(|t| TargetKey {
            id: &t.id,
            owner_id: t.owner_id.as_deref(),
            resource_id: t.resource_id.as_deref(),
            description: &t.description,
            display_name: &t.display_name,
        }),
        quota: facts.quota.as_ref().and_then(|f| {
            f.loads.as_deref().map(|clusters| QuotaInput {
                limit: quota.map(|c| c.kafka_keys_per_cluster),
                clusters,
            })
        }),
    }
}

/// Turns `response` into the organisation policies' denial: every enforced finding and every
/// enforced policy that failed to evaluate, each with its own reason.
fn deny_by_policies(response: &mut Response, outcome: &OrgDecision) {
    let findings: Vec<_> = outcome
        .denied
        .iter()
        .chain(outcome.errors.iter().filter(|f| f.mode == Mode::Enforce))
        .collect();
    response.allow = false;
    response.by = DecidedBy::Policy;
    response.pointer = None;
    response
        .rule_ids
        .extend(findings.iter().map(|f| f.id.clone()));
    response.entries = findings
        .iter()
        .map(|f| Entry {
            rule_id: f.id.clone(),
            detail: format!("denied by {}: {}", f.source(), f.reason),
            pointer: f.pointer.clone(),
        })
        .collect();
    response.explanation = format!(
        "denied by organisation policy: {}",
        findings
            .iter()
            .map(|f| match &f.team {
                None => format!("{} ({})", f.reason, f.id),
                Some(team) => format!("{} ({}, team `{team}`)", f.reason, f.id),
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
}

/// Unix seconds now (the request path's [`Request::time`]).
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

mod report;
#[cfg(test)]
mod tests;
