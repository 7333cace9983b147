//! The decision stage: layer 1 (the RBAC matrix) on governed routes, then layer 2 (the
//! organisation's policies), then a [`Permit`] for the forwarder or a 403 with the explanation —
//! one `errors[]` member per denying policy. Every decision is logged as one structured line with
//! the final outcome (an allow by the matrix that a policy then denies is logged as the denial it
//! is), recorded in the request context for the audit event, and set on the stage's trace span
//! (principal, action, resource type, decision, rule ids, policy revision).

use std::sync::Arc;

use http::Request;

use super::Stage;
use crate::body::Body;
use crate::error::{Denial, DenialEntry, GatewayError, UpstreamAnswer};
use crate::guard::GovernedBody;
use crate::model::DecidedBy;
use crate::model::Principal;
use crate::model::{Action, CreateSpec};
use crate::policy::org::{Mode, OrgInput, QuotaInput, RoleBinding as OrgBinding, TargetKey};
use crate::policy::quota;
use crate::policy::runtime::AuthzRuntime;
use crate::policy::Permit;
use crate::proxy::Upstream;
use crate::state::{DecisionRecord, RequestState};
use crate::telemetry::metrics::{DecisionLabels, PolicyLabels, ResultLabels};
use crate::telemetry::Metrics;

/// See the module doc.
#[derive(Debug)]
pub struct DecideStage {
    authz: Arc<AuthzRuntime>,
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    quota: Arc<quota::Guard>,
}

impl DecideStage {
    /// The stage over the live authorization data and key counts.
    pub fn new(
        authz: Arc<AuthzRuntime>,
        upstream: Arc<Upstream>,
        metrics: Arc<Metrics>,
        quota: Arc<quota::Guard>,
    ) -> Self {
        DecideStage {
            authz,
            upstream,
            metrics,
            quota,
        }
    }
}

impl Stage for DecideStage {
    fn name(&self) -> &'static str {
        "decide"
    }

    fn applies_to(&self, _request: &Request<Body>, state: &RequestState) -> bool {
        state.is_governed()
    }

    async fn apply(
        &self,
        request: &mut Request<Body>,
        state: &mut RequestState,
    ) -> Result<(), GatewayError> {
        let decided = self.decide(request, state).await;
        // The final decision (matrix, then organisation policies), on this stage's span.
        crate::telemetry::trace::annotate(|| {
            crate::telemetry::trace::decision_attributes(&state.span_facts())
        });
        decided
    }
}

