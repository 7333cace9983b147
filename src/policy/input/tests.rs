//! A captured input, through JSON and back, decides as the original did.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::policy::decide::{decide, Rules};
use crate::policy::matrix::Matrix;
use crate::policy::org::{OrgPolicies, OrgPolicyConfig};

const EXAMPLE_ORG: &str = "4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c";

fn shipped() -> AuthzSnapshot {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let read = |name: &str| std::fs::read_to_string(dir.join("policies").join(name)).unwrap();
    let org = OrgId::parse(EXAMPLE_ORG).unwrap();
    let config = OrgPolicyConfig::from_toml_str(&read("policy.example.toml"), &dir).unwrap();
    AuthzSnapshot::new(
        Arc::new(Matrix::from_toml_str(&read("matrix.toml")).unwrap()),
        Arc::new(BindingIndex::from_toml_str(&read("role-bindings.toml"), &org).unwrap()),
        Arc::new(Inventory::from_toml_str(&read("inventory.toml")).unwrap()),
        Instant::now(),
    )
    .with_org(Some(Arc::new(OrgPolicies::load(&config).unwrap())))
}

fn round_trip(principal: &str, groups: &[&str], spec: CreateSpec) {
    let snapshot = shipped();
    let principal = Principal::new(
        principal,
        AuthMethod::ApiKey {
            key_id: "KEY".into(),
        },
    )
    .unwrap()
    .with_groups(groups.iter().map(|g| (*g).to_owned()).collect());
    let request = Request {
        principal: &principal,
        action: Action::CreateApiKey,
        key_id: None,
        spec: Some(&spec),
        update: None,
        request_id: "req-1",
        source_ip: Some("10.0.0.1".parse().unwrap()),
        time: 1_735_689_600,
    };
    let facts = Facts {
        owner_key_count: Some(1),
        ..Facts::default()
    };
    let (json, _, _) = assert_replays(&snapshot, &request, &facts);
    assert!(
        !json.contains("KEY\""),
        "no key id of the caller's credential: {json}"
    );
}

/// Decides `request` on `snapshot`, captures its input, sends it through JSON, rebuilds it and
/// decides again on the recorded data alone: the same decision, explanation and findings.
/// Returns the JSON, the original decision and what was rebuilt.
fn assert_replays(
    snapshot: &AuthzSnapshot,
    request: &Request<'_>,
    facts: &Facts,
) -> (String, Response, Rebuilt) {
    let rules = Rules {
        snapshot,
        quota: None,
    };
    let original = decide(&rules, request, facts);
    let mut input = DecisionInput::capture(request, facts, snapshot, &original.matrix);
    input.outcome = InputOutcome::of(&original);
    let json = serde_json::to_string(&input).unwrap();
    let input: DecisionInput = serde_json::from_str(&json).unwrap();
    let rebuilt = input.rebuild().unwrap();
    let recorded = input.recorded_snapshot(snapshot).unwrap();
    let rules = Rules {
        snapshot: &recorded,
        quota: None,
    };
    let replayed = decide(&rules, &rebuilt.request(&input, "req-1"), &rebuilt.facts);
    assert_eq!(replayed.allow, original.allow, "{json}");
    assert_eq!(replayed.rule_ids, original.rule_ids);
    assert_eq!(replayed.explanation, original.explanation);
    assert_eq!(replayed.dry_run, original.dry_run);
    assert_eq!(InputOutcome::of(&replayed), input.outcome);
    (json, original, rebuilt)
}

fn spec(owner: &str, resource: &str, display_name: &str) -> CreateSpec {
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

#[test]
fn allowed_denied_and_policy_denied_inputs_replay_to_the_same_decision() {
    round_trip(
        "u-erin",
        &[],
        spec("sa-orders", "lkc-dev01", "orders-ingest-dev"),
    );
    round_trip("u-erin", &[], spec("sa-orders", "lkc-dev01", "Bad Name"));
    round_trip(
        "u-dave",
        &[],
        spec("sa-orders", "lkc-prod01", "orders-ingest-prod"),
    );
    round_trip(
        "u-carol",
        &[],
        spec("sa-orders", "lkc-prod01", "orders-ingest-prod"),
    );
    round_trip(
        "u-carol",
        &[],
        spec("sa-orders", "lksqlc-prod01", "orders-ksql-prod"),
    );
    round_trip(
        "u-bob",
        &["group-x"],
        spec("sa-orders", "lsrc-prod01", "orders-sr-prod"),
    );
    round_trip(
        "u-erin",
        &[],
        spec("sa-orders", "lkc-unknown", "orders-ingest-dev"),
    );
}

#[test]
fn an_external_identity_and_its_keygate_side_bindings_replay_as_decided() {
    let mut side = ExternalBindings::default();
    let org = OrgId::parse(EXAMPLE_ORG).unwrap();
    side.push(
        "ExternalGroup:payments",
        Some("https://idp.corp"),
        "ResourceOwner",
        &format!("crn://confluent.cloud/organization={EXAMPLE_ORG}/service-account=sa-orders"),
        &org,
        None,
    )
    .unwrap();
    let snapshot = shipped().with_external_bindings(Arc::new(side));
    let external = External {
        id: "ci@payments".into(),
        source: ExternalSource::Jwt,
        issuer: "https://idp.corp".into(),
        groups: vec!["payments".into()],
        broker_key_id: Some("BROKER".into()),
    };
    let auth = AuthMethod::Jwt {
        issuer: "https://idp.corp".into(),
    };
    let principals = [
        Principal::external_only(external.clone(), auth.clone()),
        Principal::new("u-dave", auth)
            .unwrap()
            .with_external(external),
    ];
    for principal in &principals {
        for owner in ["sa-orders", "sa-payments"] {
            let spec = spec(owner, "lkc-dev01", "payments-ingest-dev");
            let request = Request {
                principal,
                action: Action::CreateApiKey,
                key_id: None,
                spec: Some(&spec),
                update: None,
                request_id: "req-1",
                source_ip: None,
                time: 1_735_689_600,
            };
            let facts = Facts {
                owner_key_count: Some(1),
                ..Facts::default()
            };
            let (json, original, rebuilt) = assert_replays(&snapshot, &request, &facts);
            assert_eq!(
                original.allow,
                owner == "sa-orders",
                "{}",
                original.explanation
            );
            assert!(
                json.contains("ExternalGroup:payments") || owner != "sa-orders",
                "{json}"
            );
            assert_eq!(rebuilt.principal.kind(), principal.kind());
            assert_eq!(
                rebuilt.principal.external().map(|e| &e.id),
                principal.external().map(|e| &e.id)
            );
        }
    }
}
