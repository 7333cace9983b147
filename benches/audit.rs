//! What audit costs a governed create on the request worker, per record: encoding a
//! `response_complete` record shaped like the one `bench/`'s create writes (about 2.2 KB, a
//! third of it the decision input) into an [`EncodedEvent`] — serialization, then the secret
//! scrub over the JSON — and the scrub alone over that JSON. The writer thread's share (hash
//! chain, write, fsync) depends on the disk and is measured end to end with `bench/` (see
//! `benches/audit-bench.md`). `cargo bench --bench audit`.

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark on fixed data: any failure should abort it loudly"
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use keygate::audit::event::RawJson;
use keygate::audit::{
    AuditEvent, AuditRecord, AuthMethod, DecisionInfo, DecisionResult, EncodedEvent, EventSource,
    EventType, HttpInfo, PrincipalInfo, PrincipalKind, Stage, Target,
};
use keygate::model::DecidedBy;
use keygate::redact::redact_text;

/// The decision input of a create by `u-bench01` for `sa-12345` on `lkc-12345`, as recorded.
const DECISION_INPUT: &str = r#"{"version":1,"principal":{"id":"u-bench01","kind":"User","groups":[],"authenticatedBy":"api_key"},"action":"CreateApiKey","spec":{"ownerId":"sa-12345","resourceId":"lkc-12345","resourceEnvironment":"env-00000","displayName":"CI kafka access key","description":"This API key provides kafka access to cluster x"},"time":1796605544,"sourceIp":"127.0.0.1","facts":{"quota":{"scope":"kafka:lkc-12345"}},"bindings":[{"principal":"u-bench01","role":"ResourceOwner","crnPattern":"crn://confluent.cloud/organization=9bb441c4-edef-46ac-8a41-c49e44a3fd9a/service-account=sa-12345"}],"inventory":{"environments":["env-00000"],"clusters":[{"id":"lkc-12345","environment":"env-00000"}]},"revisions":{"policy":"740fed37dc4d6678dc54b64ac08084d103a1a21a6a093a5013716d3cf36b8834","matrix":"ea89c59f25d8d3ee","policies":"none","bindings":"036fff18c070a923","inventory":"8cdccf76e4207fe2"},"outcome":{"decision":"allow"}}"#;

fn response_complete() -> AuditEvent {
    let mut record = AuditRecord::new(
        Stage::ResponseComplete,
        "f88dbcff1a4744ed00000000000130ac",
        "CreateAPIKey",
    );
    record.principal = Some(PrincipalInfo {
        id: "u-bench01".to_owned(),
        kind: PrincipalKind::User,
        authentication_method: AuthMethod::Basic,
        key_id: Some("ABCDEFGHIJKLMNOP".to_owned()),
        external: None,
    });
    record.client_address = Some("127.0.0.1:45732".parse().unwrap());
    record.http = Some(HttpInfo {
        method: "POST".to_owned(),
        path: "/iam/v2/api-keys".to_owned(),
    });
    record.target = Some(Target {
        owner: Some("sa-12345".to_owned()),
        resource_id: Some("lkc-12345".to_owned()),
        resource_type: Some("Kafka".to_owned()),
        environment: Some("env-00000".to_owned()),
        key_id: Some("ABCDEFGHIJKLMNOP".to_owned()),
        display_name: None,
    });
    record.decision = Some(DecisionInfo {
        result: DecisionResult::Allow,
        decided_by: DecidedBy::Matrix,
        rule_ids: vec!["matrix.sa.resource_owner".to_owned()],
        explanation: Some(
            "creating a Kafka API key on cluster lkc-12345 in environment env-00000 for service \
             account sa-12345 is allowed (matrix.sa.resource_owner): you (u-bench01) hold \
             ResourceOwner on service-account=sa-12345, which covers service account sa-12345"
                .to_owned(),
        ),
        dry_run_findings: Vec::new(),
        warnings: Vec::new(),
    });
    record.status = Some(202);
    record.upstream_status = Some(202);
    record.created_key_id = Some("ABCDEFGHIJKLMNOP".to_owned());
    record.policy_revision =
        Some("740fed37dc4d6678dc54b64ac08084d103a1a21a6a093a5013716d3cf36b8834".to_owned());
    record.decision_input = RawJson::from_json(DECISION_INPUT.to_owned());
    record.latency_ms = Some(0.66368);
    AuditEvent::new(&EventSource::new("vm"), EventType::ApiKeyCreate, record)
}

fn bench_audit(c: &mut Criterion) {
    let event = response_complete();
    let encoded = EncodedEvent::new(&event).unwrap();
    let json = std::str::from_utf8(encoded.as_bytes()).unwrap().to_owned();
    println!("response_complete record: {} bytes", json.len());
    let mut group = c.benchmark_group("audit");
    group.bench_function("encode/response_complete", |b| {
        b.iter(|| EncodedEvent::new(black_box(&event)).unwrap())
    });
    group.bench_function("redact_text/response_complete", |b| {
        b.iter(|| redact_text(black_box(&json)).len())
    });
    group.finish();
}

criterion_group!(benches, bench_audit);
criterion_main!(benches);
