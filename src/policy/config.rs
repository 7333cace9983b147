//! `[authz]`: where layer 1's data comes from. Owned here, assembled into keygate's config by
//! `config`.

use std::path::PathBuf;
use std::time::Duration;

/// Where one kind of authorization data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A TOML file (GitOps, development).
    File(PathBuf),
    /// The upstream, with keygate's own credential, refreshed in the background.
    Upstream,
}

/// Authorization data for layer 1.
#[derive(Debug, Clone)]
pub struct AuthzConfig {
    /// The Confluent organisation id (UUID).
    pub org_id: crate::policy::crn::OrgId,
    /// The RBAC creation matrix file.
    pub matrix: PathBuf,
    /// Role bindings.
    pub bindings: DataSource,
    /// Resource inventory.
    pub inventory: DataSource,
    /// keygate-side role bindings of external principals (`identity.external_bindings`), a file.
    pub external_bindings: Option<PathBuf>,
    /// How often upstream-sourced data is refreshed.
    pub refresh_interval: Duration,
    /// Past this age, upstream-sourced data is too stale to decide creates on (503).
    pub max_staleness: Duration,
    /// At most one on-demand inventory refresh (for an unknown cluster) per this interval.
    pub inventory_refresh_min_interval: Duration,
}
