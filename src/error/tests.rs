//! One test per row of the error → response mapping.

use std::time::Duration;

use http_body_util::BodyExt;

use super::*;

async fn render(err: GatewayError) -> (StatusCode, http::HeaderMap, serde_json::Value) {
    let response = err.to_response("req-1");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap(),
    )
}

fn member(json: &serde_json::Value) -> &serde_json::Value {
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    &errors[0]
}

#[tokio::test]
async fn upstream_connect_failure_maps_to_502() {
    let (status, headers, json) =
        render(ProxyError::Connect("connection refused".into()).into()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    let m = member(&json);
    assert_eq!(m["status"], "502");
    assert_eq!(m["id"], "req-1");
    assert_eq!(m["code"], "upstream_unavailable");
    assert!(m["detail"].as_str().unwrap().contains("connection refused"));
}

#[tokio::test]
async fn upstream_tls_failure_maps_to_502() {
    let (status, _, json) = render(ProxyError::Tls("unknown issuer".into()).into()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(member(&json)["code"], "upstream_tls_failure");
}

#[tokio::test]
async fn upstream_protocol_error_maps_to_502() {
    let (status, _, json) = render(ProxyError::Protocol("reset".into()).into()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(member(&json)["status"], "502");
}

#[tokio::test]
async fn upstream_timeout_maps_to_504() {
    let (status, _, json) = render(ProxyError::Timeout(Duration::from_secs(3)).into()).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let m = member(&json);
    assert_eq!(m["status"], "504");
    assert_eq!(m["code"], "upstream_timeout");
}

#[tokio::test]
async fn upstream_connect_timeout_maps_to_504() {
    let (status, _, _) = render(ProxyError::ConnectTimeout(Duration::from_secs(1)).into()).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn upstream_body_timeout_maps_to_504() {
    let (status, _, json) = render(ProxyError::BodyTimeout(Duration::from_secs(10)).into()).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let m = member(&json);
    assert_eq!(m["code"], "upstream_timeout");
    assert!(m["detail"].as_str().unwrap().contains("body"), "{m}");
}

#[tokio::test]
async fn unavailable_shared_rate_limit_maps_to_503_with_retry_after() {
    let (status, headers, json) =
        render(crate::ratelimit::SharedUnavailable::sample("creates-per-principal").into()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[http::header::RETRY_AFTER], "1");
    assert!(
        headers.get("x-ratelimit-limit").is_none(),
        "no limit was exceeded"
    );
    let m = member(&json);
    assert_eq!(m["status"], "503");
    assert_eq!(m["code"], "ratelimit_unavailable");
    assert_eq!(m["meta"]["limit_id"], "creates-per-principal");
    let detail = m["detail"].as_str().unwrap();
    assert!(detail.contains("`creates-per-principal`"), "{detail}");
    assert!(detail.contains("unavailable"), "{detail}");
}

#[tokio::test]
async fn internal_error_maps_to_500() {
    let (status, headers, json) = render(GatewayError::Internal("no permit")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(headers.get(WWW_AUTHENTICATE).is_none());
    assert_eq!(member(&json)["status"], "500");
}

/// One value of every variant of the error table, with the fixed texts keygate fills in (and
/// ids where a variant quotes one), so that a new variant must be added here to compile.
fn every_error() -> Vec<GatewayError> {
    use crate::guard::GuardError as G;
    use crate::identity::IdentityError as I;
    let guard = [
        G::NonCanonicalPath {
            path: "/iam/v2/api-keys/".into(),
            reason: "a trailing `/`",
            canonical: Some("/iam/v2/api-keys".into()),
        },
        G::NonCanonicalPath {
            path: "/iam/v2/x%2Cy".into(),
            reason: "percent-encoded characters",
            canonical: None,
        },
        G::InvalidTarget,
        G::InvalidQuery {
            reason: "a parameter without a name",
        },
        G::Override {
            location: "header",
            name: "x-http-method-override",
        },
        G::MethodNotAllowed {
            method: http::Method::PUT,
            path: "/iam/v2/api-keys/{id}",
            allow: "GET, PATCH, DELETE",
        },
        G::DuplicateAuthorization,
        G::Framing {
            reason: "both `Content-Length` and `Transfer-Encoding`",
        },
        G::UnsupportedMediaType {
            reason: "no `Content-Type`",
        },
        G::UnsupportedContentEncoding,
        G::PayloadTooLarge { limit: 65536 },
        G::BodyRead,
        G::Trailers,
        G::InvalidUtf8 { offset: 3 },
        G::UnexpectedBody {
            method: http::Method::DELETE,
        },
        G::InvalidJson {
            category: "syntax error",
            line: 1,
            column: 2,
        },
        G::DuplicateKey {
            kind: "a duplicate key",
            pointer: Some("/spec/owner".into()),
            line: 1,
            column: 9,
        },
        G::NotAnObject,
        G::NonCanonicalMember {
            pointer: "/spec/Owner".into(),
            expected: "owner",
        },
        G::InvalidField {
            pointer: "/spec/owner/id",
            reason: "must be a non-empty string",
        },
        G::ImmutableField {
            pointer: "/spec/owner",
        },
    ];
    let identity = [
        I::Missing,
        I::Malformed("Basic credential is not base64"),
        I::Malformed("Basic credential has no `:`"),
        I::Malformed("expected the `Basic` scheme"),
        I::UnsupportedScheme("Bearer"),
        I::Rejected {
            key_id: "DEMOALICE0000001".into(),
        },
        I::UnknownOwner {
            key_id: "DEMOALICE0000001".into(),
            owner: "op-12".into(),
        },
        I::UpstreamRateLimited(crate::identity::RateLimitHeaders::default()),
        I::Unavailable("upstream answered 503".into()),
        I::SessionMalformed("the token has no `exp`"),
        I::SessionExpired,
        I::SessionRejected,
        I::SessionOtherOrganization,
        I::Jwt(crate::identity::jwt::JwtError::Expired),
        I::Jwt(crate::identity::jwt::JwtError::TooLong(9000)),
        I::Unmapped {
            external: "ci@payments".into(),
            via: "issuer https://idp.example".into(),
            bearer: true,
        },
        I::Certificate,
        I::Exchange("the subject token is not from one of keygate's JWT issuers".into()),
    ];
    let mut all: Vec<GatewayError> = guard.into_iter().map(GatewayError::from).collect();
    all.extend(identity.into_iter().map(GatewayError::from));
    all.extend([
        GatewayError::Denied(Box::new(Denial {
            explanation: "creating a Global key for sa-orders needs OrganizationAdmin or \
                          ResourceOwner on sa-orders; you hold EnvironmentAdmin on env-prod01"
                .into(),
            rule_ids: vec!["matrix.deny.sa_global".into()],
            pointer: Some("/spec/resource/id"),
            by: DecidedBy::Matrix,
            entries: Vec::new(),
        })),
        GatewayError::RateLimited(RateLimited::sample("create-per-principal")),
        GatewayError::RateLimitUnavailable(crate::ratelimit::SharedUnavailable::sample(
            "create-per-principal",
        )),
        GatewayError::AuthzUnavailable(
            "authorization data (role bindings, inventory) has not been loaded yet".into(),
        ),
        GatewayError::AuditUnavailable(
            "audit file sink is unhealthy after a write failure: no durable audit until restart"
                .into(),
        ),
        ProxyError::Connect("connection refused".into()).into(),
        ProxyError::Tls("invalid peer certificate: UnknownIssuer".into()).into(),
        ProxyError::ConnectTimeout(Duration::from_secs(5)).into(),
        ProxyError::Timeout(Duration::from_secs(30)).into(),
        ProxyError::Protocol("connection closed before message completed".into()).into(),
        GatewayError::Denied(Box::new(Denial {
            explanation: "denied by organisation policy: …".into(),
            rule_ids: vec!["service-account-key-limit".into()],
            pointer: None,
            by: DecidedBy::Policy,
            entries: vec![DenialEntry {
                rule_id: "service-account-key-limit".into(),
                detail: "service account sa-orders already has 3 API keys (limit 3)".into(),
                pointer: Some("/spec/owner/id".into()),
            }],
        })),
        GatewayError::LookupRefused(Box::new(UpstreamAnswer::new(
            "NOSUCHKEY0000001",
            StatusCode::NOT_FOUND,
            &http::HeaderMap::new(),
            Bytes::from_static(br#"{"errors":[{"status":"404","title":"Not Found"}]}"#),
        ))),
        GatewayError::Internal("governed request without a permit"),
    ]);
    // Exhaustive: a new variant fails to compile until it has a sample above.
    for err in &all {
        match err {
            GatewayError::Guard(
                G::NonCanonicalPath { .. }
                | G::InvalidTarget
                | G::InvalidQuery { .. }
                | G::Override { .. }
                | G::MethodNotAllowed { .. }
                | G::DuplicateAuthorization
                | G::Framing { .. }
                | G::UnsupportedMediaType { .. }
                | G::UnsupportedContentEncoding
                | G::PayloadTooLarge { .. }
                | G::BodyRead
                | G::Trailers
                | G::InvalidUtf8 { .. }
                | G::UnexpectedBody { .. }
                | G::InvalidJson { .. }
                | G::DuplicateKey { .. }
                | G::NotAnObject
                | G::NonCanonicalMember { .. }
                | G::InvalidField { .. }
                | G::ImmutableField { .. },
            )
            | GatewayError::Identity(
                I::Missing
                | I::Malformed(_)
                | I::UnsupportedScheme(_)
                | I::Rejected { .. }
                | I::UnknownOwner { .. }
                | I::UpstreamRateLimited(_)
                | I::Unavailable(_)
                | I::SessionMalformed(_)
                | I::SessionExpired
                | I::SessionRejected
                | I::SessionOtherOrganization
                | I::Jwt(_)
                | I::Unmapped { .. }
                | I::Certificate
                | I::Exchange(_),
            )
            | GatewayError::Denied(_)
            | GatewayError::RateLimited(_)
            | GatewayError::RateLimitUnavailable(_)
            | GatewayError::AuthzUnavailable(_)
            | GatewayError::AuditUnavailable(_)
            | GatewayError::Upstream(_)
            | GatewayError::LookupRefused(_)
            | GatewayError::Internal(_) => {}
        }
    }
    all
}

#[tokio::test]
async fn the_redactor_leaves_every_fixed_message_of_the_error_table_intact() {
    for err in every_error() {
        let message = err.to_string();
        assert_eq!(
            err.detail(),
            message,
            "the redactor changed keygate's own text"
        );
        assert!(!message.contains(crate::redact::REDACTED), "{message}");
        let shown: Vec<String> = match &err {
            // One member per denying policy, each with its own detail.
            GatewayError::Denied(d) if !d.entries.is_empty() => {
                d.entries.iter().map(|e| e.detail.clone()).collect()
            }
            // The upstream's own answer, not keygate's text.
            GatewayError::LookupRefused(_) => Vec::new(),
            _ => vec![message.clone()],
        };
        let (_, _, json) = render(err).await;
        for (i, text) in shown.iter().enumerate() {
            assert_eq!(json["errors"][i]["detail"], text.as_str());
        }
    }
}

#[tokio::test]
async fn the_missing_credential_help_shows_how_to_send_one() {
    let (status, _, json) = render(IdentityError::Missing.into()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let detail = member(&json)["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("`Authorization: Basic base64(key:secret)`"),
        "{detail}"
    );
}

#[tokio::test]
async fn each_denying_policy_is_its_own_error_member_with_its_pointer() {
    let entry = |id: &str, detail: &str, pointer: Option<&str>| DenialEntry {
        rule_id: id.into(),
        detail: detail.into(),
        pointer: pointer.map(str::to_owned),
    };
    let err = GatewayError::Denied(Box::new(Denial {
        explanation: "denied by organisation policy: a (p1); b (p2)".into(),
        rule_ids: vec!["p1".into(), "p2".into()],
        pointer: None,
        by: DecidedBy::Policy,
        entries: vec![
            entry("p1", "a", Some("/spec/display_name")),
            entry("p2", "b", None),
        ],
    }));
    let (status, _, json) = render(err).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{json}");
    assert_eq!(errors[0]["detail"], "a");
    assert_eq!(errors[0]["source"]["pointer"], "/spec/display_name");
    assert_eq!(errors[0]["meta"]["rule_ids"], serde_json::json!(["p1"]));
    assert_eq!(errors[1]["detail"], "b");
    assert!(errors[1].get("source").is_none(), "{json}");
    assert_eq!(errors[1]["meta"]["rule_ids"], serde_json::json!(["p2"]));
    for e in errors {
        assert_eq!(e["id"], "req-1");
        assert_eq!(e["status"], "403");
        assert_eq!(e["code"], "user_unauthorized");
    }
}

#[tokio::test]
async fn a_refused_lookup_is_passed_through_as_the_upstream_sent_it() {
    let mut headers = http::HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-request-id", HeaderValue::from_static("upstream-id"));
    let body = br#"{"errors":[{"id":"u1","status":"404","title":"Not Found"}]}"#;
    let err = GatewayError::LookupRefused(Box::new(UpstreamAnswer::new(
        "NOSUCHKEY0000001",
        StatusCode::NOT_FOUND,
        &headers,
        Bytes::from_static(body),
    )));
    assert_eq!(err.decided_by(), Some(DecidedBy::Upstream));
    assert!(err.to_string().contains("404"));
    let (status, headers, json) = render(err).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    assert!(headers.get(WWW_AUTHENTICATE).is_none());
    assert_eq!(
        json,
        serde_json::from_slice::<serde_json::Value>(body).unwrap()
    );
}

#[tokio::test]
async fn session_token_errors_map_to_401_with_a_bearer_challenge() {
    for err in [
        IdentityError::SessionExpired,
        IdentityError::SessionRejected,
        IdentityError::SessionMalformed("the token has no `exp`"),
        IdentityError::SessionOtherOrganization,
        IdentityError::Jwt(crate::identity::jwt::JwtError::BadSignature),
        IdentityError::Exchange("no".into()),
    ] {
        let (status, headers, json) = render(err.into()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer "));
        assert_eq!(member(&json)["code"], "user_unauthenticated");
    }
    let (_, headers, _) = render(IdentityError::Missing.into()).await;
    assert!(headers[WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .starts_with("Basic "));
}

/// Every row of the error → response table, pinned: what the caller gets (status, `code`,
/// `title`, the challenge or `Allow` header) and what [`rescue`] records (code, decided-by). One
/// line per arm of [`GatewayError::parts`]; [`every_error`] makes sure no variant is missing.
#[tokio::test]
async fn every_row_of_the_table_is_pinned_and_rescued_the_same_way() {
    use crate::guard::GuardError as G;
    use crate::identity::IdentityError as I;
    type Row = (
        GatewayError,
        u16,
        &'static str,
        &'static str,
        Option<(http::HeaderName, &'static str)>,
        Option<DecidedBy>,
    );
    let basic = Some((WWW_AUTHENTICATE, BASIC_CHALLENGE));
    let rows: Vec<Row> = vec![
        (
            G::InvalidTarget.into(),
            400,
            "invalid_request",
            "Bad Request",
            None,
            Some(DecidedBy::Guard),
        ),
        (
            G::MethodNotAllowed {
                method: http::Method::PUT,
                path: "/iam/v2/api-keys/{id}",
                allow: "GET, PATCH, DELETE",
            }
            .into(),
            405,
            "method_not_allowed",
            "Method Not Allowed",
            Some((ALLOW, "GET, PATCH, DELETE")),
            Some(DecidedBy::Guard),
        ),
        (
            G::PayloadTooLarge { limit: 65536 }.into(),
            413,
            "payload_too_large",
            "Payload Too Large",
            None,
            Some(DecidedBy::Guard),
        ),
        (
            G::UnsupportedMediaType {
                reason: "no `Content-Type`",
            }
            .into(),
            415,
            "unsupported_media_type",
            "Unsupported Media Type",
            None,
            Some(DecidedBy::Guard),
        ),
        (
            I::UpstreamRateLimited(crate::identity::RateLimitHeaders::default()).into(),
            429,
            "rate_limit_exceeded",
            "Too Many Requests",
            None,
            Some(DecidedBy::Identity),
        ),
        (
            I::Unavailable("upstream answered 503".into()).into(),
            503,
            "identity_unavailable",
            "Service Unavailable",
            None,
            Some(DecidedBy::Identity),
        ),
        (
            I::Missing.into(),
            401,
            "user_unauthenticated",
            "Authentication Required",
            basic.clone(),
            Some(DecidedBy::Identity),
        ),
        (
            I::SessionExpired.into(),
            401,
            "user_unauthenticated",
            "Authentication Required",
            Some((WWW_AUTHENTICATE, BEARER_CHALLENGE)),
            Some(DecidedBy::Identity),
        ),
        (
            GatewayError::Denied(Box::new(Denial {
                explanation: "no".into(),
                rule_ids: vec!["quota.kafka_keys".into()],
                pointer: None,
                by: DecidedBy::Quota,
                entries: Vec::new(),
            })),
            403,
            "user_unauthorized",
            "Forbidden by keygate policy",
            None,
            Some(DecidedBy::Quota),
        ),
        (
            GatewayError::RateLimited(RateLimited::sample("l")),
            429,
            "rate_limit_exceeded",
            "Too Many Requests",
            Some((http::header::RETRY_AFTER, "")),
            Some(DecidedBy::RateLimit),
        ),
        (
            crate::ratelimit::SharedUnavailable::sample("l").into(),
            503,
            "ratelimit_unavailable",
            "Service Unavailable",
            Some((http::header::RETRY_AFTER, "1")),
            Some(DecidedBy::RateLimit),
        ),
        (
            GatewayError::AuthzUnavailable("x".into()),
            503,
            "authorization_unavailable",
            "Service Unavailable",
            None,
            Some(DecidedBy::Matrix),
        ),
        (
            GatewayError::AuditUnavailable("x".into()),
            503,
            "audit_unavailable",
            "Service Unavailable",
            None,
            Some(DecidedBy::Audit),
        ),
        (
            ProxyError::Connect("refused".into()).into(),
            502,
            "upstream_unavailable",
            "Bad Gateway",
            None,
            Some(DecidedBy::Upstream),
        ),
        (
            ProxyError::Tls("bad".into()).into(),
            502,
            "upstream_tls_failure",
            "Bad Gateway",
            None,
            Some(DecidedBy::Upstream),
        ),
        (
            ProxyError::Protocol("reset".into()).into(),
            502,
            "upstream_protocol_error",
            "Bad Gateway",
            None,
            Some(DecidedBy::Upstream),
        ),
        (
            ProxyError::ConnectTimeout(Duration::from_secs(1)).into(),
            504,
            "upstream_timeout",
            "Gateway Timeout",
            None,
            Some(DecidedBy::Upstream),
        ),
        (
            ProxyError::Timeout(Duration::from_secs(1)).into(),
            504,
            "upstream_timeout",
            "Gateway Timeout",
            None,
            Some(DecidedBy::Upstream),
        ),
        (
            ProxyError::BodyTimeout(Duration::from_secs(1)).into(),
            504,
            "upstream_timeout",
            "Gateway Timeout",
            None,
            Some(DecidedBy::Upstream),
        ),
        (
            GatewayError::LookupRefused(Box::new(UpstreamAnswer::new(
                "K",
                StatusCode::NOT_FOUND,
                &http::HeaderMap::new(),
                Bytes::from_static(b"{}"),
            ))),
            404,
            "upstream_answer",
            "Not Found",
            None,
            Some(DecidedBy::Upstream),
        ),
        (
            GatewayError::Internal("x"),
            500,
            "internal_error",
            "Internal Server Error",
            None,
            None,
        ),
    ];
    for (err, status, code, title, header, decided_by) in rows {
        let label = format!("{err:?}");
        let parts = err.parts();
        assert_eq!(
            (parts.status.as_u16(), parts.code, parts.title),
            (status, code, title),
            "{label}"
        );
        let (response, rescued) = rescue(&err, "req-1");
        assert_eq!(response.status().as_u16(), status, "{label}");
        assert_eq!(rescued.code, code, "{label}");
        assert_eq!(rescued.detail, err.detail(), "{label}");
        assert_eq!(rescued.decided_by, decided_by, "{label}");
        match header {
            // Present, whatever its value.
            Some((name, "")) => assert!(response.headers().contains_key(&name), "{label}: {name}"),
            Some((name, value)) => assert_eq!(response.headers()[&name], value, "{label}: {name}"),
            None => {
                assert!(
                    !response.headers().contains_key(WWW_AUTHENTICATE),
                    "{label}"
                );
                assert!(!response.headers().contains_key(ALLOW), "{label}");
            }
        }
        if !matches!(err, GatewayError::LookupRefused(_)) {
            let (_, _, json) = render(err).await;
            assert_eq!(member(&json)["code"], code, "{label}");
            assert_eq!(member(&json)["title"], title, "{label}");
            assert_eq!(member(&json)["id"], "req-1", "{label}");
        }
    }
}
