//! Per-request state shared by the pipeline stages.
//!
//! The outermost stage creates a [`RequestContext`] and puts an `Arc` of it in the request
//! extensions; inner stages record what they learn (route, principal, action, decision, upstream
//! status, the error that stopped the request) and the outer stages read it when the response is
//! complete, for the access log, metrics and audit — also when an inner stage failed and the request
//! itself is gone. Nothing in here is a credential.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use http::{HeaderValue, Method, StatusCode};

use crate::model::Action;
pub use crate::model::DecidedBy;
use crate::model::Principal;
use crate::model::RouteClass;
use crate::model::Target;

/// What the stages learned about one request.
#[derive(Debug, Default, Clone)]
pub struct ContextState {
    /// Governed or not (set by the guard stage).
    pub route: RouteClass,
    /// The governed action, if any.
    pub action: Option<Action>,
    /// The verified principal, if any.
    pub principal: Option<Arc<Principal>>,
    /// For get/update/delete: the key the request is about.
    pub key_id: Option<String>,
    /// The decision, once one was made (allow or deny).
    pub decision: Option<DecisionRecord>,
    /// The stage that ended or decided the request.
    pub decided_by: Option<DecidedBy>,
    /// The upstream's status, when the request was forwarded.
    pub upstream_status: Option<StatusCode>,
    /// The kind of error that ended the request inside keygate (an error code), if any.
    pub error_code: Option<&'static str>,
    /// The error's detail, already free of secrets.
    pub error_detail: Option<String>,
    /// An allowed create passed the audit gate: it is forwarded (or about to be), so if the caller
    /// goes away the exchange is followed to its end for the audit record.
    pub forwarding: bool,
    /// The downstream connection went away before the response was handed over.
    pub client_gone: bool,
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
}

/// One request's identity and shared state.
#[derive(Debug)]
pub struct RequestContext {
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
    state: Mutex<ContextState>,
    /// A create's `request_received` record, queued before forwarding and awaited before the
    /// response is released (see `audit::stage`).
    deferred_audit: Mutex<Option<crate::audit::Deferred>>,
    /// An allowed create's (or delete's) place in the key counts, settled by the forwarder with
    /// the upstream's answer (see `policy::quota`).
    quota_hold: Mutex<Option<crate::policy::quota::Hold>>,
}

impl RequestContext {
    /// A fresh context.
    pub fn new(id: HeaderValue, peer: SocketAddr, method: Method) -> Arc<RequestContext> {
        RequestContext::new_via(id, peer, method, None)
    }

    /// A fresh context for a request that came through the egress listener (`egress`) or not.
    pub fn new_via(
        id: HeaderValue,
        peer: SocketAddr,
        method: Method,
        egress: Option<EgressRequest>,
    ) -> Arc<RequestContext> {
        Arc::new(RequestContext {
            id,
            peer,
            method,
            started: Instant::now(),
            egress,
            state: Mutex::new(ContextState::default()),
            deferred_audit: Mutex::new(None),
            quota_hold: Mutex::new(None),
        })
    }

    /// Keeps a create's or delete's hold on the key counts until the upstream answers.
    pub fn hold_quota(&self, hold: crate::policy::quota::Hold) {
        *self.quota_hold.lock().unwrap_or_else(|p| p.into_inner()) = Some(hold);
    }

    /// The hold kept by [`RequestContext::hold_quota`], if any.
    pub fn take_quota_hold(&self) -> Option<crate::policy::quota::Hold> {
        self.quota_hold
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Keeps a queued audit record whose durability the audit layer awaits.
    pub fn defer_audit(&self, deferred: crate::audit::Deferred) {
        *self
            .deferred_audit
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(deferred);
    }

    /// The queued audit record kept by [`RequestContext::defer_audit`], if any.
    pub fn take_deferred_audit(&self) -> Option<crate::audit::Deferred> {
        self.deferred_audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The request id as text (always visible ASCII, see `telemetry::request_id`).
    pub fn id_str(&self) -> &str {
        self.id.to_str().unwrap_or("-")
    }

    /// Locks the state for reading or recording. Held only for a few field writes.
    pub fn state(&self) -> MutexGuard<'_, ContextState> {
        // A poisoned lock only means another stage panicked mid-write; the data is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
