//! The replayable decision input: everything [`super::decide`] used for one governed request,
//! recorded with the decision in its audit event (`data.decisionInput`), so that
//! `keygate policy replay` can decide the same request again with other policies.
//!
//! It holds values, never a credential: the principal (id, kind, groups, how it authenticated —
//! not with what), the action, the key id, the body fields policies see (owner, resource,
//! `display_name`, `description`), the facts looked up (the owner's key count, the target key's
//! public fields, the quota counts), the role bindings that applied to the principal and the
//! inventory entries that located the resource (so replay can use the data as it was), the
//! revisions of matrix, policies, bindings and inventory, and the outcome.
//!
//! [`DecisionInput::capture`] builds it on the request path; [`DecisionInput::replay`] decides it
//! again with other rules.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::bindings::{BindingIndex, BindingIndexBuilder};
use super::crn::OrgId;
use super::decide::{Facts, Request, Response};
use super::decision::Decision;
use super::external::ExternalBindings;
use super::inventory::{ClusterKind, Inventory, InventoryBuilder};
use super::quota::{self, ClusterLoad, KeyScope};
use super::revision::PartRevisions;
use super::snapshot::AuthzSnapshot;
use super::source::KeyFacts;
use crate::model::{
    Action, AuthMethod, CreateSpec, External, ExternalSource, Principal, PrincipalKind,
    ResourceSpec, UpdateSpec,
};

/// Format version of [`DecisionInput`].
pub const VERSION: u32 = 1;

/// See the module doc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionInput {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// Who asked.
    pub principal: InputPrincipal,
    /// The action (`CreateApiKey`, …).
    pub action: String,
    /// The key id from the path (get, update, delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// A create's body fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<InputSpec>,
    /// An update's body fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<InputUpdate>,
    /// Request time, unix seconds (what policies saw as `context.time`).
    pub time: i64,
    /// The downstream address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<IpAddr>,
    /// The facts looked up.
    pub facts: InputFacts,
    /// The role bindings that applied to the principal (its own and its groups').
    pub bindings: Vec<InputBinding>,
    /// The inventory entries that located the resource.
    pub inventory: InputInventory,
    /// Which matrix, policies, bindings and inventory decided.
    pub revisions: InputRevisions,
    /// The outcome.
    pub outcome: InputOutcome,
}

/// The principal, without its credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputPrincipal {
    /// `u-…`, `sa-…`, `pool-…`.
    pub id: String,
    /// `User`, `ServiceAccount`, `IdentityPool`.
    pub kind: String,
    /// Its groups from the identity stage.
    #[serde(default)]
    pub groups: Vec<String>,
    /// How it authenticated (`api_key`, `directory`, `jwt`, `mtls`, `confluent_session`).
    pub authenticated_by: String,
    /// The company identity behind it, when there is one (`kind` `External`: the only identity,
    /// no Confluent principal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<InputExternal>,
}

/// The company identity behind a principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputExternal {
    /// The external principal.
    pub id: String,
    /// `jwt`, `mtls` or `oauth`.
    pub source: String,
    /// The issuer URL, or the client certificate's issuer.
    pub issuer: String,
    /// Its groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A create's body fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputSpec {
    /// `spec.owner.id`.
    pub owner_id: String,
    /// `spec.resource.id`, absent for a Cloud key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// `spec.resource.environment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_environment: Option<String>,
    /// `spec.display_name`.
    pub display_name: String,
    /// `spec.description`.
    pub description: String,
}

/// An update's body fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputUpdate {
    /// `spec.display_name`, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `spec.description`, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The facts looked up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputFacts {
    /// How many keys the owner held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_key_count: Option<u64>,
    /// The existing key's public fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_key: Option<InputKey>,
    /// The quota counts of a create's clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<InputQuota>,
}

/// An existing key's public fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputKey {
    /// The key id.
    pub id: String,
    /// Its owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    /// Its resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// Its display name.
    pub display_name: String,
    /// Its description.
    pub description: String,
}

/// The quota counts of a create's clusters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputQuota {
    /// `kafka:<lkc-…>`, `global` or `other`.
    pub scope: String,
    /// The clusters with their keys; absent when the counts were unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Vec<InputLoad>>,
}

