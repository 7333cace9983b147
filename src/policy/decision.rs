//! The outcome of a layer-1 decision: allow or deny, the stable rule id that decided, a sentence a
//! developer understands, the JSON pointer of the deciding field, and the principal/target summary
//! the audit stage records.
//!
//! A `Decision` is a plain value: it neither renders an HTTP response (the error mapping does) nor
//! writes the audit event (the audit stage does). It never contains a secret.

use std::fmt;
use std::sync::Arc;

use crate::model::Target;

/// Stable rule ids, recorded in audit events and shown to developers.
pub mod rule {
    /// List, get, update and delete pass layer 1 (Confluent filters reads itself; org policies
    /// decide updates and deletes).
    pub const PASSTHROUGH: &str = "matrix.passthrough";
    /// Create for a service account, allowed by OrganizationAdmin.
    pub const SA_ORGANIZATION_ADMIN: &str = "matrix.sa.organization_admin";
    /// Create for a service account, allowed by ResourceOwner on that service account.
    pub const SA_RESOURCE_OWNER: &str = "matrix.sa.resource_owner";
    /// Create for a service account, allowed by a matrix role whose binding covers the resource.
    pub const SA_ROLE: &str = "matrix.sa.role";
    /// Create for the caller's own user account, allowed by a matrix role whose binding covers the
    /// resource.
    pub const OWN_ROLE: &str = "matrix.own.role";
    /// Denied: the owner is another user.
    pub const DENY_OTHER_USER: &str = "matrix.deny.other_user";
    /// Denied: the owner is neither the caller's user account nor a service account.
    pub const DENY_UNSUPPORTED_OWNER: &str = "matrix.deny.unsupported_owner";
    /// Denied: the resource id is not a key type keygate recognises.
    pub const DENY_UNKNOWN_RESOURCE: &str = "matrix.deny.unknown_resource";
    /// Denied: the cluster or environment is not in the inventory (refresh it and decide again).
    pub const DENY_INVENTORY_MISSING: &str = "matrix.deny.inventory_missing";
    /// Denied: a Global key for a service account without OrganizationAdmin or ResourceOwner.
    pub const DENY_SA_GLOBAL: &str = "matrix.deny.sa_global";
    /// Denied: no role of the caller allows this key for the service account.
    pub const DENY_SA_NO_ROLE: &str = "matrix.deny.sa_no_role";
    /// Denied: no role of the caller allows this key for the caller's own account.
    pub const DENY_OWN_NO_ROLE: &str = "matrix.deny.own_no_role";
    /// Denied: a create action arrived without a parsed body.
    pub const DENY_MISSING_SPEC: &str = "matrix.deny.missing_spec";
    /// Denied: an external identity without a Confluent principal whose keygate-side role bindings
    /// are gone (any action: it may do nothing without one).
    pub const DENY_EXTERNAL_UNBOUND: &str = "matrix.deny.external_unbound";
}

/// JSON pointers into a create body.
pub(crate) mod pointer {
    pub const SPEC: &str = "/spec";
    pub const OWNER_ID: &str = "/spec/owner/id";
    pub const RESOURCE: &str = "/spec/resource";
    pub const RESOURCE_ID: &str = "/spec/resource/id";
    pub const RESOURCE_ENVIRONMENT: &str = "/spec/resource/environment";
}

/// The binding that allowed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantedBy {
    /// The binding's principal id: the caller, or one of its `group-…` ids, or for a keygate-side
    /// binding `External:<id>` / `ExternalGroup:<group>`.
    pub principal_id: String,
    /// The role.
    pub role: Arc<str>,
    /// The binding's `crn_pattern`.
    pub crn_pattern: Arc<str>,
}

/// A layer-1 decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether layer 1 allows the request (layer 2 may still narrow it).
    pub allow: bool,
    /// The stable id of the rule that decided (see [`rule`]).
    pub rule: &'static str,
    /// What was asked, what decided, what the caller holds, and what would have allowed it.
    pub explanation: String,
    /// JSON pointer of the body field that decided, for the error's `source.pointer`.
    pub pointer: Option<&'static str>,
    /// The caller's principal id.
    pub principal_id: String,
    /// What the request targets (empty for list/get/update/delete).
    pub target: Target,
    /// The binding that allowed the request, if a binding did.
    pub granted_by: Option<GrantedBy>,
    needs_inventory_refresh: bool,
}

impl Decision {
    pub(crate) fn allow(rule: &'static str, explanation: String, principal_id: &str) -> Self {
        Decision {
            allow: true,
            rule,
            explanation,
            pointer: None,
            principal_id: principal_id.to_owned(),
            target: Target::default(),
            granted_by: None,
            needs_inventory_refresh: false,
        }
    }

    pub(crate) fn deny(
        rule: &'static str,
        explanation: String,
        pointer: &'static str,
        principal_id: &str,
    ) -> Self {
        Decision {
            allow: false,
            pointer: Some(pointer),
            ..Decision::allow(rule, explanation, principal_id)
        }
    }

    pub(crate) fn with_target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    pub(crate) fn with_granted_by(mut self, granted_by: GrantedBy) -> Self {
        self.granted_by = Some(granted_by);
        self
    }

    pub(crate) fn needing_inventory_refresh(mut self) -> Self {
        self.needs_inventory_refresh = true;
        self
    }

    /// True when the request was denied only because the inventory does not know the cluster or
    /// environment: refresh the inventory once (rate-limited) and decide again; if it still
    /// denies, the denial stands.
    pub fn needs_inventory_refresh(&self) -> bool {
        self.needs_inventory_refresh
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allow { "allow" } else { "deny" };
        write!(f, "{verdict} ({}): {}", self.rule, self.explanation)
    }
}
