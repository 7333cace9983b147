use std::path::Path;

use super::*;
use crate::audit::chain::{hash_line, verify, VerifyReport};
use crate::audit::tests::{assert_lines_valid, encode, sample_event};

fn config(path: &Path) -> FileSinkConfig {
    FileSinkConfig::new(path)
}

async fn append(sink: &FileSink, n: usize) -> u64 {
    sink.append_durable(encode(&sample_event(n)))
        .await
        .unwrap()
        .sequence
}

fn current_sequences(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| parse_link(line.as_bytes()).unwrap().0)
        .collect()
}

#[tokio::test]
async fn chain_continues_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    {
        let sink = FileSink::open(config(&path)).unwrap();
        assert_eq!(append(&sink, 1).await, 1);
        assert_eq!(append(&sink, 2).await, 2);
        assert_eq!(append(&sink, 3).await, 3);
    }
    let sink = FileSink::open(config(&path)).unwrap();
    assert_eq!(append(&sink, 4).await, 4);
    assert_eq!(append(&sink, 5).await, 5);
    assert_eq!(current_sequences(&path), vec![1, 2, 3, 4, 5]);
    assert!(matches!(verify(&path), VerifyReport::Ok { count: 5, .. }));
    assert_lines_valid(&std::fs::read_to_string(&path).unwrap());
}

#[tokio::test]
async fn rotation_keeps_the_chain_across_files_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let line_len = (encode(&sample_event(1)).as_bytes().len() + CHAIN_OVERHEAD) as u64;
    let mut cfg = config(&path);
    cfg.max_bytes = line_len * 3 + line_len / 2; // three records per file
    {
        let sink = FileSink::open(cfg.clone()).unwrap();
        for i in 1..=8 {
            assert_eq!(append(&sink, i).await, i as u64);
        }
        assert_eq!(sink.stats().rotations, 2);
        assert_eq!(sink.stats().events_written, 8);
    }
    let rotated: Vec<u64> = rotated_files(&path)
        .unwrap()
        .iter()
        .map(|r| r.first_sequence)
        .collect();
    assert_eq!(rotated, vec![1, 4]);
    assert_eq!(current_sequences(&path), vec![7, 8]);

    let sink = FileSink::open(cfg).unwrap();
    assert_eq!(append(&sink, 9).await, 9);
    assert_eq!(append(&sink, 10).await, 10);
    assert_eq!(sink.stats().rotations, 1);
    assert!(matches!(verify(&path), VerifyReport::Ok { count: 10, .. }));

    // The first record of each new file points at the last record of the previous one.
    let last_of_first = std::fs::read_to_string(&rotated_files(&path).unwrap()[0].path).unwrap();
    let last_line = last_of_first.lines().last().unwrap();
    let second = std::fs::read_to_string(&rotated_files(&path).unwrap()[1].path).unwrap();
    let (_, prev) = parse_link(second.lines().next().unwrap().as_bytes()).unwrap();
    assert_eq!(prev, hash_line(last_line.as_bytes()));
}

