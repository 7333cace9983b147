//! What `keygate policy replay` costs: decisions per CPU-second on one core with the shipped Cedar
//! set (`policies/`, the config of `keygate dev`), and the peak resident memory of replaying a
//! trail of 1,000,000 events.
//!
//! ```sh
//! cargo run --release --example replay_bench [-- EVENTS]
//! ```
//!
//! 1. It decides 4,000 distinct governed requests (creates by every principal of the example
//!    organisation on every cluster, with good and bad names, and updates and deletes of tagged
//!    and untagged keys) with the shipped set, and records their decision inputs as keygate does.
//! 2. *decide only*: it re-decides those inputs with the same candidate, through
//!    `Replayer::decide` (the recorded bindings and inventory rebuilt, `policy::decide`), on this
//!    thread for about three seconds, and divides by the thread's CPU time.
//! 3. It writes a trail of EVENTS `response_complete` events (default 1,000,000) carrying those
//!    inputs through keygate's own file sink (hash-chained, rotated at 100 MiB), then resets the
//!    peak RSS counter and replays the trail as `keygate policy replay` does — verify the chain,
//!    then stream, parse and re-decide every event — reporting CPU time of each part and the
//!    peak RSS of the process during the replay.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measurement tool: a failed setup step ends the run with its message"
)]

use std::path::Path;
use std::time::Instant;

use keygate::audit::event::RawJson;
use keygate::audit::{
    AuditEvent, AuditRecord, AuthMethod, DecisionInfo, DecisionResult, EncodedEvent, EventSource,
    EventType, FileSink, FileSinkConfig, HttpInfo, PrincipalInfo, Stage,
};
use keygate::config::Config;
use keygate::model::{Action, AuthMethod as Auth, CreateSpec, Principal, ResourceSpec, UpdateSpec};
use keygate::policy::decide::{decide, Facts, Request, Rules};
use keygate::policy::input::{DecisionInput, InputOutcome};
use keygate::policy::source::KeyFacts;
use keygate::tools::replay::{Filter, Replayer, Report};

/// Events in the trail by default.
const EVENTS: usize = 1_000_000;

const PRINCIPALS: [&str; 7] = [
    "u-alice", "u-bob", "u-carol", "u-dave", "u-erin", "u-frank", "u-grace",
];
const RESOURCES: [&str; 8] = [
    "lkc-prod01",
    "lkc-dev01",
    "lsrc-prod01",
    "lksqlc-dev01",
    "cloud",
    "global",
    "lkc-unknown",
    "lsrc-dev01",
];
const NAMES: [(&str, &str); 4] = [
    ("orders-ingest-prod", "OPS-12 ingest"),
    ("orders-ingest-dev", "ingest"),
    ("Orders Ingest", "ingest"),
    ("", "no ticket"),
];

