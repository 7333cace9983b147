//! Layer-1 decision tests: the creation matrix exhaustively against a hand-written copy of
//! reference §7, explanations, edge cases, the shipped `policies/` files, and the upstream source
//! with canned Confluent pages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::action::{Action, CreateSpec, ResourceSpec};
use super::bindings::{BindingIndex, BindingIndexBuilder};
use super::crn::OrgId;
use super::decision::{pointer, rule, Decision};
use super::inventory::Inventory;
use super::matrix::{Grant, Matrix, ResourceType};
use super::principal::{AuthMethod, Principal};
use super::source::{fetch_bindings, fetch_inventory, Fetch, FetchError, FetchFuture};
use super::{decide, decide_create, AuthzData, AuthzSnapshot};

const ORG: &str = "0b7e1c2d-3f4a-4b5c-8d6e-7f8091a2b3c4";
const CALLER: &str = "u-caller";
const OTHER_USER: &str = "u-someone";
const SA: &str = "sa-target";

const MATRIX_TOML: &str = include_str!("../../policies/matrix.toml");

const INVENTORY_TOML: &str = r#"
[environments.env-prod]
kafka_clusters = ["lkc-prod"]
schema_registries = ["lsrc-prod"]
ksqldb_clusters = [{ id = "lksqlc-prod", kafka_cluster = "lkc-prod" }]
[environments.env-other]
kafka_clusters = ["lkc-other"]
schema_registries = ["lsrc-other"]
ksqldb_clusters = [{ id = "lksqlc-other", kafka_cluster = "lkc-other" }, { id = "lksqlc-loose" }]
"#;

fn crn(rest: &str) -> String {
    format!("crn://confluent.cloud/organization={ORG}{rest}")
}

fn org() -> OrgId {
    OrgId::parse(ORG).unwrap()
}

struct Fixture {
    matrix: Arc<Matrix>,
    inventory: Arc<Inventory>,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            matrix: Arc::new(Matrix::from_toml_str(MATRIX_TOML).unwrap()),
            inventory: Arc::new(Inventory::from_toml_str(INVENTORY_TOML).unwrap()),
        }
    }

    /// A snapshot with `(principal, role, crn)` bindings.
    fn snapshot(&self, bindings: &[(&str, &str, &str)]) -> AuthzSnapshot {
        let mut b = BindingIndexBuilder::new(org());
        for (principal, role, crn) in bindings {
            b.push(principal, role, crn).unwrap();
        }
        AuthzSnapshot::new(
            self.matrix.clone(),
            Arc::new(b.build()),
            self.inventory.clone(),
            Instant::now(),
        )
    }
}

fn user(id: &str) -> Principal {
    Principal::new(
        id,
        AuthMethod::ApiKey {
            key_id: "ABCD1234567890AB".into(),
        },
    )
    .unwrap()
}

fn spec(owner: &str, resource: Option<(&str, Option<&str>)>) -> CreateSpec {
    CreateSpec {
        owner_id: owner.into(),
        resource: resource.map(|(id, env)| ResourceSpec {
            id: id.into(),
            environment: env.map(Into::into),
        }),
        display_name: String::new(),
        description: String::new(),
    }
}

fn kafka(owner: &str) -> CreateSpec {
    spec(owner, Some(("lkc-prod", None)))
}

// === the creation matrix, exhaustively ===

/// A cell of reference §7 as printed there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    /// "Yes"
    Y,
    /// "Yes (env)"
    E,
    /// "Yes (cluster)"
    C,
    /// "No"
    N,
}
use Cell::{C, E, N, Y};

/// Reference §7, copied by hand (never read from `policies/matrix.toml`).
/// Columns: Cloud, Kafka, Schema Registry, Flink, Tableflow, ksqlDB, Global.
const REFERENCE_TABLE: &[(&str, [Cell; 7])] = &[
    ("OrganizationAdmin", [Y, Y, Y, Y, Y, Y, Y]),
    ("EnvironmentAdmin", [N, E, E, E, N, E, N]),
    ("CloudClusterAdmin", [N, C, N, N, N, C, N]),
    ("ResourceKeyAdmin", [N, Y, Y, N, Y, Y, N]),
    ("FlinkAdmin", [N, N, N, Y, N, N, N]),
    ("KsqlAdmin", [N, N, N, N, N, C, N]),
];

/// "ResourceOwner (on service account)": Yes in every column, only through a binding covering the
/// service account.
const RESOURCE_OWNER_ROW: (&str, [Cell; 7]) = ("ResourceOwner", [Y; 7]);

/// "All other roles": No everywhere. A sample of real Confluent roles.
const OTHER_ROLES: &[&str] = &[
    "DeveloperRead",
    "DeveloperWrite",
    "DeveloperManage",
    "Operator",
    "MetricsViewer",
    "Assigner",
    "DataSteward",
    "FlinkDeveloper",
    "AccountAdmin",
];

/// "Only OrganizationAdmin and ResourceOwner on the service account can create Global keys for a
/// service account." (ResourceOwner is exercised by `Owner::SaOwned`.)
const SA_GLOBAL_ROLES: &[&str] = &["OrganizationAdmin"];

/// `spec.resource` as `(id, environment)`, `None` for an absent resource.
type Resource = Option<(&'static str, Option<&'static str>)>;

/// The request for each column, in column order.
const COLUMNS: [(ResourceType, Resource); 7] = [
    (ResourceType::Cloud, None),
    (ResourceType::Kafka, Some(("lkc-prod", None))),
    (ResourceType::SchemaRegistry, Some(("lsrc-prod", None))),
    (
        ResourceType::Flink,
        Some(("aws.us-east-1", Some("env-prod"))),
    ),
    (ResourceType::Tableflow, Some(("tableflow", None))),
    (ResourceType::KsqlDb, Some(("lksqlc-prod", None))),
    (ResourceType::Global, Some(("global", None))),
];

