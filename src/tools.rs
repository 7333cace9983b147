//! The operators' and policy authors' tools behind the CLI: `keygate check` (like `nginx -t`),
//! `keygate explain` and `keygate policy test` (like `opa test`). Problems are printed as
//! `file:line:column: message` where the source has lines, and as `config: `field`: message`
//! otherwise.
//!
//! `check` and `explain` never read secrets and never contact anything, so a CI pipeline can run
//! them with nothing but the repository; `check --connect` is the one opt-in exception (it reads
//! keygate's credential and the Redis password, asks the upstream, and PINGs the shared
//! rate-limit store and loads its script).

mod explain;
pub mod preflight;
pub mod replay;

use std::path::Path;
use std::process::ExitCode;

pub use explain::{explain, ExplainRequest, Who};
pub use preflight::{preflight, Problem};
pub use replay::{diff, replay, DiffOptions, ReplayOptions};

use crate::config::{Config, DataSource, ProcessEnv, EX_CONFIG};
use crate::policy::org::{run_all_policy_tests, OrgPolicies, OrgPolicyConfig};

/// `keygate check --config FILE [--connect]`: loads everything `serve` loads (without binding a
/// port, contacting anything or reading keygate's credential), runs the policy tests, and prints
/// the policy revision. With `connect`, also reads the credential and fetches the role bindings
/// and inventory from the upstream with it. Exit 0 when all is well, 1 when anything is wrong,
/// 78 when the config itself does not load.
pub fn check(path: &Path, connect: bool) -> ExitCode {
    let mut config = match Config::load_without_secrets(path) {
        Ok(config) => config,
        Err(err) => {
            println!("{err}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    println!("{}: config ok", path.display());
    let mut problems = 0usize;
    let loaded = match preflight(&config) {
        Ok(loaded) => Some(loaded),
        Err(found) => {
            for problem in &found {
                println!("{}", render(problem, &config));
            }
            problems += found.len();
            None
        }
    };
    if let Some(loaded) = &loaded {
        problems += report(&config, loaded);
    }
    if connect {
        problems += check_connect(&mut config);
        problems += check_shared_connect(&mut config);
    }
    if let Some(loaded) = &loaded {
        println!("policy revision: {}", loaded.authz.revision);
    }
    if problems == 0 {
        println!("all checks passed");
        ExitCode::SUCCESS
    } else {
        println!("{problems} problem(s)");
        ExitCode::FAILURE
    }
}

/// A problem as `check` prints it: policy-file problems as the file's own `file:line:column:`
/// line, others naming the config file and field.
fn render(problem: &Problem, config: &Config) -> String {
    if problem.field == "policy" {
        problem.message.clone()
    } else {
        problem.line(config)
    }
}

/// Prints what loaded; returns the number of problems found in it (no role bindings, failing
/// policy tests).
fn report(config: &Config, loaded: &preflight::Loaded) -> usize {
    let mut problems = 0;
    let authz = &loaded.authz;
    println!("matrix: ok ({})", config.authz.matrix.display());
    match (&config.authz.bindings, &authz.bindings) {
        (DataSource::File(path), Some(index)) => {
            println!(
                "role bindings: {} for organisation {} ({})",
                index.len(),
                config.authz.org_id,
                path.display()
            );
            if index.is_empty() {
                println!(
                    "{}",
                    Problem {
                        field: "authz.bindings",
                        message: format!(
                            "`{}` holds no role binding for organisation `{}`: every create would be denied (is `authz.org_id` right?)",
                            path.display(),
                            config.authz.org_id
                        ),
                    }
                    .line(config)
                );
                problems += 1;
            }
        }
        _ => println!(
            "role bindings: synced from the upstream at run time (`--connect` fetches them now)"
        ),
    }
    match (&config.authz.inventory, &authz.inventory) {
        (DataSource::File(path), Some(inventory)) => println!(
            "inventory: {} environments, {} clusters ({})",
            inventory.environment_count(),
            inventory.cluster_count(),
            path.display()
        ),
        _ => println!("inventory: synced from the upstream at run time"),
    }
    if let Some(tls) = &config.listener.tls {
        println!(
            "listener TLS: ok ({}, {})",
            tls.cert.display(),
            tls.key.display()
        );
    }
    if let Some(file) = &config.audit.file {
        println!("audit file: ok ({})", file.path.display());
    }
    match &config.upstream.credential_source {
        Some(source) => {
            println!("keygate's credential: configured ({source}; not read, `--connect` tests it)")
        }
        None => println!("keygate's credential: none configured"),
    }
    report_shared(config);
    match (&config.policy, &authz.org) {
        (Some(cfg), Some(policies)) => problems += test_policies(cfg, policies),
        _ => println!("organisation policies: none configured"),
    }
    problems
}

/// Prints where shared rate limits live (the section was validated with the config).
fn report_shared(config: &Config) {
    let Some(shared) = config.ratelimit.shared() else {
        return;
    };
    let ids: Vec<&str> = config.ratelimit.shared_limit_ids().collect();
    let password = match shared.password_source() {
        Some(source) => format!("password from {source}, not read; `--connect` tests it"),
        None => "no password".to_string(),
    };
    if ids.is_empty() {
        println!(
            "shared rate limits: none of the limits is shared ({}; {password})",
            shared.url()
        );
    } else {
        println!(
            "shared rate limits: {} in {} ({password})",
            ids.join(", "),
            shared.url()
        );
    }
}

/// `check --connect` for `[ratelimit.shared]`: reads its credentials, connects, PINGs and loads
/// the limit script. Returns the number of problems.
fn check_shared_connect(config: &mut Config) -> usize {
    let Some(shared) = config.ratelimit.shared_mut() else {
        return 0;
    };
    if let Err(err) = shared.read_credentials(&ProcessEnv) {
        println!("{err}");
        return 1;
    }
    let url = shared.url().to_string();
    crate::tls::install_provider();
    let store = crate::ratelimit::SharedStore::new(shared);
    match block_on(store.probe()) {
        Some(Ok(())) => {
            println!("shared rate limits: {url} answered and loaded the limit script");
            0
        }
        Some(Err(err)) => {
            println!("shared rate limits: {url}: {err}");
            1
        }
        None => 1,
    }
}

/// Runs the policy tests of the platform set and of every team set, and prints the report per
/// set and in total; returns 1 when any fail.
fn test_policies(config: &OrgPolicyConfig, policies: &OrgPolicies) -> usize {
    let teams = policies.teams();
    println!(
        "organisation policies: {} loaded ({} in the platform set, {} in {} team sets)",
        policies.policy_ids().len(),
        policies.set_policy_ids(None).len(),
        teams.iter().map(|t| t.policies).sum::<usize>(),
        teams.len()
    );
    for team in &teams {
        println!(
            "team `{}`: {} policies ({}); scope: {}",
            team.name,
            team.policies,
            team.dir.display(),
            team.scope
        );
    }
    let report = run_all_policy_tests(policies, &config.tests_dir());
    print!("{}", report.render());
    usize::from(!report.passed())
}

/// `check --connect`: reads keygate's credential and fetches what comes from the upstream with
/// it. Returns the number of problems.
fn check_connect(config: &mut Config) -> usize {
    use crate::policy::source::{fetch_bindings, fetch_inventory, Fetch};
    if config.upstream.credential_source.is_none() {
        println!("upstream: no `upstream.credential` configured, nothing to test");
        return 0;
    }
    if let Err(err) = config.resolve_credential(&ProcessEnv) {
        println!("{err}");
        return 1;
    }
    let url = config.upstream.url.to_string();
    crate::tls::install_provider();
    let upstream = match crate::proxy::Upstream::new(&config.upstream) {
        Ok(upstream) => std::sync::Arc::new(upstream),
        Err(err) => {
            println!("upstream: {err}");
            return 1;
        }
    };
    let Some(fetch) =
        config.upstream.credential.as_ref().and_then(|credential| {
            crate::policy::runtime::UpstreamFetch::new(upstream, credential)
        })
    else {
        println!("upstream: the credential cannot be sent as a header");
        return 1;
    };
    let authz = &config.authz;
    let outcome = block_on(async {
        let mut lines = Vec::new();
        let mut problems = 0;
        if authz.bindings == DataSource::Upstream {
            let index = fetch_bindings(&fetch, &authz.org_id).await?;
            lines.push(format!(
                "role bindings: {} for organisation {} (from {url})",
                index.len(),
                authz.org_id
            ));
            if index.is_empty() {
                lines.push(format!(
                    "{}: `authz.org_id`: {url} has no role binding for organisation `{}` that keygate's credential can see: every create would be denied",
                    config.source_path.as_deref().map_or_else(|| "<config>".into(), |p| p.display().to_string()),
                    authz.org_id
                ));
                problems += 1;
            }
        }
        if authz.inventory == DataSource::Upstream {
            let inventory = fetch_inventory(&fetch).await?;
            lines.push(format!(
                "inventory: {} environments, {} clusters (from {url})",
                inventory.environment_count(),
                inventory.cluster_count()
            ));
        }
        if lines.is_empty() {
            fetch.get_json("/org/v2/environments?page_size=1").await?;
        }
        lines.insert(0, format!("upstream: {url} accepted keygate's credential"));
        Ok::<_, crate::policy::source::FetchError>((lines, problems))
    });
    match outcome {
        Some(Ok((lines, problems))) => {
            for line in lines {
                println!("{line}");
            }
            problems
        }
        Some(Err(err)) => {
            println!("upstream: {err}");
            1
        }
        None => 1,
    }
}

/// `keygate policy test [DIR] [--config FILE] [--team NAME]`: the `[policy]` section comes from
/// `--config`, or from `DIR/policy.example.toml` when there is one, else defaults. Every set is
/// loaded; with `team`, only that set's tests run (`platform` for the platform set's).
pub fn policy_test(dir: &Path, config: Option<&Path>, team: Option<&str>) -> ExitCode {
    let policy = match config {
        Some(path) => match Config::load_without_secrets(path) {
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
                    // The example's paths are written for a config beside the policy directory:
                    // a teams directory inside it moves with it.
                    if let Some(rel) = p
                        .teams_dir
                        .as_deref()
                        .and_then(|t| t.strip_prefix(&p.dir).ok())
                    {
                        p.teams_dir = Some(dir.join(rel));
                    }
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
    let passed = match OrgPolicies::load(&policy) {
        Err(errors) => {
            for err in &errors {
                println!("{err}");
            }
            false
        }
        Ok(policies) => match team {
            None => test_policies(&policy, &policies) == 0,
            Some(team) => {
                let mut report = run_all_policy_tests(&policies, &policy.tests_dir());
                report.sets.retain(|s| s.set == team);
                if report.sets.is_empty() {
                    println!("no team `{team}` is loaded (teams: {})", {
                        let names: Vec<&str> = policies.teams().iter().map(|t| t.name).collect();
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    });
                    false
                } else {
                    print!("{}", report.render());
                    report.passed()
                }
            }
        },
    };
    if passed {
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
