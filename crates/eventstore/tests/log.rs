//! The log's promises, checked through its public API.

use std::time::Duration;

use crypy_core::arbitrary::new_event;
use crypy_core::event::KillSwitchReleased;
use crypy_core::{AgentId, Event, NewEvent};
use crypy_eventstore::{Durability, Error, EventLog, Options};
use proptest::prelude::*;

fn event(n: i64) -> NewEvent {
    NewEvent {
        run: 1,
        time: n,
        wall: n,
        source: AgentId::desk("sim", "test").unwrap(),
        cause: (n > 1).then(|| n as u64 - 1),
        event: Event::KillSwitchReleased(KillSwitchReleased { reason: format!("event {n}") }),
    }
}

fn open(dir: &std::path::Path) -> EventLog {
    EventLog::open(dir, Options::default()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any events, in any batching, come back exactly, with seqs contiguous from 1.
    #[test]
    fn any_events_survive_append_and_read(batches in proptest::collection::vec(proptest::collection::vec(new_event(), 0..40), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let mut all = Vec::new();
        for batch in &batches {
            let range = log.append(batch).unwrap();
            prop_assert_eq!(range.len(), batch.len() as u64);
            all.extend(batch.iter().cloned());
        }
        let back: Vec<_> = log.iter_from(1).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(back.len(), all.len());
        for (i, (got, want)) in back.iter().zip(&all).enumerate() {
            prop_assert_eq!(got.seq, i as u64 + 1);
            prop_assert_eq!(got.event.clone(), want.event.clone());
            prop_assert_eq!((got.run, got.time, got.wall, got.source, got.cause), (want.run, want.time, want.wall, want.source, want.cause));
        }
        // Starting anywhere, even inside a record, gives the same suffix.
        if !all.is_empty() {
            let from = all.len() as u64 / 2 + 1;
            let suffix = log.read_range(from, u64::MAX).unwrap();
            prop_assert_eq!(suffix.first().map(|e| e.seq), Some(from));
            prop_assert_eq!(suffix.len() as u64, all.len() as u64 - from + 1);
        }
        prop_assert!(log.verify().unwrap().is_ok());
    }
}

#[test]
fn reopening_keeps_every_event_and_continues_the_seqs() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        assert_eq!(log.start_run().unwrap(), 1);
        log.append(&(1..=5).map(event).collect::<Vec<_>>()).unwrap();
    }
    {
        let log =
            EventLog::open(dir.path(), Options { durability: Durability::Interval(50), ..Options::default() }).unwrap();
        assert_eq!(log.last_seq(), 5);
        assert_eq!(log.start_run().unwrap(), 2);
        let r = log.append(&(6..=8).map(event).collect::<Vec<_>>()).unwrap();
        assert_eq!((r.first, r.last), (6, 8));
        // Dropped without an explicit flush: closing must still persist the interval's tail.
    }
    let log = open(dir.path());
    assert_eq!(log.last_run().unwrap(), 2);
    let all = log.read_range(1, u64::MAX).unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    assert_eq!(all[7].event, event(8).event);
    let report = log.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.events, report.last_seq), (8, 8));
}

#[test]
fn a_second_writer_is_refused_with_the_owner_pid() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let err = EventLog::open(dir.path(), Options::default()).unwrap_err();
    match &err {
        Error::Locked { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(err.to_string().contains(&format!("locked by pid {}", std::process::id())), "{err}");
}

#[test]
fn the_lock_is_released_when_the_log_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    drop(open(dir.path()));
}

#[test]
fn verify_and_readers_catch_an_altered_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(&(1..=3).map(event).collect::<Vec<_>>()).unwrap();
    log.append(&(4..=6).map(event).collect::<Vec<_>>()).unwrap();
    log.append(&(7..=9).map(event).collect::<Vec<_>>()).unwrap();
    let mut bytes = log.raw_record_for_tests(4).unwrap().expect("record at seq 4");
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    log.put_raw_record_for_tests(4, &bytes).unwrap();

    let report = log.verify().unwrap();
    let problem = report.problem.expect("damage must be found");
    assert_eq!(problem.seq, 4);
    assert!(problem.reason.contains("checksum"), "{}", problem.reason);
    assert_eq!(report.last_seq, 3);

    // A reader stops at the damage with an error; it never skips to seq 7.
    let seqs: Vec<_> = log.iter_from(1).collect();
    assert_eq!(seqs.len(), 4);
    assert!(seqs[..3].iter().all(|r| r.is_ok()));
    assert!(matches!(seqs[3], Err(Error::Corrupt { seq: 4, .. })), "{:?}", seqs[3]);
}

