//! Building the Cedar request for one governed request: principal and resource entities and the
//! per-action context record (see `policies/keygate.cedarschema`), directly as Cedar values —
//! no JSON text and no expression evaluation on the hot path.
//!
//! The values are built with `cedar-policy-core`'s types, under the `cedar-policy` API: building
//! them through `RestrictedExpression`s means building an expression per value and evaluating it
//! again (9 µs of a create's 20 µs, measured), while a record of values costs a fraction of that.
//! Constant parts (the `params` record, source addresses) are built once.
//!
//! The shape of what is built here IS the schema's promise to policy authors; the tests check
//! every action's request against the schema.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use cedar_policy::{ActionConstraint, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use cedar_policy_core::ast::{self, EntityUIDEntry, PartialValue, Value, ValueKind};
use cedar_policy_core::entities::{Entities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;
use regex::RegexSet;

use super::config::ParamValue;
use super::{OrgInput, OrgPolicies, TargetKey, TeamSet};
use crate::model::Action;
use crate::model::PrincipalKind;

/// Entity id of the resource of a create request: the key does not exist yet.
pub(crate) const NEW_KEY_ID: &str = "new";
/// Entity id of the resource of a list request.
pub(crate) const ALL_KEYS_ID: &str = "*";
/// `Owner.kind` for an owner id that is not `u-…`, `sa-…` or `pool-…`.
pub(crate) const UNKNOWN_KIND: &str = "Unknown";

/// The governed actions, in the order of [`action_index`].
pub(crate) const ACTIONS: [Action; 5] = [
    Action::CreateApiKey,
    Action::ListApiKeys,
    Action::GetApiKey,
    Action::UpdateApiKey,
    Action::DeleteApiKey,
];

/// Entity type names and action uids, parsed once per load.
pub(crate) struct Vocabulary {
    user: EntityTypeName,
    service_account: EntityTypeName,
    identity_pool: EntityTypeName,
    external: EntityTypeName,
    api_key: EntityTypeName,
    actions: [EntityUid; 5],
}

impl Vocabulary {
    pub(crate) fn new() -> Result<Self, String> {
        let ty = |s: &str| s.parse::<EntityTypeName>().map_err(|e| e.to_string());
        let action_type = ty("Action")?;
        let action = |a: Action| {
            EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(a.as_str()))
        };
        Ok(Vocabulary {
            user: ty("User")?,
            service_account: ty("ServiceAccount")?,
            identity_pool: ty("IdentityPool")?,
            external: ty("ExternalPrincipal")?,
            api_key: ty("ApiKey")?,
            actions: ACTIONS.map(action),
        })
    }

    /// The actions (indexes into [`ACTIONS`]) an action scope can match. A scope naming anything
    /// but the five actions (an action group of a customised schema) can match every action, so
    /// splitting a set per action never drops a policy that could apply.
    pub(crate) fn actions_of(&self, constraint: &ActionConstraint) -> Vec<usize> {
        let known = |uid: &EntityUid| self.actions.iter().position(|a| a == uid);
        let all = || (0..ACTIONS.len()).collect();
        match constraint {
            ActionConstraint::Any => all(),
            ActionConstraint::Eq(uid) => known(uid).map_or_else(all, |i| vec![i]),
            ActionConstraint::In(uids) => {
                let found: Option<Vec<usize>> = uids.iter().map(known).collect();
                found.unwrap_or_else(all)
            }
        }
    }

    /// The principal kind of an entity type, if it is one of keygate's three.
    pub(crate) fn principal_kind(&self, type_name: &EntityTypeName) -> Option<PrincipalKind> {
        [
            PrincipalKind::User,
            PrincipalKind::ServiceAccount,
            PrincipalKind::IdentityPool,
            PrincipalKind::External,
        ]
        .into_iter()
        .find(|k| self.principal_type(*k) == type_name)
    }

    /// Whether `uid` is an `ApiKey`.
    pub(crate) fn is_api_key(&self, uid: &EntityUid) -> bool {
        uid.type_name() == &self.api_key
    }

    fn principal_type(&self, kind: PrincipalKind) -> &EntityTypeName {
        match kind {
            PrincipalKind::User => &self.user,
            PrincipalKind::ServiceAccount => &self.service_account,
            PrincipalKind::IdentityPool => &self.identity_pool,
            PrincipalKind::External => &self.external,
        }
    }

    fn uid(type_name: &EntityTypeName, id: &str) -> ast::EntityUID {
        let uid = EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(id));
        AsRef::<ast::EntityUID>::as_ref(&uid).clone()
    }
}

