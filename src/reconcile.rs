//! Reconcile: what keygate cannot stop, it must see.
//!
//! The Cloud Console does not use the public API, and anyone who reaches Confluent directly
//! bypasses keygate. So keygate also watches: a run lists every API key of the organisation
//! upstream (every page, with keygate's own credential), compares the listing with its own audit
//! trail, and reports
//! - **unmanaged** keys: exist upstream, never created through keygate;
//! - **vanished** keys: created through keygate, gone upstream without a recorded delete;
//! - **unresolved** creates: a `request_received` record without an outcome (keygate stopped, or
//!   the upstream never answered), matched to the key it most likely created.
//!
//! Each finding becomes one audit event (`io.keygate.apikey.unmanaged`, `…vanished`,
//! `…unresolved`), a log line and a line of the report — once: the findings are records of the
//! trail, and the trail is what the next run compares with. Keys that predate keygate can be
//! accepted once as a baseline ([`baseline`]). The same listing gives the quota guard its
//! per-cluster key counts ([`crate::policy::quota::Ledger`]).
//!
//! Memory stays bounded by the number of keys, not of events: the trail is folded into a state
//! kept in an index file beside the audit file ([`state`]), and each run reads only the records
//! written since ([`trail`]). Runs come from `[reconcile] interval` inside `serve`, or from
//! `keygate reconcile` while `serve` is stopped (the audit file has one writer).
//!
//! Where it sits: beside the request pipeline, never in it. What it does not do: delete or change
//! keys, verify the hash chain (`keygate audit verify` does), or see keys keygate's credential may
//! not list.

pub mod baseline;
pub mod config;
pub mod findings;
pub mod listing;
pub mod state;
pub mod trail;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::audit::{
    AuditError, AuditEvent, AuditRecord, Auditor, EventSource, EventType, ReconcileInfo,
    Stage as EventStage, Target,
};
use crate::policy::quota::Ledger;
use crate::policy::source::{Fetch, FetchError};
pub use config::{ReconcileConfig, DEFAULT_GRACE};
use findings::{Finding, Inputs};
use listing::{now_unix, unix_seconds, Listing, UpstreamKey};
use state::State;

/// `methodName` of reconcile events.
const METHOD_NAME: &str = "ReconcileAPIKeys";

/// Why a run failed. Nothing is recorded as a finding when a run fails.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Listing the upstream's keys failed.
    #[error("listing the API keys upstream: {0}")]
    Fetch(#[from] FetchError),
    /// Reading the trail or writing the index or baseline failed.
    #[error("`{path}`: {op}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What was being done.
        op: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A finding could not be recorded durably.
    #[error("recording the findings: {0}")]
    Audit(#[from] AuditError),
    /// `--accept-baseline` when the trail already records one.
    #[error("a baseline of {keys} keys was already accepted at {accepted_at}; keygate accepts one baseline only (every later key is reported)")]
    BaselineExists {
        /// When.
        accepted_at: String,
        /// How many keys.
        keys: u64,
    },
    /// A blocking task panicked or was cancelled.
    #[error("reconcile task: {0}")]
    Task(String),
}

/// Options of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Accept the keys that predate keygate as the baseline (once).
    pub accept_baseline: bool,
}

/// One line of the report: a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportLine {
    /// `unmanaged`, `vanished` or `unresolved`.
    pub kind: &'static str,
    /// The key (for an unresolved create: the matched key, if any).
    pub key_id: Option<String>,
    /// The key's (or create's) owner.
    pub owner: String,
    /// Its resource.
    pub resource: String,
    /// When the key was created (upstream's time; for a vanished key, when keygate recorded it).
    pub created_at: Option<String>,
    /// For an unresolved create: its request id.
    pub request_id: Option<String>,
    /// Why this is a finding.
    pub why: String,
}

/// What a run did and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Keys upstream.
    pub upstream_keys: usize,
    /// Keys keygate created and has not deleted.
    pub managed_keys: usize,
    /// Keys of the baseline.
    pub baseline_keys: usize,
    /// Unmanaged keys upstream reported so far (this run included).
    pub unmanaged_keys: usize,
    /// Creates in flight or waiting for the grace period.
    pub pending_creates: usize,
    /// Audit records read this run.
    pub records_read: u64,
    /// The index was rebuilt from the whole trail.
    pub rebuilt_index: bool,
    /// Keys accepted as the baseline by this run.
    pub baseline_accepted: Option<u64>,
    /// New findings, each recorded as one audit event.
    pub findings: Vec<ReportLine>,
    /// Problems that did not stop the run (a baseline file that does not match, gaps).
    pub warnings: Vec<String>,
    /// How long the run took, in seconds.
    pub seconds: f64,
}

