//! Reading members of JSON request bodies, with Confluent's 400/422 answers.

use super::*;

pub(super) fn parse_object(body: &ReadBody) -> Result<serde_json::Map<String, Value>, ApiError> {
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
pub(super) fn opt_str<'a>(
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
pub(super) fn req_str<'a>(
    obj: &'a serde_json::Map<String, Value>,
    name: &str,
    pointer: &str,
) -> Result<&'a str, ApiError> {
    opt_str(obj, name, pointer)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::invalid(pointer, format!("`{name}` is required")))
}

/// An optional object member; `null` counts as absent.
pub(super) fn opt_obj<'a>(
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
