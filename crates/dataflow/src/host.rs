//! The agents hosted in a timely dataflow, on timely's own worker threads.
//!
//! Two operators carry the agents:
//! - `Watch`, with several workers: the traders' per-pair trackers ([`Watch`]), partitioned
//!   by pair over every worker but 0 — each candle goes to the worker its pair hashes to,
//!   capabilities to every worker. This is where a trader's work is: following every
//!   variant of its grid bar by bar. It follows one epoch per activation, so that worker 0
//!   decides one epoch while the next is followed.
//! - `Society and books`, on worker 0: the desk, holders and traders' decisions, which are
//!   cheap but chained (a proposal is judged, granted, gated within one input), so they stay
//!   together.
//!   It joins each input with its pair's view and processes an epoch's events in seq order
//!   once the frontier has passed the epoch — whatever order they arrived in, from whichever
//!   worker — so the output depends only on the inputs, never on batching, scheduling or
//!   the number of workers, which `replay --verify` relies on.
//!
//! The books turn inputs and decisions into balance and P&L changes, which differential
//! dataflow's `count_total` keeps as totals, partitioned by key. The agents' operator books
//! each input as it handles it (copying each input to a books operator of its own and
//! joining it there again with the decisions cost a fifth of a replay). With one worker the
//! trackers run inside that operator too: no routing, and no operator more for timely to
//! track at every epoch.
//!
//! The caller talks to the workers through channels: an epoch of input events goes in, what
//! the agents derived comes out once every worker has finished the epoch.
//!
//! **Scale.** The workers may be threads of this process, and threads of other processes
//! ([`Scale`], timely's cluster mode). Only process 0 has a caller, a log and the society;
//! the others serve trackers ([`serve`]) and learn everything they need from the dataflow
//! itself: each worker builds a run's trackers from the trader template that run recorded
//! (its `template_changed` events reach every worker), so no other process needs a data dir
//! or templates of its own. What the agents derive, and the totals, all end on worker 0.

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};

use crypy_agents::society::{Out, Society};
use crypy_agents::strategy::Registry;
use crypy_agents::template::{TraderTemplate, FILES};
use crypy_agents::track::{BarView, Watch};
use crypy_core::event::TemplateScope;
use crypy_core::{Envelope, Event, Pair};
use differential_dataflow::operators::CountTotal;
use differential_dataflow::AsCollection;
use timely::communication::allocator::thread::Thread;
use timely::communication::{Allocator, WorkerGuards};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::capture::{Capture, Event as Captured};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, Exchange as _, InputCapability, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::{Config as WorkerConfig, Worker};

use crate::aggregates::Ledger;

/// What the agents derived from one input: its seq, and the outputs in order.
pub type Derived = (u64, Vec<Out>);

/// A change of one aggregate: ((key, new or old total), epoch, +1 or −1).
type TotalUpdate = ((String, i128), u64, isize);

/// A change the books make: (key, epoch, amount).
type BookUpdate = (String, u64, i128);

/// An input on its way to the worker with this index.
type Routed = (u64, Envelope);

/// One epoch for one worker: the events (worker 0 only) and the epoch's number.
type Command = (u64, Vec<Envelope>);

/// An operator's inputs, held by epoch until the frontier has passed it, with a capability
/// for each of the operator's `PORTS` outputs.
struct Held<D, const PORTS: usize = 1> {
    epochs: BTreeMap<u64, ([Capability<u64>; PORTS], Vec<D>)>,
}

impl<D, const PORTS: usize> Held<D, PORTS> {
    fn new() -> Self {
        Held { epochs: BTreeMap::new() }
    }

    /// Keeps `data` for its epoch, with a capability for each of the operator's outputs
    /// `ports` (made only when the epoch is new).
    fn hold(&mut self, cap: &InputCapability<u64>, ports: [usize; PORTS], data: &mut Vec<D>) {
        if let Some(&time) = cap.least() {
            let held =
                self.epochs.entry(time).or_insert_with(|| (ports.map(|port| cap.delayed(&time, port)), Vec::new()));
            take_or_append(&mut held.1, data);
        }
    }

    fn holds(&self, time: &u64) -> bool {
        self.epochs.contains_key(time)
    }

    /// Takes the oldest epoch if `open` no longer says it may grow. Epochs complete in order
    /// (timestamps are totally ordered), so the complete ones are the oldest ones.
    fn next_complete(&mut self, open: &impl Fn(&u64) -> bool) -> Option<([Capability<u64>; PORTS], Vec<D>)> {
        let (time, _) = self.epochs.first_key_value()?;
        if open(time) {
            return None;
        }
        self.epochs.pop_first().map(|(_, held)| held)
    }

