//! The simulator's starting state: a TOML description of one Confluent Cloud organisation.
//!
//! `dev/org.toml` is the shipped example and, embedded at compile time, the default. A seed is
//! parsed strictly (unknown fields are an error) and checked for dangling references, duplicate
//! ids and malformed credentials before a simulator may use it, so a broken seed fails at load
//! time rather than as a confusing 404 later. It does not build the store (see `store.rs`).

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use super::secret;
use super::SimulatorError;

/// The seed shipped with keygate (`dev/org.toml`).
const BUILTIN_SEED: &str = include_str!("../../dev/org.toml");

/// Creation time stamped on seeded objects when the seed does not name one.
const DEFAULT_CREATED_AT: &str = "2025-01-01T00:00:00.000000Z";

/// The starting state of a simulated organisation (environments, clusters, identities, role
/// bindings, API keys). Build one with [`Seed::builtin`], [`Seed::from_path`] or
/// [`Seed::from_toml`]; every constructor validates it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub(crate) org_id: String,
    #[serde(default = "default_created_at")]
    pub(crate) created_at: String,
    #[serde(default)]
    pub(crate) environments: Vec<SeedEnvironment>,
    #[serde(default)]
    pub(crate) kafka_clusters: Vec<SeedCluster>,
    #[serde(default)]
    pub(crate) schema_registries: Vec<SeedCluster>,
    #[serde(default)]
    pub(crate) ksqldb_clusters: Vec<SeedKsqlCluster>,
    #[serde(default)]
    pub(crate) users: Vec<SeedUser>,
    #[serde(default)]
    pub(crate) service_accounts: Vec<SeedServiceAccount>,
    #[serde(default)]
    pub(crate) role_bindings: Vec<SeedRoleBinding>,
    #[serde(default)]
    pub(crate) api_keys: Vec<SeedApiKey>,
}

fn default_created_at() -> String {
    DEFAULT_CREATED_AT.to_owned()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeedEnvironment {
    pub(crate) id: String,
    pub(crate) display_name: String,
}

/// A Kafka or Schema Registry cluster.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeedCluster {
    pub(crate) id: String,
    pub(crate) display_name: String,
    pub(crate) environment: String,
    #[serde(default = "default_cloud")]
    pub(crate) cloud: String,
    #[serde(default = "default_region")]
    pub(crate) region: String,
    /// The cluster type of a Kafka cluster (`spec.config.kind`): `Basic`, `Standard`,
    /// `Enterprise`, `Dedicated` or `Freight`. Ignored for Schema Registry clusters.
    #[serde(default = "default_kind")]
    pub(crate) kind: String,
}

/// Kafka cluster types as `/cmk/v2/clusters` reports them in `spec.config.kind`.
pub(crate) const CLUSTER_KINDS: [&str; 5] =
    ["Basic", "Standard", "Enterprise", "Dedicated", "Freight"];

fn default_kind() -> String {
    "Basic".to_owned()
}

