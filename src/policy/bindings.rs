//! Role bindings `(principal, role_name, crn_pattern)` exactly as Confluent models them, indexed by
//! principal so a decision reads only the caller's own bindings.
//!
//! Two sources produce the same [`BindingIndex`]: a TOML file in `policies/` (development, GitOps),
//! strictly validated here, and the upstream `/iam/v2/role-bindings` API (see `source`), which goes
//! through the same [`BindingIndexBuilder`]. CRN patterns are parsed once, here. This module does not
//! know which roles matter (the matrix does) and does not decide anything.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use super::crn::{CrnError, CrnPattern, OrgId};
use crate::model::GROUP_PREFIX;

/// Binding principals are written `User:<id>`; older contract versions also used `Group:<id>`.
const PRINCIPAL_PREFIXES: [&str; 2] = ["User:", "Group:"];

/// Id prefixes a binding principal may carry: user, service account, identity pool, SSO group.
const BINDING_ID_PREFIXES: [&str; 4] = ["u-", "sa-", "pool-", GROUP_PREFIX];

/// Why a role binding (or a bindings file) was rejected.
#[derive(Debug, thiserror::Error)]
pub enum BindingsError {
    /// The file is not valid TOML for the bindings schema.
    #[error("invalid role bindings: {0}")]
    Toml(#[from] toml::de::Error),
    /// The principal is not `User:<id>` with a `u-`, `sa-`, `pool-` or `group-` id.
    #[error("principal `{principal}`: expected `User:u-…`, `User:sa-…`, `User:pool-…` or `User:group-…`")]
    Principal {
        /// The first characters of the rejected principal.
        principal: String,
    },
    /// The role name is empty or not letters and digits.
    #[error("role `{role}`: a role name is letters and digits only")]
    RoleName {
        /// The first characters of the rejected role name.
        role: String,
    },
    /// The CRN pattern does not parse.
    #[error(transparent)]
    Crn(#[from] CrnError),
    /// The CRN pattern belongs to another organisation than the configured one.
    #[error("crn `{crn}`: organization is not the configured `{org}`")]
    ForeignOrganization {
        /// The pattern.
        crn: String,
        /// The configured organisation.
        org: String,
    },
    /// An entry of a bindings file is invalid.
    #[error("role_bindings[{index}]: {source}")]
    Entry {
        /// 0-based position in the file.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: Box<BindingsError>,
    },
}

/// One role binding of a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleBinding {
    role: Arc<str>,
    pattern: CrnPattern,
}

impl RoleBinding {
    /// A binding of `role` on `pattern` (already validated by the caller).
    pub(crate) fn new(role: Arc<str>, pattern: CrnPattern) -> RoleBinding {
        RoleBinding { role, pattern }
    }

    /// The role name, e.g. `EnvironmentAdmin`.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The role name, shared (cheap to clone into a decision).
    pub(crate) fn role_shared(&self) -> &Arc<str> {
        &self.role
    }

    /// The parsed `crn_pattern`.
    pub fn pattern(&self) -> &CrnPattern {
        &self.pattern
    }
}

/// All role bindings of one organisation, by principal id (`u-…`, `sa-…`, `pool-…`, `group-…`).
#[derive(Debug, Clone)]
pub struct BindingIndex {
    org: OrgId,
    by_principal: HashMap<Box<str>, Box<[RoleBinding]>>,
    len: usize,
    skipped: usize,
}

impl BindingIndex {
    /// An index with no bindings: every role-based check fails.
    pub fn empty(org: OrgId) -> Self {
        BindingIndexBuilder::new(org).build()
    }

    /// Parses and validates a bindings file's text (`[[role_bindings]]` entries).
    pub fn from_toml_str(text: &str, org: &OrgId) -> Result<Self, BindingsError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawFile {
            #[serde(default)]
            role_bindings: Vec<RawBinding>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawBinding {
            principal: String,
            role_name: String,
            crn_pattern: String,
        }
        let raw: RawFile = toml::from_str(text)?;
        let mut builder = BindingIndexBuilder::new(org.clone());
        for (index, b) in raw.role_bindings.iter().enumerate() {
            builder
                .push(&b.principal, &b.role_name, &b.crn_pattern)
                .map_err(|e| BindingsError::Entry {
                    index,
                    source: Box::new(e),
                })?;
        }
        Ok(builder.build())
    }

    /// The organisation every pattern in the index belongs to.
    pub fn org(&self) -> &OrgId {
        &self.org
    }

    /// The bindings of one principal id; costs one hash lookup, whatever the index size.
    pub fn of(&self, principal_id: &str) -> &[RoleBinding] {
        self.by_principal.get(principal_id).map_or(&[], |b| b)
    }

    /// How many bindings the index holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no bindings.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many upstream bindings were left out because keygate could not parse them (leaving one
    /// out can only take a permission away).
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

/// Builds a [`BindingIndex`] one binding at a time, validating each.
#[derive(Debug)]
pub struct BindingIndexBuilder {
    org: OrgId,
    by_principal: HashMap<Box<str>, Vec<RoleBinding>>,
    /// Role names are few and repeat; one allocation each.
    roles: HashMap<Box<str>, Arc<str>>,
    len: usize,
    skipped: usize,
}

impl BindingIndexBuilder {
    /// An empty builder for the configured organisation.
    pub fn new(org: OrgId) -> Self {
        BindingIndexBuilder {
            org,
            by_principal: HashMap::new(),
            roles: HashMap::new(),
            len: 0,
            skipped: 0,
        }
    }

