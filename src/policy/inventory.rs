//! The resource inventory: which environments exist, which environment each Kafka, Schema Registry
//! and ksqlDB cluster belongs to, which Kafka cluster a ksqlDB cluster runs on, and each Kafka
//! cluster's type (`spec.config.kind`: Basic, Standard, Enterprise, Dedicated, Freight), which
//! decides whether a Global key counts against its API-key quota.
//!
//! The layer-1 decision needs it to build a resource's CRN, so that an environment- or
//! cluster-scoped binding can be checked. Two sources produce the same [`Inventory`]: a TOML file
//! in `policies/` and a sync from the upstream (see `source`), both through [`InventoryBuilder`].
//! This module does not fetch, cache or decide.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;

/// Why an inventory (or an inventory file) was rejected.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file is not valid TOML for the inventory schema.
    #[error("invalid inventory: {0}")]
    Toml(#[from] toml::de::Error),
    /// An id does not have the expected prefix or contains characters ids never have.
    #[error("`{id}`: expected a {what} id (`{prefix}…`)")]
    Id {
        /// The first characters of the rejected id.
        id: String,
        /// What kind of id was expected.
        what: &'static str,
        /// The expected prefix.
        prefix: &'static str,
    },
    /// A cluster names an environment that was not added first.
    #[error("cluster `{cluster}`: unknown environment `{environment}`")]
    UnknownEnvironment {
        /// The cluster.
        cluster: String,
        /// The environment it names.
        environment: String,
    },
    /// The same cluster id appears twice with different data.
    #[error("cluster `{cluster}`: listed twice with different environments or Kafka clusters")]
    Conflict {
        /// The cluster.
        cluster: String,
    },
    /// In a file, a Kafka cluster's kind is not one Confluent has.
    #[error("Kafka cluster `{cluster}`: unknown kind `{kind}` (Basic, Standard, Enterprise, Dedicated or Freight)")]
    Kind {
        /// The cluster.
        cluster: String,
        /// The kind given.
        kind: String,
    },
    /// In a file, a ksqlDB cluster names a Kafka cluster that is not listed in its environment.
    #[error("ksqlDB cluster `{ksqldb}`: Kafka cluster `{kafka}` is not listed in environment `{environment}`")]
    KsqlKafkaCluster {
        /// The ksqlDB cluster.
        ksqldb: String,
        /// The Kafka cluster it names.
        kafka: String,
        /// Its environment.
        environment: String,
    },
}

/// A Kafka cluster's type, as `/cmk/v2/clusters` reports it in `spec.config.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClusterKind {
    /// `Basic`.
    Basic,
    /// `Standard`.
    Standard,
    /// `Enterprise`.
    Enterprise,
    /// `Dedicated`.
    Dedicated,
    /// `Freight`.
    Freight,
    /// A kind keygate does not know (Confluent added one).
    Other,
}

impl ClusterKind {
    /// Parses Confluent's spelling (case-insensitively); anything else is [`ClusterKind::Other`].
    pub fn parse(kind: &str) -> ClusterKind {
        const KINDS: [(&str, ClusterKind); 5] = [
            ("basic", ClusterKind::Basic),
            ("standard", ClusterKind::Standard),
            ("enterprise", ClusterKind::Enterprise),
            ("dedicated", ClusterKind::Dedicated),
            ("freight", ClusterKind::Freight),
        ];
        KINDS
            .iter()
            .find(|(name, _)| kind.eq_ignore_ascii_case(name))
            .map_or(ClusterKind::Other, |(_, k)| *k)
    }

    /// Confluent's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterKind::Basic => "Basic",
            ClusterKind::Standard => "Standard",
            ClusterKind::Enterprise => "Enterprise",
            ClusterKind::Dedicated => "Dedicated",
            ClusterKind::Freight => "Freight",
            ClusterKind::Other => "Other",
        }
    }
}

/// Where a cluster lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    environment: Box<str>,
    kafka_cluster: Option<Box<str>>,
    kind: Option<ClusterKind>,
}

impl Cluster {
    /// A Kafka cluster's type, when known (the upstream always says; a file may not).
    pub fn kind(&self) -> Option<ClusterKind> {
        self.kind
    }

    /// The environment id (`env-…`).
    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// For a ksqlDB cluster, the Kafka cluster it runs on, when known.
    pub fn kafka_cluster(&self) -> Option<&str> {
        self.kafka_cluster.as_deref()
    }
}

/// Environments and clusters of one organisation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    environments: HashSet<Box<str>>,
    clusters: HashMap<Box<str>, Cluster>,
}