impl DecideStage {
    async fn decide(
        &self,
        request: &mut Request<Body>,
        state: &mut RequestState,
    ) -> Result<(), GatewayError> {
        let (principal, action) = (state.principal.clone(), state.action);
        // INVARIANT: the guard sets the action and identity sets the principal on governed routes;
        // if either is missing, something upstream of here is broken: refuse.
        let (Some(principal), Some(action)) = (principal, action) else {
            return Err(GatewayError::Internal(
                "governed request without principal or action",
            ));
        };
        let spec: Option<&CreateSpec> = match &state.body {
            Some(GovernedBody::Create(spec)) => Some(spec),
            _ => None,
        };
        let (mut decision, snapshot) = match self.authz.decide(&principal, action, spec).await {
            Ok(decided) => decided,
            Err(reason) => {
                state.decided_by = Some(DecidedBy::Matrix);
                return Err(GatewayError::AuthzUnavailable(reason));
            }
        };
        // An external caller's explanation names both identities (the matrix decided by the
        // Confluent principal it acts as).
        if principal.external().is_some() {
            decision.explanation = format!("{}: {}", principal.describe(), decision.explanation);
        }
        let revision = snapshot.revision().clone();
        let record = DecisionRecord {
            allow: decision.allow,
            rule_ids: vec![decision.rule.to_string()],
            // A denial still needs its explanation for the error body; an allow does not.
            explanation: if decision.allow {
                std::mem::take(&mut decision.explanation)
            } else {
                decision.explanation.clone()
            },
            target: decision.target.clone(),
            dry_run: Vec::new(),
            revision: Some(revision),
            warnings: Vec::new(),
        };
        {
            state.decided_by = Some(DecidedBy::Matrix);
            state.decision = Some(record);
        }
        if !decision.allow {
            self.decided(state, &principal, action);
            return Err(GatewayError::Denied(Box::new(Denial {
                explanation: decision.explanation,
                rule_ids: vec![decision.rule.to_string()],
                pointer: decision.pointer,
                by: DecidedBy::Matrix,
                entries: Vec::new(),
            })));
        }
        // What the quota guard knows about a create's clusters (also `context.quota` for policies).
        let quota_facts = match (action, decision.target.resource_id.as_deref()) {
            (Action::CreateApiKey, Some(resource)) => {
                Some(self.quota.facts(resource, snapshot.inventory()))
            }
            _ => None,
        };
        if let Some(org) = snapshot.org_policies() {
            let update = match &state.body {
                Some(GovernedBody::Update(update)) => Some(update.clone()),
                _ => None,
            };
            // Boxed: upstream lookups for org policies only; out of the matrix-only future.
            let facts = Box::pin(self.facts(
                org,
                action,
                &decision,
                state.key_id.as_deref(),
                request.headers(),
            ))
            .await?;
            let bindings = OrgBinding::all_of(snapshot.bindings().of(principal.id()));
            let key_id = state.key_id.clone();
            let input = OrgInput {
                owner_key_count: facts.owner_key_count,
                source_ip: Some(state.peer.ip()),
                request_id: state.id_str(),
                target_key: facts.target.as_ref().map(|t| TargetKey {
                    id: &t.id,
                    owner_id: t.owner_id.as_deref(),
                    resource_id: t.resource_id.as_deref(),
                    description: &t.description,
                    display_name: &t.display_name,
                }),
                quota: quota_facts.as_ref().and_then(|f| {
                    f.loads.as_deref().map(|clusters| QuotaInput {
                        limit: self.quota.config().map(|c| c.kafka_keys_per_cluster),
                        clusters,
                    })
                }),
                ..OrgInput::for_decision(
                    &principal,
                    &bindings,
                    action,
                    key_id.as_deref(),
                    &decision,
                    spec,
                    update.as_ref(),
                )
            };
            let outcome = org.evaluate(&input);
            for finding in &outcome.would_deny {
                tracing::info!(request.id = %state.id_str(), policy.id = %finding.id, reason = %finding.reason, "Policy would deny (dry-run)");
                self.metrics
                    .would_deny
                    .get_or_create(&PolicyLabels {
                        policy: finding.id.clone(),
                    })
                    .inc();
            }
            for finding in &outcome.errors {
                tracing::warn!(request.id = %state.id_str(), policy.id = %finding.id, reason = %finding.reason, "Policy evaluation error");
                self.metrics
                    .policy_errors
                    .get_or_create(&PolicyLabels {
                        policy: finding.id.clone(),
                    })
                    .inc();
            }
            {
                if let Some(record) = state.decision.as_mut() {
                    record.dry_run = outcome.would_deny.iter().map(|f| f.id.clone()).collect();
                }
            }
            if !outcome.allowed {
                let findings: Vec<_> = outcome
                    .denied
                    .iter()
                    .chain(outcome.errors.iter().filter(|f| f.mode == Mode::Enforce))
                    .collect();
                let rule_ids: Vec<String> = findings.iter().map(|f| f.id.clone()).collect();
                let entries: Vec<DenialEntry> = findings
                    .iter()
                    .map(|f| DenialEntry {
                        rule_id: f.id.clone(),
                        detail: format!("denied by {}: {}", f.source(), f.reason),
                        pointer: f.pointer.clone(),
                    })
                    .collect();
                let explanation = format!(
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
                {
                    state.decided_by = Some(DecidedBy::Policy);
                    if let Some(record) = state.decision.as_mut() {
                        record.allow = false;
                        record.rule_ids.extend(rule_ids.iter().cloned());
                        record.explanation = explanation.clone();
                    }
                }
                self.decided(state, &principal, action);
                return Err(GatewayError::Denied(Box::new(Denial {
                    explanation,
                    rule_ids,
                    pointer: None,
                    by: DecidedBy::Policy,
                    entries,
                })));
            }
        }
        if let Some(facts) = &quota_facts {
            self.check_quota(state, &principal, action, facts)?;
        }
        self.hold_quota(state, action, quota_facts);
        self.decided(state, &principal, action);
        if action == Action::CreateApiKey && snapshot.org_policies().is_some() {
            if let Some(owner) = decision.target.owner_id.as_deref() {
                // Count the key being created now, so a burst within the cache lifetime cannot
                // slip past a key-count limit.
                self.authz.note_key_created(owner);
            }
        }
        state.permit = Some(Permit::new());
        Ok(())
    }
}

impl DecideStage {
    /// The quota guard's say on an allowed create (`policy::quota`): a denial (403) past the
    /// quota, 503 when the counts are unknown, or warnings recorded with the decision.
    fn check_quota(
        &self,
        state: &mut RequestState,
        principal: &Principal,
        action: Action,
        facts: &quota::Facts,
    ) -> Result<(), GatewayError> {
        let count = |result: &'static str| {
            self.metrics
                .quota_decisions
                .get_or_create(&ResultLabels { result })
                .inc();
        };
        match self.quota.decide(facts) {
            quota::Decision::Allow => Ok(()),
            quota::Decision::Warn {
                warnings,
                would_deny,
            } => {
                count(if would_deny { "would_deny" } else { "warn" });
                for warning in &warnings {
                    tracing::warn!(request.id = %state.id_str(), reason = %warning, "API-key quota warning");
                }
                if let Some(record) = state.decision.as_mut() {
                    if would_deny {
                        record.dry_run.push(quota::RULE.to_owned());
                    }
                    record.warnings.extend(warnings);
                }
                Ok(())
            }
            quota::Decision::Deny(explanation) => {
                count("deny");
                {
                    state.decided_by = Some(DecidedBy::Quota);
                    if let Some(record) = state.decision.as_mut() {
                        record.allow = false;
                        record.rule_ids.push(quota::RULE.to_owned());
                        record.explanation = explanation.clone();
                    }
                }
                self.decided(state, principal, action);
                Err(GatewayError::Denied(Box::new(Denial {
                    explanation,
                    rule_ids: vec![quota::RULE.to_owned()],
                    pointer: Some(crate::policy::decision::pointer::RESOURCE_ID),
                    by: DecidedBy::Quota,
                    entries: Vec::new(),
                })))
            }
            quota::Decision::Unknown(why) => {
                count("unknown");
                state.decided_by = Some(DecidedBy::Quota);
                Err(GatewayError::AuthzUnavailable(why))
            }
        }
    }

