//! The simulated organisation's state: environments, clusters, identities, role bindings and API
//! keys, all in ordered maps so lists and pagination are deterministic (sorted by id).
//!
//! The store holds data and the invariants between objects (a key's owner and resource exist,
//! deleting an identity deletes its keys and bindings). It keeps a digest of every API key
//! secret, never the secret itself. It knows nothing about HTTP or JSON (see `routes.rs` and
//! `render.rs`). Of Confluent's RBAC it knows who may read, change and delete an API key
//! ([`Store::may_manage_key`]), so that a demo shows keygate narrowing what Confluent itself
//! allows; creates are left to keygate's matrix, which is what is under test.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::secret::SecretDigest;
use super::seed::{self, Seed};

pub(crate) struct Store {
    pub(crate) environments: BTreeMap<String, Environment>,
    pub(crate) kafka_clusters: BTreeMap<String, Cluster>,
    pub(crate) schema_registries: BTreeMap<String, Cluster>,
    pub(crate) ksqldb_clusters: BTreeMap<String, KsqlCluster>,
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) service_accounts: BTreeMap<String, ServiceAccount>,
    pub(crate) role_bindings: BTreeMap<String, RoleBinding>,
    pub(crate) api_keys: BTreeMap<String, ApiKey>,
}

pub(crate) struct Environment {
    pub(crate) id: String,
    pub(crate) display_name: String,
    pub(crate) created_at: String,
}

/// A Kafka or Schema Registry cluster.
pub(crate) struct Cluster {
    pub(crate) id: String,
    pub(crate) display_name: String,
    pub(crate) environment: String,
    pub(crate) cloud: String,
    pub(crate) region: String,
    /// Kafka clusters: `Basic`, `Standard`, `Enterprise`, `Dedicated` or `Freight`.
    pub(crate) kind: String,
    pub(crate) created_at: String,
}

pub(crate) struct KsqlCluster {
    pub(crate) id: String,
    pub(crate) display_name: String,
    pub(crate) environment: String,
    pub(crate) kafka_cluster: String,
    pub(crate) created_at: String,
}

pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) email: String,
    pub(crate) full_name: String,
    pub(crate) password: Option<String>,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
}

pub(crate) struct ServiceAccount {
    pub(crate) id: String,
    pub(crate) display_name: String,
    pub(crate) description: String,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
}

#[derive(Clone)]
pub(crate) struct RoleBinding {
    pub(crate) id: String,
    pub(crate) principal: String,
    pub(crate) role_name: String,
    pub(crate) crn_pattern: String,
}

pub(crate) struct ApiKey {
    pub(crate) id: String,
    pub(crate) digest: SecretDigest,
    pub(crate) owner: String,
    pub(crate) resource: KeyResource,
    pub(crate) display_name: String,
    pub(crate) description: String,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
}

/// What an API key is scoped to (docs/confluent-api.md §2.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyResource {
    Cloud,
    Global,
    Tableflow,
    Kafka {
        id: String,
        environment: String,
    },
    SchemaRegistry {
        id: String,
        environment: String,
    },
    Ksql {
        id: String,
        environment: String,
        kafka_cluster: String,
    },
    Flink {
        region: String,
        environment: String,
    },
}

/// Why a key's resource could not be resolved.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ResolveFailure {
    /// No such resource.
    Unknown,
    /// A Flink region without `environment`.
    MissingEnvironment,
    /// A Flink region whose `environment` does not exist.
    UnknownEnvironment,
}

// === impl KeyResource ===

impl KeyResource {
    /// The id clients send in `spec.resource.id` and filter on with `spec.resource`.
    pub(crate) fn id(&self) -> &str {
        match self {
            KeyResource::Cloud => "cloud",
            KeyResource::Global => "global",
            KeyResource::Tableflow => "tableflow",
            KeyResource::Kafka { id, .. }
            | KeyResource::SchemaRegistry { id, .. }
            | KeyResource::Ksql { id, .. } => id,
            KeyResource::Flink { region, .. } => region,
        }
    }

    /// Whether a key with this scope may call the management API (docs/confluent-api.md §5).
    pub(crate) fn can_manage(&self) -> bool {
        matches!(self, KeyResource::Cloud | KeyResource::Global)
    }
}

// === impl Store ===