fn default_cloud() -> String {
    "AWS".to_owned()
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeedKsqlCluster {
    pub(crate) id: String,
    pub(crate) display_name: String,
    pub(crate) environment: String,
    pub(crate) kafka_cluster: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeedUser {
    pub(crate) id: String,
    pub(crate) email: String,
    pub(crate) full_name: String,
    /// The password `POST /api/sessions` accepts (fake, for the demo); no login without one.
    #[serde(default)]
    pub(crate) password: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeedServiceAccount {
    pub(crate) id: String,
    pub(crate) display_name: String,
    #[serde(default)]
    pub(crate) description: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeedRoleBinding {
    pub(crate) id: String,
    pub(crate) principal: String,
    pub(crate) role_name: String,
    pub(crate) crn_pattern: String,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeedApiKey {
    pub(crate) id: String,
    pub(crate) secret: String,
    pub(crate) owner: String,
    /// `cloud`, `global`, `tableflow`, a cluster id, or a Flink region (then with `environment`).
    #[serde(default = "default_key_resource")]
    pub(crate) resource: String,
    #[serde(default)]
    pub(crate) environment: Option<String>,
    #[serde(default)]
    pub(crate) display_name: String,
    #[serde(default)]
    pub(crate) description: String,
}

fn default_key_resource() -> String {
    "cloud".to_owned()
}

impl fmt::Debug for SeedApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeedApiKey")
            .field("id", &self.id)
            .field("secret", &"**REDACTED**")
            .field("owner", &self.owner)
            .field("resource", &self.resource)
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Seed")
            .field("org_id", &self.org_id)
            .field("environments", &self.environments.len())
            .field("users", &self.users.len())
            .field("service_accounts", &self.service_accounts.len())
            .field("role_bindings", &self.role_bindings.len())
            .field("api_keys", &self.api_keys.len())
            .finish_non_exhaustive()
    }
}

// === impl Seed ===

impl Seed {
    /// The seed shipped in `dev/org.toml`, embedded at compile time.
    ///
    /// # Panics
    ///
    /// Never in a released build: a unit test loads and validates the embedded file.
    #[expect(
        clippy::expect_used,
        reason = "the embedded seed is a compile-time constant validated by a unit test"
    )]
    pub fn builtin() -> Seed {
        Seed::from_toml(BUILTIN_SEED).expect("the embedded dev/org.toml is valid")
    }

    /// The text of the built-in seed (`dev/org.toml`).
    #[cfg(test)]
    pub(crate) fn builtin_text() -> &'static str {
        BUILTIN_SEED
    }

    /// Reads and validates a seed file.
    pub fn from_path(path: &Path) -> Result<Seed, SimulatorError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimulatorError::ReadSeed {
            path: path.display().to_string(),
            source,
        })?;
        Seed::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a seed from TOML text.
    pub fn from_toml(text: &str) -> Result<Seed, SimulatorError> {
        Seed::parse(text, "<inline>")
    }

    fn parse(text: &str, path: &str) -> Result<Seed, SimulatorError> {
        // Only the parser's message and the line are kept: its full rendering quotes the source
        // line, which may hold a secret.
        let seed: Seed = toml::from_str(text).map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .and_then(|span| text.as_bytes().get(..span.start))
                .map_or(0, |before| {
                    before.iter().filter(|&&b| b == b'\n').count() + 1
                });
            SimulatorError::ParseSeed {
                path: path.to_owned(),
                line,
                message: e.message().to_owned(),
            }
        })?;
        seed.validate()
            .map_err(|reason| SimulatorError::InvalidSeed {
                path: path.to_owned(),
                reason,
            })?;
        Ok(seed)
    }

    /// The organisation id (a UUID).
    pub fn org_id(&self) -> &str {
        &self.org_id
    }

    /// Checks references and formats; the error is a lowercase sentence naming the culprit.
    fn validate(&self) -> Result<(), String> {
        let mut ids = HashSet::new();
        let mut unique = |id: &str| {
            if ids.insert(id.to_owned()) {
                Ok(())
            } else {
                Err(format!("duplicate id `{id}`"))
            }
        };
        if !is_uuid(&self.org_id) {
            return Err(format!("org_id `{}` is not a uuid", self.org_id));
        }
        let envs: HashSet<&str> = self.environments.iter().map(|e| e.id.as_str()).collect();
        for e in &self.environments {
            unique(&e.id)?;
            require_prefix(&e.id, "env-")?;
        }
        for (clusters, prefix) in [
            (&self.kafka_clusters, "lkc-"),
            (&self.schema_registries, "lsrc-"),
        ] {
            for c in clusters {
                unique(&c.id)?;
                require_prefix(&c.id, prefix)?;
                require_env(&envs, &c.id, &c.environment)?;
                if !CLUSTER_KINDS.contains(&c.kind.as_str()) {
                    return Err(format!(
                        "cluster `{}`: kind `{}` is not one of {}",
                        c.id,
                        c.kind,
                        CLUSTER_KINDS.join(", ")
                    ));
                }
            }
        }
        for k in &self.ksqldb_clusters {
            unique(&k.id)?;
            require_prefix(&k.id, "lksqlc-")?;
            require_env(&envs, &k.id, &k.environment)?;
            let Some(kafka) = self.kafka_clusters.iter().find(|c| c.id == k.kafka_cluster) else {
                return Err(format!(
                    "ksqldb cluster `{}` names unknown kafka cluster `{}`",
                    k.id, k.kafka_cluster
                ));
            };
            if kafka.environment != k.environment {
                return Err(format!(
                    "ksqldb cluster `{}` and its kafka cluster `{}` are in different environments",
                    k.id, k.kafka_cluster
                ));
            }
        }
        for u in &self.users {
            unique(&u.id)?;
            require_prefix(&u.id, "u-")?;
        }
        for s in &self.service_accounts {
            unique(&s.id)?;
            require_prefix(&s.id, "sa-")?;
        }
        for rb in &self.role_bindings {
            unique(&rb.id)?;
            require_prefix(&rb.id, "rb-")?;
            if !rb.principal.starts_with("User:") || rb.principal.len() == "User:".len() {
                return Err(format!(
                    "role binding `{}`: principal `{}` must look like `User:<id>`",
                    rb.id, rb.principal
                ));
            }
            if !rb.crn_pattern.starts_with("crn://") {
                return Err(format!(
                    "role binding `{}`: crn_pattern must start with `crn://`",
                    rb.id
                ));
            }
            if rb.role_name.is_empty() {
                return Err(format!("role binding `{}`: empty role_name", rb.id));
            }
        }
        for k in &self.api_keys {
            unique(&k.id)?;
            if !secret::is_key_id(&k.id) {
                return Err(format!("api key id `{}` is not 16 characters A-Z0-9", k.id));
            }
            // The message names the key, never the secret.
            if !secret::is_valid_secret(&k.secret) {
                return Err(format!(
                    "api key `{}`: secret is malformed or its checksum does not match",
                    k.id
                ));
            }
            let owner_known = self.users.iter().any(|u| u.id == k.owner)
                || self.service_accounts.iter().any(|s| s.id == k.owner);
            if !owner_known {
                return Err(format!("api key `{}`: unknown owner `{}`", k.id, k.owner));
            }
            let resource_known = match k.resource.as_str() {
                "cloud" | "global" | "tableflow" => true,
                r if r.starts_with("lkc-") => self.kafka_clusters.iter().any(|c| c.id == r),
                r if r.starts_with("lsrc-") => self.schema_registries.iter().any(|c| c.id == r),
                r if r.starts_with("lksqlc-") => self.ksqldb_clusters.iter().any(|c| c.id == r),
                r => {
                    is_flink_region(r) && k.environment.as_deref().is_some_and(|e| envs.contains(e))
                }
            };
            if !resource_known {
                return Err(format!(
                    "api key `{}`: unknown resource `{}`",
                    k.id, k.resource
                ));
            }
        }
        Ok(())
    }
}

fn require_prefix(id: &str, prefix: &str) -> Result<(), String> {
    if id.len() > prefix.len() && id.starts_with(prefix) {
        Ok(())
    } else {
        Err(format!("id `{id}` must start with `{prefix}`"))
    }
}

fn require_env(envs: &HashSet<&str>, id: &str, env: &str) -> Result<(), String> {
    if envs.contains(env) {
        Ok(())
    } else {
        Err(format!("`{id}` names unknown environment `{env}`"))
    }
}

/// Whether `s` looks like a UUID (8-4-4-4-12 hex).
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `s` has the `<cloud>.<region>` shape of a Flink region (`aws.us-east-1`).
pub(crate) fn is_flink_region(s: &str) -> bool {
    let Some((cloud, region)) = s.split_once('.') else {
        return false;
    };
    matches!(cloud, "aws" | "gcp" | "azure")
        && !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
