//! The simulator's request handling: record, maybe inject a fault, authenticate, route with a
//! plain `match` on method and path segments, and answer in Confluent's shapes.
//!
//! Every answer carries `X-Request-Id`; successes also carry `X-RateLimit-*`; every error is
//! `{"errors":[{id,status,code,title,detail,source?}]}` (reference §3). Handlers validate inputs
//! the way the real API does (422 `invalid_configuration` with a `source.pointer`, 400 for
//! unreadable JSON and bad filters). Of Confluent's RBAC they apply the rules for existing API
//! keys (reference §7): a key can be read, changed, deleted and listed by its owner, an
//! OrganizationAdmin or a ResourceOwner on its service account, and a key the caller may not
//! manage is 403 (list: left out). Everything else — creates included, which keygate's matrix
//! decides — any live Cloud or Global key may do. Paths are matched exactly as received, without
//! decoding or normalising.

// `ApiError` carries a `serde_json::Value` body, which grows when a dependency turns on
// serde_json's `preserve_order`; these are per-request error paths of a test simulator, where a
// box per error buys nothing.
#![allow(
    clippy::result_large_err,
    reason = "simulator error paths; size is irrelevant here"
)]

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::header::{
    ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{self, ReadBody, SimBody};
use super::render::{self, Ctx};
use super::secret::RandomFailed;
use super::store::{self, ApiKey, ResolveFailure, RoleBinding, ServiceAccount};
use super::{Fault, RecordedRequest, Simulator};

/// Largest JSON body an API route reads; Confluent's own bodies are a few hundred bytes.
const API_BODY_LIMIT: usize = 1024 * 1024;
/// Request bodies up to this size are kept in the request log.
pub(crate) const LOG_BODY_LIMIT: usize = 64 * 1024;
/// `page_size` when the caller gives none (reference §2.5).
const DEFAULT_PAGE_SIZE: usize = 10;
/// Largest accepted `page_size` (reference §2.5).
const MAX_PAGE_SIZE: usize = 100;
/// Page tokens are opaque strings of at most this length (reference §2.5).
const MAX_PAGE_TOKEN_LEN: usize = 255;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The `WWW-Authenticate` value Confluent sends with a 401 (reference §3).
const INVALID_KEY_CHALLENGE: &str =
    r#"Basic error="invalid_key", error_description="The API Key is invalid""#;

/// Handles one request end to end; never fails (errors become Confluent-shaped responses).
pub(crate) async fn handle<B>(sim: &Simulator, req: Request<B>) -> Response<SimBody>
where
    B: Body<Data = Bytes> + Unpin,
{
    let request_id = sim
        .minter
        .hex_id()
        .unwrap_or_else(|_| "00000000000000000000000000000000".to_owned());
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let is_echo = parts.method == Method::POST && path == "/_simulator/echo";
    let keep = if is_echo {
        LOG_BODY_LIMIT
    } else {
        API_BODY_LIMIT
    };
    let read = body::read(body, keep, is_echo).await;

    // Control endpoints are neither logged nor faulted, so reading the log does not change it
    // and a fault on `/` cannot lock tests out of clearing it.
    let control = path == "/_simulator/requests" || path == "/_simulator/faults";
    if !control {
        sim.record(record(&parts, &read));
    }
    let fault = if control {
        None
    } else {
        sim.take_fault(&parts.method, path)
    };
    let mut response = match fault {
        Some(fault) => fault_response(&fault),
        None => route(sim, &parts, &read).unwrap_or_else(|e| error_response(sim, &e)),
    };
    finish(sim, &mut response, &request_id);
    response
}

fn record(parts: &Parts, read: &ReadBody) -> RecordedRequest {
    let keep_body = !read.truncated && read.len <= LOG_BODY_LIMIT as u64;
    RecordedRequest {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        authority: parts.uri.authority().map(ToString::to_string),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect(),
        body_len: read.len,
        body: keep_body.then(|| read.kept.clone()),
    }
}

/// Adds `X-Request-Id` to every response and the rate-limit headers to successes, unless an
/// injected fault already set them.
fn finish(sim: &Simulator, response: &mut Response<SimBody>, request_id: &str) {
    let headers = response.headers_mut();
    if !headers.contains_key(X_REQUEST_ID) {
        if let Ok(v) = HeaderValue::from_str(request_id) {
            headers.insert(X_REQUEST_ID, v);
        }
    }
    if response.status().is_success() {
        let (limit, remaining, reset) = sim.rate_tick();
        let headers = response.headers_mut();
        for (name, value) in [
            (X_RATELIMIT_LIMIT, limit),
            (X_RATELIMIT_REMAINING, remaining),
            (X_RATELIMIT_RESET, reset),
        ] {
            if !headers.contains_key(&name) {
                headers.insert(name, HeaderValue::from(value));
            }
        }
    }
}

fn fault_response(fault: &Fault) -> Response<SimBody> {
    let mut response = Response::new(SimBody::full(fault.body.clone()));
    *response.status_mut() =
        StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &fault.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    response
}

// === ApiError ===

/// A Confluent-shaped error answer (reference §3).
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
    fn new(status: StatusCode, code: &'static str, title: &'static str, detail: String) -> Self {
        Self {
            status,
            code,
            title,
            detail,
            source: None,
            headers: Vec::new(),
        }
    }

    fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Bad Request",
            detail.into(),
        )
    }

    fn invalid_filter(parameter: &str, detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_filter",
            "Invalid Filter",
            detail.into(),
        );
        e.source = Some(json!({ "parameter": parameter }));
        e
    }

    fn unauthenticated() -> Self {
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

    fn forbidden() -> Self {
        let mut e = Self::new(
            StatusCode::FORBIDDEN,
            "forbidden_access",
            "Forbidden Access",
            "Forbidden Access".to_owned(),
        );
        e.source = Some(json!({}));
        e
    }

    fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not Found",
            detail.into(),
        )
    }

    fn method_not_allowed(allow: &'static str) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method Not Allowed",
            format!("this resource supports {allow}"),
        );
        e.headers.push((ALLOW, allow.to_owned()));
        e
    }

    fn conflict(detail: impl Into<String>, location: String) -> Self {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "resource_already_exists",
            "Resource Already Exists",
            detail.into(),
        );
        e.headers.push((LOCATION, location));
        e
    }

    fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Payload Too Large",
            format!("request bodies are limited to {API_BODY_LIMIT} bytes"),
        )
    }

    /// 422 `invalid_configuration` pointing at a body member.
    fn invalid(pointer: &str, detail: impl Into<String>) -> Self {
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
    fn invalid_parameter(parameter: &str, detail: impl Into<String>) -> Self {
        let mut e = Self::invalid("", detail);
        e.source = Some(json!({ "parameter": parameter }));
        e
    }

    fn internal(detail: impl Into<String>) -> Self {
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

fn error_response(sim: &Simulator, e: &ApiError) -> Response<SimBody> {
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

fn json_response(status: StatusCode, value: &Value) -> Response<SimBody> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(SimBody::full(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn empty_response(status: StatusCode) -> Response<SimBody> {
    let mut response = Response::new(SimBody::empty());
    *response.status_mut() = status;
    response
}

fn with_location(mut response: Response<SimBody>, location: &str) -> Response<SimBody> {
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, v);
    }
    response
}

// === Routing ===

/// Everything a handler needs about one request.
struct Call<'a> {
    sim: &'a Simulator,
    /// Who the credential belongs to (the owner of the API key it authenticated with).
    caller: String,
    method: &'a Method,
    query: Query,
    body: &'a ReadBody,
    ctx: Ctx<'a>,
}

fn route(sim: &Simulator, parts: &Parts, read: &ReadBody) -> Result<Response<SimBody>, ApiError> {
    let path = parts.uri.path();
    let base = sim.public_base();
    let mut call = Call {
        sim,
        caller: String::new(),
        method: &parts.method,
        query: Query::parse(parts.uri.query()),
        body: read,
        ctx: Ctx {
            base: &base,
            org: sim.org_id(),
        },
    };
    let lenient = sim.lenient_paths().then(|| lenient_segments(path));
    let segs: Vec<&str> = match &lenient {
        Some(segments) => segments.iter().map(String::as_str).collect(),
        None => path.strip_prefix('/').unwrap_or(path).split('/').collect(),
    };
    if read.failed {
        return Err(ApiError::bad_request("the request body could not be read"));
    }
    if let ["_simulator", rest @ ..] = segs.as_slice() {
        return support(&call, rest);
    }
    call.caller = authenticate(sim, &parts.headers)?;
    if read.truncated {
        return Err(ApiError::too_large());
    }
    let m = &parts.method;
    match (m, segs.as_slice()) {
        (&Method::GET, ["iam", "v2", "api-keys"]) => list_api_keys(&call),
        (&Method::POST, ["iam", "v2", "api-keys"]) => create_api_key(&call),
        (&Method::GET, ["iam", "v2", "api-keys", id]) if !id.is_empty() => get_api_key(&call, id),
        (&Method::PATCH, ["iam", "v2", "api-keys", id]) if !id.is_empty() => {
            patch_api_key(&call, id)
        }
        (&Method::DELETE, ["iam", "v2", "api-keys", id]) if !id.is_empty() => {
            delete_api_key(&call, id)
        }
        (&Method::GET, ["iam", "v2", "role-bindings"]) => list_role_bindings(&call),
        (&Method::POST, ["iam", "v2", "role-bindings"]) => create_role_binding(&call),
        (&Method::GET, ["iam", "v2", "role-bindings", id]) if !id.is_empty() => {
            get_role_binding(&call, id)
        }
        (&Method::DELETE, ["iam", "v2", "role-bindings", id]) if !id.is_empty() => {
            delete_role_binding(&call, id)
        }
        (&Method::GET, ["iam", "v2", "service-accounts"]) => list_service_accounts(&call),
        (&Method::POST, ["iam", "v2", "service-accounts"]) => create_service_account(&call),
        (&Method::GET, ["iam", "v2", "service-accounts", id]) if !id.is_empty() => {
            get_service_account(&call, id)
        }
        (&Method::PATCH, ["iam", "v2", "service-accounts", id]) if !id.is_empty() => {
            patch_service_account(&call, id)
        }
        (&Method::DELETE, ["iam", "v2", "service-accounts", id]) if !id.is_empty() => {
            delete_identity(&call, id, IdentityKind::ServiceAccount)
        }
        (&Method::GET, ["iam", "v2", "users"]) => list_users(&call),
        (&Method::GET, ["iam", "v2", "users", id]) if !id.is_empty() => get_user(&call, id),
        (&Method::PATCH, ["iam", "v2", "users", id]) if !id.is_empty() => patch_user(&call, id),
        (&Method::DELETE, ["iam", "v2", "users", id]) if !id.is_empty() => {
            delete_identity(&call, id, IdentityKind::User)
        }
        (&Method::GET, ["org", "v2", "environments"]) => list_environments(&call),
        (&Method::GET, ["org", "v2", "environments", id]) if !id.is_empty() => {
            get_environment(&call, id)
        }
        (&Method::GET, [api, version, "clusters"]) => {
            let family = ClusterFamily::of(api, version).ok_or_else(|| not_found(path))?;
            list_clusters(&call, family)
        }
        (&Method::GET, [api, version, "clusters", id]) if !id.is_empty() => {
            let family = ClusterFamily::of(api, version).ok_or_else(|| not_found(path))?;
            get_cluster(&call, family, id)
        }
        _ => Err(match allowed_methods(&segs) {
            Some(allow) => ApiError::method_not_allowed(allow),
            None => not_found(path),
        }),
    }
}

fn not_found(path: &str) -> ApiError {
    ApiError::not_found(format!("no resource at `{path}`"))
}

/// The methods a known path supports, for 405 answers; `None` for unknown paths.
fn allowed_methods(segs: &[&str]) -> Option<&'static str> {
    match segs {
        ["iam", "v2", "api-keys" | "role-bindings" | "service-accounts"] => Some("GET, POST"),
        ["iam", "v2", "api-keys" | "service-accounts" | "users", id] if !id.is_empty() => {
            Some("GET, PATCH, DELETE")
        }
        ["iam", "v2", "role-bindings", id] if !id.is_empty() => Some("GET, DELETE"),
        ["iam", "v2", "users"] | ["org", "v2", "environments"] => Some("GET"),
        ["org", "v2", "environments", id] if !id.is_empty() => Some("GET"),
        [api, version, "clusters"] if ClusterFamily::of(api, version).is_some() => Some("GET"),
        [api, version, "clusters", id]
            if !id.is_empty() && ClusterFamily::of(api, version).is_some() =>
        {
            Some("GET")
        }
        _ => None,
    }
}

/// Checks `Authorization: Basic base64(key:secret)` against the live Cloud and Global keys and
/// returns the caller (the key's owner). Anything else (no header, two headers, Bearer, a
/// resource-scoped key) is 401.
fn authenticate(sim: &Simulator, headers: &http::HeaderMap) -> Result<String, ApiError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::unauthenticated());
    };
    let credentials = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b64)| STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .ok_or_else(ApiError::unauthenticated)?;
    let (key, secret) = credentials
        .split_once(':')
        .ok_or_else(ApiError::unauthenticated)?;
    let store = sim.store();
    match store.key_owner(key) {
        Some(owner) if store.authenticates(key, secret) => Ok(owner.to_owned()),
        _ => Err(ApiError::unauthenticated()),
    }
}

