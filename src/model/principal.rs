//! The principal a decision is about: a Confluent identity (`u-…`, `sa-…`, `pool-…`), its groups,
//! and how keygate established it.
//!
//! The identity stage builds a `Principal`; the decision stages read it. It never holds a secret:
//! an API key id is the username half of a credential and is not secret. Verifying credentials is
//! the identity stage's job, not this module's.

use std::fmt;

/// Prefix of Confluent SSO group-mapping ids; only these groups can carry role bindings.
pub(crate) const GROUP_PREFIX: &str = "group-";

/// The id prefix of a principal with no Confluent principal ([`Principal::external_only`]).
pub const EXTERNAL_ID_PREFIX: &str = "External:";

/// The issuer label of client-certificate identities, in `[[identity.map]]` entries and
/// keygate-side bindings (a JWT identity's label is its issuer URL).
pub const MTLS_ISSUER: &str = "mtls";

/// Why a principal could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    /// The id is not a user, service account or identity pool id.
    #[error("principal id `{id}`: expected `u-…`, `sa-…` or `pool-…`")]
    UnknownKind {
        /// The first characters of the rejected id.
        id: String,
    },
}

/// What kind of Confluent identity a principal is, from its id prefix (docs/confluent-api.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// `u-…`
    User,
    /// `sa-…`
    ServiceAccount,
    /// `pool-…` (an identity pool, reached through Confluent STS or workload identity)
    IdentityPool,
    /// No Confluent principal: an external (company) identity that holds only keygate-side role
    /// bindings and is brokered. Never produced from an id ([`PrincipalKind::of_id`]).
    External,
}

impl PrincipalKind {
    /// The kind for a Confluent id, or `None` for any other prefix (including an empty id part).
    pub fn of_id(id: &str) -> Option<Self> {
        let (kind, rest) = if let Some(rest) = id.strip_prefix("u-") {
            (PrincipalKind::User, rest)
        } else if let Some(rest) = id.strip_prefix("sa-") {
            (PrincipalKind::ServiceAccount, rest)
        } else if let Some(rest) = id.strip_prefix("pool-") {
            (PrincipalKind::IdentityPool, rest)
        } else {
            return None;
        };
        (!rest.is_empty()).then_some(kind)
    }

    /// Stable name for logs and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "User",
            PrincipalKind::ServiceAccount => "ServiceAccount",
            PrincipalKind::IdentityPool => "IdentityPool",
            PrincipalKind::External => "External",
        }
    }
}

/// How the caller's identity was established (docs/architecture.md §3). Never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// A Cloud or Global API key verified by the upstream (`GET /iam/v2/api-keys/{key id}` with the
    /// presented credential).
    ApiKey {
        /// The API key id (the Basic username; not secret).
        key_id: String,
    },
    /// An API key found in keygate's static directory (development, air-gapped).
    Directory {
        /// The API key id (not secret).
        key_id: String,
    },
    /// A verified bearer JWT.
    Jwt {
        /// The token's `iss`.
        issuer: String,
    },
    /// A verified client certificate.
    Mtls {
        /// The SAN or subject the principal was mapped from.
        subject: String,
    },
    /// A Confluent session token (the Confluent CLI's bearer), resolved by Confluent itself
    /// (`GET /api/me` with the token).
    ConfluentSession,
}

impl AuthMethod {
    /// Stable name for logs and audit events.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthMethod::ApiKey { .. } => "api_key",
            AuthMethod::Directory { .. } => "directory",
            AuthMethod::Jwt { .. } => "jwt",
            AuthMethod::Mtls { .. } => "mtls",
            AuthMethod::ConfluentSession => "confluent_session",
        }
    }
}

/// How an external (company) identity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalSource {
    /// A bearer JWT of one of keygate's issuers.
    Jwt,
    /// A verified client certificate.
    Mtls,
    /// A Confluent STS access token that keygate saw issued for a verified JWT (Terraform's
    /// `oauth {}`).
    OAuth,
}

