//! The `keygate` command line: `serve`, and the tools around it.
//!
//! Exit codes: 0 success, 1 failure at run time, 2 usage error (clap), 78 (`EX_CONFIG`) for a
//! configuration that does not load — the config file itself or any file it names (certificates,
//! matrix, policies, bindings, the audit directory) — always as one line on stderr naming the file
//! and field. `keygate healthcheck` exits 1 when the probed endpoint does not answer 2xx in time;
//! `keygate audit verify` exits 1 for a broken chain (or a missing anchor) and 2 for a file it
//! cannot read; `keygate explain` exits 0 allow, 1 deny, 2 when it cannot decide;
//! `keygate check` exits 1 when it finds a problem; `keygate policy replay` exits 0 when nothing
//! flips, 1 when something does, 2 on bad input.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, EX_CONFIG};
use crate::dev::DevOptions;
use crate::simulator::{Seed, Simulator};

/// keygate: a policy-enforcing reverse proxy for the Confluent Cloud API-key endpoints.
#[derive(Debug, Parser)]
#[command(name = "keygate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway with a config file.
    Serve {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Overrides `listener.address`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Overrides `admin.address`.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// Overrides `upstream.url`.
        #[arg(long)]
        upstream: Option<String>,
    },
    /// Run keygate in front of the built-in Confluent IAM simulator, with demo credentials.
    Dev {
        /// Where keygate listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the admin endpoints listen.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin_listen: SocketAddr,
        /// Where the egress forward proxy listens (`HTTPS_PROXY` for the Confluent CLI).
        #[arg(long, default_value = "127.0.0.1:3128")]
        egress_listen: SocketAddr,
    },
    /// Run only the Confluent IAM simulator (an in-memory Confluent Cloud for tests and demos).
    Simulate {
        /// Where the simulator listens.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// An org seed file (default: the built-in demo org, `dev/org.toml`).
        #[arg(long)]
        seed: Option<PathBuf>,
    },
    /// Load everything `serve` loads (config, TLS files, audit directory, matrix, bindings,
    /// inventory, organisation policies) without binding ports, contacting anything or reading
    /// secrets, run the policy tests and print the policy revision (like `nginx -t`); exit 0 only
    /// when all is well.
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Also read keygate's credential and fetch the role bindings and inventory with it, and
        /// read the Redis password, PING the shared rate-limit store and load its script.
        #[arg(long)]
        connect: bool,
    },
    /// Decide a hypothetical request offline and print why (matrix rule, every policy finding).
    Explain {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The principal to act as (`u-…`, `sa-…`, `pool-…`).
        #[arg(
            long = "as",
            required_unless_present = "external",
            conflicts_with = "external"
        )]
        principal: Option<String>,
        /// A company identity instead (a JWT's principal or a certificate's), resolved as the
        /// identity stage would: its `[[identity.map]]` entry, else its keygate-side bindings.
        #[arg(long)]
        external: Option<String>,
        /// The issuer of `--external` (a configured JWT issuer's URL, or `mtls`); needed when
        /// the config has more than one source.
        #[arg(long, requires = "external")]
        issuer: Option<String>,
        /// A group of the principal (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// HTTP method.
        #[arg(long, default_value = "POST")]
        method: String,
        /// Request path.
        #[arg(long, default_value = "/iam/v2/api-keys")]
        path: String,
        /// The request body: a file, or `-` for stdin.
        #[arg(long)]
        body: Option<PathBuf>,
        /// Role bindings to decide with (needed when the config syncs them from the upstream).
        #[arg(long)]
        bindings: Option<PathBuf>,
        /// Resource inventory to decide with (needed when the config syncs it from the upstream).
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// How many API keys the owner already holds (unknown when not given).
        #[arg(long)]
        owner_key_count: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Policy tooling.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Hash an API secret read from stdin for the static key directory.
    HashSecret,
    /// Compare the organisation's API keys upstream with the audit trail, once: report (and
    /// record in the trail) unmanaged, vanished and unresolved keys. Run it while `serve` is
    /// stopped; `[reconcile] interval` runs it inside `serve`. Exit 0 nothing new, 1 new findings,
    /// 2 the run failed.
    Reconcile {
        /// The TOML config file (its `audit.file` and `upstream.credential`).
        #[arg(long, short)]
        config: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Accept the keys that predate keygate (created before its first audit record) as the
        /// baseline, once; it is recorded in the trail.
        #[arg(long)]
        accept_baseline: bool,
    },
    /// Audit file tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Probe an admin endpoint: exit 0 when it answers 2xx, 1 otherwise (a container
    /// HEALTHCHECK for images without curl).
    Healthcheck {
        /// The URL to GET; plain HTTP, like the admin listener.
        #[arg(long, default_value = DEFAULT_HEALTHCHECK_URL)]
        url: String,
        /// Give up (exit 1) after this long, e.g. `2s`, `500ms`.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check an audit file's hash chain (with its rotated files): exit 0 intact, 1 broken (the
    /// first break is named) or not passing through `--expect-hash`, 2 unreadable.
    Verify {
        /// The audit file (`audit.file`).
        file: PathBuf,
        /// A hash printed by an earlier verify (or kept elsewhere): the chain must pass through
        /// it, so the trail cannot have been cut back or rewritten before that point.
        #[arg(long, value_name = "HASH")]
        expect_hash: Option<String>,
    },
}