/// One cluster's key count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputLoad {
    /// `lkc-…`.
    pub id: String,
    /// Its kind, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Keys counting against it.
    pub keys: u64,
}

/// One role binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputBinding {
    /// The binding's principal id (the caller or one of its `group-…` ids), or for a keygate-side
    /// binding `External:<id>` / `ExternalGroup:<group>`.
    pub principal: String,
    /// The issuer a keygate-side binding is scoped to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The role.
    pub role: String,
    /// The CRN pattern.
    pub crn_pattern: String,
}

/// Inventory entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputInventory {
    /// Environments known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
    /// Clusters known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<InputCluster>,
}

/// One cluster of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputCluster {
    /// `lkc-…`, `lsrc-…`, `lksqlc-…`.
    pub id: String,
    /// Its environment.
    pub environment: String,
    /// A Kafka cluster's kind, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A ksqlDB cluster's Kafka cluster, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_cluster: Option<String>,
}

/// Revisions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputRevisions {
    /// The policy revision (the whole set).
    pub policy: String,
    /// Its parts.
    #[serde(flatten)]
    pub parts: PartRevisions,
}

/// What was decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputOutcome {
    /// `allow`, `deny`, `error` (denied because an enforced policy failed to evaluate) or
    /// `unavailable` (the decision could not be made: 503).
    pub decision: String,
    /// What denied (rule and policy ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_by: Vec<String>,
    /// Policies that failed to evaluate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Dry-run findings that would have denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<String>,
}

impl InputOutcome {
    /// The outcome of a response.
    pub fn of(response: &Response) -> InputOutcome {
        let errors: Vec<String> = response
            .org
            .iter()
            .flat_map(|o| o.errors.iter().map(|f| f.id.clone()))
            .collect();
        let enforced_error = response
            .org
            .as_ref()
            .is_some_and(|o| o.errors.iter().any(|f| f.mode == super::org::Mode::Enforce));
        let decision = if response.unavailable.is_some() {
            "unavailable"
        } else if response.allow {
            "allow"
        } else if enforced_error {
            "error"
        } else {
            "deny"
        };
        InputOutcome {
            decision: decision.to_owned(),
            denied_by: if response.allow {
                Vec::new()
            } else {
                response.denying_rule_ids().to_vec()
            },
            errors,
            dry_run: response.dry_run.clone(),
        }
    }
}

