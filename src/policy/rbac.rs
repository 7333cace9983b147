//! Layer 1 of the decision (docs/architecture.md §5): Confluent's RBAC creation matrix applied to a create
//! request, using the caller's role bindings and the resource inventory.
//!
//! For a create with owner O and resource R of type T:
//! - O is another user: deny — nobody creates keys for someone else's user account;
//! - O is a service account: allow through OrganizationAdmin, ResourceOwner on O, or a matrix role
//!   granting T through a binding that covers R; Global keys only through the roles the matrix
//!   lists in `service_account_global` (OrganizationAdmin, ResourceOwner on O);
//! - O is the caller's own user account: allow through a matrix role granting T through a binding
//!   that covers R;
//! - anything else, and any missing data: deny.
//!
//! The key type comes from `resource.id` (+ `environment` for Flink) only, never from `kind` or
//! `api_version`. List and get pass through (Confluent filters reads itself); update and delete
//! pass this layer and are left to organisation policies. This module reads a snapshot and returns
//! a [`Decision`]; it performs no I/O, takes no lock and never sees a credential.

use std::fmt::{self, Write as _};

use super::bindings::RoleBinding;
use super::crn::ResourcePath;
use super::decision::{pointer, rule, Decision, GrantedBy};
use super::external;
use super::inventory::{is_plain_id, Inventory};
use super::matrix::{join_or, BindingCovers, Matrix};
use super::snapshot::AuthzSnapshot;
use crate::model::ResourceType;
use crate::model::Target;
use crate::model::{Action, CreateSpec};
use crate::model::{Principal, PrincipalKind};

/// The role whose grants on a service account are reported under their own rule id.
const ORGANIZATION_ADMIN: &str = "OrganizationAdmin";

/// How many of the caller's bindings an explanation lists before "and N more".
const MAX_LISTED_BINDINGS: usize = 5;

/// Longest piece of untrusted input an explanation repeats.
const MAX_SHOWN_INPUT: usize = 64;

/// Decides any governed action. Creates go through the matrix; list and get pass through; update
/// and delete pass this layer (rule `matrix.passthrough`). A create without a spec is denied.
/// An external caller's explanation names both identities ("ci@payments via issuer …, acting as
/// sa-payments-ci: …"), wherever it is decided (the request path, explain, replay).
pub fn decide_matrix(
    data: &AuthzSnapshot,
    principal: &Principal,
    action: Action,
    spec: Option<&CreateSpec>,
) -> Decision {
    let mut decision = decide_any(data, principal, action, spec);
    if principal.external().is_some() {
        decision.explanation = format!("{}: {}", principal.describe(), decision.explanation);
    }
    decision
}

/// [`decide_matrix`] before the caller is named.
fn decide_any(
    data: &AuthzSnapshot,
    principal: &Principal,
    action: Action,
    spec: Option<&CreateSpec>,
) -> Decision {
    let caller = principal.id();
    // INVARIANT: a caller without a Confluent principal acts only through keygate-side bindings;
    // without one (removed since its identity was cached) it may do nothing, not even a read.
    if !principal.is_confluent()
        && !principal
            .external()
            .is_some_and(|e| data.external_bindings().binds(e))
    {
        return Decision::deny(
            rule::DENY_EXTERNAL_UNBOUND,
            format!(
                "{} is denied: {caller} has no Confluent principal and no keygate-side role \
                 binding (`identity.external_bindings`)",
                action_text(action)
            ),
            pointer::SPEC,
            caller,
        );
    }
    let explanation = match action {
        Action::CreateApiKey => {
            return match spec {
                Some(spec) => decide_create(data, principal, spec),
                None => Decision::deny(
                    rule::DENY_MISSING_SPEC,
                    "creating an API key is denied: no parsed request body reached the decision"
                        .to_owned(),
                    pointer::SPEC,
                    caller,
                ),
            };
        }
        Action::ListApiKeys => {
            "listing API keys passes the creation matrix: Confluent returns only the keys you may see"
        }
        Action::GetApiKey => {
            "reading an API key passes the creation matrix: Confluent checks access to it itself"
        }
        Action::UpdateApiKey => {
            "updating an API key passes the creation matrix; organisation policies decide updates"
        }
        Action::DeleteApiKey => {
            "deleting an API key passes the creation matrix; organisation policies decide deletes"
        }
    };
    Decision::allow(rule::PASSTHROUGH, explanation.to_owned(), caller)
}

