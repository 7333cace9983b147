//! The policy authors' tools behind the CLI: `keygate check` (like `nginx -t`) and
//! `keygate policy test` (like `opa test`). Problems are printed as `file:line: message` where the
//! source has lines; the exit code is 0 only when everything is well.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{Config, DataSource, EX_CONFIG};
use crate::policy::org::{run_policy_tests, OrgPolicies, OrgPolicyConfig};
use crate::policy::runtime::AuthzRuntime;

/// `keygate check --config FILE`: config, matrix, file-sourced bindings and inventory, the
/// organisational policies against the schema, and their tests.
pub fn check(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => {
            println!("{err}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let mut problems = 0usize;
    println!("{}: config ok", path.display());
    let runtime = AuthzRuntime::new(config.authz.clone(), None, None);
    for (what, source) in [
        ("role bindings", &config.authz.bindings),
        ("inventory", &config.authz.inventory),
    ] {
        if *source == DataSource::Upstream {
            println!("{what}: synced from the upstream at run time (not checked offline)");
        }
    }
    if config.authz.bindings != DataSource::Upstream
        && config.authz.inventory != DataSource::Upstream
    {
        match block_on(runtime.load_snapshot()) {
            Some(Ok(_)) => println!("matrix, role bindings, inventory: ok"),
            Some(Err(err)) => {
                println!("{err}");
                problems += 1;
            }
            None => problems += 1,
        }
    } else if let Err(err) = crate::policy::matrix::Matrix::load(&config.authz.matrix) {
        println!("{err}");
        problems += 1;
    } else {
        println!("matrix: ok");
    }
    match &config.policy {
        None => println!("organisation policies: none configured"),
        Some(policy) => problems += check_policies(policy),
    }
    if problems == 0 {
        println!("all checks passed");
        ExitCode::SUCCESS
    } else {
        println!("{problems} problem(s)");
        ExitCode::FAILURE
    }
}

/// Loads, validates and tests one policy set; prints findings; returns the number of problems.
fn check_policies(config: &OrgPolicyConfig) -> usize {
    match OrgPolicies::load(config) {
        Err(errors) => {
            for err in &errors {
                println!("{err}");
            }
            errors.len()
        }
        Ok(policies) => {
            println!(
                "organisation policies: {} loaded, revision {}",
                policies.policy_ids().len(),
                policies.revision()
            );
            let report = run_policy_tests(&policies, &config.tests_dir());
            print!("{}", report.render());
            usize::from(!report.passed())
        }
    }
}

/// `keygate policy test [DIR] [--config FILE]`: the `[policy]` section comes from `--config`, or
/// from `DIR/policy.example.toml` when there is one, else defaults.
pub fn policy_test(dir: &Path, config: Option<&Path>) -> ExitCode {
    let policy = match config {
        Some(path) => match Config::load(path) {
            Ok(c) => match c.policy {
                Some(p) => p,
                None => {
                    println!("{}: no [policy] section", path.display());
                    return ExitCode::from(EX_CONFIG);
                }
            },
            Err(err) => {
                println!("{err}");
                return ExitCode::from(EX_CONFIG);
            }
        },
        None => {
            let example = dir.join("policy.example.toml");
            let loaded = match std::fs::read_to_string(&example) {
                Ok(text) => OrgPolicyConfig::from_toml_str(&text, Path::new("")),
                Err(_) => Ok(OrgPolicyConfig::new(dir)),
            };
            match loaded {
                Ok(mut p) => {
                    p.dir = dir.to_path_buf();
                    p
                }
                Err(errors) => {
                    for err in errors {
                        println!("{err}");
                    }
                    return ExitCode::from(EX_CONFIG);
                }
            }
        }
    };
    if check_policies(&policy) == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn block_on<F: std::future::Future>(future: F) -> Option<F::Output> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt.block_on(future)),
        Err(err) => {
            println!("cannot start a runtime: {err}");
            None
        }
    }
}

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
    /// Print JSON instead of text.
    pub json: bool,
}

/// `keygate explain`: decides a hypothetical request offline (authorization data from the
/// configured files, or fetched from the upstream when configured so) and prints the layer-1 rule,
/// every organisation-policy finding and the final decision. Exit 0 when allowed, 1 when denied,
/// 2 when the request itself is invalid, 78 for a bad config.
pub fn explain(request: ExplainRequest<'_>) -> ExitCode {
    use crate::guard::{classify_target, parse_body, GovernedBody, Route};
    use crate::policy::org::{self, OrgInput, RoleBinding};
    use crate::policy::principal::{AuthMethod, Principal};

    let config = match Config::load(request.config) {
        Ok(config) => config,
        Err(err) => {
            println!("{err}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let invalid = |message: String| {
        println!("invalid request: {message}");
        ExitCode::from(2)
    };
    let Ok(method) = http::Method::from_bytes(request.method.as_bytes()) else {
        return invalid(format!("`{}` is not an HTTP method", request.method));
    };
    let route = match classify_target(&method, request.path) {
        Ok(Route::Governed(route)) => route,
        Ok(Route::Ungoverned) => {
            println!(
                "`{} {}` is not a governed route: forwarded as is",
                method, request.path
            );
            return ExitCode::SUCCESS;
        }
        Err(err) => return invalid(err.to_string()),
    };
    let body = match parse_body(route.action, &request.body) {
        Ok(body) => body,
        Err(err) => return invalid(err.to_string()),
    };
    let principal = match Principal::new(
        request.principal,
        AuthMethod::Directory {
            key_id: "explain".into(),
        },
    ) {
        Ok(p) => p.with_groups(request.groups.clone()),
        Err(err) => return invalid(err.to_string()),
    };
    let fetch = config.upstream.credential.as_ref().and_then(|credential| {
        crate::proxy::Upstream::new(&config.upstream)
            .ok()
            .and_then(|u| {
                crate::policy::runtime::UpstreamFetch::new(std::sync::Arc::new(u), credential)
            })
    });
    let runtime = AuthzRuntime::new(config.authz.clone(), config.policy.clone(), fetch);
    let spec = match &body {
        GovernedBody::Create(spec) => Some(spec),
        _ => None,
    };
    let outcome = block_on(async {
        runtime.refresh().await?;
        let decided = runtime
            .decide(&principal, route.action, spec)
            .await
            .map_err(crate::policy::runtime::AuthzError::File)?;
        let count = match &decided.0.target.owner_id {
            Some(owner) if route.action == crate::policy::action::Action::CreateApiKey => {
                runtime.owner_key_count(owner).await
            }
            _ => None,
        };
        Ok::<_, crate::policy::runtime::AuthzError>((decided, count))
    });
    let ((decision, snapshot), owner_key_count) = match outcome {
        Some(Ok(decided)) => decided,
        Some(Err(err)) => {
            println!("cannot load authorization data: {err}");
            return ExitCode::FAILURE;
        }
        None => return ExitCode::FAILURE,
    };
    let layer2 = if decision.allow {
        snapshot.org_policies().map(|policies| {
            let bindings = RoleBinding::all_of(snapshot.bindings().of(principal.id()));
            let update = match &body {
                GovernedBody::Update(u) => Some(u),
                _ => None,
            };
            let input = OrgInput {
                owner_key_count,
                request_id: "explain",
                ..OrgInput::for_decision(
                    &principal,
                    &bindings,
                    route.action,
                    route.key_id.as_deref(),
                    &decision,
                    spec,
                    update,
                )
            };
            org::explain(policies, &input)
        })
    } else {
        None
    };
    let allowed = decision.allow && layer2.as_ref().is_none_or(|e| e.allowed());
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
    }
    if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
