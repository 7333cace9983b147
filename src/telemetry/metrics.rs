//! The Prometheus registry and the metric families keygate records.
//!
//! Label values come from small fixed sets (route class, normalised method, status code, error
//! kind, audit sink name), so cardinality stays bounded whatever callers send.
//!
//! The audit trail keeps its own counters (its writers are threads that must not touch the
//! registry); [`Metrics::register_audit`] exports them through a collector that reads an
//! [`AuditSnapshot`] at scrape time, so `/metrics` is always exact and nothing polls.

use std::sync::atomic::AtomicI64;
use std::sync::OnceLock;

use http::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::audit::{FileStats, SinkStats};
use crate::model::RouteClass;

/// Latency buckets in seconds: from a cached decision (sub-millisecond) to a slow upstream.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Request method as a bounded label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(
    clippy::upper_case_acronyms,
    reason = "label values are the HTTP method names"
)]
pub enum MethodLabel {
    GET,
    POST,
    PUT,
    PATCH,
    DELETE,
    HEAD,
    OPTIONS,
    OTHER,
}

impl From<&Method> for MethodLabel {
    fn from(m: &Method) -> Self {
        match *m {
            Method::GET => MethodLabel::GET,
            Method::POST => MethodLabel::POST,
            Method::PUT => MethodLabel::PUT,
            Method::PATCH => MethodLabel::PATCH,
            Method::DELETE => MethodLabel::DELETE,
            Method::HEAD => MethodLabel::HEAD,
            Method::OPTIONS => MethodLabel::OPTIONS,
            _ => MethodLabel::OTHER,
        }
    }
}

/// Labels of `keygate_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `governed` or `ungoverned`.
    pub route: &'static str,
    /// Method.
    pub method: MethodLabel,
    /// Final status code sent downstream.
    pub status: u16,
}

/// Labels of `keygate_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `governed` or `ungoverned`.
    pub route: &'static str,
}

/// Labels of `keygate_upstream_errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Error kind (`connect`, `tls`, `timeout`, …).
    pub kind: &'static str,
}

/// Labels of outcome counters (`hit`, `miss`, `failure`, …).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The outcome.
    pub result: &'static str,
}

/// Labels of `keygate_ratelimited_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// The limit id from the config.
    pub limit: String,
}

/// Labels of `keygate_policy_revision_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    /// The active policy-set revision.
    pub revision: String,
}

/// Labels of `keygate_reloads_total`: per team set (`platform` for the whole reload: config,
/// matrix, bindings, inventory and the platform policies) and outcome (`ok`, `rejected`,
/// `removed`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `platform`, or a team's name.
    pub team: String,
    /// The outcome.
    pub result: &'static str,
}

/// Labels of per-policy counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// The policy id.
    pub policy: String,
}

/// Labels of `keygate_decisions_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// The governed action.
    pub action: &'static str,
    /// `allow` or `deny`.
    pub result: &'static str,
}

/// All metrics of one keygate instance.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by route class, method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency (to the last response byte) by route class.
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Upstream failures by kind.
    pub upstream_errors: Family<KindLabels, Counter>,
    /// Requests being processed now.
    pub in_flight: Gauge<i64, AtomicI64>,
    /// Identity resolutions on governed routes by result (`hit`, `miss`, `failure`).
    pub identity: Family<ResultLabels, Counter>,
    /// Requests refused by a keygate rate limit, by limit id.
    pub ratelimited: Family<LimitLabels, Counter>,
    /// Upstream 429 answers passed through to callers.
    pub upstream_ratelimited: Counter,
    /// JSON responses whose upstream links could not be rewritten (content-encoded bodies).
    pub link_rewrite_skipped: Counter,
    /// Buckets held by the rate limiter.
    pub ratelimit_keys: Gauge<i64, AtomicI64>,
    /// Layer-1 decisions by action and result.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Dry-run policies that would have denied, by policy id.
    pub would_deny: Family<PolicyLabels, Counter>,
    /// Policy evaluation errors (each denies when the policy enforces), by policy id.
    pub policy_errors: Family<PolicyLabels, Counter>,
    /// Reloads by team set and result (`ok`, `rejected`, `removed`).
    pub reloads: Family<ReloadLabels, Counter>,
    /// The active policy-set revision (value 1, revision as label).
    pub revision: Family<RevisionLabels, Gauge<i64, AtomicI64>>,
    /// Connections on the egress listener by outcome (`intercepted`, `tunnelled`, or the refusal
    /// reason of an `io.keygate.egress.refused` event).
    pub egress: Family<ResultLabels, Counter>,
    /// The quota guard's say on creates (`deny`, `warn`, `would_deny`, `unknown`).
    pub quota_decisions: Family<ResultLabels, Counter>,
    /// Handles into `requests` and `latency` for the label sets nearly every request ends with.
    hot: HotHandles,
}

