//! The live authorization data behind decisions: loading it (files or upstream), refreshing it in
//! the background, refusing to decide on stale data, and the on-demand inventory refresh for a
//! cluster the inventory does not know yet.
//!
//! Upstream-sourced data is fetched with keygate's own credential (never logged). A refresh that
//! fails keeps the previous data; once that data is older than `max_staleness`, creates fail
//! closed with 503 until a refresh succeeds.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use http::{HeaderValue, StatusCode};

use super::action::{Action, CreateSpec};
use super::bindings::BindingIndex;
use super::inventory::Inventory;
use super::matrix::Matrix;
use super::principal::Principal;
use super::source::{fetch_bindings, fetch_inventory, Fetch, FetchError, FetchFuture};
use super::{decide, AuthzData, AuthzSnapshot, Decision};
use crate::config::{AuthzConfig, DataSource};
use crate::proxy::Upstream;
use crate::redact::Secret;

/// Largest upstream list page keygate reads (100 items of about 1 KiB).
const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Why authorization data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// A file failed to load (the message names the file).
    #[error("{0}")]
    File(String),
    /// An upstream fetch failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Data would come from the upstream but keygate has no credential.
    #[error("no upstream credential configured")]
    NoCredential,
}

/// Reads a data file's text (the file system, or bytes a reload has already read).
pub type ReadFile<'a> = &'a (dyn Fn(&std::path::Path) -> Result<String, AuthzError> + Sync);

fn read_file(path: &std::path::Path) -> Result<String, AuthzError> {
    std::fs::read_to_string(path)
        .map_err(|e| AuthzError::File(format!("{}: cannot read: {e}", path.display())))
}

/// Fetches JSON from the upstream with keygate's own credential.
pub struct UpstreamFetch {
    upstream: Arc<Upstream>,
    authorization: HeaderValue,
}

impl std::fmt::Debug for UpstreamFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamFetch").finish_non_exhaustive()
    }
}

impl UpstreamFetch {
    /// A fetcher authenticating with `credential` (`KEY:SECRET`).
    pub fn new(upstream: Arc<Upstream>, credential: &Secret) -> Option<UpstreamFetch> {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(credential.expose());
        let mut authorization = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
        authorization.set_sensitive(true);
        Some(UpstreamFetch {
            upstream,
            authorization,
        })
    }
}

impl Fetch for UpstreamFetch {
    fn get_json<'a>(&'a self, path_and_query: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let (status, _, body) = self
                .upstream
                .get(path_and_query, &self.authorization, MAX_PAGE_BYTES)
                .await
                .map_err(|e| FetchError::Transport {
                    path: path_and_query.to_string(),
                    reason: e.to_string(),
                })?;
            if status != StatusCode::OK {
                return Err(FetchError::Status {
                    path: path_and_query.to_string(),
                    status: status.as_u16(),
                });
            }
            serde_json::from_slice(&body).map_err(|e| FetchError::Shape {
                path: path_and_query.to_string(),
                reason: format!("not JSON (line {}, column {})", e.line(), e.column()),
            })
        })
    }
}

/// See the module doc.
#[derive(Debug)]
pub struct AuthzRuntime {
    config: AuthzConfig,
    org: Option<super::org::OrgPolicyConfig>,
    fetch: Option<UpstreamFetch>,
    data: OnceLock<AuthzData>,
    last_inventory_refresh: Mutex<Option<Instant>>,
    inventory_refresh: tokio::sync::Mutex<()>,
    key_counts: Mutex<std::collections::HashMap<String, (u64, Instant)>>,
}

/// How long an owner's key count is reused: short, since it changes with every create.
pub const KEY_COUNT_TTL: std::time::Duration = std::time::Duration::from_secs(5);
/// Bound on cached key counts (cleared when full).
const MAX_KEY_COUNTS: usize = 10_000;