fn action_text(action: Action) -> &'static str {
    match action {
        Action::CreateApiKey => "creating an API key",
        Action::ListApiKeys => "listing API keys",
        Action::GetApiKey => "reading an API key",
        Action::UpdateApiKey => "updating an API key",
        Action::DeleteApiKey => "deleting an API key",
    }
}

/// Who holds a role binding that applies to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder<'a> {
    /// The caller's own Confluent principal.
    Caller(&'a str),
    /// One of the caller's Confluent `group-…` ids.
    Group(&'a str),
    /// A keygate-side binding of the external identity or one of its groups, with the issuer it
    /// is scoped to.
    External(external::Holder<'a>, Option<&'a str>),
}

impl Holder<'_> {
    /// The binding's principal as recorded: `u-…`, `group-…`, `External:…`, `ExternalGroup:…`.
    pub(crate) fn label(&self) -> String {
        match self {
            Holder::Caller(id) | Holder::Group(id) => (*id).to_owned(),
            Holder::External(h, _) => h.label(),
        }
    }

    /// The issuer a keygate-side binding is scoped to.
    pub(crate) fn issuer(&self) -> Option<&str> {
        match self {
            Holder::External(_, issuer) => *issuer,
            Holder::Caller(_) | Holder::Group(_) => None,
        }
    }
}

impl Holder<'_> {
    /// How an explanation names a binding that is not the caller's own ("through group g");
    /// nothing for the caller's own.
    fn phrase(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Caller(_) => Ok(()),
            Holder::Group(g) => write!(f, "through group {g}"),
            Holder::External(external::Holder::Principal(id), _) => {
                write!(f, "via keygate-side binding for {id}")
            }
            Holder::External(external::Holder::Group(g), _) => {
                write!(f, "via keygate-side binding for group {g}")
            }
        }
    }
}

impl fmt::Display for Holder<'_> {
    /// The explanation's suffix for a binding: " through group g", or "" for the caller's own.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if matches!(self, Holder::Caller(_)) {
            return Ok(());
        }
        f.write_str(" ")?;
        self.phrase(f)
    }
}

/// Every role binding that applies to `principal`: its Confluent principal's and its `group-…`
/// ids' (none without a Confluent principal), then the keygate-side bindings of its external
/// identity and groups.
pub(crate) fn applicable<'s>(
    data: &'s AuthzSnapshot,
    principal: &'s Principal,
) -> impl Iterator<Item = (Holder<'s>, &'s RoleBinding)> + 's {
    let own = principal.acting_as();
    let confluent = principal.binding_ids().flat_map(move |id| {
        let holder = if Some(id) == own {
            Holder::Caller(id)
        } else {
            Holder::Group(id)
        };
        data.bindings().of(id).iter().map(move |b| (holder, b))
    });
    let keygate_side = principal.external().into_iter().flat_map(move |e| {
        data.external_bindings()
            .of_external(e)
            .map(|(h, issuer, b)| (Holder::External(h, issuer), b))
    });
    confluent.chain(keygate_side)
}