impl ExternalSource {
    /// Stable name for logs, audit and policies.
    pub fn as_str(self) -> &'static str {
        match self {
            ExternalSource::Jwt => "jwt",
            ExternalSource::Mtls => "mtls",
            ExternalSource::OAuth => "oauth",
        }
    }

    /// The source named by [`ExternalSource::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "jwt" => Some(ExternalSource::Jwt),
            "mtls" => Some(ExternalSource::Mtls),
            "oauth" => Some(ExternalSource::OAuth),
            _ => None,
        }
    }
}

/// The company identity behind a principal: who the caller is in the company's terms, and who
/// vouched for it. The [`Principal`]'s own id is the Confluent principal it acts as. Never a
/// secret: the brokered credential is named by its key id only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    /// The external principal (`ci@payments`, `repo:acme/payments@github`, a SAN URI).
    pub id: String,
    /// How it was established.
    pub source: ExternalSource,
    /// The issuer URL, or the client certificate's issuer (the CA's subject).
    pub issuer: String,
    /// Its groups (from the token's groups claim).
    pub groups: Vec<String>,
    /// The key id of the upstream credential keygate calls Confluent with for it, when brokered.
    pub broker_key_id: Option<String>,
}

impl External {
    /// The label its issuer has in mappings and keygate-side bindings: the issuer URL, or
    /// [`MTLS_ISSUER`] for a client certificate (whatever its CA is called).
    pub fn issuer_label(&self) -> &str {
        match self.source {
            ExternalSource::Mtls => MTLS_ISSUER,
            ExternalSource::Jwt | ExternalSource::OAuth => &self.issuer,
        }
    }
}

/// The Confluent identity a request acts as.
///
/// INVARIANT: `kind` matches the prefix of `id`, or is [`PrincipalKind::External`] exactly when
/// there is no Confluent principal: then `id` is `External:<external id>` and `external` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    id: String,
    kind: PrincipalKind,
    groups: Vec<String>,
    auth: AuthMethod,
    /// The company identity, when the caller is an external principal acting as `id`.
    external: Option<Box<External>>,
}

impl Principal {
    /// A principal with no groups; the kind comes from the id's prefix.
    pub fn new(id: impl Into<String>, auth: AuthMethod) -> Result<Self, PrincipalError> {
        let id = id.into();
        match PrincipalKind::of_id(&id) {
            Some(kind) => Ok(Principal {
                id,
                kind,
                groups: Vec::new(),
                auth,
                external: None,
            }),
            None => Err(PrincipalError::UnknownKind {
                id: id.chars().take(64).collect(),
            }),
        }
    }

    /// An external identity with no Confluent principal (keygate-side bindings only, brokered):
    /// its id is `External:<external id>` (never mistaken for a Confluent id, in rate limits,
    /// audit records or policies), its kind [`PrincipalKind::External`]; it owns nothing in
    /// Confluent and has no Confluent role bindings.
    pub fn external_only(external: External, auth: AuthMethod) -> Self {
        Principal {
            id: format!("{EXTERNAL_ID_PREFIX}{}", external.id),
            kind: PrincipalKind::External,
            groups: Vec::new(),
            auth,
            external: Some(Box::new(external)),
        }
    }

    /// Sets the principal's groups. Groups are free-form for organisation policies; layer 1 uses
    /// only the Confluent group-mapping ids among them (`group-…`), whose role bindings the
    /// principal inherits, as in Confluent.
    pub fn with_groups(mut self, groups: Vec<String>) -> Self {
        self.groups = groups;
        self
    }

    /// Marks the principal as acting for an external identity.
    pub fn with_external(mut self, external: External) -> Self {
        self.external = Some(Box::new(external));
        self
    }

    /// The external identity this principal acts for, if any.
    pub fn external(&self) -> Option<&External> {
        self.external.as_deref()
    }

    /// The Confluent principal the request acts as: the id itself (also for an external caller,
    /// whose mapping chose it); `None` for an external identity with no Confluent principal.
    pub fn acting_as(&self) -> Option<&str> {
        (self.kind != PrincipalKind::External).then_some(self.id.as_str())
    }

