//! Folding the trail: incremental catch-up across runs and rotations, rebuilding when the index
//! does not match, and the state each kind of record leaves. The end-to-end behaviour (through
//! keygate, against the simulator) is in `tests/integration/reconcile.rs`.

use std::path::Path;

use super::state::State;
use super::trail::catch_up;
use super::*;
use crate::audit::tests::assert_lines_valid;
use crate::audit::{FileSink, FileSinkConfig};

fn event(event_type: EventType, stage: EventStage, request: &str) -> AuditRecord {
    let method = crate::audit::method_name(crate::model::Action::CreateApiKey);
    let mut record = AuditRecord::new(stage, request, method);
    record.target = Some(Target {
        owner: Some("sa-orders".into()),
        resource_id: Some("lkc-prod01".into()),
        display_name: Some("orders".into()),
        ..Target::default()
    });
    let _ = event_type;
    record
}

async fn write(sink: &FileSink, event_type: EventType, record: AuditRecord) {
    let event = AuditEvent::new(&EventSource::new("t"), event_type, record);
    sink.append_durable(crate::audit::tests::encode(&event))
        .await
        .unwrap();
}

/// A create of key `key` through keygate: its request and its completion.
async fn create(sink: &FileSink, request: &str, key: Option<&str>, status: u16) {
    write(
        sink,
        EventType::ApiKeyCreate,
        event(
            EventType::ApiKeyCreate,
            EventStage::RequestReceived,
            request,
        ),
    )
    .await;
    let mut done = event(
        EventType::ApiKeyCreate,
        EventStage::ResponseComplete,
        request,
    );
    done.status = Some(status);
    // keygate's own 504 (the upstream never answered) carries no upstream status.
    done.upstream_status = Some(status).filter(|s| *s != 504);
    done.created_key_id = key.map(str::to_owned);
    write(sink, EventType::ApiKeyCreate, done).await;
}

async fn noise(sink: &FileSink, n: usize) {
    for i in 0..n {
        let record = AuditRecord::new(
            EventStage::ResponseComplete,
            format!("list-{i}"),
            "ListAPIKeys",
        );
        write(sink, EventType::ApiKeyList, record).await;
    }
}

fn fold(path: &Path, state: &mut State) -> trail::Scan {
    catch_up(path, state).unwrap()
}

#[tokio::test]
async fn the_trail_is_folded_incrementally_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut config = FileSinkConfig::new(&path);
    config.max_bytes = 4096; // a few records per file
    let sink = FileSink::open(config).unwrap();
    create(&sink, "r1", Some("KEY1"), 202).await;
    noise(&sink, 5).await;
    let mut state = State::new();
    let first = fold(&path, &mut state);
    assert_eq!((first.records, first.folded, first.rebuilt), (7, 2, false));
    assert!(state.managed.contains_key("KEY1"));
    assert!(state.first_time.is_some());

    // More records, more rotations: only the new ones are read.
    create(&sink, "r2", Some("KEY2"), 202).await;
    noise(&sink, 20).await;
    assert!(sink.stats().rotations > 1);
    let second = fold(&path, &mut state);
    assert_eq!((second.records, second.folded), (22, 2));
    assert!(second.gaps.is_empty());
    assert_eq!(state.managed.len(), 2);
    // Nothing new: nothing read.
    assert_eq!(fold(&path, &mut state).records, 0);

    // The index survives a save and load.
    let index = index_path(&path);
    state.save(&index).unwrap();
    let mut loaded = State::load(&index).unwrap().unwrap();
    create(&sink, "r3", None, 403).await;
    assert_eq!(fold(&path, &mut loaded).records, 2);
    assert_eq!(loaded.managed.len(), 2);
    assert!(loaded.pending.is_empty(), "a refused create is resolved");
    assert_lines_valid(&std::fs::read_to_string(&path).unwrap());
}

#[tokio::test]
async fn an_index_that_does_not_match_the_trail_is_rebuilt_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    {
        let sink = FileSink::open(FileSinkConfig::new(&path)).unwrap();
        create(&sink, "r1", Some("KEY1"), 202).await;
    }
    let mut state = State::new();
    fold(&path, &mut state);
    // The trail is replaced by another one.
    std::fs::remove_file(&path).unwrap();
    {
        let sink = FileSink::open(FileSinkConfig::new(&path)).unwrap();
        noise(&sink, 3).await;
        create(&sink, "r9", Some("KEY9"), 202).await;
    }
    let scan = fold(&path, &mut state);
    assert!(scan.rebuilt);
    assert_eq!(scan.records, 5);
    let managed: Vec<&str> = state.managed.keys().map(|k| &**k).collect();
    assert_eq!(managed, ["KEY9"]);
}

