//! keygate-side role bindings for external principals (`identity.external_bindings`): a file in
//! Confluent's binding shape whose principals are the company's identities, not Confluent's.
//!
//! ```toml
//! [[role_bindings]]
//! principal = "External:ci@payments"      # or "ExternalGroup:payments"
//! issuer = "https://idp.corp"             # optional: only for this issuer ("mtls": certificates)
//! role_name = "ResourceOwner"
//! crn_pattern = "crn://confluent.cloud/organization=…/service-account=sa-payments"
//! ```
//!
//! Validated strictly when loaded (a principal that is not `External:` / `ExternalGroup:`, a role
//! the creation matrix does not know, a malformed CRN or another organisation's is an error naming
//! the entry), and indexed by external principal and by group so a decision reads only the
//! caller's own. The file reloads with the rest of the policy set and is part of its revision.
//! This module only indexes; the identity stage asks it whether an unmapped external identity has
//! any binding, and the matrix (`rbac`) reads the bindings that apply.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use super::bindings::{role_and_pattern, BindingsError, RoleBinding};
use super::crn::OrgId;
use super::matrix::Matrix;
use crate::model::{External, EXTERNAL_ID_PREFIX};

/// The principal prefix of an external group's binding.
pub const EXTERNAL_GROUP_PREFIX: &str = "ExternalGroup:";

/// Longest external principal or group name accepted.
const MAX_NAME_LEN: usize = 255;