// === Query strings and pagination ===

/// Decoded query parameters, in order; the first occurrence of a name wins.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Query(pairs)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, bad escapes stay literal.
/// The segments a lenient stack routes on: the reading of `keygate::guard::lenient` that is a
/// governed path if there is one (else the first), with the fixed prefix segments lowercased.
fn lenient_segments(path: &str) -> Vec<String> {
    let model = crate::guard::lenient::read(path.as_bytes());
    let prefix: [&[u8]; 3] = [b"iam", b"v2", b"api-keys"];
    let readings = model.readings();
    let reading = readings
        .iter()
        .find(|r| r.len() >= 3 && r.iter().zip(prefix).all(|(s, p)| s.eq_ignore_ascii_case(p)))
        .or(readings.first());
    reading
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(at, segment)| {
            let text = String::from_utf8_lossy(segment);
            if at < 3 {
                text.to_ascii_lowercase()
            } else {
                text.into_owned()
            }
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push_str(&crate::id::hex(&[b]).to_ascii_uppercase());
        }
    }
    out
}

/// One page of a list, with the `metadata` block Confluent sends (absolute `first`/`next`).
struct Listing<'a> {
    path: &'a str,
    api_version: &'a str,
    kind: &'a str,
    /// The filters the caller gave, repeated in the links.
    filters: Vec<(&'a str, &'a str)>,
}

