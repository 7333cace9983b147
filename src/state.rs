//! Everything keygate learns about one request, in one place with one owner.
//!
//! The pipeline's root (`app::Pipeline`) creates a [`RequestState`] when a request arrives and
//! lends it, `&mut`, to every stage in turn (as pingora hands `&mut CTX` to every phase): the guard
//! records the route and the parsed body, identity the principal, the decision stage its decision
//! and permit, the forwarder the upstream's status. The root then hands it to the error rescue,
//! the audit record and, with the response, to the access log, which is written when the last
//! byte is sent. If the caller goes away first, the root's drop guard takes it over (see
//! `app.rs`). No locks: nothing else holds it.
//!
//! Request extensions keep only what belongs to the HTTP request itself (the peer address the
//! server saw, the egress listener's mark). Nothing in here is a credential.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Response, StatusCode};

use crate::audit::Deferred;
use crate::body::Body;
use crate::error::Rescued;
use crate::guard::GovernedBody;
use crate::model::{Action, DecidedBy, GovernedRoute, Principal, RouteClass, Target};
use crate::policy::quota::Hold;
use crate::policy::Permit;
use crate::proxy::ProxyError;
use crate::telemetry::trace::{DecisionFacts, SpanFacts};

/// What the stages learned about one request.
#[derive(Debug)]
pub struct RequestState {
    /// The request id (accepted from the caller or minted).
    pub id: HeaderValue,
    /// The downstream peer.
    pub peer: SocketAddr,
    /// The method.
    pub method: Method,
    /// When keygate started on this request.
    pub started: Instant,
    /// Set when the request came through the egress listener.
    pub egress: Option<EgressRequest>,
    /// Governed or not (set by the guard stage; governed also when the guard refused a request
    /// aimed at the governed endpoints).
    pub route: RouteClass,
    /// The governed action, if any (set before the guard's checks, so a refusal names it).
    pub action: Option<Action>,
    /// For get/update/delete: the key the request is about.
    pub key_id: Option<String>,
    /// A governed request that passed the guard: its route (the stages after the guard act on
    /// these only).
    pub governed: Option<GovernedRoute>,
    /// Its body, parsed strictly (create and update).
    pub body: Option<GovernedBody>,
    /// The verified principal, if any.
    pub principal: Option<Arc<Principal>>,
    /// The decision, once one was made (allow or deny).
    pub decision: Option<DecisionRecord>,
    /// The decision stage's proof that a governed request may be forwarded.
    pub permit: Option<Permit>,
    /// The stage that ended or decided the request.
    pub decided_by: Option<DecidedBy>,
    /// The upstream's status, when the request was forwarded.
    pub upstream_status: Option<StatusCode>,
    /// The key a forwarded create made, read from the upstream's answer (never its secret).
    pub created_key_id: Option<String>,
    /// The kind of error that ended the request inside keygate (an error code), if any.
    pub error_code: Option<&'static str>,
    /// The error's detail, already free of secrets.
    pub error_detail: Option<String>,
    /// An allowed create passed the audit gate: it is forwarded (or about to be), so if the caller
    /// goes away the exchange is followed to its end for the audit record.
    pub forwarding: bool,
    /// The downstream connection went away before the response was handed over.
    pub client_gone: bool,
    /// The `response_complete` record is queued (`stages::audit::record`).
    pub recorded: bool,
    /// A create's `request_received` record, queued before forwarding and awaited before the
    /// response is released (see `stages::audit`).
    pub deferred_audit: Option<Deferred>,
    /// An allowed create's (or delete's) place in the key counts, settled with the upstream's
    /// answer (see `policy::quota`).
    pub quota_hold: Option<Hold>,
    /// A forwarded create's upstream exchange, running on its own task so that it ends the same
    /// way whether or not the caller stays (see `proxy::forward`).
    pub in_flight: Option<InFlight>,
    /// A Terraform OAuth token exchange whose subject token keygate verified: the access token in
    /// the answer is bound to `principal` (`identity::oauth`).
    pub oauth_exchange: bool,
}

/// What the decision stages concluded, for the access log, audit and traces. No secrets.
#[derive(Debug, Clone, Default)]
pub struct DecisionRecord {
    /// Allowed (possibly with dry-run findings) or denied.
    pub allow: bool,
    /// The deciding matrix rule and policy ids.
    pub rule_ids: Vec<String>,
    /// The explanation given to the caller.
    pub explanation: String,
    /// What a create targets (owner, resource, environment).
    pub target: Target,
    /// Dry-run policies that would have denied.
    pub dry_run: Vec<String>,
    /// The revision of the policy set that decided.
    pub revision: Option<Arc<String>>,
    /// Warnings of an allowed request (a cluster near its API-key quota).
    pub warnings: Vec<String>,
    /// What the decision was made from, for `keygate policy replay` (no secrets; absent when the
    /// decision stopped short of the policies, e.g. a failed lookup).
    pub input: Option<Box<crate::policy::input::DecisionInput>>,
}

