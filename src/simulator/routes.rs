//! The simulator's request handling: record, maybe inject a fault, authenticate, route with a
//! plain `match` on method and path segments, and answer in Confluent's shapes.
//!
//! Every answer carries `X-Request-Id`; successes also carry `X-RateLimit-*`; every error is
//! `{"errors":[{id,status,code,title,detail,source?}]}` (docs/confluent-api.md §3). Handlers validate inputs
//! the way the real API does (422 `invalid_configuration` with a `source.pointer`, 400 for
//! unreadable JSON and bad filters). Of Confluent's RBAC they apply the rules for existing API
//! keys (docs/confluent-api.md §7): a key can be read, changed, deleted and listed by its owner, an
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

mod api_keys;
/// Largest JSON body an API route reads; Confluent's own bodies are a few hundred bytes.
mod error;
mod fields;
mod identities;
mod org;
mod query;
mod role_bindings;
mod sts;
mod support;
mod web;

use api_keys::*;
use error::*;
use fields::*;
use identities::*;
use org::*;
use query::*;
use role_bindings::*;
use support::*;
use web::*;

const API_BODY_LIMIT: usize = 1024 * 1024;
/// Request bodies up to this size are kept in the request log.
pub(crate) const LOG_BODY_LIMIT: usize = 64 * 1024;
/// `page_size` when the caller gives none (docs/confluent-api.md §2.5).
const DEFAULT_PAGE_SIZE: usize = 10;
/// Largest accepted `page_size` (docs/confluent-api.md §2.5).
const MAX_PAGE_SIZE: usize = 100;
/// Page tokens are opaque strings of at most this length (docs/confluent-api.md §2.5).
const MAX_PAGE_TOKEN_LEN: usize = 255;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The `WWW-Authenticate` value Confluent sends with a 401 (docs/confluent-api.md §3).
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
    let control = matches!(
        path,
        "/_simulator/requests" | "/_simulator/faults" | "/_simulator/stall"
    );
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
    if !control && sim.take_stall(&parts.method, path) {
        // Carried out, answer held back: an upstream that acted and has not answered yet.
        sim.hold().await;
    }
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
    // One simulator answers for Confluent's web host and its API host, by `Host`.
    let host = request_host(parts);
    let is_web = segs.first() == Some(&"api");
    match host.as_deref() {
        Some("confluent.cloud") if !is_web => return Err(not_found(path)),
        Some("api.confluent.cloud") if is_web => return Err(not_found(path)),
        _ => {}
    }
    if let ["api", rest @ ..] = segs.as_slice() {
        return web(&call, parts, rest);
    }
    if let ["sts", "v1", "oauth2", "token"] = segs.as_slice() {
        return sts::token_exchange(&call);
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

/// The host the request was sent to (`:authority` or `Host`), lower case, without the port.
fn request_host(parts: &Parts) -> Option<String> {
    let authority = match parts.uri.authority() {
        Some(authority) => authority.host().to_owned(),
        None => {
            let host = parts.headers.get(http::header::HOST)?.to_str().ok()?;
            let authority: http::uri::Authority = host.parse().ok()?;
            authority.host().to_owned()
        }
    };
    Some(authority.to_ascii_lowercase())
}

/// Checks `Authorization: Basic base64(key:secret)` against the live Cloud and Global keys, or
/// `Authorization: Bearer` against the live session tokens, and returns the caller (the key's
/// owner, the session's user). Anything else (no header, two headers, a resource-scoped key, an
/// expired or forged token) is 401.
fn authenticate(sim: &Simulator, headers: &http::HeaderMap) -> Result<String, ApiError> {
    if let Some(user) = bearer_user(sim, headers) {
        return Ok(user);
    }
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