impl Listing<'_> {
    /// Renders the page the caller asked for; `items` are `(id, object)` sorted by id.
    fn respond<T>(
        &self,
        call: &Call<'_>,
        items: &[(&str, T)],
        render: impl Fn(&T) -> Value,
    ) -> Result<Response<SimBody>, ApiError> {
        let page_size = match call.query.get("page_size") {
            None => DEFAULT_PAGE_SIZE,
            Some(raw) => raw
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid_filter(
                        "page_size",
                        format!("page_size must be between 1 and {MAX_PAGE_SIZE}"),
                    )
                })?,
        };
        let after = match call.query.get("page_token") {
            None => None,
            Some(token) => Some(decode_page_token(token).ok_or_else(|| {
                ApiError::invalid_filter("page_token", "page_token is not valid")
            })?),
        };
        // Keyset pagination: a page starts after the last id of the previous one, so objects
        // created or deleted between pages neither repeat nor vanish.
        let start = after.map_or(0, |after| {
            items.partition_point(|(id, _)| *id <= after.as_str())
        });
        let end = (start + page_size).min(items.len());
        let page = &items[start..end];
        let mut metadata = json!({
            "first": self.link(call, None),
            "total_size": items.len(),
        });
        if end < items.len() {
            if let (Some((last, _)), Some(obj)) = (page.last(), metadata.as_object_mut()) {
                let token = URL_SAFE_NO_PAD.encode(last.as_bytes());
                obj.insert("next".to_owned(), json!(self.link(call, Some(&token))));
            }
        }
        let data: Vec<Value> = page.iter().map(|(_, item)| render(item)).collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "api_version": self.api_version,
                "kind": self.kind,
                "metadata": metadata,
                "data": data,
            }),
        ))
    }

    fn link(&self, call: &Call<'_>, token: Option<&str>) -> String {
        let mut pairs: Vec<(&str, &str)> = self.filters.clone();
        if let Some(size) = call.query.get("page_size") {
            pairs.push(("page_size", size));
        }
        if let Some(token) = token {
            pairs.push(("page_token", token));
        }
        let query: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect();
        let mut link = call.ctx.link(self.path);
        if !query.is_empty() {
            link.push('?');
            link.push_str(&query.join("&"));
        }
        link
    }
}

