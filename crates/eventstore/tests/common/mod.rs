//! A writer in another process: the test binary re-runs one of its own tests as a child
//! (marked by `CRYPY_CHILD_WRITER`) that appends forever and reports each durable append.

use std::io::{BufRead, BufReader, Lines, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use crypy_core::event::KillSwitchReleased;
use crypy_core::{AgentId, Event, NewEvent};
use crypy_eventstore::{EventLog, Options};

const CHILD_ENV: &str = "CRYPY_CHILD_WRITER";

/// Event content is a function of its seq, so any reader can check every event it finds.
pub fn event_for(seq: u64, run: u32) -> NewEvent {
    NewEvent {
        run,
        time: seq as i64,
        wall: 0,
        source: AgentId::desk("sim", "child").unwrap(),
        cause: seq.checked_sub(1).filter(|c| *c > 0),
        event: Event::KillSwitchReleased(KillSwitchReleased {
            reason: format!("payload of seq {seq} {}", "x".repeat((seq % 97) as usize)),
        }),
    }
}

/// In the child: appends batches of varying size forever, printing `acked <last seq>` after
/// each one is durable. Returns `false` in the parent, which should then run its test.
pub fn run_child_if_asked() -> bool {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return false };
    let log = EventLog::open(&dir, Options::default()).unwrap();
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
    true
}

/// A child writer on `dir`, running the test `test_name` of the current binary.
pub struct ChildWriter {
    pub child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ChildWriter {
    pub fn spawn(test_name: &str, dir: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        ChildWriter { child, lines }
    }

    /// Waits for `n` more acknowledgements and returns the last acknowledged seq.
    pub fn acks(&mut self, n: u64) -> u64 {
        let mut last = 0;
        let mut seen = 0;
        while seen < n {
            let line = self.lines.next().expect("child writer exited early").unwrap();
            if let Some(seq) = line.strip_prefix("acked ") {
                last = seq.parse().unwrap();
                seen += 1;
            }
        }
        last
    }

    /// SIGKILL, most likely in the middle of an append.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}
