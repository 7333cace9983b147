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