    /// Takes every epoch `open` no longer says may grow, oldest first.
    fn complete(&mut self, open: impl Fn(&u64) -> bool) -> Vec<([Capability<u64>; PORTS], Vec<D>)> {
        std::iter::from_fn(|| self.next_complete(&open)).collect()
    }
}

/// Moves `data` to the end of `held`: the vector itself when `held` has nothing yet (an
/// epoch's inputs arrive as one container of thousands of envelopes).
fn take_or_append<D>(held: &mut Vec<D>, data: &mut Vec<D>) {
    if held.is_empty() {
        std::mem::swap(held, data);
    } else {
        held.append(data);
    }
}

/// The worker a pair's tracker lives on: with more than one, any but worker 0, which
/// carries the desk's decisions.
fn worker_of(pair: &Pair, peers: usize) -> u64 {
    if peers <= 2 {
        return u64::from(peers == 2);
    }
    // FNV-1a over the pair's text: the same in every process of a cluster, and cheap enough
    // for every candle (std's SipHash was a seventh of worker 0's time on a replay).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pair.base.as_str().bytes().chain([b'/']).chain(pair.quote.as_str().bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    1 + h % (peers as u64 - 1)
}

/// Where the agents' timely workers run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scale {
    /// Worker threads in each process (at least 1).
    pub workers: usize,
    /// The processes, when more than this one: timely's cluster mode.
    pub cluster: Option<Cluster>,
}

impl Scale {
    pub fn threads(workers: usize) -> Self {
        Scale { workers: workers.max(1), cluster: None }
    }

    /// Every worker of every process.
    pub fn peers(&self) -> usize {
        self.workers.max(1) * self.cluster.as_ref().map_or(1, |c| c.addresses.len())
    }

    fn config(&self) -> timely::Config {
        let threads = self.workers.max(1);
        let communication = match &self.cluster {
            Some(c) => timely::CommunicationConfig::Cluster {
                threads,
                process: c.process,
                addresses: c.addresses.clone(),
                report: false,
                zerocopy: false,
            },
            None => timely::CommunicationConfig::Process(threads),
        };
        timely::Config { communication, worker: WorkerConfig::default() }
    }
}

/// This process's place among several, each running [`Scale::workers`] worker threads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// This process's index in `addresses`; process 0 has the log.
    pub process: usize,
    /// Every process's `host:port`, in process order.
    pub addresses: Vec<String>,
}

/// A worker's trackers for the run its events belong to, built from the trader template the
/// run recorded (the default if it recorded none), fresh for each run.
#[derive(Default)]
struct RunWatch {
    run: Option<u32>,
    /// The trader template text each run recorded at its start.
    texts: BTreeMap<u32, String>,
    watch: Option<Watch>,
}

impl RunWatch {
    fn recycle(&mut self, view: BarView) {
        if let Some(watch) = self.watch.as_mut() {
            watch.recycle(view);
        }
    }

    fn see(&mut self, e: &Envelope) -> Option<BarView> {
        if self.run != Some(e.run) {
            self.run = Some(e.run);
            self.watch = None;
        }
        match &e.event {
            Event::TemplateChanged(t) if t.scope == TemplateScope::Desk && t.key == FILES[2].0 => {
                if let Some(text) = &t.new {
                    self.texts.entry(e.run).or_insert_with(|| text.clone());
                }
                None
            }
            Event::Candle(_) | Event::Capabilities(_) => {
                let text = self.texts.get(&e.run).map_or(FILES[2].1, String::as_str);
                self.watch.get_or_insert_with(|| watch_for(text)).see(&e.event)
            }
            _ => None,
        }
    }
}

/// The trackers a trader template asks for. A template the society accepted parses here
/// too; one that does not (a run that never traded) falls back to the default.
fn watch_for(trader_text: &str) -> Watch {
    let registry = Registry::default();
    let build = |text: &str| -> Option<Watch> {
        let t = TraderTemplate::parse(FILES[2].0, text).ok()?;
        let strategies = t.build_strategies(&registry, FILES[2].0).ok()?;
        Some(Watch::new(strategies.into(), t.look_back_bars as usize, t.evaluate_every_minutes))
    };
    build(trader_text).or_else(|| build(FILES[2].1)).expect("the default trader template builds")
}

/// Where what the agents derive goes: (seq, outputs) under the epoch's time.
type OutputSender = Sender<Captured<u64, Vec<Derived>>>;
type TotalsSender = Sender<Captured<u64, Vec<TotalUpdate>>>;
type Input = InputHandle<u64, CapacityContainerBuilder<Vec<Envelope>>>;

