//! A writer killed with SIGKILL at any moment loses nothing it was told is durable, and the
//! log it leaves opens, verifies and continues with contiguous seqs.
//!
//! The test re-runs its own binary as the writer (marked by `CRYPY_CRASH_CHILD`), reads the
//! child's acknowledgements, kills it after a varying number of them, and checks.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crypy_core::event::KillSwitchReleased;
use crypy_core::{AgentId, Event, NewEvent};
use crypy_eventstore::{EventLog, Options};

const CHILD_ENV: &str = "CRYPY_CRASH_CHILD";
const TEST_NAME: &str = "a_killed_writer_loses_nothing_it_acknowledged";

/// Event content is a function of its seq, so the parent can check every event it finds.
fn event_for(seq: u64, run: u32) -> NewEvent {
    NewEvent {
        run,
        time: seq as i64,
        wall: 0,
        source: AgentId::desk("sim", "crash").unwrap(),
        cause: seq.checked_sub(1).filter(|c| *c > 0),
        event: Event::KillSwitchReleased(KillSwitchReleased {
            reason: format!("payload of seq {seq} {}", "x".repeat((seq % 97) as usize)),
        }),
    }
}

fn child(dir: &str) {
    let log = EventLog::open(dir, Options::default()).unwrap();
    let run = log.start_run().unwrap();
    let mut out = std::io::stdout().lock();
    for round in 0u64.. {
        let next = log.last_seq() + 1;
        let size = 1 + (round * 37 % 250);
        let batch: Vec<_> = (next..next + size).map(|s| event_for(s, run)).collect();
        let r = log.append(&batch).unwrap();
        writeln!(out, "acked {}", r.last).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn a_killed_writer_loses_nothing_it_acknowledged() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked_before = 0u64;
    for round in 0..8u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after = 1 + round * 7 % 23;
        let mut acked = 0;
        let mut seen = 0;
        while seen < kill_after {
            let line = lines.next().expect("child exited early").unwrap();
            if let Some(n) = line.strip_prefix("acked ") {
                acked = n.parse().unwrap();
                seen += 1;
            }
        }
        // SIGKILL, most likely in the middle of the next append.
        child.kill().unwrap();
        child.wait().unwrap();

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
