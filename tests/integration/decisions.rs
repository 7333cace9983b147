//! Layer-1 decisions through real HTTP for the demo principals (README table), with authorization
//! data from the shipped files and from the upstream: which creates reach the upstream (202, and
//! the deciding rule in the audit trail) and which are refused (403 with the rule id in
//! `errors[0].meta.rule_ids`, the deciding field in `source.pointer`, and an explanation naming
//! what was asked and what the caller holds). Reads pass through; an unknown cluster costs one
//! inventory refresh; data too stale to trust makes creates 503.
//!
//! Every decision case runs three times: sent directly, and through the egress listener
//! (CONNECT, TLS terminated with a minted leaf) over HTTP/1.1 and h2; each gets the same answer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keygate::simulator::Fault;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::egress::{self, Pki};
use crate::support::governed::{self, assert_keygate_error, audit_records, poll_until, API_KEYS};
use crate::support::sim::Sim;
use crate::support::{self, Collected, ORG_ID};

/// How a request reaches keygate.
#[derive(Clone, Copy)]
enum Via<'a> {
    /// To the reverse-proxy listener.
    Direct,
    /// Through the egress listener; `true`: h2.
    Egress(&'a Pki, bool),
}

impl Via<'_> {
    fn name(&self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Egress(_, false) => "egress-h1",
            Via::Egress(_, true) => "egress-h2",
        }
    }

    async fn send(&self, gw: &keygate::Gateway, request: Request<Full<Bytes>>) -> Collected {
        match self {
            Via::Direct => governed::send(request).await,
            Via::Egress(pki, h2) => {
                egress::send(gw.egress_addr().unwrap(), pki, *h2, request).await
            }
        }
    }
}

/// One create request and what must come of it.
struct Case {
    principal: &'static str,
    owner: &'static str,
    /// `None`: a Cloud key (no `resource`).
    resource: Option<&'static str>,
    environment: Option<&'static str>,
    status: u16,
    rule: &'static str,
    /// `source.pointer` of a denial.
    pointer: Option<&'static str>,
}

const fn allow(
    principal: &'static str,
    owner: &'static str,
    resource: Option<&'static str>,
    rule: &'static str,
) -> Case {
    Case {
        principal,
        owner,
        resource,
        environment: None,
        status: 202,
        rule,
        pointer: None,
    }
}

const fn deny(
    principal: &'static str,
    owner: &'static str,
    resource: Option<&'static str>,
    rule: &'static str,
    pointer: &'static str,
) -> Case {
    Case {
        principal,
        owner,
        resource,
        environment: None,
        status: 403,
        rule,
        pointer: Some(pointer),
    }
}

const fn in_env(mut case: Case, environment: &'static str) -> Case {
    case.environment = Some(environment);
    case
}

const SA_ORG_ADMIN: &str = "matrix.sa.organization_admin";
const SA_OWNER: &str = "matrix.sa.resource_owner";
const SA_ROLE: &str = "matrix.sa.role";
const OWN_ROLE: &str = "matrix.own.role";
const OTHER_USER: &str = "matrix.deny.other_user";
const UNSUPPORTED_OWNER: &str = "matrix.deny.unsupported_owner";
const SA_GLOBAL: &str = "matrix.deny.sa_global";
const SA_NO_ROLE: &str = "matrix.deny.sa_no_role";
const OWN_NO_ROLE: &str = "matrix.deny.own_no_role";
const INVENTORY_MISSING: &str = "matrix.deny.inventory_missing";

const OWNER_ID: &str = "/spec/owner/id";
const RESOURCE: &str = "/spec/resource";
const RESOURCE_ID: &str = "/spec/resource/id";

