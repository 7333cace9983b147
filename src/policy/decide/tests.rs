//! `policy::decide` over values: the shipped matrix, bindings, inventory and policies, no I/O.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::model::{AuthMethod, ResourceSpec};
use crate::policy::bindings::BindingIndex;
use crate::policy::crn::OrgId;
use crate::policy::inventory::Inventory;
use crate::policy::matrix::Matrix;
use crate::policy::org::{OrgPolicies, OrgPolicyConfig};
use crate::policy::quota::{ClusterLoad, KeyScope, QuotaMode};

const EXAMPLE_ORG: &str = "4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped(with_policies: bool) -> AuthzSnapshot {
    let read = |name: &str| std::fs::read_to_string(dir().join("policies").join(name)).unwrap();
    let org = OrgId::parse(EXAMPLE_ORG).unwrap();
    let snapshot = AuthzSnapshot::new(
        Arc::new(Matrix::from_toml_str(&read("matrix.toml")).unwrap()),
        Arc::new(BindingIndex::from_toml_str(&read("role-bindings.toml"), &org).unwrap()),
        Arc::new(Inventory::from_toml_str(&read("inventory.toml")).unwrap()),
        Instant::now(),
    );
    if !with_policies {
        return snapshot;
    }
    let config = OrgPolicyConfig::from_toml_str(&read("policy.example.toml"), &dir()).unwrap();
    snapshot.with_org(Some(Arc::new(OrgPolicies::load(&config).unwrap())))
}

fn principal(id: &str) -> Principal {
    Principal::new(id, AuthMethod::Directory { key_id: "K".into() }).unwrap()
}

fn create(owner: &str, resource: &str, display_name: &str) -> CreateSpec {
    CreateSpec {
        owner_id: owner.into(),
        resource: Some(ResourceSpec {
            id: resource.into(),
            environment: None,
        }),
        display_name: display_name.into(),
        description: String::new(),
    }
}

fn request<'a>(principal: &'a Principal, spec: &'a CreateSpec) -> Request<'a> {
    Request {
        principal,
        action: Action::CreateApiKey,
        key_id: None,
        spec: Some(spec),
        update: None,
        request_id: "req-1",
        source_ip: None,
        time: 1_735_689_600,
    }
}

fn facts() -> Facts {
    Facts {
        owner_key_count: Some(0),
        ..Facts::default()
    }
}

#[test]
fn the_matrix_decides_when_no_policies_are_configured() {
    let snapshot = shipped(false);
    let rules = Rules {
        snapshot: &snapshot,
        quota: None,
    };
    let (erin, dave) = (principal("u-erin"), principal("u-dave"));
    let spec = create("sa-orders", "lkc-dev01", "whatever");
    let allowed = decide(&rules, &request(&erin, &spec), &Facts::default());
    assert!(allowed.allow, "{}", allowed.explanation);
    assert_eq!(allowed.by, DecidedBy::Matrix);
    assert_eq!(allowed.rule_ids.len(), 1);
    assert!(allowed.org.is_none() && allowed.quota.is_none());

    let denied = decide(&rules, &request(&dave, &spec), &Facts::default());
    assert!(!denied.allow);
    assert_eq!(denied.by, DecidedBy::Matrix);
    assert!(
        denied.rule_ids[0].starts_with("matrix.deny."),
        "{:?}",
        denied.rule_ids
    );
    assert_eq!(denied.explanation, denied.matrix.explanation);
    assert!(denied.pointer.is_some());
}

#[test]
fn a_policy_denial_names_the_matrix_rule_then_the_policy_with_its_own_entry() {
    let snapshot = shipped(true);
    let rules = Rules {
        snapshot: &snapshot,
        quota: None,
    };
    let erin = principal("u-erin");
    let bad = create("sa-orders", "lkc-dev01", "Not A Good Name");
    let response = decide(&rules, &request(&erin, &bad), &facts());
    assert!(!response.allow);
    assert_eq!(response.by, DecidedBy::Policy);
    assert_eq!(
        response.rule_ids[1..],
        ["display-name-convention".to_owned()]
    );
    assert_eq!(response.denying_rule_ids(), ["display-name-convention"]);
    assert_eq!(response.entries.len(), 1);
    assert_eq!(
        response.entries[0].pointer.as_deref(),
        Some("/spec/display_name")
    );
    assert!(response
        .explanation
        .starts_with("denied by organisation policy: "));

    let good = create("sa-orders", "lkc-dev01", "orders-ingest-dev");
    let response = decide(&rules, &request(&erin, &good), &facts());
    assert!(response.allow, "{}", response.explanation);
    assert_eq!(response.by, DecidedBy::Matrix);
    assert!(response.org.as_ref().is_some_and(|o| o.allowed));
}