/// Decides a create request against the RBAC creation matrix (layer 1).
pub fn decide_create(data: &AuthzSnapshot, principal: &Principal, spec: &CreateSpec) -> Decision {
    let caller = principal.id();
    let owner_id = spec.owner_id.as_str();
    let resource_pointer = if spec.resource.is_some() {
        pointer::RESOURCE_ID
    } else {
        pointer::RESOURCE
    };
    let mut target = Target {
        owner_id: Some(owner_id.to_owned()),
        resource_type: None,
        resource_id: Some(spec.resource.as_ref().map_or("cloud", |r| &r.id).to_owned()),
        environment: None,
        kafka_cluster: None,
    };

    let kind = match classify(spec) {
        Ok(kind) => kind,
        Err(bad) => {
            let (explanation, ptr) = bad.explain();
            return Decision::deny(rule::DENY_UNKNOWN_RESOURCE, explanation, ptr, caller)
                .with_target(target);
        }
    };
    let t = kind.resource_type();
    target.resource_type = Some(t);

    let owner = match PrincipalKind::of_id(owner_id) {
        // An external identity without a Confluent principal owns nothing in Confluent.
        Some(PrincipalKind::User)
            if is_plain_id(owner_id, "u-") && principal.acting_as() == Some(owner_id) =>
        {
            Owner::Own(owner_id)
        }
        Some(PrincipalKind::User) if is_plain_id(owner_id, "u-") => Owner::OtherUser(owner_id),
        Some(PrincipalKind::ServiceAccount) if is_plain_id(owner_id, "sa-") => {
            Owner::ServiceAccount(owner_id)
        }
        _ => Owner::Unsupported(owner_id),
    };

    let org = data.org().as_str();
    let located = locate(&kind, data.inventory(), org);
    if let Ok(l) = &located {
        target.environment = l.environment.map(str::to_owned);
        target.kafka_cluster = l.kafka_cluster.map(str::to_owned);
    } else if let Kind::Flink { environment, .. } = kind {
        target.environment = Some(environment.to_owned());
    }
    let ask = Ask {
        t,
        kind: &kind,
        environment: located.as_ref().ok().and_then(|l| l.environment),
        owner,
    };

    let sa = match owner {
        Owner::OtherUser(_) => {
            let explanation = format!(
                "{ask} is denied: nobody creates keys for someone else's user account (you are \
                 {caller}); create it for your own account or for a service account"
            );
            return Decision::deny(
                rule::DENY_OTHER_USER,
                explanation,
                pointer::OWNER_ID,
                caller,
            )
            .with_target(target);
        }
        Owner::Unsupported(_) => {
            let explanation = format!(
                "{ask} is denied: the owner must be your own user account ({caller}) or a service \
                 account (sa-…)"
            );
            return Decision::deny(
                rule::DENY_UNSUPPORTED_OWNER,
                explanation,
                pointer::OWNER_ID,
                caller,
            )
            .with_target(target);
        }
        Owner::Own(_) => None,
        Owner::ServiceAccount(sa) => Some(sa),
    };

    let located = match located {
        Ok(l) => l,
        Err(missing) => {
            let explanation = format!(
                "{ask} is denied: keygate's resource inventory does not know {missing}, so it \
                 cannot tell which role bindings cover it"
            );
            let ptr = match missing {
                Missing::Environment(_) => pointer::RESOURCE_ENVIRONMENT,
                Missing::Cluster { .. } => pointer::RESOURCE_ID,
            };
            return Decision::deny(rule::DENY_INVENTORY_MISSING, explanation, ptr, caller)
                .with_target(target)
                .needing_inventory_refresh();
        }
    };

    let sa_path = sa.map(|sa| ResourcePath::service_account(org, sa));
    let decision = match find_grant(data, principal, t, &located.path, sa_path.as_ref()) {
        Some(g) => allowed(&ask, caller, sa, &located.path, &g),
        None => {
            let (rule, requirement) = requirement(data.matrix(), t, sa, &located.path);
            let holds = Holdings { data, principal };
            let explanation = format!("{ask} {requirement}; you ({caller}) hold {holds}");
            Decision::deny(rule, explanation, resource_pointer, caller)
        }
    };
    decision.with_target(target)
}

/// The allow decision for a grant, naming the binding and what it covers.
fn allowed(
    ask: &Ask<'_>,
    caller: &str,
    sa: Option<&str>,
    path: &ResourcePath<'_>,
    g: &Grantor<'_>,
) -> Decision {
    // Sized for a typical explanation up front: `format!` would grow it three or four times.
    let mut explanation = String::with_capacity(256);
    // Writing to a String cannot fail.
    let _ = write!(
        explanation,
        "{ask} is allowed ({}): you ({caller}) hold {} on {}",
        g.rule,
        g.binding.role(),
        g.binding.pattern().scope(),
    );
    let _ = write!(explanation, "{}", g.holder);
    let _ = match (g.on_owner, sa) {
        (true, Some(sa)) => write!(explanation, ", which covers service account {sa}"),
        _ => write!(explanation, ", which covers {path}"),
    };
    let granted_by = GrantedBy {
        principal_id: g.holder.label(),
        role: g.binding.role_shared().clone(),
        crn_pattern: g.binding.pattern().shared().clone(),
    };
    Decision::allow(g.rule, explanation, caller).with_granted_by(granted_by)
}