fn decode_page_token(token: &str) -> Option<String> {
    if token.is_empty() || token.len() > MAX_PAGE_TOKEN_LEN {
        return None;
    }
    String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()
}

/// The caller's filters that are present, as `(name, value)` pairs.
fn present<'a>(call: &'a Call<'_>, names: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    names
        .iter()
        .filter_map(|n| call.query.get(n).map(|v| (*n, v)))
        .collect()
}

// === JSON body helpers ===

fn parse_object(body: &ReadBody) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(&body.kept) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: line {} column {}",
            e.line(),
            e.column()
        ))),
    }
}

/// An optional string member; `null` counts as absent.
fn opt_str<'a>(
    obj: &'a serde_json::Map<String, Value>,
    name: &str,
    pointer: &str,
) -> Result<Option<&'a str>, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(
            pointer,
            format!("`{name}` must be a string"),
        )),
    }
}

/// A required, non-empty string member.
fn req_str<'a>(
    obj: &'a serde_json::Map<String, Value>,
    name: &str,
    pointer: &str,
) -> Result<&'a str, ApiError> {
    opt_str(obj, name, pointer)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::invalid(pointer, format!("`{name}` is required")))
}

/// An optional object member; `null` counts as absent.
fn opt_obj<'a>(
    obj: &'a serde_json::Map<String, Value>,
    name: &str,
    pointer: &str,
) -> Result<Option<&'a serde_json::Map<String, Value>>, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(ApiError::invalid(
            pointer,
            format!("`{name}` must be an object"),
        )),
    }
}

// === /iam/v2/api-keys ===

fn list_api_keys(call: &Call<'_>) -> Result<Response<SimBody>, ApiError> {
    let owner = call.query.get("spec.owner");
    let resource = call.query.get("spec.resource");
    let store = call.sim.store();
    let items: Vec<(&str, &ApiKey)> = store
        .api_keys
        .values()
        .filter(|k| owner.is_none_or(|o| k.owner == o))
        .filter(|k| resource.is_none_or(|r| k.resource.id() == r))
        .filter(|k| store.may_manage_key(&call.caller, k, call.ctx.org))
        .map(|k| (k.id.as_str(), k))
        .collect();
    Listing {
        path: "/iam/v2/api-keys",
        api_version: "iam/v2",
        kind: "ApiKeyList",
        filters: present(call, &["spec.owner", "spec.resource"]),
    }
    .respond(call, &items, |k| render::api_key(&call.ctx, k, None))
}

fn create_api_key(call: &Call<'_>) -> Result<Response<SimBody>, ApiError> {
    let doc = parse_object(call.body)?;
    let spec = opt_obj(&doc, "spec", "/spec")?
        .ok_or_else(|| ApiError::invalid("/spec", "`spec` is required"))?;
    let owner = opt_obj(spec, "owner", "/spec/owner")?
        .ok_or_else(|| ApiError::invalid("/spec/owner/id", "`spec.owner.id` is required"))?;
    let owner = req_str(owner, "id", "/spec/owner/id")?;
    let display_name = opt_str(spec, "display_name", "/spec/display_name")?.unwrap_or("");
    let description = opt_str(spec, "description", "/spec/description")?.unwrap_or("");

    // An absent or null `resource` is a Cloud key; the older `resources[]` form is tolerated.
    let (resource, pointer) = match opt_obj(spec, "resource", "/spec/resource")? {
        Some(r) => (Some(r), "/spec/resource"),
        None => match spec.get("resources").and_then(Value::as_array) {
            Some(list) if !list.is_empty() => match list.first() {
                Some(Value::Object(r)) => (Some(r), "/spec/resources/0"),
                _ => {
                    return Err(ApiError::invalid(
                        "/spec/resources/0",
                        "`resources[0]` must be an object",
                    ))
                }
            },
            _ => (None, "/spec/resource"),
        },
    };
    let (resource_id, environment) = match resource {
        None => ("cloud", None),
        Some(r) => (
            req_str(r, "id", &format!("{pointer}/id"))?,
            opt_str(r, "environment", &format!("{pointer}/environment"))?.filter(|e| !e.is_empty()),
        ),
    };

    let mut store = call.sim.store();
    if !store.identity_exists(owner) {
        return Err(ApiError::invalid(
            "/spec/owner/id",
            format!("owner `{owner}` does not exist"),
        ));
    }
    let resource =
        store
            .resolve_resource(resource_id, environment)
            .map_err(|failure| match failure {
                ResolveFailure::Unknown => ApiError::invalid(
                    &format!("{pointer}/id"),
                    format!("resource `{resource_id}` does not exist"),
                ),
                ResolveFailure::MissingEnvironment => ApiError::invalid(
                    &format!("{pointer}/environment"),
                    format!("a Flink key for `{resource_id}` needs `environment`"),
                ),
                ResolveFailure::UnknownEnvironment => ApiError::invalid(
                    &format!("{pointer}/environment"),
                    format!(
                        "environment `{}` does not exist",
                        environment.unwrap_or_default()
                    ),
                ),
            })?;
    let id = loop {
        let id = call.sim.minter.key_id()?;
        if !store.api_keys.contains_key(&id) {
            break id;
        }
    };
    let secret = call.sim.minter.secret()?;
    let now = store::now();
    let key = ApiKey {
        id: id.clone(),
        digest: super::secret::SecretDigest::of(&secret),
        owner: owner.to_owned(),
        resource,
        display_name: display_name.to_owned(),
        description: description.to_owned(),
        created_at: now.clone(),
        updated_at: now,
    };
    let body = render::api_key(&call.ctx, &key, Some(&secret));
    store.api_keys.insert(id.clone(), key);
    drop(store);
    let location = call.ctx.link(&format!("/iam/v2/api-keys/{id}"));
    Ok(with_location(
        json_response(StatusCode::ACCEPTED, &body),
        &location,
    ))
}

