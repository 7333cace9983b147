//! keygate: a policy-enforcing reverse proxy in front of the Confluent Cloud REST API.
//!
//! Every request flows through one pipeline (composed in [`app`], docs/architecture.md §1):
//!
//! ```text
//! downstream ─TLS?─► server ─► observe ─► guard ─► identity ─► rate limit ─► decide ─► audit gate ─► forward ─► upstream
//!                              (request id,  (framing,  (who is    (per caller,   (matrix,    (request_      (pool, TLS,
//!                               state)        path,      it)        per action)    Cedar,      received       timeouts,
//!                                             body)                                quota)      queued)        links)
//!                   ◄── observe (access log) ◄── audit (response_complete) ◄── rescue (errors → Confluent JSON) ◄─┘
//! ```
//!
//! Ungoverned routes (everything but `/iam/v2/api-keys…`) are forwarded byte for byte with
//! streaming bodies. Modules:
//! - [`server`]: listeners, TLS, HTTP/1.1 + h2, graceful drain; [`admin`]: health and metrics.
//! - [`egress`]: the forward-proxy listener (`HTTPS_PROXY`): intercepted hosts are served by the
//!   same pipeline, tunnelled hosts are copied byte for byte, anything else is refused.
//! - [`config`]: the TOML file, validated; [`error`]: the one error → response mapping.
//! - [`stages`]: the pipeline's stages over the modules below; [`state`]: one request's state.
//! - [`telemetry`]: logs, metrics, traces; [`env`]: the environment and the secrets switch.
//! - [`proxy`]: the upstream client and forwarding; [`policy`]: what a request asks and may do.
//! - [`reconcile`]: compares the organisation's keys upstream with the audit trail (what keygate
//!   cannot stop, it must see), and counts keys per cluster for the quota guard.
//! - [`simulator`]: an in-memory Confluent IAM API, the upstream of tests and `keygate dev`.
//! - [`cli`]: the `keygate` command.

pub mod admin;
pub mod app;
pub mod audit;
pub mod body;
pub mod cli;
pub mod config;

pub mod dev;
pub mod egress;
pub mod env;
pub mod error;
pub mod guard;
mod id;
pub mod identity;
pub mod model;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod reconcile;
pub mod redact;
pub mod reload;
pub mod server;
pub mod simulator;
pub mod stages;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod tools;

mod gateway;

pub use gateway::{build, Gateway, StartError};
