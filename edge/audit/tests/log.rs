//! Audit log behaviour against real files in temporary directories; see `edge/docs/design/audit.md`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;
use vakt_audit::{AuditError, AuditLog, Clock, Corruption, GENESIS_PREV, verify};

/// A clock that starts at 2026-11-22T17:13:30.123Z and advances one second per reading.
fn stepping_clock() -> Clock {
    let tick = AtomicI64::new(0);
    Box::new(move || {
        let n = tick.fetch_add(1, Ordering::Relaxed);
        datetime!(2026-11-22 17:13:30.123456 UTC) + time::Duration::seconds(n)
    })
}

fn log_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("audit").join("audit.jsonl")
}

/// Writes a log with `n` entries and returns its path.
fn write_log(dir: &tempfile::TempDir, n: u64) -> PathBuf {
    let path = log_path(dir);
    let mut log = AuditLog::open_with_clock(&path, stepping_clock()).unwrap();
    for i in 1..=n {
        log.append("cli:root", "config.changed", json!({"field": "retention_days", "value": i, "ratio": 0.35}))
            .unwrap();
    }
    path
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).unwrap();
}

fn corrupt_at(err: AuditError) -> (u64, Option<u64>, Corruption) {
    match err {
        AuditError::Corrupt { line, seq, reason, .. } => (line, seq, reason),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn append_reopen_and_continue_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);

    let mut log = AuditLog::open_with_clock(&path, stepping_clock()).unwrap();
    assert_eq!(log.last_seq(), 0);
    assert_eq!(log.last_hash(), GENESIS_PREV);
    let first = log.append("installer", "box.provisioned", json!({"box_id": "box-0042"})).unwrap();
    let second = log.append("box", "box.started", json!({})).unwrap();
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(first.prev, GENESIS_PREV);
    assert_eq!(second.prev, first.hash);
    assert_eq!(first.at, datetime!(2026-11-22 17:13:30.123 UTC));
    drop(log);

    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("{\"seq\":1,\"at\":\"2026-11-22T17:13:30.123Z\",\"actor\":\"installer\""), "{text}");
    assert!(text.ends_with('\n'));

    let mut log = AuditLog::open(&path).unwrap();
    assert!(!log.recovered_torn_tail());
    assert_eq!(log.last_seq(), 2);
    assert_eq!(log.last_hash(), second.hash);
    let third = log.append("cli:root", "audit.verified", json!({"entries": 2})).unwrap();
    assert_eq!(third.seq, 3);
    assert_eq!(third.prev, second.hash);
    assert!(third.at > second.at, "system clock is later than the 2026 test clock");
    drop(log);

    let report = verify(&path).unwrap();
    assert_eq!(report.entries, 3);
    assert_eq!(report.last_seq, 3);
    assert_eq!(report.last_hash, third.hash);
}

#[test]
fn verify_reports_counts_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(&dir, 5);
    let report = verify(&path).unwrap();
    assert_eq!(report.entries, 5);
    assert_eq!(report.last_seq, 5);
    assert_eq!(report.first_at, Some(datetime!(2026-11-22 17:13:30.123 UTC)));
    assert_eq!(report.last_at, Some(datetime!(2026-11-22 17:13:34.123 UTC)));
    assert_eq!(report.torn_tail_bytes, 0);
    let last: serde_json::Value = serde_json::from_str(&lines(&path)[4]).unwrap();
    assert_eq!(report.last_hash, last["hash"].as_str().unwrap());
}

#[test]
fn empty_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    drop(AuditLog::open(&path).unwrap());
    let report = verify(&path).unwrap();
    assert_eq!((report.entries, report.last_seq, report.last_hash.as_str()), (0, 0, GENESIS_PREV));
    assert_eq!(report.first_at, None);
}