fn main() {
    let events: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(EVENTS);
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = candidate_config(dir.path());
    let config = Config::load_without_secrets(&config_path).expect("candidate config");
    let replayer = Replayer::from_config(&config, false).expect("candidate");
    let inputs = record_inputs(&replayer);
    println!(
        "{} distinct recorded decisions ({} allowed) with the shipped set, revision {}",
        inputs.len(),
        inputs
            .iter()
            .filter(|(i, _)| i.outcome.decision == "allow")
            .count(),
        &replayer.revision()[..12]
    );

    // --- decide only ----------------------------------------------------------------------------
    let started = thread_cpu_ns();
    let wall = Instant::now();
    let mut decided = 0u64;
    let mut allowed = 0u64;
    while wall.elapsed().as_secs_f64() < 3.0 {
        for (input, _) in &inputs {
            let response = replayer.decide(input, "bench").expect("decides");
            allowed += u64::from(response.allow);
            decided += 1;
        }
    }
    let cpu = (thread_cpu_ns() - started) as f64 / 1e9;
    println!(
        "decide only: {decided} decisions in {cpu:.2} CPU-s on one thread: {:.0} decisions per CPU-second ({:.2} µs each; {allowed} allowed)",
        decided as f64 / cpu,
        cpu * 1e6 / decided as f64
    );

    // --- what recording costs the request path ---------------------------------------------------
    // Per governed decision, the decide stage captures the input and the audit builder encodes it
    // (and scans it for pasted secrets).
    let rules = Rules {
        snapshot: replayer.snapshot(),
        quota: None,
    };
    let rebuilt: Vec<_> = inputs
        .iter()
        .map(|(input, _)| (input.rebuild().unwrap(), input))
        .collect();
    let responses: Vec<_> = rebuilt
        .iter()
        .map(|(r, input)| decide(&rules, &r.request(input, "bench"), &r.facts))
        .collect();
    let started = thread_cpu_ns();
    let mut captured = 0usize;
    for _ in 0..20 {
        for ((r, input), response) in rebuilt.iter().zip(&responses) {
            let request = r.request(input, "bench");
            let mut input =
                DecisionInput::capture(&request, &r.facts, rules.snapshot, &response.matrix);
            input.outcome = InputOutcome::of(response);
            captured += std::hint::black_box(input).bindings.len();
        }
    }
    let capture_ns = (thread_cpu_ns() - started) as f64 / (20 * inputs.len()) as f64;
    let started = thread_cpu_ns();
    let mut bytes = 0usize;
    for _ in 0..20 {
        for (input, _) in &inputs {
            let raw = RawJson::of(input).unwrap();
            bytes += keygate::redact::redact_text(raw.0.get()).len();
        }
    }
    let encode_ns = (thread_cpu_ns() - started) as f64 / (20 * inputs.len()) as f64;
    println!(
        "recording on the request path: capture {:.2} µs, encode + secret scan {:.2} µs per decision ({} bytes of JSON on average; {captured} bindings)",
        capture_ns / 1e3,
        encode_ns / 1e3,
        bytes / (20 * inputs.len())
    );

    // --- a trail of `events` events, replayed -----------------------------------------------------
    let audit = dir.path().join("audit.jsonl");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let wall = Instant::now();
    runtime.block_on(write_trail(&audit, &inputs, events));
    let bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let files = std::fs::read_dir(dir.path()).unwrap().count() - 1;
    println!(
        "trail: {events} events, {:.0} MiB in {files} files, written in {:.1}s",
        bytes as f64 / (1 << 20) as f64,
        wall.elapsed().as_secs_f64()
    );
    drop(runtime);
    reset_peak_rss();
    let rss_before = status_kib("VmRSS:");

    let started = thread_cpu_ns();
    let verified = keygate::audit::verify(&audit);
    let verify_cpu = (thread_cpu_ns() - started) as f64 / 1e9;
    assert!(
        matches!(verified, keygate::audit::VerifyReport::Ok { .. }),
        "{verified:?}"
    );
    let started = thread_cpu_ns();
    let mut report = Report::new(10);
    replayer
        .replay_trail(&audit, &Filter::default(), &mut report)
        .expect("replays");
    report.finish();
    let replay_cpu = (thread_cpu_ns() - started) as f64 / 1e9;
    let peak = status_kib("VmHWM:");
    assert_eq!(report.replayed, events as u64, "every event replayed");
    assert!(!report.changed(), "the same set flips nothing");
    println!(
        "replay of the trail: verify {verify_cpu:.2} CPU-s, stream + parse + decide {replay_cpu:.2} CPU-s: {:.0} events per CPU-second end to end ({:.0} decisions per CPU-second without the verify)",
        events as f64 / (verify_cpu + replay_cpu),
        events as f64 / replay_cpu
    );
    println!(
        "peak RSS during the replay: {:.1} MiB (RSS before it: {:.1} MiB)",
        peak as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
}

/// The shipped set as a candidate config: the `[policy]` of `keygate dev` and the example data.
fn candidate_config(dir: &Path) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let policies = root.join("policies");
    let policy = std::fs::read_to_string(policies.join("policy.example.toml"))
        .unwrap()
        .replace(
            "dir = \"policies\"",
            &format!("dir = \"{}\"", policies.display()),
        )
        .replace(
            "teams_dir = \"policies/teams\"",
            &format!("teams_dir = \"{}\"", policies.join("teams").display()),
        );
    let path = dir.join("candidate.toml");
    std::fs::write(
        &path,
        format!(
            "[upstream]\nurl = \"http://127.0.0.1:9\"\n[authz]\norg_id = \"4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c\"\nmatrix = \"{p}/matrix.toml\"\nbindings = \"{p}/role-bindings.toml\"\ninventory = \"{p}/inventory.toml\"\n{policy}",
            p = policies.display()
        ),
    )
    .unwrap();
    path
}

