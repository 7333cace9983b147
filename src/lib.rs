//! keygate: a policy-enforcing reverse proxy in front of the Confluent Cloud REST API.

pub mod audit;
pub mod policy;
pub mod redact;
