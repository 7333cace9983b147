//! Policy: what a governed request asks for, and whether the caller may do it.
//!
//! Layer 1 is Confluent's RBAC creation matrix (kept as data in `policies/`), evaluated against the
//! caller's role bindings and the resource inventory ([`decide_matrix`], [`decide_create`]);
//! layer 2 is the organisation's own Cedar `forbid` policies ([`org`]); [`decide`] combines both
//! with the API-key quota into the one decision, as a plain function over values. This module decides; it never
//! forwards, never logs secrets, and does its upstream fetching only through the
//! [`source::Fetch`] trait the caller implements.

pub mod bindings;
pub mod config;
pub mod crn;
pub mod decide;
pub mod decision;
pub mod external;
pub mod facts;
pub mod input;
pub mod inventory;
pub mod matrix;
pub mod org;
pub mod quota;
pub mod rbac;
pub mod revision;
pub mod runtime;
pub mod snapshot;
pub mod source;

#[cfg(test)]
mod tests;

pub use decide::{decide, Facts, Response, Rules};
pub use decision::Decision;
pub use rbac::{decide_create, decide_matrix};
pub use snapshot::{AuthzData, AuthzSnapshot};

/// Proof that the decision stage allowed a governed request. Only that stage creates one, and the
/// forwarder refuses a governed request without it, so no composition mistake can forward an
/// undecided request.
#[derive(Debug, Clone)]
pub struct Permit {
    _private: (),
}

impl Permit {
    pub(crate) fn new() -> Permit {
        Permit { _private: () }
    }
}
