//! External principals → Confluent principals (`[[identity.map]]`).
//!
//! A JWT or certificate identity is the company's, not Confluent's. Each mapping names which
//! Confluent principal (`u-…`, `sa-…`, `pool-…`) an external principal — or any member of an
//! external group — acts as, optionally only for one issuer (`issuer = "https://…"`, or `"mtls"`
//! for client certificates), and optionally with its own upstream credential for brokered calls.
//! The first mapping of the principal itself wins; then the first mapping of one of its groups
//! (in file order). An external identity no mapping covers has no Confluent principal and is
//! refused (401): keygate never guesses.

use std::path::Path;

use serde::Deserialize;

use super::FieldError;
use crate::env::Secrets;
use crate::model::PrincipalKind;
use crate::proxy::config::CredentialSource;
use crate::redact::Secret;

/// `[[identity.map]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    pub external: Option<String>,
    pub group: Option<String>,
    pub issuer: Option<String>,
    pub acting_as: String,
    pub credential: Option<super::RawCredential>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Match {
    External(String),
    Group(String),
}

/// One validated mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    matcher: Match,
    issuer: Option<String>,
    /// The Confluent principal.
    pub acting_as: String,
    /// Where its upstream credential comes from (brokered calls), if it has its own.
    pub credential_source: Option<CredentialSource>,
    /// … read.
    pub credential: Option<Secret>,
}

impl Mapping {
    /// Validates `[[identity.map]]` entry number `index`.
    pub fn validate(
        raw: &RawMapping,
        index: usize,
        base: &Path,
        secrets: &Secrets<'_>,
    ) -> Result<Mapping, FieldError> {
        let f = |name: &str| format!("identity.map[{index}].{name}");
        let matcher = match (&raw.external, &raw.group) {
            (Some(e), None) if !e.is_empty() => Match::External(e.clone()),
            (None, Some(g)) if !g.is_empty() => Match::Group(g.clone()),
            _ => {
                return Err(FieldError::new(
                    f("external"),
                    "set exactly one of `external` (a principal) or `group`",
                ))
            }
        };
        if PrincipalKind::of_id(&raw.acting_as).is_none() {
            return Err(FieldError::new(
                f("acting_as"),
                format!(
                    "`{}` is not a Confluent principal (`u-…`, `sa-…` or `pool-…`)",
                    raw.acting_as
                ),
            ));
        }
        let (credential_source, credential) =
            super::jwt::credential(&f("credential"), &raw.credential, base, secrets)?;
        Ok(Mapping {
            matcher,
            issuer: raw.issuer.clone().filter(|i| !i.is_empty()),
            acting_as: raw.acting_as.clone(),
            credential_source,
            credential,
        })
    }

    fn issuer_fits(&self, issuer: &str) -> bool {
        self.issuer.as_deref().is_none_or(|i| i == issuer)
    }
}

/// All mappings, in file order.
#[derive(Debug, Clone, Default)]
pub struct ExternalMap {
    entries: Vec<Mapping>,
}

impl ExternalMap {
    /// Over validated mappings.
    pub fn new(entries: Vec<Mapping>) -> ExternalMap {
        ExternalMap { entries }
    }

    /// The mappings.
    pub fn entries(&self) -> &[Mapping] {
        &self.entries
    }

    /// The mapping for an external principal of `issuer` with `groups` (see the module doc).
    pub fn resolve(&self, issuer: &str, id: &str, groups: &[String]) -> Option<&Mapping> {
        self.entries
            .iter()
            .find(|m| m.issuer_fits(issuer) && m.matcher == Match::External(id.to_owned()))
            .or_else(|| {
                self.entries.iter().find(|m| {
                    m.issuer_fits(issuer)
                        && matches!(&m.matcher, Match::Group(g) if groups.iter().any(|x| x == g))
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(toml_text: &str) -> Mapping {
        let raw: RawMapping = toml::from_str(toml_text).unwrap();
        Mapping::validate(&raw, 0, Path::new(""), &Secrets::Skip).unwrap()
    }

    #[test]
    fn principal_first_then_groups_in_order_and_issuer_scoped() {
        let map = ExternalMap::new(vec![
            mapping("group = \"payments\"\nacting_as = \"sa-payments\""),
            mapping("external = \"ci@payments\"\nissuer = \"https://a\"\nacting_as = \"sa-ci\""),
            mapping("group = \"ops\"\nacting_as = \"u-ops\""),
        ]);
        let groups = vec!["ops".to_string(), "payments".to_string()];
        assert_eq!(
            map.resolve("https://a", "ci@payments", &groups)
                .unwrap()
                .acting_as,
            "sa-ci"
        );
        assert_eq!(
            map.resolve("https://b", "ci@payments", &groups)
                .unwrap()
                .acting_as,
            "sa-payments"
        );
        assert!(map.resolve("https://b", "x", &[]).is_none());
    }

    #[test]
    fn acting_as_must_be_a_confluent_principal() {
        let raw: RawMapping = toml::from_str("external = \"x\"\nacting_as = \"ci\"").unwrap();
        assert!(Mapping::validate(&raw, 0, Path::new(""), &Secrets::Skip).is_err());
        let raw: RawMapping =
            toml::from_str("external = \"x\"\ngroup = \"y\"\nacting_as = \"sa-1\"").unwrap();
        assert!(Mapping::validate(&raw, 0, Path::new(""), &Secrets::Skip).is_err());
    }
}
