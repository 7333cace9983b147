//! JSON views of store objects in Confluent's response shapes: `api_version`, `kind`, `id`,
//! `metadata` (absolute `self` link, CRN `resource_name`, timestamps), then the object's fields.
//!
//! Links are built on the simulator's public base URL and CRNs follow docs/confluent-api.md §6. This module
//! only renders; it never mutates the store and never sees a secret except the one it is handed
//! for a create response.

use serde_json::{json, Value};

use super::store::{ApiKey, Cluster, Environment, KeyResource, KsqlCluster, RoleBinding};
use super::store::{ServiceAccount, User};

/// The two things every link and CRN depends on.
pub(crate) struct Ctx<'a> {
    pub(crate) base: &'a str,
    pub(crate) org: &'a str,
}

// === impl Ctx: links and CRNs ===

impl Ctx<'_> {
    pub(crate) fn link(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn org_crn(&self) -> String {
        format!("crn://confluent.cloud/organization={}", self.org)
    }

    fn env_crn(&self, env: &str) -> String {
        format!("{}/environment={env}", self.org_crn())
    }

    fn cluster_crn(&self, env: &str, lkc: &str) -> String {
        format!("{}/cloud-cluster={lkc}", self.env_crn(env))
    }

    fn sr_crn(&self, env: &str, lsrc: &str) -> String {
        format!("{}/schema-registry={lsrc}", self.env_crn(env))
    }

    fn ksql_crn(&self, env: &str, lkc: &str, lksqlc: &str) -> String {
        format!("{}/ksql={lksqlc}", self.cluster_crn(env, lkc))
    }

    /// The CRN of a user (`u-…`) or service account (`sa-…`).
    pub(crate) fn identity_crn(&self, id: &str) -> String {
        if id.starts_with("sa-") {
            format!("{}/service-account={id}", self.org_crn())
        } else {
            format!("{}/user={id}", self.org_crn())
        }
    }

    fn identity_link(&self, id: &str) -> String {
        if id.starts_with("sa-") {
            self.link(&format!("/iam/v2/service-accounts/{id}"))
        } else {
            self.link(&format!("/iam/v2/users/{id}"))
        }
    }

    fn env_ref(&self, env: &str) -> Value {
        json!({
            "id": env,
            "related": self.link(&format!("/org/v2/environments/{env}")),
            "resource_name": self.env_crn(env),
        })
    }
}

fn metadata(self_link: String, crn: String, created_at: &str, updated_at: &str) -> Value {
    json!({
        "self": self_link,
        "resource_name": crn,
        "created_at": created_at,
        "updated_at": updated_at,
    })
}

/// The lower-case suffix of an id after its prefix (`lkc-prod01` → `prod01`), for endpoints.
fn suffix(id: &str) -> &str {
    id.split_once('-').map_or(id, |(_, s)| s)
}

// === API keys ===

/// An API key; `secret` is only `Some` in the create response.
pub(crate) fn api_key(ctx: &Ctx<'_>, key: &ApiKey, secret: Option<&str>) -> Value {
    json!({
        "api_version": "iam/v2",
        "kind": "ApiKey",
        "id": key.id,
        "metadata": metadata(
            ctx.link(&format!("/iam/v2/api-keys/{}", key.id)),
            format!("{}/api-key={}", ctx.identity_crn(&key.owner), key.id),
            &key.created_at,
            &key.updated_at,
        ),
        "spec": {
            "display_name": key.display_name,
            "description": key.description,
            "secret": secret.unwrap_or(""),
            "owner": owner_ref(ctx, &key.owner),
            "resource": resource_ref(ctx, &key.resource),
        },
    })
}

fn owner_ref(ctx: &Ctx<'_>, owner: &str) -> Value {
    let kind = if owner.starts_with("sa-") {
        "ServiceAccount"
    } else {
        "User"
    };
    json!({
        "id": owner,
        "api_version": "iam/v2",
        "kind": kind,
        "related": ctx.identity_link(owner),
        "resource_name": ctx.identity_crn(owner),
    })
}

