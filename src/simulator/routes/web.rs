//! Confluent's web host (`confluent.cloud`), as far as the Confluent CLI uses it for identity:
//! `POST /api/sessions` (log in with email and password, or refresh) and `GET /api/me`. Answers
//! in the v1 API's shapes (`{"token", "refresh_token", "user", "organization"}`; errors as
//! `{"error":{"code","message"}}`).

use std::time::SystemTime;

use super::*;

/// Body of `POST /api/sessions`.
#[derive(Deserialize)]
struct SessionRequest {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// A v1-shaped error answer.
fn v1_error(status: StatusCode, message: &str) -> Response<SimBody> {
    json_response(
        status,
        &json!({ "error": { "code": status.as_u16(), "message": message } }),
    )
}

pub(super) fn web(
    call: &Call<'_>,
    parts: &Parts,
    rest: &[&str],
) -> Result<Response<SimBody>, ApiError> {
    match (call.method, rest) {
        (&Method::POST, ["sessions"]) => Ok(create_session(call)),
        (&Method::GET, ["me"]) => Ok(match bearer_user(call.sim, &parts.headers) {
            Some(user) => me(call, &user),
            None => v1_error(StatusCode::UNAUTHORIZED, "token is expired or invalid"),
        }),
        (_, ["sessions"]) => Err(ApiError::method_not_allowed("POST")),
        (_, ["me"]) => Err(ApiError::method_not_allowed("GET")),
        _ => Err(not_found(parts.uri.path())),
    }
}

fn create_session(call: &Call<'_>) -> Response<SimBody> {
    let Ok(request) = serde_json::from_slice::<SessionRequest>(&call.body.kept) else {
        return v1_error(
            StatusCode::BAD_REQUEST,
            "the request body is not a session request",
        );
    };
    let sim = call.sim;
    let user = match (&request.email, &request.password, &request.refresh_token) {
        (Some(email), Some(password), None) => sim.store().user_by_login(email, password),
        (None, None, Some(refresh)) => sim.sessions.refresh_user(refresh),
        _ => {
            return v1_error(
                StatusCode::BAD_REQUEST,
                "send `email` and `password`, or `refresh_token`",
            )
        }
    };
    let Some(user) = user else {
        return v1_error(StatusCode::UNAUTHORIZED, "Incorrect email or password");
    };
    let (Ok(jti), Ok(refresh)) = (sim.minter.hex_id(), sim.minter.hex_id()) else {
        return v1_error(StatusCode::INTERNAL_SERVER_ERROR, "no randomness");
    };
    let (token, refresh) = sim
        .sessions
        .login(&user, sim.org_id(), &jti, format!("v1.{refresh}"));
    let mut body = me_json(call, &user);
    body["token"] = Value::String(token);
    body["refresh_token"] = Value::String(refresh);
    body["error"] = Value::Null;
    json_response(StatusCode::OK, &body)
}

fn me(call: &Call<'_>, user: &str) -> Response<SimBody> {
    json_response(StatusCode::OK, &me_json(call, user))
}

/// `user`, `account` and `organization`, as `GET /api/me` answers them.
fn me_json(call: &Call<'_>, user: &str) -> Value {
    let store = call.sim.store();
    let (email, full_name) = store
        .users
        .get(user)
        .map(|u| (u.email.clone(), u.full_name.clone()))
        .unwrap_or_default();
    let (first, last) = full_name.split_once(' ').unwrap_or((&full_name, ""));
    json!({
        "user": {
            "email": email,
            "first_name": first,
            "last_name": last,
            "resource_id": user,
            "organization_id": 1,
        },
        "account": { "id": "env-prod01", "name": "prod" },
        "organization": {
            "id": 1,
            "name": "keygate demo",
            "resource_id": call.sim.org_id(),
        },
    })
}

/// The user of a valid `Authorization: Bearer <session token>`.
pub(super) fn bearer_user(sim: &Simulator, headers: &http::HeaderMap) -> Option<String> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    sim.sessions.verify(token.trim())
}

impl Simulator {
    /// A session token for `user` that expires at `exp` (past or future), as `POST
    /// /api/sessions` would issue: for tests of expiry.
    pub fn session_token(&self, user: &str, exp: SystemTime) -> String {
        let jti = self.minter.hex_id().unwrap_or_default();
        self.sessions.token(user, self.org_id(), exp, &jti)
    }

    /// How long the session tokens issued from now on live.
    pub fn set_session_ttl(&self, ttl: std::time::Duration) {
        self.sessions.set_ttl(ttl);
    }
}
