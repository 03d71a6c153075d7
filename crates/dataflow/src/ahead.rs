//! The holders' ed25519 work done ahead of the agents: on a thread of its own beside a
//! running desk, on the log's reading thread in a replay.
//!
//! A holder's key is a pure function of the data dir's secret, its name and (when its
//! template gives each lifetime a key of its own) its generation, and a signature of the key
//! and the allocation's bytes; the agents ask a process-wide memo for both before computing
//! (`crypy_agents::auth`). Per position an allocation is signed, and under per-lifetime keys
//! a holder lifetime starts (a key): on a backtest or a replay these were a third of the
//! critical thread's time. What can be known before the agents ask is computed here off
//! that thread meanwhile, so that they find it in the memo:
//! - a desk running: the next generations' keys of a holder with a key per lifetime;
//! - a replay, which reads the log ahead of the workers: every recorded holder lifetime's
//!   key, and every recorded allocation's signature recognized as the one the holder's key
//!   makes over the recorded fields (`HolderKey::recognize`, a tenth of signing's work). A
//!   log whose signature was altered still fails to verify: the memo holds only what the key
//!   makes, and an altered signature is not recognized.
//!
//! Which scope a holder's key has is read off the key its lifetime published: the helper
//! compares it with the holder's per-asset key.
//!
//! Only time changes: whatever is not ready when asked for, the agents compute themselves.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use crypy_agents::auth::{HolderKey, KeyScope};
use crypy_core::event::{Allocation, PublicKey};
use crypy_core::{AgentId, Event};

/// Jobs queued at most; more are dropped (the agents then compute what they need).
const QUEUED: usize = 256;

/// A desk running: how many of a holder's next lifetimes are prepared ahead. The helper
/// runs only on an otherwise idle core, so it banks keys while it can; they are asked for
/// in blocks, each waking it once.
const LEAD: u32 = 16;

enum Job {
    /// `holder`'s lifetime `generation` published `published`: its key, and those of the
    /// lifetimes up to `ahead_to` if each lifetime has a key of its own.
    Spawned { holder: AgentId, generation: u32, published: PublicKey, ahead_to: u32 },
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
    work: Work,
    /// A desk running: the latest generation of each holder whose key was asked for.
    requested: BTreeMap<AgentId, u32>,
}

/// Where the work is done (see [`Ahead::start`]).
enum Work {
    /// A thread of its own, fed through a bounded queue.
    Thread { jobs: Option<SyncSender<Job>>, helper: Option<JoinHandle<()>> },
    /// The caller's thread, at once: nothing is ever dropped.
    Inline(Helper),
}

/// The helper's side: what it knows of each holder's current lifetime.
struct Helper {
    secret: Vec<u8>,
    /// Each holder's current key, for the allocations that follow, and its scope.
    keys: HashMap<AgentId, (HolderKey, KeyScope)>,
}

impl Helper {
    fn run(&mut self, job: Job) {
        match job {
            Job::Spawned { holder, generation, published, ahead_to } => {
                // A holder with one key for all its lifetimes publishes the key it had.
                if self.keys.get(&holder).is_some_and(|(key, _)| key.public() == published) {
                    return;
                }
                let per_asset = HolderKey::derive(&self.secret, &holder, generation, KeyScope::Asset);
                let (key, scope) = if per_asset.public() == published {
                    (per_asset, KeyScope::Asset)
                } else {
                    (HolderKey::derive(&self.secret, &holder, generation, KeyScope::Lifetime), KeyScope::Lifetime)
                };
                self.keys.insert(holder, (key, scope));
                if scope == KeyScope::Lifetime {
                    for g in generation..=ahead_to.max(generation) {
                        drop(HolderKey::derive(&self.secret, &holder, g, scope));
                    }
                }
            }
        }
    }

    /// A recorded allocation: its signature, recognized, is remembered for the agents. One
    /// not recognized (an altered log) is left for them to make, and the replay names the
    /// difference.
    fn recognize(&self, allocation: &Allocation) {
        if let Some((key, _)) = self.keys.get(&allocation.holder) {
            key.recognize(allocation);
        }
    }
}