impl AuthzRuntime {
    /// A runtime with nothing loaded yet; call [`AuthzRuntime::refresh`].
    pub fn new(
        config: AuthzConfig,
        org: Option<super::org::OrgPolicyConfig>,
        fetch: Option<UpstreamFetch>,
    ) -> AuthzRuntime {
        AuthzRuntime {
            config,
            org,
            fetch,
            data: OnceLock::new(),
            last_inventory_refresh: Mutex::new(None),
            inventory_refresh: tokio::sync::Mutex::new(()),
            key_counts: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Whether data has been loaded at least once.
    pub fn is_loaded(&self) -> bool {
        self.data.get().is_some()
    }

    /// Whether any part comes from the upstream (and so needs periodic refresh).
    pub fn refreshes_from_upstream(&self) -> bool {
        self.config.bindings == DataSource::Upstream
            || self.config.inventory == DataSource::Upstream
    }

    /// The current snapshot, if loaded.
    pub fn snapshot(&self) -> Option<Arc<AuthzSnapshot>> {
        self.data.get().map(|d| Arc::clone(&d.load()))
    }

    fn fetcher(&self) -> Result<&UpstreamFetch, AuthzError> {
        self.fetch.as_ref().ok_or(AuthzError::NoCredential)
    }

    async fn load_bindings(&self, read: ReadFile<'_>) -> Result<BindingIndex, AuthzError> {
        match &self.config.bindings {
            DataSource::File(path) => {
                BindingIndex::from_toml_str(&read(path)?, &self.config.org_id)
                    .map_err(|e| AuthzError::File(format!("{}: {e}", path.display())))
            }
            DataSource::Upstream => Ok(fetch_bindings(self.fetcher()?, &self.config.org_id).await?),
        }
    }

    async fn load_inventory(&self, read: ReadFile<'_>) -> Result<Inventory, AuthzError> {
        match &self.config.inventory {
            DataSource::File(path) => Inventory::from_toml_str(&read(path)?)
                .map_err(|e| AuthzError::File(format!("{}: {e}", path.display()))),
            DataSource::Upstream => Ok(fetch_inventory(self.fetcher()?).await?),
        }
    }

    /// Loads (or reloads) every part. On error nothing changes.
    pub async fn refresh(&self) -> Result<(), AuthzError> {
        let mut snapshot = self.load_snapshot().await?;
        if let Some(current) = self.snapshot() {
            snapshot = snapshot.with_revision(current.revision().clone());
        }
        self.install(snapshot);
        Ok(())
    }

    /// Stamps the live data with the policy-set revision (after start-up).
    pub fn set_revision(&self, revision: Arc<String>) {
        if let Some(data) = self.data.get() {
            data.set_revision(revision);
        }
    }

    /// Loads every part into a new snapshot without installing it (the first half of an atomic
    /// reload).
    pub async fn load_snapshot(&self) -> Result<AuthzSnapshot, AuthzError> {
        self.load_snapshot_from(&read_file).await
    }

    /// Like [`AuthzRuntime::load_snapshot`], taking file contents from `read` — so a reload parses
    /// exactly the bytes it computed the revision from.
    pub async fn load_snapshot_from(
        &self,
        read: ReadFile<'_>,
    ) -> Result<AuthzSnapshot, AuthzError> {
        let path = &self.config.matrix;
        let matrix = Matrix::from_toml_str(&read(path)?)
            .map_err(|e| AuthzError::File(format!("{}: {e}", path.display())))?;
        let bindings = self.load_bindings(read).await?;
        let inventory = self.load_inventory(read).await?;
        let org = match &self.org {
            Some(cfg) => Some(Arc::new(super::org::OrgPolicies::load(cfg).map_err(
                |errors| {
                    AuthzError::File(
                        errors
                            .iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                            .join("; "),
                    )
                },
            )?)),
            None => None,
        };
        Ok(AuthzSnapshot::new(
            Arc::new(matrix),
            Arc::new(bindings),
            Arc::new(inventory),
            Instant::now(),
        )
        .with_org(org))
    }

    /// The files this data is loaded from (matrix, and bindings/inventory when file-sourced).
    pub fn files(&self) -> Vec<std::path::PathBuf> {
        let mut files = vec![self.config.matrix.clone()];
        if let Some(org) = &self.org {
            files.push(org.schema_path());
            if let Ok(entries) = std::fs::read_dir(&org.dir) {
                let mut cedar: Vec<_> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
                    .collect();
                cedar.sort();
                files.extend(cedar);
            }
        }
        for source in [&self.config.bindings, &self.config.inventory] {
            if let DataSource::File(path) = source {
                files.push(path.clone());
            }
        }
        files
    }

    /// Installs a loaded snapshot (the second half of an atomic reload).
    pub fn install(&self, snapshot: AuthzSnapshot) {
        match self.data.get() {
            Some(data) => data.store(snapshot),
            None => {
                if let Err(lost) = self.data.set(AuthzData::new(snapshot)) {
                    // A concurrent first load won; store ours over it (it is at least as new).
                    if let Some(data) = self.data.get() {
                        data.store(AuthzSnapshot::clone(&lost.load()));
                    }
                }
            }
        }
    }

    /// Refreshes the inventory alone, at most once per configured interval (an unknown cluster
    /// must not turn every request into an upstream sync). Returns whether it refreshed.
    async fn refresh_inventory_once(&self) -> bool {
        let _only_one = self.inventory_refresh.lock().await;
        {
            let mut last = self
                .last_inventory_refresh
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < self.config.inventory_refresh_min_interval) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match self.load_inventory(&read_file).await {
            Ok(inventory) => {
                if let Some(data) = self.data.get() {
                    data.replace_inventory(inventory, Instant::now());
                }
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, "Inventory refresh failed");
                false
            }
        }
    }

    /// Layer 1 for one request, with the snapshot that decided (its revision and org policies).
    /// Fails closed (`Err` with a reason) when there is no data or it is too stale to trust.
    pub async fn decide(
        &self,
        principal: &Principal,
        action: Action,
        spec: Option<&CreateSpec>,
    ) -> Result<(Decision, Arc<AuthzSnapshot>), String> {
        let Some(data) = self.data.get() else {
            return Err(
                "authorization data (role bindings, inventory) has not been loaded yet".into(),
            );
        };
        let snapshot = data.load();
        if action == Action::CreateApiKey {
            self.check_fresh(&snapshot)?;
        }
        let decision = decide(&snapshot, principal, action, spec);
        // Boxed: the refresh (an upstream sync) is rare, and its state would otherwise be part of
        // every governed request's future.
        if !decision.needs_inventory_refresh() || !Box::pin(self.refresh_inventory_once()).await {
            return Ok((decision, Arc::clone(&snapshot)));
        }
        let snapshot = data.load_full();
        Ok((decide(&snapshot, principal, action, spec), snapshot))
    }

    fn check_fresh(&self, snapshot: &AuthzSnapshot) -> Result<(), String> {
        let max = self.config.max_staleness;
        for (what, source, at) in [
            (
                "role bindings",
                &self.config.bindings,
                snapshot.bindings_refreshed_at(),
            ),
            (
                "resource inventory",
                &self.config.inventory,
                snapshot.inventory_refreshed_at(),
            ),
        ] {
            let age = at.elapsed();
            if *source == DataSource::Upstream && age > max {
                return Err(format!(
                    "the {what} could not be refreshed from Confluent Cloud for {} (limit {})",
                    in_millis(age),
                    in_millis(max)
                ));
            }
        }
        Ok(())
    }

    /// How many API keys `owner` holds, from the upstream with keygate's own credential
    /// (`metadata.total_size` of a one-item page), cached for [`KEY_COUNT_TTL`]. `None` when it
    /// cannot be known (no credential, upstream error).
    pub async fn owner_key_count(&self, owner: &str) -> Option<u64> {
        if let Some((count, at)) = self
            .key_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(owner)
        {
            if at.elapsed() < KEY_COUNT_TTL {
                return Some(*count);
            }
        }
        if !owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return None;
        }
        let path = format!("/iam/v2/api-keys?spec.owner={owner}&page_size=1");
        let json = self.fetch.as_ref()?.get_json(&path).await.ok()?;
        let count = json["metadata"]["total_size"].as_u64()?;
        let mut counts = self.key_counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() >= MAX_KEY_COUNTS {
            counts.clear();
        }
        counts.insert(owner.to_string(), (count, Instant::now()));
        Some(count)
    }

    /// Counts a create that was just allowed for `owner` in the cached key count.
    pub fn note_key_created(&self, owner: &str) {
        if let Some((count, _)) = self
            .key_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(owner)
        {
            *count += 1;
        }
    }

    /// How often upstream-sourced data is refreshed.
    pub fn refresh_interval(&self) -> std::time::Duration {
        self.config.refresh_interval
    }
}

/// `d` to the millisecond, as config durations are written (`300ms`, `15m`, `1m 30s 250ms`): whole
/// seconds would print a sub-second limit as `0s`.
fn in_millis(d: std::time::Duration) -> humantime::FormattedDuration {
    let millis = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    humantime::format_duration(std::time::Duration::from_millis(millis))
}