#[test]
fn policies_are_not_evaluated_after_a_matrix_denial() {
    let snapshot = shipped(true);
    let rules = Rules {
        snapshot: &snapshot,
        quota: None,
    };
    let dave = principal("u-dave");
    let spec = create("sa-orders", "lkc-dev01", "Bad Name");
    let response = decide(&rules, &request(&dave, &spec), &facts());
    assert!(!response.allow);
    assert_eq!(response.by, DecidedBy::Matrix);
    assert!(response.org.is_none());
}

fn quota(mode: QuotaMode) -> QuotaConfig {
    QuotaConfig {
        kafka_keys_per_cluster: 10,
        warn_ratio: 0.8,
        mode,
    }
}

fn loads(keys: u64) -> Facts {
    Facts {
        quota: Some(quota::Facts {
            scope: KeyScope::Kafka("lkc-dev01".into()),
            loads: Some(vec![ClusterLoad {
                id: "lkc-dev01".into(),
                kind: None,
                keys,
            }]),
        }),
        ..facts()
    }
}

#[test]
fn the_quota_denies_warns_records_dry_run_and_fails_closed_when_unknown() {
    let snapshot = shipped(false);
    let erin = principal("u-erin");
    let spec = create("sa-orders", "lkc-dev01", "orders-ingest-dev");
    let enforce = quota(QuotaMode::Enforce);
    let rules = Rules {
        snapshot: &snapshot,
        quota: Some(&enforce),
    };
    let full = decide(&rules, &request(&erin, &spec), &loads(10));
    assert!(!full.allow);
    assert_eq!(full.by, DecidedBy::Quota);
    assert_eq!(full.denying_rule_ids(), [quota::RULE]);
    assert_eq!(full.pointer, Some(pointer::RESOURCE_ID));

    let near = decide(&rules, &request(&erin, &spec), &loads(8));
    assert!(near.allow);
    assert_eq!(near.warnings.len(), 1);

    let unknown = Facts {
        quota: Some(quota::Facts {
            scope: KeyScope::Kafka("lkc-dev01".into()),
            loads: None,
        }),
        ..facts()
    };
    let response = decide(&rules, &request(&erin, &spec), &unknown);
    assert!(!response.allow);
    assert!(response.unavailable.is_some());

    let dry = quota(QuotaMode::DryRun);
    let rules = Rules {
        snapshot: &snapshot,
        quota: Some(&dry),
    };
    let response = decide(&rules, &request(&erin, &spec), &loads(10));
    assert!(response.allow);
    assert_eq!(response.dry_run, [quota::RULE]);
}

#[test]
fn the_target_key_fact_reaches_the_policies() {
    let snapshot = shipped(true);
    let rules = Rules {
        snapshot: &snapshot,
        quota: None,
    };
    let erin = principal("u-erin");
    let delete = |description: &str| Facts {
        target_key: Some(KeyFacts {
            id: "KEY1".into(),
            owner_id: Some("sa-orders".into()),
            resource_id: Some("lkc-dev01".into()),
            description: description.into(),
            display_name: "orders-ingest-dev".into(),
        }),
        ..Facts::default()
    };
    let request = Request {
        principal: &erin,
        action: Action::DeleteApiKey,
        key_id: Some("KEY1"),
        spec: None,
        update: None,
        request_id: "req-2",
        source_ip: None,
        time: 1_735_689_600,
    };
    let plain = decide(&rules, &request, &delete("ingest"));
    assert!(plain.allow, "{}", plain.explanation);
    let protected = decide(&rules, &request, &delete("ingest [protected]"));
    assert!(!protected.allow);
    assert_eq!(protected.denying_rule_ids(), ["protected-key-delete"]);
}