/// The deny rule and what would have allowed the request, from the matrix.
fn requirement(
    matrix: &Matrix,
    t: ResourceType,
    sa: Option<&str>,
    path: &ResourcePath<'_>,
) -> (&'static str, String) {
    const NO_ROLE: &str = "is not granted by any role in the matrix";
    let on_resource = matrix.resource_roles_text(t);
    match sa {
        Some(sa) if t == ResourceType::Global => {
            let roles: Vec<String> = matrix
                .sa_global_roles()
                .map(|(name, owner_bound)| {
                    if owner_bound {
                        format!("{name} on {sa}")
                    } else {
                        name.to_owned()
                    }
                })
                .collect();
            (
                rule::DENY_SA_GLOBAL,
                format!("requires {}", join_or(&roles)),
            )
        }
        Some(sa) => {
            let on_owner = matrix.owner_roles_text(t);
            let requirement = match (on_resource.is_empty(), on_owner.is_empty()) {
                (false, false) => format!(
                    "requires {on_resource} on a scope covering {path}, or {on_owner} on {sa}"
                ),
                (false, true) => format!("requires {on_resource} on a scope covering {path}"),
                (true, false) => format!("requires {on_owner} on {sa}"),
                (true, true) => NO_ROLE.to_owned(),
            };
            (rule::DENY_SA_NO_ROLE, requirement)
        }
        None if on_resource.is_empty() => (rule::DENY_OWN_NO_ROLE, NO_ROLE.to_owned()),
        None => (
            rule::DENY_OWN_NO_ROLE,
            format!("requires {on_resource} on a scope covering {path}"),
        ),
    }
}

// === classification ===

/// A create request's resource, classified from `resource.id` (+ `environment`).
#[derive(Debug, Clone, Copy)]
enum Kind<'a> {
    Cloud,
    Global,
    Tableflow,
    Kafka(&'a str),
    SchemaRegistry(&'a str),
    KsqlDb(&'a str),
    Flink {
        region: &'a str,
        environment: &'a str,
    },
}

impl Kind<'_> {
    fn resource_type(&self) -> ResourceType {
        match self {
            Kind::Cloud => ResourceType::Cloud,
            Kind::Global => ResourceType::Global,
            Kind::Tableflow => ResourceType::Tableflow,
            Kind::Kafka(_) => ResourceType::Kafka,
            Kind::SchemaRegistry(_) => ResourceType::SchemaRegistry,
            Kind::KsqlDb(_) => ResourceType::KsqlDb,
            Kind::Flink { .. } => ResourceType::Flink,
        }
    }
}

/// Why a resource could not be classified.
enum Unclassified<'a> {
    Unknown(&'a str),
    FlinkWithoutEnvironment(&'a str),
    BadEnvironment(&'a str),
}

impl Unclassified<'_> {
    fn explain(&self) -> (String, &'static str) {
        match self {
            Unclassified::Unknown(id) => (
                format!(
                    "creating an API key for resource `{}` is denied: keygate does not recognise \
                     this resource type (expected cloud, global, tableflow, lkc-…, lsrc-…, \
                     lksqlc-…, or <cloud>.<region> with an environment for Flink)",
                    Shown(id)
                ),
                pointer::RESOURCE_ID,
            ),
            Unclassified::FlinkWithoutEnvironment(region) => (
                format!(
                    "creating a Flink API key for region {region} is denied: Flink keys need \
                     spec.resource.environment"
                ),
                pointer::RESOURCE_ENVIRONMENT,
            ),
            Unclassified::BadEnvironment(env) => (
                format!(
                    "creating a Flink API key is denied: `{}` is not an environment id (env-…)",
                    Shown(env)
                ),
                pointer::RESOURCE_ENVIRONMENT,
            ),
        }
    }
}

fn classify(spec: &CreateSpec) -> Result<Kind<'_>, Unclassified<'_>> {
    let Some(resource) = &spec.resource else {
        return Ok(Kind::Cloud);
    };
    let id = resource.id.as_str();
    match id {
        "cloud" => return Ok(Kind::Cloud),
        "global" => return Ok(Kind::Global),
        "tableflow" => return Ok(Kind::Tableflow),
        _ => {}
    }
    if is_plain_id(id, "lkc-") {
        Ok(Kind::Kafka(id))
    } else if is_plain_id(id, "lsrc-") {
        Ok(Kind::SchemaRegistry(id))
    } else if is_plain_id(id, "lksqlc-") {
        Ok(Kind::KsqlDb(id))
    } else if is_flink_region(id) {
        match resource.environment.as_deref() {
            None | Some("") => Err(Unclassified::FlinkWithoutEnvironment(id)),
            Some(env) if is_plain_id(env, "env-") => Ok(Kind::Flink {
                region: id,
                environment: env,
            }),
            Some(env) => Err(Unclassified::BadEnvironment(env)),
        }
    } else {
        Err(Unclassified::Unknown(id))
    }
}

/// `<cloud>.<region>`: lowercase cloud name, one dot, region of lowercase letters, digits and `-`.
fn is_flink_region(id: &str) -> bool {
    let Some((cloud, region)) = id.split_once('.') else {
        return false;
    };
    !cloud.is_empty()
        && cloud.bytes().all(|b| b.is_ascii_lowercase())
        && !region.is_empty()
        && region.len() <= 64
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

// === location ===

/// A resource placed in the organisation.
struct Located<'a> {
    path: ResourcePath<'a>,
    environment: Option<&'a str>,
    kafka_cluster: Option<&'a str>,
}

/// What the inventory lacks.
#[derive(Debug, Clone, Copy)]
enum Missing<'a> {
    Cluster { what: &'static str, id: &'a str },
    Environment(&'a str),
}

impl fmt::Display for Missing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Cluster { what, id } => write!(f, "{what} {id}"),
            Missing::Environment(env) => write!(f, "environment {env}"),
        }
    }
}