#[test]
fn a_damaged_tail_still_opens_for_reading_but_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        log.append(&(1..=3).map(event).collect::<Vec<_>>()).unwrap();
        let record = log.raw_record_for_tests(1).unwrap().unwrap();
        // A record moved under another key: its header disagrees with the key, and 4..=9 are missing.
        log.put_raw_record_for_tests(10, &record).unwrap();
    }
    let log = open(dir.path());
    assert_eq!(log.last_seq(), 3);
    let problem = log.verify().unwrap().problem.unwrap();
    assert_eq!(problem.seq, 4);
    assert!(problem.reason.contains("missing"), "{}", problem.reason);
    let read: Vec<_> = log.iter_from(1).collect();
    assert_eq!(read.len(), 4);
    assert!(matches!(read[3], Err(Error::Corrupt { seq: 4, .. })), "{:?}", read[3]);
    let err = log.append(&[event(4)]).unwrap_err();
    assert!(err.to_string().contains("refuses appends"), "{err}");
}

#[test]
fn a_record_from_a_newer_format_is_refused_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(&[event(1)]).unwrap();
    let mut bytes = log.raw_record_for_tests(1).unwrap().unwrap();
    bytes[2..4].copy_from_slice(&99u16.to_le_bytes());
    log.put_raw_record_for_tests(1, &bytes).unwrap();
    assert!(matches!(log.read_range(1, 1), Err(Error::UnsupportedFormat { found: 99, .. })));
    let problem = log.verify().unwrap().problem.unwrap();
    assert!(problem.reason.contains("format version 99"), "{}", problem.reason);
}

#[test]
fn a_log_from_a_newer_format_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    {
        let db = sled::Config::new().path(dir.path().join("log")).segment_size(8 << 20).open().unwrap();
        db.open_tree("meta").unwrap().insert("format_version", &7u16.to_le_bytes()).unwrap();
        db.flush().unwrap();
    }
    let err = EventLog::open(dir.path(), Options::default()).unwrap_err();
    assert!(matches!(err, Error::UnsupportedFormat { found: 7, .. }), "{err}");
    assert!(err.to_string().contains("upgrade crypy"), "{err}");
}

#[test]
fn a_reader_tails_while_the_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(&[event(1)]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let writer_log = log.clone();
    let writer = std::thread::spawn(move || {
        for n in 2..=300 {
            writer_log.append(&[event(n)]).unwrap();
            if n % 50 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    let seqs = rt.block_on(async {
        let mut tail = log.tail(1);
        let mut seqs = Vec::new();
        while seqs.len() < 300 {
            let e = tokio::time::timeout(Duration::from_secs(10), tail.next()).await.expect("tail stalled").unwrap();
            seqs.push(e.seq);
        }
        seqs
    });
    writer.join().unwrap();
    assert_eq!(seqs, (1..=300).collect::<Vec<u64>>());
    assert_eq!(log.wait_for(300, Duration::from_millis(1)), 300);
}

#[test]
fn empty_appends_assign_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert!(log.append(&[]).unwrap().is_empty());
    assert_eq!(log.append(&[event(1)]).unwrap().first, 1);
}

#[test]
fn big_batches_are_split_into_records_but_stay_contiguous() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let events: Vec<_> = (1..=20_000).map(event).collect();
    let r = log.append(&events).unwrap();
    assert_eq!((r.first, r.last), (1, 20_000));
    let report = log.verify().unwrap();
    assert!(report.is_ok());
    assert!(report.records > 1, "{report:?}");
    assert_eq!(log.read_range(12_345, 12_345).unwrap()[0].event, event(12_345).event);
}

/// A reader that owns the log reads it in windows of records, sled reopened between them:
/// across window boundaries nothing is lost, repeated or reordered, from any start.
#[test]
fn a_long_log_read_by_its_only_handle_comes_back_whole_across_windows() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { durability: Durability::Interval(1_000), ..Options::default() };
    let total: i64 = 1_300;
    {
        let log = EventLog::open(dir.path(), options.clone()).unwrap();
        for n in 1..=total {
            log.append(&[event(n)]).unwrap();
        }
    }
    for from in [1u64, 511, 512, 513, 1_024, 1_300] {
        let log = open(dir.path());
        let seqs: Vec<u64> = log.into_iter_from(from).unwrap().map(|e| e.unwrap().seq).collect();
        assert_eq!(seqs, (from..=total as u64).collect::<Vec<_>>(), "from {from}");
    }
    // The reader holds the data dir from its first record to its last, even while it reads
    // through the handle it was made from, and gives it back when it is done.
    let mut reading = open(dir.path()).into_iter_from(1).unwrap();
    assert_eq!(reading.next().unwrap().unwrap().seq, 1);
    let quick = Options { lock_wait: std::time::Duration::from_millis(20), ..Options::default() };
    let second = EventLog::open(dir.path(), quick.clone());
    assert!(matches!(second, Err(crypy_eventstore::Error::Locked { .. })), "{second:?}");
    assert_eq!(reading.count(), total as usize - 1);
    drop(EventLog::open(dir.path(), quick).unwrap());
}