#[tokio::test]
async fn each_kind_of_record_leaves_its_mark() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = FileSink::open(FileSinkConfig::new(&path)).unwrap();
    create(&sink, "ok", Some("KEY1"), 202).await;
    create(&sink, "gone", Some("KEY2"), 202).await;
    // A create whose upstream never answered (504): still unresolved.
    create(&sink, "timeout", None, 504).await;
    // Only the request record (keygate stopped).
    write(
        &sink,
        EventType::ApiKeyCreate,
        event(
            EventType::ApiKeyCreate,
            EventStage::RequestReceived,
            "crashed",
        ),
    )
    .await;
    // A delete through keygate.
    let mut delete = AuditRecord::new(EventStage::ResponseComplete, "del", "DeleteAPIKey");
    delete.target = Some(Target {
        key_id: Some("KEY1".into()),
        ..Target::default()
    });
    delete.status = Some(204);
    delete.upstream_status = Some(204);
    write(&sink, EventType::ApiKeyDelete, delete).await;
    // Reconcile's own findings.
    let mut vanished = AuditRecord::new(EventStage::Reconcile, "rec", METHOD_NAME);
    vanished.target = Some(Target {
        key_id: Some("KEY2".into()),
        ..Target::default()
    });
    vanished.reconcile = Some(ReconcileInfo {
        reason: "gone".into(),
        ..ReconcileInfo::default()
    });
    write(&sink, EventType::ApiKeyVanished, vanished).await;
    let mut unmanaged = AuditRecord::new(EventStage::Reconcile, "rec", METHOD_NAME);
    unmanaged.target = Some(Target {
        key_id: Some("CONSOLE".into()),
        ..Target::default()
    });
    unmanaged.reconcile = Some(ReconcileInfo {
        reason: "console".into(),
        ..ReconcileInfo::default()
    });
    write(&sink, EventType::ApiKeyUnmanaged, unmanaged).await;
    let mut unresolved = AuditRecord::new(EventStage::Reconcile, "rec", METHOD_NAME);
    unresolved.target = Some(Target {
        key_id: Some("KEY3".into()),
        owner: Some("sa-orders".into()),
        resource_id: Some("lkc-prod01".into()),
        ..Target::default()
    });
    unresolved.reconcile = Some(ReconcileInfo {
        reason: "matched".into(),
        create_request_id: Some("crashed".into()),
        ..ReconcileInfo::default()
    });
    write(&sink, EventType::ApiKeyUnresolved, unresolved).await;

    let mut state = State::new();
    fold(&path, &mut state);
    let mut managed: Vec<&str> = state.managed.keys().map(|k| &**k).collect();
    managed.sort_unstable();
    assert_eq!(
        managed,
        ["KEY3"],
        "KEY1 deleted, KEY2 vanished, KEY3 matched"
    );
    let pending: Vec<&str> = state.pending.keys().map(|k| &**k).collect();
    assert_eq!(pending, ["timeout"]);
    assert_eq!(
        state.pending["timeout"].display_name.as_deref(),
        Some("orders")
    );
    assert!(state.unmanaged.contains("CONSOLE"));
    assert_eq!(
        (
            state.totals.unmanaged,
            state.totals.vanished,
            state.totals.unresolved
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn a_torn_final_line_is_not_read_and_is_read_once_completed_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    {
        let sink = FileSink::open(FileSinkConfig::new(&path)).unwrap();
        create(&sink, "r1", Some("KEY1"), 202).await;
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, br#"{"sequence":"000"#).unwrap();
    let mut state = State::new();
    assert_eq!(fold(&path, &mut state).records, 2);
    // The sink rotates the torn file aside and continues the chain in a new one.
    let sink = FileSink::open(FileSinkConfig::new(&path)).unwrap();
    create(&sink, "r2", Some("KEY2"), 202).await;
    let scan = fold(&path, &mut state);
    assert_eq!((scan.records, scan.rebuilt), (2, false));
    assert!(scan.gaps.is_empty(), "{:?}", scan.gaps);
    assert_eq!(state.managed.len(), 2);
}