impl DecisionRecord {
    /// The decision's log line (one per decided request) for request `request_id`.
    pub fn log(&self, request_id: &str, principal: &Principal) {
        let target = &self.target;
        tracing::info!(
            request.id = %request_id,
            principal.id = %principal.id(),
            principal.auth = principal.auth().as_str(),
            decision = if self.allow { "allow" } else { "deny" },
            rule.ids = ?self.rule_ids,
            target.owner = target.owner_id.as_deref(),
            target.resource = target.resource_id.as_deref(),
            target.resource_type = target.resource_type.map(|t| t.as_str()),
            target.environment = target.environment.as_deref(),
            explanation = %self.explanation,
            policy.revision = self.revision.as_deref().map(String::as_str),
            "Decision"
        );
    }

    /// Layer 1's decision, before anything else decided.
    pub fn of_matrix(matrix: &crate::policy::Decision, revision: &Arc<String>) -> DecisionRecord {
        DecisionRecord {
            allow: matrix.allow,
            rule_ids: vec![matrix.rule.to_owned()],
            explanation: matrix.explanation.clone(),
            target: matrix.target.clone(),
            dry_run: Vec::new(),
            revision: Some(revision.clone()),
            warnings: Vec::new(),
            input: None,
        }
    }

    /// Takes the whole decision's outcome. A decision that could not be made (503) is an error,
    /// not a denial: the record keeps the allow of the layers that did decide.
    pub fn take(&mut self, response: &crate::policy::Response) {
        self.allow = response.allow || response.unavailable.is_some();
        self.rule_ids.clone_from(&response.rule_ids);
        self.explanation.clone_from(&response.explanation);
        self.dry_run.clone_from(&response.dry_run);
        self.warnings.clone_from(&response.warnings);
    }
}

impl RequestState {
    /// A fresh state for a request that came through the egress listener (`egress`) or not.
    pub fn new(
        id: HeaderValue,
        peer: SocketAddr,
        method: Method,
        egress: Option<EgressRequest>,
    ) -> RequestState {
        RequestState {
            id,
            peer,
            method,
            started: Instant::now(),
            egress,
            route: RouteClass::Ungoverned,
            action: None,
            key_id: None,
            governed: None,
            body: None,
            principal: None,
            decision: None,
            permit: None,
            decided_by: None,
            upstream_status: None,
            created_key_id: None,
            error_code: None,
            error_detail: None,
            forwarding: false,
            client_gone: false,
            recorded: false,
            deferred_audit: None,
            quota_hold: None,
            in_flight: None,
            oauth_exchange: false,
        }
    }

    /// The request id as text (always visible ASCII, see `stages::observe`).
    pub fn id_str(&self) -> &str {
        self.id.to_str().unwrap_or("-")
    }

    /// What the server span and the decision's trace attributes say about this request.
    pub fn span_facts(&self) -> SpanFacts<'_> {
        SpanFacts {
            route: self.route,
            action: self.action,
            principal_id: self.principal.as_deref().map(Principal::id),
            decided_by: self.decided_by,
            error_code: self.error_code,
            decision: self.decision.as_ref().map(|d| DecisionFacts {
                allow: d.allow,
                rule_ids: &d.rule_ids,
                resource_type: d.target.resource_type,
                dry_run: &d.dry_run,
                revision: d.revision.as_deref().map(String::as_str),
            }),
        }
    }

    /// Notes the error that ended the request (`error::rescue`), for the access log, audit and
    /// traces.
    pub fn rescued(&mut self, rescued: Rescued) {
        self.error_code = Some(rescued.code);
        self.error_detail = Some(rescued.detail);
        // The stage that ended the request is what decided it, even after an allow (an upstream
        // failure, no durable audit).
        if let Some(by) = rescued.decided_by {
            self.decided_by = Some(by);
        }
    }

    /// Whether the request is governed and passed the guard.
    pub fn is_governed(&self) -> bool {
        self.governed.is_some()
    }

    /// A state for tests of a single stage.
    #[cfg(test)]
    pub fn for_test(method: Method) -> RequestState {
        RequestState::new(
            HeaderValue::from_static("test-request"),
            SocketAddr::from(([127, 0, 0, 1], 1)),
            method,
            None,
        )
    }
}

/// The socket address of the downstream peer, put in request extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Marks a request that arrived through the egress listener (put in its extensions by that
/// listener): the `CONNECT` target and the proxy-authenticated workload. Such a request keeps the
/// upstream's names: its responses' links are not rewritten to keygate's own origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRequest {
    /// The intercepted host.
    pub host: Arc<str>,
    /// Its port.
    pub port: u16,
    /// The workload named by `Proxy-Authorization`, if proxy authentication is on.
    pub workload: Option<Arc<str>>,
}

/// A forwarded create's upstream exchange, running on its own task (`proxy::forward`).
#[derive(Debug)]
pub struct InFlight(pub(crate) tokio::sync::oneshot::Receiver<Landed>);

/// How a forwarded create's exchange ended.
#[derive(Debug)]
pub struct Landed {
    /// The upstream's status, when it answered.
    pub status: Option<StatusCode>,
    /// The answer, its body read whole, or why there is none.
    pub result: Result<Response<Body>, ProxyError>,
    /// The key it created (from the answer; never its secret).
    pub created_key_id: Option<String>,
}
