//! The decision stage: gathers what the decision needs that takes I/O, calls the pure
//! [`policy::decide`](crate::policy::decide) and acts on its [`Response`]. Layer 1 comes first
//! (the runtime may refresh the inventory for a cluster it does not know, and a matrix denial
//! needs no lookups); then the quota counts, the owner's key count and the target key (through
//! [`policy::source::Fetch`](crate::policy::source::Fetch), with the caller's own credential).
//! The outcome is recorded in the request state for the access log, audit and traces, logged as
//! one line with the final outcome, counted, and becomes a [`Permit`] for the forwarder, a 403
//! with the explanation (one `errors[]` member per denying policy) or a 503.

use std::sync::Arc;

use http::Request;

use super::Stage;
use crate::body::Body;
use crate::error::{Denial, DenialEntry, GatewayError, UpstreamAnswer};
use crate::guard::GovernedBody;
use crate::model::{Action, DecidedBy, Principal};
use crate::policy::decide::{self as policy, Facts, Response, Rules};
use crate::policy::input::{DecisionInput, InputOutcome};
use crate::policy::quota;
use crate::policy::runtime::{AuthzRuntime, UpstreamFetch};
use crate::policy::source::{fetch_key, FetchError};
use crate::policy::{AuthzSnapshot, Decision, Permit};
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
    /// Capture each decision's input for the audit event (`keygate policy replay`); off when no
    /// audit sink would record it.
    record_inputs: bool,
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
            record_inputs: true,
        }
    }

    /// Whether decision inputs are captured (only an audit sink reads them).
    pub fn recording_inputs(mut self, record: bool) -> Self {
        self.record_inputs = record;
        self
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
        let decided = self.decide(request.headers(), state).await;
        crate::telemetry::trace::annotate(|| {
            crate::telemetry::trace::decision_attributes(&state.span_facts())
        });
        decided
    }
}

impl DecideStage {
    async fn decide(
        &self,
        headers: &http::HeaderMap,
        state: &mut RequestState,
    ) -> Result<(), GatewayError> {
        // INVARIANT: the guard sets the action and identity the principal on governed routes.
        let (Some(principal), Some(action)) = (state.principal.clone(), state.action) else {
            return Err(GatewayError::Internal(
                "governed request without principal or action",
            ));
        };
        let spec = match &state.body {
            Some(GovernedBody::Create(spec)) => Some(spec),
            _ => None,
        };
        let decided = self.authz.decide(&principal, action, spec).await;
        state.decided_by = Some(DecidedBy::Matrix);
        let (mut matrix, snapshot) = decided.map_err(GatewayError::AuthzUnavailable)?;
        // An external caller's explanation names both identities (the matrix decided by the
        // Confluent principal it acts as).
        if principal.external().is_some() {
            matrix.explanation = format!("{}: {}", principal.describe(), matrix.explanation);
        }
        // Recorded before the lookups, so a failed lookup still reports layer 1's decision.
        state.decision = Some(DecisionRecord::of_matrix(&matrix, snapshot.revision()));
        let facts = match matrix.allow {
            // Boxed: lookups happen on allowed requests only; out of the denials' future.
            true => Box::pin(self.facts(&snapshot, &matrix, state, headers)).await?,
            false => Facts::default(),
        };
        let (response, mut input) = {
            let update = match &state.body {
                Some(GovernedBody::Update(update)) => Some(update),
                _ => None,
            };
            let spec = match &state.body {
                Some(GovernedBody::Create(spec)) => Some(spec),
                _ => None,
            };
            let rules = Rules {
                snapshot: &snapshot,
                quota: self.quota.config(),
            };
            let asked = policy::Request {
                principal: &principal,
                action,
                key_id: state.key_id.as_deref(),
                spec,
                update,
                request_id: state.id_str(),
                source_ip: Some(state.peer.ip()),
                time: policy::now_unix(),
            };
            // Recorded for `keygate policy replay` (secret-free; see `policy::input`).
            let input = self
                .record_inputs
                .then(|| DecisionInput::capture(&asked, &facts, &snapshot, &matrix));
            (policy::decide_after(matrix, &rules, &asked, &facts), input)
        };
        if let Some(input) = input.as_mut() {
            input.outcome = InputOutcome::of(&response);
        }
        self.report_findings(state, &response);
        if let Some(record) = state.decision.as_mut() {
            record.take(&response);
            record.input = input.map(Box::new);
        }
        state.decided_by = Some(response.by);
        if let Some(why) = response.unavailable {
            return Err(GatewayError::AuthzUnavailable(why));
        }
        self.decided(state, &principal, action);
        if !response.allow {
            return Err(denial(response));
        }
        self.hold_quota(state, action, facts.quota);
        if action == Action::CreateApiKey && snapshot.org_policies().is_some() {
            if let Some(owner) = response.matrix.target.owner_id.as_deref() {
                // Count the key being created now, so a burst within the cache lifetime cannot
                // slip past a key-count limit.
                self.authz.note_key_created(owner);
            }
        }
        state.permit = Some(Permit::new());
        Ok(())
    }

