//! Hot reload of the policy set: rate limits (from the config file), the RBAC matrix, file-sourced
//! role bindings and inventory (and, with them, organisation policies).
//!
//! Triggered by SIGHUP or by a change of any watched file (polled by content, so a Kubernetes
//! ConfigMap's atomic symlink swap is seen like any edit). The new set is loaded and validated
//! completely off the request path, then swapped in at once; an invalid set is rejected with a log
//! line and a metric, and the old one stays in force. Team policy sets (`policy::org::team`) are
//! isolated from each other: a team whose files do not load keeps its last good set while the rest
//! of the reload goes through, and each team's outcome is logged and counted
//! (`keygate_reloads_total{team,result}`). The active set's revision
//! (`policy::revision`, computed when the set is loaded) is exposed at `/metrics` and `/readyz`
//! and attached to every decision.
//!
//! Listener, upstream, identity and audit settings are not reloaded: they need a restart.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::{config_dir, Config, ConfigError, Secrets};
use crate::policy::org::{TeamResult, PLATFORM_SET};
use crate::policy::runtime::{AuthzError, AuthzRuntime};
use crate::ratelimit::RateLimiter;
use crate::telemetry::metrics::{ReloadLabels, RevisionLabels};
use crate::telemetry::Metrics;

/// How often watched files are checked for changes (a change is loaded after two equal polls).
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Why a reload was rejected (the old set stays in force).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config file no longer loads.
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// Authorization data does not load.
    #[error("authorization data: {0}")]
    Authz(#[from] AuthzError),
}

pub use crate::policy::revision::Revision;

/// See the module doc.
#[derive(Debug)]
pub struct Reloader {
    config_path: Option<PathBuf>,
    limiter: Arc<ArcSwap<RateLimiter>>,
    authz: Arc<AuthzRuntime>,
    metrics: Arc<Metrics>,
    /// What the watched files looked like when last loaded (change detection only; never shown).
    fingerprint: Mutex<[u8; 32]>,
    /// The revision `keygate_policy_revision_info` currently exports.
    published: Mutex<Option<Revision>>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader over the live pieces; exports the revision of the data loaded so far.
    pub fn new(
        config: &Config,
        limiter: Arc<ArcSwap<RateLimiter>>,
        authz: Arc<AuthzRuntime>,
        metrics: Arc<Metrics>,
    ) -> Arc<Reloader> {
        let reloader = Reloader {
            config_path: config.source_path.clone(),
            limiter,
            authz,
            metrics,
            fingerprint: Mutex::new([0; 32]),
            published: Mutex::new(None),
            one_at_a_time: tokio::sync::Mutex::new(()),
        };
        *reloader
            .fingerprint
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = reloader.fingerprint();
        reloader.publish();
        Arc::new(reloader)
    }

    /// The active revision (empty until authorization data has loaded).
    pub fn revision(&self) -> Revision {
        self.authz.revision().unwrap_or_default()
    }

    /// Exports the revision in force as `keygate_policy_revision_info` (after a reload, or a
    /// background refresh that loaded the files anew), dropping the previous one.
    pub fn publish(&self) {
        let Some(current) = self.authz.revision() else {
            return;
        };
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        if published.as_ref() == Some(&current) {
            return;
        }
        if let Some(old) = published.take() {
            self.metrics.revision.remove(&RevisionLabels {
                revision: old.to_string(),
            });
        }
        self.metrics
            .revision
            .get_or_create(&RevisionLabels {
                revision: current.to_string(),
            })
            .set(1);
        *published = Some(current);
    }

    fn watched(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.config_path.iter().cloned().collect();
        files.extend(self.authz.files());
        files
    }

    /// Reads every watched file once.
    fn read(&self) -> Snapshot {
        Snapshot(
            self.watched()
                .into_iter()
                .map(|path| {
                    let text = std::fs::read_to_string(&path).map_err(|e| e.kind());
                    (path, text)
                })
                .collect(),
        )
    }

    fn fingerprint(&self) -> [u8; 32] {
        self.read().fingerprint()
    }

    /// Loads and validates the whole set, then swaps it in; on error nothing changes.
    pub async fn reload(&self) -> Result<Revision, ReloadError> {
        self.reload_expecting(None)
            .await
            .map(|r| r.unwrap_or_else(|| self.revision()))
    }