/// The timely workers the agents run on.
enum Workers {
    /// One worker stepped on the caller's own thread: an epoch costs timely's progress
    /// tracking only, not two thread wake-ups (which on a small VM cost more than the agents).
    Direct { worker: Box<Worker>, input: Option<Input>, probe: ProbeHandle<u64> },
    /// Worker threads, fed through channels; each acknowledges the epochs it has finished.
    Threads {
        commands: Vec<Sender<Command>>,
        acks: Vec<Receiver<u64>>,
        /// What worker 0 allocated and the caller is done with, for worker 0 to free: a
        /// thread freeing another's memory takes that thread's allocator lock, and the two
        /// then wait on each other (`perf sched`: a thousand waits per backtest).
        trash: Sender<Vec<Derived>>,
        guards: Option<WorkerGuards<()>>,
    },
}

/// The desk's agents on `workers` timely workers; see the module doc.
pub struct Host {
    /// Worker 0 handles inputs with it; between epochs the caller may read it.
    society: Arc<Mutex<Society>>,
    workers: Workers,
    peers: usize,
    output: Receiver<Captured<u64, Vec<Derived>>>,
    /// `count_total`'s output: ((key, total), epoch, ±1) updates.
    totals: Receiver<Captured<u64, Vec<TotalUpdate>>>,
    pending: Vec<Envelope>,
    /// Outputs and total updates that came for epochs not collected yet, by timely time.
    ready: BTreeMap<u64, Vec<Derived>>,
    ready_totals: BTreeMap<u64, Vec<TotalUpdate>>,
    /// The highest epoch every worker has acknowledged.
    acknowledged: u64,
    current: BTreeMap<String, i128>,
    epoch: u64,
    /// The candles the agents saw: see [`Host::push`].
    candles: CandleClock,
}

/// The newest candle seen per pair: a candle moves a pair forward once, and one no newer
/// (repeated, or stale and out of order) does not move it at all.
///
/// Sorted by pair and searched by halves: a desk trades a few pairs, and asks at every
/// candle in four places (the host, the shadow, the books, the loop), where a map's search
/// was a tenth of a backtest's bookkeeping per bar.
#[derive(Debug, Clone, Default)]
pub struct CandleClock(Vec<(crypy_core::Pair, i64)>);

impl CandleClock {
    /// Whether `c` would advance its pair (without recording it).
    pub fn is_newer(&self, c: &crypy_core::Candle) -> bool {
        match self.0.binary_search_by(|(pair, _)| pair.cmp(&c.pair)) {
            Ok(i) => c.open_time > self.0[i].1,
            Err(_) => true,
        }
    }

    /// Whether `c` is newer than every candle seen of its pair; if so it is now the newest.
    pub fn advances(&mut self, c: &crypy_core::Candle) -> bool {
        match self.0.binary_search_by(|(pair, _)| pair.cmp(&c.pair)) {
            Ok(i) => {
                let newest = &mut self.0[i].1;
                let advances = c.open_time > *newest;
                if advances {
                    *newest = c.open_time;
                }
                advances
            }
            Err(i) => {
                // A pair's first candle: its time is the newest, and it advances unless it
                // is at the earliest time there is (the start of a pair never seen).
                self.0.insert(i, (c.pair, c.open_time));
                c.open_time > i64::MIN
            }
        }
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("workers", &self.peers).field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        match &mut self.workers {
            Workers::Direct { worker, input, .. } => {
                // Closing the input lets the dataflow drain and shut down.
                input.take();
                while worker.has_dataflows() {
                    worker.step();
                }
            }
            Workers::Threads { commands, guards, .. } => {
                // Closing the command channels ends the workers' loops; then wait for them.
                commands.clear();
                if let Some(guards) = guards.take() {
                    let _ = guards.join();
                }
            }
        }
    }
}

/// Builds the agents' dataflow on `worker` (the society only on worker 0) and returns its
/// input and the probe that says which epochs are done.
fn build(
    worker: &mut Worker,
    society: Option<Arc<Mutex<Society>>>,
    output_sender: OutputSender,
    totals_sender: TotalsSender,
) -> (Input, ProbeHandle<u64>) {
    let peers = worker.peers();
    let mut input = Input::new();
    let probe = ProbeHandle::new();
    worker.dataflow::<u64, _, _>(|scope| {
        let inputs = input.to_stream(scope).container::<Vec<Envelope>>();
        let (derived, updates) = if peers == 1 {
            society_and_books(&inputs, None, society)
        } else {
            society_with_trackers(&inputs, society, peers)
        };
        let totals = updates.as_collection().count_total().inner;
        // Every total to worker 0, whose process has the caller.
        let totals = if peers > 1 { totals.exchange(|_| 0) } else { totals };
        totals.probe_with(&probe).capture_into(totals_sender);
        derived.probe_with(&probe).capture_into(output_sender);
    });

    (input, probe)
}