    /// Counts an allowed create (or a delete, once confirmed) in the key counts; the forwarder
    /// settles the hold with the upstream's answer.
    fn hold_quota(&self, state: &mut RequestState, action: Action, facts: Option<quota::Facts>) {
        let ledger = self.quota.ledger();
        let hold = match (action, facts) {
            (Action::CreateApiKey, Some(facts)) if facts.scope != quota::KeyScope::Other => {
                Some(ledger.reserve(facts.scope))
            }
            (Action::DeleteApiKey, _) => {
                let key_id = state.key_id.clone();
                key_id.map(|id| ledger.delete(&id))
            }
            _ => None,
        };
        if let Some(hold) = hold {
            state.quota_hold = Some(hold);
        }
    }

    /// Logs and counts the final decision recorded in the context: one line per decided request.
    fn decided(&self, state: &RequestState, principal: &Principal, action: Action) {
        let Some(record) = state.decision.as_ref() else {
            return;
        };
        log_decision(state, principal, record);
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                action: action.as_str(),
                result: if record.allow { "allow" } else { "deny" },
            })
            .inc();
    }
}

/// What keygate looked up for layer 2 (never a secret).
#[derive(Debug, Default)]
struct Facts {
    owner_key_count: Option<u64>,
    target: Option<TargetFacts>,
}

