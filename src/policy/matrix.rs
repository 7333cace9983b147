//! Confluent's RBAC creation matrix (docs/confluent-api.md §7) as data: which role may create API keys for
//! which resource type, loaded from `policies/matrix.toml`.
//!
//! Each cell is `no`, `yes` or `scoped` ("Yes (env)"/"Yes (cluster)" in the reference). A role
//! grants through a binding whose CRN covers the key's resource — or, for roles marked
//! `binding_covers = "owner"` (ResourceOwner), the service account that will own the key. A role
//! absent from the file grants nothing ("all other roles"). The file also names the roles that may
//! create Global keys for a service account. Adding a role is a data change; adding a resource type
//! also needs classification and a CRN shape in `rbac`.
//!
//! This module only loads and answers lookups; it does not see bindings or requests.

use std::collections::{BTreeMap, HashMap};

use crate::model::ResourceType;
use serde::Deserialize;

/// Why a matrix file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// The file is not valid TOML for the matrix schema.
    #[error("invalid matrix: {0}")]
    Toml(#[from] toml::de::Error),
    /// A role names a resource type keygate does not know.
    #[error("role `{role}`: unknown resource type `{name}` (expected one of {known})")]
    UnknownResourceType {
        /// The role.
        role: String,
        /// The unknown column.
        name: String,
        /// The known columns.
        known: &'static str,
    },
    /// A role leaves out a resource type.
    #[error("role `{role}`: missing resource type `{resource_type}`")]
    MissingResourceType {
        /// The role.
        role: String,
        /// The missing column.
        resource_type: &'static str,
    },
    /// A role name is empty or not a plain identifier.
    #[error("role `{role}`: a role name is letters and digits only")]
    RoleName {
        /// The rejected name.
        role: String,
    },
    /// `service_account_global` names a role the matrix does not define or that does not grant
    /// Global keys.
    #[error("service_account_global: role `{role}` is not a role with `Global` other than `no`")]
    GlobalRole {
        /// The role.
        role: String,
    },
    /// The file defines no roles.
    #[error("the matrix defines no roles")]
    Empty,
}

/// Column names as written in `matrix.toml`, for error messages.
const RESOURCE_TYPE_NAMES: &str = "Cloud, Kafka, SchemaRegistry, Flink, Tableflow, KsqlDb, Global";

/// One cell of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grant {
    /// The role cannot create this key type.
    No,
    /// The role can, through a binding that covers the resource.
    Yes,
    /// The role can within its binding's scope ("Yes (env)", "Yes (cluster)"); the check is the
    /// same as for `yes`, the distinction documents the reference.
    Scoped,
}

impl Grant {
    /// Whether the cell allows anything.
    pub fn allows(self) -> bool {
        self != Grant::No
    }
}

/// What a role's binding must cover for the role to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindingCovers {
    /// The key's resource (every role except ResourceOwner).
    #[default]
    Resource,
    /// The service account that will own the key ("ResourceOwner on the service account"). Such
    /// a role never grants keys for a user account.
    Owner,
}

/// One row of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    covers: BindingCovers,
    grants: [Grant; 7],
    may_create_sa_global: bool,
}

impl Role {
    /// The cell for `t`.
    pub fn grant(&self, t: ResourceType) -> Grant {
        self.grants[t.index()]
    }

    /// What the role's binding must cover.
    pub fn covers(&self) -> BindingCovers {
        self.covers
    }

    /// Whether the role is listed in `service_account_global`.
    pub fn may_create_sa_global(&self) -> bool {
        self.may_create_sa_global
    }
}

/// The whole matrix, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    roles: HashMap<Box<str>, Role>,
    /// Per resource type: the resource-bound roles that grant it, for explanations.
    resource_roles: [Box<str>; 7],
    /// Per resource type: the owner-bound roles that grant it, for explanations.
    owner_roles: [Box<str>; 7],
    /// The `service_account_global` roles: (name, owner-bound).
    sa_global: Box<[(Box<str>, bool)]>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatrix {
    service_account_global: Vec<String>,
    roles: BTreeMap<String, RawRole>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    #[serde(default)]
    binding_covers: BindingCovers,
    grants: BTreeMap<String, Grant>,
}

