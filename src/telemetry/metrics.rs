//! The Prometheus registry and the metric families keygate records.
//!
//! Label values come from small fixed sets (route class, normalised method, status code, error
//! kind), so cardinality stays bounded whatever callers send.

use std::sync::atomic::AtomicI64;

use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
    /// Buckets held by the rate limiter.
    pub ratelimit_keys: Gauge<i64, AtomicI64>,
    /// Layer-1 decisions by action and result.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Dry-run policies that would have denied, by policy id.
    pub would_deny: Family<PolicyLabels, Counter>,
    /// Policy evaluation errors (each denies when the policy enforces), by policy id.
    pub policy_errors: Family<PolicyLabels, Counter>,
    /// Reloads by result (`ok`, `rejected`).
    pub reloads: Family<ResultLabels, Counter>,
    /// The active policy-set revision (value 1, revision as label).
    pub revision: Family<RevisionLabels, Gauge<i64, AtomicI64>>,
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
        let upstream_ratelimited = Counter::default();
        registry.register(
            "upstream_ratelimited",
            "Upstream 429 answers passed through unchanged",
            upstream_ratelimited.clone(),
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
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reloads",
            "Policy-set reloads by result (ok, rejected)",
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
        Metrics {
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
            ratelimit_keys,
            decisions,
        }
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

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