/// Decides the distinct requests with the candidate and records their inputs (with the
/// explanation the audit event would carry).
fn record_inputs(replayer: &Replayer) -> Vec<(DecisionInput, String)> {
    let snapshot = replayer.snapshot();
    let rules = Rules {
        snapshot,
        quota: None,
    };
    let mut out = Vec::new();
    for round in 0..10 {
        for who in PRINCIPALS {
            let principal = Principal::new(
                who,
                Auth::ApiKey {
                    key_id: "BENCHKEY00000001".into(),
                },
            )
            .unwrap()
            .with_groups(if round % 2 == 0 {
                Vec::new()
            } else {
                vec!["platform".into()]
            });
            for resource in RESOURCES {
                for (name, description) in NAMES {
                    let owner = if round % 3 == 0 { who } else { "sa-orders" };
                    let spec = CreateSpec {
                        owner_id: owner.into(),
                        resource: Some(ResourceSpec {
                            id: resource.into(),
                            environment: None,
                        }),
                        display_name: name.into(),
                        description: description.into(),
                    };
                    let facts = Facts {
                        owner_key_count: Some(round),
                        ..Facts::default()
                    };
                    out.push(capture(
                        &rules,
                        &principal,
                        Action::CreateApiKey,
                        Some(&spec),
                        None,
                        &facts,
                    ));
                }
            }
            for (action, tag) in [
                (Action::DeleteApiKey, "ingest"),
                (Action::DeleteApiKey, "ingest [protected]"),
                (Action::UpdateApiKey, "ingest [protected]"),
                (Action::GetApiKey, "ingest"),
            ] {
                let update = UpdateSpec {
                    display_name: Some("orders-ingest-dev".into()),
                    description: Some("ingest".into()),
                };
                let facts = Facts {
                    target_key: Some(KeyFacts {
                        id: format!("KEY{round:013}"),
                        owner_id: Some("sa-orders".into()),
                        resource_id: Some("lkc-dev01".into()),
                        description: tag.into(),
                        display_name: "orders-ingest-dev".into(),
                    }),
                    ..Facts::default()
                };
                let update = (action == Action::UpdateApiKey).then_some(&update);
                out.push(capture(&rules, &principal, action, None, update, &facts));
            }
        }
    }
    out
}

fn capture(
    rules: &Rules<'_>,
    principal: &Principal,
    action: Action,
    spec: Option<&CreateSpec>,
    update: Option<&UpdateSpec>,
    facts: &Facts,
) -> (DecisionInput, String) {
    let key = facts.target_key.as_ref().map(|k| k.id.clone());
    let request = Request {
        principal,
        action,
        key_id: key.as_deref(),
        spec,
        update,
        request_id: "bench",
        source_ip: Some("10.0.0.1".parse().unwrap()),
        time: 1_767_225_600,
    };
    let response = decide(rules, &request, facts);
    let mut input = DecisionInput::capture(&request, facts, rules.snapshot, &response.matrix);
    input.outcome = InputOutcome::of(&response);
    (input, response.explanation)
}

/// Writes `events` response_complete events cycling through `inputs`, through the file sink.
async fn write_trail(path: &Path, inputs: &[(DecisionInput, String)], events: usize) {
    let sink = FileSink::open(FileSinkConfig::new(path)).expect("trail");
    let source = EventSource::new("bench");
    let mut pending = Vec::with_capacity(1024);
    for n in 0..events {
        let (input, explanation) = &inputs[n % inputs.len()];
        let action = Action::parse(&input.action).unwrap();
        let mut record = AuditRecord::new(
            Stage::ResponseComplete,
            format!("bench-{n:010}"),
            keygate::audit::method_name(action),
        );
        record.principal = Some(PrincipalInfo {
            id: input.principal.id.clone(),
            kind: keygate::model::PrincipalKind::of_id(&input.principal.id)
                .expect("the bench's principals are Confluent ids")
                .into(),
            authentication_method: AuthMethod::Basic,
            key_id: Some("BENCHKEY00000001".into()),
            external: None,
        });
        record.client_address = Some("10.0.0.1:40000".parse().unwrap());
        record.http = Some(HttpInfo {
            method: "POST".into(),
            path: "/iam/v2/api-keys".into(),
        });
        let allowed = input.outcome.decision == "allow";
        record.decision = Some(DecisionInfo {
            result: if allowed {
                DecisionResult::Allow
            } else {
                DecisionResult::Deny
            },
            decided_by: keygate::model::DecidedBy::Matrix,
            rule_ids: vec!["matrix.sa.organization_admin".into()],
            explanation: Some(explanation.clone()),
            dry_run_findings: input.outcome.dry_run.clone(),
            warnings: Vec::new(),
        });
        record.status = Some(if allowed { 202 } else { 403 });
        record.policy_revision = Some(input.revisions.policy.clone());
        record.decision_input = RawJson::of(input);
        record.latency_ms = Some(1.5);
        let event = AuditEvent::new(&source, EventType::from(action), record);
        pending.push(
            sink.append(EncodedEvent::new(&event).expect("encode"))
                .await
                .expect("append"),
        );
        if pending.len() == 1024 {
            for receipt in pending.drain(..) {
                receipt.durable().await.expect("durable");
            }
        }
    }
    for receipt in pending.drain(..) {
        receipt.durable().await.expect("durable");
    }
}

/// CPU time of this thread, in nanoseconds (`/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("schedstat")
}

/// A `/proc/self/status` value in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the peak RSS (VmHWM) to the current RSS (Linux `clear_refs` 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
