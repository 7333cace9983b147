//! The `keygate` command line: `serve`, and the tools around it.
//!
//! Exit codes: 0 success, 1 failure at run time, 2 usage error (clap), 78 (`EX_CONFIG`) for a
//! configuration that does not load — always as one line on stderr naming the file and field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

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
    /// Hash an API secret read from stdin for the static key directory.
    HashSecret,
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
        } => dev(DevOptions {
            listen,
            admin_listen,
        }),
        Command::Simulate { listen, seed } => simulate(listen, seed.as_deref()),
        Command::HashSecret => hash_secret(),
    }
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
    crate::telemetry::init_logging(&config.log);
    block_on(config.runtime.worker_threads, async move {
        match crate::build(config).await {
            Ok(gateway) => {
                gateway.run_until_signal().await;
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("keygate: {err}");
                ExitCode::FAILURE
            }
        }
    })
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