/// Books `input` and then what the agents derived from it.
fn book(ledger: &mut Ledger, input: &Envelope, outs: &[Out], mut give: impl FnMut((String, i128))) {
    ledger.updates(&input.event).into_iter().for_each(&mut give);
    for o in outs {
        ledger.updates(&o.event).into_iter().for_each(&mut give);
    }
}

/// The agents and the books in one operator, with two outputs (what the agents derived, the
/// books' updates). Each input is booked as soon as the agents have handled it, instead of
/// being copied to a books operator of its own and joined there again with the decisions: on
/// a replay that copying and joining was a fifth of the worker's time.
///
/// With `views`, the trackers' views come from the other workers and are joined with each
/// epoch's events in seq order (a view per candle at most); without, this operator runs the
/// trackers itself (one worker: no routing, and no operator more for timely to track at
/// every epoch).
fn society_and_books<'scope>(
    inputs: &timely::dataflow::Stream<'scope, u64, Vec<Envelope>>,
    views: Option<timely::dataflow::Stream<'scope, u64, Vec<(u64, BarView)>>>,
    society: Option<Arc<Mutex<Society>>>,
) -> (timely::dataflow::Stream<'scope, u64, Vec<Derived>>, timely::dataflow::Stream<'scope, u64, Vec<BookUpdate>>) {
    let mut builder = OperatorBuilder::new("Society and books".to_owned(), inputs.scope());
    let mut events_in = builder.new_input(inputs.clone(), Pipeline);
    let mut views_in = views.map(|views| builder.new_input(views, Exchange::new(|_: &(u64, BarView)| 0)));
    let (decisions, derived) = builder.new_output::<Vec<Derived>>();
    let (booked, updates) = builder.new_output::<Vec<BookUpdate>>();
    let mut decisions = OutputBuilder::<u64, CapacityContainerBuilder<Vec<Derived>>>::from(decisions);
    let mut booked = OutputBuilder::<u64, CapacityContainerBuilder<Vec<BookUpdate>>>::from(booked);
    builder.build(move |_capabilities| {
        // Each epoch's events, with a capability for either output.
        let mut held = Held::<Envelope, 2>::new();
        let mut received: BTreeMap<u64, Vec<(u64, BarView)>> = BTreeMap::new();
        let mut watch = RunWatch::default();
        let mut ledger = Ledger::default();
        move |frontiers| {
            let mut decisions = decisions.activate();
            let mut booked = booked.activate();
            events_in.for_each(|cap, data| held.hold(&cap, [0, 1], data));
            if let Some(views_in) = views_in.as_mut() {
                views_in.for_each(|cap, data| {
                    if let Some(time) = cap.least() {
                        take_or_append(received.entry(*time).or_default(), data);
                    }
                });
            }
            let open = |t: &u64| frontiers.iter().any(|f| f.less_equal(t));
            for ([decide, book_cap], mut events) in held.complete(open) {
                let time = *decide.time();
                events.sort_by_key(|e| e.seq);
                let mut epoch_views = received.remove(&time).unwrap_or_default();
                epoch_views.sort_unstable_by_key(|(seq, _)| *seq);
                let mut epoch_views = epoch_views.into_iter().peekable();
                let mut society = society.as_ref().map(|s| s.lock().expect("the society's lock is not poisoned"));
                let mut decided = decisions.session(&decide);
                let mut books = booked.session(&book_cap);
                for e in &events {
                    let outs = society.as_mut().map(|society| {
                        if views_in.is_some() {
                            // Views of seqs the epoch has no event for (none expected) are dropped.
                            while epoch_views.next_if(|(seq, _)| *seq < e.seq).is_some() {}
                            let view = epoch_views.next_if(|(seq, _)| *seq == e.seq).map(|(_, view)| view);
                            society.handle_viewed(e, view)
                        } else {
                            let outs = society.handle_viewed(e, watch.see(e));
                            if let Some(spare) = society.take_spare_view() {
                                watch.recycle(spare);
                            }
                            outs
                        }
                    });
                    book(&mut ledger, e, outs.as_deref().unwrap_or_default(), |update| {
                        books.give((update.0, time, update.1))
                    });
                    if let Some(outs) = outs {
                        decided.give((e.seq, outs));
                    }
                }
            }
            // Views of epochs with no events left to join (none expected).
            received.retain(|t, _| frontiers.get(1).is_some_and(|f| f.less_equal(t)) || held.holds(t));
        }
    });
    (derived, updates)
}

