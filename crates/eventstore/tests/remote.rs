//! Readers in other processes than the writer's: they read through the writer's socket,
//! see every event in order with checksums checked, follow new appends, and a second writer
//! is refused with the first one's pid.

mod common;

use common::{event_for, ChildWriter};
use crypy_eventstore::{Error, EventLog, LogReader, Options};

const TEST_NAME: &str = "a_live_writer_serves_readers_in_other_processes";

#[test]
fn a_live_writer_serves_readers_in_other_processes() {
    if common::run_child_if_asked() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut writer = ChildWriter::spawn(TEST_NAME, dir.path());
    let acked = writer.acks(3);

    // A second writer in another process is refused, naming the first.
    match EventLog::open(dir.path(), Options::default()) {
        Err(Error::Locked { pid, .. }) => assert_eq!(pid, Some(writer.child.id())),
        other => panic!("expected Locked, got {other:?}"),
    }

    let reader = LogReader::open(dir.path()).unwrap();
    assert!(reader.is_remote(), "the live writer serves readers");
    assert!(reader.last_seq().unwrap() >= acked);

    // Everything up to now, from the start and from the middle of a record.
    for from in [1, acked / 2 + 1] {
        let events: Vec<_> = reader.iter_from(from).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(events.first().map(|e| e.seq), Some(from));
        assert!(events.last().unwrap().seq >= acked);
        for (expected, e) in (from..).zip(&events) {
            assert_eq!(e.seq, expected);
            assert_eq!(e.event, event_for(e.seq, e.run).event);
        }
    }

    // Following: events keep arriving while the writer appends.
    let target = writer.acks(20) + 1;
    let mut next = 1;
    for e in reader.follow(1).unwrap() {
        let e = e.unwrap();
        assert_eq!(e.seq, next);
        next += 1;
        if e.seq >= target {
            break;
        }
    }
    assert!(next > target);

    let report = reader.verify().unwrap();
    assert!(report.is_ok() && report.last_seq >= target, "{report:?}");

    // Once the writer is gone, readers open the log directly.
    writer.kill();
    let reader = LogReader::open(dir.path()).unwrap();
    assert!(!reader.is_remote());
    assert!(reader.verify().unwrap().is_ok());
}

#[test]
fn reading_a_missing_log_never_creates_one() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    assert!(matches!(LogReader::open(&missing), Err(Error::NoLog { .. })));
    assert!(!missing.exists());
}
