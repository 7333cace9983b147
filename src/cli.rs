//! The `keygate` command line: `serve`, and the tools around it.
//!
//! Exit codes: 0 success, 1 failure at run time, 2 usage error (clap), 78 (`EX_CONFIG`) for a
//! configuration that does not load — always as one line on stderr naming the file and field.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, EX_CONFIG};

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
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(&config),
    }
}

fn serve(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("keygate: config error: {err}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    crate::telemetry::init_logging(&config.log);
    let runtime = match runtime(config.runtime.worker_threads) {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("keygate: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
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

fn runtime(workers: Option<std::num::NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("keygate-worker");
    if let Some(n) = workers {
        builder.worker_threads(n.get());
    }
    builder.build()
}
