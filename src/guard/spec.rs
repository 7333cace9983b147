//! Create and update bodies: strict JSON in, the decision-relevant `spec` members out.
//!
//! Reads only what decisions use (`spec.owner.id`, `spec.resource.{id,environment}`,
//! `spec.display_name`, `spec.description`) and tolerates what real clients send and the upstream
//! ignores (docs/confluent-api.md §2.2: empty `related`/`resource_name`, `kind`, `api_version`, unknown
//! members, `spec.resources[]`). Go's `encoding/json` matches member names case-insensitively,
//! so a member spelled like a schema member in another case (`"Resource"`) is refused rather than
//! guessed at. It does not classify key types or owners; that is policy.

use std::borrow::Cow;

use http::Method;

use super::json::{self, fold_eq, Value};
use super::GuardError;
use crate::model::{Action, CreateSpec, ResourceSpec, UpdateSpec};

/// Members of the ApiKey object itself.
const API_KEY_MEMBERS: &[&str] = &["api_version", "kind", "id", "metadata", "spec"];

/// Members of `spec`.
const SPEC_MEMBERS: &[&str] = &[
    "display_name",
    "description",
    "secret",
    "owner",
    "resource",
    "resources",
];

/// Members of `spec.owner` and `spec.resource` (object references).
const REFERENCE_MEMBERS: &[&str] = &[
    "id",
    "environment",
    "api_version",
    "kind",
    "related",
    "resource_name",
];

/// Members a PATCH may not carry: docs/confluent-api.md §2.6, only the display name and description change.
const IMMUTABLE_MEMBERS: [(&str, &str); 4] = [
    ("owner", "/spec/owner"),
    ("resource", "/spec/resource"),
    ("resources", "/spec/resources"),
    ("secret", "/spec/secret"),
];

/// The parsed body of a governed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GovernedBody {
    /// List, get and delete carry no body.
    Empty,
    /// `POST /iam/v2/api-keys`.
    Create(CreateSpec),
    /// `PATCH /iam/v2/api-keys/{id}`.
    Update(UpdateSpec),
}

/// Parses the body of a governed request for `action`: [`parse_create`], [`parse_update`], or
/// for list/get/delete, 400 unless the body is empty.
pub fn parse_body(action: Action, body: &[u8]) -> Result<GovernedBody, GuardError> {
    match action {
        Action::CreateApiKey => parse_create(body).map(GovernedBody::Create),
        Action::UpdateApiKey => parse_update(body).map(GovernedBody::Update),
        Action::ListApiKeys | Action::GetApiKey if body.is_empty() => Ok(GovernedBody::Empty),
        Action::DeleteApiKey if body.is_empty() => Ok(GovernedBody::Empty),
        Action::ListApiKeys | Action::GetApiKey => Err(GuardError::UnexpectedBody {
            method: Method::GET,
        }),
        Action::DeleteApiKey => Err(GuardError::UnexpectedBody {
            method: Method::DELETE,
        }),
    }
}

/// Parses a create body (`POST /iam/v2/api-keys`), docs/confluent-api.md §2.1.
///
/// `spec.owner.id` is required and non-empty; `spec.resource` absent or `null` means a Cloud key
/// (`resource: None`), otherwise it needs a non-empty `id` (`environment` is optional, empty
/// means absent). Wrong types are 400 with a JSON pointer. `spec.resources[]` is tolerated only
/// next to a `spec.resource`: alone, the upstream could read a resource keygate did not decide on.
pub fn parse_create(body: &[u8]) -> Result<CreateSpec, GuardError> {
    let root = json::parse(body)?;
    let api_key = Object::root(&root)?;
    let spec = required(api_key.get("spec"), "/spec")?;
    let spec = Object::new(spec, "/spec", SPEC_MEMBERS)?;

    let owner = required(spec.get("owner"), "/spec/owner")?;
    let owner = Object::new(owner, "/spec/owner", REFERENCE_MEMBERS)?;
    let owner_id = required_string(owner.get("id"), "/spec/owner/id")?;

    let resource = match spec.get("resource") {
        None | Some(Value::Null) => None,
        Some(resource) => {
            let resource = Object::new(resource, "/spec/resource", REFERENCE_MEMBERS)?;
            let id = required_string(resource.get("id"), "/spec/resource/id")?;
            let environment =
                optional_string(resource.get("environment"), "/spec/resource/environment")?
                    .filter(|environment| !environment.is_empty());
            Some(ResourceSpec {
                id: id.to_owned(),
                environment: environment.map(str::to_owned),
            })
        }
    };
    match spec.get("resources") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if items.is_empty() || resource.is_some() => {}
        Some(Value::Array(_)) => {
            return Err(GuardError::InvalidField {
                pointer: "/spec/resources",
                reason: "is only accepted together with `/spec/resource`",
            })
        }
        Some(_) => {
            return Err(GuardError::InvalidField {
                pointer: "/spec/resources",
                reason: "must be an array",
            })
        }
    }

    Ok(CreateSpec {
        owner_id: owner_id.to_owned(),
        resource,
        display_name: optional_string(spec.get("display_name"), "/spec/display_name")?
            .unwrap_or_default()
            .to_owned(),
        description: optional_string(spec.get("description"), "/spec/description")?
            .unwrap_or_default()
            .to_owned(),
    })
}