/// The desk's agents on worker 0, the trackers spread over the other workers by pair. The
/// agents' operator books each input as it handles it, as on one worker (two outputs: what
/// the agents derived, the books' updates).
fn society_with_trackers<'scope>(
    inputs: &timely::dataflow::Stream<'scope, u64, Vec<Envelope>>,
    society: Option<Arc<Mutex<Society>>>,
    peers: usize,
) -> (timely::dataflow::Stream<'scope, u64, Vec<Derived>>, timely::dataflow::Stream<'scope, u64, Vec<BookUpdate>>) {
    let scope = inputs.scope();
    // Each candle to its pair's worker, capabilities to every worker.
    let views = inputs
        .clone()
        .flat_map(move |e: Envelope| {
            let targets = match &e.event {
                Event::Candle(c) => {
                    let worker = worker_of(&c.pair, peers);
                    worker..worker + 1
                }
                Event::Capabilities(_) => 0..peers as u64,
                Event::TemplateChanged(t) if t.scope == TemplateScope::Desk => 0..peers as u64,
                _ => 0..0,
            };
            // Copies for all targets but the last, which takes the event itself: a candle
            // has one target, and is moved, not copied.
            let last = targets.end.saturating_sub(1);
            let mut event = Some(e);
            targets.filter_map(move |t| {
                let e = if t == last { event.take() } else { event.clone() };
                e.map(|e| (t, e))
            })
        })
        .unary_frontier::<CapacityContainerBuilder<Vec<(u64, BarView)>>, _, _, _>(
            Exchange::new(|(target, _): &(u64, Envelope)| *target),
            "Watch",
            move |_capability, info| {
                let mut held = Held::<Routed>::new();
                let mut watch = RunWatch::default();
                let activator = scope.activator_for(info.address);
                move |(input, frontier), output| {
                    input.for_each(|cap, data| held.hold(&cap, [output.output_index()], data));
                    // One epoch per activation: its views, and the news that the epoch is
                    // done, reach worker 0 while this worker follows the next one. Taking
                    // every complete epoch at once kept worker 0's agents idle until all
                    // were followed, and the two workers took turns instead of overlapping.
                    if let Some(([cap], mut events)) = held.next_complete(&|t: &u64| frontier.less_equal(t)) {
                        events.sort_by_key(|(_, e)| e.seq);
                        let mut session = output.session(&cap);
                        for (_, e) in events {
                            if let Some(view) = watch.see(&e) {
                                session.give((e.seq, view));
                            }
                        }
                        activator.activate();
                    }
                }
            },
        );
    society_and_books(inputs, Some(views), society)
}

impl Host {
    /// Starts `workers` (at least 1) timely workers hosting `society`: with one, on the
    /// caller's thread, stepped as epochs are collected; with more, on threads of their own.
    ///
    /// # Panics
    /// If the operating system refuses to start a thread.
    pub fn new(society: Society, workers: usize) -> Self {
        Self::with_scale(society, &Scale::threads(workers))
    }

    /// [`Host::new`] on `scale`: this must be process 0 of its cluster, whose other processes
    /// run [`serve`] (the call waits until they are all connected).
    ///
    /// # Panics
    /// If the operating system refuses to start a thread, or the cluster cannot be formed.
    pub fn with_scale(society: Society, scale: &Scale) -> Self {
        Self::start(society, scale, false)
    }

    /// [`Host::with_scale`], with even a single worker on a thread of its own: for a caller
    /// that hands epochs over without waiting for each ([`submit_epoch`](Self::submit_epoch))
    /// and has work of its own meanwhile.
    ///
    /// # Panics
    /// As [`Host::with_scale`].
    pub fn beside(society: Society, scale: &Scale) -> Self {
        Self::start(society, scale, true)
    }

