//! Client certificates on the TLS listener, with a CA, client certificates and a CRL generated
//! here: a verified certificate identifies the caller by its SAN URI (mapped to a Confluent
//! principal and brokered), and a certificate from another CA, an expired one, a revoked one or
//! none at all (when required) never gets a request through.

use std::path::PathBuf;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams, IsCa,
    KeyIdMethod, KeyPair, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::governed::{audit_records, API_KEYS};
use crate::support::sim::Sim;
use crate::support::{self, within};

const SPIFFE: &str = "spiffe://corp.example/ns/payments/sa/ci";
const OWN_VAR: &str = "KEYGATE_TEST_MTLS_OWN_CREDENTIAL";

struct Ca {
    issuer: rcgen::Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A leaf: (chain DER, key).
    fn leaf(
        &self,
        sans: Vec<SanType>,
        serial: u64,
        expired: bool,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params.serial_number = Some(SerialNumber::from(serial));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client");
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    fn crl(&self, revoked: &[u64]) -> String {
        CertificateRevocationListParams {
            this_update: date_time_ymd(2020, 1, 1),
            next_update: date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: date_time_ymd(2021, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap()
        .pem()
        .unwrap()
    }
}

struct Setup {
    ca: Ca,
    _dir: tempfile::TempDir,
    gw: keygate::Gateway,
    audit: PathBuf,
}

async fn setup(sim: &Sim, mode: &str) -> Setup {
    let ca = Ca::new("keygate mTLS test CA");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    // The listener's own certificate, from the same CA.
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca.issuer)
        .unwrap();
    let (cert, key) = (
        write("server.pem", &server.pem()),
        write("server-key.pem", &server_key.serialize_pem()),
    );
    let ca_file = write("ca.pem", &ca.pem);
    let crl_file = write("crl.pem", &ca.crl(&[666]));
    let audit = dir.path().join("audit.jsonl");
    let own = sim.key("sa-keygate");
    let env: std::collections::HashMap<String, String> =
        [(OWN_VAR.to_owned(), format!("{}:{}", own.key_id, own.secret))].into();
    let extra = format!(
        r#"
[listener.tls]
cert = {cert:?}
key = {key:?}
[upstream.credential]
env = "{OWN_VAR}"
[audit]
file = {audit:?}
[identity.mtls]
ca = {ca_file:?}
crl = [{crl_file:?}]
mode = "{mode}"
principal = ["san_uri", "cn"]
broker = true
[[identity.map]]
external = "{SPIFFE}"
issuer = "mtls"
acting_as = "sa-keygate"
"#
    );
    let gw = support::start(support::config_with_env(&sim.url(), &extra, &env)).await;
    Setup {
        ca,
        _dir: dir,
        gw,
        audit,
    }
}

/// GET `path` over TLS with `identity` as the client certificate (or none); the status, or
/// `None` when the connection failed (handshake refused).
async fn get(
    setup: &Setup,
    path: &str,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    request_id: &str,
) -> Option<u16> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(setup.ca.pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(keygate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let url = format!("https://localhost:{}{path}", setup.gw.local_addr().port());
    let request = Request::get(url)
        .header("x-request-id", request_id)
        .body(Full::default())
        .unwrap();
    let response = within(5, client.request(request)).await.ok()?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    // With TLS 1.3 the server's verdict on the certificate may arrive after the client's
    // handshake "completed": a refused certificate shows as a failed request, never a status.
    Some(status)
}

#[tokio::test]
async fn client_certificates_identify_brokered_callers_and_bad_ones_are_refused() {
    let sim = Sim::start().await;
    let setup = setup(&sim, "required").await;
    let good = setup
        .ca
        .leaf(vec![SanType::URI(SPIFFE.try_into().unwrap())], 7, false);
    let status = get(&setup, API_KEYS, Some(good), "mtls-ok").await;
    assert_eq!(status, Some(200));
    // Brokered: upstream saw keygate's credential.
    let own = sim.basic("sa-keygate");
    let seen = sim.received(API_KEYS);
    assert_eq!(
        seen.last().unwrap().header_values("authorization"),
        [own.as_str()]
    );
    let records = audit_records(&setup.audit, "mtls-ok", "response_complete").await;
    let principal = &records[0]["principal"];
    assert_eq!(principal["id"], "sa-keygate");
    assert_eq!(principal["authenticationMethod"], "mtls");
    assert_eq!(principal["external"]["id"], SPIFFE);
    assert_eq!(principal["external"]["source"], "mtls");
    assert!(
        principal["external"]["issuer"]
            .as_str()
            .unwrap()
            .contains("keygate mTLS test CA"),
        "{principal}"
    );

    let before = sim.sim.requests().len();
    let other_ca = Ca::new("some other CA");
    let wrong = other_ca.leaf(vec![SanType::URI(SPIFFE.try_into().unwrap())], 8, false);
    assert_eq!(get(&setup, API_KEYS, Some(wrong), "wrong-ca").await, None);
    let expired = setup
        .ca
        .leaf(vec![SanType::URI(SPIFFE.try_into().unwrap())], 9, true);
    assert_eq!(get(&setup, API_KEYS, Some(expired), "expired").await, None);
    let revoked = setup
        .ca
        .leaf(vec![SanType::URI(SPIFFE.try_into().unwrap())], 666, false);
    assert_eq!(get(&setup, API_KEYS, Some(revoked), "revoked").await, None);
    assert_eq!(get(&setup, API_KEYS, None, "missing").await, None);
    assert_eq!(
        sim.sim.requests().len(),
        before,
        "a refused client reached the upstream"
    );

    // A verified certificate no mapping covers has no Confluent principal: 401.
    let stranger = setup.ca.leaf(
        vec![SanType::URI(
            "spiffe://corp.example/ns/other/sa/x".try_into().unwrap(),
        )],
        10,
        false,
    );
    assert_eq!(
        get(&setup, API_KEYS, Some(stranger), "unmapped").await,
        Some(401)
    );
}

#[tokio::test]
async fn optional_mode_admits_connections_without_a_certificate_but_not_their_governed_requests() {
    let sim = Sim::start().await;
    let setup = setup(&sim, "optional").await;
    assert_eq!(get(&setup, API_KEYS, None, "none").await, Some(401));
    let good = setup
        .ca
        .leaf(vec![SanType::URI(SPIFFE.try_into().unwrap())], 11, false);
    assert_eq!(get(&setup, API_KEYS, Some(good), "good").await, Some(200));
    let revoked = setup
        .ca
        .leaf(vec![SanType::URI(SPIFFE.try_into().unwrap())], 666, false);
    assert_eq!(get(&setup, API_KEYS, Some(revoked), "revoked").await, None);
}

#[test]
fn the_certificate_rule_picks_san_uri_then_cn() {
    use keygate::identity::mtls::{identity, Field};
    let ca = Ca::new("rule CA");
    let (chain, _) = ca.leaf(
        vec![
            SanType::DnsName("ci.payments.corp".try_into().unwrap()),
            SanType::URI(SPIFFE.try_into().unwrap()),
        ],
        1,
        false,
    );
    let id = identity(&chain[0], &[Field::SanUri, Field::Cn]).unwrap();
    assert_eq!(id.subject, SPIFFE);
    assert_eq!(
        identity(&chain[0], &[Field::SanDns]).unwrap().subject,
        "ci.payments.corp"
    );
    assert_eq!(identity(&chain[0], &[Field::Cn]).unwrap().subject, "client");
    assert!(id.issuer.contains("rule CA"));
}
