//! `/_simulator/…`: the request log, injected faults, and echo, blob and link bodies for
//! transparency tests.

use super::*;

/// Body of `POST /_simulator/faults`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FaultSpec {
    #[serde(default)]
    pub(super) method: Option<String>,
    pub(super) path_prefix: String,
    pub(super) status: u16,
    #[serde(default)]
    pub(super) headers: Vec<(String, String)>,
    #[serde(default)]
    pub(super) body: String,
    #[serde(default = "one")]
    pub(super) times: u32,
}

pub(super) fn one() -> u32 {
    1
}

/// Body of `POST /_simulator/stall`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StallSpec {
    #[serde(default)]
    pub(super) method: Option<String>,
    pub(super) path_prefix: String,
    #[serde(default = "one")]
    pub(super) times: u32,
}

/// Body of `POST /_simulator/api-keys`: a key created behind keygate's back.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DirectKeySpec {
    pub(super) owner: String,
    #[serde(default)]
    pub(super) resource: Option<String>,
    #[serde(default)]
    pub(super) environment: Option<String>,
    #[serde(default)]
    pub(super) display_name: String,
    #[serde(default)]
    pub(super) description: String,
    #[serde(default)]
    pub(super) created_at: Option<String>,
    #[serde(default = "one")]
    pub(super) count: u32,
}

pub(super) fn support(call: &Call<'_>, rest: &[&str]) -> Result<Response<SimBody>, ApiError> {
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
        (&Method::POST, ["stall"]) => {
            let spec: StallSpec = serde_json::from_slice(&call.body.kept)
                .map_err(|e| ApiError::bad_request(format!("invalid stall: {e}")))?;
            let method = spec
                .method
                .map(|m| Method::from_bytes(m.as_bytes()))
                .transpose()
                .map_err(|_| ApiError::invalid("/method", "`method` is not an HTTP method"))?;
            call.sim.stall(crate::simulator::Stall {
                method,
                path_prefix: spec.path_prefix,
                times: spec.times,
            });
            Ok(empty_response(StatusCode::NO_CONTENT))
        }
        (&Method::DELETE, ["stall"]) => {
            call.sim.release_stalled();
            Ok(empty_response(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["api-keys"]) => {
            let spec: DirectKeySpec = serde_json::from_slice(&call.body.kept)
                .map_err(|e| ApiError::bad_request(format!("invalid key: {e}")))?;
            let direct = crate::simulator::DirectKey {
                owner: spec.owner,
                resource: spec.resource.unwrap_or_else(|| "cloud".to_owned()),
                environment: spec.environment,
                display_name: spec.display_name,
                description: spec.description,
                created_at: spec.created_at,
            };
            let count = usize::try_from(spec.count).unwrap_or(usize::MAX);
            let created = call
                .sim
                .create_keys_directly(&direct, count)
                .map_err(|reason| ApiError::invalid("/", reason))?;
            let keys: Vec<Value> = created
                .iter()
                .map(|k| json!({ "id": k.id, "secret": k.secret }))
                .collect();
            Ok(json_response(StatusCode::CREATED, &json!({ "keys": keys })))
        }
        (&Method::DELETE, ["api-keys", id]) => {
            if call.sim.delete_key_directly(id) {
                Ok(empty_response(StatusCode::NO_CONTENT))
            } else {
                Err(missing("API key", id))
            }
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
        (_, ["stall"]) => Err(ApiError::method_not_allowed("POST, DELETE")),
        (_, ["api-keys"]) => Err(ApiError::method_not_allowed("POST")),
        (_, ["api-keys", _]) => Err(ApiError::method_not_allowed("DELETE")),
        (_, ["echo"]) => Err(ApiError::method_not_allowed("POST")),
        (_, ["blob" | "links"]) => Err(ApiError::method_not_allowed("GET")),
        _ => Err(ApiError::not_found("unknown simulator endpoint")),
    }
}

pub(super) fn fault_from_spec(spec: FaultSpec) -> Result<Fault, ApiError> {
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
pub(super) fn recorded_json(r: &RecordedRequest) -> Value {
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
