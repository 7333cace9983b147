//! keygate's integration tests: one binary, real sockets on 127.0.0.1 ephemeral ports.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support code panics on setup failure, like the tests themselves"
)]

mod support;

mod admin;
mod audit;
mod canary;
mod cli;
mod crash;
mod decisions;
mod deploy;
mod dev;
mod differential;
mod drain;
mod egress;
mod external_bindings;
mod forwarding;
mod guard;
mod hostile;
mod identity;
mod jwt;
mod links;
mod mtls;
mod org_policies;
mod otel;
mod policy_cli;
mod pool;
mod python_client;
mod quota;
mod ratelimit;
mod reconcile;
mod reload;
mod replay;
mod shared_limits;
mod structure;
mod teams;
mod tls;
mod transparency;
mod webhook;