    fn start(mut society: Society, scale: &Scale, own_thread: bool) -> Self {
        let peers = scale.peers();
        // The trackers run in the dataflow, built from what each run recorded.
        drop(society.take_watch());
        let society = Arc::new(Mutex::new(society));
        let shared = Arc::clone(&society);
        let (output_sender, output) = channel();
        let (totals_sender, totals) = channel();
        let workers = if peers == 1 && !own_thread {
            let allocator = Allocator::Thread(Thread::default());
            let mut worker = Box::new(Worker::new(WorkerConfig::default(), allocator, Some(std::time::Instant::now())));
            let (input, probe) = build(&mut worker, Some(society), output_sender, totals_sender);
            Workers::Direct { worker, input: Some(input), probe }
        } else {
            Self::threads(scale, society, output_sender, totals_sender)
        };
        Host {
            society: shared,
            workers,
            peers,
            output,
            totals,
            pending: Vec::new(),
            ready: BTreeMap::new(),
            ready_totals: BTreeMap::new(),
            acknowledged: 0,
            current: BTreeMap::new(),
            epoch: 0,
            candles: CandleClock::default(),
        }
    }

    fn threads(
        scale: &Scale,
        society: Arc<Mutex<Society>>,
        output_sender: OutputSender,
        totals_sender: TotalsSender,
    ) -> Workers {
        let local = scale.workers.max(1);
        let (mut command_senders, mut command_receivers) = (Vec::new(), Vec::new());
        let (mut ack_senders, mut ack_receivers) = (Vec::new(), Vec::new());
        for _ in 0..local {
            let (s, r) = channel::<Command>();
            command_senders.push(s);
            command_receivers.push(Some(r));
            let (s, r) = channel::<u64>();
            ack_senders.push(Some(s));
            ack_receivers.push(r);
        }
        let (trash, trash_receiver) = channel::<Vec<Derived>>();
        let trash_receiver = Mutex::new(Some(trash_receiver));
        let command_receivers = Mutex::new(command_receivers);
        let ack_senders = Mutex::new(ack_senders);
        let output_sender = Mutex::new(output_sender);
        let totals_sender = Mutex::new(totals_sender);
        let guards = timely::execute(scale.config(), move |worker| {
            // Process 0's workers are the first `local` of the cluster.
            let index = worker.index();
            let commands = command_receivers.lock().expect("not poisoned")[index].take().expect("one per worker");
            let ack = ack_senders.lock().expect("not poisoned")[index].take().expect("one per worker");
            let society = (index == 0).then(|| Arc::clone(&society));
            let trash = if index == 0 { trash_receiver.lock().expect("not poisoned").take() } else { None };
            let output_sender = output_sender.lock().expect("not poisoned").clone();
            let totals_sender = totals_sender.lock().expect("not poisoned").clone();
            let (mut input, probe) = build(worker, society, output_sender, totals_sender);

            // Epochs are pipelined: a worker takes new epochs while older ones are still in
            // flight elsewhere, and acknowledges each once the whole dataflow is past it.
            let (mut fed, mut acked) = (0u64, 0u64);
            loop {
                let next = if fed == acked {
                    // Idle: wait for work.
                    commands.recv().map_err(|_| TryRecvError::Disconnected)
                } else {
                    commands.try_recv()
                };
                match next {
                    Ok((epoch, mut events)) => {
                        // The epoch as one container: sent element by element, each envelope
                        // was copied into timely's small buffers and again out of them.
                        input.send_batch(&mut events);
                        input.advance_to(epoch);
                        fed = epoch;
                        continue;
                    }
                    Err(TryRecvError::Disconnected) if fed == acked => break,
                    Err(_) => {}
                }
                worker.step_or_park(Some(std::time::Duration::from_micros(200)));
                if let Some(trash) = &trash {
                    trash.try_iter().for_each(drop);
                }
                while acked < fed && !probe.less_than(&(acked + 1)) {
                    acked += 1;
                    if ack.send(acked).is_err() {
                        return;
                    }
                }
            }
        })
        .expect("timely starts its workers and connects its processes");
        Workers::Threads { commands: command_senders, acks: ack_receivers, trash, guards: Some(guards) }
    }

    /// Starts the next run of a replay on the same workers: `society` decides from now on,
    /// and candles are new again. Call with no epoch in flight.
    pub fn start_run(&mut self, mut society: Society) {
        drop(society.take_watch());
        *self.society.lock().expect("the society's lock is not poisoned") = society;
        self.candles = CandleClock::default();
    }

    /// Adds an event to the current epoch.
    ///
    /// A candle no newer than one the agents already saw for its pair (a venue repeating
    /// itself, or data arriving out of order) is kept from them: it is in the log, as the
    /// venue said it, but a bar must move the agents forward once. Live runs and replays
    /// both come through here, so they agree on what was kept out.
    pub fn push(&mut self, event: Envelope) {
        if let crypy_core::Event::Candle(c) = &event.event {
            if !self.candles.advances(c) {
                return;
            }
        }
        self.pending.push(event);
    }

