use serde_json::json;

use super::mint::{self, Minter};
use super::*;

const ISS: &str = "https://idp.example";

fn rsa(pss: bool) -> Minter {
    Minter::rsa(
        "rsa-1",
        include_bytes!("../../../tests/fixtures/jwt/rsa-2048.pem"),
        pss,
    )
    .unwrap()
}

fn config(algorithms: Vec<Alg>) -> IssuerConfig {
    IssuerConfig {
        issuer: ISS.into(),
        audiences: vec!["keygate".into()],
        jwks: JwksSource::File(std::path::PathBuf::new()),
        algorithms,
        hmac_secret_source: None,
        hmac_secret: None,
        leeway: Duration::from_secs(5),
        required_claims: Vec::new(),
        principal: Template::parse("claims.sub").unwrap(),
        groups_claim: ClaimPath::parse("groups"),
        filter: Vec::new(),
        broker: false,
        credential_source: None,
        credential: None,
        cache: CachePolicy::default(),
    }
}

fn issuer_for(minters: &[&Minter], config: IssuerConfig) -> Issuer {
    let keys = KeySet::parse(mint::jwks(minters).as_bytes()).unwrap();
    Issuer::new(config, Jwks::fixed(keys))
}

fn claims() -> serde_json::Value {
    json!({"iss": ISS, "aud": "keygate", "sub": "ci@payments", "exp": mint::now() + 300,
           "groups": ["payments", "ci"]})
}

#[tokio::test]
async fn every_asymmetric_algorithm_verifies() {
    for minter in [
        rsa(false),
        rsa(true),
        Minter::es256("ec-1").unwrap(),
        Minter::es384("ec-2").unwrap(),
        Minter::ed25519("ed-1").unwrap(),
    ] {
        let issuer = issuer_for(
            &[&minter],
            config(vec![
                Alg::Rs256,
                Alg::Ps256,
                Alg::Es256,
                Alg::Es384,
                Alg::EdDsa,
            ]),
        );
        let verified = issuer
            .verify(&minter.sign(&claims()))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", minter.alg()));
        assert_eq!(verified.subject, "ci@payments");
        assert_eq!(verified.groups, ["payments", "ci"]);
    }
}

#[tokio::test]
async fn time_audience_and_issuer_claims_are_checked() {
    let m = Minter::es256("k").unwrap();
    let issuer = issuer_for(&[&m], config(vec![Alg::Es256]));
    let now = mint::now();
    let mut c = claims();
    c["exp"] = json!(now - 60);
    assert_eq!(
        issuer.verify(&m.sign(&c)).await.unwrap_err(),
        JwtError::Expired
    );
    // Within the leeway.
    c["exp"] = json!(now - 2);
    assert!(issuer.verify(&m.sign(&c)).await.is_ok());
    let mut c = claims();
    c["nbf"] = json!(now + 120);
    assert_eq!(
        issuer.verify(&m.sign(&c)).await.unwrap_err(),
        JwtError::NotYetValid
    );
    let mut c = claims();
    c["aud"] = json!(["other", "another"]);
    assert!(matches!(
        issuer.verify(&m.sign(&c)).await.unwrap_err(),
        JwtError::WrongAudience(_)
    ));
    c["aud"] = json!(["other", "keygate"]);
    assert!(issuer.verify(&m.sign(&c)).await.is_ok());
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        issuer.verify(&m.sign(&c)).await.unwrap_err(),
        JwtError::NoExpiry
    );
    let mut c = claims();
    c["iss"] = json!("https://evil.example");
    assert!(issuer.verify(&m.sign(&c)).await.is_err());
}

#[tokio::test]
async fn none_and_algorithm_confusion_are_refused() {
    let m = rsa(false);
    let issuer = issuer_for(&[&m], config(vec![Alg::Rs256]));
    assert_eq!(
        issuer.verify(&mint::unsigned(&claims())).await.unwrap_err(),
        JwtError::Unsigned
    );
    // HS256 "signed" with the public key: the classic confusion attack.
    let forged = mint::hs256(
        &json!({"alg": "HS256", "kid": "rsa-1"}),
        &claims(),
        &m.public_bytes(),
    );
    assert!(matches!(
        issuer.verify(&forged).await.unwrap_err(),
        JwtError::AlgorithmNotAllowed { .. }
    ));
    // ES256 is not on this issuer's list.
    let ec = Minter::es256("rsa-1").unwrap();
    assert!(matches!(
        issuer.verify(&ec.sign(&claims())).await.unwrap_err(),
        JwtError::AlgorithmNotAllowed { .. }
    ));
}