fn locate<'a>(
    kind: &Kind<'a>,
    inventory: &'a Inventory,
    org: &'a str,
) -> Result<Located<'a>, Missing<'a>> {
    let cluster = |what: &'static str, id: &'a str| {
        inventory.cluster(id).ok_or(Missing::Cluster { what, id })
    };
    Ok(match *kind {
        Kind::Cloud | Kind::Global | Kind::Tableflow => Located {
            path: ResourcePath::organization(org),
            environment: None,
            kafka_cluster: None,
        },
        Kind::Kafka(id) => {
            let env = cluster("Kafka cluster", id)?.environment();
            Located {
                path: ResourcePath::kafka(org, env, id),
                environment: Some(env),
                kafka_cluster: None,
            }
        }
        Kind::SchemaRegistry(id) => {
            let env = cluster("Schema Registry cluster", id)?.environment();
            Located {
                path: ResourcePath::schema_registry(org, env, id),
                environment: Some(env),
                kafka_cluster: None,
            }
        }
        Kind::KsqlDb(id) => {
            let c = cluster("ksqlDB cluster", id)?;
            Located {
                path: ResourcePath::ksqldb(org, c.environment(), c.kafka_cluster(), id),
                environment: Some(c.environment()),
                kafka_cluster: c.kafka_cluster(),
            }
        }
        Kind::Flink {
            region,
            environment,
        } => {
            if !inventory.has_environment(environment) {
                return Err(Missing::Environment(environment));
            }
            Located {
                path: ResourcePath::flink_region(org, environment, region),
                environment: Some(environment),
                kafka_cluster: None,
            }
        }
    })
}

// === owner and grant ===

