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
    /// Who asks.
    pub who: Who<'a>,
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

/// Who a hypothetical request comes from.
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    /// A Confluent principal (`u-…`, `sa-…`, `pool-…`).
    Confluent(&'a str),
    /// A company identity: the principal a JWT issuer's claims or a client certificate yield.
    External {
        /// Its id (`ci@payments`).
        id: &'a str,
        /// The JWT issuer's URL, or `mtls`; `None` when the config has one source only.
        issuer: Option<&'a str>,
    },
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
    let snapshot = match snapshot(&config, &request) {
        Ok(snapshot) => snapshot,
        Err(message) => return error(message),
    };
    let principal = match request.who {
        Who::Confluent(id) => match Principal::new(
            id,
            AuthMethod::Directory {
                key_id: "explain".into(),
            },
        ) {
            Ok(p) => p.with_groups(request.groups.clone()),
            Err(err) => return error(format!("invalid principal: {err}")),
        },
        Who::External { id, issuer } => {
            match external_principal(&config, &snapshot, id, issuer, &request.groups) {
                Ok(p) => p,
                Err(message) => return error(message),
            }
        }
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
            "caller": principal.describe(),
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
        println!(
            "{} {} as {}",
            route.action,
            request.path,
            principal.describe()
        );
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
    .with_external_bindings(files.external_bindings)
    .with_revision(files.revision)
    .with_parts(files.parts))
}

/// The principal a company identity acts as, resolved as the identity stage resolves a verified
/// one: its `[[identity.map]]` entry names a Confluent principal; without one, a brokered source's
/// identity that holds keygate-side role bindings acts with those alone; anything else is
/// refused with the identity stage's reason.
fn external_principal(
    config: &Config,
    snapshot: &AuthzSnapshot,
    id: &str,
    issuer: Option<&str>,
    groups: &[String],
) -> Result<crate::model::Principal, String> {
    use crate::identity::map::ExternalMap;
    use crate::model::{AuthMethod, External, ExternalSource, MTLS_ISSUER};

    let identity = &config.identity;
    let issuer = match issuer {
        Some(issuer) => issuer,
        None => match (identity.jwt.as_slice(), &identity.mtls) {
            ([only], None) => only.issuer.as_str(),
            ([], Some(_)) => MTLS_ISSUER,
            ([], None) => {
                return Err("the config has no company identity source (`[[identity.jwt]]` or `[identity.mtls]`)".into())
            }
            _ => {
                return Err("the config has more than one company identity source: name it with `--issuer URL` (or `--issuer mtls`)".into())
            }
        },
    };
    let (source, brokered, auth) = if issuer == MTLS_ISSUER {
        let mtls = identity
            .mtls
            .as_ref()
            .ok_or("`--issuer mtls`, but the config has no `[identity.mtls]`")?;
        let auth = AuthMethod::Mtls {
            subject: id.to_owned(),
        };
        (ExternalSource::Mtls, mtls.broker, auth)
    } else {
        let jwt = identity
            .jwt
            .iter()
            .find(|i| i.issuer == issuer)
            .ok_or_else(|| format!("`{issuer}` is not one of the config's JWT issuers"))?;
        let auth = AuthMethod::Jwt {
            issuer: issuer.to_owned(),
        };
        (ExternalSource::Jwt, jwt.broker, auth)
    };
    let external = External {
        id: id.to_owned(),
        source,
        issuer: issuer.to_owned(),
        groups: groups.to_vec(),
        broker_key_id: None,
    };
    crate::identity::resolve_external(
        &ExternalMap::new(identity.map.clone()),
        external,
        auth,
        // Explain never calls upstream: which credential would is not its question.
        |_| brokered.then(|| "(brokered)".to_owned()),
        |external| snapshot.external_bindings().binds(external),
    )
    .map_err(|e| e.to_string())
}