    /// Closes the current epoch, lets every worker finish it, and returns what the agents
    /// derived, in input seq order.
    ///
    /// # Panics
    /// If a worker died (its own panic is reported first).
    pub fn finish_epoch(&mut self) -> Vec<Derived> {
        let epoch = self.submit_epoch();
        self.collect(epoch)
    }

    /// Closes the current epoch and hands it to the workers without waiting: several epochs
    /// may be in flight. Returns its number for [`collect`](Self::collect).
    ///
    /// # Panics
    /// If a worker died.
    pub fn submit_epoch(&mut self) -> u64 {
        self.epoch += 1;
        // The next epoch is sized like this one: growing the buffer by doubling copied every
        // envelope again (a quarter of a backtest's reallocations).
        let next = Vec::with_capacity(self.pending.len());
        let events = std::mem::replace(&mut self.pending, next);
        match &mut self.workers {
            Workers::Direct { input, .. } => {
                let input = input.as_mut().expect("open until the host drops");
                let mut events = events;
                input.send_batch(&mut events);
                input.advance_to(self.epoch);
            }
            Workers::Threads { commands, .. } => {
                let mut events = Some(events);
                for sender in commands.iter() {
                    let batch = events.take().unwrap_or_default();
                    sender.send((self.epoch, batch)).expect("dataflow worker stopped");
                }
            }
        }
        self.epoch
    }

    /// Waits until every epoch up to `epoch` is done and returns what the agents derived in
    /// `epoch`, in input seq order; the totals then include it. Collect epochs in order.
    ///
    /// # Panics
    /// If a worker died (its own panic is reported first).
    pub fn collect(&mut self, epoch: u64) -> Vec<Derived> {
        match &mut self.workers {
            Workers::Direct { worker, probe, .. } => {
                while probe.less_than(&epoch) {
                    worker.step();
                }
                self.acknowledged = self.acknowledged.max(epoch);
            }
            Workers::Threads { acks, .. } => {
                while self.acknowledged < epoch {
                    for ack in acks.iter() {
                        ack.recv().expect("dataflow worker stopped");
                    }
                    self.acknowledged += 1;
                }
            }
        }
        // Epoch e's events were sent at timely time e − 1.
        for event in self.output.try_iter() {
            if let Captured::Messages(stamp, mut data) = event {
                // The society emits each epoch under its own capability: one time per message.
                let time = stamp.least().copied().unwrap_or_default();
                match self.ready.entry(time) {
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(data);
                    }
                    std::collections::btree_map::Entry::Occupied(mut o) => {
                        o.get_mut().append(&mut data);
                        self.discard(data);
                    }
                }
            }
        }
        for event in self.totals.try_iter() {
            if let Captured::Messages(_, updates) = event {
                for update in updates {
                    self.ready_totals.entry(update.1).or_default().push(update);
                }
            }
        }
        let mut derived = self.ready.remove(&(epoch - 1)).unwrap_or_default();
        derived.sort_by_key(|(seq, _)| *seq);
        let later = self.ready_totals.split_off(&epoch);
        let updates: Vec<TotalUpdate> =
            std::mem::replace(&mut self.ready_totals, later).into_values().flatten().collect();
        // Retractions first, so that a key's new total replaces its old one, in whatever
        // order the workers' messages came.
        let (adds, removes): (Vec<_>, Vec<_>) = updates.into_iter().partition(|(_, _, diff)| *diff > 0);
        for ((key, _), _, _) in removes {
            self.current.remove(&key);
        }
        for ((key, total), _, _) in adds {
            self.current.insert(key, total);
        }
        derived
    }

    /// The aggregates so far: `asset:<ASSET>` → net balance change from fills,
    /// `strategy:<variant>` → realized P&L in the quote asset, as exact decimals.
    pub fn totals(&self) -> BTreeMap<String, rust_decimal::Decimal> {
        self.current.iter().filter_map(|(k, v)| crate::aggregates::from_fixed(*v).map(|d| (k.clone(), d))).collect()
    }

    /// The agents as they are after the epochs collected so far (those still in flight may
    /// be changing them): for the terminals, which only read.
    ///
    /// # Panics
    /// If a worker panicked while holding it.
    pub fn society(&self) -> std::sync::MutexGuard<'_, Society> {
        self.society.lock().expect("the society's lock is not poisoned")
    }

    /// Hands back what [`collect`](Self::collect) returned, once the caller is done with it:
    /// freed by the worker that allocated it.
    pub fn discard(&self, derived: Vec<Derived>) {
        if let Workers::Threads { trash, .. } = &self.workers {
            // A worker that stopped cannot take it: it is freed here.
            let _ = trash.send(derived);
        }
    }

    /// One input, one epoch: what the agents derive from `event`.
    pub fn handle(&mut self, event: Envelope) -> Vec<Out> {
        self.push(event);
        self.finish_epoch().into_iter().flat_map(|(_, outs)| outs).collect()
    }
}

