//! Building the Cedar request for one governed request: principal and resource entities and the
//! per-action context record (see `policies/keygate.cedarschema`), directly as Cedar values —
//! no JSON text on the hot path.
//!
//! The shape of what is built here IS the schema's promise to policy authors; the tests check
//! every action's request against the schema.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use cedar_policy::{
    ActionConstraint, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request,
    RestrictedExpression, Schema,
};
use regex::RegexSet;

use super::{OrgInput, OrgPolicies, TargetKey, TeamSet};
use crate::policy::action::Action;
use crate::policy::principal::PrincipalKind;

/// Entity id of the resource of a create request: the key does not exist yet.
pub(crate) const NEW_KEY_ID: &str = "new";
/// Entity id of the resource of a list request.
pub(crate) const ALL_KEYS_ID: &str = "*";
/// `Owner.kind` for an owner id that is not `u-…`, `sa-…` or `pool-…`.
pub(crate) const UNKNOWN_KIND: &str = "Unknown";

/// Entity type names and action uids, parsed once per load.
pub(crate) struct Vocabulary {
    user: EntityTypeName,
    service_account: EntityTypeName,
    identity_pool: EntityTypeName,
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
            api_key: ty("ApiKey")?,
            actions: [
                action(Action::CreateApiKey),
                action(Action::ListApiKeys),
                action(Action::GetApiKey),
                action(Action::UpdateApiKey),
                action(Action::DeleteApiKey),
            ],
        })
    }

    fn action(&self, a: Action) -> EntityUid {
        self.actions[action_index(a)].clone()
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
        }
    }
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

/// Distinct source addresses remembered per thread by [`ip`] before the cache starts over.
pub(crate) const IP_CACHE_ENTRIES: usize = 1024;

thread_local! {
    static IP_EXPRESSIONS: RefCell<HashMap<IpAddr, RestrictedExpression>> =
        RefCell::new(HashMap::new());
}

/// `ip("…")` for a source address. `RestrictedExpression::new_ip` parses the extension's name
/// with Cedar's full parser on every call (a quarter of a create's evaluation time), so the
/// expressions are cached per thread: callers come from few addresses, and the cache is bounded.
fn ip(addr: IpAddr) -> RestrictedExpression {
    IP_EXPRESSIONS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(expr) = cache.get(&addr) {
            return expr.clone();
        }
        if cache.len() >= IP_CACHE_ENTRIES {
            cache.clear();
        }
        let expr = RestrictedExpression::new_ip(addr.to_string());
        cache.insert(addr, expr.clone());
        expr
    })
}

fn record<const N: usize>(
    fields: [(&str, RestrictedExpression); N],
) -> Result<RestrictedExpression, String> {
    RestrictedExpression::new_record(fields.map(|(k, v)| (k.to_owned(), v)))
        .map_err(|e| e.to_string())
}

/// The governed actions, in the order of [`action_index`].
pub(crate) const ACTIONS: [Action; 5] = [
    Action::CreateApiKey,
    Action::ListApiKeys,
    Action::GetApiKey,
    Action::UpdateApiKey,
    Action::DeleteApiKey,
];

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

/// `Owner.kind` from an id's prefix.
pub(crate) fn kind_of(id: &str) -> &'static str {
    PrincipalKind::of_id(id).map_or(UNKNOWN_KIND, PrincipalKind::as_str)
}

fn owner(id: &str) -> Result<RestrictedExpression, String> {
    record([("id", string(id)), ("kind", string(kind_of(id)))])
}

/// The `PatternMatches` record for one text: the platform's patterns and those of the team sets
/// that apply (their names never collide).
fn matches(
    names: &[String],
    set: &RegexSet,
    teams: &[&TeamSet],
    text: &str,
) -> Result<RestrictedExpression, String> {
    let hits = set.matches(text);
    let platform = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), RestrictedExpression::new_bool(hits.matched(i))));
    if teams.iter().all(|t| t.pattern_set.is_none()) {
        return RestrictedExpression::new_record(platform).map_err(|e| e.to_string());
    }
    let mut fields: Vec<(String, RestrictedExpression)> = platform.collect();
    for team in teams {
        if let Some(set) = &team.pattern_set {
            let hits = set.matches(text);
            fields.extend(
                team.pattern_names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.clone(), RestrictedExpression::new_bool(hits.matched(i)))),
            );
        }
    }
    RestrictedExpression::new_record(fields).map_err(|e| e.to_string())
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