impl DecisionInput {
    /// The input of a decision: the request, the facts, the data that applied (from `snapshot`)
    /// and layer 1's `matrix` decision (which located the resource). The outcome is set with
    /// [`InputOutcome::of`] once decided.
    pub fn capture(
        request: &Request<'_>,
        facts: &Facts,
        snapshot: &AuthzSnapshot,
        matrix: &Decision,
    ) -> DecisionInput {
        let principal = request.principal;
        let bindings = super::rbac::applicable(snapshot, principal)
            .map(|(holder, b)| InputBinding {
                principal: holder.label(),
                issuer: holder.issuer().map(str::to_owned),
                role: b.role().to_owned(),
                crn_pattern: b.pattern().as_str().to_owned(),
            })
            .collect();
        let mut inventory = InputInventory::default();
        let target = &matrix.target;
        if let Some(env) = target.environment.as_deref() {
            if snapshot.inventory().has_environment(env) {
                inventory.environments.push(env.to_owned());
            }
        }
        for id in [
            target.resource_id.as_deref(),
            target.kafka_cluster.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(c) = snapshot.inventory().cluster(id) {
                inventory.clusters.push(InputCluster {
                    id: id.to_owned(),
                    environment: c.environment().to_owned(),
                    kind: c.kind().map(|k| k.as_str().to_owned()),
                    kafka_cluster: c.kafka_cluster().map(str::to_owned),
                });
            }
        }
        DecisionInput {
            version: VERSION,
            principal: InputPrincipal {
                id: principal.id().to_owned(),
                kind: principal.kind().as_str().to_owned(),
                groups: principal.groups().to_vec(),
                authenticated_by: principal.auth().as_str().to_owned(),
                external: principal.external().map(|e| InputExternal {
                    id: e.id.clone(),
                    source: e.source.as_str().to_owned(),
                    issuer: e.issuer.clone(),
                    groups: e.groups.clone(),
                }),
            },
            action: request.action.as_str().to_owned(),
            key_id: request.key_id.map(str::to_owned),
            spec: request.spec.map(|s| InputSpec {
                owner_id: s.owner_id.clone(),
                resource_id: s.resource.as_ref().map(|r| r.id.clone()),
                resource_environment: s.resource.as_ref().and_then(|r| r.environment.clone()),
                display_name: s.display_name.clone(),
                description: s.description.clone(),
            }),
            update: request.update.map(|u| InputUpdate {
                display_name: u.display_name.clone(),
                description: u.description.clone(),
            }),
            time: request.time,
            source_ip: request.source_ip,
            facts: InputFacts {
                owner_key_count: facts.owner_key_count,
                target_key: facts.target_key.as_ref().map(|k| InputKey {
                    id: k.id.clone(),
                    owner_id: k.owner_id.clone(),
                    resource_id: k.resource_id.clone(),
                    display_name: k.display_name.clone(),
                    description: k.description.clone(),
                }),
                quota: facts.quota.as_ref().map(|q| InputQuota {
                    scope: match &q.scope {
                        KeyScope::Kafka(id) => format!("kafka:{id}"),
                        KeyScope::Global => "global".to_owned(),
                        KeyScope::Other => "other".to_owned(),
                    },
                    clusters: q.loads.as_ref().map(|loads| {
                        loads
                            .iter()
                            .map(|l| InputLoad {
                                id: l.id.clone(),
                                kind: l.kind.map(|k| k.as_str().to_owned()),
                                keys: l.keys,
                            })
                            .collect()
                    }),
                }),
            },
            bindings,
            inventory,
            revisions: InputRevisions {
                policy: snapshot.revision().to_string(),
                parts: PartRevisions::clone(snapshot.parts()),
            },
            outcome: InputOutcome::default(),
        }
    }

    /// The recorded request, rebuilt: what [`DecisionInput::replay`] decides.
    pub fn rebuild(&self) -> Result<Rebuilt, String> {
        let action = Action::parse(&self.action)
            .ok_or_else(|| format!("unknown action `{}`", self.action))?;
        let auth = AuthMethod::Directory {
            key_id: String::new(),
        };
        let external = match &self.principal.external {
            None => None,
            Some(e) => Some(External {
                id: e.id.clone(),
                source: ExternalSource::parse(&e.source)
                    .ok_or_else(|| format!("unknown external source `{}`", e.source))?,
                issuer: e.issuer.clone(),
                groups: e.groups.clone(),
                broker_key_id: None,
            }),
        };
        let external_only = self.principal.kind == PrincipalKind::External.as_str();
        let principal = match (external_only, external) {
            (true, Some(external)) => Principal::external_only(external, auth),
            (true, None) => {
                return Err("a principal of kind `External` without its external identity".into())
            }
            (false, external) => {
                let p = Principal::new(self.principal.id.clone(), auth)
                    .map_err(|e| e.to_string())?
                    .with_groups(self.principal.groups.clone());
                match external {
                    Some(external) => p.with_external(external),
                    None => p,
                }
            }
        };
        let spec = self.spec.as_ref().map(|s| CreateSpec {
            owner_id: s.owner_id.clone(),
            resource: s.resource_id.as_ref().map(|id| ResourceSpec {
                id: id.clone(),
                environment: s.resource_environment.clone(),
            }),
            display_name: s.display_name.clone(),
            description: s.description.clone(),
        });
        let update = self.update.as_ref().map(|u| UpdateSpec {
            display_name: u.display_name.clone(),
            description: u.description.clone(),
        });
        let facts = Facts {
            owner_key_count: self.facts.owner_key_count,
            target_key: self.facts.target_key.as_ref().map(|k| KeyFacts {
                id: k.id.clone(),
                owner_id: k.owner_id.clone(),
                resource_id: k.resource_id.clone(),
                description: k.description.clone(),
                display_name: k.display_name.clone(),
            }),
            quota: self.facts.quota.as_ref().map(|q| quota::Facts {
                scope: match q.scope.strip_prefix("kafka:") {
                    Some(id) => KeyScope::Kafka(id.into()),
                    None if q.scope == "global" => KeyScope::Global,
                    None => KeyScope::Other,
                },
                loads: q.clusters.as_ref().map(|loads| {
                    loads
                        .iter()
                        .map(|l| ClusterLoad {
                            id: l.id.clone(),
                            kind: l.kind.as_deref().map(ClusterKind::parse),
                            keys: l.keys,
                        })
                        .collect()
                }),
            }),
        };
        Ok(Rebuilt {
            principal,
            action,
            spec,
            update,
            facts,
        })
    }

