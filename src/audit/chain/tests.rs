use std::path::Path;

use super::*;
use crate::audit::file::{FileSink, FileSinkConfig};
use crate::audit::tests::{assert_lines_valid, encode, sample_event};

/// Writes `n` records through the real file sink and returns the file's lines.
async fn write_records(path: &Path, n: usize) -> Vec<String> {
    let sink = FileSink::open(FileSinkConfig::new(path)).unwrap();
    for i in 1..=n {
        sink.append_durable(encode(&sample_event(i))).await.unwrap();
    }
    let text = std::fs::read_to_string(path).unwrap();
    assert_lines_valid(&text);
    text.lines().map(str::to_owned).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn broken_at(report: VerifyReport) -> u64 {
    match report {
        VerifyReport::Broken { sequence, .. } => sequence,
        other => panic!("expected a break, got {other:?}"),
    }
}

#[test]
fn sequence_digits_are_twenty_zero_padded_decimal_digits() {
    for n in [
        0,
        1,
        9,
        10,
        4_294_967_296,
        10_000_000_000_000_000_000,
        u64::MAX,
    ] {
        assert_eq!(
            sequence_digits(n).as_slice(),
            format!("{n:020}").as_bytes(),
            "{n}"
        );
    }
}

#[test]
fn chained_line_carries_sequence_and_previous_hash_first() {
    let event = encode(&sample_event(1));
    let head = ChainHead {
        next_sequence: 7,
        prev_hash: hash_line(b"previous"),
    };
    let mut out = Vec::new();
    let len = push_chained_line(&mut out, event.as_bytes(), &head);
    assert_eq!(out.len(), len + 1);
    assert_eq!(out.len(), event.as_bytes().len() + CHAIN_OVERHEAD);
    assert_eq!(out.last(), Some(&b'\n'));
    assert!(out.starts_with(br#"{"sequence":"00000000000000000007","keygateprevhash":""#));
    let line = &out[..len];
    assert_eq!(parse_link(line), Ok((7, head.prev_hash.clone())));
    let value: serde_json::Value = serde_json::from_slice(line).unwrap();
    assert_eq!(value["specversion"], "1.0");
}

#[test]
fn hash_is_sha256_hex_of_the_line() {
    assert_eq!(
        hash_line(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[tokio::test]
async fn intact_chain_verifies_with_count_and_final_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let lines = write_records(&path, 5).await;
    let report = verify(&path);
    assert_eq!(
        report,
        VerifyReport::Ok {
            count: 5,
            final_hash: hash_line(lines[4].as_bytes()),
            recovered_torn: Vec::new(),
        }
    );
    assert_eq!(run_verify_cli(&path, None), 0);
    assert_eq!(parse_link(lines[0].as_bytes()).unwrap().1, GENESIS_HASH);
}

#[tokio::test]
async fn a_trail_is_anchored_to_a_hash_it_passes_through() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let lines = write_records(&path, 5).await;
    let third = hash_line(lines[2].as_bytes());
    let last = hash_line(lines[4].as_bytes());
    // The final hash of an earlier verify, and the current one, in either letter case.
    assert_eq!(verify_anchored(&path, Some(&third)).1, Some(3));
    assert_eq!(run_verify_cli(&path, Some(&last.to_uppercase())), 0);
    assert_eq!(run_verify_cli(&path, Some(&third)), 0);
    // Cut back to two records: the chain still verifies, but no longer reaches the anchor.
    write_lines(&path, &lines[..2]);
    assert!(matches!(verify(&path), VerifyReport::Ok { count: 2, .. }));
    assert_eq!(verify_anchored(&path, Some(&third)).1, None);
    assert_eq!(run_verify_cli(&path, Some(&third)), 1);
    assert_eq!(run_verify_cli(&path, Some(&"0".repeat(64))), 1);
}

#[tokio::test]
async fn edited_record_breaks_at_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut lines = write_records(&path, 5).await;
    lines[2] = lines[2].replace("may create", "may not create");
    write_lines(&path, &lines);
    assert_eq!(broken_at(verify(&path)), 3);
    assert_eq!(run_verify_cli(&path, None), 1);
}

#[tokio::test]
async fn edited_sequence_or_hash_breaks_at_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let original = write_records(&path, 5).await;

    let mut lines = original.clone();
    lines[3] = lines[3].replace("00000000000000000004", "00000000000000000009");
    write_lines(&path, &lines);
    assert_eq!(broken_at(verify(&path)), 4);

    let mut lines = original.clone();
    lines[0] = lines[0].replace(GENESIS_HASH, &hash_line(b"forged"));
    write_lines(&path, &lines);
    assert_eq!(broken_at(verify(&path)), 1);

    let mut lines = original;
    lines[1] = "{not json".to_owned();
    write_lines(&path, &lines);
    assert_eq!(broken_at(verify(&path)), 2);
}

#[tokio::test]
async fn deleted_record_breaks_at_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut lines = write_records(&path, 5).await;
    lines.remove(2);
    write_lines(&path, &lines);
    assert_eq!(broken_at(verify(&path)), 3);

    let mut lines = write_records(&dir.path().join("b.jsonl"), 3).await;
    lines.remove(0);
    write_lines(&path, &lines);
    assert_eq!(broken_at(verify(&path)), 1);
}

#[tokio::test]
async fn swapped_records_break_at_the_first_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut lines = write_records(&path, 5).await;
    lines.swap(2, 3);
    write_lines(&path, &lines);
    assert_eq!(broken_at(verify(&path)), 3);
}

#[tokio::test]
async fn duplicated_record_breaks_after_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut lines = write_records(&path, 3).await;
    let copy = lines[1].clone();
    lines.insert(2, copy);
    write_lines(&path, &lines);
    assert_eq!(broken_at(verify(&path)), 3);
}

#[tokio::test]
async fn torn_final_line_is_reported_as_torn_not_as_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let lines = write_records(&path, 4).await;
    let mut text = std::fs::read(&path).unwrap();
    text.extend_from_slice(&lines[3].as_bytes()[..40]);
    std::fs::write(&path, text).unwrap();
    assert_eq!(
        verify(&path),
        VerifyReport::TornTail {
            after_sequence: 4,
            count: 4,
            final_hash: hash_line(lines[3].as_bytes()),
        }
    );
    assert_eq!(run_verify_cli(&path, None), 0);
}

#[test]
fn missing_file_is_unreadable_not_ok() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.jsonl");
    assert!(matches!(verify(&path), VerifyReport::Unreadable { .. }));
    assert_eq!(run_verify_cli(&path, None), 2);
}

#[test]
fn rotated_files_sort_by_first_sequence_then_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    for name in [
        "audit.jsonl.00000000000000000010",
        "audit.jsonl.00000000000000000002.1",
        "audit.jsonl.00000000000000000002",
        "audit.jsonl.bak",
        "audit.jsonl.12",
        "other.jsonl.00000000000000000001",
    ] {
        std::fs::write(dir.path().join(name), b"").unwrap();
    }
    let found: Vec<(u64, u32)> = rotated_files(&path)
        .unwrap()
        .into_iter()
        .map(|r| (r.first_sequence, r.n))
        .collect();
    assert_eq!(found, vec![(2, 0), (2, 1), (10, 0)]);
    assert_eq!(
        rotated_name(&path, 2).unwrap(),
        dir.path().join("audit.jsonl.00000000000000000002.2")
    );
    assert_eq!(
        rotated_name(&path, 3).unwrap(),
        dir.path().join("audit.jsonl.00000000000000000003")
    );
}