/// Index of an action in [`ACTIONS`] and every per-action array.
pub(crate) fn action_index(a: Action) -> usize {
    match a {
        Action::CreateApiKey => 0,
        Action::ListApiKeys => 1,
        Action::GetApiKey => 2,
        Action::UpdateApiKey => 3,
        Action::DeleteApiKey => 4,
    }
}

/// The Cedar request and entities of one governed request.
pub(crate) struct Built {
    pub(crate) request: ast::Request,
    pub(crate) entities: Entities,
}

fn string(s: &str) -> Value {
    Value::from(s)
}

fn record<'a>(fields: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    Value::record(fields, None)
}

/// A constant for `context.params`, built once per load.
pub(crate) fn param_value(value: &ParamValue) -> Value {
    match value {
        ParamValue::String(s) => string(s),
        ParamValue::Long(n) => Value::from(*n),
        ParamValue::Bool(b) => Value::from(*b),
        ParamValue::StringSet(v) => Value::set(v.iter().map(|s| string(s)), None),
        ParamValue::LongSet(v) => Value::set(v.iter().map(|n| Value::from(*n)), None),
    }
}

/// The `context.params` record for `params`.
pub(crate) fn params_value<'a>(
    params: impl IntoIterator<Item = &'a (String, ParamValue)>,
) -> Value {
    Value::record(
        params
            .into_iter()
            .map(|(name, value)| (name.as_str(), param_value(value))),
        None,
    )
}

/// Distinct source addresses remembered per thread by [`ip`] before the cache starts over.
pub(crate) const IP_CACHE_ENTRIES: usize = 1024;

thread_local! {
    static IP_VALUES: RefCell<HashMap<IpAddr, Value>> = RefCell::new(HashMap::new());
}

/// `ip("…")` for a source address. Making one calls the extension function (and parses its
/// name), so the values are cached per thread: callers come from few addresses, and the cache is
/// bounded.
fn ip(addr: IpAddr) -> Result<Value, String> {
    IP_VALUES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(value) = cache.get(&addr) {
            return Ok(value.clone());
        }
        if cache.len() >= IP_CACHE_ENTRIES {
            cache.clear();
        }
        let expr = RestrictedExpression::new_ip(addr.to_string());
        let value =
            cedar_policy_core::evaluator::RestrictedEvaluator::new(Extensions::all_available())
                .interpret(AsRef::<ast::RestrictedExpr>::as_ref(&expr).as_borrowed())
                .map_err(|e| e.to_string())?;
        cache.insert(addr, value.clone());
        Ok(value)
    })
}

/// `Owner.kind` from an id's prefix.
pub(crate) fn kind_of(id: &str) -> &'static str {
    PrincipalKind::of_id(id).map_or(UNKNOWN_KIND, PrincipalKind::as_str)
}

fn owner(id: &str) -> Value {
    record([("id", string(id)), ("kind", string(kind_of(id)))])
}

/// The `PatternMatches` record for one text: the platform's patterns and those of the team sets
/// that apply (their names never collide).
fn matches(names: &[String], set: &RegexSet, teams: &[&TeamSet], text: &str) -> Value {
    let hits = set.matches(text);
    let platform = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), Value::from(hits.matched(i))));
    if teams.iter().all(|t| t.pattern_set.is_none()) {
        return record(platform);
    }
    let mut fields: Vec<(&str, Value)> = platform.collect();
    for team in teams {
        if let Some(set) = &team.pattern_set {
            let hits = set.matches(text);
            fields.extend(
                team.pattern_names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.as_str(), Value::from(hits.matched(i)))),
            );
        }
    }
    record(fields)
}

/// The resource entity's id: `new` for a create, `*` for a list, else the key id.
pub(crate) fn resource_id<'a>(input: &OrgInput<'a>) -> &'a str {
    match input.action {
        Action::CreateApiKey => NEW_KEY_ID,
        Action::ListApiKeys => ALL_KEYS_ID,
        Action::GetApiKey | Action::UpdateApiKey | Action::DeleteApiKey => input
            .key_id
            .or(input.target_key.as_ref().map(|k| k.id))
            .unwrap_or_default(),
    }
}

fn long(n: u64) -> Value {
    Value::from(i64::try_from(n).unwrap_or(i64::MAX))
}