/// Each column's resource CRN (after the organisation), written out.
const EXACT: [&str; 7] = [
    "",
    "/environment=env-prod/cloud-cluster=lkc-prod",
    "/environment=env-prod/schema-registry=lsrc-prod",
    "/environment=env-prod/flink-region=aws.us-east-1",
    "",
    "/environment=env-prod/cloud-cluster=lkc-prod/ksql=lksqlc-prod",
    "",
];

/// For each column, a binding of the same shape somewhere else (covers nothing of the request).
const ELSEWHERE: [&str; 7] = [
    "/environment=env-other",
    "/environment=env-other/cloud-cluster=lkc-other",
    "/environment=env-other/schema-registry=lsrc-other",
    "/environment=env-other/flink-region=aws.us-east-1",
    "/environment=env-other",
    "/environment=env-other/cloud-cluster=lkc-other/ksql=lksqlc-other",
    "/environment=env-other",
];

/// Cloud, Tableflow and Global keys belong to the organisation.
const ORG_LEVEL: [bool; 7] = [true, false, false, false, true, false, true];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binding {
    /// On the organisation: covers everything, the service account included.
    Organization,
    /// On `env-prod`: covers everything in it, nothing at organisation level.
    Environment,
    /// On the resource's own CRN.
    Exact,
    /// On the same kind of resource in another environment.
    Elsewhere,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Own,
    OtherUser,
    /// A service account the caller holds no ResourceOwner on.
    Sa,
    /// A service account the caller also holds ResourceOwner on.
    SaOwned,
}

fn binding_crn(col: usize, b: Binding) -> String {
    match b {
        Binding::Organization => crn(""),
        Binding::Environment => crn("/environment=env-prod"),
        Binding::Exact => crn(EXACT[col]),
        Binding::Elsewhere => crn(ELSEWHERE[col]),
    }
}

fn covers(col: usize, b: Binding) -> bool {
    match b {
        Binding::Organization | Binding::Exact => true,
        Binding::Environment => !ORG_LEVEL[col],
        Binding::Elsewhere => false,
    }
}

/// The expected decision, from the hand-written table: (allow, rule).
fn expected(role: &str, cell: Cell, col: usize, b: Binding, owner: Owner) -> (bool, &'static str) {
    let t = COLUMNS[col].0;
    let is_org_admin = role == "OrganizationAdmin";
    let is_resource_owner = role == RESOURCE_OWNER_ROW.0;
    // The role's own binding grants the type on the resource (ResourceOwner never does: it is
    // about the service account, not the resource).
    let role_grants = cell != N && covers(col, b) && !is_resource_owner;
    match owner {
        Owner::OtherUser => (false, rule::DENY_OTHER_USER),
        Owner::Own if role_grants => (true, rule::OWN_ROLE),
        Owner::Own => (false, rule::DENY_OWN_NO_ROLE),
        Owner::Sa | Owner::SaOwned => {
            // ResourceOwner bound on the organisation (for an org-level column, its exact CRN)
            // covers the service account too.
            let on_org = b == Binding::Organization || (b == Binding::Exact && ORG_LEVEL[col]);
            let owns = owner == Owner::SaOwned || (is_resource_owner && on_org);
            let sa_ok = t != ResourceType::Global || SA_GLOBAL_ROLES.contains(&role);
            if role_grants && sa_ok && is_org_admin {
                (true, rule::SA_ORGANIZATION_ADMIN)
            } else if owns {
                (true, rule::SA_RESOURCE_OWNER)
            } else if role_grants && sa_ok {
                (true, rule::SA_ROLE)
            } else if t == ResourceType::Global {
                (false, rule::DENY_SA_GLOBAL)
            } else {
                (false, rule::DENY_SA_NO_ROLE)
            }
        }
    }
}

#[test]
fn every_role_type_scope_and_owner_matches_the_reference_table() {
    let fx = Fixture::new();
    let mut rows: Vec<(&str, [Cell; 7])> = REFERENCE_TABLE.to_vec();
    rows.push(RESOURCE_OWNER_ROW);
    rows.extend(OTHER_ROLES.iter().map(|r| (*r, [N; 7])));
    let bindings = [
        Binding::Organization,
        Binding::Environment,
        Binding::Exact,
        Binding::Elsewhere,
    ];
    let owners = [Owner::Own, Owner::OtherUser, Owner::Sa, Owner::SaOwned];
    let ro_on_sa = crn(&format!("/service-account={SA}"));

    let caller = user(CALLER);
    let mut failures = Vec::new();
    let mut cases = 0;
    for (role, cells) in &rows {
        for (col, (t, resource)) in COLUMNS.iter().enumerate() {
            for b in bindings {
                let role_crn = binding_crn(col, b);
                for owner in owners {
                    let mut held = vec![("User:u-caller", *role, role_crn.as_str())];
                    if owner == Owner::SaOwned {
                        held.push(("User:u-caller", "ResourceOwner", ro_on_sa.as_str()));
                    }
                    let snap = fx.snapshot(&held);
                    let owner_id = match owner {
                        Owner::Own => CALLER,
                        Owner::OtherUser => OTHER_USER,
                        Owner::Sa | Owner::SaOwned => SA,
                    };
                    let d = decide_create(&snap, &caller, &spec(owner_id, *resource));
                    let want = expected(role, cells[col], col, b, owner);
                    cases += 1;
                    if (d.allow, d.rule) != want || d.target.resource_type != Some(*t) {
                        failures.push(format!(
                            "{role} {t} binding={b:?} owner={owner:?}: want {want:?}, got ({}, {}) — {}",
                            d.allow, d.rule, d.explanation
                        ));
                    }
                    if d.allow != d.granted_by.is_some() || d.allow == d.pointer.is_some() {
                        failures.push(format!("{role} {t} {b:?} {owner:?}: inconsistent {d:?}"));
                    }
                }
            }
        }
    }
    assert_eq!(cases, rows.len() * 7 * 4 * 4);
    assert!(
        failures.is_empty(),
        "{} of {cases} cases differ:\n{}",
        failures.len(),
        failures[..failures.len().min(25)].join("\n")
    );
}

