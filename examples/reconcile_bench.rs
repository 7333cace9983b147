//! What a reconcile run costs at scale: an organisation of 100,000 API keys (in the simulator,
//! listed a hundred per page over loopback HTTP) against an audit trail of 1,000,000 records (about
//! 85,000 creates through keygate, 5,000 deletes, the rest reads), in rotated files of 100 MiB.
//!
//! ```sh
//! cargo build --release --bin keygate
//! cargo run --release --example reconcile_bench [-- KEYS RECORDS]
//! ```
//!
//! It runs `keygate reconcile` (the release binary, under `/usr/bin/time`) three times: on a trail
//! it has never read (the index is built: the whole trail is folded, 20,000 unmanaged keys and the
//! vanished keys and unresolved creates are recorded), again with nothing new (the index is used:
//! only the findings of the first run are read), and after 1,000 more records and a key created
//! behind keygate's back. Each run prints its wall time and peak resident memory (the reconcile
//! process alone: the simulator and the trail writer are this process).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measurement tool: a failed setup step ends the run with its message"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use keygate::audit::{
    AuditEvent, AuditRecord, AuthMethod, DecisionInfo, DecisionResult, EncodedEvent, EventSource,
    EventType, FileSink, FileSinkConfig, HttpInfo, PrincipalInfo, PrincipalKind, Stage, Target,
};
use keygate::model::DecidedBy;
use keygate::simulator::{self, DirectKey, Seed, Simulator};

/// Keys upstream by default.
const KEYS: usize = 100_000;
/// Records in the trail by default.
const RECORDS: usize = 1_000_000;
/// Of the keys, how many keygate did not create (reported unmanaged on the first run).
const UNMANAGED: usize = 20_000;
/// Creates through keygate whose keys were deleted through keygate since.
const DELETED: usize = 5_000;
/// Keys keygate created that are gone upstream (vanished).
const VANISHED: usize = 100;
/// Creates whose outcome was never recorded (unresolved).
const UNRESOLVED: usize = 50;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let keys = args.first().copied().unwrap_or(KEYS);
    let records = args.get(1).copied().unwrap_or(RECORDS);
    let binary = PathBuf::from(
        std::env::var("KEYGATE_BIN").unwrap_or_else(|_| "target/release/keygate".into()),
    );
    assert!(
        binary.exists(),
        "{} not found: cargo build --release --bin keygate",
        binary.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(keys, records, &binary));
}

async fn run(keys: usize, records: usize, binary: &Path) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Arc::new(Simulator::new(Seed::builtin()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    sim.set_public_base(&format!("http://{addr}"));
    tokio::spawn(simulator::serve(
        listener,
        sim.clone(),
        None,
        std::future::pending(),
    ));

    let started = Instant::now();
    let managed: Vec<String> = sim
        .create_keys_directly(
            &DirectKey {
                created_at: Some("2026-01-01T00:00:00.000000Z".into()),
                ..DirectKey::new("sa-orders", "lkc-prod01")
            },
            keys - UNMANAGED,
        )
        .expect("keys")
        .into_iter()
        .map(|k| k.id)
        .collect();
    sim.create_keys_directly(
        &DirectKey {
            created_at: Some("2025-06-01T00:00:00.000000Z".into()),
            ..DirectKey::new("sa-payments", "lkc-dev01")
        },
        UNMANAGED,
    )
    .expect("keys");
    println!(
        "simulator: {} keys in {:.1}s",
        sim.api_key_ids().len(),
        started.elapsed().as_secs_f64()
    );

    let audit = dir.path().join("audit.jsonl");
    let started = Instant::now();
    let written = write_trail(&audit, &managed, records).await;
    let size: u64 = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "trail: {written} records, {} MiB in {} files, written in {:.1}s",
        size >> 20,
        std::fs::read_dir(dir.path()).expect("dir").count(),
        started.elapsed().as_secs_f64()
    );

    let own = sim
        .demo_keys()
        .into_iter()
        .find(|k| k.principal_id == "sa-keygate")
        .expect("sa-keygate's key");
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\nurl = \"http://{addr}\"\n[upstream.credential]\nenv = \"KG_BENCH_CREDENTIAL\"\n\
             [authz]\norg_id = \"{}\"\nbindings = \"{root}/policies/role-bindings.toml\"\n\
             inventory = \"{root}/policies/inventory.toml\"\nmatrix = \"{root}/policies/matrix.toml\"\n\
             [audit]\nfile = \"{}\"\n[reconcile]\ngrace = \"0s\"\n",
            sim.org_id(),
            audit.display(),
            root = env!("CARGO_MANIFEST_DIR"),
        ),
    )
    .expect("config");
    let credential = format!("{}:{}", own.key_id, own.secret);

    reconcile(binary, &config, &credential, "first run (no index)").await;
    reconcile(binary, &config, &credential, "second run (nothing new)").await;
    {
        let sink = FileSink::open(FileSinkConfig::new(&audit)).expect("trail");
        let source = EventSource::new("bench");
        for i in 0..1_000 {
            let event = read_event(&source, i);
            sink.append(EncodedEvent::new(&event).expect("encode"))
                .await
                .expect("append");
        }
        sink.flush().await.expect("flush");
    }
    sim.create_keys_directly(&DirectKey::new("u-alice", "cloud"), 1)
        .expect("key");
    reconcile(
        binary,
        &config,
        &credential,
        "third run (1,000 records, 1 key)",
    )
    .await;
}