    /// Reloads; with `expected`, only if the files still have exactly that content (the watcher's
    /// debounce), returning `None` when they moved on.
    async fn reload_expecting(
        &self,
        expected: Option<[u8; 32]>,
    ) -> Result<Option<Revision>, ReloadError> {
        let _one = self.one_at_a_time.lock().await;
        // Read once: the revision is the hash of exactly the bytes that are parsed.
        let files = self.read();
        let fingerprint = files.fingerprint();
        if expected.is_some_and(|e| e != fingerprint) {
            return Ok(None);
        }
        let outcome = async {
            let ratelimit = match &self.config_path {
                // Only the rate limits are taken from the new file, so its credential is not
                // read again; its relative paths mean what they meant at start-up.
                Some(path) => Some(
                    Config::parse(
                        &files
                            .text(path)
                            .map_err(|e| ConfigError::file(e.to_string()).in_file(path))?,
                        config_dir(path),
                        Secrets::Skip,
                    )
                    .map_err(|e| e.in_file(path))?
                    .ratelimit,
                ),
                None => None,
            };
            let rate_limits: Arc<str> = match &ratelimit {
                Some(r) => Arc::from(r.canonical()),
                None => self.authz.rate_limits(),
            };
            let snapshot = self
                .authz
                .load_snapshot_from(&|path| files.text(path), &rate_limits)
                .await?;
            Ok::<_, ReloadError>((ratelimit, rate_limits, snapshot))
        }
        .await;
        match outcome {
            Ok((ratelimit, rate_limits, snapshot)) => {
                if let Some(ratelimit) = ratelimit {
                    let next = self.limiter.load().reconfigure(&ratelimit);
                    self.limiter.store(Arc::new(next));
                }
                // The revision travels inside the snapshot: a decision and its revision are one load.
                self.authz.install_with_rate_limits(snapshot, &rate_limits);
                *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) = fingerprint;
                self.publish();
                self.count(PLATFORM_SET, "ok");
                let revision = self.revision();
                self.report_teams(&revision);
                tracing::info!(policy.revision = %revision, "Policy set reloaded");
                Ok(Some(revision))
            }
            Err(err) => {
                // Remember the broken content so the watcher does not retry it every tick.
                *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) = fingerprint;
                self.count(PLATFORM_SET, "rejected");
                tracing::error!(error = %err, policy.revision = %self.revision(), "Reload rejected; the previous policy set stays in force");
                Err(err)
            }
        }
    }

    fn count(&self, team: &str, result: &'static str) {
        self.metrics
            .reloads
            .get_or_create(&ReloadLabels {
                team: team.to_owned(),
                result,
            })
            .inc();
    }

    /// Counts and logs what the reload in force did with each team's set: a team whose files were
    /// rejected keeps its last good set (or has none), and says why.
    fn report_teams(&self, revision: &Revision) {
        let Some(snapshot) = self.authz.snapshot() else {
            return;
        };
        let Some(org) = snapshot.org_policies() else {
            return;
        };
        for outcome in org.team_outcomes() {
            self.count(&outcome.team, outcome.result.label());
            let (kept, errors) = match &outcome.result {
                TeamResult::Loaded => continue,
                TeamResult::Removed => {
                    tracing::info!(team = %outcome.team, policy.revision = %revision, "Team policy set removed");
                    continue;
                }
                TeamResult::KeptLastGood(errors) => (true, errors),
                TeamResult::NotLoaded(errors) => (false, errors),
            };
            let error = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            if kept {
                tracing::error!(team = %outcome.team, error = %error, policy.revision = %revision, "Team policy set rejected; the team's last good set stays in force");
            } else {
                tracing::error!(team = %outcome.team, error = %error, policy.revision = %revision, "Team policy set rejected; the team has no set in force");
            }
        }
    }

    /// Polls the watched files and reloads when one changed and then stayed the same for one
    /// more interval (so a file caught half-written is never loaded), until the task is aborted.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending: Option<[u8; 32]> = None;
        loop {
            tick.tick().await;
            let now = self.fingerprint();
            let loaded = *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner());
            if now == loaded {
                pending = None;
            } else if pending == Some(now) {
                pending = None;
                // The outcome is logged and counted by `reload_expecting`.
                let _ = self.reload_expecting(Some(now)).await;
            } else {
                pending = Some(now);
            }
        }
    }
}

/// The watched files as read at one moment.
struct Snapshot(Vec<(PathBuf, Result<String, std::io::ErrorKind>)>);

impl Snapshot {
    /// SHA-256 over the files' names and contents (an unreadable file hashes as such).
    fn fingerprint(&self) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for (path, text) in &self.0 {
            ctx.update(path.to_string_lossy().as_bytes());
            ctx.update(&[0]);
            match text {
                Ok(text) => {
                    ctx.update(&(text.len() as u64).to_le_bytes());
                    ctx.update(text.as_bytes());
                }
                Err(kind) => ctx.update(format!("unreadable: {kind}").as_bytes()),
            }
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// The text of one of the files read.
    fn text(&self, path: &std::path::Path) -> Result<String, AuthzError> {
        match self.0.iter().find(|(p, _)| p == path) {
            Some((_, Ok(text))) => Ok(text.clone()),
            Some((_, Err(kind))) => Err(AuthzError::File(format!(
                "{}: cannot read: {kind}",
                path.display()
            ))),
            None => std::fs::read_to_string(path)
                .map_err(|e| AuthzError::File(format!("{}: cannot read: {e}", path.display()))),
        }
    }
}