#[test]
fn shipped_matrix_cells_equal_the_reference_table() {
    let m = Matrix::from_toml_str(MATRIX_TOML).unwrap();
    let mut rows: Vec<(&str, [Cell; 7])> = REFERENCE_TABLE.to_vec();
    rows.push(RESOURCE_OWNER_ROW);
    rows.extend(OTHER_ROLES.iter().map(|r| (*r, [N; 7])));
    for (role, cells) in rows {
        for (col, (t, _)) in COLUMNS.iter().enumerate() {
            let want = match cells[col] {
                Y => Grant::Yes,
                E | C => Grant::Scoped,
                N => Grant::No,
            };
            assert_eq!(m.grant(role, *t), want, "{role} {t}");
        }
    }
}

#[test]
fn resource_owner_on_another_service_account_does_not_count() {
    let fx = Fixture::new();
    let snap = fx.snapshot(&[(
        "User:u-caller",
        "ResourceOwner",
        &crn("/service-account=sa-other"),
    )]);
    for (_, resource) in COLUMNS {
        let d = decide_create(&snap, &user(CALLER), &spec(SA, resource));
        assert!(!d.allow, "{d}");
    }
    let own = decide_create(
        &snap,
        &user(CALLER),
        &spec("sa-other", Some(("global", None))),
    );
    assert!(own.allow, "{own}");
    assert_eq!(own.rule, rule::SA_RESOURCE_OWNER);
}

#[test]
fn global_for_a_service_account_stays_limited_when_another_role_grants_global() {
    let fx = Fixture::new();
    let widened = MATRIX_TOML.replace(
        r#"Tableflow = "yes", KsqlDb = "yes",    Global = "no" }"#,
        r#"Tableflow = "yes", KsqlDb = "yes",    Global = "yes" }"#,
    );
    let matrix = Arc::new(Matrix::from_toml_str(&widened).unwrap());
    assert_eq!(
        matrix.grant("ResourceKeyAdmin", ResourceType::Global),
        Grant::Yes
    );
    let mut b = BindingIndexBuilder::new(org());
    b.push("User:u-caller", "ResourceKeyAdmin", &crn(""))
        .unwrap();
    let snap = AuthzSnapshot::new(
        matrix,
        Arc::new(b.build()),
        fx.inventory.clone(),
        Instant::now(),
    );
    let global = Some(("global", None));
    let own = decide_create(&snap, &user(CALLER), &spec(CALLER, global));
    assert!(own.allow, "{own}");
    let sa = decide_create(&snap, &user(CALLER), &spec(SA, global));
    assert!(!sa.allow, "{sa}");
    assert_eq!(sa.rule, rule::DENY_SA_GLOBAL);
}

// === explanations ===

#[test]
fn global_key_for_a_service_account_explains_what_would_allow_it() {
    let fx = Fixture::new();
    let snap = fx.snapshot(&[(
        "User:u-abc",
        "EnvironmentAdmin",
        &crn("/environment=env-prod"),
    )]);
    let d = decide_create(
        &snap,
        &user("u-abc"),
        &spec("sa-123", Some(("global", None))),
    );
    assert!(!d.allow);
    assert_eq!(d.rule, rule::DENY_SA_GLOBAL);
    assert_eq!(d.pointer, Some(pointer::RESOURCE_ID));
    assert_eq!(
        d.explanation,
        "creating a Global API key for service account sa-123 requires OrganizationAdmin or \
         ResourceOwner on sa-123; you (u-abc) hold EnvironmentAdmin on environment=env-prod"
    );
}

#[test]
fn own_account_denial_names_the_roles_and_the_resource_crn() {
    let fx = Fixture::new();
    let snap = fx.snapshot(&[("User:u-caller", "DeveloperRead", &crn(""))]);
    let d = decide_create(&snap, &user(CALLER), &kafka(CALLER));
    assert_eq!(d.rule, rule::DENY_OWN_NO_ROLE);
    assert_eq!(
        d.explanation,
        format!(
            "creating a Kafka API key on cluster lkc-prod in environment env-prod for your own \
             user account u-caller requires CloudClusterAdmin, EnvironmentAdmin, \
             OrganizationAdmin or ResourceKeyAdmin on a scope covering {}; you (u-caller) hold \
             no role binding that can create API keys",
            crn("/environment=env-prod/cloud-cluster=lkc-prod")
        )
    );
}

#[test]
fn service_account_denial_offers_resource_owner() {
    let fx = Fixture::new();
    let snap = fx.snapshot(&[("User:u-caller", "FlinkAdmin", &crn("/environment=env-prod"))]);
    let d = decide_create(&snap, &user(CALLER), &spec(SA, Some(("lsrc-prod", None))));
    assert_eq!(d.rule, rule::DENY_SA_NO_ROLE);
    assert!(
        d.explanation.ends_with(&format!(
            "requires EnvironmentAdmin, OrganizationAdmin or ResourceKeyAdmin on a scope covering \
             {}, or ResourceOwner on sa-target; you (u-caller) hold FlinkAdmin on environment=env-prod",
            crn("/environment=env-prod/schema-registry=lsrc-prod")
        )),
        "{}",
        d.explanation
    );
}

#[test]
fn allow_explains_which_binding_covered_the_resource() {
    let fx = Fixture::new();
    let snap = fx.snapshot(&[
        (
            "User:u-caller",
            "DeveloperRead",
            &crn("/environment=env-prod"),
        ),
        (
            "User:u-caller",
            "EnvironmentAdmin",
            &crn("/environment=env-prod"),
        ),
    ]);
    let d = decide_create(&snap, &user(CALLER), &kafka(SA));
    assert!(d.allow);
    assert_eq!(d.rule, rule::SA_ROLE);
    assert_eq!(
        d.explanation,
        format!(
            "creating a Kafka API key on cluster lkc-prod in environment env-prod for service \
             account sa-target is allowed (matrix.sa.role): you (u-caller) hold EnvironmentAdmin \
             on environment=env-prod, which covers {}",
            crn("/environment=env-prod/cloud-cluster=lkc-prod")
        )
    );
    let g = d.granted_by.unwrap();
    assert_eq!(
        (g.principal_id.as_str(), &*g.role),
        (CALLER, "EnvironmentAdmin")
    );
    assert_eq!(&*g.crn_pattern, crn("/environment=env-prod"));
    assert_eq!(d.target.environment.as_deref(), Some("env-prod"));
    assert_eq!(d.target.owner_id.as_deref(), Some(SA));
    assert_eq!(d.principal_id, CALLER);
}

