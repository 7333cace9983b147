//! The deployment artefacts in `deploy/`: the container image, the Kubernetes manifests and the
//! systemd unit, checked against what keygate really does.
//!
//! No container engine or cluster runs here: the image is never built and nothing is applied. What
//! is checked instead: every manifest parses; the config each artefact ships loads with
//! [`keygate::config::Config`]; a keygate started with the Kubernetes ConfigMap's config answers the
//! probes and the scrape the manifests point at; ports, paths and the credential variable agree
//! across files; the security settings are present; `systemd-analyze` accepts the unit; the
//! Dockerfile builds with CI's cargo flags; `keygate healthcheck` and SIGHUP reloads work.

mod docker;
mod kubernetes;
mod systemd;
mod yaml;

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A repository file's text.
pub fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Replaces the organisation placeholder the shipped configs carry, after checking it is there.
pub fn with_org(config: &str, org: &str) -> String {
    assert_eq!(
        config.matches(ORG_PLACEHOLDER).count(),
        1,
        "the shipped config must carry the organisation placeholder exactly once"
    );
    config.replace(ORG_PLACEHOLDER, org)
}

/// What the shipped configs say instead of an organisation id; keygate must refuse it.
pub const ORG_PLACEHOLDER: &str = "<your-confluent-organisation-id>";

/// `path` with `root` prepended (absolute container paths staged in a temporary directory).
pub fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}
