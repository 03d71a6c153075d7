//! The agents hosted in a timely dataflow.
//!
//! One operator, `Society`, holds a desk's agents. Its input is the external events, in
//! epochs (a batch of log seqs per epoch); once the frontier has passed an epoch, it
//! processes that epoch's events in seq order — whatever order they arrived in — and emits,
//! for each input, what the agents derived from it. So the output depends only on the input
//! events, never on batching or scheduling, which `replay --verify` relies on.
//!
//! The worker is single-threaded and stepped by its owner (timely's "threadless" mode): the
//! simulated desk advances it one input at a time, in lockstep with the exchange; a replay
//! pushes large epochs. A desk is one partition; spreading a desk's traders over workers by
//! pair is still to do.

use std::sync::mpsc::{channel, Receiver};

use std::collections::BTreeMap;

use crypy_agents::society::{Out, Society};
use crypy_core::Envelope;
use differential_dataflow::operators::CountTotal;
use differential_dataflow::AsCollection;
use timely::communication::allocator::thread::Thread;
use timely::communication::Allocator;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::capture::{Capture, Event as Captured};
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

use crate::aggregates::Ledger;
use timely::WorkerConfig;

/// What the agents derived from one input: its seq, and the outputs in order.
pub type Derived = (u64, Vec<Out>);

/// A change of one aggregate: ((key, new or old total), epoch, +1 or −1).
type TotalUpdate = ((String, i128), u64, isize);

/// What the books read: (seq, position in the seq's group, source, event).
type Book = (u64, usize, crypy_core::AgentId, crypy_core::Event);

/// A single-threaded timely worker hosting one desk's agents; see the module doc.
pub struct Host {
    worker: Worker,
    input: InputHandle<u64, CapacityContainerBuilder<Vec<Envelope>>>,
    probe: ProbeHandle<u64>,
    output: Receiver<Captured<u64, Vec<Derived>>>,
    /// `count_total`'s output: ((key, total), epoch, ±1) updates.
    totals: Receiver<Captured<u64, Vec<TotalUpdate>>>,
    current: BTreeMap<String, i128>,
    epoch: u64,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

impl Host {
    pub fn new(society: Society) -> Self {
        let allocator = Allocator::Thread(Thread::default());
        let mut worker = Worker::new(WorkerConfig::default(), allocator, None);
        let mut input = InputHandle::new();
        let probe = ProbeHandle::new();
        let (sender, output) = channel();
        let (totals_sender, totals) = channel();
        worker.dataflow::<u64, _, _>(|scope| {
            let inputs = input.to_stream(scope).container::<Vec<Envelope>>();
            let derived = inputs
                .clone()
                .unary_frontier(Pipeline, "Society", move |_capability, _info| {
                    let mut society = society;
                    let mut pending: std::collections::BTreeMap<
                        u64,
                        (timely::dataflow::operators::Capability<u64>, Vec<Envelope>),
                    > = std::collections::BTreeMap::new();
                    move |(input, frontier), output| {
                        input.for_each(|cap, data| {
                            if let Some(cap) = cap.retain_least(output.output_index()) {
                                let entry = pending.entry(*cap.time()).or_insert_with(|| (cap, Vec::new()));
                                entry.1.append(data);
                            }
                        });
                        let complete: Vec<u64> = pending.keys().filter(|t| !frontier.less_equal(*t)).copied().collect();
                        for time in complete {
                            let (cap, mut events) = pending.remove(&time).expect("listed above");
                            events.sort_by_key(|e| e.seq);
                            let mut session = output.session(&cap);
                            for e in events {
                                let outs = society.handle(&e);
                                session.give((e.seq, outs));
                            }
                        }
                    }
                })
                .container::<Vec<Derived>>();
            // The books see every input and every decision: (seq, position, source, event),
            // position 0 for the input and i + 1 for its i-th decision.
            let decisions = derived.clone().flat_map(|(seq, outs): Derived| {
                outs.into_iter().enumerate().map(move |(i, o)| (seq, i + 1, o.source, o.event))
            });
            inputs
                .map(|e: Envelope| (e.seq, 0usize, e.source, e.event))
                .concat(decisions)
                .unary_frontier::<CapacityContainerBuilder<Vec<(String, u64, i128)>>, _, _, _>(
                    Pipeline,
                    "Ledger",
                    move |_capability, _info| {
                        let mut ledger = Ledger::default();
                        let mut pending: BTreeMap<u64, (timely::dataflow::operators::Capability<u64>, Vec<Book>)> =
                            BTreeMap::new();
                        move |(input, frontier), output| {
                            input.for_each(|cap, data| {
                                if let Some(cap) = cap.retain_least(output.output_index()) {
                                    pending.entry(*cap.time()).or_insert_with(|| (cap, Vec::new())).1.append(data);
                                }
                            });
                            let complete: Vec<u64> =
                                pending.keys().filter(|t| !frontier.less_equal(*t)).copied().collect();
                            for time in complete {
                                let (cap, mut batch) = pending.remove(&time).expect("listed above");
                                batch.sort_by_key(|(seq, i, _, _)| (*seq, *i));
                                let mut session = output.session(&cap);
                                for (seq, _, source, event) in batch {
                                    let env = Envelope { seq, run: 0, time: 0, wall: 0, source, cause: None, event };
                                    for (key, amount) in ledger.updates(&env) {
                                        session.give((key, time, amount));
                                    }
                                }
                            }
                        }
                    },
                )
                .as_collection()
                .count_total()
                .inner
                .capture_into(totals_sender);
            derived.probe_with(&probe).capture_into(sender);
        });
        Host { worker, input, probe, output, totals, current: BTreeMap::new(), epoch: 0 }
    }

    /// Adds an event to the current epoch.
    pub fn push(&mut self, event: Envelope) {
        self.input.send(event);
    }

    /// Closes the current epoch, runs the dataflow until it is done with it, and returns
    /// what the agents derived, in input seq order.
    pub fn finish_epoch(&mut self) -> Vec<Derived> {
        self.epoch += 1;
        self.input.advance_to(self.epoch);
        while self.probe.less_than(self.input.time()) {
            self.worker.step();
        }
        let mut derived = Vec::new();
        for event in self.output.try_iter() {
            if let Captured::Messages(_, mut data) = event {
                derived.append(&mut data);
            }
        }
        derived.sort_by_key(|(seq, _)| *seq);
        for event in self.totals.try_iter() {
            if let Captured::Messages(_, updates) = event {
                // Retractions first, so that a key's new total replaces its old one.
                let (mut adds, removes): (Vec<_>, Vec<_>) = updates.into_iter().partition(|(_, _, diff)| *diff > 0);
                for ((key, _), _, _) in removes {
                    self.current.remove(&key);
                }
                for ((key, total), _, _) in adds.drain(..) {
                    self.current.insert(key, total);
                }
            }
        }
        derived
    }

    /// The aggregates so far: `asset:<ASSET>` → net balance change from fills,
    /// `strategy:<variant>` → realized P&L in the quote asset, as exact decimals.
    pub fn totals(&self) -> BTreeMap<String, rust_decimal::Decimal> {
        self.current.iter().filter_map(|(k, v)| crate::aggregates::from_fixed(*v).map(|d| (k.clone(), d))).collect()
    }

    /// One input, one epoch: what the agents derive from `event`.
    pub fn handle(&mut self, event: Envelope) -> Vec<Out> {
        self.push(event);
        self.finish_epoch().into_iter().flat_map(|(_, outs)| outs).collect()
    }
}