#[derive(Debug, Clone, Copy)]
enum Owner<'a> {
    Own(&'a str),
    OtherUser(&'a str),
    ServiceAccount(&'a str),
    Unsupported(&'a str),
}

/// The binding that allows a create, and how.
struct Grantor<'s> {
    holder: Holder<'s>,
    binding: &'s RoleBinding,
    /// Lower wins: OrganizationAdmin (or any role for the caller's own account), then
    /// ResourceOwner, then other roles.
    rank: u8,
    rule: &'static str,
    /// The binding counted because it covers the owning service account.
    on_owner: bool,
}

/// Finds the best binding of the caller (and its groups) that allows creating a `t` key for the
/// resource at `path`; `sa_path` is the owning service account, `None` for the caller's own account.
/// Costs O(bindings of the caller), whatever the size of the index.
fn find_grant<'s>(
    data: &'s AuthzSnapshot,
    principal: &'s Principal,
    t: ResourceType,
    path: &ResourcePath<'_>,
    sa_path: Option<&ResourcePath<'_>>,
) -> Option<Grantor<'s>> {
    let matrix = data.matrix();
    let mut best: Option<Grantor<'s>> = None;
    for (holder, binding) in applicable(data, principal) {
        let pattern = binding.pattern();
        // Cheap structural checks first: most bindings (topics, subjects) are too deep.
        let on_resource = pattern.covers(path);
        let on_owner = sa_path.is_some_and(|p| pattern.covers(p));
        if !on_resource && !on_owner {
            continue;
        }
        let Some(role) = matrix.role(binding.role()) else {
            continue;
        };
        if !role.grant(t).allows() {
            continue;
        }
        if sa_path.is_some() && t == ResourceType::Global && !role.may_create_sa_global() {
            continue;
        }
        let (rank, rule, on_owner) = match role.covers() {
            BindingCovers::Resource if on_resource => match sa_path {
                None => (0, rule::OWN_ROLE, false),
                Some(_) if binding.role() == ORGANIZATION_ADMIN => {
                    (0, rule::SA_ORGANIZATION_ADMIN, false)
                }
                Some(_) => (2, rule::SA_ROLE, false),
            },
            BindingCovers::Owner if on_owner => (1, rule::SA_RESOURCE_OWNER, true),
            _ => continue,
        };
        if best.as_ref().is_none_or(|b| rank < b.rank) {
            best = Some(Grantor {
                holder,
                binding,
                rank,
                rule,
                on_owner,
            });
            if rank == 0 {
                return best;
            }
        }
    }
    best
}

// === explanation pieces ===

/// "creating a Kafka API key on cluster lkc-1 in environment env-a for service account sa-1".
struct Ask<'a> {
    t: ResourceType,
    kind: &'a Kind<'a>,
    environment: Option<&'a str>,
    owner: Owner<'a>,
}

impl fmt::Display for Ask<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "creating a {} API key", self.t.label())?;
        match *self.kind {
            Kind::Cloud | Kind::Global | Kind::Tableflow => {}
            Kind::Kafka(id) | Kind::SchemaRegistry(id) | Kind::KsqlDb(id) => {
                write!(f, " on cluster {id}")?
            }
            Kind::Flink { region, .. } => write!(f, " for region {region}")?,
        }
        let env = match *self.kind {
            Kind::Flink { environment, .. } => Some(environment),
            _ => self.environment,
        };
        if let Some(env) = env {
            write!(f, " in environment {env}")?;
        }
        match self.owner {
            Owner::Own(id) => write!(f, " for your own user account {id}"),
            Owner::OtherUser(id) => write!(f, " for user {id}"),
            Owner::ServiceAccount(id) => write!(f, " for service account {id}"),
            Owner::Unsupported(id) => write!(f, " owned by `{}`", Shown(id)),
        }
    }
}

/// The caller's bindings of roles the matrix knows: "EnvironmentAdmin on environment=env-a and …".
struct Holdings<'a> {
    data: &'a AuthzSnapshot,
    principal: &'a Principal,
}

impl fmt::Display for Holdings<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let matrix = self.data.matrix();
        let relevant: Vec<(Holder<'_>, &RoleBinding)> = applicable(self.data, self.principal)
            .filter(|(_, b)| matrix.role(b.role()).is_some())
            .collect();
        let total = relevant.len();
        if total == 0 {
            return f.write_str("no role binding that can create API keys");
        }
        for (i, (holder, b)) in relevant.iter().take(MAX_LISTED_BINDINGS).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} on {}", b.role(), b.pattern().scope())?;
            if !matches!(holder, Holder::Caller(_)) {
                f.write_str(" (")?;
                holder.phrase(f)?;
                f.write_str(")")?;
            }
        }
        if total > MAX_LISTED_BINDINGS {
            write!(f, " and {} more", total - MAX_LISTED_BINDINGS)?;
        }
        Ok(())
    }
}

/// Untrusted input, cut to [`MAX_SHOWN_INPUT`] characters, control characters replaced.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars().take(MAX_SHOWN_INPUT) {
            f.write_char(if c.is_control() { '\u{FFFD}' } else { c })?;
        }
        if self.0.chars().nth(MAX_SHOWN_INPUT).is_some() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