impl Report {
    /// The report as text: a summary line, then one line per finding and per warning.
    pub fn text(&self) -> String {
        let mut out = format!(
            "reconcile: {} keys upstream, {} managed by keygate, {} in the baseline, {} unmanaged; \
             {} audit records read{}; {} new finding(s) in {:.2}s\n",
            self.upstream_keys,
            self.managed_keys,
            self.baseline_keys,
            self.unmanaged_keys,
            self.records_read,
            if self.rebuilt_index {
                " (index rebuilt)"
            } else {
                ""
            },
            self.findings.len(),
            self.seconds
        );
        if let Some(n) = self.baseline_accepted {
            out.push_str(&format!("baseline: {n} keys accepted\n"));
        }
        for line in &self.findings {
            out.push_str(&format!(
                "{:<10} {:<16} owner={} resource={} created={}{}  {}\n",
                line.kind,
                line.key_id.as_deref().unwrap_or("-"),
                line.owner,
                line.resource,
                line.created_at.as_deref().unwrap_or("-"),
                line.request_id
                    .as_deref()
                    .map(|r| format!(" request={r}"))
                    .unwrap_or_default(),
                line.why
            ));
        }
        for warning in &self.warnings {
            out.push_str(&format!("warning: {warning}\n"));
        }
        out
    }
}

// === metrics ===

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Reconcile's metric families (registered when reconcile is configured).
#[derive(Debug, Clone, Default)]
pub struct ReconcileMetrics {
    findings: Family<KindLabels, Gauge<i64, AtomicI64>>,
    keys: Family<StateLabels, Gauge<i64, AtomicI64>>,
    runs: Family<ResultLabels, Counter>,
    last_success: Gauge<i64, AtomicI64>,
    duration: Gauge<f64, AtomicU64>,
}

impl ReconcileMetrics {
    /// Registers the families in `registry` (prefix `keygate_`).
    pub fn register(registry: &mut Registry) -> ReconcileMetrics {
        let m = ReconcileMetrics::default();
        registry.register(
            "reconcile_findings",
            "Findings recorded in the audit trail so far, by kind (unmanaged, vanished, unresolved)",
            m.findings.clone(),
        );
        registry.register(
            "reconcile_keys",
            "API keys as of the last reconcile run, by state (upstream, managed, baseline, \
             unmanaged, pending_creates)",
            m.keys.clone(),
        );
        registry.register(
            "reconcile_runs",
            "Reconcile runs by result (ok, failed)",
            m.runs.clone(),
        );
        registry.register(
            "reconcile_last_success_timestamp_seconds",
            "When the last successful reconcile run ended (Unix seconds)",
            m.last_success.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long the last reconcile run took",
            m.duration.clone(),
        );
        m
    }