/// The demo org (dev/org.toml, README): alice OrganizationAdmin; bob EnvironmentAdmin on
/// env-prod01 and ResourceOwner on sa-orders; carol CloudClusterAdmin on lkc-prod01; dave
/// DeveloperRead on a topic; erin ResourceKeyAdmin; frank FlinkAdmin on env-dev01; grace
/// KsqlAdmin on lksqlc-dev01.
const CASES: [Case; 25] = [
    allow("u-alice", "sa-orders", Some("lkc-prod01"), SA_ORG_ADMIN),
    allow("u-alice", "sa-payments", Some("global"), SA_ORG_ADMIN),
    allow("u-alice", "u-alice", Some("global"), OWN_ROLE),
    deny("u-alice", "u-bob", Some("lkc-prod01"), OTHER_USER, OWNER_ID),
    deny("u-alice", "pool-abc", None, UNSUPPORTED_OWNER, OWNER_ID),
    allow("u-bob", "sa-orders", Some("global"), SA_OWNER),
    allow("u-bob", "sa-payments", Some("lkc-prod01"), SA_ROLE),
    deny(
        "u-bob",
        "sa-payments",
        Some("lkc-dev01"),
        SA_NO_ROLE,
        RESOURCE_ID,
    ),
    deny(
        "u-bob",
        "sa-payments",
        Some("global"),
        SA_GLOBAL,
        RESOURCE_ID,
    ),
    deny("u-bob", "u-bob", None, OWN_NO_ROLE, RESOURCE),
    deny(
        "u-carol",
        "sa-orders",
        Some("global"),
        SA_GLOBAL,
        RESOURCE_ID,
    ),
    allow("u-carol", "sa-payments", Some("lkc-prod01"), SA_ROLE),
    allow("u-carol", "u-carol", Some("lksqlc-prod01"), OWN_ROLE),
    deny(
        "u-carol",
        "u-carol",
        Some("lkc-dev01"),
        OWN_NO_ROLE,
        RESOURCE_ID,
    ),
    deny(
        "u-carol",
        "u-dave",
        Some("lkc-prod01"),
        OTHER_USER,
        OWNER_ID,
    ),
    deny(
        "u-dave",
        "sa-orders",
        Some("lkc-dev01"),
        SA_NO_ROLE,
        RESOURCE_ID,
    ),
    deny("u-dave", "u-dave", None, OWN_NO_ROLE, RESOURCE),
    allow("u-erin", "sa-payments", Some("lsrc-dev01"), SA_ROLE),
    allow("u-erin", "sa-payments", Some("tableflow"), SA_ROLE),
    deny("u-erin", "sa-payments", None, SA_NO_ROLE, RESOURCE),
    in_env(
        allow("u-frank", "u-frank", Some("aws.us-east-1"), OWN_ROLE),
        "env-dev01",
    ),
    in_env(
        deny(
            "u-frank",
            "sa-orders",
            Some("aws.us-east-1"),
            SA_NO_ROLE,
            RESOURCE_ID,
        ),
        "env-prod01",
    ),
    allow("u-grace", "sa-orders", Some("lksqlc-dev01"), SA_ROLE),
    deny(
        "u-grace",
        "sa-orders",
        Some("lksqlc-prod01"),
        SA_NO_ROLE,
        RESOURCE_ID,
    ),
    deny(
        "u-alice",
        "sa-orders",
        Some("lkc-nowhere"),
        INVENTORY_MISSING,
        RESOURCE_ID,
    ),
];

const CREDENTIAL_VAR: &str = "KEYGATE_TEST_UPSTREAM_CREDENTIAL";

fn audit_section(dir: &Path) -> (String, PathBuf) {
    let file = dir.join("audit.jsonl");
    (format!("[audit]\nfile = {:?}\n", file), file)
}

/// keygate with role bindings and inventory from the shipped files.
async fn with_file_authz(sim: &Sim, audit: &str) -> keygate::Gateway {
    support::start(support::config(&sim.url(), audit)).await
}

/// keygate with role bindings and inventory synced from the simulator, with keygate's own
/// credential (sa-keygate's demo key) read from a map standing in for the environment.
async fn with_upstream_authz(sim: &Sim, authz_extra: &str, audit: &str) -> keygate::Gateway {
    let key = sim.key("sa-keygate");
    let env: HashMap<String, String> = [(
        CREDENTIAL_VAR.to_owned(),
        format!("{}:{}", key.key_id, key.secret),
    )]
    .into();
    let extra = format!(
        r#"
[authz]
org_id = "{ORG_ID}"
bindings = "upstream"
inventory = "upstream"
{authz_extra}
[upstream.credential]
env = "{CREDENTIAL_VAR}"
{audit}
"#
    );
    support::start(support::config_with_env(&sim.url(), &extra, &env)).await
}