/// Parses an update body (`PATCH /iam/v2/api-keys/{id}`), docs/confluent-api.md §2.6.
///
/// Only `spec.display_name` and `spec.description` are mutable: a body carrying `spec.owner`,
/// `spec.resource`, `spec.resources` or `spec.secret` (with any value) is 400 with its pointer.
pub fn parse_update(body: &[u8]) -> Result<UpdateSpec, GuardError> {
    let root = json::parse(body)?;
    let api_key = Object::root(&root)?;
    let spec = match api_key.get("spec") {
        None | Some(Value::Null) => return Ok(UpdateSpec::default()),
        Some(spec) => Object::new(spec, "/spec", SPEC_MEMBERS)?,
    };
    if let Some((_, pointer)) = IMMUTABLE_MEMBERS
        .iter()
        .find(|(name, _)| spec.get(name).is_some())
    {
        return Err(GuardError::ImmutableField { pointer });
    }
    Ok(UpdateSpec {
        display_name: optional_string(spec.get("display_name"), "/spec/display_name")?
            .map(str::to_owned),
        description: optional_string(spec.get("description"), "/spec/description")?
            .map(str::to_owned),
    })
}

/// A JSON object whose member names have been checked against the schema's spelling.
struct Object<'v> {
    members: &'v [(Cow<'v, str>, Value<'v>)],
}

// === impl Object ===

impl<'v> Object<'v> {
    fn root(value: &'v Value<'v>) -> Result<Self, GuardError> {
        match value {
            Value::Object(_) => Object::new(value, "", API_KEY_MEMBERS),
            _ => Err(GuardError::NotAnObject),
        }
    }

    /// `value` as an object at `pointer`; a member spelled like one of `known` in another letter
    /// case is refused (the upstream might match it, keygate would not).
    fn new(
        value: &'v Value<'v>,
        pointer: &'static str,
        known: &[&'static str],
    ) -> Result<Self, GuardError> {
        let Value::Object(members) = value else {
            return Err(GuardError::InvalidField {
                pointer,
                reason: "must be an object",
            });
        };
        for (key, _) in members {
            // The common case: a schema name spelled exactly (schema names never fold onto
            // each other, so it cannot be another one's variant).
            if known.contains(&key.as_ref()) {
                continue;
            }
            if let Some(expected) = known
                .iter()
                .find(|name| key.as_ref() != **name && fold_eq(key, name))
            {
                return Err(GuardError::NonCanonicalMember {
                    pointer: format!("{pointer}/{expected}"),
                    expected,
                });
            }
        }
        Ok(Object { members })
    }

    /// The member spelled exactly `name`. Duplicates were refused while parsing.
    fn get(&self, name: &str) -> Option<&'v Value<'v>> {
        self.members
            .iter()
            .find(|(key, _)| key.as_ref() == name)
            .map(|(_, value)| value)
    }
}

fn required<'v>(
    value: Option<&'v Value<'v>>,
    pointer: &'static str,
) -> Result<&'v Value<'v>, GuardError> {
    match value {
        None | Some(Value::Null) => Err(GuardError::InvalidField {
            pointer,
            reason: "is required",
        }),
        Some(value) => Ok(value),
    }
}

fn required_string<'v>(
    value: Option<&'v Value<'v>>,
    pointer: &'static str,
) -> Result<&'v str, GuardError> {
    match optional_string(value, pointer)? {
        None => Err(GuardError::InvalidField {
            pointer,
            reason: "is required",
        }),
        Some("") => Err(GuardError::InvalidField {
            pointer,
            reason: "must not be empty",
        }),
        Some(value) => Ok(value),
    }
}

/// Absent and `null` are both "not set" (as for Go's `encoding/json`).
fn optional_string<'v>(
    value: Option<&'v Value<'v>>,
    pointer: &'static str,
) -> Result<Option<&'v str>, GuardError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(GuardError::InvalidField {
            pointer,
            reason: "must be a string",
        }),
    }
}

#[cfg(test)]
mod tests;
