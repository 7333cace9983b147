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

use super::bindings::BindingIndex;
use super::external::ExternalBindings;
use super::inventory::Inventory;
use super::matrix::Matrix;
use super::revision::{part_revisions, revision, PartRevisions, Revision, RevisionInputs};
use super::source::{fetch_bindings, fetch_inventory, Fetch, FetchError, FetchFuture};
use super::{decide_matrix, AuthzData, AuthzSnapshot, Decision};
use crate::model::Principal;
use crate::model::{Action, CreateSpec};
use crate::policy::config::{AuthzConfig, DataSource};
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
    /// Files of the policy set do not load; every problem, with the config field naming the file.
    #[error("{}", .0.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; "))]
    Files(Vec<FileProblem>),
}

/// One problem with a file of the policy set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// The config field that names the file (`authz.matrix`, `authz.bindings`,
    /// `authz.inventory`, `policy`).
    pub field: &'static str,
    /// What is wrong, naming the file (`file:line:column: message` for policy files).
    pub message: String,
}

/// Reads a data file's text (the file system, or bytes a reload has already read).
pub type ReadFile<'a> = &'a (dyn Fn(&std::path::Path) -> Result<String, AuthzError> + Sync);

/// Reads a data file from the file system.
pub fn read_file(path: &std::path::Path) -> Result<String, AuthzError> {
    std::fs::read_to_string(path)
        .map_err(|e| AuthzError::File(format!("{}: cannot read: {e}", path.display())))
}

/// Why zero role bindings is not a state to serve in, naming where they came from.
fn no_bindings_reason(config: &AuthzConfig) -> String {
    let source = match &config.bindings {
        DataSource::File(path) => format!("`{}`", path.display()),
        DataSource::Upstream => "Confluent Cloud".to_owned(),
    };
    format!(
        "no role bindings for organisation `{}` in {source}: check `authz.org_id` (and that keygate's credential may list role bindings)",
        config.org_id
    )
}

fn parse_inventory(path: &std::path::Path, text: &str) -> Result<Inventory, AuthzError> {
    Inventory::from_toml_str(text).map_err(|e| AuthzError::File(format!("{}: {e}", path.display())))
}

/// Fetches JSON from the upstream with keygate's own credential ([`UpstreamFetch::new`]) or, for
/// a lookup on a caller's behalf, with the caller's ([`UpstreamFetch::as_caller`]).
pub struct UpstreamFetch {
    upstream: Arc<Upstream>,
    authorization: HeaderValue,
    /// Largest response read.
    limit: usize,
    /// Keep 4xx answers whole ([`FetchError::Refused`]) so they can be passed on.
    keep_refusals: bool,
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
            limit: MAX_PAGE_BYTES,
            keep_refusals: false,
        })
    }

    /// A fetcher reading with the caller's own `Authorization` value, at most `limit` bytes per
    /// answer, keeping refusals (4xx) whole so the caller receives the upstream's own answer.
    pub fn as_caller(upstream: Arc<Upstream>, authorization: &HeaderValue, limit: usize) -> Self {
        let mut authorization = authorization.clone();
        authorization.set_sensitive(true);
        UpstreamFetch {
            upstream,
            authorization,
            limit,
            keep_refusals: true,
        }
    }
}

impl Fetch for UpstreamFetch {
    fn get_json<'a>(&'a self, path_and_query: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let (status, headers, body) = self
                .upstream
                .get(path_and_query, &self.authorization, self.limit)
                .await
                .map_err(|e| FetchError::Transport {
                    path: path_and_query.to_string(),
                    reason: e.to_string(),
                })?;
            if self.keep_refusals && status.is_client_error() {
                return Err(FetchError::Refused {
                    path: path_and_query.to_string(),
                    answer: Box::new(super::source::Refusal {
                        status,
                        headers,
                        body,
                    }),
                });
            }
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
    /// The rate limits in force, as they enter the policy revision.
    rate_limits: Mutex<Arc<str>>,
}