async fn reconcile(binary: &Path, config: &Path, credential: &str, what: &str) {
    let mut command = Command::new("/usr/bin/time");
    command
        .args(["-f", "%e %M"])
        .arg(binary)
        .args(["reconcile", "--json", "--config"])
        .arg(config)
        .env("KG_BENCH_CREDENTIAL", credential);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("keygate reconcile");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let timing = stderr.lines().last().unwrap_or_default().to_owned();
    let mut fields = timing.split_whitespace();
    let seconds: f64 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(-1.0);
    let kib: u64 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{stderr}", String::from_utf8_lossy(&out.stdout)));
    let count = |kind: &str| {
        report["findings"]
            .as_array()
            .map_or(0, |f| f.iter().filter(|f| f["kind"] == kind).count())
    };
    println!(
        "{what}: {seconds:.2}s wall, peak RSS {:.1} MiB; {} keys upstream, {} managed, {} records \
         read, findings: {} unmanaged, {} vanished, {} unresolved (reconcile's own {:.2}s)",
        kib as f64 / 1024.0,
        report["upstream_keys"],
        report["managed_keys"],
        report["records_read"],
        count("unmanaged"),
        count("vanished"),
        count("unresolved"),
        report["seconds"].as_f64().unwrap_or(-1.0),
    );
}

fn principal() -> PrincipalInfo {
    PrincipalInfo {
        id: "u-alice".into(),
        kind: PrincipalKind::User,
        authentication_method: AuthMethod::Basic,
        key_id: Some("DEMOALICE0000001".into()),
        external: None,
    }
}

fn record(stage: Stage, request: String, method: &'static str, path: &str) -> AuditRecord {
    let mut r = AuditRecord::new(stage, request, method);
    r.principal = Some(principal());
    r.client_address = Some("10.20.30.40:51234".parse().expect("address"));
    r.http = Some(HttpInfo {
        method: if method == "CreateAPIKey" {
            "POST"
        } else {
            "GET"
        }
        .into(),
        path: path.into(),
    });
    r.decision = Some(DecisionInfo {
        result: DecisionResult::Allow,
        decided_by: DecidedBy::Matrix,
        rule_ids: vec!["matrix.sa.organization_admin".into()],
        explanation: None,
        dry_run_findings: Vec::new(),
        warnings: Vec::new(),
    });
    r.policy_revision =
        Some("3f1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a".into());
    r.latency_ms = Some(1.234);
    r
}

