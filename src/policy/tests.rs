//! Layer-1 decision tests: the creation matrix exhaustively against a hand-written copy of
//! docs/confluent-api.md §7, explanations, edge cases, the shipped `policies/` files, and the upstream source
//! with canned Confluent pages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bindings::{BindingIndex, BindingIndexBuilder};
use super::crn::OrgId;
use super::inventory::Inventory;
use super::matrix::Matrix;
use super::{decide_create, AuthzData, AuthzSnapshot};
use crate::model::{AuthMethod, Principal};
use crate::model::{CreateSpec, ResourceSpec};

pub(super) const ORG: &str = "0b7e1c2d-3f4a-4b5c-8d6e-7f8091a2b3c4";
pub(super) const CALLER: &str = "u-caller";
pub(super) const OTHER_USER: &str = "u-someone";
pub(super) const SA: &str = "sa-target";

pub(super) const MATRIX_TOML: &str = include_str!("../../policies/matrix.toml");

pub(super) const INVENTORY_TOML: &str = r#"
[environments.env-prod]
kafka_clusters = ["lkc-prod"]
schema_registries = ["lsrc-prod"]
ksqldb_clusters = [{ id = "lksqlc-prod", kafka_cluster = "lkc-prod" }]
[environments.env-other]
kafka_clusters = ["lkc-other"]
schema_registries = ["lsrc-other"]
ksqldb_clusters = [{ id = "lksqlc-other", kafka_cluster = "lkc-other" }, { id = "lksqlc-loose" }]
"#;

pub(super) fn crn(rest: &str) -> String {
    format!("crn://confluent.cloud/organization={ORG}{rest}")
}

pub(super) fn org() -> OrgId {
    OrgId::parse(ORG).unwrap()
}

pub(super) struct Fixture {
    pub(super) matrix: Arc<Matrix>,
    pub(super) inventory: Arc<Inventory>,
}

impl Fixture {
    pub(super) fn new() -> Self {
        Fixture {
            matrix: Arc::new(Matrix::from_toml_str(MATRIX_TOML).unwrap()),
            inventory: Arc::new(Inventory::from_toml_str(INVENTORY_TOML).unwrap()),
        }
    }

    /// A snapshot with `(principal, role, crn)` bindings.
    pub(super) fn snapshot(&self, bindings: &[(&str, &str, &str)]) -> AuthzSnapshot {
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

pub(super) fn user(id: &str) -> Principal {
    Principal::new(
        id,
        AuthMethod::ApiKey {
            key_id: "ABCD1234567890AB".into(),
        },
    )
    .unwrap()
}

pub(super) fn spec(owner: &str, resource: Option<(&str, Option<&str>)>) -> CreateSpec {
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

pub(super) fn kafka(owner: &str) -> CreateSpec {
    spec(owner, Some(("lkc-prod", None)))
}

// === shipped policies/ files ===

/// The organisation of `policies/role-bindings.toml` (and of `keygate dev`).
const EXAMPLE_ORG: &str = "4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c";

fn example() -> AuthzSnapshot {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let org = OrgId::parse(EXAMPLE_ORG).unwrap();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    AuthzSnapshot::new(
        Arc::new(Matrix::from_toml_str(&read("matrix.toml")).unwrap()),
        Arc::new(BindingIndex::from_toml_str(&read("role-bindings.toml"), &org).unwrap()),
        Arc::new(Inventory::from_toml_str(&read("inventory.toml")).unwrap()),
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
    let text = std::fs::read_to_string(dir.join("role-bindings.toml")).unwrap();
    let err = BindingIndex::from_toml_str(&text, &wrong_org).unwrap_err();
    assert!(err.to_string().contains("role_bindings[0]"), "{err}");
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