    /// Gathers the facts of an allowed request: what the quota guard knows about a create's
    /// clusters, and — only when organisation policies are configured — the owner's key count
    /// (creates; unknown when it cannot be found out, and policies decide what unknown means) and
    /// the target key (get, update, delete, when a policy can apply to the action), read with the
    /// caller's own credential, exactly as the caller would read it.
    ///
    /// The target lookup has three outcomes: the key (policies decide); an upstream refusal —
    /// 4xx, the key does not exist or the caller may not see it — which is the answer to the
    /// request and is passed through; or a failure (transport, timeout, 5xx, an unreadable
    /// answer), which fails closed with 503 and says that the key could not be checked.
    async fn facts(
        &self,
        snapshot: &AuthzSnapshot,
        matrix: &Decision,
        state: &RequestState,
        headers: &http::HeaderMap,
    ) -> Result<Facts, GatewayError> {
        let mut facts = Facts::default();
        let action = state.action;
        if let (Some(Action::CreateApiKey), Some(resource)) =
            (action, matrix.target.resource_id.as_deref())
        {
            facts.quota = Some(self.quota.facts(resource, snapshot.inventory()));
        }
        let Some(org) = snapshot.org_policies() else {
            return Ok(facts);
        };
        match action {
            Some(Action::CreateApiKey) => {
                if let Some(owner) = matrix.target.owner_id.as_deref() {
                    facts.owner_key_count = self.authz.owner_key_count(owner).await;
                }
            }
            Some(a @ (Action::UpdateApiKey | Action::DeleteApiKey | Action::GetApiKey))
                if org.governs(a) =>
            {
                if let (Some(key_id), Some(auth)) = (
                    state.key_id.as_deref(),
                    headers.get(http::header::AUTHORIZATION),
                ) {
                    let fetch =
                        UpstreamFetch::as_caller(self.upstream.clone(), auth, MAX_LOOKUP_BYTES);
                    let key = fetch_key(&fetch, key_id).await;
                    facts.target_key = Some(key.map_err(|e| lookup_failed(key_id, e))?);
                }
            }
            _ => {}
        }
        Ok(facts)
    }

    /// Logs and counts dry-run findings, policy evaluation errors and the quota guard's say.
    fn report_findings(&self, state: &RequestState, response: &Response) {
        let id = state.id_str();
        if let Some(org) = &response.org {
            for finding in &org.would_deny {
                tracing::info!(request.id = %id, policy.id = %finding.id, reason = %finding.reason, "Policy would deny (dry-run)");
                let labels = PolicyLabels {
                    policy: finding.id.clone(),
                };
                self.metrics.would_deny.get_or_create(&labels).inc();
            }
            for finding in &org.errors {
                tracing::warn!(request.id = %id, policy.id = %finding.id, reason = %finding.reason, "Policy evaluation error");
                let labels = PolicyLabels {
                    policy: finding.id.clone(),
                };
                self.metrics.policy_errors.get_or_create(&labels).inc();
            }
        }
        let result = match &response.quota {
            None | Some(quota::Decision::Allow) => return,
            Some(quota::Decision::Warn {
                warnings,
                would_deny,
            }) => {
                for warning in warnings {
                    tracing::warn!(request.id = %id, reason = %warning, "API-key quota warning");
                }
                if *would_deny {
                    "would_deny"
                } else {
                    "warn"
                }
            }
            Some(quota::Decision::Deny(_)) => "deny",
            Some(quota::Decision::Unknown(_)) => "unknown",
        };
        let labels = ResultLabels { result };
        self.metrics.quota_decisions.get_or_create(&labels).inc();
    }

    /// Counts an allowed create (or a delete, once confirmed) in the key counts; the forwarder
    /// settles the hold with the upstream's answer.
    fn hold_quota(&self, state: &mut RequestState, action: Action, facts: Option<quota::Facts>) {
        let ledger = self.quota.ledger();
        state.quota_hold = match (action, facts) {
            (Action::CreateApiKey, Some(facts)) if facts.scope != quota::KeyScope::Other => {
                Some(ledger.reserve(facts.scope))
            }
            (Action::DeleteApiKey, _) => state.key_id.as_deref().map(|id| ledger.delete(id)),
            _ => None,
        };
    }

    /// Logs and counts the final decision recorded in the state: one line per decided request.
    fn decided(&self, state: &RequestState, principal: &Principal, action: Action) {
        let Some(record) = state.decision.as_ref() else {
            return;
        };
        log_decision(state, principal, record);
        let result = if record.allow { "allow" } else { "deny" };
        let labels = DecisionLabels {
            action: action.as_str(),
            result,
        };
        self.metrics.decisions.get_or_create(&labels).inc();
    }
}

/// Largest key lookup response read.
const MAX_LOOKUP_BYTES: usize = 64 * 1024;

/// The 403 of a denial.
fn denial(response: Response) -> GatewayError {
    let rule_ids = response.denying_rule_ids().to_vec();
    GatewayError::Denied(Box::new(Denial {
        explanation: response.explanation,
        rule_ids,
        pointer: response.pointer,
        by: response.by,
        entries: response
            .entries
            .into_iter()
            .map(|e| DenialEntry {
                rule_id: e.rule_id,
                detail: e.detail,
                pointer: e.pointer,
            })
            .collect(),
    }))
}

/// A failed target lookup: the upstream's own refusal, passed through, or 503.
fn lookup_failed(key_id: &str, error: FetchError) -> GatewayError {
    let why = match error {
        FetchError::Refused { answer, .. } => {
            return GatewayError::LookupRefused(Box::new(UpstreamAnswer::new(
                key_id,
                answer.status,
                &answer.headers,
                answer.body,
            )))
        }
        FetchError::Transport { reason, .. } => reason,
        FetchError::Status { status, .. } => format!("the upstream answered {status}"),
        FetchError::Shape { .. } | FetchError::Pagination { .. } => {
            "the upstream's answer is not JSON".to_owned()
        }
    };
    GatewayError::AuthzUnavailable(format!(
        "could not look up API key `{key_id}`, so keygate could not check it against the organisation policies (for example whether it is protected): {why}"
    ))
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