/// A key the caller may manage (reference §7); 404 when it does not exist, 403 when the caller
/// may not touch it.
fn managed_key<'s>(
    call: &Call<'_>,
    store: &'s super::store::Store,
    id: &str,
) -> Result<&'s ApiKey, ApiError> {
    let key = store
        .api_keys
        .get(id)
        .ok_or_else(|| missing("API key", id))?;
    if store.may_manage_key(&call.caller, key, call.ctx.org) {
        Ok(key)
    } else {
        Err(ApiError::forbidden())
    }
}

fn get_api_key(call: &Call<'_>, id: &str) -> Result<Response<SimBody>, ApiError> {
    let store = call.sim.store();
    let key = managed_key(call, &store, id)?;
    Ok(json_response(
        StatusCode::OK,
        &render::api_key(&call.ctx, key, None),
    ))
}

fn missing(what: &str, id: &str) -> ApiError {
    ApiError::not_found(format!("{what} `{id}` was not found"))
}

/// PATCH: only `spec.display_name` and `spec.description` may change (reference §2.6).
fn patch_api_key(call: &Call<'_>, id: &str) -> Result<Response<SimBody>, ApiError> {
    let doc = parse_object(call.body)?;
    let empty = serde_json::Map::new();
    let spec = opt_obj(&doc, "spec", "/spec")?.unwrap_or(&empty);
    for field in ["owner", "resource", "resources", "secret"] {
        if spec.get(field).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid(
                &format!("/spec/{field}"),
                format!(
                    "`spec.{field}` is immutable; only display_name and description can be updated"
                ),
            ));
        }
    }
    let display_name = opt_str(spec, "display_name", "/spec/display_name")?;
    let description = opt_str(spec, "description", "/spec/description")?;
    let mut store = call.sim.store();
    managed_key(call, &store, id)?;
    let key = store
        .api_keys
        .get_mut(id)
        .ok_or_else(|| missing("API key", id))?;
    if let Some(name) = display_name {
        key.display_name = name.to_owned();
    }
    if let Some(text) = description {
        key.description = text.to_owned();
    }
    key.updated_at = store::now();
    Ok(json_response(
        StatusCode::OK,
        &render::api_key(&call.ctx, key, None),
    ))
}

fn delete_api_key(call: &Call<'_>, id: &str) -> Result<Response<SimBody>, ApiError> {
    let mut store = call.sim.store();
    managed_key(call, &store, id)?;
    match store.api_keys.remove(id) {
        Some(_) => Ok(empty_response(StatusCode::NO_CONTENT)),
        None => Err(missing("API key", id)),
    }
}

// === /iam/v2/role-bindings ===

fn list_role_bindings(call: &Call<'_>) -> Result<Response<SimBody>, ApiError> {
    let crn = call.query.get("crn_pattern").ok_or_else(|| {
        ApiError::invalid_filter("crn_pattern", "the crn_pattern query parameter is required")
    })?;
    let principal = call.query.get("principal");
    let role = call.query.get("role_name");
    let store = call.sim.store();
    let items: Vec<(&str, &RoleBinding)> = store
        .role_bindings
        .values()
        .filter(|rb| rb.crn_pattern.contains(crn))
        .filter(|rb| principal.is_none_or(|p| rb.principal == p))
        .filter(|rb| role.is_none_or(|r| rb.role_name == r))
        .map(|rb| (rb.id.as_str(), rb))
        .collect();
    Listing {
        path: "/iam/v2/role-bindings",
        api_version: "iam/v2",
        kind: "RoleBindingList",
        filters: present(call, &["crn_pattern", "principal", "role_name"]),
    }
    .respond(call, &items, |rb| render::role_binding(&call.ctx, rb))
}

fn create_role_binding(call: &Call<'_>) -> Result<Response<SimBody>, ApiError> {
    let doc = parse_object(call.body)?;
    let principal = req_str(&doc, "principal", "/principal")?;
    if principal.strip_prefix("User:").is_none_or(str::is_empty) {
        return Err(ApiError::invalid(
            "/principal",
            format!("principal `{principal}` must look like `User:<id>`"),
        ));
    }
    let role_name = req_str(&doc, "role_name", "/role_name")?;
    let crn_pattern = req_str(&doc, "crn_pattern", "/crn_pattern")?;
    if !crn_pattern.starts_with("crn://") {
        return Err(ApiError::invalid(
            "/crn_pattern",
            "`crn_pattern` must start with `crn://`",
        ));
    }
    let mut store = call.sim.store();
    if let Some(existing) = store.role_bindings.values().find(|rb| {
        rb.principal == principal && rb.role_name == role_name && rb.crn_pattern == crn_pattern
    }) {
        return Err(ApiError::conflict(
            format!("role binding `{}` already grants this", existing.id),
            call.ctx
                .link(&format!("/iam/v2/role-bindings/{}", existing.id)),
        ));
    }
    let id = loop {
        let id = call.sim.minter.object_id("rb-")?;
        if !store.role_bindings.contains_key(&id) {
            break id;
        }
    };
    let binding = RoleBinding {
        id: id.clone(),
        principal: principal.to_owned(),
        role_name: role_name.to_owned(),
        crn_pattern: crn_pattern.to_owned(),
    };
    let body = render::role_binding(&call.ctx, &binding);
    store.role_bindings.insert(id.clone(), binding);
    drop(store);
    let location = call.ctx.link(&format!("/iam/v2/role-bindings/{id}"));
    Ok(with_location(
        json_response(StatusCode::CREATED, &body),
        &location,
    ))
}

