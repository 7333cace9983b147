//! `[reconcile]`: its settings, owned here and assembled into keygate's config by `config`.

use std::time::Duration;

/// How long a create may take before its missing outcome is a finding, and how old a key must be
/// before it is judged: longer than any request keygate lets run (`upstream.request_timeout`
/// defaults to 30 s), so nothing in flight is reported.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// `[reconcile]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileConfig {
    /// Run inside `serve` this often (and once at start); `None`: only `keygate reconcile`.
    pub interval: Option<Duration>,
    /// See [`DEFAULT_GRACE`].
    pub grace: Duration,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            interval: None,
            grace: DEFAULT_GRACE,
        }
    }
}
