//! `keygate explain`: decides a hypothetical request offline and prints why — the layer-1 rule,
//! every organisation-policy finding, the decision and the policy revision.
//!
//! Offline means offline: the authorization data comes from the configured files, and where the
//! config syncs role bindings or the inventory from the upstream, from `--bindings FILE` /
//! `--inventory FILE` (explain says so rather than trying to connect). Facts keygate would look up
//! at run time (an owner's key count) are unknown unless given (`--owner-key-count`).
//!
//! Exit codes, as policy tools such as `opa` use them: 0 allow, 1 deny, 2 the question could not be
//! answered (bad config, missing data, an invalid request).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Config;
use crate::policy::bindings::BindingIndex;
use crate::policy::inventory::Inventory;
use crate::policy::runtime::{read_file, AuthzRuntime};
use crate::policy::AuthzSnapshot;

/// Exit code when the decision is "allow".
const ALLOW: u8 = 0;
/// Exit code when the decision is "deny".
const DENY: u8 = 1;
/// Exit code when explain could not decide.
const ERROR: u8 = 2;

/// What `keygate explain` decides about.
#[derive(Debug)]
pub struct ExplainRequest<'a> {
    /// The config file (authorization data and policies come from it).
    pub config: &'a Path,
    /// The principal to act as (`u-…`, `sa-…`, `pool-…`).
    pub principal: &'a str,
    /// Groups the identity stage would supply.
    pub groups: Vec<String>,
    /// HTTP method.
    pub method: &'a str,
    /// Request path (and query).
    pub path: &'a str,
    /// The request body.
    pub body: Vec<u8>,
    /// Role bindings to decide with instead of the configured source.
    pub bindings: Option<&'a Path>,
    /// Inventory to decide with instead of the configured source.
    pub inventory: Option<&'a Path>,
    /// How many keys the owner already holds (unknown when absent).
    pub owner_key_count: Option<u64>,
    /// Print JSON instead of text.
    pub json: bool,
}

/// Why explain could not decide: printed as one line, exit 2.
fn error(message: impl std::fmt::Display) -> ExitCode {
    println!("keygate explain: {message}");
    ExitCode::from(ERROR)
}

