//! keygate: a policy-enforcing reverse proxy in front of the Confluent Cloud REST API.

pub mod guard;
pub mod policy;
