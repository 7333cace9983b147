//! `/iam/v2/api-keys`: create, list, get, update and delete, with Confluent's own RBAC on existing
//! keys.

use super::*;

pub(super) fn list_api_keys(call: &Call<'_>) -> Result<Response<SimBody>, ApiError> {
    let owner = call.query.get("spec.owner");
    let resource = call.query.get("spec.resource");
    let store = call.sim.store();
    let listing = Listing {
        path: "/iam/v2/api-keys",
        api_version: "iam/v2",
        kind: "ApiKeyList",
        filters: present(call, &["spec.owner", "spec.resource"]),
    };
    // Decided once per listing: an organisation's tens of thousands of keys are paged through
    // with one request per hundred.
    let sees_all = store.is_organization_admin(&call.caller, call.ctx.org);
    if sees_all && owner.is_none() && resource.is_none() {
        // Every key, in id order: the page is a range of the map, the total its size.
        let (page_size, after) = listing.page_request(call)?;
        let range = match &after {
            Some(after) => store.api_keys.range::<str, _>((
                std::ops::Bound::Excluded(after.as_str()),
                std::ops::Bound::Unbounded,
            )),
            None => store.api_keys.range::<str, _>(..),
        };
        let mut page: Vec<(&str, &ApiKey)> = range
            .take(page_size + 1)
            .map(|(id, k)| (id.as_str(), k))
            .collect();
        let more = page.len() > page_size;
        page.truncate(page_size);
        return Ok(
            listing.render_page(call, &page, store.api_keys.len(), more, |k| {
                render::api_key(&call.ctx, k, None)
            }),
        );
    }
    let items: Vec<(&str, &ApiKey)> = store
        .api_keys
        .values()
        .filter(|k| owner.is_none_or(|o| k.owner == o))
        .filter(|k| resource.is_none_or(|r| k.resource.id() == r))
        .filter(|k| sees_all || store.may_manage_key(&call.caller, k, call.ctx.org))
        .map(|k| (k.id.as_str(), k))
        .collect();
    listing.respond(call, &items, |k| render::api_key(&call.ctx, k, None))
}

pub(super) fn create_api_key(call: &Call<'_>) -> Result<Response<SimBody>, ApiError> {
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
        digest: crate::simulator::secret::SecretDigest::of(&secret),
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

/// A key the caller may manage (docs/confluent-api.md §7); 404 when it does not exist, 403 when the caller
/// may not touch it.
pub(super) fn managed_key<'s>(
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

pub(super) fn get_api_key(call: &Call<'_>, id: &str) -> Result<Response<SimBody>, ApiError> {
    let store = call.sim.store();
    let key = managed_key(call, &store, id)?;
    Ok(json_response(
        StatusCode::OK,
        &render::api_key(&call.ctx, key, None),
    ))
}

pub(super) fn missing(what: &str, id: &str) -> ApiError {
    ApiError::not_found(format!("{what} `{id}` was not found"))
}

/// PATCH: only `spec.display_name` and `spec.description` may change (docs/confluent-api.md §2.6).
pub(super) fn patch_api_key(call: &Call<'_>, id: &str) -> Result<Response<SimBody>, ApiError> {
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

pub(super) fn delete_api_key(call: &Call<'_>, id: &str) -> Result<Response<SimBody>, ApiError> {
    let mut store = call.sim.store();
    managed_key(call, &store, id)?;
    match store.api_keys.remove(id) {
        Some(_) => Ok(empty_response(StatusCode::NO_CONTENT)),
        None => Err(missing("API key", id)),
    }
}

#[cfg(test)]
mod tests;
