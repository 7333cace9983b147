//! Confluent-shaped errors (`{"errors":[…]}`) and the simulator's plain responses.

use super::*;

/// A Confluent-shaped error answer (docs/confluent-api.md §3).
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: String,
    source: Option<Value>,
    headers: Vec<(HeaderName, String)>,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: String,
    ) -> Self {
        Self {
            status,
            code,
            title,
            detail,
            source: None,
            headers: Vec::new(),
        }
    }

    pub(super) fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Bad Request",
            detail.into(),
        )
    }

    pub(super) fn invalid_filter(parameter: &str, detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_filter",
            "Invalid Filter",
            detail.into(),
        );
        e.source = Some(json!({ "parameter": parameter }));
        e
    }

    pub(super) fn unauthenticated() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "user_unauthenticated",
            "Authentication Required",
            "invalid API key: the API key or secret is not valid".to_owned(),
        );
        e.headers
            .push((WWW_AUTHENTICATE, INVALID_KEY_CHALLENGE.to_owned()));
        e
    }

    pub(super) fn forbidden() -> Self {
        let mut e = Self::new(
            StatusCode::FORBIDDEN,
            "forbidden_access",
            "Forbidden Access",
            "Forbidden Access".to_owned(),
        );
        e.source = Some(json!({}));
        e
    }

    pub(super) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not Found",
            detail.into(),
        )
    }

    pub(super) fn method_not_allowed(allow: &'static str) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method Not Allowed",
            format!("this resource supports {allow}"),
        );
        e.headers.push((ALLOW, allow.to_owned()));
        e
    }

    pub(super) fn conflict(detail: impl Into<String>, location: String) -> Self {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "resource_already_exists",
            "Resource Already Exists",
            detail.into(),
        );
        e.headers.push((LOCATION, location));
        e
    }

    pub(super) fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Payload Too Large",
            format!("request bodies are limited to {API_BODY_LIMIT} bytes"),
        )
    }

    /// 422 `invalid_configuration` pointing at a body member.
    pub(super) fn invalid(pointer: &str, detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_configuration",
            "Validation Failed",
            detail.into(),
        );
        e.source = Some(json!({ "pointer": pointer }));
        e
    }

    /// 422 `invalid_configuration` pointing at a query parameter.
    pub(super) fn invalid_parameter(parameter: &str, detail: impl Into<String>) -> Self {
        let mut e = Self::invalid("", detail);
        e.source = Some(json!({ "parameter": parameter }));
        e
    }

    pub(super) fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            "Internal Server Error",
            detail.into(),
        )
    }
}

impl From<RandomFailed> for ApiError {
    fn from(_: RandomFailed) -> Self {
        Self::internal("the simulator's random number generator failed")
    }
}

pub(super) fn error_response(sim: &Simulator, e: &ApiError) -> Response<SimBody> {
    let mut error = json!({
        "id": sim.minter.uuid().unwrap_or_default(),
        "status": e.status.as_str(),
        "code": e.code,
        "title": e.title,
        "detail": e.detail,
    });
    if let (Some(source), Some(obj)) = (&e.source, error.as_object_mut()) {
        obj.insert("source".to_owned(), source.clone());
    }
    let mut response = json_response(e.status, &json!({ "errors": [error] }));
    for (name, value) in &e.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            response.headers_mut().insert(name.clone(), v);
        }
    }
    response
}

pub(super) fn json_response(status: StatusCode, value: &Value) -> Response<SimBody> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(SimBody::full(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub(super) fn empty_response(status: StatusCode) -> Response<SimBody> {
    let mut response = Response::new(SimBody::empty());
    *response.status_mut() = status;
    response
}

pub(super) fn with_location(mut response: Response<SimBody>, location: &str) -> Response<SimBody> {
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, v);
    }
    response
}
