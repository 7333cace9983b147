//! What a governed request targets: the key type (one column of Confluent's creation matrix) and
//! the owner, resource and environment a decision resolved.

use std::fmt;

/// The resource type of an API key (docs/confluent-api.md §2.3), one column of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// Resource-management (Cloud) key; org level.
    Cloud,
    /// `lkc-…`
    Kafka,
    /// `lsrc-…`
    SchemaRegistry,
    /// `<cloud>.<region>` in an environment.
    Flink,
    /// `tableflow`; org level.
    Tableflow,
    /// `lksqlc-…`
    KsqlDb,
    /// `global`; org level.
    Global,
}

impl ResourceType {
    /// Every resource type, in the reference's column order.
    pub const ALL: [ResourceType; 7] = [
        ResourceType::Cloud,
        ResourceType::Kafka,
        ResourceType::SchemaRegistry,
        ResourceType::Flink,
        ResourceType::Tableflow,
        ResourceType::KsqlDb,
        ResourceType::Global,
    ];

    /// The column name in `matrix.toml`, also the stable name in audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Cloud => "Cloud",
            ResourceType::Kafka => "Kafka",
            ResourceType::SchemaRegistry => "SchemaRegistry",
            ResourceType::Flink => "Flink",
            ResourceType::Tableflow => "Tableflow",
            ResourceType::KsqlDb => "KsqlDb",
            ResourceType::Global => "Global",
        }
    }

    /// The name a developer knows, for explanations.
    pub fn label(self) -> &'static str {
        match self {
            ResourceType::SchemaRegistry => "Schema Registry",
            ResourceType::KsqlDb => "ksqlDB",
            other => other.as_str(),
        }
    }

    /// Cloud, Global and Tableflow keys belong to the organisation, not to a cluster.
    pub fn is_org_level(self) -> bool {
        matches!(
            self,
            ResourceType::Cloud | ResourceType::Global | ResourceType::Tableflow
        )
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a create request targets, as resolved by the decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// `spec.owner.id` as sent.
    pub owner_id: Option<String>,
    /// The key type, when the resource id was recognised.
    pub resource_type: Option<ResourceType>,
    /// `spec.resource.id` as sent (`cloud` when the resource was absent).
    pub resource_id: Option<String>,
    /// The resource's environment: from the inventory for clusters, from the body for Flink.
    pub environment: Option<String>,
    /// For a ksqlDB cluster, its Kafka cluster when the inventory knows it.
    pub kafka_cluster: Option<String>,
}