/// Statuses whose request counters are kept as direct handles, per route class and method; any
/// other status is counted through the family (a label hash and a map lookup).
const HOT_STATUSES: [u16; 14] = [
    200, 201, 202, 204, 400, 401, 403, 404, 409, 429, 500, 502, 503, 504,
];
/// `MethodLabel` variants.
const METHOD_LABELS: usize = 8;
/// `RouteClass` variants.
const ROUTE_CLASSES: usize = 2;

/// Direct handles to the series a request's completion updates, filled on first use (so no
/// series appears in `/metrics` before it has counted something). A handle shares its value with
/// the family's series: a clone of a counter or histogram is another reference to the same one.
/// Saves hashing the label set and locking the family's map on every request.
struct HotHandles {
    /// Indexed by route class, method and the status's place in `HOT_STATUSES`.
    requests: Vec<OnceLock<Counter>>,
    latency: [OnceLock<Histogram>; ROUTE_CLASSES],
}

impl HotHandles {
    fn new() -> HotHandles {
        HotHandles {
            requests: (0..ROUTE_CLASSES * METHOD_LABELS * HOT_STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
            latency: [OnceLock::new(), OnceLock::new()],
        }
    }
}

impl std::fmt::Debug for HotHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotHandles").finish_non_exhaustive()
    }
}

fn route_index(route: RouteClass) -> usize {
    match route {
        RouteClass::Ungoverned => 0,
        RouteClass::Governed => 1,
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Metrics {
    /// A registry with every keygate family registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("keygate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests handled, by route class, method and status",
            requests.clone(),
        );
        let latency: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request start to the last response byte",
            latency.clone(),
        );
        let upstream_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream exchanges that failed, by kind",
            upstream_errors.clone(),
        );
        let in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "in_flight_requests",
            "Requests being processed",
            in_flight.clone(),
        );
        let identity = Family::<ResultLabels, Counter>::default();
        registry.register(
            "identity_resolutions",
            "Identity resolutions on governed routes, by result (cache hit, miss, failure)",
            identity.clone(),
        );
        let ratelimited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "ratelimited",
            "Requests refused by a keygate rate limit, by limit id",
            ratelimited.clone(),
        );
        let egress = Family::<ResultLabels, Counter>::default();
        registry.register(
            "egress_connections",
            "Connections on the egress listener by outcome: intercepted, tunnelled, or why egress was refused",
            egress.clone(),
        );
        let upstream_ratelimited = Counter::default();
        registry.register(
            "upstream_ratelimited",
            "Upstream 429 answers passed through unchanged",
            upstream_ratelimited.clone(),
        );
        let link_rewrite_skipped = Counter::default();
        registry.register(
            "link_rewrite_skipped",
            "Upstream JSON responses whose links could not be rewritten (content-encoded)",
            link_rewrite_skipped.clone(),
        );
        let ratelimit_keys = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "ratelimit_keys",
            "Rate-limit buckets held in memory",
            ratelimit_keys.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Layer-1 (RBAC matrix) decisions by action and result",
            decisions.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "reloads",
            "Policy-set reloads by team set (platform: the whole set) and result (ok, rejected, removed)",
            reloads.clone(),
        );
        let revision = Family::<RevisionLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "policy_revision_info",
            "The active policy-set revision (content hash)",
            revision.clone(),
        );
        let would_deny = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "policy_would_deny",
            "Requests a dry-run organisation policy would have denied, by policy id",
            would_deny.clone(),
        );
        let policy_errors = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "policy_evaluation_errors",
            "Organisation policy evaluation errors (fail closed when enforced), by policy id",
            policy_errors.clone(),
        );
        let quota_decisions = Family::<ResultLabels, Counter>::default();
        registry.register(
            "quota_decisions",
            "Creates the API-key quota guard denied, warned about, would have denied (dry-run) or \
             could not check (counts unknown), by result",
            quota_decisions.clone(),
        );
        Metrics {
            egress,
            quota_decisions,
            would_deny,
            policy_errors,
            reloads,
            revision,
            registry,
            requests,
            latency,
            upstream_errors,
            in_flight,
            identity,
            ratelimited,
            upstream_ratelimited,
            link_rewrite_skipped,
            ratelimit_keys,
            decisions,
            hot: HotHandles::new(),
        }
    }

    /// Registers `keygate_ratelimit_shared_up` (1 while the shared rate-limit store answers, 0
    /// while its limits fall back), when shared limits are configured.
    pub fn register_ratelimit_shared(&mut self, up: Gauge<i64, AtomicI64>) {
        self.registry.register(
            "ratelimit_shared_up",
            "Whether the shared rate-limit store (Redis) answers: 1 yes, 0 no (shared limits \
             apply their on_unavailable)",
            up,
        );
    }

    /// Counts a completed request in `keygate_requests_total`.
    pub fn count_request(&self, route: RouteClass, method: MethodLabel, status: u16) {
        let labels = || RequestLabels {
            route: route.as_str(),
            method,
            status,
        };
        let hot = HOT_STATUSES
            .iter()
            .position(|s| *s == status)
            .and_then(|status_index| {
                let method_index = route_index(route) * METHOD_LABELS + method as usize;
                self.hot
                    .requests
                    .get(method_index * HOT_STATUSES.len() + status_index)
            });
        match hot {
            Some(slot) => slot
                .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                .inc(),
            None => self.requests.get_or_create(&labels()).inc(),
        };
    }

    /// Records a completed request's latency in `keygate_request_duration_seconds`.
    pub fn observe_latency(&self, route: RouteClass, seconds: f64) {
        self.hot.latency[route_index(route)]
            .get_or_init(|| {
                self.latency
                    .get_or_create(&RouteLabels {
                        route: route.as_str(),
                    })
                    .clone()
            })
            .observe(seconds);
    }

    /// Exports the audit trail's counters, read from `source` at every scrape.
    pub fn register_audit(&mut self, source: AuditSource) {
        self.registry
            .register_collector(Box::new(AuditCollector { source }));
    }

    /// Exports the key counts per Kafka cluster (and the configured quota), read from `source` at
    /// every scrape.
    pub fn register_quota(&mut self, source: QuotaSource) {
        self.registry
            .register_collector(Box::new(QuotaCollector { source }));
    }

    /// Mutable access to register further families at start-up.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