/// Serves a cluster's process other than 0 (see [`Scale`]): its workers carry their share of
/// the trackers until process 0 closes the dataflow. Needs no data dir and no templates.
///
/// # Errors
/// When the cluster cannot be formed (an address in use, a process that never came).
pub fn serve(scale: &Scale) -> Result<(), String> {
    if scale.cluster.as_ref().is_none_or(|c| c.process == 0) {
        return Err("process 0 of a cluster runs the desk or the replay, not `serve`".into());
    }
    let guards = timely::execute(scale.config(), |worker| {
        // Nothing comes back here: what the agents derive ends on worker 0.
        let (output_sender, _) = channel();
        let (totals_sender, _) = channel();
        let (input, _probe) = build(worker, None, output_sender, totals_sender);
        // Only process 0 feeds the dataflow.
        drop(input);
        while worker.step_or_park(None) {}
    })?;
    guards.join().into_iter().collect::<Result<Vec<()>, String>>().map(drop)
}

#[cfg(test)]
mod tests {
    use super::{worker_of, CandleClock};
    use crypy_core::Pair;
    use proptest::prelude::*;

    proptest! {
        /// The clock says what a map of each pair's newest open time says, for candles of a
        /// few pairs in any order, repeated, stale, or at the earliest time there is.
        #[test]
        fn the_candle_clock_agrees_with_a_map_of_newest_times(
            candles in proptest::collection::vec((0usize..5, prop_oneof![Just(i64::MIN), -3i64..40]), 0..60),
        ) {
            let pairs = ["XBT/EUR", "ETH/EUR", "SOL/EUR", "ADA/EUR", "ETH/XBT"].map(pair);
            let mut clock = CandleClock::default();
            let mut newest = std::collections::BTreeMap::new();
            for (p, open_time) in candles {
                let candle = crypy_core::Candle {
                    pair: pairs[p],
                    interval: crypy_core::Interval::from_secs(60).unwrap(),
                    open_time,
                    open: "1".parse().unwrap(),
                    high: "1".parse().unwrap(),
                    low: "1".parse().unwrap(),
                    close: "1".parse().unwrap(),
                    volume: "1".parse().unwrap(),
                    trades: None,
                };
                let seen = newest.get(&pairs[p]).copied();
                prop_assert_eq!(clock.is_newer(&candle), seen.is_none_or(|n| open_time > n));
                let slot = newest.entry(pairs[p]).or_insert(i64::MIN);
                let advances = open_time > *slot;
                if advances {
                    *slot = open_time;
                }
                prop_assert_eq!(clock.advances(&candle), advances);
            }
        }
    }

    fn pair(text: &str) -> Pair {
        text.parse().unwrap()
    }

    #[test]
    fn trackers_never_land_on_worker_0_once_there_are_others() {
        let pairs = ["XBT/EUR", "ETH/EUR", "SOL/EUR", "ADA/EUR", "XBT/USD", "ETH/XBT", "DOT/USD", "ETH2.S/XBT"];
        for text in pairs {
            assert_eq!(worker_of(&pair(text), 1), 0, "{text}");
            assert_eq!(worker_of(&pair(text), 2), 1, "{text}");
            for peers in 3..=9 {
                assert!((1..peers as u64).contains(&worker_of(&pair(text), peers)), "{text} on {peers}");
            }
        }
    }

    /// Every process of a cluster computes the same place for a pair, so it is a fixed
    /// function of the pair's text (not of a per-process hasher): pinned here.
    #[test]
    fn a_pairs_worker_is_a_fixed_function_of_its_text() {
        let placed: Vec<u64> =
            ["XBT/EUR", "ETH/EUR", "SOL/EUR", "ADA/EUR"].iter().map(|t| worker_of(&pair(t), 5)).collect();
        // FNV-1a (64-bit) of each text, modulo the four tracker workers, plus one: computed
        // independently (in Python) for these texts.
        assert_eq!(placed, [3, 4, 3, 1]);
        // Four pairs over four tracker workers do not all share one.
        assert!(placed.iter().any(|w| *w != placed[0]), "{placed:?}");
    }
}