#[test]
fn organisation_admin_outranks_other_grants() {
    let fx = Fixture::new();
    let snap = fx.snapshot(&[
        (
            "User:u-caller",
            "EnvironmentAdmin",
            &crn("/environment=env-prod"),
        ),
        (
            "User:u-caller",
            "ResourceOwner",
            &crn("/service-account=sa-target"),
        ),
        ("User:u-caller", "OrganizationAdmin", &crn("")),
    ]);
    let d = decide_create(&snap, &user(CALLER), &kafka(SA));
    assert_eq!(d.rule, rule::SA_ORGANIZATION_ADMIN);
    let snap = fx.snapshot(&[
        (
            "User:u-caller",
            "EnvironmentAdmin",
            &crn("/environment=env-prod"),
        ),
        (
            "User:u-caller",
            "ResourceOwner",
            &crn("/service-account=sa-target"),
        ),
    ]);
    let d = decide_create(&snap, &user(CALLER), &kafka(SA));
    assert_eq!(d.rule, rule::SA_RESOURCE_OWNER);
    assert!(
        d.explanation
            .contains("which covers service account sa-target"),
        "{}",
        d.explanation
    );
}

#[test]
fn long_holdings_are_cut_short() {
    let fx = Fixture::new();
    let crns: Vec<String> = (0..8)
        .map(|i| crn(&format!("/environment=env-x{i}")))
        .collect();
    let held: Vec<(&str, &str, &str)> = crns
        .iter()
        .map(|c| ("User:u-caller", "EnvironmentAdmin", c.as_str()))
        .collect();
    let d = decide_create(&fx.snapshot(&held), &user(CALLER), &kafka(CALLER));
    assert!(!d.allow);
    assert!(
        d.explanation.ends_with("environment=env-x4 and 3 more"),
        "{}",
        d.explanation
    );
}

// === owners, resources, data ===

#[test]
fn other_user_is_denied_even_for_an_organisation_admin() {
    let fx = Fixture::new();
    let snap = fx.snapshot(&[("User:u-caller", "OrganizationAdmin", &crn(""))]);
    let d = decide_create(&snap, &user(CALLER), &kafka(OTHER_USER));
    assert!(!d.allow);
    assert_eq!(d.rule, rule::DENY_OTHER_USER);
    assert_eq!(d.pointer, Some(pointer::OWNER_ID));
    assert!(d
        .explanation
        .contains("nobody creates keys for someone else's user account"));
}

#[test]
fn owners_other_than_users_and_service_accounts_are_denied() {
    let fx = Fixture::new();
    let snap = fx.snapshot(&[("User:u-caller", "OrganizationAdmin", &crn(""))]);
    for owner in [
        "pool-abc",
        "group-x",
        "sa-",
        "u-",
        "",
        "env-prod",
        "sa-a/b",
        "u-caller ",
        "SA-1",
    ] {
        let d = decide_create(&snap, &user(CALLER), &kafka(owner));
        assert!(!d.allow, "{owner:?}");
        assert_eq!(d.rule, rule::DENY_UNSUPPORTED_OWNER, "{owner:?}");
        assert_eq!(d.pointer, Some(pointer::OWNER_ID));
    }
}

#[test]
fn resource_type_comes_from_the_id_and_environment_only() {
    let fx = Fixture::new();
    let snap = fx.snapshot(&[("User:u-caller", "OrganizationAdmin", &crn(""))]);
    let ok = [
        (None, ResourceType::Cloud),
        (Some(("cloud", None)), ResourceType::Cloud),
        (Some(("global", Some("env-prod"))), ResourceType::Global),
        (Some(("tableflow", None)), ResourceType::Tableflow),
        (Some(("lkc-prod", Some("env-other"))), ResourceType::Kafka),
        (
            Some(("gcp.us-central1", Some("env-prod"))),
            ResourceType::Flink,
        ),
        (
            Some(("azure.centralus", Some("env-other"))),
            ResourceType::Flink,
        ),
    ];
    for (resource, t) in ok {
        let d = decide_create(&snap, &user(CALLER), &spec(SA, resource));
        assert!(d.allow, "{resource:?}: {d}");
        assert_eq!(d.target.resource_type, Some(t));
    }
    // An environment in the body never overrides the inventory's.
    let d = decide_create(
        &snap,
        &user(CALLER),
        &spec(SA, Some(("lkc-prod", Some("env-other")))),
    );
    assert_eq!(d.target.environment.as_deref(), Some("env-prod"));

    let unknown = [
        (Some(("", None)), pointer::RESOURCE_ID),
        (Some(("Cloud", None)), pointer::RESOURCE_ID),
        (Some(("GLOBAL", None)), pointer::RESOURCE_ID),
        (Some(("lkc-", None)), pointer::RESOURCE_ID),
        (Some(("lkc-a/b", None)), pointer::RESOURCE_ID),
        (Some(("lfcp-123", Some("env-prod"))), pointer::RESOURCE_ID),
        (Some(("env-prod", None)), pointer::RESOURCE_ID),
        (
            Some(("AWS.us-east-1", Some("env-prod"))),
            pointer::RESOURCE_ID,
        ),
        (
            Some(("aws.us-east-1.x", Some("env-prod"))),
            pointer::RESOURCE_ID,
        ),
        (Some(("aws.us-east-1", None)), pointer::RESOURCE_ENVIRONMENT),
        (
            Some(("aws.us-east-1", Some(""))),
            pointer::RESOURCE_ENVIRONMENT,
        ),
        (
            Some(("aws.us-east-1", Some("prod"))),
            pointer::RESOURCE_ENVIRONMENT,
        ),
        (
            Some(("aws.us-east-1", Some("env-a/b"))),
            pointer::RESOURCE_ENVIRONMENT,
        ),
    ];
    for (resource, ptr) in unknown {
        let d = decide_create(&snap, &user(CALLER), &spec(SA, resource));
        assert!(!d.allow, "{resource:?}");
        assert_eq!(d.rule, rule::DENY_UNKNOWN_RESOURCE, "{resource:?}");
        assert_eq!(d.pointer, Some(ptr), "{resource:?}");
        assert!(!d.needs_inventory_refresh());
    }
}

