//! What keygate's trace spans cost one request when tracing is off (no `[telemetry]
//! otlp_endpoint`), against the same work with no span code at all.
//!
//! One "request" here is every span site a governed create passes: the server span, five stage
//! spans and three more (upstream, two audit writes) each wrapping a future that is polled once,
//! and two attribute annotations. The global subscriber is the one `keygate serve` installs
//! without an endpoint. `span/disabled` is one span site alone; `span/enabled_by_log_filter` is
//! what a span costs when the log layer's filter lets it through (why keygate's spans are off
//! there). `request/on_no_export` repeats the request with the OpenTelemetry layer on (spans built
//! and ended, nothing exported), for scale; it runs last because registering a second subscriber
//! changes how callsites are cached. `cargo bench --bench tracing_off`.

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark on a fixed config: any failure should abort it loudly"
)]

use std::future::{ready, Future};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::Criterion;
use http::{HeaderValue, Request};
use keygate::config::{LogConfig, LogFormat, TelemetryConfig};
use keygate::telemetry::trace::SpanFacts;
use keygate::telemetry::{self, trace};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use tracing_subscriber::layer::SubscriberExt;

const STAGES: [&str; 8] = [
    "guard",
    "identity",
    "ratelimit",
    "decide",
    "audit_gate",
    "upstream",
    "audit_write",
    "audit_write",
];

fn poll_once<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a ready future was pending"),
    }
}

/// The request's span sites.
fn traced(request: &Request<()>, id: &HeaderValue) -> u32 {
    let server = trace::server_span(request, id);
    poll_once(trace::in_span(
        async {
            let mut n = 0;
            for name in STAGES {
                let span = trace::stage_span(name);
                n += poll_once(trace::in_span(ready(1), span.clone()));
                drop(span);
            }
            trace::annotate(|| [KeyValue::new("keygate.identity.cache", "hit")]);
            trace::annotate(|| trace::decision_attributes(&SpanFacts::default()));
            n
        },
        server,
    ))
}

/// The same work without any span code.
fn untraced() -> u32 {
    poll_once(async {
        let mut n = 0;
        for _ in STAGES {
            n += poll_once(ready(1));
        }
        n
    })
}

fn main() {
    let log = LogConfig {
        format: LogFormat::Json,
        level: "info".into(),
        access_log: true,
    };
    let off = TelemetryConfig {
        otlp_endpoint: None,
        sample_ratio: 1.0,
        instance_id: None,
    };
    let installed = telemetry::init_logging(&log, &off).unwrap();
    assert!(!installed.exporting());
    let request = Request::post("/iam/v2/api-keys").body(()).unwrap();
    let id = HeaderValue::from_static("04c41a95cbc5ca180000000000000000");

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("request/untraced", |b| b.iter(|| black_box(untraced())));
    c.bench_function("span/disabled", |b| {
        b.iter(|| black_box(trace::stage_span(black_box("guard"))).is_disabled())
    });
    // What each span would cost if the log layer's filter let keygate's spans through.
    c.bench_function("span/enabled_by_log_filter", |b| {
        b.iter(|| black_box(tracing::info_span!(target: "keygate::bench", "stage")).is_disabled())
    });
    c.bench_function("request/tracing_off", |b| {
        b.iter(|| black_box(traced(black_box(&request), &id)))
    });

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let on = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
    tracing::subscriber::with_default(on, || {
        c.bench_function("request/on_no_export", |b| {
            b.iter(|| black_box(traced(black_box(&request), &id)))
        });
    });
    c.final_summary();
}
