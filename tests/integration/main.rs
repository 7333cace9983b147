//! keygate's integration tests: one binary, real sockets on 127.0.0.1 ephemeral ports.

mod support;

mod admin;
mod cli;
mod drain;
mod forwarding;
mod tls;
