//! The decision stage: gathers what the decision needs that takes I/O
//! ([`FactSources`](crate::policy::facts::FactSources)), calls the pure
//! [`policy::decide`](crate::policy::decide) and acts on its [`Response`]. Layer 1 comes first
//! (the runtime may refresh the inventory for a cluster it does not know, and a matrix denial
//! needs no lookups). The outcome is recorded in the request state for the access log, audit and
//! traces, logged as one line with the final outcome, counted, and becomes a [`Permit`] for the
//! forwarder, a 403 with the explanation (one `errors[]` member per denying policy) or a 503.

use std::sync::Arc;

use http::Request;

use super::Stage;
use crate::body::Body;
use crate::error::GatewayError;
use crate::guard::GovernedBody;
use crate::model::{Action, DecidedBy, Principal};
use crate::policy::decide::{self as policy, Facts, Response, Rules};
use crate::policy::facts::FactSources;
use crate::policy::input::{DecisionInput, InputOutcome};
use crate::policy::quota;
use crate::policy::runtime::AuthzRuntime;
use crate::policy::{AuthzSnapshot, Permit};
use crate::proxy::Upstream;
use crate::state::{DecisionRecord, RequestState};
use crate::telemetry::metrics::DecisionLabels;
use crate::telemetry::Metrics;

/// See the module doc.
#[derive(Debug)]
pub struct DecideStage {
    authz: Arc<AuthzRuntime>,
    sources: FactSources,
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
            sources: FactSources::new(authz.clone(), upstream, quota.clone()),
            authz,
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
        let (spec, update) = match &state.body {
            Some(GovernedBody::Create(spec)) => (Some(spec), None),
            Some(GovernedBody::Update(update)) => (None, Some(update)),
            _ => (None, None),
        };
        let decided = self.authz.decide(&principal, action, spec).await;
        state.decided_by = Some(DecidedBy::Matrix);
        let (matrix, snapshot) = decided.map_err(GatewayError::AuthzUnavailable)?;
        // Recorded before the lookups, so a failed lookup still reports layer 1's decision.
        state.decision = Some(DecisionRecord::of_matrix(&matrix, snapshot.revision()));
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
        let facts = match matrix.allow {
            // Boxed: lookups happen on allowed requests only; out of the denials' future.
            true => {
                let authorization = headers.get(http::header::AUTHORIZATION);
                Box::pin(
                    self.sources
                        .gather(&snapshot, &matrix, &asked, authorization),
                )
                .await?
            }
            false => Facts::default(),
        };
        let rules = Rules {
            snapshot: &snapshot,
            quota: self.quota.config(),
        };
        // Recorded for `keygate policy replay` (secret-free; see `policy::input`).
        let mut input = self
            .record_inputs
            .then(|| DecisionInput::capture(&asked, &facts, &snapshot, &matrix));
        let response = policy::decide_after(matrix, &rules, &asked, &facts);
        if let Some(input) = input.as_mut() {
            input.outcome = InputOutcome::of(&response);
        }
        response.report_findings(state.id_str(), &self.metrics);
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
            return Err(response.into_denial());
        }
        self.settle(state, action, &response, facts.quota, &snapshot);
        Ok(())
    }

    /// After an allow: counts an allowed create (or a delete, once confirmed) in the key counts —
    /// the forwarder settles the hold with the upstream's answer — and the key being created in
    /// the owner's count, so a burst within the cache lifetime cannot slip past a key-count limit.
    fn settle(
        &self,
        state: &mut RequestState,
        action: Action,
        response: &Response,
        quota: Option<quota::Facts>,
        snapshot: &AuthzSnapshot,
    ) {
        let ledger = self.quota.ledger();
        state.quota_hold = match (action, quota) {
            (Action::CreateApiKey, Some(facts)) if facts.scope != quota::KeyScope::Other => {
                Some(ledger.reserve(facts.scope))
            }
            (Action::DeleteApiKey, _) => state.key_id.as_deref().map(|id| ledger.delete(id)),
            _ => None,
        };
        if action == Action::CreateApiKey && snapshot.org_policies().is_some() {
            if let Some(owner) = response.matrix.target.owner_id.as_deref() {
                self.authz.note_key_created(owner);
            }
        }
        state.permit = Some(Permit::new());
    }

    /// Logs and counts the final decision recorded in the state: one line per decided request.
    fn decided(&self, state: &RequestState, principal: &Principal, action: Action) {
        let Some(record) = state.decision.as_ref() else {
            return;
        };
        record.log(state.id_str(), principal);
        let labels = DecisionLabels {
            action: action.as_str(),
            result: if record.allow { "allow" } else { "deny" },
        };
        self.metrics.decisions.get_or_create(&labels).inc();
    }
}