#[tokio::test]
async fn hs256_works_only_with_a_configured_secret() {
    let m = Minter::es256("k").unwrap();
    let mut cfg = config(vec![Alg::Hs256]);
    cfg.hmac_secret = Some(Secret::new("a-shared-secret-of-enough-length"));
    let issuer = issuer_for(&[&m], cfg);
    let good = mint::hs256(
        &json!({"alg": "HS256"}),
        &claims(),
        b"a-shared-secret-of-enough-length",
    );
    assert!(issuer.verify(&good).await.is_ok());
    let bad = mint::hs256(&json!({"alg": "HS256"}), &claims(), b"wrong");
    assert_eq!(
        issuer.verify(&bad).await.unwrap_err(),
        JwtError::BadSignature
    );
}

#[tokio::test]
async fn signatures_and_key_ids_are_checked() {
    let m = Minter::es256("k1").unwrap();
    let other = Minter::es256("k1").unwrap();
    let issuer = issuer_for(&[&m], config(vec![Alg::Es256]));
    // Same kid, another key.
    assert_eq!(
        issuer.verify(&other.sign(&claims())).await.unwrap_err(),
        JwtError::BadSignature
    );
    let unknown = Minter::es256("k2").unwrap();
    assert!(matches!(
        issuer.verify(&unknown.sign(&claims())).await.unwrap_err(),
        JwtError::UnknownKey(_)
    ));
    // A tampered payload.
    let token = m.sign(&claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut c = claims();
    c["sub"] = json!("admin");
    let forged_payload = URL_SAFE_NO_PAD.encode(c.to_string());
    parts[1] = &forged_payload;
    assert_eq!(
        issuer.verify(&parts.join(".")).await.unwrap_err(),
        JwtError::BadSignature
    );
    let crit = m.sign_with_header(
        &json!({"alg": "ES256", "kid": "k1", "crit": ["exp"]}),
        &claims(),
    );
    assert_eq!(issuer.verify(&crit).await.unwrap_err(), JwtError::Critical);
}

#[tokio::test]
async fn malformed_and_oversized_tokens_have_clear_reasons() {
    let m = Minter::es256("k").unwrap();
    let issuer = issuer_for(&[&m], config(vec![Alg::Es256]));
    let mut c = claims();
    c["pad"] = json!("x".repeat(9000));
    let big = m.sign(&c);
    let err = issuer.verify(&big).await.unwrap_err();
    assert!(matches!(err, JwtError::TooLong(_)));
    assert!(err.to_string().contains("8192"));
    for bad in ["a.b", "a.b.c.d", "!!!.e30.", "e30.!!!.", ".."] {
        let err = issuer.verify(bad).await.unwrap_err();
        assert!(matches!(err, JwtError::Malformed(_)), "{bad}: {err}");
    }
}

#[tokio::test]
async fn principal_template_filter_and_required_claims() {
    let m = Minter::es256("k").unwrap();
    let mut cfg = config(vec![Alg::Es256]);
    cfg.principal = Template::parse("{claims.repository}@github").unwrap();
    cfg.filter = vec![(
        ClaimPath::parse("claims.repository_owner").unwrap(),
        vec!["acme".into()],
    )];
    cfg.required_claims = vec![ClaimPath::parse("ref").unwrap()];
    let issuer = issuer_for(&[&m], cfg);
    let mut c = claims();
    c["repository"] = json!("acme/payments");
    c["repository_owner"] = json!("acme");
    c["ref"] = json!("refs/heads/main");
    let v = issuer.verify(&m.sign(&c)).await.unwrap();
    assert_eq!(v.subject, "acme/payments@github");
    c["repository_owner"] = json!("evil");
    assert!(matches!(
        issuer.verify(&m.sign(&c)).await.unwrap_err(),
        JwtError::Filtered(..)
    ));
    c["repository_owner"] = json!("acme");
    c.as_object_mut().unwrap().remove("ref");
    assert!(matches!(
        issuer.verify(&m.sign(&c)).await.unwrap_err(),
        JwtError::MissingClaim(..)
    ));
}

#[test]
fn nested_and_dotted_claims_resolve() {
    let claims =
        json!({"kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "ci"}}});
    let claims = claims.as_object().unwrap();
    let t = Template::parse(
        "{claims.kubernetes.io.serviceaccount.name}@{claims.kubernetes.io.namespace}",
    )
    .unwrap();
    assert_eq!(t.render(claims).unwrap(), "ci@payments");
    assert!(Template::parse("{sub}").is_err());
    assert!(Template::parse("sub").is_err());
    assert!(Template::parse("{claims.sub").is_err());
}

#[test]
fn peeking_reads_iss_and_exp_without_verifying() {
    let m = Minter::es256("k").unwrap();
    let token = m.sign(&claims());
    assert_eq!(peek_issuer(&token).as_deref(), Some(ISS));
    assert!(peek_expiry(&token).unwrap() > SystemTime::now());
    assert_eq!(peek_issuer("not-a-token"), None);
}
