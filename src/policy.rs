//! Policy: what a governed request asks for, and whether the caller may do it.
//!
//! Layer 1 is Confluent's RBAC creation matrix (kept as data in `policies/`); layer 2 (later) is
//! the organisation's own policies. This module decides; it never forwards and never logs secrets.

pub mod action;
pub mod principal;