#[test]
fn missing_inventory_denies_with_a_refresh_outcome() {
    let fx = Fixture::new();
    let snap = fx.snapshot(&[("User:u-caller", "OrganizationAdmin", &crn(""))]);
    for (resource, ptr) in [
        (("lkc-new", None), pointer::RESOURCE_ID),
        (("lsrc-new", None), pointer::RESOURCE_ID),
        (("lksqlc-new", None), pointer::RESOURCE_ID),
        (
            ("aws.us-east-1", Some("env-new")),
            pointer::RESOURCE_ENVIRONMENT,
        ),
    ] {
        let d = decide_create(&snap, &user(CALLER), &spec(SA, Some(resource)));
        assert!(!d.allow, "{resource:?}");
        assert_eq!(d.rule, rule::DENY_INVENTORY_MISSING);
        assert_eq!(d.pointer, Some(ptr));
        assert!(d.needs_inventory_refresh());
        assert!(
            d.explanation.contains("inventory does not know"),
            "{}",
            d.explanation
        );
    }
    // A request that is denied anyway does not ask for a refresh.
    let d = decide_create(
        &snap,
        &user(CALLER),
        &spec(OTHER_USER, Some(("lkc-new", None))),
    );
    assert_eq!(d.rule, rule::DENY_OTHER_USER);
    assert!(!d.needs_inventory_refresh());
    // Once the inventory knows the cluster, the same request is allowed.
    let inv = Inventory::from_toml_str(&format!(
        "{INVENTORY_TOML}\n[environments.env-new]\nkafka_clusters = [\"lkc-new\"]\n"
    ))
    .unwrap();
    let data = AuthzData::new(snap);
    data.replace_inventory(inv, Instant::now());
    let d = decide_create(
        &data.load(),
        &user(CALLER),
        &spec(SA, Some(("lkc-new", None))),
    );
    assert!(d.allow, "{d}");
}

#[test]
fn kafka_cluster_child_and_wildcard_bindings_cover_the_cluster() {
    let fx = Fixture::new();
    for pattern in [
        "/environment=env-prod/cloud-cluster=lkc-prod/kafka=lkc-prod",
        "/environment=env-*",
        "/environment=env-prod/cloud-cluster=lkc-*",
    ] {
        let snap = fx.snapshot(&[("User:u-caller", "CloudClusterAdmin", &crn(pattern))]);
        let d = decide_create(&snap, &user(CALLER), &kafka(CALLER));
        assert!(d.allow, "{pattern}: {d}");
    }
    for pattern in [
        "/environment=env-pro",
        "/environment=env-prod/cloud-cluster=lkc-pro",
        "/environment=env-prod/cloud-cluster=lkc-prod/kafka=lkc-prod/topic=*",
        "/environment=env-other*",
    ] {
        let snap = fx.snapshot(&[("User:u-caller", "CloudClusterAdmin", &crn(pattern))]);
        let d = decide_create(&snap, &user(CALLER), &kafka(CALLER));
        assert!(!d.allow, "{pattern}: {d}");
    }
}

#[test]
fn ksqldb_without_known_kafka_cluster_needs_an_environment_binding() {
    let fx = Fixture::new();
    let loose = spec(CALLER, Some(("lksqlc-loose", None)));
    for (role, pattern, allow) in [
        ("EnvironmentAdmin", "/environment=env-other", true),
        (
            "CloudClusterAdmin",
            "/environment=env-other/cloud-cluster=lkc-other",
            false,
        ),
        (
            "KsqlAdmin",
            "/environment=env-other/cloud-cluster=lkc-other/ksql=lksqlc-loose",
            false,
        ),
    ] {
        let snap = fx.snapshot(&[("User:u-caller", role, &crn(pattern))]);
        let d = decide_create(&snap, &user(CALLER), &loose);
        assert_eq!(d.allow, allow, "{role}: {d}");
    }
    let snap = fx.snapshot(&[("User:u-caller", "KsqlAdmin", &crn(EXACT[5]))]);
    let d = decide_create(
        &snap,
        &user(CALLER),
        &spec(CALLER, Some(("lksqlc-prod", None))),
    );
    assert!(d.allow);
    assert_eq!(d.target.kafka_cluster.as_deref(), Some("lkc-prod"));
}

#[test]
fn group_mapping_bindings_apply_to_members_only() {
    let fx = Fixture::new();
    let snap = fx.snapshot(&[
        (
            "User:group-platform",
            "EnvironmentAdmin",
            &crn("/environment=env-prod"),
        ),
        ("User:u-admin", "OrganizationAdmin", &crn("")),
    ]);
    let member = user(CALLER).with_groups(vec!["group-platform".into()]);
    let d = decide_create(&snap, &member, &kafka(CALLER));
    assert!(d.allow, "{d}");
    assert_eq!(d.granted_by.unwrap().principal_id, "group-platform");
    assert!(d.explanation.contains("through group group-platform"));

    let outsider = user(CALLER).with_groups(vec!["platform".into(), "u-admin".into()]);
    let d = decide_create(&snap, &outsider, &kafka(CALLER));
    assert!(!d.allow, "{d}");
}

