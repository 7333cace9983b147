//! `/org/v2/environments` and the cluster APIs (`/cmk/v2`, `/srcm/v3`, `/ksqldbcm/v2`).

use super::*;

pub(super) fn list_environments(call: &Call<'_>) -> Result<Response<SimBody>, ApiError> {
    let store = call.sim.store();
    let items: Vec<(&str, &store::Environment)> = store
        .environments
        .values()
        .map(|e| (e.id.as_str(), e))
        .collect();
    Listing {
        path: "/org/v2/environments",
        api_version: "org/v2",
        kind: "EnvironmentList",
        filters: Vec::new(),
    }
    .respond(call, &items, |e| render::environment(&call.ctx, e))
}

pub(super) fn get_environment(call: &Call<'_>, id: &str) -> Result<Response<SimBody>, ApiError> {
    let store = call.sim.store();
    let env = store
        .environments
        .get(id)
        .ok_or_else(|| missing("environment", id))?;
    Ok(json_response(
        StatusCode::OK,
        &render::environment(&call.ctx, env),
    ))
}

/// Which cluster API a path belongs to.
#[derive(Clone, Copy)]
pub(super) enum ClusterFamily {
    Kafka,
    SchemaRegistry,
    Ksql,
}

impl ClusterFamily {
    pub(super) fn of(api: &str, version: &str) -> Option<Self> {
        match (api, version) {
            ("cmk", "v2") => Some(Self::Kafka),
            ("srcm", "v3") => Some(Self::SchemaRegistry),
            ("ksqldbcm", "v2") => Some(Self::Ksql),
            _ => None,
        }
    }

    pub(super) fn path(self) -> &'static str {
        match self {
            Self::Kafka => "/cmk/v2/clusters",
            Self::SchemaRegistry => "/srcm/v3/clusters",
            Self::Ksql => "/ksqldbcm/v2/clusters",
        }
    }

    pub(super) fn api_version(self) -> &'static str {
        match self {
            Self::Kafka => "cmk/v2",
            Self::SchemaRegistry => "srcm/v3",
            Self::Ksql => "ksqldbcm/v2",
        }
    }
}

/// The required `environment` query parameter of the cluster APIs.
pub(super) fn environment_param<'a>(call: &'a Call<'_>) -> Result<&'a str, ApiError> {
    call.query
        .get("environment")
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_filter("environment", "the environment query parameter is required")
        })
}

/// Lists one environment's clusters; an unknown environment is 403, as Confluent answers.
pub(super) fn list_clusters(
    call: &Call<'_>,
    family: ClusterFamily,
) -> Result<Response<SimBody>, ApiError> {
    let env = environment_param(call)?;
    let store = call.sim.store();
    if !store.environments.contains_key(env) {
        return Err(ApiError::forbidden());
    }
    let listing = Listing {
        path: family.path(),
        api_version: family.api_version(),
        kind: "ClusterList",
        filters: vec![("environment", env)],
    };
    match family {
        ClusterFamily::Kafka | ClusterFamily::SchemaRegistry => {
            let map = match family {
                ClusterFamily::Kafka => &store.kafka_clusters,
                _ => &store.schema_registries,
            };
            let items: Vec<(&str, &store::Cluster)> = map
                .values()
                .filter(|c| c.environment == env)
                .map(|c| (c.id.as_str(), c))
                .collect();
            listing.respond(call, &items, |c| match family {
                ClusterFamily::Kafka => render::kafka_cluster(&call.ctx, c),
                _ => render::schema_registry(&call.ctx, c),
            })
        }
        ClusterFamily::Ksql => {
            let items: Vec<(&str, &store::KsqlCluster)> = store
                .ksqldb_clusters
                .values()
                .filter(|k| k.environment == env)
                .map(|k| (k.id.as_str(), k))
                .collect();
            listing.respond(call, &items, |k| {
                render::ksqldb_cluster(&call.ctx, k, store.kafka_clusters.get(&k.kafka_cluster))
            })
        }
    }
}

pub(super) fn get_cluster(
    call: &Call<'_>,
    family: ClusterFamily,
    id: &str,
) -> Result<Response<SimBody>, ApiError> {
    let env = environment_param(call)?;
    let store = call.sim.store();
    let body = match family {
        ClusterFamily::Kafka => store
            .kafka_clusters
            .get(id)
            .filter(|c| c.environment == env)
            .map(|c| render::kafka_cluster(&call.ctx, c)),
        ClusterFamily::SchemaRegistry => store
            .schema_registries
            .get(id)
            .filter(|c| c.environment == env)
            .map(|c| render::schema_registry(&call.ctx, c)),
        ClusterFamily::Ksql => store
            .ksqldb_clusters
            .get(id)
            .filter(|k| k.environment == env)
            .map(|k| {
                render::ksqldb_cluster(&call.ctx, k, store.kafka_clusters.get(&k.kafka_cluster))
            }),
    };
    let body = body.ok_or_else(|| missing("cluster", id))?;
    Ok(json_response(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests;