/// `keygate explain` (see the module doc).
pub fn explain(request: ExplainRequest<'_>) -> ExitCode {
    use crate::guard::{classify_target, parse_body, GovernedBody, Route};
    use crate::model::{AuthMethod, Principal};
    use crate::policy::org;

    let config = match Config::load_without_secrets(request.config) {
        Ok(config) => config,
        Err(err) => return error(err),
    };
    let Ok(method) = http::Method::from_bytes(request.method.as_bytes()) else {
        return error(format!(
            "invalid request: `{}` is not an HTTP method",
            request.method
        ));
    };
    let route = match classify_target(&method, request.path) {
        Ok(Route::Governed(route)) => route,
        Ok(Route::Ungoverned) => {
            println!(
                "`{} {}` is not a governed route: forwarded as is",
                method, request.path
            );
            return ExitCode::from(ALLOW);
        }
        Err(err) => return error(format!("invalid request: {err}")),
    };
    let body = match parse_body(route.action, &request.body) {
        Ok(body) => body,
        Err(err) => return error(format!("invalid request: {err}")),
    };
    let principal = match Principal::new(
        request.principal,
        AuthMethod::Directory {
            key_id: "explain".into(),
        },
    ) {
        Ok(p) => p.with_groups(request.groups.clone()),
        Err(err) => return error(format!("invalid principal: {err}")),
    };
    let snapshot = match snapshot(&config, &request) {
        Ok(snapshot) => snapshot,
        Err(message) => return error(message),
    };
    let spec = match &body {
        GovernedBody::Create(spec) => Some(spec),
        _ => None,
    };
    let update = match &body {
        GovernedBody::Update(u) => Some(u),
        _ => None,
    };
    // The same decision as the request path's, over the facts explain has (the owner's key
    // count only when given; no quota counts offline).
    let decide_request = crate::policy::decide::Request {
        principal: &principal,
        action: route.action,
        key_id: route.key_id.as_deref(),
        spec,
        update,
        request_id: "explain",
        source_ip: None,
        time: crate::policy::decide::now_unix(),
    };
    let facts = crate::policy::Facts {
        owner_key_count: request.owner_key_count,
        ..crate::policy::Facts::default()
    };
    let response = crate::policy::decide(
        &crate::policy::Rules {
            snapshot: &snapshot,
            quota: None,
        },
        &decide_request,
        &facts,
    );
    let decision = &response.matrix;
    let revision = snapshot.revision().as_str();
    // The findings, rendered: what each policy said about the same input.
    let layer2 = if decision.allow {
        snapshot.org_policies().map(|policies| {
            let bindings = crate::policy::decide::org_bindings(&snapshot, &principal);
            // The same layer-2 input the decision above evaluated.
            let input = crate::policy::decide::org_input(
                &decide_request,
                &bindings,
                decision,
                &facts,
                None,
            );
            org::explain(policies, &input, revision)
        })
    } else {
        None
    };
    let allowed = response.allow;
    if request.json {
        let json = serde_json::json!({
            "action": route.action.as_str(),
            "principal": principal.id(),
            "matrix": {
                "allow": decision.allow,
                "rule": decision.rule,
                "explanation": decision.explanation,
            },
            "policies": layer2,
            "decision": if allowed { "allow" } else { "deny" },
            "revision": revision,
        });
        println!("{json:#}");
    } else {
        println!("{} {} as {}", route.action, request.path, principal.id());
        println!(
            "matrix: {} ({}): {}",
            if decision.allow { "ALLOW" } else { "DENY" },
            decision.rule,
            decision.explanation
        );
        match &layer2 {
            Some(e) => print!("{}", e.render()),
            None if decision.allow => println!("organisation policies: none configured"),
            None => println!("organisation policies: not evaluated (the matrix denies)"),
        }
        println!("decision: {}", if allowed { "ALLOW" } else { "DENY" });
        println!("policy revision: {revision}");
    }
    ExitCode::from(if allowed { ALLOW } else { DENY })
}

/// The authorization data to decide with: the configured files (and their revision), with
/// `--bindings` / `--inventory` standing in for what the config takes from the upstream.
fn snapshot(config: &Config, request: &ExplainRequest<'_>) -> Result<AuthzSnapshot, String> {
    let runtime = AuthzRuntime::new(config.authz.clone(), config.policy.clone(), None);
    let files = runtime
        .load_files(&read_file, config.ratelimit.canonical())
        .map_err(|e| e.to_string())?;
    let bindings = match (request.bindings, files.bindings, &config.authz.bindings) {
        (Some(path), _, _) => {
            let text = read_file(path).map_err(|e| e.to_string())?;
            BindingIndex::from_toml_str(&text, &config.authz.org_id)
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        (None, Some(index), _) => index,
        (None, None, _) => {
            return Err(
                "the config takes role bindings from the upstream (`authz.bindings = \"upstream\"`) and explain decides offline: pass `--bindings FILE` (role bindings in the format of policies/role-bindings.toml)"
                    .into(),
            )
        }
    };
    let inventory = match (request.inventory, files.inventory, &config.authz.inventory) {
        (Some(path), _, _) => {
            let text = read_file(path).map_err(|e| e.to_string())?;
            Inventory::from_toml_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        (None, Some(inventory), _) => inventory,
        (None, None, _) => {
            return Err(
                "the config takes the resource inventory from the upstream (`authz.inventory = \"upstream\"`) and explain decides offline: pass `--inventory FILE` (in the format of policies/inventory.toml)"
                    .into(),
            )
        }
    };
    Ok(AuthzSnapshot::new(
        Arc::new(files.matrix),
        Arc::new(bindings),
        Arc::new(inventory),
        std::time::Instant::now(),
    )
    .with_org(files.org)
    .with_revision(files.revision)
    .with_parts(files.parts))
}