fn get_role_binding(call: &Call<'_>, id: &str) -> Result<Response<SimBody>, ApiError> {
    let store = call.sim.store();
    let rb = store
        .role_bindings
        .get(id)
        .ok_or_else(|| missing("role binding", id))?;
    Ok(json_response(
        StatusCode::OK,
        &render::role_binding(&call.ctx, rb),
    ))
}

/// DELETE answers 200 with the deleted binding (reference §1).
fn delete_role_binding(call: &Call<'_>, id: &str) -> Result<Response<SimBody>, ApiError> {
    let rb = call
        .sim
        .store()
        .role_bindings
        .remove(id)
        .ok_or_else(|| missing("role binding", id))?;
    Ok(json_response(
        StatusCode::OK,
        &render::role_binding(&call.ctx, &rb),
    ))
}

// === /iam/v2/service-accounts and /iam/v2/users ===

fn list_service_accounts(call: &Call<'_>) -> Result<Response<SimBody>, ApiError> {
    let store = call.sim.store();
    let items: Vec<(&str, &ServiceAccount)> = store
        .service_accounts
        .values()
        .map(|s| (s.id.as_str(), s))
        .collect();
    Listing {
        path: "/iam/v2/service-accounts",
        api_version: "iam/v2",
        kind: "ServiceAccountList",
        filters: Vec::new(),
    }
    .respond(call, &items, |s| render::service_account(&call.ctx, s))
}

/// POST, optionally with `?assigned_resource_owner=<principal id>`, which atomically grants
/// that principal ResourceOwner on the new account (reference §6).
fn create_service_account(call: &Call<'_>) -> Result<Response<SimBody>, ApiError> {
    let doc = parse_object(call.body)?;
    let display_name = req_str(&doc, "display_name", "/display_name")?;
    let description = opt_str(&doc, "description", "/description")?.unwrap_or("");
    let owner = call.query.get("assigned_resource_owner");
    let mut store = call.sim.store();
    if let Some(owner) = owner {
        if !store.identity_exists(owner) {
            return Err(ApiError::invalid_parameter(
                "assigned_resource_owner",
                format!("principal `{owner}` does not exist"),
            ));
        }
    }
    if let Some(existing) = store
        .service_accounts
        .values()
        .find(|s| s.display_name == display_name)
    {
        return Err(ApiError::conflict(
            format!("service account name `{display_name}` is already in use"),
            call.ctx
                .link(&format!("/iam/v2/service-accounts/{}", existing.id)),
        ));
    }
    let id = loop {
        let id = call.sim.minter.object_id("sa-")?;
        if !store.identity_exists(&id) {
            break id;
        }
    };
    let binding_id = match owner {
        Some(_) => Some(loop {
            let rb = call.sim.minter.object_id("rb-")?;
            if !store.role_bindings.contains_key(&rb) {
                break rb;
            }
        }),
        None => None,
    };
    let now = store::now();
    let sa = ServiceAccount {
        id: id.clone(),
        display_name: display_name.to_owned(),
        description: description.to_owned(),
        created_at: now.clone(),
        updated_at: now,
    };
    let body = render::service_account(&call.ctx, &sa);
    store.service_accounts.insert(id.clone(), sa);
    if let (Some(owner), Some(rb)) = (owner, binding_id) {
        let binding = RoleBinding {
            id: rb.clone(),
            principal: format!("User:{owner}"),
            role_name: "ResourceOwner".to_owned(),
            crn_pattern: call.ctx.identity_crn(&id),
        };
        store.role_bindings.insert(rb, binding);
    }
    Ok(json_response(StatusCode::CREATED, &body))
}

fn get_service_account(call: &Call<'_>, id: &str) -> Result<Response<SimBody>, ApiError> {
    let store = call.sim.store();
    let sa = store
        .service_accounts
        .get(id)
        .ok_or_else(|| missing("service account", id))?;
    Ok(json_response(
        StatusCode::OK,
        &render::service_account(&call.ctx, sa),
    ))
}

fn patch_service_account(call: &Call<'_>, id: &str) -> Result<Response<SimBody>, ApiError> {
    let doc = parse_object(call.body)?;
    let display_name = opt_str(&doc, "display_name", "/display_name")?;
    if display_name == Some("") {
        return Err(ApiError::invalid(
            "/display_name",
            "`display_name` cannot be empty",
        ));
    }
    let description = opt_str(&doc, "description", "/description")?;
    let mut store = call.sim.store();
    if !store.service_accounts.contains_key(id) {
        return Err(missing("service account", id));
    }
    if let Some(name) = display_name {
        if let Some(other) = store
            .service_accounts
            .values()
            .find(|s| s.display_name == name && s.id != id)
        {
            return Err(ApiError::conflict(
                format!("service account name `{name}` is already in use"),
                call.ctx
                    .link(&format!("/iam/v2/service-accounts/{}", other.id)),
            ));
        }
    }
    let sa = store
        .service_accounts
        .get_mut(id)
        .ok_or_else(|| missing("service account", id))?;
    if let Some(name) = display_name {
        sa.display_name = name.to_owned();
    }
    if let Some(text) = description {
        sa.description = text.to_owned();
    }
    sa.updated_at = store::now();
    Ok(json_response(
        StatusCode::OK,
        &render::service_account(&call.ctx, sa),
    ))
}