/// `/healthz` on the default admin port, over loopback: an admin listener bound to `127.0.0.1` or
/// `0.0.0.0` answers there, so a container's HEALTHCHECK needs no address of its own.
const DEFAULT_HEALTHCHECK_URL: &str = "http://127.0.0.1:9901/healthz";

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Run the policy tests beside the policies (`DIR/tests/*.toml`) and check coverage.
    Test {
        /// The policy directory.
        #[arg(default_value = "policies")]
        dir: PathBuf,
        /// Take the `[policy]` section from this config (default: `DIR/policy.example.toml`).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Run only this set's tests: a team's name, or `platform` (everything is still loaded
        /// and checked).
        #[arg(long)]
        team: Option<String>,
    },
    /// Re-decide the governed decisions of an audit trail with a candidate policy set and report
    /// what flips (allow→deny, deny→allow, now erroring), by policy and principal, with samples.
    /// Exit 0 nothing flips, 1 something does, 2 bad input (config, files, broken chain).
    Replay {
        /// Audit files (`audit.file`; each with its rotated files, oldest first).
        #[arg(long, required = true, num_args = 1..)]
        audit: Vec<PathBuf>,
        /// The candidate config (its matrix, `[policy]` and `[quota]`; no secrets are read).
        #[arg(long, short)]
        config: PathBuf,
        /// Only decisions at or after this time: RFC 3339, or a duration back from now (`7d`).
        #[arg(long, value_parser = crate::tools::replay::parse_time)]
        since: Option<std::time::SystemTime>,
        /// Only decisions before this time: RFC 3339, or a duration back from now.
        #[arg(long, value_parser = crate::tools::replay::parse_time)]
        until: Option<std::time::SystemTime>,
        /// Only this principal's decisions.
        #[arg(long)]
        principal: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Decide with the candidate config's role bindings and inventory (files) instead of the
        /// ones recorded with each decision.
        #[arg(long)]
        current_data: bool,
        /// Replay without verifying the hash chain first.
        #[arg(long)]
        no_verify: bool,
        /// Sample changed decisions shown per kind of change.
        #[arg(long, default_value_t = 10)]
        samples: usize,
    },
    /// Compare two policy sets: policy ids added, removed or changed (by content), a changed
    /// matrix or `[policy]` values; with `--audit`, the replay of the trail with each, side by
    /// side. Exit 0 same, 1 different, 2 bad input.
    Diff {
        /// The config in force.
        old: PathBuf,
        /// The candidate config.
        new: PathBuf,
        /// Audit files to replay with both (each with its rotated files).
        #[arg(long, num_args = 1..)]
        audit: Vec<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Replay without verifying the hash chain first.
        #[arg(long)]
        no_verify: bool,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            admin_listen,
            upstream,
        } => serve(&config, |c| {
            if let Some(addr) = listen {
                c.listener.address = addr;
            }
            if let Some(addr) = admin_listen {
                c.admin.address = addr;
            }
            if let Some(url) = &upstream {
                c.upstream.url = crate::config::validate::upstream_url(url)?;
            }
            Ok(())
        }),
        Command::Dev {
            listen,
            admin_listen,
            egress_listen,
        } => dev(DevOptions {
            listen,
            admin_listen,
            egress_listen,
        }),
        Command::Simulate { listen, seed } => simulate(listen, seed.as_deref()),
        Command::HashSecret => hash_secret(),
        Command::Check { config, connect } => crate::tools::check(&config, connect),
        Command::Explain {
            config,
            principal,
            external,
            issuer,
            groups,
            method,
            path,
            body,
            bindings,
            inventory,
            owner_key_count,
            json,
        } => {
            let body = match body.as_deref() {
                None => Vec::new(),
                Some(p) if p == Path::new("-") => {
                    let mut buf = Vec::new();
                    if std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).is_err() {
                        eprintln!("keygate: cannot read the body from stdin");
                        return ExitCode::from(2);
                    }
                    buf
                }
                Some(p) => match std::fs::read(p) {
                    Ok(b) => b,
                    Err(err) => {
                        eprintln!("keygate: cannot read `{}`: {err}", p.display());
                        return ExitCode::from(2);
                    }
                },
            };
            crate::tools::explain(crate::tools::ExplainRequest {
                config: &config,
                who: match (&principal, &external) {
                    (Some(principal), _) => crate::tools::Who::Confluent(principal),
                    (None, external) => crate::tools::Who::External {
                        id: external.as_deref().unwrap_or_default(),
                        issuer: issuer.as_deref(),
                    },
                },
                groups,
                method: &method,
                path: &path,
                body,
                bindings: bindings.as_deref(),
                inventory: inventory.as_deref(),
                owner_key_count,
                json,
            })
        }
        Command::Policy {
            command: PolicyCommand::Test { dir, config, team },
        } => crate::tools::policy_test(&dir, config.as_deref(), team.as_deref()),
        Command::Policy {
            command:
                PolicyCommand::Replay {
                    audit,
                    config,
                    since,
                    until,
                    principal,
                    json,
                    current_data,
                    no_verify,
                    samples,
                },
        } => crate::tools::replay(&crate::tools::ReplayOptions {
            audit,
            config,
            since,
            until,
            principal,
            json,
            current_data,
            verify: !no_verify,
            samples,
        }),
        Command::Policy {
            command:
                PolicyCommand::Diff {
                    old,
                    new,
                    audit,
                    json,
                    no_verify,
                },
        } => crate::tools::diff(&crate::tools::DiffOptions {
            old,
            new,
            audit,
            json,
            verify: !no_verify,
        }),
        Command::Audit {
            command: AuditCommand::Verify { file, expect_hash },
        } => ExitCode::from(
            u8::try_from(crate::audit::run_verify_cli(&file, expect_hash.as_deref()))
                .unwrap_or(u8::MAX),
        ),
        Command::Healthcheck { url, timeout } => healthcheck(&url, timeout),
        Command::Reconcile {
            config,
            json,
            accept_baseline,
        } => reconcile(&config, json, accept_baseline),
    }
}