#[test]
fn modified_details_byte_is_named_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(&dir, 9);
    let mut all = lines(&path);
    // "value":7 -> "value":8 in the seventh entry: still valid JSON, same shape.
    assert!(all[6].contains("\"value\":7"));
    all[6] = all[6].replace("\"value\":7", "\"value\":8");
    write_lines(&path, &all);

    let err = verify(&path).unwrap_err();
    let msg = err.to_string();
    assert_eq!(corrupt_at(err), (7, Some(7), Corruption::HashMismatch));
    assert!(msg.contains("line 7 (seq 7): hash mismatch: entry was modified"), "{msg}");

    // open() refuses a tampered log and leaves it as it was.
    let before = fs::read(&path).unwrap();
    let err = AuditLog::open(&path).unwrap_err();
    assert_eq!(corrupt_at(err).0, 7);
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn rewritten_entry_with_fresh_hash_breaks_the_next_link() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(&dir, 4);
    let mut all = lines(&path);
    // Recompute entry 2's hash after editing it, the way a careless forger would.
    let mut v: serde_json::Value = serde_json::from_str(&all[1]).unwrap();
    v["details"]["value"] = json!(99);
    let body = format!(
        "{{\"seq\":2,\"at\":{},\"actor\":{},\"action\":{},\"details\":{},\"prev\":{}}}",
        v["at"], v["actor"], v["action"], v["details"], v["prev"]
    );
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(body.as_bytes()));
    all[1] = format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]);
    write_lines(&path, &all);

    let err = verify(&path).unwrap_err();
    let (line, seq, reason) = corrupt_at(err);
    assert_eq!((line, seq), (3, Some(3)));
    assert!(matches!(reason, Corruption::PrevMismatch { .. }), "{reason}");
}

#[test]
fn deleted_middle_line_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(&dir, 6);
    let mut all = lines(&path);
    all.remove(3); // seq 4
    write_lines(&path, &all);

    let err = verify(&path).unwrap_err();
    let msg = err.to_string();
    assert_eq!(corrupt_at(err), (4, Some(5), Corruption::SeqGap { previous: 3, found: 5 }));
    assert!(msg.contains("line 4: seq 5 follows 3: an entry was removed"), "{msg}");
}

#[test]
fn deleted_first_line_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(&dir, 3);
    let mut all = lines(&path);
    all.remove(0);
    write_lines(&path, &all);
    let (line, _, reason) = corrupt_at(verify(&path).unwrap_err());
    assert_eq!((line, reason), (1, Corruption::FirstSeq { found: 2 }));
}

#[test]
fn reordered_lines_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(&dir, 5);
    let mut all = lines(&path);
    all.swap(2, 3); // seq 1, 2, 4, 3, 5
    write_lines(&path, &all);

    let err = verify(&path).unwrap_err();
    let msg = err.to_string();
    assert_eq!(corrupt_at(err), (3, Some(4), Corruption::SeqGap { previous: 2, found: 4 }));
    assert!(msg.contains("line 3: seq 4 follows 2"), "{msg}");
}

#[test]
fn garbage_line_is_not_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(&dir, 3);
    let mut all = lines(&path);
    all.insert(1, "not json at all".to_owned());
    write_lines(&path, &all);
    match verify(&path).unwrap_err() {
        AuditError::NotJson { line, .. } => assert_eq!(line, 2),
        other => panic!("expected NotJson, got {other:?}"),
    }
}

#[test]
fn torn_tail_is_truncated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(&dir, 3);
    let good_len = fs::metadata(&path).unwrap().len();

    // A crash halfway through the fourth line.
    let mut text = fs::read(&path).unwrap();
    text.extend_from_slice(b"{\"seq\":4,\"at\":\"2026-11-22T17:13:3");
    fs::write(&path, &text).unwrap();

    // verify() is read-only: it reports the tail and does not fail.
    let report = verify(&path).unwrap();
    assert_eq!((report.entries, report.torn_tail_bytes), (3, 33));

    let mut log = AuditLog::open(&path).unwrap();
    assert!(log.recovered_torn_tail());
    assert_eq!(log.last_seq(), 3);
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
    let fourth = log.append("box", "audit.recovered", json!({"torn_tail_bytes": 33})).unwrap();
    assert_eq!(fourth.seq, 4);
    drop(log);

    let report = verify(&path).unwrap();
    assert_eq!((report.entries, report.torn_tail_bytes), (4, 0));
    assert!(!AuditLog::open(&path).unwrap().recovered_torn_tail());
}