    /// The role bindings (Confluent's and keygate-side) and inventory as recorded, for
    /// organisation `org`.
    pub fn recorded_data(
        &self,
        org: &OrgId,
    ) -> Result<(BindingIndex, ExternalBindings, Inventory), String> {
        let mut bindings = BindingIndexBuilder::new(org.clone());
        let mut external = ExternalBindings::default();
        for b in &self.bindings {
            if b.principal.starts_with(crate::model::EXTERNAL_ID_PREFIX)
                || b.principal
                    .starts_with(super::external::EXTERNAL_GROUP_PREFIX)
            {
                external
                    .push(
                        &b.principal,
                        b.issuer.as_deref(),
                        &b.role,
                        &b.crn_pattern,
                        org,
                        None,
                    )
                    .map_err(|e| format!("recorded keygate-side role binding: {e}"))?;
                continue;
            }
            let prefix = if b.principal.starts_with("group-") {
                "Group:"
            } else {
                "User:"
            };
            bindings
                .push(&format!("{prefix}{}", b.principal), &b.role, &b.crn_pattern)
                .map_err(|e| format!("recorded role binding: {e}"))?;
        }
        let mut inventory = InventoryBuilder::new();
        let bad = |e: super::inventory::InventoryError| format!("recorded inventory: {e}");
        for env in self
            .inventory
            .environments
            .iter()
            .chain(self.inventory.clusters.iter().map(|c| &c.environment))
        {
            inventory.environment(env).map_err(bad)?;
        }
        for c in &self.inventory.clusters {
            let env = &c.environment;
            if c.id.starts_with("lkc-") {
                let kind = c.kind.as_deref().map(ClusterKind::parse);
                inventory.kafka_cluster_of_kind(&c.id, env, kind)
            } else if c.id.starts_with("lsrc-") {
                inventory.schema_registry(&c.id, env)
            } else {
                inventory.ksqldb_cluster(&c.id, env, c.kafka_cluster.as_deref())
            }
            .map_err(bad)?;
        }
        Ok((bindings.build(), external, inventory.build()))
    }

    /// A snapshot of `matrix` and `org` policies over the recorded bindings and inventory.
    pub fn recorded_snapshot(&self, current: &AuthzSnapshot) -> Result<AuthzSnapshot, String> {
        let (bindings, external, inventory) = self.recorded_data(current.org())?;
        Ok(AuthzSnapshot::new(
            Arc::clone(current.matrix_shared()),
            Arc::new(bindings),
            Arc::new(inventory),
            Instant::now(),
        )
        .with_org(current.org_policies().cloned())
        .with_external_bindings(Arc::new(external))
        .with_revision(current.revision().clone())
        .with_parts(current.parts().clone()))
    }
}

/// A recorded request, rebuilt.
#[derive(Debug)]
pub struct Rebuilt {
    /// The principal (with its groups; no credential).
    pub principal: Principal,
    /// The action.
    pub action: Action,
    /// A create's body.
    pub spec: Option<CreateSpec>,
    /// An update's body.
    pub update: Option<UpdateSpec>,
    /// The facts.
    pub facts: Facts,
}

impl Rebuilt {
    /// The request to decide, with `input`'s key id, time and address.
    pub fn request<'a>(&'a self, input: &'a DecisionInput, request_id: &'a str) -> Request<'a> {
        Request {
            principal: &self.principal,
            action: self.action,
            key_id: input.key_id.as_deref(),
            spec: self.spec.as_ref(),
            update: self.update.as_ref(),
            request_id,
            source_ip: input.source_ip,
            time: input.time,
        }
    }
}

#[cfg(test)]
mod tests;