fn reconcile(path: &Path, json: bool, accept_baseline: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("keygate: config error: {err}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let options = crate::reconcile::RunOptions { accept_baseline };
    block_on(None, async move {
        ExitCode::from(reconcile_run(config, options, json).await)
    })
}

/// `keygate reconcile --config FILE [--json] [--accept-baseline]`: one run against the audit trail
/// of a stopped `serve` (the file has one writer). Exit 0: nothing new; 1: new findings (each
/// recorded in the trail); 2: the run failed; 78: the config does not allow a run.
async fn reconcile_run(config: Config, options: crate::reconcile::RunOptions, json: bool) -> u8 {
    use crate::audit::{AuditError, EventSource};
    use crate::reconcile::Reconciler;
    use std::sync::Arc;
    let Some(file) = &config.audit.file else {
        eprintln!("keygate: reconcile compares the upstream's keys with the audit trail: set `audit.file`");
        return EX_CONFIG;
    };
    let Some(credential) = &config.upstream.credential else {
        eprintln!(
            "keygate: reconcile lists the organisation's keys with keygate's own credential: set \
             `upstream.credential.env` or `upstream.credential.file`"
        );
        return EX_CONFIG;
    };
    crate::tls::install_provider();
    let upstream = match crate::proxy::Upstream::new(&config.upstream) {
        Ok(upstream) => Arc::new(upstream),
        Err(err) => {
            eprintln!("keygate: {err}");
            return EX_CONFIG;
        }
    };
    let Some(fetch) = crate::policy::runtime::UpstreamFetch::new(upstream, credential) else {
        eprintln!("keygate: keygate's credential is not a valid header value");
        return EX_CONFIG;
    };
    let auditor = match crate::gateway::auditor(&config.audit) {
        Ok(auditor) => Arc::new(auditor),
        Err(crate::StartError::Audit(err @ AuditError::InUse { .. })) => {
            eprintln!(
                "keygate: {err}: stop `keygate serve` first, or let its `[reconcile] interval` \
                 reconcile"
            );
            return 1;
        }
        Err(err) => {
            eprintln!("keygate: {err}");
            return 2;
        }
    };
    let source = match &config.audit.instance_id {
        Some(id) => EventSource::new(id),
        None => EventSource::from_hostname(),
    };
    let settings = config.reconcile.clone().unwrap_or_default();
    let reconciler = Reconciler::new(
        file.path.clone(),
        auditor.clone(),
        source,
        Arc::new(fetch),
        &settings,
        crate::policy::quota::Ledger::new(),
    );
    let result = reconciler.run(options).await;
    drop(reconciler);
    if let Err(err) = auditor.flush().await {
        eprintln!("keygate: audit flush: {err}");
    }
    match result {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(err) => eprintln!("keygate: {err}"),
                }
            } else {
                print!("{}", report.text());
            }
            u8::from(!report.findings.is_empty())
        }
        Err(err) => {
            eprintln!("keygate: reconcile: {err}");
            2
        }
    }
}