/// `context.quota`: the clusters a create counts against, their loads, the fullest, the limit.
fn quota(q: &super::QuotaInput<'_>) -> Value {
    let clusters = Value::set(
        q.clusters.iter().map(|c| {
            record([
                ("id", string(&c.id)),
                ("kind", string(c.kind_str())),
                ("keys", long(c.keys)),
            ])
        }),
        None,
    );
    let max = q.clusters.iter().map(|c| c.keys).max().unwrap_or(0);
    let mut fields = vec![("clusters", clusters), ("max_keys", long(max))];
    if let Some(limit) = q.limit {
        fields.push(("limit", long(limit)));
    }
    record(fields)
}

fn known_key(key: &TargetKey<'_>) -> Value {
    let mut fields = vec![
        ("id", string(key.id)),
        ("description", string(key.description)),
        ("display_name", string(key.display_name)),
    ];
    if let Some(o) = key.owner_id {
        fields.push(("owner", owner(o)));
    }
    if let Some(r) = key.resource_id {
        fields.push(("resource_id", string(r)));
    }
    record(fields)
}

impl OrgPolicies {
    /// The Cedar request and entities for `input`, whose groups (identity's and config's) are
    /// `groups`, for the platform set and the team sets `teams`. An error means the input cannot
    /// be expressed in the schema (e.g. a create without an owner): the caller denies.
    pub(super) fn build_request(
        &self,
        input: &OrgInput<'_>,
        groups: &[&str],
        teams: &[&TeamSet],
    ) -> Result<Built, String> {
        let v = &self.vocabulary;
        let principal_uid =
            Vocabulary::uid(v.principal_type(input.principal_kind), input.principal_id);
        // Cedar sets are sets: duplicates (a role bound twice) fold.
        let groups = Value::set(groups.iter().map(|g| string(g)), None);
        let roles = Value::set(input.bindings.iter().map(|b| string(b.role)), None);
        let bindings = Value::set(
            input.bindings.iter().map(|b| {
                record([
                    ("role", string(b.role)),
                    ("crn_pattern", string(b.crn_pattern)),
                ])
            }),
            None,
        );
        // `principal.acting_as` is the Confluent principal (the entity id); `principal.external`
        // the company identity acting as it, when there is one. An `ExternalPrincipal` (no
        // Confluent principal, keygate-side bindings only) has no `acting_as`.
        let mut attrs = vec![
            ("groups".into(), PartialValue::from(groups)),
            ("roles".into(), PartialValue::from(roles)),
            ("bindings".into(), PartialValue::from(bindings)),
        ];
        if input.principal_kind != PrincipalKind::External {
            attrs.push((
                "acting_as".into(),
                PartialValue::from(string(input.principal_id)),
            ));
        } else if input.external.is_none() {
            return Err("a caller without a Confluent principal has no external identity".into());
        }
        if let Some(external) = input.external {
            attrs.push((
                "external".into(),
                PartialValue::from(record([
                    ("id", string(&external.id)),
                    ("source", string(external.source.as_str())),
                    ("issuer", string(&external.issuer)),
                    (
                        "groups",
                        Value::set(external.groups.iter().map(|g| string(g)), None),
                    ),
                ])),
            ));
        }
        let principal = ast::Entity::new_with_attr_partial_value(
            principal_uid.clone(),
            attrs,
            HashSet::new(),
            HashSet::new(),
            std::iter::empty(),
        );
        let resource_uid = Vocabulary::uid(&v.api_key, resource_id(input));
        let resource = ast::Entity::new_with_attr_partial_value(
            resource_uid.clone(),
            std::iter::empty(),
            HashSet::new(),
            HashSet::new(),
            std::iter::empty(),
        );
        let context = match self.context(input, teams)?.value {
            ValueKind::Record(fields) => ast::Context::Value(fields),
            _ => return Err("internal: the context is not a record".into()),
        };
        let action =
            AsRef::<ast::EntityUID>::as_ref(&v.actions[action_index(input.action)]).clone();
        let request = ast::Request::new_unchecked(
            EntityUIDEntry::known(principal_uid, None),
            EntityUIDEntry::known(action, None),
            EntityUIDEntry::known(resource_uid, None),
            Some(context),
        );
        let entities = Entities::from_entities(
            [principal, resource],
            None::<&NoEntitiesSchema>,
            TCComputation::AssumeAlreadyComputed,
            Extensions::all_available(),
        )
        .map_err(|e| e.to_string())?;
        Ok(Built { request, entities })
    }