#[test]
fn service_accounts_and_pools_can_act_through_their_own_bindings() {
    let fx = Fixture::new();
    let snap = fx.snapshot(&[
        (
            "User:sa-ci",
            "ResourceOwner",
            &crn("/service-account=sa-ci"),
        ),
        (
            "User:pool-ci",
            "EnvironmentAdmin",
            &crn("/environment=env-prod"),
        ),
    ]);
    let d = decide_create(
        &snap,
        &user("sa-ci"),
        &spec("sa-ci", Some(("global", None))),
    );
    assert!(d.allow, "{d}");
    let d = decide_create(&snap, &user("pool-ci"), &kafka(SA));
    assert!(d.allow, "{d}");
    let d = decide_create(&snap, &user("pool-ci"), &kafka("pool-ci"));
    assert_eq!(d.rule, rule::DENY_UNSUPPORTED_OWNER);
}

#[test]
fn empty_bindings_deny_every_create() {
    let fx = Fixture::new();
    let snap = AuthzSnapshot::new(
        fx.matrix.clone(),
        Arc::new(BindingIndex::empty(org())),
        fx.inventory.clone(),
        Instant::now(),
    );
    for (_, resource) in COLUMNS {
        for owner in [CALLER, SA] {
            assert!(!decide_create(&snap, &user(CALLER), &spec(owner, resource)).allow);
        }
    }
}

#[test]
fn reads_updates_and_deletes_pass_layer_one() {
    let fx = Fixture::new();
    let snap = fx.snapshot(&[]);
    for action in [
        Action::ListApiKeys,
        Action::GetApiKey,
        Action::UpdateApiKey,
        Action::DeleteApiKey,
    ] {
        let d = decide(&snap, &user(CALLER), action, None);
        assert!(d.allow, "{action}");
        assert_eq!(d.rule, rule::PASSTHROUGH);
        assert_eq!(d.pointer, None);
    }
    let d = decide(&snap, &user(CALLER), Action::CreateApiKey, None);
    assert!(!d.allow);
    assert_eq!(d.rule, rule::DENY_MISSING_SPEC);
    let d = decide(
        &snap,
        &user(CALLER),
        Action::CreateApiKey,
        Some(&kafka(CALLER)),
    );
    assert_eq!(d.rule, rule::DENY_OWN_NO_ROLE);
}

#[test]
fn untrusted_input_is_cut_short_in_explanations() {
    let fx = Fixture::new();
    let snap = fx.snapshot(&[]);
    let long = format!("x\n{}", "y".repeat(500));
    let d = decide_create(&snap, &user(CALLER), &spec(SA, Some((&long, None))));
    assert_eq!(d.rule, rule::DENY_UNKNOWN_RESOURCE);
    assert!(!d.explanation.contains('\n'));
    assert!(d.explanation.len() < 400, "{}", d.explanation.len());
}

// === shipped policies/ files ===

/// The organisation of `policies/role-bindings.toml` (and of `keygate dev`).
const EXAMPLE_ORG: &str = "4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c";

fn example() -> AuthzSnapshot {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let org = OrgId::parse(EXAMPLE_ORG).unwrap();
    AuthzSnapshot::new(
        Arc::new(Matrix::load(&dir.join("matrix.toml")).unwrap()),
        Arc::new(BindingIndex::load(&dir.join("role-bindings.toml"), &org).unwrap()),
        Arc::new(Inventory::load(&dir.join("inventory.toml")).unwrap()),
        Instant::now(),
    )
}

#[test]
fn every_shipped_policy_file_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    // policy.example.toml is the `[policy]` config of layer 2; policy::org's tests load it.
    assert_eq!(
        names,
        [
            "inventory.toml",
            "matrix.toml",
            "policy.example.toml",
            "role-bindings.toml"
        ]
    );
    let snap = example();
    assert_eq!(snap.bindings().len(), 9);
    assert_eq!(snap.inventory().cluster_count(), 6);
    let wrong_org = OrgId::parse(ORG).unwrap();
    let err = BindingIndex::load(&dir.join("role-bindings.toml"), &wrong_org).unwrap_err();
    assert!(
        err.to_string()
            .contains("role-bindings.toml: role_bindings[0]"),
        "{err}"
    );
}

#[test]
fn example_organisation_behaves_as_its_file_describes() {
    let snap = example();
    let cases = [
        ("u-alice", "sa-payments", Some(("global", None)), true),
        ("u-bob", "sa-orders", Some(("global", None)), true),
        ("u-bob", "sa-payments", Some(("lkc-prod01", None)), true),
        ("u-bob", "sa-payments", Some(("lkc-dev01", None)), false),
        ("u-bob", "sa-payments", Some(("global", None)), false),
        ("u-carol", "u-carol", Some(("lksqlc-prod01", None)), true),
        ("u-carol", "u-carol", Some(("lsrc-prod01", None)), false),
        ("u-dave", "u-dave", Some(("lkc-dev01", None)), false),
        ("u-erin", "sa-orders", Some(("tableflow", None)), true),
        ("u-erin", "sa-orders", None, false),
        (
            "u-frank",
            "u-frank",
            Some(("aws.us-east-1", Some("env-dev01"))),
            true,
        ),
        (
            "u-frank",
            "u-frank",
            Some(("aws.us-east-1", Some("env-prod01"))),
            false,
        ),
        ("u-grace", "sa-orders", Some(("lksqlc-dev01", None)), true),
        ("u-grace", "sa-orders", Some(("lksqlc-prod01", None)), false),
        ("sa-keygate", "sa-orders", None, true),
        ("u-alice", "u-bob", None, false),
    ];
    for (caller, owner, resource, allow) in cases {
        let d = decide_create(&snap, &user(caller), &spec(owner, resource));
        assert_eq!(d.allow, allow, "{caller} → {owner} {resource:?}: {d}");
    }
}

// === AuthzData ===

