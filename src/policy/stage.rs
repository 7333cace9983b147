//! The decision stage: layer 1 (the RBAC matrix) on governed routes, then a [`Permit`] for the
//! forwarder or a 403 with the explanation. Every decision is logged as one structured line,
//! recorded in the request context for the audit event, and set on the stage's trace span
//! (principal, action, resource type, decision, rule ids, policy revision).

use std::sync::Arc;

use http::Request;

use super::action::CreateSpec;
use super::principal::Principal;
use super::runtime::AuthzRuntime;
use super::Permit;
use crate::audit::DecidedBy;
use crate::body::Body;
use crate::context::{DecisionRecord, RequestContext, RouteClass};
use crate::error::{Denial, GatewayError};
use crate::guard::GovernedBody;
use crate::stage::Stage;
use crate::telemetry::metrics::DecisionLabels;
use crate::telemetry::Metrics;

/// See the module doc.
#[derive(Debug)]
pub struct DecideStage {
    authz: Arc<AuthzRuntime>,
    metrics: Arc<Metrics>,
}

impl DecideStage {
    /// The stage over the live authorization data.
    pub fn new(authz: Arc<AuthzRuntime>, metrics: Arc<Metrics>) -> Self {
        DecideStage { authz, metrics }
    }
}

impl Stage for DecideStage {
    fn name(&self) -> &'static str {
        "decide"
    }

    async fn apply(
        &self,
        mut request: Request<Body>,
        ctx: Arc<RequestContext>,
    ) -> Result<Request<Body>, GatewayError> {
        let (principal, action) = {
            let state = ctx.state();
            if state.route != RouteClass::Governed {
                return Ok(request);
            }
            (state.principal.clone(), state.action)
        };
        // INVARIANT: the guard sets the action and identity sets the principal on governed routes;
        // if either is missing, something upstream of here is broken: refuse.
        let (Some(principal), Some(action)) = (principal, action) else {
            return Err(GatewayError::Internal(
                "governed request without principal or action",
            ));
        };
        let spec: Option<&CreateSpec> = match request.extensions().get::<GovernedBody>() {
            Some(GovernedBody::Create(spec)) => Some(spec),
            _ => None,
        };
        let (decision, revision) = match self.authz.decide(&principal, action, spec).await {
            Ok(decided) => decided,
            Err(reason) => {
                ctx.state().decided_by = Some(DecidedBy::Matrix);
                return Err(GatewayError::AuthzUnavailable(reason));
            }
        };
        log_decision(&ctx, &principal, &decision, &revision);
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                action: action.as_str(),
                result: if decision.allow { "allow" } else { "deny" },
            })
            .inc();
        let record = DecisionRecord {
            allow: decision.allow,
            rule_ids: vec![decision.rule.to_string()],
            explanation: decision.explanation.clone(),
            target: decision.target.clone(),
            dry_run: Vec::new(),
            revision: Some(revision),
        };
        crate::telemetry::trace::annotate(|| {
            crate::telemetry::trace::decision_attributes(
                principal.id(),
                action,
                record.target.resource_type.map(|t| t.as_str()),
                record.allow,
                &record.rule_ids,
                record.revision.as_deref().map(String::as_str),
            )
        });
        {
            let mut state = ctx.state();
            state.decided_by = Some(DecidedBy::Matrix);
            state.decision = Some(record);
        }
        if !decision.allow {
            return Err(GatewayError::Denied(Box::new(Denial {
                explanation: decision.explanation,
                rule_ids: vec![decision.rule.to_string()],
                pointer: decision.pointer,
                by: DecidedBy::Matrix,
            })));
        }
        request.extensions_mut().insert(Permit::new());
        Ok(request)
    }
}

fn log_decision(
    ctx: &RequestContext,
    principal: &Principal,
    decision: &super::Decision,
    revision: &str,
) {
    let target = &decision.target;
    tracing::info!(
        request.id = %ctx.id_str(),
        principal.id = %principal.id(),
        principal.auth = principal.auth().as_str(),
        decision = if decision.allow { "allow" } else { "deny" },
        rule.id = decision.rule,
        target.owner = target.owner_id.as_deref(),
        target.resource = target.resource_id.as_deref(),
        target.resource_type = target.resource_type.map(|t| t.as_str()),
        target.environment = target.environment.as_deref(),
        explanation = %decision.explanation,
        policy.revision = revision,
        "Decision"
    );
}