    /// Like `build_request` for the platform set alone, checked against the schema (what the hot
    /// path trusts this module to get right) through `cedar-policy`'s own request and entity
    /// validation.
    #[cfg(test)]
    pub(crate) fn build_request_checked(&self, input: &OrgInput<'_>) -> Result<(), String> {
        let groups = self.groups_of(input);
        let built = self.build_request(input, &groups, &[])?;
        let request = cedar_policy::Request::from(built.request);
        let context = request
            .context()
            .cloned()
            .ok_or("the request has no context")?;
        let principal = request.principal().ok_or("no principal")?.clone();
        let action = request.action().ok_or("no action")?.clone();
        let resource = request.resource().ok_or("no resource")?.clone();
        cedar_policy::Request::new(principal, action, resource, context, Some(&self.schema))
            .map_err(|e| e.to_string())?;
        let entities: Vec<cedar_policy::Entity> = cedar_policy::Entities::from(built.entities)
            .iter()
            .cloned()
            .collect();
        cedar_policy::Entities::from_entities(entities, Some(&self.schema))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// `context.params`: the platform's, plus those of the team sets that apply.
    fn params(&self, teams: &[&TeamSet]) -> Value {
        let mut with_params = teams.iter().filter(|t| t.params_value.is_some());
        match (with_params.next(), with_params.next()) {
            (None, _) => self.params.clone(),
            (Some(team), None) => team
                .params_value
                .clone()
                .unwrap_or_else(|| self.params.clone()),
            (Some(_), Some(_)) => params_value(
                self.param_values
                    .iter()
                    .chain(teams.iter().flat_map(|t| &t.params)),
            ),
        }
    }

    fn context(&self, input: &OrgInput<'_>, teams: &[&TeamSet]) -> Result<Value, String> {
        let mut fields: Vec<(&str, Value)> = Vec::with_capacity(14);
        fields.push(("request_id", string(input.request_id)));
        fields.push(("time", Value::from(input.time)));
        if let Some(ip_addr) = input.source_ip {
            fields.push(("source_ip", ip(ip_addr)?));
        }
        fields.push((
            "matrix",
            record([
                ("allowed", Value::from(input.matrix_allowed)),
                ("rule", string(input.matrix_rule)),
            ]),
        ));
        fields.push(("params", self.params(teams)));

        let resource = |required: bool| -> Result<Option<Value>, String> {
            let Some(r) = &input.resource else {
                return if required {
                    Err("a create request needs a resource (type \"Cloud\" for Cloud keys)".into())
                } else {
                    Ok(None)
                };
            };
            let mut fields = vec![("id", string(r.id)), ("type", string(r.resource_type))];
            if let Some(env) = r.environment {
                fields.push(("environment", string(env)));
            }
            if let Some(cluster) = r.cluster {
                fields.push(("cluster", string(cluster)));
            }
            Ok(Some(record(fields)))
        };
        let names = &self.pattern_names;
        let set = &self.pattern_set;

        match input.action {
            Action::CreateApiKey => {
                let owner_id = input
                    .owner_id
                    .ok_or("a create request needs an owner (spec.owner.id)")?;
                fields.push(("owner", owner(owner_id)));
                if let Some(r) = resource(true)? {
                    fields.push(("resource", r));
                }
                let display_name = input.display_name.unwrap_or_default();
                let description = input.description.unwrap_or_default();
                fields.push(("display_name", string(display_name)));
                fields.push(("description", string(description)));
                fields.push((
                    "display_name_matches",
                    matches(names, set, teams, display_name),
                ));
                fields.push((
                    "description_matches",
                    matches(names, set, teams, description),
                ));
                if let Some(n) = input.owner_key_count {
                    fields.push((
                        "owner_key_count",
                        Value::from(i64::try_from(n).unwrap_or(i64::MAX)),
                    ));
                }
                if let Some(q) = &input.quota {
                    fields.push(("quota", quota(q)));
                }
            }
            Action::ListApiKeys => {
                if let Some(o) = input.owner_id {
                    fields.push(("owner", owner(o)));
                }
                if let Some(r) = resource(false)? {
                    fields.push(("resource", r));
                }
            }
            Action::UpdateApiKey => {
                if let Some(d) = input.display_name {
                    fields.push(("display_name", string(d)));
                    fields.push(("display_name_matches", matches(names, set, teams, d)));
                }
                if let Some(d) = input.description {
                    fields.push(("description", string(d)));
                    fields.push(("description_matches", matches(names, set, teams, d)));
                }
                if let Some(k) = &input.target_key {
                    fields.push(("target_key", known_key(k)));
                }
            }
            Action::GetApiKey | Action::DeleteApiKey => {
                if let Some(k) = &input.target_key {
                    fields.push(("target_key", known_key(k)));
                }
            }
        }
        Ok(record(fields))
    }
}