// === audit ===

/// The audit trail's counters at one moment, as [`Metrics::register_audit`] exports them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditSnapshot {
    /// The file sink's counters and health, when a file sink is configured.
    pub file: Option<(FileStats, bool)>,
    /// Every other sink's name and counters.
    pub sinks: Vec<(&'static str, SinkStats)>,
    /// Events in which scrubbing masked a credential-shaped value.
    pub scrubbed: u64,
}

/// Reads an [`AuditSnapshot`]; called on every scrape of `/metrics`.
pub type AuditSource = Box<dyn Fn() -> AuditSnapshot + Send + Sync>;

/// Labels of the per-sink audit families.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    /// `file`, `stdout` or `webhook`.
    sink: &'static str,
}

struct AuditCollector {
    source: AuditSource,
}

impl std::fmt::Debug for AuditCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditCollector").finish_non_exhaustive()
    }
}

/// Encodes one unlabelled value.
fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

/// Encodes one counter per sink.
fn encode_per_sink(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(&'static str, u64)],
) -> Result<(), std::fmt::Error> {
    if values.is_empty() {
        return Ok(());
    }
    let mut metric_encoder = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for &(sink, value) in values {
        let labels = SinkLabels { sink };
        let family_encoder = metric_encoder.encode_family(&labels)?;
        ConstCounter::new(value).encode(family_encoder)?;
    }
    Ok(())
}

impl Collector for AuditCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = (self.source)();
        let mut written = Vec::new();
        let mut dropped = Vec::new();
        let mut failed = Vec::new();
        if let Some((file, healthy)) = &snapshot.file {
            encode_one(
                &mut encoder,
                "audit_file_fsyncs",
                "fsync calls of the audit file (one per group commit)",
                &ConstCounter::new(file.fsyncs),
            )?;
            encode_one(
                &mut encoder,
                "audit_file_events_per_fsync",
                "Audit records per fsync since start (the group-commit factor)",
                &ConstGauge::new(file.events_per_fsync()),
            )?;
            encode_one(
                &mut encoder,
                "audit_file_rotations",
                "Audit file rotations",
                &ConstCounter::new(file.rotations),
            )?;
            encode_one(
                &mut encoder,
                "audit_file_healthy",
                "1 while the audit file sink can write, 0 after a write failure (until restart)",
                &ConstGauge::new(i64::from(*healthy)),
            )?;
            written.push(("file", file.events_written));
            dropped.push(("file", file.dropped));
            failed.push(("file", file.failed));
        }
        let mut spooled = Vec::new();
        for (name, stats) in &snapshot.sinks {
            written.push((name, stats.delivered));
            dropped.push((name, stats.dropped));
            failed.push((name, stats.failed));
            if *name == "webhook" {
                spooled.push((*name, stats.spooled));
            }
        }
        if !spooled.is_empty() {
            let mut metric_encoder = encoder.encode_descriptor(
                "audit_events_spooled",
                "Audit events waiting in a sink's spool for delivery (webhook: the collector is \
                 away or slow), by sink",
                None,
                MetricType::Gauge,
            )?;
            for (sink, value) in spooled {
                let labels = SinkLabels { sink };
                let family_encoder = metric_encoder.encode_family(&labels)?;
                ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(family_encoder)?;
            }
        }
        encode_per_sink(
            &mut encoder,
            "audit_events_written",
            "Audit events written (file: fsynced; stdout: flushed; webhook: delivered), by sink",
            &written,
        )?;
        encode_per_sink(
            &mut encoder,
            "audit_events_dropped",
            "Audit events dropped because a sink's queue was full, by sink",
            &dropped,
        )?;
        encode_per_sink(
            &mut encoder,
            "audit_events_failed",
            "Audit events lost to a write or delivery failure, by sink",
            &failed,
        )?;
        encode_one(
            &mut encoder,
            "audit_events_scrubbed",
            "Audit events in which a credential-shaped value was masked (each one is a bug)",
            &ConstCounter::new(snapshot.scrubbed),
        )
    }
}