fn create_target(resource: &str) -> Target {
    Target {
        owner: Some("sa-orders".into()),
        resource_id: Some(resource.into()),
        resource_type: Some("Kafka".into()),
        environment: Some("env-prod01".into()),
        display_name: Some("orders-producer".into()),
        ..Target::default()
    }
}

fn read_event(source: &EventSource, i: usize) -> AuditEvent {
    let mut r = record(
        Stage::ResponseComplete,
        format!("read-{i:08}"),
        "ListAPIKeys",
        "/iam/v2/api-keys",
    );
    r.status = Some(200);
    r.upstream_status = Some(200);
    AuditEvent::new(source, EventType::ApiKeyList, r)
}

async fn push(sink: &FileSink, written: &mut usize, event: AuditEvent) {
    *written += 1;
    sink.append(EncodedEvent::new(&event).expect("encode"))
        .await
        .expect("append");
}

/// Writes the trail: a create (two records) for every managed key, `DELETED` creates and deletes,
/// `VANISHED` creates of keys that are gone, `UNRESOLVED` requests without an outcome, and reads
/// up to `total` records. Returns the number written.
async fn write_trail(path: &Path, managed: &[String], total: usize) -> usize {
    let sink = FileSink::open(FileSinkConfig::new(path)).expect("trail");
    let source = EventSource::new("bench");
    let mut written = 0usize;
    let mut n = 0usize;
    let creates: Vec<(String, bool)> = managed
        .iter()
        .map(|id| (id.clone(), false))
        .chain((0..DELETED).map(|i| (format!("DELETED{i:09}"), true)))
        .chain((0..VANISHED).map(|i| (format!("VANISHED{i:08}"), false)))
        .collect();
    let reads_per_create =
        (total.saturating_sub(creates.len() * 2 + DELETED + UNRESOLVED)) / creates.len().max(1);
    for (key, deleted) in &creates {
        n += 1;
        let request = format!("create-{n:08}");
        let mut received = record(
            Stage::RequestReceived,
            request.clone(),
            "CreateAPIKey",
            "/iam/v2/api-keys",
        );
        received.target = Some(create_target("lkc-prod01"));
        push(
            &sink,
            &mut written,
            AuditEvent::new(&source, EventType::ApiKeyCreate, received),
        )
        .await;
        let mut done = record(
            Stage::ResponseComplete,
            request,
            "CreateAPIKey",
            "/iam/v2/api-keys",
        );
        done.target = Some(create_target("lkc-prod01"));
        done.status = Some(202);
        done.upstream_status = Some(202);
        done.created_key_id = Some(key.clone());
        push(
            &sink,
            &mut written,
            AuditEvent::new(&source, EventType::ApiKeyCreate, done),
        )
        .await;
        if *deleted {
            let mut delete = record(
                Stage::ResponseComplete,
                format!("delete-{n:08}"),
                "DeleteAPIKey",
                &format!("/iam/v2/api-keys/{key}"),
            );
            delete.target = Some(Target {
                key_id: Some(key.clone()),
                ..Target::default()
            });
            delete.status = Some(204);
            delete.upstream_status = Some(204);
            push(
                &sink,
                &mut written,
                AuditEvent::new(&source, EventType::ApiKeyDelete, delete),
            )
            .await;
        }
        for _ in 0..reads_per_create {
            n += 1;
            push(&sink, &mut written, read_event(&source, n)).await;
        }
    }
    for i in 0..UNRESOLVED {
        let mut received = record(
            Stage::RequestReceived,
            format!("lost-{i:08}"),
            "CreateAPIKey",
            "/iam/v2/api-keys",
        );
        received.target = Some(create_target("lkc-prod01"));
        push(
            &sink,
            &mut written,
            AuditEvent::new(&source, EventType::ApiKeyCreate, received),
        )
        .await;
    }
    while written < total {
        n += 1;
        push(&sink, &mut written, read_event(&source, n)).await;
    }
    sink.flush().await.expect("flush");
    written
}