impl Matrix {
    /// Parses and validates a matrix from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, MatrixError> {
        let raw: RawMatrix = toml::from_str(text)?;
        if raw.roles.is_empty() {
            return Err(MatrixError::Empty);
        }
        let mut roles = HashMap::with_capacity(raw.roles.len());
        for (name, raw_role) in &raw.roles {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(MatrixError::RoleName { role: name.clone() });
            }
            let mut grants = [None; 7];
            for (column, grant) in &raw_role.grants {
                let t = ResourceType::from_name(column).ok_or_else(|| {
                    MatrixError::UnknownResourceType {
                        role: name.clone(),
                        name: column.clone(),
                        known: RESOURCE_TYPE_NAMES,
                    }
                })?;
                grants[t.index()] = Some(*grant);
            }
            let mut row = [Grant::No; 7];
            for t in ResourceType::ALL {
                row[t.index()] =
                    grants[t.index()].ok_or_else(|| MatrixError::MissingResourceType {
                        role: name.clone(),
                        resource_type: t.as_str(),
                    })?;
            }
            roles.insert(
                Box::from(name.as_str()),
                Role {
                    covers: raw_role.binding_covers,
                    grants: row,
                    may_create_sa_global: false,
                },
            );
        }
        let mut sa_global = Vec::with_capacity(raw.service_account_global.len());
        for name in &raw.service_account_global {
            match roles.get_mut(name.as_str()) {
                Some(role) if role.grant(ResourceType::Global).allows() => {
                    role.may_create_sa_global = true;
                    sa_global.push((
                        Box::from(name.as_str()),
                        role.covers == BindingCovers::Owner,
                    ));
                }
                _ => return Err(MatrixError::GlobalRole { role: name.clone() }),
            }
        }
        let list = |covers: BindingCovers, t: ResourceType| -> Box<str> {
            // BTreeMap order: deterministic explanations.
            let names: Vec<&str> = raw
                .roles
                .keys()
                .filter(|n| {
                    roles
                        .get(n.as_str())
                        .is_some_and(|r| r.covers == covers && r.grant(t).allows())
                })
                .map(String::as_str)
                .collect();
            join_or(&names).into_boxed_str()
        };
        let resource_roles = ResourceType::ALL.map(|t| list(BindingCovers::Resource, t));
        let owner_roles = ResourceType::ALL.map(|t| list(BindingCovers::Owner, t));
        Ok(Matrix {
            roles,
            resource_roles,
            owner_roles,
            sa_global: sa_global.into_boxed_slice(),
        })
    }

    /// The row for a role name, or `None` for a role that grants nothing.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// The cell for a role and a resource type (`No` for roles not in the matrix).
    pub fn grant(&self, role: &str, t: ResourceType) -> Grant {
        self.role(role).map_or(Grant::No, |r| r.grant(t))
    }

    /// Resource-bound roles granting `t`, as "A, B or C" (empty when none).
    pub(crate) fn resource_roles_text(&self, t: ResourceType) -> &str {
        &self.resource_roles[t.index()]
    }

    /// Owner-bound roles granting `t`, as "A or B" (empty when none).
    pub(crate) fn owner_roles_text(&self, t: ResourceType) -> &str {
        &self.owner_roles[t.index()]
    }

    /// The `service_account_global` roles: name and whether it is owner-bound.
    pub(crate) fn sa_global_roles(&self) -> impl Iterator<Item = (&str, bool)> {
        self.sa_global.iter().map(|(n, o)| (&**n, *o))
    }
}

/// "a", "a or b", "a, b or c".
pub(crate) fn join_or<S: AsRef<str>>(items: &[S]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(if i + 1 == items.len() { " or " } else { ", " });
        }
        out.push_str(item.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: &str = r#"{ Cloud = "no", Kafka = "yes", SchemaRegistry = "no", Flink = "no", Tableflow = "no", KsqlDb = "scoped", Global = "no" }"#;

    fn one_role(row: &str) -> String {
        format!("service_account_global = []\n[roles.X]\ngrants = {row}\n")
    }

    #[test]
    fn unknown_resource_type_is_rejected() {
        let text = one_role(&ROW.replace("Global", "Globl"));
        let err = Matrix::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.contains("unknown resource type `Globl`"), "{err}");
    }

    #[test]
    fn missing_resource_type_is_rejected() {
        let text = one_role(&ROW.replace(r#", Global = "no""#, ""));
        let err = Matrix::from_toml_str(&text).unwrap_err().to_string();
        assert_eq!(err, "role `X`: missing resource type `Global`");
    }

    #[test]
    fn unknown_cell_value_and_unknown_field_are_rejected() {
        assert!(Matrix::from_toml_str(&one_role(&ROW.replace("\"yes\"", "\"maybe\""))).is_err());
        let extra = format!("{}extra = 1\n", one_role(ROW));
        assert!(Matrix::from_toml_str(&extra).is_err());
        let top = format!("colour = 1\n{}", one_role(ROW));
        assert!(Matrix::from_toml_str(&top).is_err());
    }

    #[test]
    fn global_role_must_exist_and_grant_global() {
        let text = one_role(ROW).replace("[]", r#"["X"]"#);
        assert!(matches!(
            Matrix::from_toml_str(&text),
            Err(MatrixError::GlobalRole { .. })
        ));
        let text = one_role(ROW).replace("[]", r#"["Nope"]"#);
        assert!(Matrix::from_toml_str(&text).is_err());
    }

    #[test]
    fn roles_absent_from_the_matrix_grant_nothing() {
        let m = Matrix::from_toml_str(&one_role(ROW)).unwrap();
        assert_eq!(m.grant("X", ResourceType::Kafka), Grant::Yes);
        assert_eq!(m.grant("X", ResourceType::KsqlDb), Grant::Scoped);
        assert_eq!(m.grant("DeveloperRead", ResourceType::Kafka), Grant::No);
    }

    #[test]
    fn join_or_reads_as_a_sentence() {
        assert_eq!(join_or::<&str>(&[]), "");
        assert_eq!(join_or(&["a"]), "a");
        assert_eq!(join_or(&["a", "b"]), "a or b");
        assert_eq!(join_or(&["a", "b", "c"]), "a, b or c");
    }
}