fn healthcheck(url: &str, timeout: Duration) -> ExitCode {
    let uri: http::Uri = match url.parse() {
        Ok(uri) => uri,
        Err(err) => {
            eprintln!("keygate: healthcheck: `{url}` is not a URL: {err}");
            return ExitCode::from(2);
        }
    };
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        eprintln!("keygate: healthcheck: `{url}` must be an http:// URL (the admin listener is plain HTTP)");
        return ExitCode::from(2);
    }
    block_on(std::num::NonZeroUsize::new(1), async move {
        match tokio::time::timeout(timeout, probe(uri)).await {
            Ok(Ok(status)) if status.is_success() => ExitCode::SUCCESS,
            Ok(Ok(status)) => {
                eprintln!("keygate: healthcheck `{url}`: status {status}");
                ExitCode::FAILURE
            }
            Ok(Err(err)) => {
                eprintln!("keygate: healthcheck `{url}`: {err}");
                ExitCode::FAILURE
            }
            Err(_) => {
                eprintln!(
                    "keygate: healthcheck `{url}`: no answer within {}",
                    humantime::format_duration(timeout)
                );
                ExitCode::FAILURE
            }
        }
    })
}

/// One GET over a fresh plain-HTTP connection; the status of the answer.
async fn probe(uri: http::Uri) -> Result<http::StatusCode, hyper_util::client::legacy::Error> {
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    let client: Client<HttpConnector, crate::body::Body> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new());
    let mut request = http::Request::new(crate::body::Body::Empty);
    *request.uri_mut() = uri;
    client.request(request).await.map(|r| r.status())
}

fn dev(options: DevOptions) -> ExitCode {
    block_on(None, async move {
        match crate::dev::run(options).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("keygate: {err}");
                ExitCode::FAILURE
            }
        }
    })
}

