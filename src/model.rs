//! The vocabulary every part of keygate shares: what a governed request does ([`Action`] and its
//! [`CreateSpec`] / [`UpdateSpec`]), who asks ([`Principal`]), what it targets ([`Target`],
//! [`ResourceType`]), which route it is on ([`RouteClass`], [`GovernedRoute`]) and which stage
//! decided it ([`DecidedBy`]).
//!
//! The bottom of the module graph: it imports nothing of keygate's, so the guard, identity,
//! policy, rate limiting, audit and telemetry can all speak of the same things without importing
//! each other. Plain values; nothing here is a secret.

mod action;
mod principal;
mod target;

use serde::Serialize;

pub use action::{Action, CreateSpec, ResourceSpec, UpdateSpec};
pub(crate) use principal::GROUP_PREFIX;
pub use principal::{
    AuthMethod, External, ExternalSource, Principal, PrincipalError, PrincipalKind,
};
pub use principal::{EXTERNAL_ID_PREFIX, MTLS_ISSUER};
pub use target::{ResourceType, Target};

/// Which kind of route a request is on (a metrics label and a pipeline switch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteClass {
    /// Forwarded as is: everything but the api-keys endpoints.
    #[default]
    Ungoverned,
    /// The api-keys endpoints: guarded, identified, decided, audited.
    Governed,
}

impl RouteClass {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Ungoverned => "ungoverned",
            RouteClass::Governed => "governed",
        }
    }
}

/// A canonical governed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GovernedRoute {
    /// What the request does.
    pub action: Action,
    /// The `{id}` of `/iam/v2/api-keys/{id}` (unreserved characters only), `None` for the
    /// collection.
    pub key_id: Option<String>,
}

/// The pipeline stage that produced a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// The request guard (framing, path, body).
    Guard,
    /// Identity (401).
    Identity,
    /// Confluent's RBAC creation matrix.
    Matrix,
    /// An organisational policy.
    Policy,
    /// The rate limiter (429).
    RateLimit,
    /// The API-key quota guard.
    Quota,
    /// The upstream (its status decided).
    Upstream,
    /// The audit trail itself (no durable audit, no action).
    Audit,
    /// The egress listener (a refused `CONNECT`).
    Egress,
}