impl Inventory {
    /// Parses and validates an inventory file's text.
    pub fn from_toml_str(text: &str) -> Result<Self, InventoryError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawFile {
            #[serde(default)]
            environments: BTreeMap<String, RawEnvironment>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum RawKafka {
            Id(String),
            WithKind { id: String, kind: String },
        }
        impl RawKafka {
            fn id(&self) -> &str {
                match self {
                    RawKafka::Id(id) | RawKafka::WithKind { id, .. } => id,
                }
            }
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawEnvironment {
            #[serde(default)]
            kafka_clusters: Vec<RawKafka>,
            #[serde(default)]
            schema_registries: Vec<String>,
            #[serde(default)]
            ksqldb_clusters: Vec<RawKsqlDb>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawKsqlDb {
            id: String,
            kafka_cluster: Option<String>,
        }
        let raw: RawFile = toml::from_str(text)?;
        let mut b = InventoryBuilder::new();
        for (env, e) in &raw.environments {
            b.environment(env)?;
            for k in &e.kafka_clusters {
                match k {
                    RawKafka::Id(id) => b.kafka_cluster(id, env)?,
                    RawKafka::WithKind { id, kind } => match ClusterKind::parse(kind) {
                        ClusterKind::Other => {
                            return Err(InventoryError::Kind {
                                cluster: id.clone(),
                                kind: kind.chars().take(64).collect(),
                            })
                        }
                        kind => b.kafka_cluster_of_kind(id, env, Some(kind))?,
                    },
                }
            }
            for id in &e.schema_registries {
                b.schema_registry(id, env)?;
            }
            for k in &e.ksqldb_clusters {
                if let Some(kafka) = &k.kafka_cluster {
                    if !e.kafka_clusters.iter().any(|c| c.id() == kafka) {
                        return Err(InventoryError::KsqlKafkaCluster {
                            ksqldb: k.id.clone(),
                            kafka: kafka.clone(),
                            environment: env.clone(),
                        });
                    }
                }
                b.ksqldb_cluster(&k.id, env, k.kafka_cluster.as_deref())?;
            }
        }
        Ok(b.build())
    }

    /// A Kafka (`lkc-`), Schema Registry (`lsrc-`) or ksqlDB (`lksqlc-`) cluster.
    pub fn cluster(&self, id: &str) -> Option<&Cluster> {
        self.clusters.get(id)
    }

    /// Whether the environment exists.
    pub fn has_environment(&self, id: &str) -> bool {
        self.environments.contains(id)
    }

    /// Number of environments.
    pub fn environment_count(&self) -> usize {
        self.environments.len()
    }

    /// Number of clusters of all kinds.
    pub fn cluster_count(&self) -> usize {
        self.clusters.len()
    }

    /// Every Kafka cluster (`lkc-…`) with its kind when known.
    pub fn kafka_clusters(&self) -> impl Iterator<Item = (&str, Option<ClusterKind>)> {
        self.clusters
            .iter()
            .filter(|(id, _)| id.starts_with("lkc-"))
            .map(|(id, c)| (&**id, c.kind))
    }
}

/// Builds an [`Inventory`], validating ids; add an environment before its clusters.
#[derive(Debug, Default)]
pub struct InventoryBuilder {
    inventory: Inventory,
}

impl InventoryBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an environment (`env-…`); adding it again is a no-op.
    pub fn environment(&mut self, id: &str) -> Result<(), InventoryError> {
        check_id(id, "environment", "env-")?;
        self.inventory.environments.insert(Box::from(id));
        Ok(())
    }

    /// Adds a Kafka cluster (`lkc-…`) in an environment, of unknown kind.
    pub fn kafka_cluster(&mut self, id: &str, environment: &str) -> Result<(), InventoryError> {
        self.kafka_cluster_of_kind(id, environment, None)
    }

    /// Adds a Kafka cluster (`lkc-…`) in an environment, with its kind when known.
    pub fn kafka_cluster_of_kind(
        &mut self,
        id: &str,
        environment: &str,
        kind: Option<ClusterKind>,
    ) -> Result<(), InventoryError> {
        check_id(id, "Kafka cluster", "lkc-")?;
        self.cluster(id, environment, None, kind)
    }

    /// Adds a Schema Registry cluster (`lsrc-…`) in an environment.
    pub fn schema_registry(&mut self, id: &str, environment: &str) -> Result<(), InventoryError> {
        check_id(id, "Schema Registry cluster", "lsrc-")?;
        self.cluster(id, environment, None, None)
    }

    /// Adds a ksqlDB cluster (`lksqlc-…`) in an environment, with its Kafka cluster when known.
    pub fn ksqldb_cluster(
        &mut self,
        id: &str,
        environment: &str,
        kafka_cluster: Option<&str>,
    ) -> Result<(), InventoryError> {
        check_id(id, "ksqlDB cluster", "lksqlc-")?;
        if let Some(kafka) = kafka_cluster {
            check_id(kafka, "Kafka cluster", "lkc-")?;
        }
        self.cluster(id, environment, kafka_cluster, None)
    }

    fn cluster(
        &mut self,
        id: &str,
        environment: &str,
        kafka_cluster: Option<&str>,
        kind: Option<ClusterKind>,
    ) -> Result<(), InventoryError> {
        if !self.inventory.environments.contains(environment) {
            return Err(InventoryError::UnknownEnvironment {
                cluster: id.to_owned(),
                environment: environment.chars().take(64).collect(),
            });
        }
        let cluster = Cluster {
            environment: Box::from(environment),
            kafka_cluster: kafka_cluster.map(Box::from),
            kind,
        };
        match self.inventory.clusters.get(id) {
            Some(existing) if *existing == cluster => Ok(()),
            Some(_) => Err(InventoryError::Conflict {
                cluster: id.to_owned(),
            }),
            None => {
                self.inventory.clusters.insert(Box::from(id), cluster);
                Ok(())
            }
        }
    }

    /// The finished inventory.
    pub fn build(self) -> Inventory {
        self.inventory
    }
}

/// Ids are opaque, but the ones keygate puts into CRNs must have their prefix and plain characters.
pub(crate) fn is_plain_id(id: &str, prefix: &str) -> bool {
    id.len() > prefix.len()
        && id.len() <= 255
        && id.starts_with(prefix)
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_id(id: &str, what: &'static str, prefix: &'static str) -> Result<(), InventoryError> {
    if is_plain_id(id, prefix) {
        Ok(())
    } else {
        Err(InventoryError::Id {
            id: id.chars().take(64).collect(),
            what,
            prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_maps_clusters_to_environments() {
        let inv = Inventory::from_toml_str(
            r#"
            [environments.env-a]
            kafka_clusters = ["lkc-1"]
            schema_registries = ["lsrc-1"]
            ksqldb_clusters = [{ id = "lksqlc-1", kafka_cluster = "lkc-1" }, { id = "lksqlc-2" }]
            [environments.env-b]
            "#,
        )
        .unwrap();
        assert_eq!(inv.cluster("lkc-1").unwrap().environment(), "env-a");
        assert_eq!(inv.cluster("lsrc-1").unwrap().environment(), "env-a");
        assert_eq!(
            inv.cluster("lksqlc-1").unwrap().kafka_cluster(),
            Some("lkc-1")
        );
        assert_eq!(inv.cluster("lksqlc-2").unwrap().kafka_cluster(), None);
        assert!(inv.has_environment("env-b"));
        assert!(inv.cluster("lkc-2").is_none());
        assert_eq!((inv.environment_count(), inv.cluster_count()), (2, 4));
    }

    #[test]
    fn wrong_prefixes_are_rejected() {
        for text in [
            "[environments.prod]",
            "[environments.env-a]\nkafka_clusters = [\"lsrc-1\"]",
            "[environments.env-a]\nschema_registries = [\"lkc-1\"]",
            "[environments.env-a]\nkafka_clusters = [\"lkc-1/x\"]",
            "[environments.env-a]\nksqldb_clusters = [{ id = \"lkc-1\" }]",
        ] {
            assert!(
                matches!(
                    Inventory::from_toml_str(text),
                    Err(InventoryError::Id { .. })
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn cluster_in_two_environments_is_a_conflict() {
        let text = "[environments.env-a]\nkafka_clusters = [\"lkc-1\"]\n[environments.env-b]\nkafka_clusters = [\"lkc-1\"]";
        assert!(matches!(
            Inventory::from_toml_str(text),
            Err(InventoryError::Conflict { .. })
        ));
    }

    #[test]
    fn ksqldb_must_name_a_kafka_cluster_of_its_environment_in_a_file() {
        let text = "[environments.env-a]\nksqldb_clusters = [{ id = \"lksqlc-1\", kafka_cluster = \"lkc-9\" }]";
        assert!(matches!(
            Inventory::from_toml_str(text),
            Err(InventoryError::KsqlKafkaCluster { .. })
        ));
    }

    #[test]
    fn clusters_need_a_known_environment() {
        let mut b = InventoryBuilder::new();
        assert!(matches!(
            b.kafka_cluster("lkc-1", "env-x"),
            Err(InventoryError::UnknownEnvironment { .. })
        ));
        b.environment("env-x").unwrap();
        b.kafka_cluster("lkc-1", "env-x").unwrap();
        b.kafka_cluster("lkc-1", "env-x").unwrap();
        assert_eq!(b.build().cluster_count(), 1);
    }

    #[test]
    fn kafka_clusters_may_name_their_kind() {
        let inv = Inventory::from_toml_str(
            "[environments.env-a]\nkafka_clusters = [\"lkc-1\", { id = \"lkc-2\", kind = \"Dedicated\" }]",
        )
        .unwrap();
        assert_eq!(inv.cluster("lkc-1").unwrap().kind(), None);
        assert_eq!(
            inv.cluster("lkc-2").unwrap().kind(),
            Some(ClusterKind::Dedicated)
        );
        let mut all: Vec<_> = inv.kafka_clusters().collect();
        all.sort();
        assert_eq!(
            all,
            [("lkc-1", None), ("lkc-2", Some(ClusterKind::Dedicated))]
        );
        assert!(matches!(
            Inventory::from_toml_str(
                "[environments.env-a]\nkafka_clusters = [{ id = \"lkc-2\", kind = \"Huge\" }]"
            ),
            Err(InventoryError::Kind { .. })
        ));
        assert_eq!(ClusterKind::parse("FREIGHT"), ClusterKind::Freight);
        assert_eq!(ClusterKind::parse("Quantum"), ClusterKind::Other);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(matches!(
            Inventory::from_toml_str("[environments.env-a]\nkafka = [\"lkc-1\"]"),
            Err(InventoryError::Toml(_))
        ));
    }
}
