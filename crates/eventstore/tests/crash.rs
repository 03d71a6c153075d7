//! A writer killed with SIGKILL at any moment loses nothing it was told is durable, and the
//! log it leaves opens, verifies and continues with contiguous seqs.

mod common;

use common::{event_for, ChildWriter};
use crypy_eventstore::{EventLog, Options};

const TEST_NAME: &str = "a_killed_writer_loses_nothing_it_acknowledged";

#[test]
fn a_killed_writer_loses_nothing_it_acknowledged() {
    if common::run_child_if_asked() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked_before = 0u64;
    for round in 0..8u64 {
        let mut writer = ChildWriter::spawn(TEST_NAME, dir.path());
        let acked = writer.acks(1 + round * 7 % 23);
        writer.kill();

        let log = EventLog::open(dir.path(), Options::default()).expect("a killed writer's log reopens");
        let report = log.verify().unwrap();
        assert!(report.is_ok(), "round {round}: {report:?}");
        assert!(log.last_seq() >= acked, "round {round}: acknowledged up to {acked}, log has {}", log.last_seq());
        assert!(acked > acked_before);
        let mut run_of_prev = 0;
        for (expected, e) in (1u64..).zip(log.iter_from(1)) {
            let e = e.unwrap();
            assert_eq!(e.seq, expected, "round {round}: seqs must be contiguous");
            assert_eq!(e.time, e.seq as i64, "round {round}: seq {} holds another event", e.seq);
            assert_eq!(e.event, event_for(e.seq, e.run).event);
            assert!(e.run >= run_of_prev, "runs never go back");
            run_of_prev = e.run;
        }
        assert_eq!(log.last_run().unwrap(), round as u32 + 1, "every lifetime got its own run number");
        acked_before = log.last_seq();
    }
}