#[derive(Debug)]
struct TargetFacts {
    id: String,
    owner_id: Option<String>,
    resource_id: Option<String>,
    description: String,
    display_name: String,
}

/// Largest key lookup response read.
const MAX_LOOKUP_BYTES: usize = 64 * 1024;

impl DecideStage {
    /// Looks up what organisation policies may need: the owner's key count (creates; unknown
    /// when it cannot be found out, and policies decide what unknown means) and the target key
    /// (get, update, delete — only when a policy can apply to the action), read with the caller's
    /// own credential, exactly as the caller would read it.
    ///
    /// The target lookup has three outcomes: the key (policies decide); an upstream refusal — 4xx,
    /// the key does not exist or the caller may not see it — which is the answer to the request
    /// and is passed through, since the upstream would refuse the request itself the same way;
    /// or a failure (transport, timeout, 5xx, an unreadable answer), which fails closed with 503
    /// and says that the key could not be checked.
    async fn facts(
        &self,
        org: &crate::policy::org::OrgPolicies,
        action: Action,
        decision: &crate::policy::Decision,
        key_id: Option<&str>,
        headers: &http::HeaderMap,
    ) -> Result<Facts, GatewayError> {
        let mut facts = Facts::default();
        match action {
            Action::CreateApiKey => {
                if let Some(owner) = decision.target.owner_id.as_deref() {
                    facts.owner_key_count = self.authz.owner_key_count(owner).await;
                }
            }
            Action::UpdateApiKey | Action::DeleteApiKey | Action::GetApiKey
                if org.governs(action) =>
            {
                if let (Some(key_id), Some(auth)) =
                    (key_id, headers.get(http::header::AUTHORIZATION))
                {
                    facts.target = Some(self.target(key_id, auth).await?);
                }
            }
            Action::UpdateApiKey | Action::DeleteApiKey | Action::GetApiKey => {}
            Action::ListApiKeys => {}
        }
        Ok(facts)
    }

    async fn target(
        &self,
        key_id: &str,
        auth: &http::HeaderValue,
    ) -> Result<TargetFacts, GatewayError> {
        let unavailable = |why: String| {
            GatewayError::AuthzUnavailable(format!(
                "could not look up API key `{key_id}`, so keygate could not check it against the organisation policies (for example whether it is protected): {why}"
            ))
        };
        let path = format!("/iam/v2/api-keys/{key_id}");
        let (status, headers, body) = self
            .upstream
            .get(&path, auth, MAX_LOOKUP_BYTES)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if status.is_client_error() {
            return Err(GatewayError::LookupRefused(Box::new(UpstreamAnswer::new(
                key_id, status, &headers, body,
            ))));
        }
        if status != http::StatusCode::OK {
            return Err(unavailable(format!(
                "the upstream answered {}",
                status.as_u16()
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| unavailable("the upstream's answer is not JSON".into()))?;
        let spec = &v["spec"];
        let text = |p: &serde_json::Value| p.as_str().map(str::to_string);
        Ok(TargetFacts {
            id: key_id.to_string(),
            owner_id: text(&spec["owner"]["id"]),
            resource_id: text(&spec["resource"]["id"]),
            description: text(&spec["description"]).unwrap_or_default(),
            display_name: text(&spec["display_name"]).unwrap_or_default(),
        })
    }
}

fn log_decision(state: &RequestState, principal: &Principal, record: &DecisionRecord) {
    let target = &record.target;
    tracing::info!(
        request.id = %state.id_str(),
        principal.id = %principal.id(),
        principal.auth = principal.auth().as_str(),
        decision = if record.allow { "allow" } else { "deny" },
        rule.ids = ?record.rule_ids,
        target.owner = target.owner_id.as_deref(),
        target.resource = target.resource_id.as_deref(),
        target.resource_type = target.resource_type.map(|t| t.as_str()),
        target.environment = target.environment.as_deref(),
        explanation = %record.explanation,
        policy.revision = record.revision.as_deref().map(String::as_str),
        "Decision"
    );
}
