use std::path::Path;

use super::record::{RecordHeader, RecordKind};
use super::*;

fn header(partition: u16, sequence: u64) -> RecordHeader {
    RecordHeader {
        kind: RecordKind::Item,
        partition,
        sequence,
    }
}

fn body(n: u64) -> Vec<u8> {
    format!("record number {n}").into_bytes()
}

/// Appends `groups` groups of three records; returns every (locator, body), in order.
fn fill(dir: &Path, segment_bytes: u64, groups: u64) -> Vec<(Locator, Vec<u8>)> {
    let (log, recovered) =
        PartitionLog::open(dir, segment_bytes, true, LogPosition::default()).unwrap();
    assert!(recovered.is_empty());
    let mut acked = Vec::new();
    for g in 0..groups {
        let bodies: Vec<Vec<u8>> = (0..3).map(|i| body(g * 3 + i)).collect();
        let records: Vec<(RecordHeader, &[u8])> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| (header(i as u16, g + 1), b.as_slice()))
            .collect();
        let locators = log.append(&records, |l| l.to_vec()).unwrap();
        acked.extend(locators.into_iter().zip(bodies));
    }
    acked
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn last_segment(dir: &Path) -> (u64, PathBuf) {
    let last = *list_segments(dir).unwrap().last().unwrap();
    (last, segment_path(dir, last))
}

/// Reopens a damaged copy and checks: recovered = exactly the acknowledged records that
/// lie wholly before `intact_until` in the last segment (plus all earlier ones); every
/// one reads back; the log takes a new append that survives another reopen.
fn check_recovery(dir: &Path, acked: &[(Locator, Vec<u8>)], last: u64, intact_until: u64) {
    let expected: Vec<&(Locator, Vec<u8>)> = acked
        .iter()
        .filter(|(l, _)| l.segment < last || l.offset + u64::from(l.len) <= intact_until)
        .collect();
    let (log, recovered) = PartitionLog::open(dir, 1 << 10, true, LogPosition::default()).unwrap();
    assert_eq!(recovered.len(), expected.len(), "cut at {intact_until}");
    for (got, (locator, body)) in recovered.iter().zip(&expected) {
        assert_eq!(got.locator, *locator);
        assert_eq!(&got.body, body);
        assert_eq!(&log.read(*locator, &|_| true).unwrap(), body);
    }
    let fresh = b"after recovery".to_vec();
    let at = log
        .append(&[(header(9, 1000), fresh.as_slice())], |l| l[0])
        .unwrap();
    drop(log);
    let (log, recovered) = PartitionLog::open(dir, 1 << 10, true, LogPosition::default()).unwrap();
    assert_eq!(recovered.len(), expected.len() + 1);
    assert_eq!(recovered.last().unwrap().locator, at);
    assert_eq!(log.read(at, &|_| true).unwrap(), fresh);
}

#[test]
fn a_log_truncated_at_every_offset_of_its_last_segment_recovers_every_whole_record() {
    let original = tempfile::tempdir().unwrap();
    let acked = fill(original.path(), 1 << 10, 12);
    let (last, path) = last_segment(original.path());
    assert!(last > 1, "the test needs more than one segment");
    let len = std::fs::metadata(&path).unwrap().len();
    for cut in 0..len {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let (_, copy_path) = last_segment(copy.path());
        OpenOptions::new()
            .write(true)
            .open(&copy_path)
            .unwrap()
            .set_len(cut)
            .unwrap();
        check_recovery(copy.path(), &acked, last, cut);
    }
}

#[test]
fn a_log_corrupted_at_every_offset_of_its_last_segment_keeps_the_records_before_it() {
    let original = tempfile::tempdir().unwrap();
    let acked = fill(original.path(), 1 << 10, 12);
    let (last, path) = last_segment(original.path());
    let bytes = std::fs::read(&path).unwrap();
    for at in 0..bytes.len() {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let (_, copy_path) = last_segment(copy.path());
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x5a;
        std::fs::write(&copy_path, &damaged).unwrap();
        // The record holding the flipped byte and everything after it are lost; the
        // magic flipped loses the whole (unacknowledgeable) segment.
        let intact_until = acked
            .iter()
            .filter(|(l, _)| l.segment == last && l.offset <= at as u64)
            .map(|(l, _)| l.offset)
            .max()
            .unwrap_or(0);
        let intact_until = if at < SEGMENT_MAGIC.len() {
            0
        } else {
            intact_until
        };
        check_recovery(copy.path(), &acked, last, intact_until);
    }
}

#[test]
fn damage_before_the_last_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 1 << 10, 12);
    let first = segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[SEGMENT_MAGIC.len() + 12] ^= 1;
    std::fs::write(&first, bytes).unwrap();
    assert!(matches!(
        PartitionLog::open(dir.path(), 1 << 10, true, LogPosition::default()),
        Err(LogError::Corrupt { segment: 1, .. })
    ));
}

#[test]
fn recovery_reads_only_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let acked = fill(dir.path(), 1 << 10, 12);
    let from = acked[20].0.end();
    let (_, recovered) = PartitionLog::open(dir.path(), 1 << 10, true, from).unwrap();
    let expected: Vec<Locator> = acked[21..].iter().map(|(l, _)| *l).collect();
    let got: Vec<Locator> = recovered.iter().map(|r| r.locator).collect();
    assert_eq!(got, expected);
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_failed_sync_is_fatal_until_reopened_and_the_group_is_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), 1 << 20, true, LogPosition::default()).unwrap();
    log.append(&[(header(1, 1), b"kept".as_slice())], |_| ())
        .unwrap();
    log.inject_fault(Some(Fault::Sync));
    assert!(matches!(
        log.append(&[(header(1, 2), b"lost".as_slice())], |_| ()),
        Err(LogError::Failed { .. })
    ));
    log.inject_fault(None);
    // Clearing the fault does not revive the log: the kernel may have dropped pages.
    assert!(matches!(
        log.append(&[(header(1, 3), b"never".as_slice())], |_| ()),
        Err(LogError::Failed { .. })
    ));
    assert!(log.failure().is_some());
    drop(log);
    let (log, recovered) =
        PartitionLog::open(dir.path(), 1 << 20, true, LogPosition::default()).unwrap();
    assert!(log.failure().is_none());
    assert_eq!(recovered[0].body, b"kept");
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_refusal_before_writing_is_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), 1 << 20, true, LogPosition::default()).unwrap();
    log.inject_fault(Some(Fault::BeforeWrite));
    assert!(
        log.append(&[(header(1, 1), b"x".as_slice())], |_| ())
            .is_err()
    );
    log.inject_fault(None);
    log.append(&[(header(1, 1), b"y".as_slice())], |_| ())
        .unwrap();
    assert!(log.failure().is_none());
}
