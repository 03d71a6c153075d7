//! The holders' ed25519 work done ahead of the agents, on a thread of its own.
//!
//! A holder's key is a pure function of the data dir's secret, its name and its generation,
//! and a signature of the key and the allocation's bytes; the agents ask a process-wide
//! memo for both before computing (`crypy_agents::auth`). Per position a holder lifetime
//! starts (a key) and an allocation is signed: on a backtest or a replay these are a third of
//! the critical thread's time. What can be known before the agents ask is computed here on
//! the other core meanwhile, so that they find it in the memo:
//! - a desk running: the next generation of a holder whose lifetime just started;
//! - a replay, which reads the log ahead of the workers: every recorded holder lifetime's
//!   key and every recorded allocation's signature, as the holder's key makes it over the
//!   recorded fields. A log whose signature was altered still fails to verify: the memo
//!   holds what the key makes, never what the log says.
//!
//! Only time changes: whatever is not ready when asked for, the agents compute themselves.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use crypy_agents::auth::HolderKey;
use crypy_core::event::Allocation;
use crypy_core::{AgentId, Event};

/// Jobs queued at most; more are dropped (the agents then compute what they need).
const QUEUED: usize = 256;

/// A desk running: how many of a holder's next lifetimes are prepared ahead. The helper
/// runs only on an otherwise idle core, so it banks keys while it can; they are asked for
/// in blocks, each waking it once.
const LEAD: u32 = 16;

enum Job {
    Key { holder: AgentId, generation: u32 },
    Signature { generation: u32, allocation: Box<Allocation> },
}

/// What the helper is told to look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Events as a desk decides them: prepare the next holder lifetimes.
    Decisions,
    /// A recorded log, ahead of the agents that replay it.
    Log,
}

pub(crate) struct Ahead {
    reading: Reading,
    jobs: Option<SyncSender<Job>>,
    helper: Option<JoinHandle<()>>,
    /// The latest generation of each holder seen in the log.
    generations: BTreeMap<AgentId, u32>,
    /// A desk running: the latest generation of each holder whose key was asked for.
    requested: BTreeMap<AgentId, u32>,
}

impl Ahead {
    /// A helper thread for the holders of `secret`; `None` if the system refuses a thread.
    pub(crate) fn start(secret: &[u8], reading: Reading) -> Option<Self> {
        let (jobs, queue) = sync_channel::<Job>(QUEUED);
        let secret = secret.to_vec();
        let helper = std::thread::Builder::new()
            .name("crypy-keys-ahead".into())
            .spawn(move || {
                step_aside();
                for job in queue {
                    match job {
                        Job::Key { holder, generation } => drop(HolderKey::derive(&secret, &holder, generation)),
                        Job::Signature { generation, mut allocation } => {
                            HolderKey::derive(&secret, &allocation.holder, generation).sign(&mut allocation)
                        }
                    }
                }
            })
            .ok()?;
        Some(Ahead {
            reading,
            jobs: Some(jobs),
            helper: Some(helper),
            generations: BTreeMap::new(),
            requested: BTreeMap::new(),
        })
    }

    /// Looks at `event` for work the agents will ask for.
    pub(crate) fn see(&mut self, event: &Event) {
        let job = match event {
            Event::AgentSpawned(s) if s.public_key.is_some() && matches!(s.agent, AgentId::Holder(_)) => {
                match self.reading {
                    Reading::Decisions => return self.ask_ahead(s.agent, s.generation),
                    Reading::Log => {
                        self.generations.insert(s.agent, s.generation);
                        Job::Key { holder: s.agent, generation: s.generation }
                    }
                }
            }
            Event::AllocationGranted(a) if self.reading == Reading::Log => {
                let Some(generation) = self.generations.get(&a.holder).copied() else { return };
                Job::Signature { generation, allocation: Box::new((**a).clone()) }
            }
            _ => return,
        };
        self.send(job);
    }

    /// A desk running: asks for `holder`'s next lifetimes' keys, a block at a time, once
    /// fewer than half of [`LEAD`] are left asked for beyond `generation`.
    fn ask_ahead(&mut self, holder: AgentId, generation: u32) {
        let requested = self.requested.get(&holder).copied().unwrap_or(0);
        if requested > generation + LEAD / 2 {
            return;
        }
        let last = generation + LEAD;
        for next in (requested + 1).max(generation + 1)..=last {
            self.send(Job::Key { holder, generation: next });
        }
        self.requested.insert(holder, last);
    }

    fn send(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // A full queue means the helper is behind: the agents will not wait for it.
            let _ = jobs.try_send(job);
        }
    }
}

/// The helper runs only on a core nothing else wants (Linux's SCHED_IDLE). At normal
/// priority, each job sent woke it onto the desk's own core, which it then took from the
/// desk's thread for the length of a key derivation: in a backtest, at seven holder
/// lifetimes out of ten (`perf sched`), a loss larger than the work it saved. Where the
/// policy cannot be set (or on other systems) the helper runs as before.
#[cfg(target_os = "linux")]
fn step_aside() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
        ThreadSchedulePolicy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    let _ = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle);
}

#[cfg(not(target_os = "linux"))]
fn step_aside() {}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(helper) = self.helper.take() {
            let _ = helper.join();
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The scheduling policies (field 41 of `/proc/self/task/TID/stat`) of this process's
    /// threads called `name` (as the kernel keeps it: 15 bytes at most).
    fn policies_of(name: &str) -> Vec<u32> {
        let name = &name[..name.len().min(15)];
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
        tasks
            .flatten()
            .filter(|task| std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim_end() == name)
            .filter_map(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
                // The command may hold spaces: the fields after it start past its ')'.
                let after = &stat[stat.rfind(')')? + 2..];
                after.split(' ').nth(41 - 3)?.parse().ok()
            })
            .collect()
    }

    /// The helper never competes with the desk's thread for a core: it runs at SCHED_IDLE.
    #[test]
    fn the_helper_runs_only_on_an_idle_core() {
        const SCHED_IDLE: u32 = 5;
        let ahead = Ahead::start(b"secret", Reading::Decisions).expect("a thread");
        let mut policies = Vec::new();
        for _ in 0..500 {
            policies = policies_of("crypy-keys-ahead");
            if policies.contains(&SCHED_IDLE) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        drop(ahead);
        assert!(policies.contains(&SCHED_IDLE), "the helper's policies: {policies:?}");
    }
}