// === quota ===

/// The key counts at one moment, as [`Metrics::register_quota`] exports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaSnapshot {
    /// `[quota] kafka_keys_per_cluster`, when configured.
    pub limit: Option<u64>,
    /// Every Kafka cluster with the keys counting against its quota; empty before the first
    /// reconcile listing.
    pub clusters: Vec<ClusterCount>,
}

/// One cluster's line of a [`QuotaSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCount {
    /// `lkc-…`.
    pub id: String,
    /// Its kind as Confluent spells it (`Unknown` when not known).
    pub kind: &'static str,
    /// Keys that count against its quota.
    pub keys: u64,
}

/// Reads a [`QuotaSnapshot`]; called on every scrape of `/metrics`.
pub type QuotaSource = Box<dyn Fn() -> QuotaSnapshot + Send + Sync>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
    kind: &'static str,
}

struct QuotaCollector {
    source: QuotaSource,
}

impl std::fmt::Debug for QuotaCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaCollector").finish_non_exhaustive()
    }
}

impl Collector for QuotaCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = (self.source)();
        if let Some(limit) = snapshot.limit {
            encode_one(
                &mut encoder,
                "quota_kafka_keys_limit",
                "The configured Kafka API-key quota per cluster ([quota] kafka_keys_per_cluster)",
                &ConstGauge::new(i64::try_from(limit).unwrap_or(i64::MAX)),
            )?;
        }
        if snapshot.clusters.is_empty() {
            return Ok(());
        }
        let mut metric_encoder = encoder.encode_descriptor(
            "quota_kafka_keys",
            "Kafka API keys counting against each cluster's quota (its own keys, plus Global keys \
             on Dedicated, Enterprise, Freight and unknown-kind clusters), by cluster and kind",
            None,
            MetricType::Gauge,
        )?;
        for c in &snapshot.clusters {
            let labels = ClusterLabels {
                cluster: c.id.clone(),
                kind: c.kind,
            };
            let family_encoder = metric_encoder.encode_family(&labels)?;
            ConstGauge::new(i64::try_from(c.keys).unwrap_or(i64::MAX)).encode(family_encoder)?;
        }
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counts_and_latency_go_to_the_family_series_hot_or_not() {
        let m = Metrics::new();
        assert!(
            !m.render().contains("keygate_requests_total{"),
            "no series before a request"
        );
        for _ in 0..3 {
            m.count_request(RouteClass::Ungoverned, MethodLabel::GET, 200);
        }
        m.count_request(RouteClass::Governed, MethodLabel::DELETE, 204);
        // Not among the cached statuses: counted through the family.
        m.count_request(RouteClass::Governed, MethodLabel::OTHER, 418);
        m.count_request(RouteClass::Governed, MethodLabel::OTHER, 418);
        m.observe_latency(RouteClass::Governed, 0.003);
        m.observe_latency(RouteClass::Governed, 0.2);
        let text = m.render();
        for line in [
            r#"keygate_requests_total{route="ungoverned",method="GET",status="200"} 3"#,
            r#"keygate_requests_total{route="governed",method="DELETE",status="204"} 1"#,
            r#"keygate_requests_total{route="governed",method="OTHER",status="418"} 2"#,
            r#"keygate_request_duration_seconds_count{route="governed"} 2"#,
        ] {
            assert!(text.contains(line), "missing {line} in {text}");
        }
        assert!(!text.contains(r#"keygate_request_duration_seconds_count{route="ungoverned"}"#));
        // The same handle is reused: a cached series is still the family's.
        m.count_request(RouteClass::Ungoverned, MethodLabel::GET, 200);
        let family = m
            .requests
            .get_or_create(&RequestLabels {
                route: "ungoverned",
                method: MethodLabel::GET,
                status: 200,
            })
            .get();
        assert_eq!(family, 4);
    }

    #[test]
    fn rendered_families_carry_their_labels() {
        let m = Metrics::new();
        m.requests
            .get_or_create(&RequestLabels {
                route: "governed",
                method: MethodLabel::POST,
                status: 403,
            })
            .inc();
        m.upstream_errors
            .get_or_create(&KindLabels { kind: "timeout" })
            .inc();
        m.latency
            .get_or_create(&RouteLabels {
                route: "ungoverned",
            })
            .observe(0.002);
        let text = m.render();
        assert!(
            text.contains(
                r#"keygate_requests_total{route="governed",method="POST",status="403"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"keygate_upstream_errors_total{kind="timeout"} 1"#));
        assert!(text.contains("keygate_request_duration_seconds_bucket"));
        assert!(text.contains("keygate_in_flight_requests 0"));
    }

    #[test]
    fn audit_counters_are_read_at_every_scrape() {
        let mut m = Metrics::new();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = seen.clone();
        m.register_audit(Box::new(move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            AuditSnapshot {
                file: Some((
                    FileStats {
                        fsyncs: 2 * n,
                        events_written: 8 * n,
                        dropped: 0,
                        failed: 1,
                        ..FileStats::default()
                    },
                    true,
                )),
                sinks: vec![(
                    "webhook",
                    SinkStats {
                        delivered: 5,
                        dropped: 3 * n,
                        ..SinkStats::default()
                    },
                )],
                scrubbed: 0,
            }
        }));
        let first = m.render();
        assert!(
            first.contains("keygate_audit_file_fsyncs_total 2\n"),
            "{first}"
        );
        assert!(
            first.contains("keygate_audit_file_events_per_fsync 4.0\n"),
            "{first}"
        );
        assert!(first.contains("keygate_audit_file_healthy 1\n"), "{first}");
        assert!(first.contains(r#"keygate_audit_events_written_total{sink="file"} 8"#));
        assert!(first.contains(r#"keygate_audit_events_failed_total{sink="file"} 1"#));
        assert!(first.contains(r#"keygate_audit_events_dropped_total{sink="webhook"} 3"#));
        assert!(first.contains("keygate_audit_events_scrubbed_total 0"));
        let second = m.render();
        assert!(
            second.contains("keygate_audit_file_fsyncs_total 4\n"),
            "{second}"
        );
        assert!(second.contains(r#"keygate_audit_events_dropped_total{sink="webhook"} 6"#));
    }

    #[test]
    fn without_a_file_sink_no_file_families_are_exported() {
        let mut m = Metrics::new();
        m.register_audit(Box::new(AuditSnapshot::default));
        let text = m.render();
        assert!(!text.contains("audit_file_"), "{text}");
        assert!(!text.contains("audit_events_written"), "{text}");
        assert!(
            text.contains("keygate_audit_events_scrubbed_total 0"),
            "{text}"
        );
    }
}
