//! keygate-side role bindings for external principals (`identity.external_bindings`), on real
//! sockets: a brokered JWT identity with no `[[identity.map]]` entry acts through its keygate-side
//! bindings alone (no Confluent principal, keygate's credential upstream); without a binding, or
//! from an issuer that is not brokered, it is refused; mapped identities get both.

use std::path::{Path, PathBuf};

use keygate::identity::jwt::mint::Minter;
use serde_json::json;

use crate::jwt::{bearer, claims, detail, jwks_file, send, ISS};
use crate::support::governed::{self, assert_keygate_error, audit_records, API_KEYS};
use crate::support::sim::Sim;

const ORG: &str = "4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c";

fn binding(principal: &str, issuer: Option<&str>, role: &str, crn_rest: &str) -> String {
    let issuer = issuer.map_or(String::new(), |i| format!("issuer = {i:?}\n"));
    format!(
        "[[role_bindings]]\nprincipal = {principal:?}\n{issuer}role_name = {role:?}\n\
         crn_pattern = \"crn://confluent.cloud/organization={ORG}{crn_rest}\"\n"
    )
}

/// keygate with one issuer (`issuer_extra` added), the keygate-side bindings `bindings`, `rest`
/// after the issuer, an audit file and keygate's own credential (sa-keygate).
async fn start(
    sim: &Sim,
    dir: &Path,
    issuer_extra: &str,
    bindings: &str,
    rest: &str,
) -> (keygate::Gateway, PathBuf) {
    let file = dir.join("external-bindings.toml");
    std::fs::write(&file, bindings).unwrap();
    let identity = format!("external_bindings = {file:?}");
    crate::jwt::start_with_identity(sim, dir, &identity, issuer_extra, rest, &[]).await
}

/// keygate brokering the issuer whose keys `minter` holds, with `ci@payments` of that issuer
/// bound keygate-side as ResourceOwner of sa-orders (and no mapping).
async fn start_bound(sim: &Sim, dir: &Path, minter: &Minter) -> (keygate::Gateway, PathBuf) {
    let jwks = jwks_file(dir, &[minter]);
    start(
        sim,
        dir,
        &format!("jwks_file = {jwks:?}\nbroker = true"),
        &binding(
            "External:ci@payments",
            Some(ISS),
            "ResourceOwner",
            "/service-account=sa-orders",
        ),
        "",
    )
    .await
}

#[tokio::test]
async fn a_brokered_identity_with_only_a_keygate_side_binding_creates_for_its_service_account() {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ec = Minter::es256("ec-1").unwrap();
    let (gw, audit) = start_bound(&sim, dir.path(), &ec).await;
    let token = ec.sign(&claims("ci@payments"));

    let body = governed::create_body("sa-orders", Some("lkc-prod01"));
    let r = send(&gw, "POST", API_KEYS, &bearer(&token), &body, "ext-create").await;
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    // Upstream saw keygate's credential, never the caller's token.
    let creates = sim.creates();
    assert_eq!(creates.len(), 1);
    assert_eq!(
        creates[0].header_values("authorization"),
        [sim.basic("sa-keygate").as_str()]
    );
    let records = audit_records(&audit, "ext-create", "response_complete").await;
    let principal = &records[0]["principal"];
    assert_eq!(principal["id"], "External:ci@payments");
    assert_eq!(principal["kind"], "external");
    assert_eq!(principal["external"]["id"], "ci@payments");
    assert_eq!(principal["external"]["issuer"], ISS);
    assert!(principal["external"]["actingAs"].is_null(), "{principal}");
    // Which keygate-side bindings decided is recorded beside the other parts' revisions: the
    // first 16 hex digits of the file's SHA-256.
    let file = std::fs::read(dir.path().join("external-bindings.toml")).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &file);
    let expected: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        records[0]["decisionInput"]["revisions"]["externalBindings"],
        expected.as_str()
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(
        text.contains("via keygate-side binding for ci@payments"),
        "the audit trail names the binding that allowed"
    );
    assert!(!text.contains(&token));

    // Another service account: denied by keygate, naming the external identity.
    let body = governed::create_body("sa-payments", Some("lkc-prod01"));
    let r = send(&gw, "POST", API_KEYS, &bearer(&token), &body, "ext-other").await;
    let error = assert_keygate_error(&r, 403, "user_unauthorized");
    let text = error["detail"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "ci@payments via issuer {ISS}, no Confluent principal, keygate-side bindings"
        )),
        "{text}"
    );
    assert!(text.contains("ResourceOwner on sa-payments"), "{text}");
    // An external identity owns nothing in Confluent: no key "for itself".
    let body = governed::create_body("u-alice", Some("lkc-prod01"));
    let r = send(&gw, "POST", API_KEYS, &bearer(&token), &body, "ext-user").await;
    assert_keygate_error(&r, 403, "user_unauthorized");
    assert_eq!(sim.creates().len(), 1);

    // Unmapped and unbound: refused as before.
    let stranger = ec.sign(&claims("intruder@payments"));
    let r = send(&gw, "GET", API_KEYS, &bearer(&stranger), "", "stranger").await;
    assert!(detail(&r).contains("not mapped"));
}

