//! The governed actions on `/iam/v2/api-keys` and the parts of a request body that decisions use.
//!
//! The request guard produces these from a canonical path and a strictly parsed body; the decision
//! stage consumes them. Nothing here is a credential.

use std::fmt;

/// A governed action on the api-keys endpoints (docs/architecture.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `POST /iam/v2/api-keys`
    CreateApiKey,
    /// `GET /iam/v2/api-keys`
    ListApiKeys,
    /// `GET /iam/v2/api-keys/{id}`
    GetApiKey,
    /// `PATCH /iam/v2/api-keys/{id}`
    UpdateApiKey,
    /// `DELETE /iam/v2/api-keys/{id}`
    DeleteApiKey,
}

impl Action {
    /// Stable name, as used in logs, metrics, audit events and (later) Cedar.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::CreateApiKey => "CreateApiKey",
            Action::ListApiKeys => "ListApiKeys",
            Action::GetApiKey => "GetApiKey",
            Action::UpdateApiKey => "UpdateApiKey",
            Action::DeleteApiKey => "DeleteApiKey",
        }
    }
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 5] = [
        Action::CreateApiKey,
        Action::ListApiKeys,
        Action::GetApiKey,
        Action::UpdateApiKey,
        Action::DeleteApiKey,
    ];

    /// The action named by [`Action::as_str`].
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The decision-relevant content of a create request body (`spec.*`), after strict parsing.
///
/// `resource` is `None` when the body has no `spec.resource` or it is `null`: a Cloud key
/// (docs/confluent-api.md §2.3). Classification of the key type happens in the policy module, from `id`
/// (and `environment` for Flink) only, never from `kind`/`api_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSpec {
    /// `spec.owner.id`: `u-…` or `sa-…` (or anything else, which policy denies).
    pub owner_id: String,
    /// `spec.resource`, if present and not null.
    pub resource: Option<ResourceSpec>,
    /// `spec.display_name`, empty when absent.
    pub display_name: String,
    /// `spec.description`, empty when absent.
    pub description: String,
}

/// `spec.resource` of a create request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSpec {
    /// `spec.resource.id`: `lkc-…`, `lsrc-…`, `lksqlc-…`, `<cloud>.<region>`, `cloud`, `global`,
    /// `tableflow`, …
    pub id: String,
    /// `spec.resource.environment`, when present and non-empty (needed for Flink).
    pub environment: Option<String>,
}

/// The decision-relevant content of an update (PATCH) body: only these two are mutable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateSpec {
    /// `spec.display_name`, if the body sets it.
    pub display_name: Option<String>,
    /// `spec.description`, if the body sets it.
    pub description: Option<String>,
}