/// `spec.resource` of a key, with the `api_version`/`kind` pairs of docs/confluent-api.md §2.3.
fn resource_ref(ctx: &Ctx<'_>, resource: &KeyResource) -> Value {
    let org_level = |api_version: &str, kind: &str| {
        json!({
            "id": resource.id(),
            "api_version": api_version,
            "kind": kind,
            "related": ctx.link(&format!("/org/v2/organizations/{}", ctx.org)),
            "resource_name": ctx.org_crn(),
        })
    };
    match resource {
        KeyResource::Cloud => org_level("iam/v2", "Cloud"),
        KeyResource::Global => org_level("global/v1", "Global"),
        KeyResource::Tableflow => org_level("tableflow/v1", "Tableflow"),
        KeyResource::Kafka { id, environment } => json!({
            "id": id,
            "environment": environment,
            "api_version": "cmk/v2",
            "kind": "Cluster",
            "related": ctx.link(&format!("/cmk/v2/clusters/{id}")),
            "resource_name": ctx.cluster_crn(environment, id),
        }),
        KeyResource::SchemaRegistry { id, environment } => json!({
            "id": id,
            "environment": environment,
            "api_version": "srcm/v3",
            "kind": "SchemaRegistry",
            "related": ctx.link(&format!("/srcm/v3/clusters/{id}")),
            "resource_name": ctx.sr_crn(environment, id),
        }),
        KeyResource::Ksql {
            id,
            environment,
            kafka_cluster,
        } => json!({
            "id": id,
            "environment": environment,
            "api_version": "ksqldbcm/v2",
            "kind": "ksqlDB",
            "related": ctx.link(&format!("/ksqldbcm/v2/clusters/{id}")),
            "resource_name": ctx.ksql_crn(environment, kafka_cluster, id),
        }),
        KeyResource::Flink {
            region,
            environment,
        } => json!({
            "id": region,
            "environment": environment,
            "api_version": "fcpm/v2",
            "kind": "Region",
            "related": ctx.link(&format!("/fcpm/v2/regions/{region}")),
            "resource_name": format!("{}/flink-region={region}", ctx.env_crn(environment)),
        }),
    }
}

// === IAM objects ===

pub(crate) fn role_binding(ctx: &Ctx<'_>, rb: &RoleBinding) -> Value {
    json!({
        "api_version": "iam/v2",
        "kind": "RoleBinding",
        "id": rb.id,
        "metadata": {
            "self": ctx.link(&format!("/iam/v2/role-bindings/{}", rb.id)),
            "resource_name": format!("{}/role-binding={}", ctx.org_crn(), rb.id),
        },
        "principal": rb.principal,
        "role_name": rb.role_name,
        "crn_pattern": rb.crn_pattern,
    })
}

pub(crate) fn service_account(ctx: &Ctx<'_>, sa: &ServiceAccount) -> Value {
    json!({
        "api_version": "iam/v2",
        "kind": "ServiceAccount",
        "id": sa.id,
        "metadata": metadata(
            ctx.identity_link(&sa.id),
            ctx.identity_crn(&sa.id),
            &sa.created_at,
            &sa.updated_at,
        ),
        "display_name": sa.display_name,
        "description": sa.description,
    })
}

pub(crate) fn user(ctx: &Ctx<'_>, u: &User) -> Value {
    json!({
        "api_version": "iam/v2",
        "kind": "User",
        "id": u.id,
        "metadata": metadata(
            ctx.identity_link(&u.id),
            ctx.identity_crn(&u.id),
            &u.created_at,
            &u.updated_at,
        ),
        "email": u.email,
        "full_name": u.full_name,
        "auth_type": "AUTH_TYPE_LOCAL",
    })
}

// === Org and cluster objects ===

