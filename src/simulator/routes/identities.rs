//! `/iam/v2/service-accounts` and `/iam/v2/users`.

use super::*;

pub(super) fn list_service_accounts(call: &Call<'_>) -> Result<Response<SimBody>, ApiError> {
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
/// that principal ResourceOwner on the new account (docs/confluent-api.md §6).
pub(super) fn create_service_account(call: &Call<'_>) -> Result<Response<SimBody>, ApiError> {
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

pub(super) fn get_service_account(
    call: &Call<'_>,
    id: &str,
) -> Result<Response<SimBody>, ApiError> {
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

pub(super) fn patch_service_account(
    call: &Call<'_>,
    id: &str,
) -> Result<Response<SimBody>, ApiError> {
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

pub(super) fn list_users(call: &Call<'_>) -> Result<Response<SimBody>, ApiError> {
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

pub(super) fn get_user(call: &Call<'_>, id: &str) -> Result<Response<SimBody>, ApiError> {
    let store = call.sim.store();
    let user = store.users.get(id).ok_or_else(|| missing("user", id))?;
    Ok(json_response(
        StatusCode::OK,
        &render::user(&call.ctx, user),
    ))
}

pub(super) fn patch_user(call: &Call<'_>, id: &str) -> Result<Response<SimBody>, ApiError> {
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
pub(super) enum IdentityKind {
    User,
    ServiceAccount,
}

/// DELETE of a user or service account: 204, and its keys and bindings go with it.
pub(super) fn delete_identity(
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

#[cfg(test)]
mod tests;