/// Why a keygate-side bindings file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ExternalBindingsError {
    /// Not valid TOML for the bindings schema.
    #[error("invalid keygate-side role bindings: {0}")]
    Toml(#[from] toml::de::Error),
    /// The principal is not `External:<name>` or `ExternalGroup:<name>`.
    #[error("principal `{0}`: expected `External:<external principal>` or `ExternalGroup:<group>` (Confluent principals belong in `authz.bindings`)")]
    Principal(String),
    /// The issuer is empty.
    #[error("`issuer` is empty: leave it out, or name an issuer URL or `mtls`")]
    Issuer,
    /// A role the creation matrix does not know.
    #[error("role `{0}` is not a role of the creation matrix (`authz.matrix`)")]
    Role(String),
    /// The role name or the CRN pattern is invalid as in any bindings file.
    #[error(transparent)]
    Binding(#[from] BindingsError),
    /// One entry is invalid.
    #[error("role_bindings[{index}]: {source}")]
    Entry {
        /// 0-based position in the file.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: Box<ExternalBindingsError>,
    },
}

/// Who a keygate-side binding belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder<'a> {
    /// An external principal (`External:<id>`).
    Principal(&'a str),
    /// An external group (`ExternalGroup:<name>`).
    Group(&'a str),
}

impl Holder<'_> {
    /// The binding principal as written in the file (`External:ci@payments`).
    pub fn label(&self) -> String {
        match self {
            Holder::Principal(id) => format!("{EXTERNAL_ID_PREFIX}{id}"),
            Holder::Group(g) => format!("{EXTERNAL_GROUP_PREFIX}{g}"),
        }
    }

    /// Parses a label written by [`Holder::label`].
    pub fn parse(label: &str) -> Option<Holder<'_>> {
        if let Some(g) = label.strip_prefix(EXTERNAL_GROUP_PREFIX) {
            return valid_name(g).then_some(Holder::Group(g));
        }
        let id = label.strip_prefix(EXTERNAL_ID_PREFIX)?;
        valid_name(id).then_some(Holder::Principal(id))
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && !name.chars().any(char::is_control)
}

#[derive(Debug, Clone)]
struct Scoped {
    issuer: Option<Box<str>>,
    binding: RoleBinding,
}

impl Scoped {
    fn fits(&self, issuer: &str) -> bool {
        self.issuer.as_deref().is_none_or(|i| i == issuer)
    }
}

/// The keygate-side bindings, by external principal and by external group.
#[derive(Debug, Clone, Default)]
pub struct ExternalBindings {
    principals: HashMap<Box<str>, Vec<Scoped>>,
    groups: HashMap<Box<str>, Vec<Scoped>>,
    len: usize,
}

impl ExternalBindings {
    /// Parses and validates a file's text; `matrix` names the roles that may be bound.
    pub fn from_toml_str(
        text: &str,
        org: &OrgId,
        matrix: &Matrix,
    ) -> Result<Self, ExternalBindingsError> {
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
            #[serde(default)]
            issuer: Option<String>,
            role_name: String,
            crn_pattern: String,
        }
        let raw: RawFile = toml::from_str(text)?;
        let mut index = ExternalBindings::default();
        for (i, b) in raw.role_bindings.iter().enumerate() {
            index
                .push(
                    &b.principal,
                    b.issuer.as_deref(),
                    &b.role_name,
                    &b.crn_pattern,
                    org,
                    Some(matrix),
                )
                .map_err(|e| ExternalBindingsError::Entry {
                    index: i,
                    source: Box::new(e),
                })?;
        }
        Ok(index)
    }

    /// Adds one binding. `matrix`, when given, must know the role (a recorded decision's bindings
    /// are rebuilt without it).
    pub fn push(
        &mut self,
        principal: &str,
        issuer: Option<&str>,
        role_name: &str,
        crn_pattern: &str,
        org: &OrgId,
        matrix: Option<&Matrix>,
    ) -> Result<(), ExternalBindingsError> {
        let holder = Holder::parse(principal).ok_or_else(|| {
            ExternalBindingsError::Principal(principal.chars().take(64).collect())
        })?;
        if issuer.is_some_and(str::is_empty) {
            return Err(ExternalBindingsError::Issuer);
        }
        let pattern = role_and_pattern(role_name, crn_pattern, org)?;
        if matrix.is_some_and(|m| m.role(role_name).is_none()) {
            return Err(ExternalBindingsError::Role(
                role_name.chars().take(64).collect(),
            ));
        }
        let scoped = Scoped {
            issuer: issuer.map(Box::from),
            binding: RoleBinding::new(Arc::from(role_name), pattern),
        };
        let (map, name) = match holder {
            Holder::Principal(id) => (&mut self.principals, id),
            Holder::Group(g) => (&mut self.groups, g),
        };
        map.entry(Box::from(name)).or_default().push(scoped);
        self.len += 1;
        Ok(())
    }

    /// The bindings that apply to an external principal `id` of `issuer` with `groups`: its own,
    /// then its groups' (in the order of `groups`), each only where its issuer fits.
    pub fn of<'s>(
        &'s self,
        issuer: &'s str,
        id: &'s str,
        groups: &'s [String],
    ) -> impl Iterator<Item = (Holder<'s>, Option<&'s str>, &'s RoleBinding)> + 's {
        let own = self
            .principals
            .get(id)
            .into_iter()
            .flatten()
            .filter(move |s| s.fits(issuer))
            .map(move |s| (Holder::Principal(id), s.issuer.as_deref(), &s.binding));
        let grouped = groups.iter().flat_map(move |g| {
            self.groups
                .get(g.as_str())
                .into_iter()
                .flatten()
                .filter(move |s| s.fits(issuer))
                .map(move |s| (Holder::Group(g.as_str()), s.issuer.as_deref(), &s.binding))
        });
        own.chain(grouped)
    }

    /// The bindings that apply to `external` (see [`ExternalBindings::of`]).
    pub fn of_external<'s>(
        &'s self,
        external: &'s External,
    ) -> impl Iterator<Item = (Holder<'s>, Option<&'s str>, &'s RoleBinding)> + 's {
        self.of(external.issuer_label(), &external.id, &external.groups)
    }

    /// Whether any binding applies to `external`.
    pub fn binds(&self, external: &External) -> bool {
        self.of_external(external).next().is_some()
    }

    /// How many bindings the index holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ExternalSource;

    const ORG: &str = "0b7e1c2d-3f4a-4b5c-8d6e-7f8091a2b3c4";

    fn org() -> OrgId {
        OrgId::parse(ORG).unwrap()
    }

    fn matrix() -> Matrix {
        Matrix::from_toml_str(include_str!("../../policies/matrix.toml")).unwrap()
    }

    fn entry(principal: &str, issuer: Option<&str>, role: &str, crn_rest: &str) -> String {
        let issuer = issuer.map_or(String::new(), |i| format!("issuer = {i:?}\n"));
        format!(
            "[[role_bindings]]\nprincipal = {principal:?}\n{issuer}role_name = {role:?}\n\
             crn_pattern = \"crn://confluent.cloud/organization={ORG}{crn_rest}\"\n"
        )
    }

    fn external(id: &str, source: ExternalSource, issuer: &str, groups: &[&str]) -> External {
        External {
            id: id.into(),
            source,
            issuer: issuer.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            broker_key_id: None,
        }
    }

    #[test]
    fn external_bindings_parse_and_index_by_principal_and_group() {
        let text = [
            entry(
                "External:ci@payments",
                None,
                "ResourceOwner",
                "/service-account=sa-x",
            ),
            entry(
                "ExternalGroup:payments",
                Some("https://idp.corp"),
                "EnvironmentAdmin",
                "/environment=env-1",
            ),
            entry(
                "External:spiffe://corp/ci",
                Some("mtls"),
                "OrganizationAdmin",
                "",
            ),
        ]
        .concat();
        let index = ExternalBindings::from_toml_str(&text, &org(), &matrix()).unwrap();
        assert_eq!(index.len(), 3);
        let ci = external(
            "ci@payments",
            ExternalSource::Jwt,
            "https://idp.corp",
            &["payments"],
        );
        let found: Vec<(String, &str)> = index
            .of_external(&ci)
            .map(|(h, _, b)| (h.label(), b.role()))
            .collect();
        assert_eq!(
            found,
            [
                ("External:ci@payments".to_owned(), "ResourceOwner"),
                ("ExternalGroup:payments".to_owned(), "EnvironmentAdmin"),
            ]
        );
        // The group binding is scoped to its issuer; the principal's is not.
        let other = external(
            "ci@payments",
            ExternalSource::Jwt,
            "https://other",
            &["payments"],
        );
        let roles: Vec<&str> = index
            .of_external(&other)
            .map(|(_, _, b)| b.role())
            .collect();
        assert_eq!(roles, ["ResourceOwner"]);
        // A certificate identity fits the `mtls` scope whatever its CA is called.
        let cert = external("spiffe://corp/ci", ExternalSource::Mtls, "CN=Corp CA", &[]);
        assert!(index.binds(&cert));
        let jwt_same_name = external("spiffe://corp/ci", ExternalSource::Jwt, "mtls-ish", &[]);
        assert!(!index.binds(&jwt_same_name));
        assert!(!index.binds(&external("nobody", ExternalSource::Jwt, "x", &[])));
    }

    #[test]
    fn invalid_external_bindings_name_the_entry() {
        let m = matrix();
        let cases = [
            (
                entry("User:u-a", None, "ResourceOwner", ""),
                "role_bindings[0]: principal `User:u-a`",
            ),
            (
                entry("External:", None, "ResourceOwner", ""),
                "role_bindings[0]: principal `External:`",
            ),
            (
                entry("External:ci", None, "NoSuchRole", ""),
                "role_bindings[0]: role `NoSuchRole` is not a role of the creation matrix",
            ),
            (
                entry("External:ci", Some(""), "ResourceOwner", ""),
                "role_bindings[0]: `issuer` is empty",
            ),
        ];
        for (text, want) in cases {
            let err = ExternalBindings::from_toml_str(&text, &org(), &m)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(want), "{err}");
        }
        let foreign = "[[role_bindings]]\nprincipal = \"External:ci\"\nrole_name = \"ResourceOwner\"\n\
                       crn_pattern = \"crn://confluent.cloud/organization=11111111-2222-4333-8444-555555555555\"\n";
        let err = ExternalBindings::from_toml_str(foreign, &org(), &m)
            .unwrap_err()
            .to_string();
        assert!(err.contains("organization is not the configured"), "{err}");
        let malformed =
            "[[role_bindings]]\nprincipal = \"External:ci\"\nrole_name = \"ResourceOwner\"\n\
                         crn_pattern = \"crn://confluent.cloud/environment=env-1\"\n";
        assert!(ExternalBindings::from_toml_str(malformed, &org(), &m).is_err());
        let unknown_field = "[[role_bindings]]\nprincipal = \"External:ci\"\nrole = \"x\"\n";
        assert!(matches!(
            ExternalBindings::from_toml_str(unknown_field, &org(), &m),
            Err(ExternalBindingsError::Toml(_))
        ));
    }
}