impl Ahead {
    /// A helper for the holders of `secret`; `None` if the system refuses a thread.
    ///
    /// A desk's helper is a thread at idle priority. A replay's works on the thread reading
    /// the log, which has room to spare: its one worker, which runs the agents, is the
    /// replay's bottleneck, and a helper thread at idle priority rarely found a free core
    /// beside the two busy ones, so the worker signed most allocations itself.
    pub(crate) fn start(secret: &[u8], reading: Reading) -> Option<Self> {
        let mut helper = Helper { secret: secret.to_vec(), keys: HashMap::new() };
        if reading == Reading::Log {
            return Some(Ahead { reading, work: Work::Inline(helper), requested: BTreeMap::new() });
        }
        let (jobs, queue) = sync_channel::<Job>(QUEUED);
        let helper = std::thread::Builder::new()
            .name("crypy-keys-ahead".into())
            .spawn(move || {
                step_aside();
                for job in queue {
                    helper.run(job);
                }
            })
            .ok()?;
        Some(Ahead {
            reading,
            work: Work::Thread { jobs: Some(jobs), helper: Some(helper) },
            requested: BTreeMap::new(),
        })
    }

    /// Looks at `event` for work the agents will ask for.
    pub(crate) fn see(&mut self, event: &Event) {
        let job = match event {
            Event::AgentSpawned(s) if matches!(s.agent, AgentId::Holder(_)) => {
                let Some(published) = s.public_key else { return };
                match self.reading {
                    Reading::Decisions => return self.ask_ahead(s.agent, s.generation, published),
                    Reading::Log => {
                        Job::Spawned { holder: s.agent, generation: s.generation, published, ahead_to: s.generation }
                    }
                }
            }
            Event::AllocationGranted(a) => {
                if let Work::Inline(helper) = &self.work {
                    helper.recognize(a);
                }
                return;
            }
            _ => return,
        };
        self.send(job);
    }

    /// A desk running: asks for `holder`'s next lifetimes' keys, a block at a time, once
    /// fewer than half of [`LEAD`] are left asked for beyond `generation`.
    fn ask_ahead(&mut self, holder: AgentId, generation: u32, published: PublicKey) {
        let requested = self.requested.get(&holder).copied().unwrap_or(0);
        if requested > generation + LEAD / 2 {
            return;
        }
        let ahead_to = generation + LEAD;
        self.send(Job::Spawned { holder, generation, published, ahead_to });
        self.requested.insert(holder, ahead_to);
    }

    fn send(&mut self, job: Job) {
        match &mut self.work {
            Work::Inline(helper) => helper.run(job),
            Work::Thread { jobs: Some(jobs), .. } => {
                // A full queue means the helper is behind: the agents will not wait for it.
                let _ = jobs.try_send(job);
            }
            Work::Thread { jobs: None, .. } => {}
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
        if let Work::Thread { jobs, helper } = &mut self.work {
            jobs.take();
            if let Some(helper) = helper.take() {
                let _ = helper.join();
            }
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

#[cfg(test)]
mod scope_tests {
    use super::*;

    /// The helper tells a holder's key scope from the key its lifetime published.
    #[test]
    fn the_helper_reads_the_scope_off_the_published_key() {
        let secret = b"0123456789abcdef0123456789abcdef".to_vec();
        let eur: AgentId = "EUR".parse().unwrap();
        let mut helper = Helper { secret: secret.clone(), keys: HashMap::new() };
        for (generation, scope) in [(1, KeyScope::Asset), (2, KeyScope::Lifetime), (3, KeyScope::Asset)] {
            let published = HolderKey::derive(&secret, &eur, generation, scope).public();
            helper.run(Job::Spawned { holder: eur, generation, published, ahead_to: generation });
            let held = helper.keys.get(&eur).map(|(key, scope)| (key.public(), *scope));
            assert_eq!(held, Some((published, scope)), "generation {generation}");
        }
    }
}