    fn record(&self, state: &State, report: &Report) {
        let totals = state.totals;
        for (kind, n) in [
            ("unmanaged", totals.unmanaged),
            ("vanished", totals.vanished),
            ("unresolved", totals.unresolved),
        ] {
            self.findings
                .get_or_create(&KindLabels { kind })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        for (state, n) in [
            ("upstream", report.upstream_keys),
            ("managed", report.managed_keys),
            ("baseline", report.baseline_keys),
            ("unmanaged", report.unmanaged_keys),
            ("pending_creates", report.pending_creates),
        ] {
            self.keys
                .get_or_create(&StateLabels { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.runs
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
        self.last_success.set(now_unix());
        self.duration.set(report.seconds);
    }

    fn failed(&self) {
        self.runs
            .get_or_create(&ResultLabels { result: "failed" })
            .inc();
    }
}

// === Reconciler ===

/// Runs reconcile passes (one at a time) for one audit trail.
pub struct Reconciler {
    audit_path: PathBuf,
    auditor: Arc<Auditor>,
    source: EventSource,
    fetch: Arc<dyn Fetch>,
    grace: Duration,
    ledger: Arc<Ledger>,
    metrics: Option<ReconcileMetrics>,
    running: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("audit_path", &self.audit_path)
            .finish_non_exhaustive()
    }
}

/// The index file beside `audit`: `<audit file>-reconcile.json`.
pub fn index_path(audit: &Path) -> PathBuf {
    beside(audit, "-reconcile.json")
}

/// The baseline file beside `audit`: `<audit file>-baseline.json`.
pub fn baseline_path(audit: &Path) -> PathBuf {
    beside(audit, "-baseline.json")
}

fn beside(audit: &Path, suffix: &str) -> PathBuf {
    let mut name = audit.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl Reconciler {
    /// A reconciler for the trail at `audit_path`, recording through `auditor` (whose file sink
    /// writes that trail), listing with `fetch`, feeding `ledger`.
    pub fn new(
        audit_path: PathBuf,
        auditor: Arc<Auditor>,
        source: EventSource,
        fetch: Arc<dyn Fetch>,
        config: &ReconcileConfig,
        ledger: Arc<Ledger>,
    ) -> Reconciler {
        Reconciler {
            audit_path,
            auditor,
            source,
            fetch,
            grace: config.grace,
            ledger,
            metrics: None,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The same reconciler, recording its metrics.
    pub fn with_metrics(mut self, metrics: ReconcileMetrics) -> Reconciler {
        self.metrics = Some(metrics);
        self
    }

    /// Runs one pass (waiting for a pass in progress to end first).
    pub async fn run(&self, options: RunOptions) -> Result<Report, ReconcileError> {
        let _one_at_a_time = self.running.lock().await;
        let result = self.pass(options).await;
        match (&result, &self.metrics) {
            (Err(err), Some(metrics)) => {
                metrics.failed();
                tracing::warn!(error = %err, "Reconcile run failed");
            }
            (Err(err), None) => tracing::warn!(error = %err, "Reconcile run failed"),
            _ => {}
        }
        result
    }

    async fn pass(&self, options: RunOptions) -> Result<Report, ReconcileError> {
        let started = Instant::now();
        let listing = listing::list(&*self.fetch).await?;
        self.ledger.replace(
            started,
            listing.keys.values().map(|k| (&*k.id, &*k.resource)),
        );
        let mut report = Report {
            upstream_keys: listing.keys.len(),
            ..Report::default()
        };
        if listing.skipped > 0 {
            report.warnings.push(format!(
                "{} listed items are not API keys keygate can read",
                listing.skipped
            ));
        }

        let index = index_path(&self.audit_path);
        let loaded = {
            let index = index.clone();
            blocking(move || State::load(&index).map_err(|e| io_error(&index, "read index", e)))
                .await??
        };
        let mut state = loaded.unwrap_or_else(State::new);
        state = self.catch_up(state, &mut report).await?;

        if options.accept_baseline {
            state = self.accept_baseline(state, &listing, &mut report).await?;
        }
        let baseline = match &state.baseline {
            None => HashSet::new(),
            Some(recorded) => {
                let path = baseline_path(&self.audit_path);
                let recorded = recorded.clone();
                match blocking(move || baseline::load(&path, &recorded)).await? {
                    Ok(keys) => keys,
                    Err(why) => {
                        tracing::error!(reason = %why, "Baseline not applied");
                        report.warnings.push(why);
                        HashSet::new()
                    }
                }
            }
        };

        let found = findings::find(&Inputs {
            state: &state,
            listing: &listing,
            baseline: &baseline,
            now: now_unix(),
            grace: i64::try_from(self.grace.as_secs()).unwrap_or(i64::MAX),
        });
        if !found.is_empty() {
            let run_id = run_id();
            let mut deferred = Vec::with_capacity(found.len());
            for finding in &found {
                let (event, line) = self.event(&run_id, finding);
                log_finding(&line);
                deferred.push(self.auditor.emit_deferred(&event).await?);
                report.findings.push(line);
            }
            for d in deferred {
                d.durable().await?;
            }
            self.auditor.flush_file().await?;
            // The findings are records of the trail now: fold them in from there, like any other.
            state = self.catch_up(state, &mut report).await?;
        }
        state.unmanaged.retain(|id| listing.keys.contains_key(id));
        report.managed_keys = state.managed.len();
        report.baseline_keys = baseline.len();
        report.unmanaged_keys = state.unmanaged.len();
        report.pending_creates = state.pending.len();
        report.seconds = started.elapsed().as_secs_f64();
        if let Some(metrics) = &self.metrics {
            metrics.record(&state, &report);
        }
        blocking(move || {
            state
                .save(&index)
                .map_err(|e| io_error(&index, "write index", e))
        })
        .await??;
        Ok(report)
    }

    /// Folds the trail written since the state's position into it (on a blocking thread).
    async fn catch_up(
        &self,
        mut state: State,
        report: &mut Report,
    ) -> Result<State, ReconcileError> {
        let path = self.audit_path.clone();
        let (state, scan) = blocking(move || {
            trail::catch_up(&path, &mut state)
                .map(|scan| (state, scan))
                .map_err(|e| io_error(&path, "read the audit trail", e))
        })
        .await??;
        report.records_read += scan.records;
        report.rebuilt_index |= scan.rebuilt;
        for (after, next) in scan.gaps {
            report.warnings.push(format!(
                "the audit trail skips from sequence {after} to {next} (a missing rotated file?): \
                 `keygate audit verify` tells more"
            ));
        }
        Ok(state)
    }

    /// Accepts the keys that predate keygate (created before the trail's first record, or all of
    /// them when the trail is empty) and are not keygate's as the baseline, once.
    async fn accept_baseline(
        &self,
        state: State,
        listing: &Listing,
        report: &mut Report,
    ) -> Result<State, ReconcileError> {
        if let Some(recorded) = &state.baseline {
            return Err(ReconcileError::BaselineExists {
                accepted_at: recorded.accepted_at.to_string(),
                keys: recorded.keys,
            });
        }
        let first = state.first_time.as_deref().and_then(unix_seconds);
        let mut keys: Vec<&UpstreamKey> = listing
            .keys
            .values()
            .filter(|k| !state.managed.contains_key(&k.id))
            .filter(|k| first.is_none_or(|first| k.created_unix < first))
            .collect();
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        let accepted_at = crate::audit::event::rfc3339_micros(std::time::SystemTime::now());
        let path = baseline_path(&self.audit_path);
        let sha256 = {
            let owned: Vec<UpstreamKey> = keys.iter().map(|k| (*k).clone()).collect();
            let path = path.clone();
            let accepted_at = accepted_at.clone();
            blocking(move || {
                let refs: Vec<&UpstreamKey> = owned.iter().collect();
                baseline::write(&path, &accepted_at, &refs)
                    .map_err(|e| io_error(&path, "write baseline", e))
            })
            .await??
        };
        let count = keys.len() as u64;
        let mut record = AuditRecord::new(EventStage::Reconcile, run_id(), METHOD_NAME);
        record.reconcile = Some(ReconcileInfo {
            reason: format!(
                "{count} keys that predate keygate accepted as the baseline (`{}`)",
                path.display()
            ),
            baseline_keys: Some(count),
            baseline_sha256: Some(sha256),
            ..ReconcileInfo::default()
        });
        let event = AuditEvent::new(&self.source, EventType::ApiKeyBaseline, record);
        self.auditor.emit(&event).await?;
        self.auditor.flush_file().await?;
        tracing::info!(baseline.keys = count, baseline.path = %path.display(), "Baseline accepted");
        report.baseline_accepted = Some(count);
        self.catch_up(state, report).await
    }

    /// The audit event and report line of a finding.
    fn event(&self, run_id: &str, finding: &Finding) -> (AuditEvent, ReportLine) {
        let mut record = AuditRecord::new(EventStage::Reconcile, run_id, METHOD_NAME);
        let (event_type, target, info, line) = match finding {
            Finding::Unmanaged(key) => {
                let why = "exists upstream but never passed keygate (created in the Cloud \
                           Console, by a direct API call, or before keygate)"
                    .to_owned();
                (
                    EventType::ApiKeyUnmanaged,
                    upstream_target(key),
                    ReconcileInfo {
                        reason: why.clone(),
                        key_created_at: Some(key.created_at.to_string()),
                        ..ReconcileInfo::default()
                    },
                    ReportLine {
                        kind: finding.kind(),
                        key_id: Some(key.id.to_string()),
                        owner: key.owner.to_string(),
                        resource: key.resource.to_string(),
                        created_at: Some(key.created_at.to_string()),
                        request_id: None,
                        why,
                    },
                )
            }
            Finding::Vanished { key_id, key } => {
                let why = "created through keygate, gone upstream without a delete through \
                           keygate (deleted in the Console, directly, or with its owner)"
                    .to_owned();
                (
                    EventType::ApiKeyVanished,
                    Target {
                        owner: Some(key.owner.to_string()),
                        resource_id: Some(key.resource.to_string()),
                        environment: key.environment.as_deref().map(str::to_owned),
                        key_id: Some(key_id.to_string()),
                        ..Target::default()
                    },
                    ReconcileInfo {
                        reason: why.clone(),
                        key_created_at: Some(key.created.to_string()),
                        ..ReconcileInfo::default()
                    },
                    ReportLine {
                        kind: finding.kind(),
                        key_id: Some(key_id.to_string()),
                        owner: key.owner.to_string(),
                        resource: key.resource.to_string(),
                        created_at: Some(key.created.to_string()),
                        request_id: None,
                        why,
                    },
                )
            }
            Finding::Unresolved {
                request_id,
                create,
                matched,
                candidates,
            } => {
                let why = match (matched, candidates) {
                    (Some(_), 1) => format!(
                        "the create received at {} has no recorded outcome (keygate stopped, or \
                         the upstream never answered); it created this key",
                        create.time
                    ),
                    (Some(_), n) => format!(
                        "the create received at {} has no recorded outcome (keygate stopped, or \
                         the upstream never answered); it most likely created this key, the \
                         closest in time of {n} that match it",
                        create.time
                    ),
                    (None, _) => format!(
                        "the create received at {} has no recorded outcome (keygate stopped, or \
                         the upstream never answered), and no key upstream matches it: it \
                         created none, or its key is gone",
                        create.time
                    ),
                };
                let target = match matched {
                    Some(key) => upstream_target(key),
                    None => Target {
                        owner: Some(create.owner.to_string()),
                        resource_id: Some(create.resource.to_string()),
                        environment: create.environment.as_deref().map(str::to_owned),
                        display_name: create.display_name.as_deref().map(str::to_owned),
                        ..Target::default()
                    },
                };
                (
                    EventType::ApiKeyUnresolved,
                    target,
                    ReconcileInfo {
                        reason: why.clone(),
                        key_created_at: matched.as_ref().map(|k| k.created_at.to_string()),
                        create_request_id: Some(request_id.to_string()),
                        create_time: Some(create.time.to_string()),
                        candidates: Some(*candidates),
                        ..ReconcileInfo::default()
                    },
                    ReportLine {
                        kind: finding.kind(),
                        key_id: matched.as_ref().map(|k| k.id.to_string()),
                        owner: create.owner.to_string(),
                        resource: create.resource.to_string(),
                        created_at: matched.as_ref().map(|k| k.created_at.to_string()),
                        request_id: Some(request_id.to_string()),
                        why,
                    },
                )
            }
        };
        record.target = Some(target);
        record.reconcile = Some(info);
        (AuditEvent::new(&self.source, event_type, record), line)
    }
}

fn upstream_target(key: &UpstreamKey) -> Target {
    Target {
        owner: Some(key.owner.to_string()),
        resource_id: Some(key.resource.to_string()),
        environment: key.environment.as_deref().map(str::to_owned),
        key_id: Some(key.id.to_string()),
        display_name: Some(key.display_name.to_string()).filter(|n| !n.is_empty()),
        ..Target::default()
    }
}

fn log_finding(line: &ReportLine) {
    tracing::warn!(
        reconcile.finding = line.kind,
        key.id = line.key_id.as_deref(),
        key.owner = %line.owner,
        key.resource = %line.resource,
        key.created_at = line.created_at.as_deref(),
        request.id = line.request_id.as_deref(),
        reason = %line.why,
        "API key finding"
    );
}

/// The request id of a run's events: `reconcile-` and 32 hex digits.
fn run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let hex = crate::id::unique_hex(&COUNTER);
    format!("reconcile-{}", String::from_utf8_lossy(&hex))
}

fn io_error(path: &Path, op: &'static str, source: std::io::Error) -> ReconcileError {
    ReconcileError::Io {
        path: path.display().to_string(),
        op,
        source,
    }
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ReconcileError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ReconcileError::Task(e.to_string()))
}

/// Runs a pass now, then one every `interval`, for as long as the task lives (`serve`).
pub async fn run_every(reconciler: Arc<Reconciler>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Ok(report) = reconciler.run(RunOptions::default()).await {
            tracing::info!(
                reconcile.upstream_keys = report.upstream_keys,
                reconcile.findings = report.findings.len(),
                reconcile.seconds = report.seconds,
                "Reconcile run done"
            );
        }
    }
}

#[cfg(test)]
mod tests;