    /// Adds one binding in Confluent's form: `principal` is `User:<id>`, `crn_pattern` must belong
    /// to the configured organisation.
    pub fn push(
        &mut self,
        principal: &str,
        role_name: &str,
        crn_pattern: &str,
    ) -> Result<(), BindingsError> {
        let id = PRINCIPAL_PREFIXES
            .iter()
            .find_map(|p| principal.strip_prefix(p))
            .filter(|id| is_binding_id(id))
            .ok_or_else(|| BindingsError::Principal {
                principal: principal.chars().take(64).collect(),
            })?;
        let pattern = role_and_pattern(role_name, crn_pattern, &self.org)?;
        let role = match self.roles.get(role_name) {
            Some(role) => role.clone(),
            None => {
                let role: Arc<str> = Arc::from(role_name);
                self.roles.insert(Box::from(role_name), role.clone());
                role
            }
        };
        self.by_principal
            .entry(Box::from(id))
            .or_default()
            .push(RoleBinding { role, pattern });
        self.len += 1;
        Ok(())
    }

    /// Counts a binding that was left out (see [`BindingIndex::skipped`]).
    pub(crate) fn skip(&mut self) {
        self.skipped += 1;
    }

    /// The finished index.
    pub fn build(self) -> BindingIndex {
        BindingIndex {
            org: self.org,
            by_principal: self
                .by_principal
                .into_iter()
                .map(|(k, v)| (k, v.into_boxed_slice()))
                .collect(),
            len: self.len,
            skipped: self.skipped,
        }
    }
}

/// The part of a binding every bindings file (Confluent's, keygate-side) checks alike: the role
/// name is letters and digits, and the CRN pattern parses and belongs to `org`.
pub(crate) fn role_and_pattern(
    role_name: &str,
    crn_pattern: &str,
    org: &OrgId,
) -> Result<CrnPattern, BindingsError> {
    if role_name.is_empty() || !role_name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(BindingsError::RoleName {
            role: role_name.chars().take(64).collect(),
        });
    }
    let pattern = CrnPattern::parse(crn_pattern)?;
    if pattern.org_id() != org.as_str() {
        return Err(BindingsError::ForeignOrganization {
            crn: crn_pattern.chars().take(256).collect(),
            org: org.to_string(),
        });
    }
    Ok(pattern)
}

fn is_binding_id(id: &str) -> bool {
    BINDING_ID_PREFIXES
        .iter()
        .any(|p| id.len() > p.len() && id.starts_with(p))
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORG: &str = "0b7e1c2d-3f4a-4b5c-8d6e-7f8091a2b3c4";

    fn org() -> OrgId {
        OrgId::parse(ORG).unwrap()
    }

    fn crn(rest: &str) -> String {
        format!("crn://confluent.cloud/organization={ORG}{rest}")
    }

    #[test]
    fn bindings_are_indexed_by_principal_id() {
        let mut b = BindingIndexBuilder::new(org());
        b.push("User:u-a", "EnvironmentAdmin", &crn("/environment=env-1"))
            .unwrap();
        b.push("User:u-a", "ResourceOwner", &crn("/service-account=sa-1"))
            .unwrap();
        b.push("User:sa-1", "OrganizationAdmin", &crn("")).unwrap();
        b.push("Group:group-x", "FlinkAdmin", &crn("/environment=env-1"))
            .unwrap();
        let index = b.build();
        assert_eq!(index.len(), 4);
        let roles: Vec<&str> = index.of("u-a").iter().map(RoleBinding::role).collect();
        assert_eq!(roles, ["EnvironmentAdmin", "ResourceOwner"]);
        assert_eq!(index.of("sa-1").len(), 1);
        assert_eq!(index.of("group-x").len(), 1);
        assert!(index.of("u-b").is_empty());
        assert!(index.of("User:u-a").is_empty());
    }

    #[test]
    fn invalid_bindings_are_rejected() {
        let mut b = BindingIndexBuilder::new(org());
        let env = crn("/environment=env-1");
        for principal in [
            "u-a",
            "User:",
            "User:env-1",
            "user:u-a",
            "User:u-a/b",
            "User:u-",
        ] {
            let err = b.push(principal, "EnvironmentAdmin", &env).unwrap_err();
            assert!(
                matches!(err, BindingsError::Principal { .. }),
                "{principal}"
            );
        }
        assert!(matches!(
            b.push("User:u-a", "", &env),
            Err(BindingsError::RoleName { .. })
        ));
        assert!(matches!(
            b.push("User:u-a", "Env Admin", &env),
            Err(BindingsError::RoleName { .. })
        ));
        assert!(matches!(
            b.push(
                "User:u-a",
                "EnvironmentAdmin",
                "crn://confluent.cloud/environment=env-1"
            ),
            Err(BindingsError::Crn(_))
        ));
        assert!(matches!(
            b.push(
                "User:u-a",
                "EnvironmentAdmin",
                "crn://confluent.cloud/organization=other"
            ),
            Err(BindingsError::ForeignOrganization { .. })
        ));
        assert!(b.build().is_empty());
    }

    #[test]
    fn file_errors_name_the_entry() {
        let text = format!(
            "[[role_bindings]]\nprincipal = \"User:u-a\"\nrole_name = \"EnvironmentAdmin\"\ncrn_pattern = \"{}\"\n\
             [[role_bindings]]\nprincipal = \"u-b\"\nrole_name = \"EnvironmentAdmin\"\ncrn_pattern = \"{}\"\n",
            crn(""),
            crn("")
        );
        let err = BindingIndex::from_toml_str(&text, &org())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("role_bindings[1]: principal `u-b`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_in_the_file_are_rejected() {
        let text = format!(
            "[[role_bindings]]\nprincipal = \"User:u-a\"\nrole = \"EnvironmentAdmin\"\ncrn_pattern = \"{}\"\n",
            crn("")
        );
        assert!(matches!(
            BindingIndex::from_toml_str(&text, &org()),
            Err(BindingsError::Toml(_))
        ));
    }
}