impl Store {
    pub(crate) fn from_seed(seed: &Seed) -> Self {
        let at = &seed.created_at;
        let cluster = |c: &seed::SeedCluster| {
            (
                c.id.clone(),
                Cluster {
                    id: c.id.clone(),
                    display_name: c.display_name.clone(),
                    environment: c.environment.clone(),
                    cloud: c.cloud.clone(),
                    region: c.region.clone(),
                    kind: c.kind.clone(),
                    created_at: at.clone(),
                },
            )
        };
        let mut store = Store {
            environments: seed
                .environments
                .iter()
                .map(|e| {
                    let env = Environment {
                        id: e.id.clone(),
                        display_name: e.display_name.clone(),
                        created_at: at.clone(),
                    };
                    (e.id.clone(), env)
                })
                .collect(),
            kafka_clusters: seed.kafka_clusters.iter().map(cluster).collect(),
            schema_registries: seed.schema_registries.iter().map(cluster).collect(),
            ksqldb_clusters: seed
                .ksqldb_clusters
                .iter()
                .map(|k| {
                    let ksql = KsqlCluster {
                        id: k.id.clone(),
                        display_name: k.display_name.clone(),
                        environment: k.environment.clone(),
                        kafka_cluster: k.kafka_cluster.clone(),
                        created_at: at.clone(),
                    };
                    (k.id.clone(), ksql)
                })
                .collect(),
            users: seed
                .users
                .iter()
                .map(|u| {
                    let user = User {
                        id: u.id.clone(),
                        email: u.email.clone(),
                        full_name: u.full_name.clone(),
                        password: u.password.clone(),
                        created_at: at.clone(),
                        updated_at: at.clone(),
                    };
                    (u.id.clone(), user)
                })
                .collect(),
            service_accounts: seed
                .service_accounts
                .iter()
                .map(|s| {
                    let sa = ServiceAccount {
                        id: s.id.clone(),
                        display_name: s.display_name.clone(),
                        description: s.description.clone(),
                        created_at: at.clone(),
                        updated_at: at.clone(),
                    };
                    (s.id.clone(), sa)
                })
                .collect(),
            role_bindings: seed
                .role_bindings
                .iter()
                .map(|rb| {
                    let binding = RoleBinding {
                        id: rb.id.clone(),
                        principal: rb.principal.clone(),
                        role_name: rb.role_name.clone(),
                        crn_pattern: rb.crn_pattern.clone(),
                    };
                    (rb.id.clone(), binding)
                })
                .collect(),
            api_keys: BTreeMap::new(),
        };
        for k in &seed.api_keys {
            // INVARIANT: the seed was validated, so every key's resource resolves; a key whose
            // resource somehow does not is skipped rather than invented.
            let Ok(resource) = store.resolve_resource(&k.resource, k.environment.as_deref()) else {
                continue;
            };
            let key = ApiKey {
                id: k.id.clone(),
                digest: SecretDigest::of(&k.secret),
                owner: k.owner.clone(),
                resource,
                display_name: k.display_name.clone(),
                description: k.description.clone(),
                created_at: at.clone(),
                updated_at: at.clone(),
            };
            store.api_keys.insert(k.id.clone(), key);
        }
        store
    }

    /// Whether `id` is an existing user or service account.
    pub(crate) fn identity_exists(&self, id: &str) -> bool {
        self.users.contains_key(id) || self.service_accounts.contains_key(id)
    }

    /// The display name of a user (full name) or service account.
    pub(crate) fn identity_name(&self, id: &str) -> Option<&str> {
        self.users
            .get(id)
            .map(|u| u.full_name.as_str())
            .or_else(|| {
                self.service_accounts
                    .get(id)
                    .map(|s| s.display_name.as_str())
            })
    }