fn create_body(owner: &str, resource: Option<&str>, environment: Option<&str>) -> String {
    let mut spec = serde_json::json!({ "owner": { "id": owner } });
    if let Some(id) = resource {
        spec["resource"] = serde_json::json!({ "id": id });
        if let Some(environment) = environment {
            spec["resource"]["environment"] = environment.into();
        }
    }
    serde_json::json!({ "spec": spec }).to_string()
}

/// `POST /iam/v2/api-keys` as `principal`, with a caller-chosen request id.
async fn create(
    sim: &Sim,
    gw: &keygate::Gateway,
    principal: &str,
    body: String,
    request_id: &str,
) -> Collected {
    create_via(Via::Direct, sim, gw, principal, body, request_id).await
}

/// [`create`], sent `via` a listener.
async fn create_via(
    via: Via<'_>,
    sim: &Sim,
    gw: &keygate::Gateway,
    principal: &str,
    body: String,
    request_id: &str,
) -> Collected {
    let mut request = governed::request(
        "POST",
        gw.local_addr(),
        API_KEYS,
        Some(&sim.basic(principal)),
        body,
    );
    request
        .headers_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    via.send(gw, request).await
}

/// Creates the simulator received carrying `request_id`.
fn forwarded_creates(sim: &Sim, request_id: &str) -> usize {
    sim.received(API_KEYS)
        .iter()
        .filter(|r| r.method == "POST" && r.header_values("x-request-id") == [request_id])
        .count()
}

