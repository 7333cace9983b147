//! Auditor tests, plus helpers shared by the audit submodules' tests: a fully populated sample
//! event, the JSON Schema check, a capturing writer.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::*;
use crate::model::Action;
use crate::model::DecidedBy;

/// A canary shaped like a post-2025 Confluent secret.
pub(crate) const CANARY: &str = "cfltAbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/AbCdEfGhIjKlMnOpQrStUv";

const SCHEMA: &str = include_str!("../../schemas/audit-event.schema.json");

/// An event with every field set, numbered `n` in its request id.
pub(crate) fn sample_event(n: usize) -> AuditEvent {
    AuditEvent::new(
        &EventSource::new("test-instance"),
        Action::CreateApiKey.into(),
        sample_record(n),
    )
}

/// The record of [`sample_event`].
pub(crate) fn sample_record(n: usize) -> AuditRecord {
    let client: SocketAddr = "192.0.2.7:53412".parse().unwrap();
    AuditRecord {
        principal: Some(PrincipalInfo {
            id: "u-abc123".into(),
            kind: PrincipalKind::User,
            authentication_method: AuthMethod::Basic,
            key_id: Some("ABCD1234567890AB".into()),
            external: None,
        }),
        client_address: Some(client),
        http: Some(HttpInfo {
            method: "POST".into(),
            path: "/iam/v2/api-keys".into(),
        }),
        target: Some(Target {
            owner: Some("sa-123".into()),
            resource_id: Some("lkc-abc".into()),
            resource_type: Some("kafka".into()),
            environment: Some("env-xyz".into()),
            key_id: None,
            display_name: Some("orders-producer".into()),
        }),
        decision: Some(DecisionInfo {
            result: DecisionResult::Allow,
            decided_by: DecidedBy::Matrix,
            rule_ids: vec!["matrix/CloudClusterAdmin/kafka".into()],
            explanation: Some(format!(
                "event {n}: CloudClusterAdmin on lkc-abc may create"
            )),
            dry_run_findings: vec!["ticket-in-description".into()],
            warnings: Vec::new(),
        }),
        status: Some(202),
        upstream_status: Some(202),
        created_key_id: Some("NEWKEY0000000001".into()),
        policy_revision: Some("rev-42".into()),
        decision_input: crate::audit::event::RawJson::of(&sample_input()),
        latency_ms: Some(12.5),
        ..AuditRecord::new(
            Stage::ResponseComplete,
            format!("req-{n}"),
            method_name(Action::CreateApiKey),
        )
    }
}

/// A decision input as the decide stage records it (`policy::input`).
fn sample_input() -> serde_json::Value {
    serde_json::json!({
        "version": 1,
        "principal": {"id": "u-abc123", "kind": "User", "groups": ["group-x"], "authenticatedBy": "api_key"},
        "action": "CreateApiKey",
        "spec": {"ownerId": "sa-123", "resourceId": "lkc-abc", "displayName": "orders-producer", "description": ""},
        "time": 1_735_689_600,
        "sourceIp": "192.0.2.7",
        "facts": {"ownerKeyCount": 2, "quota": {"scope": "kafka:lkc-abc", "clusters": [{"id": "lkc-abc", "kind": "Dedicated", "keys": 3}]}},
        "bindings": [{"principal": "u-abc123", "role": "CloudClusterAdmin", "crnPattern": "crn://confluent.cloud/organization=o/environment=env-xyz/cloud-cluster=lkc-abc"}],
        "inventory": {"environments": ["env-xyz"], "clusters": [{"id": "lkc-abc", "environment": "env-xyz", "kind": "Dedicated"}]},
        "revisions": {"policy": "rev-42", "matrix": "0123456789abcdef", "policies": "none", "bindings": "upstream", "inventory": "upstream"},
        "outcome": {"decision": "allow", "dryRun": ["ticket-in-description"]}
    })
}

/// A minimal event of `event_type`.
pub(crate) fn minimal_event(event_type: EventType) -> AuditEvent {
    AuditEvent::new(
        &EventSource::new("test-instance"),
        event_type,
        AuditRecord::new(Stage::RequestReceived, "req-min", "HttpRequest"),
    )
}

pub(crate) fn encode(event: &AuditEvent) -> EncodedEvent {
    EncodedEvent::new(event).unwrap()
}

/// Schema violations of `instance` (empty when valid).
pub(crate) fn schema_errors(instance: &serde_json::Value) -> Option<String> {
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.enable_format_assertions();
    let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
    compiler
        .add_resource("audit-event.schema.json", schema)
        .unwrap();
    let index = compiler
        .compile("audit-event.schema.json", &mut schemas)
        .unwrap();
    schemas
        .validate(instance, index)
        .err()
        .map(|e| format!("{e:#}"))
}

/// Asserts every JSON line in `text` validates against the schema; returns them parsed.
pub(crate) fn assert_lines_valid(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(errors) = schema_errors(&value) {
                panic!("event does not match the schema: {errors}\n{line}");
            }
            value
        })
        .collect()
}

/// A writer tests can read back.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn full_and_minimal_events_match_the_schema() {
    let mut events = vec![sample_event(1)];
    for event_type in [
        EventType::ApiKeyCreate,
        EventType::ApiKeyList,
        EventType::ApiKeyGet,
        EventType::ApiKeyUpdate,
        EventType::ApiKeyDelete,
        EventType::HttpRequest,
    ] {
        events.push(minimal_event(event_type));
    }
    for event in &events {
        let value = serde_json::to_value(event).unwrap();
        assert_eq!(schema_errors(&value), None, "{value}");
        assert_eq!(value["type"], event.event_type().as_str());
    }
}

