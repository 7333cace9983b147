//! Confluent STS: `POST /sts/v1/oauth2/token`, the OAuth token exchange of Terraform's `oauth {}`
//! (RFC 8693: `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`, `subject_token`,
//! `identity_pool_id`, form-encoded).
//!
//! The simulator cannot verify an external IdP's token (Confluent verifies it with the identity
//! pool's provider): it takes any JWT-shaped `subject_token` whose `exp` is in the future, and an
//! `identity_pool_id` of the form `pool-…`, and answers with an access token that authenticates
//! as the pool (`Authorization: Bearer`), valid for 15 minutes like Confluent's.

use std::time::{Duration, SystemTime};

use super::*;

/// Lifetime of an access token (Confluent: 15 minutes).
const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(900);

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<SimBody> {
    json_response(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

fn form_value(body: &[u8], name: &str) -> Option<String> {
    body.split(|b| *b == b'&').find_map(|pair| {
        let (k, v) = std::str::from_utf8(pair).ok()?.split_once('=')?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn unexpired_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some(claims) = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
    else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    claims["exp"].as_u64().is_some_and(|exp| exp > now)
}

pub(super) fn token_exchange(call: &Call<'_>) -> Result<Response<SimBody>, ApiError> {
    if call.method != Method::POST {
        return Err(ApiError::method_not_allowed("POST"));
    }
    let body = &call.body.kept;
    let grant = form_value(body, "grant_type");
    if grant.as_deref() != Some("urn:ietf:params:oauth:grant-type:token-exchange") {
        return Ok(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "expected the token-exchange grant",
        ));
    }
    let (Some(subject), Some(pool)) = (
        form_value(body, "subject_token"),
        form_value(body, "identity_pool_id"),
    ) else {
        return Ok(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send `subject_token` and `identity_pool_id`",
        ));
    };
    if !unexpired_jwt(&subject) {
        return Ok(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "the subject token is not a valid JWT",
        ));
    }
    if !pool.starts_with("pool-") || pool.len() <= 5 {
        return Ok(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "`identity_pool_id` is not an identity pool",
        ));
    }
    let sim = call.sim;
    let Ok(jti) = sim.minter.hex_id() else {
        return Ok(oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "no randomness",
        ));
    };
    let token = sim.sessions.token(
        &pool,
        sim.org_id(),
        SystemTime::now() + ACCESS_TOKEN_TTL,
        &jti,
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_TTL.as_secs(),
        }),
    ))
}