fn list_users(call: &Call<'_>) -> Result<Response<SimBody>, ApiError> {
    let store = call.sim.store();
    let items: Vec<(&str, &store::User)> =
        store.users.values().map(|u| (u.id.as_str(), u)).collect();
    Listing {
        path: "/iam/v2/users",
        api_version: "iam/v2",
        kind: "UserList",
        filters: Vec::new(),
    }
    .respond(call, &items, |u| render::user(&call.ctx, u))
}

fn get_user(call: &Call<'_>, id: &str) -> Result<Response<SimBody>, ApiError> {
    let store = call.sim.store();
    let user = store.users.get(id).ok_or_else(|| missing("user", id))?;
    Ok(json_response(
        StatusCode::OK,
        &render::user(&call.ctx, user),
    ))
}

fn patch_user(call: &Call<'_>, id: &str) -> Result<Response<SimBody>, ApiError> {
    let doc = parse_object(call.body)?;
    let full_name = opt_str(&doc, "full_name", "/full_name")?;
    let mut store = call.sim.store();
    let user = store.users.get_mut(id).ok_or_else(|| missing("user", id))?;
    if let Some(name) = full_name {
        user.full_name = name.to_owned();
    }
    user.updated_at = store::now();
    Ok(json_response(
        StatusCode::OK,
        &render::user(&call.ctx, user),
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum IdentityKind {
    User,
    ServiceAccount,
}

/// DELETE of a user or service account: 204, and its keys and bindings go with it.
fn delete_identity(
    call: &Call<'_>,
    id: &str,
    kind: IdentityKind,
) -> Result<Response<SimBody>, ApiError> {
    let mut store = call.sim.store();
    let (exists, what) = match kind {
        IdentityKind::User => (store.users.contains_key(id), "user"),
        IdentityKind::ServiceAccount => {
            (store.service_accounts.contains_key(id), "service account")
        }
    };
    if !exists {
        return Err(missing(what, id));
    }
    store.delete_identity(id, &call.ctx.identity_crn(id));
    Ok(empty_response(StatusCode::NO_CONTENT))
}

// === /org/v2/environments and the cluster APIs ===

fn list_environments(call: &Call<'_>) -> Result<Response<SimBody>, ApiError> {
    let store = call.sim.store();
    let items: Vec<(&str, &store::Environment)> = store
        .environments
        .values()
        .map(|e| (e.id.as_str(), e))
        .collect();
    Listing {
        path: "/org/v2/environments",
        api_version: "org/v2",
        kind: "EnvironmentList",
        filters: Vec::new(),
    }
    .respond(call, &items, |e| render::environment(&call.ctx, e))
}

fn get_environment(call: &Call<'_>, id: &str) -> Result<Response<SimBody>, ApiError> {
    let store = call.sim.store();
    let env = store
        .environments
        .get(id)
        .ok_or_else(|| missing("environment", id))?;
    Ok(json_response(
        StatusCode::OK,
        &render::environment(&call.ctx, env),
    ))
}

/// Which cluster API a path belongs to.
#[derive(Clone, Copy)]
enum ClusterFamily {
    Kafka,
    SchemaRegistry,
    Ksql,
}

impl ClusterFamily {
    fn of(api: &str, version: &str) -> Option<Self> {
        match (api, version) {
            ("cmk", "v2") => Some(Self::Kafka),
            ("srcm", "v3") => Some(Self::SchemaRegistry),
            ("ksqldbcm", "v2") => Some(Self::Ksql),
            _ => None,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Kafka => "/cmk/v2/clusters",
            Self::SchemaRegistry => "/srcm/v3/clusters",
            Self::Ksql => "/ksqldbcm/v2/clusters",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Self::Kafka => "cmk/v2",
            Self::SchemaRegistry => "srcm/v3",
            Self::Ksql => "ksqldbcm/v2",
        }
    }
}

/// The required `environment` query parameter of the cluster APIs.
fn environment_param<'a>(call: &'a Call<'_>) -> Result<&'a str, ApiError> {
    call.query
        .get("environment")
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_filter("environment", "the environment query parameter is required")
        })
}

/// Lists one environment's clusters; an unknown environment is 403, as Confluent answers.
fn list_clusters(call: &Call<'_>, family: ClusterFamily) -> Result<Response<SimBody>, ApiError> {
    let env = environment_param(call)?;
    let store = call.sim.store();
    if !store.environments.contains_key(env) {
        return Err(ApiError::forbidden());
    }
    let listing = Listing {
        path: family.path(),
        api_version: family.api_version(),
        kind: "ClusterList",
        filters: vec![("environment", env)],
    };
    match family {
        ClusterFamily::Kafka | ClusterFamily::SchemaRegistry => {
            let map = match family {
                ClusterFamily::Kafka => &store.kafka_clusters,
                _ => &store.schema_registries,
            };
            let items: Vec<(&str, &store::Cluster)> = map
                .values()
                .filter(|c| c.environment == env)
                .map(|c| (c.id.as_str(), c))
                .collect();
            listing.respond(call, &items, |c| match family {
                ClusterFamily::Kafka => render::kafka_cluster(&call.ctx, c),
                _ => render::schema_registry(&call.ctx, c),
            })
        }
        ClusterFamily::Ksql => {
            let items: Vec<(&str, &store::KsqlCluster)> = store
                .ksqldb_clusters
                .values()
                .filter(|k| k.environment == env)
                .map(|k| (k.id.as_str(), k))
                .collect();
            listing.respond(call, &items, |k| {
                render::ksqldb_cluster(&call.ctx, k, store.kafka_clusters.get(&k.kafka_cluster))
            })
        }
    }
}

fn get_cluster(
    call: &Call<'_>,
    family: ClusterFamily,
    id: &str,
) -> Result<Response<SimBody>, ApiError> {
    let env = environment_param(call)?;
    let store = call.sim.store();
    let body = match family {
        ClusterFamily::Kafka => store
            .kafka_clusters
            .get(id)
            .filter(|c| c.environment == env)
            .map(|c| render::kafka_cluster(&call.ctx, c)),
        ClusterFamily::SchemaRegistry => store
            .schema_registries
            .get(id)
            .filter(|c| c.environment == env)
            .map(|c| render::schema_registry(&call.ctx, c)),
        ClusterFamily::Ksql => store
            .ksqldb_clusters
            .get(id)
            .filter(|k| k.environment == env)
            .map(|k| {
                render::ksqldb_cluster(&call.ctx, k, store.kafka_clusters.get(&k.kafka_cluster))
            }),
    };
    let body = body.ok_or_else(|| missing("cluster", id))?;
    Ok(json_response(StatusCode::OK, &body))
}

// === /_simulator test support ===

/// Body of `POST /_simulator/faults`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    #[serde(default)]
    method: Option<String>,
    path_prefix: String,
    status: u16,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
    #[serde(default = "one")]
    times: u32,
}