/// What the configured files hold, loaded without the upstream: the parts of the policy set
/// that are files, and the policy revision of the whole set.
#[derive(Debug)]
pub struct FileData {
    /// The RBAC creation matrix.
    pub matrix: Matrix,
    /// The role bindings, when they come from a file.
    pub bindings: Option<BindingIndex>,
    /// The resource inventory, when it comes from a file.
    pub inventory: Option<Inventory>,
    /// The organisation policies, when configured.
    pub org: Option<Arc<super::org::OrgPolicies>>,
    /// The keygate-side bindings of external principals (empty when not configured).
    pub external_bindings: Arc<ExternalBindings>,
    /// The policy revision (`policy::revision`).
    pub revision: Revision,
    /// The revisions of its parts.
    pub parts: Arc<PartRevisions>,
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
            rate_limits: Mutex::new(Arc::from("")),
        }
    }

    /// The same runtime with the rate limits in force (`RateLimitConfig::canonical`), which are
    /// part of the policy revision.
    pub fn with_rate_limits(self, canonical: &str) -> AuthzRuntime {
        *self.rate_limits.lock().unwrap_or_else(|p| p.into_inner()) = Arc::from(canonical);
        self
    }

    /// The rate limits in force, as they enter the policy revision.
    pub fn rate_limits(&self) -> Arc<str> {
        self.rate_limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The policy revision of the data in force, once loaded.
    pub fn revision(&self) -> Option<Revision> {
        self.data.get().map(|d| d.load().revision().clone())
    }

    /// Whether data has been loaded at least once.
    pub fn is_loaded(&self) -> bool {
        self.data.get().is_some()
    }

    /// `Ok` when keygate can decide: data is loaded and holds at least one role binding for the
    /// organisation. Zero bindings means every create would be denied for want of a role —
    /// almost always a wrong `authz.org_id` (or a credential that cannot list bindings) — so it
    /// counts as not ready, with the reason.
    pub fn readiness(&self) -> Result<(), String> {
        let Some(data) = self.data.get() else {
            return Err("authorization data not loaded".into());
        };
        if data.load().bindings().is_empty() {
            return Err(no_bindings_reason(&self.config));
        }
        Ok(())
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

    async fn load_inventory(&self) -> Result<Inventory, AuthzError> {
        match &self.config.inventory {
            DataSource::File(path) => parse_inventory(path, &read_file(path)?),
            DataSource::Upstream => Ok(fetch_inventory(self.fetcher()?).await?),
        }
    }

    /// Loads (or reloads) every part. On error nothing changes.
    pub async fn refresh(&self) -> Result<(), AuthzError> {
        let snapshot = self.load_snapshot().await?;
        self.install(snapshot);
        Ok(())
    }

    /// Loads every part into a new snapshot without installing it (the first half of an atomic
    /// reload).
    pub async fn load_snapshot(&self) -> Result<AuthzSnapshot, AuthzError> {
        self.load_snapshot_from(&read_file, &self.rate_limits())
            .await
    }

    /// Loads what comes from files — the matrix, file-sourced bindings and inventory, the
    /// organisation policies — and computes the policy revision, without contacting anything:
    /// what `keygate check` and `keygate explain` load, and the first step of every load.
    /// Every part is tried, so one run reports every problem.
    pub fn load_files(
        &self,
        read: ReadFile<'_>,
        rate_limits: &str,
    ) -> Result<FileData, AuthzError> {
        let mut problems = Vec::new();
        let mut problem = |field: &'static str, message: String| {
            problems.push(FileProblem { field, message });
        };
        let path = &self.config.matrix;
        let matrix_text = read(path)
            .map_err(|e| problem("authz.matrix", e.to_string()))
            .ok();
        let matrix = matrix_text.as_deref().and_then(|text| {
            Matrix::from_toml_str(text)
                .map_err(|e| problem("authz.matrix", format!("{}: {e}", path.display())))
                .ok()
        });
        let mut text_of = |field: &'static str, source: &DataSource| match source {
            DataSource::File(path) => read(path)
                .map_err(|e| problem(field, e.to_string()))
                .map(Some),
            DataSource::Upstream => Ok(None),
        };
        let bindings_text = text_of("authz.bindings", &self.config.bindings);
        let inventory_text = text_of("authz.inventory", &self.config.inventory);
        let bindings = match (&self.config.bindings, &bindings_text) {
            (DataSource::File(path), Ok(Some(text))) => {
                match BindingIndex::from_toml_str(text, &self.config.org_id) {
                    Ok(index) => Some(index),
                    Err(e) => {
                        problem("authz.bindings", format!("{}: {e}", path.display()));
                        None
                    }
                }
            }
            _ => None,
        };
        let inventory = match (&self.config.inventory, &inventory_text) {
            (DataSource::File(path), Ok(Some(text))) => match parse_inventory(path, text) {
                Ok(inventory) => Some(inventory),
                Err(e) => {
                    problem("authz.inventory", e.to_string());
                    None
                }
            },
            _ => None,
        };
        let external_text = self.config.external_bindings.as_ref().and_then(|path| {
            read(path)
                .map_err(|e| problem("identity.external_bindings", e.to_string()))
                .ok()
                .map(|text| (path, text))
        });
        let external_bindings = match (&external_text, &matrix) {
            (Some((path, text)), Some(matrix)) => {
                match ExternalBindings::from_toml_str(text, &self.config.org_id, matrix) {
                    Ok(index) => Some(index),
                    Err(e) => {
                        problem(
                            "identity.external_bindings",
                            format!("{}: {e}", path.display()),
                        );
                        None
                    }
                }
            }
            _ => None,
        };
        // While a set is in force, a team's broken files keep that team's last good set.
        let previous = self.snapshot();
        let previous = previous.as_ref().and_then(|s| s.org_policies());
        let org = match &self.org {
            Some(cfg) => match previous.map_or_else(
                || super::org::OrgPolicies::load(cfg),
                |previous| super::org::OrgPolicies::reload(cfg, previous),
            ) {
                Ok(policies) => Some(Some(Arc::new(policies))),
                Err(errors) => {
                    for e in errors {
                        problem("policy", e.to_string());
                    }
                    None
                }
            },
            None => Some(None),
        };
        let (Some(matrix_text), Some(matrix), Ok(bindings_text), Ok(inventory_text), Some(org)) =
            (matrix_text, matrix, bindings_text, inventory_text, org)
        else {
            return Err(AuthzError::Files(problems));
        };
        if !problems.is_empty() {
            return Err(AuthzError::Files(problems));
        }
        let inputs = RevisionInputs {
            matrix: &matrix_text,
            bindings: bindings_text.as_deref(),
            inventory: inventory_text.as_deref(),
            org: org.as_ref().map(|o| o.digest()),
            rate_limits,
            external_bindings: external_text.as_ref().map(|(_, text)| text.as_str()),
        };
        let (revision, parts) = (revision(&inputs), part_revisions(&inputs));
        Ok(FileData {
            matrix,
            bindings,
            inventory,
            org,
            external_bindings: Arc::new(external_bindings.unwrap_or_default()),
            revision,
            parts,
        })
    }

    /// Like [`AuthzRuntime::load_snapshot`], taking file contents from `read` — so a reload parses
    /// exactly the bytes it computed its change detection from — and the rate limits the new set
    /// will have (they are part of the revision).
    pub async fn load_snapshot_from(
        &self,
        read: ReadFile<'_>,
        rate_limits: &str,
    ) -> Result<AuthzSnapshot, AuthzError> {
        let files = self.load_files(read, rate_limits)?;
        let bindings = match files.bindings {
            Some(bindings) => bindings,
            None => fetch_bindings(self.fetcher()?, &self.config.org_id).await?,
        };
        let inventory = match files.inventory {
            Some(inventory) => inventory,
            None => fetch_inventory(self.fetcher()?).await?,
        };
        Ok(AuthzSnapshot::new(
            Arc::new(files.matrix),
            Arc::new(bindings),
            Arc::new(inventory),
            Instant::now(),
        )
        .with_org(files.org)
        .with_external_bindings(files.external_bindings)
        .with_revision(files.revision)
        .with_parts(files.parts))
    }

    /// The files this data is loaded from (matrix, policy files, team sets' files, and
    /// bindings/inventory when file-sourced).
    pub fn files(&self) -> Vec<std::path::PathBuf> {
        let mut files = vec![self.config.matrix.clone()];
        if let Some(org) = &self.org {
            files.push(org.schema_path());
            files.extend(org.policy_files());
        }
        for source in [&self.config.bindings, &self.config.inventory] {
            if let DataSource::File(path) = source {
                files.push(path.clone());
            }
        }
        files.extend(self.config.external_bindings.iter().cloned());
        files
    }

    /// Installs a snapshot loaded with new rate limits (the second half of an atomic reload):
    /// later refreshes compute the revision with them.
    pub fn install_with_rate_limits(&self, snapshot: AuthzSnapshot, rate_limits: &str) {
        *self.rate_limits.lock().unwrap_or_else(|p| p.into_inner()) = Arc::from(rate_limits);
        self.install(snapshot);
    }

    /// Installs a loaded snapshot.
    pub fn install(&self, snapshot: AuthzSnapshot) {
        if snapshot.bindings().is_empty() {
            tracing::warn!(
                org.id = %self.config.org_id,
                reason = %no_bindings_reason(&self.config),
                "No role bindings for this organisation: not ready"
            );
        }
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
        match self.load_inventory().await {
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
        let decision = decide_matrix(&snapshot, principal, action, spec);
        // Boxed: the refresh (an upstream sync) is rare, and its state would otherwise be part of
        // every governed request's future.
        if !decision.needs_inventory_refresh() || !Box::pin(self.refresh_inventory_once()).await {
            return Ok((decision, Arc::clone(&snapshot)));
        }
        let snapshot = data.load_full();
        Ok((decide_matrix(&snapshot, principal, action, spec), snapshot))
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