#[test]
fn replacing_one_part_keeps_the_others_and_records_its_time() {
    let fx = Fixture::new();
    let t1 = Instant::now() + Duration::from_secs(60);
    let data = AuthzData::new(fx.snapshot(&[]));
    let before = arc_swap::Guard::into_inner(data.load());
    assert!(!decide_create(&before, &user(CALLER), &kafka(CALLER)).allow);

    let mut b = BindingIndexBuilder::new(org());
    b.push("User:u-caller", "OrganizationAdmin", &crn(""))
        .unwrap();
    data.replace_bindings(b.build(), t1);
    let after = data.load();
    assert!(decide_create(&after, &user(CALLER), &kafka(CALLER)).allow);
    assert_eq!(after.bindings_refreshed_at(), t1);
    assert_eq!(
        after.inventory_refreshed_at(),
        before.inventory_refreshed_at()
    );
    assert_eq!(after.oldest_refresh(), before.inventory_refreshed_at());
    assert!(std::ptr::eq(after.inventory(), before.inventory()));
    // The old snapshot is unchanged for whoever still holds it.
    assert!(!decide_create(&before, &user(CALLER), &kafka(CALLER)).allow);

    data.replace_matrix(
        Matrix::from_toml_str(&MATRIX_TOML.replace(
            r#"[roles.OrganizationAdmin]
grants = { Cloud = "yes", Kafka = "yes","#,
            r#"[roles.OrganizationAdmin]
grants = { Cloud = "yes", Kafka = "no","#,
        ))
        .unwrap(),
    );
    assert!(!decide_create(&data.load(), &user(CALLER), &kafka(CALLER)).allow);
    assert_eq!(data.load().bindings_refreshed_at(), t1);
}

// === upstream source, with canned Confluent pages ===

/// The upstream, answering canned JSON per exact path and query, recording every request.
struct CannedUpstream {
    pages: HashMap<String, Result<Value, u16>>,
    requests: Mutex<Vec<String>>,
}

impl CannedUpstream {
    fn new(pages: Vec<(String, Result<Value, u16>)>) -> Self {
        CannedUpstream {
            pages: pages.into_iter().collect(),
            requests: Mutex::new(Vec::new()),
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Fetch for CannedUpstream {
    fn get_json<'a>(&'a self, path_and_query: &'a str) -> FetchFuture<'a> {
        self.requests
            .lock()
            .unwrap()
            .push(path_and_query.to_owned());
        let answer = match self.pages.get(path_and_query) {
            Some(Ok(v)) => Ok(v.clone()),
            Some(Err(status)) => Err(FetchError::Status {
                path: path_and_query.to_owned(),
                status: *status,
            }),
            None => Err(FetchError::Status {
                path: path_and_query.to_owned(),
                status: 404,
            }),
        };
        Box::pin(async move { answer })
    }
}

fn list(kind: &str, data: Vec<Value>, next: Option<&str>) -> Value {
    json!({
        "api_version": "iam/v2",
        "kind": kind,
        "metadata": { "first": "https://api.confluent.cloud/x", "next": next, "total_size": 99 },
        "data": data,
    })
}

fn rb(id: &str, principal: &str, role: &str, rest: &str) -> Value {
    json!({
        "api_version": "iam/v2", "kind": "RoleBinding", "id": id,
        "metadata": { "self": format!("https://api.confluent.cloud/iam/v2/role-bindings/{id}") },
        "principal": principal, "role_name": role, "crn_pattern": crn(rest),
    })
}

const RB_PATH: &str = "/iam/v2/role-bindings?crn_pattern=crn%3A%2F%2Fconfluent.cloud%2Forganization%3D0b7e1c2d-3f4a-4b5c-8d6e-7f8091a2b3c4&page_size=100";

#[tokio::test]
async fn bindings_are_fetched_across_pages() {
    let next = format!("https://api.confluent.cloud{RB_PATH}&page_token=tok%2B2");
    let upstream = CannedUpstream::new(vec![
        (
            RB_PATH.to_owned(),
            Ok(list(
                "RoleBindingList",
                vec![
                    rb(
                        "rb-1",
                        "User:u-caller",
                        "EnvironmentAdmin",
                        "/environment=env-prod",
                    ),
                    rb(
                        "rb-2",
                        "User:u-x",
                        "DeveloperRead",
                        "/environment=env-prod/cloud-cluster=lkc-prod/kafka=lkc-prod/topic=t",
                    ),
                ],
                Some(&next),
            )),
        ),
        (
            format!("{RB_PATH}&page_token=tok%2B2"),
            Ok(list(
                "RoleBindingList",
                vec![
                    rb("rb-3", "User:sa-target", "OrganizationAdmin", ""),
                    rb("rb-4", "Invitation:i-1", "OrganizationAdmin", ""),
                    json!({ "id": "rb-5", "principal": "User:u-y" }),
                ],
                None,
            )),
        ),
    ]);
    let index = fetch_bindings(&upstream, &org()).await.unwrap();
    assert_eq!(
        upstream.requests(),
        [RB_PATH.to_owned(), format!("{RB_PATH}&page_token=tok%2B2")]
    );
    assert_eq!((index.len(), index.skipped()), (3, 2));
    assert_eq!(index.of("u-caller")[0].role(), "EnvironmentAdmin");
    assert_eq!(index.of("sa-target").len(), 1);

    let fx = Fixture::new();
    let snap = AuthzSnapshot::new(
        fx.matrix.clone(),
        Arc::new(index),
        fx.inventory.clone(),
        Instant::now(),
    );
    assert!(decide_create(&snap, &user(CALLER), &kafka(SA)).allow);
}

#[tokio::test]
async fn bindings_fetch_fails_on_a_bad_page_or_a_looping_token() {
    let upstream = CannedUpstream::new(vec![(RB_PATH.to_owned(), Err(503))]);
    assert!(matches!(
        fetch_bindings(&upstream, &org()).await,
        Err(FetchError::Status { status: 503, .. })
    ));

    let upstream = CannedUpstream::new(vec![(RB_PATH.to_owned(), Ok(json!({ "metadata": {} })))]);
    assert!(matches!(
        fetch_bindings(&upstream, &org()).await,
        Err(FetchError::Shape { .. })
    ));

    let looping = "https://api.confluent.cloud/iam/v2/role-bindings?page_token=same";
    let upstream = CannedUpstream::new(vec![
        (
            RB_PATH.to_owned(),
            Ok(list("RoleBindingList", vec![], Some(looping))),
        ),
        (
            format!("{RB_PATH}&page_token=same"),
            Ok(list("RoleBindingList", vec![], Some(looping))),
        ),
    ]);
    assert!(matches!(
        fetch_bindings(&upstream, &org()).await,
        Err(FetchError::Pagination { .. })
    ));

    let no_token = "https://api.confluent.cloud/iam/v2/role-bindings?page_size=100";
    let upstream = CannedUpstream::new(vec![(
        RB_PATH.to_owned(),
        Ok(list("RoleBindingList", vec![], Some(no_token))),
    )]);
    assert!(matches!(
        fetch_bindings(&upstream, &org()).await,
        Err(FetchError::Pagination { .. })
    ));
}

fn env(id: &str) -> Value {
    json!({ "api_version": "org/v2", "kind": "Environment", "id": id, "display_name": id })
}

fn cluster(kind: &str, id: &str, env: &str, kafka: Option<&str>) -> Value {
    let mut spec = json!({ "environment": { "id": env, "related": "x", "resource_name": "y" } });
    if let Some(lkc) = kafka {
        spec["kafka_cluster"] = json!({ "id": lkc, "environment": env });
    }
    json!({ "kind": kind, "id": id, "spec": spec, "status": { "phase": "PROVISIONED" } })
}

#[tokio::test]
async fn inventory_is_synced_from_environments_and_their_clusters() {
    let p = |s: &str| s.to_owned();
    let upstream = CannedUpstream::new(vec![
        (
            p("/org/v2/environments?page_size=100"),
            Ok(list(
                "EnvironmentList",
                vec![env("env-prod")],
                Some("https://api.confluent.cloud/org/v2/environments?page_size=100&page_token=e2"),
            )),
        ),
        (
            p("/org/v2/environments?page_size=100&page_token=e2"),
            Ok(list("EnvironmentList", vec![env("env-dev"), env("not-an-env")], None)),
        ),
        (
            p("/cmk/v2/clusters?environment=env-prod&page_size=100"),
            Ok(list(
                "ClusterList",
                vec![cluster("Cluster", "lkc-p1", "env-prod", None)],
                Some("https://api.confluent.cloud/cmk/v2/clusters?environment=env-prod&page_size=100&page_token=k2"),
            )),
        ),
        (
            p("/cmk/v2/clusters?environment=env-prod&page_size=100&page_token=k2"),
            Ok(list("ClusterList", vec![cluster("Cluster", "lkc-p2", "env-prod", None)], None)),
        ),
        (
            p("/srcm/v3/clusters?environment=env-prod&page_size=100"),
            Ok(list("ClusterList", vec![cluster("Cluster", "lsrc-p1", "env-prod", None)], None)),
        ),
        (
            p("/ksqldbcm/v2/clusters?environment=env-prod&page_size=100"),
            Ok(list(
                "ClusterList",
                vec![
                    cluster("Cluster", "lksqlc-p1", "env-prod", Some("lkc-p1")),
                    cluster("Cluster", "lksqlc-p2", "env-prod", None),
                ],
                None,
            )),
        ),
        (p("/cmk/v2/clusters?environment=env-dev&page_size=100"), Ok(list("ClusterList", vec![], None))),
        (p("/srcm/v3/clusters?environment=env-dev&page_size=100"), Ok(list("ClusterList", vec![], None))),
        (
            p("/ksqldbcm/v2/clusters?environment=env-dev&page_size=100"),
            Ok(list("ClusterList", vec![], None)),
        ),
    ]);
    let inv = fetch_inventory(&upstream).await.unwrap();
    assert_eq!(inv.environment_count(), 2);
    assert_eq!(inv.cluster_count(), 5);
    assert_eq!(inv.cluster("lkc-p2").unwrap().environment(), "env-prod");
    assert_eq!(inv.cluster("lsrc-p1").unwrap().environment(), "env-prod");
    assert_eq!(
        inv.cluster("lksqlc-p1").unwrap().kafka_cluster(),
        Some("lkc-p1")
    );
    assert_eq!(inv.cluster("lksqlc-p2").unwrap().kafka_cluster(), None);
    assert!(inv.has_environment("env-dev"));
    assert!(!inv.has_environment("not-an-env"));
    // The skipped environment was never queried.
    assert!(upstream
        .requests()
        .iter()
        .all(|r| !r.contains("not-an-env")));
}

#[tokio::test]
async fn inventory_sync_fails_when_a_cluster_listing_fails() {
    let upstream = CannedUpstream::new(vec![
        (
            "/org/v2/environments?page_size=100".to_owned(),
            Ok(list("EnvironmentList", vec![env("env-prod")], None)),
        ),
        (
            "/cmk/v2/clusters?environment=env-prod&page_size=100".to_owned(),
            Ok(list("ClusterList", vec![], None)),
        ),
        (
            "/srcm/v3/clusters?environment=env-prod&page_size=100".to_owned(),
            Err(500),
        ),
        (
            "/ksqldbcm/v2/clusters?environment=env-prod&page_size=100".to_owned(),
            Ok(list("ClusterList", vec![], None)),
        ),
    ]);
    let err = fetch_inventory(&upstream).await.unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 500, .. }),
        "{err}"
    );
}

/// Decisions and data cross threads; upstream fetches can be spawned on a multi-threaded runtime.
#[test]
fn decisions_data_and_fetches_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>(_: &T) {}
    assert_send_sync::<Decision>();
    assert_send_sync::<AuthzData>();
    assert_send_sync::<AuthzSnapshot>();
    let upstream = CannedUpstream::new(Vec::new());
    let fetch: &dyn Fetch = &upstream;
    let org = org();
    assert_send(&fetch_bindings(fetch, &org));
    assert_send(&fetch_inventory(fetch));
}