fn one() -> u32 {
    1
}

fn support(call: &Call<'_>, rest: &[&str]) -> Result<Response<SimBody>, ApiError> {
    match (call.method, rest) {
        (&Method::GET, ["requests"]) => {
            let log: Vec<Value> = call.sim.requests().iter().map(recorded_json).collect();
            Ok(json_response(StatusCode::OK, &Value::Array(log)))
        }
        (&Method::DELETE, ["requests"]) => {
            call.sim.clear_requests();
            Ok(empty_response(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["faults"]) => {
            let spec: FaultSpec = serde_json::from_slice(&call.body.kept)
                .map_err(|e| ApiError::bad_request(format!("invalid fault: {e}")))?;
            call.sim.inject_fault(fault_from_spec(spec)?);
            Ok(empty_response(StatusCode::NO_CONTENT))
        }
        (&Method::DELETE, ["faults"]) => {
            call.sim.clear_faults();
            Ok(empty_response(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["echo"]) => {
            // INVARIANT: `handle` hashes every echo body.
            let sha = call
                .body
                .sha256
                .ok_or_else(|| ApiError::internal("the echo body was not hashed"))?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "bytes": call.body.len, "sha256": crate::id::hex(sha.as_ref()) }),
            ))
        }
        (&Method::GET, ["blob"]) => {
            let len = call
                .query
                .get("bytes")
                .and_then(|b| b.parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::invalid_filter("bytes", "bytes must be a non-negative integer")
                })?;
            let mut response = Response::new(SimBody::blob(len));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(len));
            Ok(response)
        }
        (&Method::GET, ["links"]) => {
            // A JSON array of `count` absolute links to this simulator's own api-keys, streamed
            // (tens of MiB if asked): what a proxy must rewrite without buffering.
            let count = call
                .query
                .get("count")
                .and_then(|c| c.parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::invalid_filter("count", "count must be a non-negative integer")
                })?;
            let item = format!("\"{}/iam/v2/api-keys/LINK0000000001\",", call.ctx.base);
            let body = SimBody::repeat("[", &item, count, "0]");
            let length = http_body::Body::size_hint(&body).exact().unwrap_or(0);
            let mut response = Response::new(body);
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(length));
            Ok(response)
        }
        (_, ["requests" | "faults"]) => Err(ApiError::method_not_allowed("GET, POST, DELETE")),
        (_, ["echo"]) => Err(ApiError::method_not_allowed("POST")),
        (_, ["blob" | "links"]) => Err(ApiError::method_not_allowed("GET")),
        _ => Err(ApiError::not_found("unknown simulator endpoint")),
    }
}

fn fault_from_spec(spec: FaultSpec) -> Result<Fault, ApiError> {
    let method = spec
        .method
        .map(|m| Method::from_bytes(m.as_bytes()))
        .transpose()
        .map_err(|_| ApiError::invalid("/method", "`method` is not an HTTP method"))?;
    if StatusCode::from_u16(spec.status).is_err() {
        return Err(ApiError::invalid("/status", "`status` must be 100..=999"));
    }
    for (name, value) in &spec.headers {
        if HeaderName::from_bytes(name.as_bytes()).is_err() || HeaderValue::from_str(value).is_err()
        {
            return Err(ApiError::invalid(
                "/headers",
                format!("invalid header `{name}`"),
            ));
        }
    }
    Ok(Fault {
        method,
        path_prefix: spec.path_prefix,
        status: spec.status,
        headers: spec.headers,
        body: spec.body,
        times: spec.times,
    })
}

/// One request-log entry as JSON; the body appears as base64 and, when it is UTF-8, as text.
fn recorded_json(r: &RecordedRequest) -> Value {
    let headers: Vec<Value> = r.headers.iter().map(|(n, v)| json!([n, v])).collect();
    json!({
        "method": r.method,
        "path_and_query": r.path_and_query,
        "authority": r.authority,
        "version": r.version,
        "headers": headers,
        "body_len": r.body_len,
        "body_base64": r.body.as_ref().map(|b| STANDARD.encode(b)),
        "body_text": r.body.as_ref().and_then(|b| std::str::from_utf8(b).ok()),
    })
}