    /// Whether this is a Confluent principal (`u-…`, `sa-…`, `pool-…`), possibly acting for an
    /// external identity; `false` for an external identity with keygate-side bindings only.
    pub fn is_confluent(&self) -> bool {
        self.kind != PrincipalKind::External
    }

    /// Who the caller is, for explanations: the Confluent id, or for an external caller both
    /// names ("ci@payments via issuer https://idp.corp, acting as sa-payments-ci").
    pub fn describe(&self) -> String {
        match &self.external {
            None => self.id.clone(),
            Some(external) => {
                let via = match external.source {
                    ExternalSource::Jwt => "issuer",
                    ExternalSource::Mtls => "client certificate from",
                    ExternalSource::OAuth => "an OAuth token exchange with issuer",
                };
                match self.acting_as() {
                    Some(acting_as) => format!(
                        "{} via {via} {}, acting as {acting_as}",
                        external.id, external.issuer
                    ),
                    None => format!(
                        "{} via {via} {}, no Confluent principal, keygate-side bindings",
                        external.id, external.issuer
                    ),
                }
            }
        }
    }

    /// The Confluent id (`u-…`, `sa-…`, `pool-…`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The kind of identity.
    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }

    /// All groups, as given by the identity stage.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// How the identity was established.
    pub fn auth(&self) -> &AuthMethod {
        &self.auth
    }

    /// The ids whose Confluent role bindings apply to this principal: its own id, then its
    /// `group-…` ids; none for an external identity without a Confluent principal.
    pub(crate) fn binding_ids(&self) -> impl Iterator<Item = &str> {
        self.acting_as().into_iter().chain(
            self.groups
                .iter()
                .filter(|_| self.is_confluent())
                .map(String::as_str)
                .filter(|g| g.starts_with(GROUP_PREFIX) && g.len() > GROUP_PREFIX.len()),
        )
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuthMethod {
        AuthMethod::ApiKey {
            key_id: "ABCD1234567890AB".into(),
        }
    }

    #[test]
    fn kind_follows_the_id_prefix() {
        assert_eq!(
            Principal::new("u-abc", key()).unwrap().kind(),
            PrincipalKind::User
        );
        assert_eq!(
            Principal::new("sa-1", key()).unwrap().kind(),
            PrincipalKind::ServiceAccount
        );
        assert_eq!(
            Principal::new("pool-x", key()).unwrap().kind(),
            PrincipalKind::IdentityPool
        );
    }

    #[test]
    fn unknown_or_empty_ids_are_rejected() {
        for id in ["", "u-", "group-a", "env-1", "U-abc", "user"] {
            assert!(Principal::new(id, key()).is_err(), "{id:?}");
        }
    }

    #[test]
    fn an_external_only_principal_has_no_confluent_principal_and_no_confluent_bindings() {
        let external = External {
            id: "sa-lookalike".into(),
            source: ExternalSource::Jwt,
            issuer: "https://idp.corp".into(),
            groups: vec!["group-platform".into()],
            broker_key_id: Some("BROKER".into()),
        };
        let p = Principal::external_only(
            external,
            AuthMethod::Jwt {
                issuer: "https://idp.corp".into(),
            },
        )
        .with_groups(vec!["group-platform".into()]);
        assert_eq!(p.kind(), PrincipalKind::External);
        assert_eq!(p.id(), "External:sa-lookalike");
        assert_eq!(p.acting_as(), None);
        assert!(!p.is_confluent());
        assert_eq!(p.binding_ids().count(), 0);
        assert_eq!(
            p.describe(),
            "sa-lookalike via issuer https://idp.corp, no Confluent principal, keygate-side bindings"
        );
        assert_eq!(PrincipalKind::of_id("External"), None);
    }

    #[test]
    fn only_group_mapping_ids_contribute_bindings() {
        let p = Principal::new("u-abc", key()).unwrap().with_groups(vec![
            "group-platform".into(),
            "u-admin".into(),
            "platform-team".into(),
            "group-".into(),
        ]);
        let ids: Vec<&str> = p.binding_ids().collect();
        assert_eq!(ids, ["u-abc", "group-platform"]);
        assert_eq!(p.groups().len(), 4);
    }
}