fn simulate(listen: SocketAddr, seed: Option<&Path>) -> ExitCode {
    let seed = match seed
        .map(Seed::from_path)
        .unwrap_or_else(|| Ok(Seed::builtin()))
    {
        Ok(seed) => seed,
        Err(err) => {
            eprintln!("keygate: {err}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    block_on(None, async move {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(err) => {
                eprintln!("keygate: cannot listen on `{listen}`: {err}");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().unwrap_or(listen);
        let sim = Arc::new(Simulator::new(seed));
        sim.set_public_base(&format!("http://{addr}"));
        println!(
            "Confluent IAM simulator listening on http://{addr} (org {})",
            sim.org_id()
        );
        for key in sim.demo_keys() {
            println!("  {:<12} {}:{}", key.principal_id, key.key_id, key.secret);
        }
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        match crate::simulator::serve(listener, sim, None, stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("keygate: simulator: {err}");
                ExitCode::FAILURE
            }
        }
    })
}

fn hash_secret() -> ExitCode {
    let mut secret = String::new();
    if std::io::stdin().read_line(&mut secret).is_err() {
        eprintln!("keygate: cannot read the secret from stdin");
        return ExitCode::FAILURE;
    }
    match crate::identity::directory::hash_secret(secret.trim_end_matches(['\r', '\n'])) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(_) => {
            eprintln!("keygate: no randomness available for the salt");
            ExitCode::FAILURE
        }
    }
}

fn block_on<F: std::future::Future<Output = ExitCode>>(
    workers: Option<std::num::NonZeroUsize>,
    future: F,
) -> ExitCode {
    match runtime(workers) {
        Ok(rt) => rt.block_on(future),
        Err(err) => {
            eprintln!("keygate: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    path: &Path,
    overrides: impl FnOnce(&mut Config) -> Result<(), crate::config::ConfigError>,
) -> ExitCode {
    let config = match Config::load(path).and_then(|mut c| {
        overrides(&mut c).map_err(|e| e.in_file(Path::new("--command-line")))?;
        Ok(c)
    }) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("keygate: config error: {err}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    // Everything the config names must load before anything starts, exactly as `keygate check`
    // loads it: a missing certificate, matrix or policy file is a config error, not a crash later.
    if let Err(problems) = crate::tools::preflight(&config) {
        let more = match problems.len() {
            0 | 1 => String::new(),
            n => format!(" ({} more: run `keygate check`)", n - 1),
        };
        if let Some(first) = problems.first() {
            eprintln!("keygate: config error: {}{more}", first.line(&config));
        }
        return ExitCode::from(EX_CONFIG);
    }
    block_on(config.runtime.worker_threads, async move {
        // Inside the runtime: trace exports run on it.
        let telemetry = match crate::telemetry::init_logging(&config.log, &config.telemetry) {
            Ok(telemetry) => telemetry,
            Err(err) => {
                eprintln!("keygate: {err}");
                return ExitCode::FAILURE;
            }
        };
        let code = match crate::build(config).await {
            Ok(gateway) => {
                gateway.run_until_signal().await;
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("keygate: {err}");
                ExitCode::from(start_exit_code(&err))
            }
        };
        // After the drain, so the spans of the last requests are exported too.
        telemetry.shutdown().await;
        code
    })
}

/// The exit code for a start-up failure: files the config names are configuration (78), the
/// rest (a port in use, no randomness) is an environment failure (1).
fn start_exit_code(err: &crate::StartError) -> u8 {
    use crate::StartError as E;
    match err {
        E::Tls(_) | E::Directory(_) | E::Authz(_) | E::Audit(_) | E::External(_) => EX_CONFIG,
        E::Bind { .. } | E::Random => 1,
    }
}

/// The async runtime: one worker means the current-thread scheduler (no work-stealing
/// synchronisation at all, measured cheaper per request when pinned to one core); otherwise the
/// multi-thread scheduler with the configured (or per-core) worker count.
fn runtime(workers: Option<std::num::NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match workers.map(|n| n.get()) {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().thread_name("keygate-worker");
    builder.build()
}
