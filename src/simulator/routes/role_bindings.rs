//! `/iam/v2/role-bindings`: list (by CRN pattern), create, get and delete.

use super::*;

pub(super) fn list_role_bindings(call: &Call<'_>) -> Result<Response<SimBody>, ApiError> {
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

pub(super) fn create_role_binding(call: &Call<'_>) -> Result<Response<SimBody>, ApiError> {
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

pub(super) fn get_role_binding(call: &Call<'_>, id: &str) -> Result<Response<SimBody>, ApiError> {
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

/// DELETE answers 200 with the deleted binding (docs/confluent-api.md §1).
pub(super) fn delete_role_binding(
    call: &Call<'_>,
    id: &str,
) -> Result<Response<SimBody>, ApiError> {
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

#[cfg(test)]
mod tests;