/// Runs every case through each of `vias`; a case's answer (status, body but for its id) is the
/// same whichever way it came.
async fn run_cases(sim: &Sim, gw: &keygate::Gateway, audit: &Path, mode: &str, vias: &[Via<'_>]) {
    for (i, case) in CASES.iter().enumerate() {
        let mut answers = Vec::new();
        for via in vias {
            let answer = run_case(
                sim,
                gw,
                audit,
                &format!("{mode}-{}", via.name()),
                *via,
                i,
                case,
            )
            .await;
            answers.push((via.name(), answer));
        }
        for (name, answer) in &answers[1..] {
            assert_eq!(
                answer, &answers[0].1,
                "case {i}: {name} answered differently from {}",
                answers[0].0
            );
        }
    }
}

/// One case: its status and its body without the request id.
async fn run_case(
    sim: &Sim,
    gw: &keygate::Gateway,
    audit: &Path,
    mode: &str,
    via: Via<'_>,
    i: usize,
    case: &Case,
) -> (u16, serde_json::Value) {
    {
        let what = format!(
            "{mode} case {i}: {} creating for {} on {:?}",
            case.principal, case.owner, case.resource
        );
        let request_id = format!("{mode}-case-{i}");
        let body = create_body(case.owner, case.resource, case.environment);
        let response = create_via(via, sim, gw, case.principal, body, &request_id).await;
        assert_eq!(
            response.status.as_u16(),
            case.status,
            "{what}: {:?}",
            String::from_utf8_lossy(&response.body)
        );
        if case.status == 202 {
            assert_eq!(response.json()["spec"]["owner"]["id"], case.owner, "{what}");
            assert_eq!(forwarded_creates(sim, &request_id), 1, "{what}");
            let records = audit_records(audit, &request_id, "request_received").await;
            let decision = &records[0]["decision"];
            assert_eq!(decision["result"], "allow", "{what}");
            assert_eq!(
                decision["ruleIds"],
                serde_json::json!([case.rule]),
                "{what}"
            );
        } else {
            let error = assert_keygate_error(&response, 403, "user_unauthorized");
            assert_eq!(error["id"], request_id.as_str(), "{what}");
            assert_eq!(
                error["meta"]["rule_ids"],
                serde_json::json!([case.rule]),
                "{what}: {error}"
            );
            assert_eq!(
                error["source"]["pointer"].as_str(),
                case.pointer,
                "{what}: {error}"
            );
            assert_eq!(
                forwarded_creates(sim, &request_id),
                0,
                "{what}: a denied create reached the upstream"
            );
        }
        let mut json = response.json();
        let comparable = if case.status == 202 {
            // Created keys differ; what was created does not.
            serde_json::json!({ "owner": json["spec"]["owner"]["id"], "resource": json["spec"]["resource"]["id"] })
        } else {
            for error in json["errors"].as_array_mut().unwrap() {
                error.as_object_mut().unwrap().remove("id");
            }
            json
        };
        (response.status.as_u16(), comparable)
    }
}

#[tokio::test]
async fn demo_principals_are_decided_by_the_matrix_with_file_authz() {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (audit, file) = audit_section(dir.path());
    let pki = Pki::new();
    let gw = with_file_authz(&sim, &format!("{audit}{}", pki.section(""))).await;
    let vias = [
        Via::Direct,
        Via::Egress(&pki, false),
        Via::Egress(&pki, true),
    ];
    run_cases(&sim, &gw, &file, "file", &vias).await;
}

#[tokio::test]
async fn demo_principals_are_decided_by_the_matrix_with_upstream_authz() {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (audit, file) = audit_section(dir.path());
    let gw = with_upstream_authz(&sim, "", &audit).await;
    // The data really came from the upstream, with keygate's own credential.
    let bindings = sim.received("/iam/v2/role-bindings");
    assert!(!bindings.is_empty(), "no role-binding sync");
    assert!(bindings
        .iter()
        .all(|r| r.header_values("authorization") == [sim.basic("sa-keygate").as_str()]));
    assert!(!sim.received("/org/v2/environments").is_empty());
    run_cases(&sim, &gw, &file, "upstream", &[Via::Direct]).await;
}

#[tokio::test]
async fn denial_names_what_was_asked_and_what_the_caller_holds() {
    let sim = Sim::start().await;
    let gw = with_file_authz(&sim, "").await;

    let response = create(
        &sim,
        &gw,
        "u-carol",
        create_body("sa-orders", Some("global"), None),
        "carol-global",
    )
    .await;
    let error = assert_keygate_error(&response, 403, "user_unauthorized");
    let detail = error["detail"].as_str().unwrap();
    for needle in [
        "Global",
        "sa-orders",
        "u-carol",
        "CloudClusterAdmin",
        "lkc-prod01",
        "OrganizationAdmin",
        "ResourceOwner",
    ] {
        assert!(detail.contains(needle), "{needle:?} missing: {detail}");
    }

    let response = create(
        &sim,
        &gw,
        "u-bob",
        create_body("sa-payments", Some("lkc-dev01"), None),
        "bob-dev",
    )
    .await;
    let error = assert_keygate_error(&response, 403, "user_unauthorized");
    let detail = error["detail"].as_str().unwrap();
    for needle in [
        "lkc-dev01",
        "env-dev01",
        "sa-payments",
        "EnvironmentAdmin",
        "env-prod01",
        "ResourceOwner",
        "sa-orders",
    ] {
        assert!(detail.contains(needle), "{needle:?} missing: {detail}");
    }
    // Creating for another user says so.
    let response = create(
        &sim,
        &gw,
        "u-alice",
        create_body("u-bob", None, None),
        "alice-for-bob",
    )
    .await;
    let detail = assert_keygate_error(&response, 403, "user_unauthorized")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(detail.contains("u-bob"), "{detail}");
    assert!(detail.contains("someone else"), "{detail}");
}

#[tokio::test]
async fn list_and_get_pass_through_for_a_caller_without_key_roles() {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (audit, file) = audit_section(dir.path());
    let gw = with_file_authz(&sim, &audit).await;
    let dave = sim.basic("u-dave");
    // keygate lets both through; Confluent itself (the simulator applies its rules for existing
    // keys) shows dave none of sa-orders' keys and refuses him the key.
    for (path, request_id, upstream_says) in [
        (format!("{API_KEYS}?spec.owner=sa-orders"), "dave-list", 200),
        (format!("{API_KEYS}/DEMOORDERS000001"), "dave-get", 403),
    ] {
        let mut request = governed::request("GET", gw.local_addr(), &path, Some(&dave), Vec::new());
        request
            .headers_mut()
            .insert("x-request-id", request_id.parse().unwrap());
        let response = governed::send(request).await;
        assert_eq!(
            response.status,
            upstream_says,
            "{path}: {:?}",
            String::from_utf8_lossy(&response.body)
        );
        if upstream_says == 200 {
            assert_eq!(response.json()["data"], serde_json::json!([]));
        }
        assert!(
            sim.received(&path)
                .iter()
                .any(|r| r.header_values("x-request-id") == [request_id]),
            "{path} was not forwarded"
        );
        let records = audit_records(&file, request_id, "response_complete").await;
        let decision = &records[0]["decision"];
        assert_eq!(decision["result"], "allow", "{decision}");
        assert_eq!(
            decision["ruleIds"],
            serde_json::json!(["matrix.passthrough"])
        );
    }
}

#[tokio::test]
async fn unknown_cluster_is_403_after_exactly_one_inventory_refresh() {
    let sim = Sim::start().await;
    let gw = with_upstream_authz(&sim, "", "").await;
    let syncs = || sim.received("/org/v2/environments").len();
    let before = syncs();
    for attempt in 0..2 {
        let response = create(
            &sim,
            &gw,
            "u-alice",
            create_body("sa-orders", Some("lkc-nowhere"), None),
            &format!("nowhere-{attempt}"),
        )
        .await;
        let error = assert_keygate_error(&response, 403, "user_unauthorized");
        assert_eq!(
            error["meta"]["rule_ids"],
            serde_json::json!([INVENTORY_MISSING])
        );
        assert!(
            error["detail"].as_str().unwrap().contains("lkc-nowhere"),
            "{error}"
        );
        // The first attempt refreshed the inventory once; the second is within the minimum
        // refresh interval and does not refresh again.
        assert_eq!(syncs(), before + 1, "attempt {attempt}");
    }
    assert!(sim.received(API_KEYS).iter().all(|r| r.method != "POST"));
}

#[tokio::test]
async fn creates_fail_closed_with_503_once_authz_data_is_too_stale() {
    let sim = Sim::start().await;
    let gw = with_upstream_authz(
        &sim,
        "refresh_interval = \"50ms\"\nmax_staleness = \"300ms\"",
        "",
    )
    .await;
    // dave's create is decided (403) while the data is fresh; it never reaches the upstream.
    let dave_create = || create_body("sa-orders", Some("lkc-dev01"), None);
    let response = create(&sim, &gw, "u-dave", dave_create(), "fresh").await;
    assert_keygate_error(&response, 403, "user_unauthorized");

    // Every role-binding sync fails from now on; the last good data ages past 300ms.
    sim.sim.inject_fault(Fault {
        method: None,
        path_prefix: "/iam/v2/role-bindings".to_owned(),
        status: 500,
        headers: Vec::new(),
        body: r#"{"errors":[{"status":"500","title":"Internal Server Error"}]}"#.to_owned(),
        times: u32::MAX,
    });
    let stale = poll_until(
        Duration::from_secs(5),
        "creates refused as stale",
        || async {
            let response = create(&sim, &gw, "u-dave", dave_create(), "stale").await;
            (response.status == 503).then_some(response)
        },
    )
    .await;
    let error = assert_keygate_error(&stale, 503, "authorization_unavailable");
    let detail = error["detail"].as_str().unwrap();
    assert!(detail.contains("role bindings"), "{detail}");
    assert!(detail.contains("300ms"), "{detail}");

    // Reads are not gated on fresh data.
    let list = governed::send(governed::request(
        "GET",
        gw.local_addr(),
        API_KEYS,
        Some(&sim.basic("u-dave")),
        Vec::new(),
    ))
    .await;
    assert_eq!(list.status, 200);

    // Once syncing works again, creates are decided again.
    sim.sim.clear_faults();
    poll_until(Duration::from_secs(5), "creates decided again", || async {
        let response = create(&sim, &gw, "u-dave", dave_create(), "recovered").await;
        (response.status == 403).then_some(())
    })
    .await;
    assert!(sim.received(API_KEYS).iter().all(|r| r.method != "POST"));
}