pub(crate) fn environment(ctx: &Ctx<'_>, env: &Environment) -> Value {
    json!({
        "api_version": "org/v2",
        "kind": "Environment",
        "id": env.id,
        "metadata": metadata(
            ctx.link(&format!("/org/v2/environments/{}", env.id)),
            ctx.env_crn(&env.id),
            &env.created_at,
            &env.created_at,
        ),
        "display_name": env.display_name,
        "stream_governance_config": { "package": "ESSENTIALS" },
    })
}

fn host(prefix: &str, id: &str, cloud: &str, region: &str) -> String {
    format!(
        "{prefix}-{}.{region}.{}.confluent.cloud",
        suffix(id),
        cloud.to_ascii_lowercase()
    )
}

pub(crate) fn kafka_cluster(ctx: &Ctx<'_>, c: &Cluster) -> Value {
    let pkc = host("pkc", &c.id, &c.cloud, &c.region);
    json!({
        "api_version": "cmk/v2",
        "kind": "Cluster",
        "id": c.id,
        "metadata": metadata(
            ctx.link(&format!("/cmk/v2/clusters/{}", c.id)),
            ctx.cluster_crn(&c.environment, &c.id),
            &c.created_at,
            &c.created_at,
        ),
        "spec": {
            "display_name": c.display_name,
            "availability": "SINGLE_ZONE",
            "cloud": c.cloud,
            "region": c.region,
            "config": { "kind": c.kind },
            "kafka_bootstrap_endpoint": format!("SASL_SSL://{pkc}:9092"),
            "http_endpoint": format!("https://{pkc}:443"),
            "api_endpoint": format!("https://{}", host("pkac", &c.id, &c.cloud, &c.region)),
            "environment": ctx.env_ref(&c.environment),
        },
        "status": { "phase": "PROVISIONED" },
    })
}

pub(crate) fn schema_registry(ctx: &Ctx<'_>, c: &Cluster) -> Value {
    json!({
        "api_version": "srcm/v3",
        "kind": "Cluster",
        "id": c.id,
        "metadata": metadata(
            ctx.link(&format!("/srcm/v3/clusters/{}", c.id)),
            ctx.sr_crn(&c.environment, &c.id),
            &c.created_at,
            &c.created_at,
        ),
        "spec": {
            "display_name": c.display_name,
            "package": "ESSENTIALS",
            "http_endpoint": format!("https://{}", host("psrc", &c.id, &c.cloud, &c.region)),
            "cloud": c.cloud,
            "region": c.region,
            "environment": ctx.env_ref(&c.environment),
        },
        "status": { "phase": "PROVISIONED" },
    })
}

/// A ksqlDB cluster; `kafka` is its Kafka cluster when it still exists (for the endpoint host).
pub(crate) fn ksqldb_cluster(ctx: &Ctx<'_>, k: &KsqlCluster, kafka: Option<&Cluster>) -> Value {
    let (cloud, region) = kafka.map_or(("AWS", "us-east-1"), |c| {
        (c.cloud.as_str(), c.region.as_str())
    });
    json!({
        "api_version": "ksqldbcm/v2",
        "kind": "Cluster",
        "id": k.id,
        "metadata": metadata(
            ctx.link(&format!("/ksqldbcm/v2/clusters/{}", k.id)),
            ctx.ksql_crn(&k.environment, &k.kafka_cluster, &k.id),
            &k.created_at,
            &k.created_at,
        ),
        "spec": {
            "display_name": k.display_name,
            "csu": 1,
            "use_detailed_processing_log": true,
            "http_endpoint": format!("https://{}:443", host("pksqlc", &k.id, cloud, region)),
            "kafka_cluster": {
                "id": k.kafka_cluster,
                "environment": k.environment,
                "related": ctx.link(&format!("/cmk/v2/clusters/{}", k.kafka_cluster)),
                "resource_name": ctx.cluster_crn(&k.environment, &k.kafka_cluster),
            },
            "environment": ctx.env_ref(&k.environment),
        },
        "status": {
            "phase": "PROVISIONED",
            "is_paused": false,
            "storage": 125,
            "topic_prefix": format!("pksqlc-{}", suffix(&k.id)),
        },
    })
}