#[tokio::test]
async fn torn_final_line_is_kept_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    {
        let sink = FileSink::open(config(&path)).unwrap();
        for i in 1..=3 {
            append(&sink, i).await;
        }
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let intact = bytes.clone();
    bytes.extend_from_slice(br#"{"sequence":"00000000000000000004","keygatepre"#);
    std::fs::write(&path, &bytes).unwrap();

    let sink = FileSink::open(config(&path)).unwrap();
    assert_eq!(sink.stats().torn_recovered, 1);
    assert_eq!(sink.stats().rotations, 0);
    assert_eq!(append(&sink, 4).await, 4);
    assert_eq!(append(&sink, 5).await, 5);

    // The torn file is kept byte for byte under its rotated name.
    let rotated = rotated_files(&path).unwrap();
    assert_eq!(rotated.len(), 1);
    assert_eq!(std::fs::read(&rotated[0].path).unwrap(), bytes);
    assert_ne!(bytes, intact);
    assert_eq!(current_sequences(&path), vec![4, 5]);
    match verify(&path) {
        VerifyReport::Ok {
            count,
            recovered_torn,
            ..
        } => {
            assert_eq!(count, 5);
            assert_eq!(recovered_torn, vec![3]);
        }
        other => panic!("expected ok, got {other:?}"),
    }
}

#[tokio::test]
async fn torn_line_alone_in_a_file_continues_from_the_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    {
        let sink = FileSink::open(config(&path)).unwrap();
        append(&sink, 1).await;
        append(&sink, 2).await;
    }
    // Crash twice: first with a torn line after record 2, then again before any new record.
    for _ in 0..2 {
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"seq");
        std::fs::write(&path, &bytes).unwrap();
        let sink = FileSink::open(config(&path)).unwrap();
        assert_eq!(sink.stats().torn_recovered, 1);
    }
    let sink = FileSink::open(config(&path)).unwrap();
    assert_eq!(append(&sink, 3).await, 3);
    assert_eq!(rotated_files(&path).unwrap().len(), 2);
    match verify(&path) {
        VerifyReport::Ok {
            count,
            recovered_torn,
            ..
        } => {
            assert_eq!(count, 3);
            assert_eq!(recovered_torn, vec![2, 2]);
        }
        other => panic!("expected ok, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_durable_appends_share_fsyncs_and_get_distinct_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (sink, gate) = FileSink::open_gated(config(&path)).unwrap();
    let sink = Arc::new(sink);
    let tasks: Vec<_> = (1..=64)
        .map(|i| {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move { sink.append_durable(encode(&sample_event(i))).await })
        })
        .collect();
    // Let all 64 callers queue before the writer starts (a stand-in for a slow disk).
    while sink.queued() < 64 {
        tokio::task::yield_now().await;
    }
    gate.send(()).unwrap();
    let mut sequences = Vec::new();
    for task in tasks {
        sequences.push(task.await.unwrap().unwrap().sequence);
    }
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=64).collect::<Vec<u64>>());
    let stats = sink.stats();
    assert_eq!(stats.events_written, 64);
    assert_eq!(stats.fsyncs, 1);
    assert_eq!(stats.events_per_fsync(), 64.0);
    assert!(matches!(verify(&path), VerifyReport::Ok { count: 64, .. }));
}

#[tokio::test]
async fn async_append_on_a_full_queue_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut cfg = config(&path);
    cfg.queue_capacity = 2;
    let (sink, gate) = FileSink::open_gated(cfg).unwrap();
    sink.append_async(encode(&sample_event(1))).unwrap();
    sink.append_async(encode(&sample_event(2))).unwrap();
    let third = sink.append_async(encode(&sample_event(3)));
    assert!(matches!(third, Err(AuditError::QueueFull { sink: "file" })));
    assert_eq!(sink.stats().dropped, 1);
    gate.send(()).unwrap();
    sink.flush().await.unwrap();
    assert_eq!(sink.stats().events_written, 2);
    assert_eq!(current_sequences(&path), vec![1, 2]);
}

#[tokio::test]
async fn write_failure_fails_the_durable_append_and_marks_the_sink_unhealthy() {
    let Ok(sink) = FileSink::open(config(Path::new("/dev/full"))) else {
        return; // No /dev/full on this system: nothing to test.
    };
    let err = sink
        .append_durable(encode(&sample_event(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::Io { op: "write", .. }), "{err}");
    assert!(!sink.is_healthy());
    let again = sink.append_durable(encode(&sample_event(2))).await;
    assert!(matches!(again, Err(AuditError::Unhealthy)));
}

#[tokio::test]
async fn removed_directory_fails_rotation_and_every_later_append() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("audit");
    std::fs::create_dir(&sub).unwrap();
    let path = sub.join("audit.jsonl");
    let mut cfg = config(&path);
    cfg.max_bytes = 1; // every record after the first rotates
    let sink = FileSink::open(cfg).unwrap();
    assert_eq!(append(&sink, 1).await, 1);
    std::fs::remove_dir_all(&sub).unwrap();
    let err = sink
        .append_durable(encode(&sample_event(2)))
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::Io { .. }), "{err}");
    assert!(!sink.is_healthy());
    assert!(sink.append_async(encode(&sample_event(3))).is_err());
    assert!(sink.flush().await.is_err());
    assert_eq!(sink.stats().events_written, 1);
}