#[tokio::test]
async fn without_its_binding_or_without_brokering_an_unmapped_identity_is_refused() {
    let sim = Sim::start().await;
    let ec = Minter::es256("ec-1").unwrap();
    let token = ec.sign(&claims("ci@payments"));
    let body = governed::create_body("sa-orders", Some("lkc-prod01"));

    // The same identity with its binding removed (another identity's remains).
    let dir = tempfile::tempdir().unwrap();
    let jwks = jwks_file(dir.path(), &[&ec]);
    let (gw, _) = start(
        &sim,
        dir.path(),
        &format!("jwks_file = {jwks:?}\nbroker = true"),
        &binding(
            "External:someone-else",
            None,
            "ResourceOwner",
            "/service-account=sa-orders",
        ),
        "",
    )
    .await;
    let r = send(&gw, "POST", API_KEYS, &bearer(&token), &body, "removed").await;
    assert!(detail(&r).contains("not mapped"), "{:?}", r.body);

    // Bound, but the issuer is not brokered: the caller's own token would go upstream, and
    // Confluent knows nothing of keygate-side bindings, so keygate refuses.
    let dir = tempfile::tempdir().unwrap();
    let jwks = jwks_file(dir.path(), &[&ec]);
    let (gw, _) = start(
        &sim,
        dir.path(),
        &format!("jwks_file = {jwks:?}"),
        &binding(
            "External:ci@payments",
            None,
            "ResourceOwner",
            "/service-account=sa-orders",
        ),
        "",
    )
    .await;
    let r = send(&gw, "POST", API_KEYS, &bearer(&token), &body, "unbrokered").await;
    assert!(detail(&r).contains("not mapped"), "{:?}", r.body);
    assert!(sim.received(API_KEYS).is_empty());
}

#[tokio::test]
async fn a_mapped_identity_combines_its_confluent_and_keygate_side_bindings() {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ec = Minter::es256("ec-1").unwrap();
    let jwks = jwks_file(dir.path(), &[&ec]);
    // u-bob holds ResourceOwner on sa-orders in Confluent; the group `payments` gets
    // ResourceOwner on sa-payments keygate-side (for this issuer only).
    let (gw, _) = start(
        &sim,
        dir.path(),
        &format!("jwks_file = {jwks:?}\nbroker = true\ngroups_claim = \"groups\""),
        &binding(
            "ExternalGroup:payments",
            Some(ISS),
            "ResourceOwner",
            "/service-account=sa-payments",
        ),
        "[[identity.map]]\nexternal = \"ci@payments\"\nacting_as = \"u-bob\"\n",
    )
    .await;
    let mut c = claims("ci@payments");
    c["groups"] = json!(["payments"]);
    let token = ec.sign(&c);

    let own = governed::create_body("sa-orders", Some("lkc-prod01"));
    let r = send(&gw, "POST", API_KEYS, &bearer(&token), &own, "confluent").await;
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    let side = governed::create_body("sa-payments", Some("lkc-prod01"));
    let r = send(
        &gw,
        "POST",
        API_KEYS,
        &bearer(&token),
        &side,
        "keygate-side",
    )
    .await;
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));

    // Neither covers sa-keygate on the dev cluster (u-bob's EnvironmentAdmin is prod's): denied,
    // the explanation naming both identities and listing both kinds of binding.
    let other = governed::create_body("sa-keygate", Some("lkc-dev01"));
    let r = send(&gw, "POST", API_KEYS, &bearer(&token), &other, "neither").await;
    let error = assert_keygate_error(&r, 403, "user_unauthorized");
    let text = error["detail"].as_str().unwrap();
    assert!(
        text.contains(&format!("ci@payments via issuer {ISS}, acting as u-bob")),
        "{text}"
    );
    assert!(
        text.contains("via keygate-side binding for group payments"),
        "{text}"
    );
}

#[tokio::test]
async fn removing_the_binding_refuses_a_cached_identity_at_the_next_request() {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ec = Minter::es256("ec-1").unwrap();
    let (gw, _) = start_bound(&sim, dir.path(), &ec).await;
    let token = ec.sign(&claims("ci@payments"));
    let authorization = bearer(&token);
    let read = |id: &'static str| send(&gw, "GET", "/org/v2/environments", &authorization, "", id);

    // Admitted by its binding: the brokered read goes upstream; the second is served from the
    // identity cache.
    for id in ["bound", "bound-cached"] {
        let r = read(id).await;
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    }
    let hits = r#"keygate_identity_resolutions_total{result="hit"}"#;
    assert_eq!(governed::metric(gw.admin_addr(), hits).await, 1.0);
    let forwarded = sim.received("/org/v2/environments").len();

    // The binding goes (another identity's stays) and the policy set reloads.
    std::fs::write(
        dir.path().join("external-bindings.toml"),
        binding(
            "External:someone-else",
            None,
            "ResourceOwner",
            "/service-account=sa-orders",
        ),
    )
    .unwrap();
    gw.reload().await.unwrap();

    // The same token, still cached, no longer reaches Confluent with keygate's credential.
    let r = read("unbound").await;
    assert_eq!(r.status, 401, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(detail(&r).contains("not mapped"), "{:?}", r.body);
    assert_eq!(sim.received("/org/v2/environments").len(), forwarded);
    let body = governed::create_body("sa-orders", Some("lkc-prod01"));
    let r = send(&gw, "POST", API_KEYS, &bearer(&token), &body, "create").await;
    assert!(detail(&r).contains("not mapped"), "{:?}", r.body);
    assert!(sim.received(API_KEYS).is_empty());
}