    /// Resolves `spec.resource.id` (+ `environment`) to a key scope.
    pub(crate) fn resolve_resource(
        &self,
        id: &str,
        environment: Option<&str>,
    ) -> Result<KeyResource, ResolveFailure> {
        match id {
            "cloud" => return Ok(KeyResource::Cloud),
            "global" => return Ok(KeyResource::Global),
            "tableflow" => return Ok(KeyResource::Tableflow),
            _ => {}
        }
        if let Some(c) = self.kafka_clusters.get(id) {
            return Ok(KeyResource::Kafka {
                id: c.id.clone(),
                environment: c.environment.clone(),
            });
        }
        if let Some(c) = self.schema_registries.get(id) {
            return Ok(KeyResource::SchemaRegistry {
                id: c.id.clone(),
                environment: c.environment.clone(),
            });
        }
        if let Some(k) = self.ksqldb_clusters.get(id) {
            return Ok(KeyResource::Ksql {
                id: k.id.clone(),
                environment: k.environment.clone(),
                kafka_cluster: k.kafka_cluster.clone(),
            });
        }
        if seed::is_flink_region(id) {
            let env = environment.ok_or(ResolveFailure::MissingEnvironment)?;
            if !self.environments.contains_key(env) {
                return Err(ResolveFailure::UnknownEnvironment);
            }
            return Ok(KeyResource::Flink {
                region: id.to_owned(),
                environment: env.to_owned(),
            });
        }
        Err(ResolveFailure::Unknown)
    }

    /// Whether `key_id:secret` is a live Cloud or Global key.
    pub(crate) fn authenticates(&self, key_id: &str, secret: &str) -> bool {
        match self.api_keys.get(key_id) {
            Some(key) => key.digest.matches(secret) && key.resource.can_manage(),
            None => {
                // Spend the same digest work for unknown ids, so timing does not tell them apart.
                let _ = SecretDigest::of(secret);
                false
            }
        }
    }

    /// The owner of a live API key (who a request authenticated with it is).
    /// The user whose email (any case) and password these are.
    pub(crate) fn user_by_login(&self, email: &str, password: &str) -> Option<String> {
        self.users
            .values()
            .find(|u| {
                u.email.eq_ignore_ascii_case(email) && u.password.as_deref() == Some(password)
            })
            .map(|u| u.id.clone())
    }

    pub(crate) fn key_owner(&self, key_id: &str) -> Option<&str> {
        self.api_keys.get(key_id).map(|k| k.owner.as_str())
    }

    /// Confluent's rule for reading, changing and deleting an API key (and so for seeing it in a
    /// list): its owner may, an OrganizationAdmin may, and so may a ResourceOwner on the service
    /// account that owns it. Nobody else — not an EnvironmentAdmin, not a DeveloperRead user.
    pub(crate) fn may_manage_key(&self, caller: &str, key: &ApiKey, org: &str) -> bool {
        if key.owner == caller {
            return true;
        }
        let principal = format!("User:{caller}");
        let org_crn = format!("crn://confluent.cloud/organization={org}");
        let owner_crn = format!("{org_crn}/service-account={}", key.owner);
        let covers = |pattern: &str, crn: &str| match pattern.strip_suffix('*') {
            Some(prefix) => crn.starts_with(prefix),
            None => pattern == crn,
        };
        self.role_bindings.values().any(|rb| {
            rb.principal == principal
                && match rb.role_name.as_str() {
                    "OrganizationAdmin" => rb.crn_pattern == org_crn,
                    "ResourceOwner" => {
                        key.owner.starts_with("sa-") && covers(&rb.crn_pattern, &owner_crn)
                    }
                    _ => false,
                }
        })
    }

    /// Whether `caller` holds OrganizationAdmin on the organisation (and so may manage every key).
    pub(crate) fn is_organization_admin(&self, caller: &str, org: &str) -> bool {
        let principal = format!("User:{caller}");
        let org_crn = format!("crn://confluent.cloud/organization={org}");
        self.role_bindings.values().any(|rb| {
            rb.principal == principal
                && rb.role_name == "OrganizationAdmin"
                && rb.crn_pattern == org_crn
        })
    }

    /// Deletes a user or service account together with its keys, the role bindings it holds
    /// and the role bindings on it (docs/confluent-api.md §8). Returns whether it existed.
    pub(crate) fn delete_identity(&mut self, id: &str, own_crn: &str) -> bool {
        let existed = self.users.remove(id).is_some() || self.service_accounts.remove(id).is_some();
        if existed {
            let principal = format!("User:{id}");
            self.api_keys.retain(|_, k| k.owner != id);
            self.role_bindings
                .retain(|_, rb| rb.principal != principal && rb.crn_pattern != own_crn);
        }
        existed
    }
}

/// The current time in Confluent's timestamp format (`2025-03-01T10:00:00.000000Z`).
pub(crate) fn now() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}