fn known_key(key: &TargetKey<'_>) -> Result<RestrictedExpression, String> {
    let mut fields = vec![
        ("id".to_owned(), string(key.id)),
        ("description".to_owned(), string(key.description)),
        ("display_name".to_owned(), string(key.display_name)),
    ];
    if let Some(o) = key.owner_id {
        fields.push(("owner".to_owned(), owner(o)?));
    }
    if let Some(r) = key.resource_id {
        fields.push(("resource_id".to_owned(), string(r)));
    }
    RestrictedExpression::new_record(fields).map_err(|e| e.to_string())
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
    ) -> Result<(Request, Entities), String> {
        self.build(input, groups, teams, None)
    }

    /// Like `build_request` for the platform set alone, but checks the request and entities
    /// against the schema (what the hot path trusts this module to get right).
    #[cfg(test)]
    pub(crate) fn build_request_checked(&self, input: &OrgInput<'_>) -> Result<(), String> {
        let groups = self.groups_of(input);
        self.build(input, &groups, &[], Some(&self.schema))
            .map(|_| ())
    }

    fn build(
        &self,
        input: &OrgInput<'_>,
        groups: &[&str],
        teams: &[&TeamSet],
        schema: Option<&Schema>,
    ) -> Result<(Request, Entities), String> {
        let v = &self.vocabulary;
        let principal_uid = EntityUid::from_type_name_and_id(
            v.principal_type(input.principal_kind).clone(),
            EntityId::new(input.principal_id),
        );
        let groups = RestrictedExpression::new_set(groups.iter().map(|g| string(g)));
        let roles = RestrictedExpression::new_set(input.bindings.iter().map(|b| string(b.role)));
        let bindings = input
            .bindings
            .iter()
            .map(|b| {
                record([
                    ("role", string(b.role)),
                    ("crn_pattern", string(b.crn_pattern)),
                ])
            })
            .collect::<Result<Vec<_>, _>>()?;
        let principal = Entity::new_with_tags(
            principal_uid.clone(),
            [
                ("groups".to_owned(), groups),
                ("roles".to_owned(), roles),
                (
                    "bindings".to_owned(),
                    RestrictedExpression::new_set(bindings),
                ),
            ],
            [],
            [],
        )
        .map_err(|e| e.to_string())?;

        let resource_uid =
            EntityUid::from_type_name_and_id(v.api_key.clone(), EntityId::new(resource_id(input)));
        let resource = Entity::new_no_attrs(resource_uid.clone(), HashSet::new());

        let context =
            Context::from_pairs(self.context_pairs(input, teams)?).map_err(|e| e.to_string())?;
        let request = Request::new(
            principal_uid,
            v.action(input.action),
            resource_uid,
            context,
            schema,
        )
        .map_err(|e| e.to_string())?;
        let entities =
            Entities::from_entities([principal, resource], schema).map_err(|e| e.to_string())?;
        Ok((request, entities))
    }

    /// `context.params`: the platform's, plus those of the team sets that apply.
    fn params(&self, teams: &[&TeamSet]) -> Result<RestrictedExpression, String> {
        let mut with_params = teams.iter().filter(|t| t.params_record.is_some());
        match (with_params.next(), with_params.next()) {
            (None, _) => Ok(self.params.clone()),
            (Some(team), None) => Ok(team
                .params_record
                .clone()
                .unwrap_or_else(|| self.params.clone())),
            (Some(_), Some(_)) => {
                let all: Vec<(String, super::ParamValue)> = self
                    .param_values
                    .iter()
                    .chain(teams.iter().flat_map(|t| &t.params))
                    .cloned()
                    .collect();
                let mut errors = Vec::new();
                super::load::params_expression(&all, &mut errors).ok_or_else(|| {
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
            }
        }
    }

    fn context_pairs(
        &self,
        input: &OrgInput<'_>,
        teams: &[&TeamSet],
    ) -> Result<Vec<(String, RestrictedExpression)>, String> {
        let mut pairs: Vec<(String, RestrictedExpression)> = Vec::with_capacity(14);
        let mut put = |k: &str, v: RestrictedExpression| pairs.push((k.to_owned(), v));
        put("request_id", string(input.request_id));
        put("time", RestrictedExpression::new_long(input.time));
        if let Some(ip_addr) = input.source_ip {
            put("source_ip", ip(ip_addr));
        }
        put(
            "matrix",
            record([
                (
                    "allowed",
                    RestrictedExpression::new_bool(input.matrix_allowed),
                ),
                ("rule", string(input.matrix_rule)),
            ])?,
        );
        put("params", self.params(teams)?);

        let resource = |required: bool| -> Result<Option<RestrictedExpression>, String> {
            let Some(r) = &input.resource else {
                return if required {
                    Err("a create request needs a resource (type \"Cloud\" for Cloud keys)".into())
                } else {
                    Ok(None)
                };
            };
            let mut fields = vec![
                ("id".to_owned(), string(r.id)),
                ("type".to_owned(), string(r.resource_type)),
            ];
            if let Some(env) = r.environment {
                fields.push(("environment".to_owned(), string(env)));
            }
            if let Some(cluster) = r.cluster {
                fields.push(("cluster".to_owned(), string(cluster)));
            }
            RestrictedExpression::new_record(fields)
                .map(Some)
                .map_err(|e| e.to_string())
        };
        let names = &self.pattern_names;
        let set = &self.pattern_set;

        match input.action {
            Action::CreateApiKey => {
                let owner_id = input
                    .owner_id
                    .ok_or("a create request needs an owner (spec.owner.id)")?;
                put("owner", owner(owner_id)?);
                if let Some(r) = resource(true)? {
                    put("resource", r);
                }
                let display_name = input.display_name.unwrap_or_default();
                let description = input.description.unwrap_or_default();
                put("display_name", string(display_name));
                put("description", string(description));
                put(
                    "display_name_matches",
                    matches(names, set, teams, display_name)?,
                );
                put(
                    "description_matches",
                    matches(names, set, teams, description)?,
                );
                if let Some(n) = input.owner_key_count {
                    put(
                        "owner_key_count",
                        RestrictedExpression::new_long(i64::try_from(n).unwrap_or(i64::MAX)),
                    );
                }
            }
            Action::ListApiKeys => {
                if let Some(o) = input.owner_id {
                    put("owner", owner(o)?);
                }
                if let Some(r) = resource(false)? {
                    put("resource", r);
                }
            }
            Action::UpdateApiKey => {
                if let Some(d) = input.display_name {
                    put("display_name", string(d));
                    put("display_name_matches", matches(names, set, teams, d)?);
                }
                if let Some(d) = input.description {
                    put("description", string(d));
                    put("description_matches", matches(names, set, teams, d)?);
                }
                if let Some(k) = &input.target_key {
                    put("target_key", known_key(k)?);
                }
            }
            Action::GetApiKey | Action::DeleteApiKey => {
                if let Some(k) = &input.target_key {
                    put("target_key", known_key(k)?);
                }
            }
        }
        Ok(pairs)
    }
}