/// A log closed with `close` is closed when it returns, even while its background flush was
/// running: its socket is gone and the dir's lock is free at once, so the next reader opens
/// the log itself, never through the closing writer's socket (a learning job reads each
/// run's log as soon as the run ends).
#[test]
fn a_closed_log_leaves_the_dir_free_at_once() {
    // A flush every millisecond, and enough to write that it takes a while: one is running
    // when the log closes.
    let options = Options { durability: Durability::Interval(1), ..Options::default() };
    let at_once = Options { lock_wait: Duration::ZERO, ..Options::default() };
    let batch: Vec<NewEvent> = (1..=10_000).map(event).collect();
    for round in 0..16 {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path(), options.clone()).unwrap();
        log.append(&batch).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        log.close();
        assert!(!dir.path().join("log.sock").exists(), "round {round}: the socket outlived close");
        let log = EventLog::open(dir.path(), at_once.clone())
            .unwrap_or_else(|e| panic!("round {round}: the dir is not free after close: {e}"));
        assert_eq!(log.iter_from(1).count(), batch.len(), "round {round}");
    }
}

/// A process killed right after its appends returned (no orderly close; sled, flushed only
/// in the background, holds them in memory) loses none of them: the next open finds every
/// event, from the write-ahead files.
#[test]
fn acknowledged_appends_survive_a_killed_process() {
    const CHILD: &str = "CRYPY_TEST_APPEND_THEN_ABORT";
    if let Some(dir) = std::env::var_os(CHILD) {
        let log = EventLog::open(&dir, Options { serve_readers: false, ..Options::default() }).unwrap();
        for n in 0..40 {
            log.append(&[event(2 * n + 1), event(2 * n + 2)]).unwrap();
        }
        // Every append was acknowledged: die without closing anything.
        std::process::abort();
    }
    let dir = aborted_child("acknowledged_appends_survive_a_killed_process", CHILD);
    holds_events_up_to(&open(dir.path()), 80);
}

