//! Layer 1: the creation matrix cell by cell against Confluent's table, explanations, owners, resources and missing data.

use std::sync::Arc;
use std::time::Instant;

use crate::model::Action;
use crate::model::ResourceType;
use crate::policy::bindings::{BindingIndex, BindingIndexBuilder};
use crate::policy::decision::{pointer, rule};
use crate::policy::inventory::Inventory;
use crate::policy::matrix::{Grant, Matrix};
use crate::policy::tests::*;
use crate::policy::{decide_create, decide_matrix, AuthzData, AuthzSnapshot};

// === the creation matrix, exhaustively ===

/// A cell of docs/confluent-api.md §7 as printed there.
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
        let d = decide_matrix(&snap, &user(CALLER), action, None);
        assert!(d.allow, "{action}");
        assert_eq!(d.rule, rule::PASSTHROUGH);
        assert_eq!(d.pointer, None);
    }
    let d = decide_matrix(&snap, &user(CALLER), Action::CreateApiKey, None);
    assert!(!d.allow);
    assert_eq!(d.rule, rule::DENY_MISSING_SPEC);
    let d = decide_matrix(
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

// === keygate-side bindings of external principals ===

mod external_bindings {
    use std::sync::Arc;

    use super::*;
    use crate::model::{External, ExternalSource, Principal};
    use crate::policy::external::ExternalBindings;

    const ISS: &str = "https://idp.corp";

    fn external(id: &str, issuer: &str, groups: &[&str]) -> External {
        External {
            id: id.into(),
            source: ExternalSource::Jwt,
            issuer: issuer.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            broker_key_id: Some("BROKER".into()),
        }
    }

    fn jwt() -> crate::model::AuthMethod {
        crate::model::AuthMethod::Jwt { issuer: ISS.into() }
    }

    /// `(principal, issuer, role, crn)` keygate-side bindings over Confluent `confluent` ones.
    fn snapshot(
        confluent: &[(&str, &str, &str)],
        side: &[(&str, Option<&str>, &str, &str)],
    ) -> AuthzSnapshot {
        let mut index = ExternalBindings::default();
        let fx = Fixture::new();
        for (p, issuer, role, crn) in side {
            index
                .push(p, *issuer, role, crn, &org(), Some(&fx.matrix))
                .unwrap();
        }
        fx.snapshot(confluent)
            .with_external_bindings(Arc::new(index))
    }

    #[test]
    fn an_external_only_identity_acts_through_its_own_and_its_groups_keygate_side_bindings() {
        let snap = snapshot(
            &[("User:sa-target", "OrganizationAdmin", &crn(""))],
            &[
                (
                    "External:ci@payments",
                    None,
                    "ResourceOwner",
                    &crn("/service-account=sa-target"),
                ),
                (
                    "ExternalGroup:payments",
                    Some(ISS),
                    "EnvironmentAdmin",
                    &crn("/environment=env-other"),
                ),
            ],
        );
        let p = Principal::external_only(external("ci@payments", ISS, &["payments"]), jwt());
        let d = decide_create(&snap, &p, &kafka(SA));
        assert!(d.allow, "{d}");
        assert_eq!(d.rule, rule::SA_RESOURCE_OWNER);
        assert!(
            d.explanation
                .contains("via keygate-side binding for ci@payments"),
            "{}",
            d.explanation
        );
        assert_eq!(
            d.granted_by.as_ref().unwrap().principal_id,
            "External:ci@payments"
        );
        // The group's binding (issuer-scoped) covers env-other.
        let d = decide_create(&snap, &p, &spec("sa-other", Some(("lkc-other", None))));
        assert!(d.allow, "{d}");
        assert!(d
            .explanation
            .contains("via keygate-side binding for group payments"));
        // Another issuer: the group binding does not apply.
        let elsewhere = Principal::external_only(
            external("ci@payments", "https://other", &["payments"]),
            jwt(),
        );
        let d = decide_create(
            &snap,
            &elsewhere,
            &spec("sa-other", Some(("lkc-other", None))),
        );
        assert!(!d.allow, "{d}");
        // Another service account: denied, the holdings listed with their holder.
        let d = decide_create(&snap, &p, &kafka("sa-else"));
        assert!(!d.allow);
        assert!(
            d.explanation
                .contains("ResourceOwner on service-account=sa-target (via keygate-side binding for ci@payments)"),
            "{}",
            d.explanation
        );
    }

    #[test]
    fn an_external_only_identity_never_gets_confluent_bindings_or_owns_a_user() {
        // An external id that looks like a Confluent id gets nothing of that principal's.
        let snap = snapshot(
            &[("User:u-caller", "OrganizationAdmin", &crn(""))],
            &[(
                "External:u-caller",
                None,
                "ResourceOwner",
                &crn("/service-account=sa-target"),
            )],
        );
        let p = Principal::external_only(external("u-caller", ISS, &[]), jwt());
        let d = decide_create(&snap, &p, &kafka("sa-else"));
        assert!(!d.allow, "{d}");
        let d = decide_create(&snap, &p, &kafka("u-caller"));
        assert!(!d.allow, "{d}");
        assert_eq!(d.rule, rule::DENY_OTHER_USER);
    }

    #[test]
    fn an_external_only_identity_whose_bindings_are_gone_may_do_nothing() {
        let snap = snapshot(&[], &[]);
        let p = Principal::external_only(external("ci@payments", ISS, &[]), jwt());
        for action in [Action::ListApiKeys, Action::GetApiKey, Action::DeleteApiKey] {
            let d = decide_matrix(&snap, &p, action, None);
            assert!(!d.allow, "{action:?}");
            assert_eq!(d.rule, rule::DENY_EXTERNAL_UNBOUND);
        }
    }

    #[test]
    fn a_mapped_identity_combines_both_kinds_of_binding() {
        let snap = snapshot(
            &[(
                "User:u-caller",
                "ResourceOwner",
                &crn("/service-account=sa-target"),
            )],
            &[(
                "ExternalGroup:payments",
                None,
                "ResourceOwner",
                &crn("/service-account=sa-other"),
            )],
        );
        let p = user(CALLER).with_external(external("ci@payments", ISS, &["payments"]));
        assert!(decide_create(&snap, &p, &kafka(SA)).allow);
        let d = decide_create(&snap, &p, &kafka("sa-other"));
        assert!(d.allow, "{d}");
        assert!(d
            .explanation
            .contains("via keygate-side binding for group payments"));
        assert!(!decide_create(&snap, &p, &kafka("sa-else")).allow);
        // Without the external identity, only the Confluent binding counts.
        assert!(!decide_create(&snap, &user(CALLER), &kafka("sa-other")).allow);
    }
}