#[test]
fn missing_directory_fails_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let err = FileSink::open(config(&dir.path().join("nope/audit.jsonl"))).unwrap_err();
    assert!(matches!(err, AuditError::Io { op: "open", .. }), "{err}");
}

#[test]
fn garbage_last_record_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, b"not a record\n").unwrap();
    let err = FileSink::open(config(&path)).unwrap_err();
    assert!(matches!(err, AuditError::Chain { .. }), "{err}");
}

#[tokio::test]
async fn a_second_writer_is_refused_while_the_first_holds_the_file_even_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut cfg = config(&path);
    cfg.max_bytes = 1; // every record after the first rotates
    let sink = FileSink::open(cfg.clone()).unwrap();
    assert!(matches!(
        FileSink::open(cfg.clone()),
        Err(AuditError::InUse { .. })
    ));
    assert_eq!(append(&sink, 1).await, 1);
    assert_eq!(append(&sink, 2).await, 2);
    assert_eq!(sink.stats().rotations, 1);
    // The new current file is locked too.
    assert!(matches!(
        FileSink::open(cfg.clone()),
        Err(AuditError::InUse { .. })
    ));
    drop(sink);
    // Dropping the sink released the lock at once.
    let sink = FileSink::open(cfg).unwrap();
    assert_eq!(append(&sink, 3).await, 3);
}

#[tokio::test]
async fn a_receipt_resolves_after_the_fsync_and_later_records_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (sink, gate) = FileSink::open_gated(config(&path)).unwrap();
    let first = sink.append(encode(&sample_event(1))).await.unwrap();
    let second = sink.append(encode(&sample_event(2))).await.unwrap();
    assert_eq!(sink.stats().events_written, 0);
    gate.send(()).unwrap();
    assert_eq!(second.durable().await.unwrap().sequence, 2);
    assert_eq!(first.durable().await.unwrap().sequence, 1);
    assert_eq!(current_sequences(&path), vec![1, 2]);
}

#[test]
fn a_sink_opened_outside_a_runtime_completes_its_waiters_itself() {
    // No runtime when the sink opens: no completer task, the writer completes waiters directly.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = FileSink::open(config(&path)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sequences: Vec<u64> = runtime.block_on(async {
        let mut out = Vec::new();
        for i in 1..=3 {
            out.push(append(&sink, i).await);
        }
        out
    });
    assert_eq!(sequences, vec![1, 2, 3]);
}

#[tokio::test]
async fn waiters_are_still_completed_after_the_opening_runtime_is_gone() {
    // The completer task lives on the runtime that opened the sink; once that runtime is gone the
    // writer notices the closed channel and completes waiters itself.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = std::thread::spawn({
        let path = path.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async { FileSink::open(config(&path)).unwrap() })
        }
    })
    .join()
    .unwrap();
    assert_eq!(append(&sink, 1).await, 1);
    assert_eq!(append(&sink, 2).await, 2);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_writer_thread_runs_as_a_batch_thread() {
    // SCHED_BATCH is policy 3 in /proc/<pid>/task/<tid>/stat (field 41).
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::open(config(&dir.path().join("audit.jsonl"))).unwrap();
    append(&sink, 1).await;
    let writer = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
        .find(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                // The kernel keeps the first 15 bytes of a thread's name.
                .is_ok_and(|comm| WRITER_THREAD.starts_with(comm.trim()))
        })
        .expect("the writer thread");
    let stat = std::fs::read_to_string(writer.path().join("stat")).unwrap();
    // Fields after the parenthesised command name; policy is field 41 overall.
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let policy: u32 = after_comm.split(' ').nth(41 - 3).unwrap().parse().unwrap();
    assert_eq!(policy, 3, "SCHED_BATCH");
}