/// Runs this test binary's test `test` in a child process told by `child_env` where its
/// log goes, and returns that dir once the child has aborted.
fn aborted_child(test: &str, child_env: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--test-threads=1"])
        .env(child_env, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child was to abort");
    dir
}

/// `log` holds exactly the events 1..=`last` of [`event`], verifies, and appends after them.
fn holds_events_up_to(log: &EventLog, last: i64) {
    let back: Vec<_> = log.iter_from(1).collect::<Result<_, _>>().unwrap();
    assert_eq!(back.len() as i64, last);
    for (i, e) in back.iter().enumerate() {
        assert_eq!((e.seq, e.event.clone()), (i as u64 + 1, event(i as i64 + 1).event));
    }
    assert!(log.verify().unwrap().is_ok());
    assert_eq!(log.append(&[event(last + 1)]).unwrap().first, last as u64 + 1);
}

/// The same over several recyclings of the write-ahead files: large appends first, then
/// small ones spread over a few background flushes, so that a recycled file's new frames are
/// followed by larger, older ones when the process dies. None of those is taken for new, and
/// nothing acknowledged is lost.
#[test]
fn acknowledged_appends_survive_a_killed_process_after_the_files_were_recycled() {
    const CHILD: &str = "CRYPY_TEST_APPEND_OVER_RECYCLINGS_THEN_ABORT";
    let batches: Vec<(i64, i64)> = {
        let mut next = 1;
        let mut sizes = vec![50; 10];
        sizes.extend([2; 30]);
        sizes
            .into_iter()
            .map(|size| {
                let batch = (next, next + size - 1);
                next += size;
                batch
            })
            .collect()
    };
    if let Some(dir) = std::env::var_os(CHILD) {
        let log = EventLog::open(&dir, Options { serve_readers: false, ..Options::default() }).unwrap();
        for (i, (first, last)) in batches.iter().enumerate() {
            log.append(&(*first..=*last).map(event).collect::<Vec<_>>()).unwrap();
            if i % 4 == 3 {
                // Longer than the background flush's period: the files change roles.
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        std::process::abort();
    }
    let dir = aborted_child("acknowledged_appends_survive_a_killed_process_after_the_files_were_recycled", CHILD);
    holds_events_up_to(&open(dir.path()), batches.last().unwrap().1);
}

/// The write-ahead file's frame, as the log writes it: `CW`, the payload's length and
/// CRC-32, then each record's length and bytes.
fn wal_frame(records: &[&[u8]]) -> Vec<u8> {
    let mut payload = Vec::new();
    for r in records {
        payload.extend_from_slice(&(r.len() as u32).to_le_bytes());
        payload.extend_from_slice(r);
    }
    let mut frame = b"CW".to_vec();
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// Opening puts back what sled lacks from the write-ahead files, leaves what it has as it
/// is, stops at a torn frame, and empties the files once sled holds it all.
#[test]
fn opening_recovers_from_the_write_ahead_files_what_sled_lacks() {
    // The records a log holds after two appends: 1..=3, then 4..=5.
    let source = tempfile::tempdir().unwrap();
    let (first, second) = {
        let log = open(source.path());
        log.append(&[event(1), event(2), event(3)]).unwrap();
        log.append(&[event(4), event(5)]).unwrap();
        (log.raw_record_for_tests(1).unwrap().unwrap(), log.raw_record_for_tests(4).unwrap().unwrap())
    };
    // A log that made only the first append durable in sled before a crash, whose files hold
    // both appends, then the start of a third.
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).append(&[event(1), event(2), event(3)]).unwrap();
    let mut file = wal_frame(&[&first]);
    file.extend(wal_frame(&[&second]));
    let torn = wal_frame(&[&second]);
    file.extend_from_slice(&torn[..torn.len() - 3]);
    std::fs::write(dir.path().join("log.wal.1"), &file).unwrap();

    let log = open(dir.path());
    let back: Vec<_> = log.iter_from(1).collect::<Result<_, _>>().unwrap();
    assert_eq!(back.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(back[4].event, event(5).event);
    assert!(log.verify().unwrap().is_ok());
    assert_eq!(log.append(&[event(6)]).unwrap().first, 6);
    log.close();
    for name in ["log.wal.0", "log.wal.1"] {
        assert_eq!(std::fs::metadata(dir.path().join(name)).unwrap().len(), 0, "{name} emptied");
    }
}

/// Write-ahead files that do not continue the log (left by a log since made anew in the
/// dir) are refused with a message saying what to do, and nothing of them is taken.
#[test]
fn write_ahead_files_of_another_log_are_refused() {
    let other = tempfile::tempdir().unwrap();
    let foreign = {
        let log = open(other.path());
        for n in 1..=9 {
            log.append(&[event(n)]).unwrap();
        }
        log.raw_record_for_tests(9).unwrap().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).append(&[event(1), event(2), event(3)]).unwrap();
    std::fs::write(dir.path().join("log.wal.0"), wal_frame(&[&foreign])).unwrap();
    match EventLog::open(dir.path(), Options::default()) {
        Err(Error::Corrupt { seq: 9, reason }) => {
            assert!(reason.contains("does not follow the log's last record (it ends at seq 3)"), "{reason}");
            assert!(reason.contains("move them aside"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    std::fs::remove_file(dir.path().join("log.wal.0")).unwrap();
    let log = open(dir.path());
    assert_eq!(log.last_seq(), 3);
}