#[test]
fn schema_rejects_fields_the_struct_does_not_have() {
    let mut value = serde_json::to_value(sample_event(1)).unwrap();
    assert_eq!(schema_errors(&value), None);
    value["data"]["principal"]["secret"] = CANARY.into();
    assert!(schema_errors(&value).is_some());
    let mut value = serde_json::to_value(sample_event(1)).unwrap();
    value["data"]["decision"]["result"] = "maybe".into();
    assert!(schema_errors(&value).is_some());
    // The decision input holds no free-form place a credential could go.
    for (path, field) in [
        ("principal", "credential"),
        ("facts", "secret"),
        ("", "authorization"),
    ] {
        let mut value = serde_json::to_value(sample_event(1)).unwrap();
        let input = &mut value["data"]["decisionInput"];
        let at = if path.is_empty() {
            input
        } else {
            &mut input[path]
        };
        at[field] = CANARY.into();
        assert!(schema_errors(&value).is_some(), "{path}.{field}");
    }
}

#[tokio::test]
async fn blocking_emit_is_durable_and_fans_out_without_chain_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let file = FileSink::open(FileSinkConfig::new(&path)).unwrap();
    let capture = Capture::default();
    let stdout = StdoutSink::with_writer(capture.clone(), 16).unwrap();
    let auditor = Auditor::new(Some((file, FileMode::Blocking)), vec![Box::new(stdout)]);

    let first = auditor.emit(&sample_event(1)).await.unwrap();
    let second = auditor.emit(&sample_event(2)).await.unwrap();
    assert_eq!(first, Some(Committed { sequence: 1 }));
    assert_eq!(second, Some(Committed { sequence: 2 }));
    auditor.flush().await.unwrap();

    let file_lines = assert_lines_valid(&std::fs::read_to_string(&path).unwrap());
    let stdout_lines = assert_lines_valid(&capture.text());
    assert_eq!(file_lines.len(), 2);
    assert_eq!(stdout_lines.len(), 2);
    assert_eq!(file_lines[1]["sequence"], "00000000000000000002");
    assert!(stdout_lines[1].get("sequence").is_none());
    assert_eq!(file_lines[1]["id"], stdout_lines[1]["id"]);
    assert_eq!(auditor.sinks()[0].stats().delivered, 2);
    assert!(auditor.is_healthy());
    assert!(matches!(verify(&path), VerifyReport::Ok { count: 2, .. }));
}

#[tokio::test]
async fn canary_secrets_in_free_text_are_scrubbed_before_every_sink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let file = FileSink::open(FileSinkConfig::new(&path)).unwrap();
    let capture = Capture::default();
    let stdout = StdoutSink::with_writer(capture.clone(), 16).unwrap();
    let auditor = Auditor::new(Some((file, FileMode::Blocking)), vec![Box::new(stdout)]);

    // Places a careless caller might copy a secret or a header into.
    let mut data = sample_record(1);
    if let Some(decision) = data.decision.as_mut() {
        decision.explanation = Some(format!(
            "upstream said: invalid key {CANARY}; header was Authorization: Basic QUJDRDpjZmx0"
        ));
        decision.rule_ids.push(format!("policy/{CANARY}"));
    }
    data.created_key_id = Some(CANARY.to_owned());
    data.request_id = format!("Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln-{CANARY}");
    let event = AuditEvent::new(
        &EventSource::new("test-instance"),
        EventType::ApiKeyCreate,
        data,
    );

    auditor.emit(&event).await.unwrap();
    auditor.emit(&sample_event(2)).await.unwrap();
    auditor.flush().await.unwrap();

    let written = std::fs::read_to_string(&path).unwrap();
    let printed = capture.text();
    for output in [&written, &printed] {
        assert!(!output.contains(CANARY), "canary leaked: {output}");
        assert!(!output.contains("QUJDRDpjZmx0"), "basic credential leaked");
        assert!(
            !output.contains("eyJhbGciOiJSUzI1NiJ9"),
            "bearer token leaked"
        );
        assert!(output.contains(crate::redact::REDACTED));
        assert_lines_valid(output);
    }
    assert_eq!(auditor.scrubbed(), 1);
    assert!(matches!(verify(&path), VerifyReport::Ok { count: 2, .. }));
}

#[tokio::test]
async fn async_mode_never_fails_a_request_even_when_the_file_is_broken() {
    let Ok(file) = FileSink::open(FileSinkConfig::new("/dev/full")) else {
        return; // No /dev/full on this system: nothing to test.
    };
    let auditor = Auditor::new(Some((file, FileMode::Async)), Vec::new());
    assert_eq!(auditor.emit(&sample_event(1)).await.unwrap(), None);
    assert!(auditor.flush().await.is_err());
    assert!(!auditor.is_healthy());
    assert_eq!(auditor.emit(&sample_event(2)).await.unwrap(), None);
    auditor.emit_nowait(&sample_event(3));
    assert_eq!(auditor.file().unwrap().stats().failed, 3);
}

#[tokio::test]
async fn async_drops_are_counted_and_logged_at_most_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = FileSinkConfig::new(dir.path().join("audit.jsonl"));
    config.queue_capacity = 1;
    let (file, gate) = FileSink::open_gated(config).unwrap();
    let auditor = Auditor::new(Some((file, FileMode::Async)), Vec::new());
    for n in 0..4 {
        // Async mode never refuses a request, even when its event is dropped.
        assert_eq!(auditor.emit(&sample_event(n)).await.unwrap(), None);
    }
    let file = auditor.file().unwrap();
    assert_eq!(file.stats().dropped, 3);
    // The first drop was logged; the next two wait for the next interval's warning.
    assert_eq!(auditor.losses.unreported(), 2);
    gate.send(()).unwrap();
    auditor.flush().await.unwrap();
    assert_eq!(file.stats().events_written, 1);
}