#[test]
fn complete_final_line_that_fails_is_tampering_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(&dir, 3);
    let mut text = fs::read(&path).unwrap();
    text.extend_from_slice(b"{\"seq\":4,\"at\":\"2026-11-22T17:13:3\n");
    fs::write(&path, &text).unwrap();
    match AuditLog::open(&path).unwrap_err() {
        AuditError::NotJson { line, .. } => assert_eq!(line, 4),
        other => panic!("expected NotJson, got {other:?}"),
    }
}

#[cfg(unix)]
#[test]
fn new_log_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(&dir, 1);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
}

#[test]
fn one_writer_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let first = AuditLog::open(&path).unwrap();
    let err = AuditLog::open(&path).unwrap_err();
    assert!(matches!(err, AuditError::Locked { .. }), "{err:?}");
    // Readers are not blocked.
    verify(&path).unwrap();
    drop(first);
    AuditLog::open(&path).unwrap();
}

#[test]
fn bad_input_is_rejected_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let mut log = AuditLog::open(&path).unwrap();
    for (actor, action, details) in [
        ("cli:root", "config.changed", json!("not an object")),
        ("cli:root", "config.changed", json!([1, 2])),
        ("", "config.changed", json!({})),
        ("cli:root\n", "config.changed", json!({})),
        ("cli:root", "changed", json!({})),
        ("cli:root", "Config.Changed", json!({})),
        ("cli:root", "config..changed", json!({})),
    ] {
        let err = log.append(actor, action, details).unwrap_err();
        assert!(matches!(err, AuditError::InvalidInput(_)), "{actor:?} {action:?}: {err:?}");
    }
    assert_eq!(log.last_seq(), 0);
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn timestamps_are_utc_millis() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let clock: Clock = Box::new(|| datetime!(2026-11-22 18:13:30.987654 +01:00));
    let mut log = AuditLog::open_with_clock(&path, clock).unwrap();
    let e = log.append("box", "box.started", json!({})).unwrap();
    assert_eq!(e.at, datetime!(2026-11-22 17:13:30.987 UTC));
    assert!(lines(&path)[0].contains("\"at\":\"2026-11-22T17:13:30.987Z\""));
    let _: OffsetDateTime = e.at;
}

#[test]
fn zero_filled_tail_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(&dir, 2);
    let mut text = fs::read(&path).unwrap();
    text.extend_from_slice(&[0u8; 100]);
    fs::write(&path, &text).unwrap();
    let log = AuditLog::open(&path).unwrap();
    assert!(log.recovered_torn_tail());
    assert_eq!(log.last_seq(), 2);
}

#[test]
fn foreign_tail_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(&dir, 2);
    let mut text = fs::read(&path).unwrap();
    // Not the start of entry 3: a stale entry 2 appended again, cut short.
    text.extend_from_slice(b"{\"seq\":2,\"at\":");
    fs::write(&path, &text).unwrap();

    let err = verify(&path).unwrap_err();
    assert!(err.to_string().contains("line 3: incomplete final line is not the start of entry 3"), "{err}");
    assert_eq!(corrupt_at(AuditLog::open(&path).unwrap_err()), (3, None, Corruption::ForeignTail { next_seq: 3 }));
    assert_eq!(fs::read(&path).unwrap(), text);

    // A file that is not an audit log at all is not truncated either.
    let other = dir.path().join("notes.txt");
    fs::write(&other, "remember the milk").unwrap();
    assert!(AuditLog::open(&other).is_err());
    assert_eq!(fs::read_to_string(&other).unwrap(), "remember the milk");
}
