//! The simulated desk: the exchange simulator, the agents, the log and the desk executor,
//! in lockstep.
//!
//! A run starts a new run number in the data dir and records, in order: the templates it
//! uses (one `template_changed` per file, so a replay needs nothing but the log), the
//! venue's capabilities, markets and balances, then everything the venue reports (candles,
//! fills, cancellations) as it reports it. After each external event, the agents' decisions
//! are recorded right behind it, each naming its cause; orders the desk approved go to the
//! venue at once, and the venue's answer (acknowledgement or failure) is the next external
//! event. Nothing else can interleave, which is what makes a run replayable exactly.
//!
//! Humans steer between two inputs: a [`Steering`] (the terminals) is called before each
//! venue event, while a paced run waits for market time, and after the data for as long as
//! it wants. What it does goes through the same recording: a command is an input like any
//! other, written durably before its effects, so a replay steers alike.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crypy_agents::society::{Out, Parent, Society};

use crate::host::Host;
use crate::retry::{self, Retry};
use crate::summary::Books;
use crypy_agents::strategy::Registry;
use crypy_agents::template::{Templates, FILES};
use crypy_core::event::{
    Balances, CommandIssued, KillSwitchEngaged, KillSwitchReleased, Markets, OrderCanceled, TemplateChanged,
    TemplateScope,
};
use crypy_core::{AgentId, Asset, Candle, ClientOrderId, Envelope, Event, Money, NewEvent, OrderRequest};
use crypy_eventstore::{Durability, EventLog, Options};
use crypy_exchange::sim::{SimConfig, Simulator};
use crypy_exchange::{Exchange, Unfinished};
use thiserror::Error;

/// What a simulated run needs.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub data_dir: PathBuf,
    pub candles: Vec<Candle>,
    pub config: SimConfig,
    /// The configuration's text, recorded at the start of the run (none: not recorded).
    pub config_text: Option<String>,
    pub templates: Templates,
    /// The template files' text, recorded at the start of the run (defaults when `None`).
    pub template_texts: Option<[String; 3]>,
    /// Dataflow worker threads.
    pub workers: usize,
    /// Market time runs this many times faster than the wall clock (`None`: as fast as the
    /// machine goes).
    pub speed: Option<f64>,
    /// Live: before an order leaves for the venue, everything recorded so far is appended to
    /// the log and made durable, as a desk on a real venue must do so that a crash never
    /// forgets an order it sent. Off, the log is written in large batches (a backtest, whose
    /// venue lives and dies with the process).
    pub live: bool,
    /// Batch candles into epochs (see [`DeskOptions::batch_candles`]).
    pub batch_candles: bool,
}

/// Whether a run goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Go,
    Stop,
}

/// What steers a run from outside (the terminals); see the module doc.
pub trait Steering {
    /// Every event, as it is recorded.
    fn observe(&mut self, event: &Envelope);

    /// Between two inputs, and about every 20 ms while the run waits; `desk.ended()` says
    /// whether the data is over. After the data the run ends at the first [`Flow::Stop`];
    /// before, a stop ends it early.
    fn steer(&mut self, desk: &mut Desk<'_, '_, '_>) -> Flow;
}

/// No one steers: the run goes to the end of its data.
#[derive(Debug, Default)]
pub struct Unsteered;

impl Steering for Unsteered {
    fn observe(&mut self, _: &Envelope) {}

    fn steer(&mut self, desk: &mut Desk<'_, '_, '_>) -> Flow {
        if desk.ended() {
            Flow::Stop
        } else {
            Flow::Go
        }
    }
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SimError {
    #[error(transparent)]
    Log(#[from] crypy_eventstore::Error),
    /// Its text already says it is the simulator's configuration.
    #[error(transparent)]
    Config(#[from] crypy_exchange::sim::ConfigError),
    #[error("templates: {0}")]
    Templates(#[from] crypy_agents::template::TemplateError),
    #[error("exchange: {0}")]
    Exchange(#[from] crypy_exchange::ExchangeError),
    #[error("the data dir's secret: {0}")]
    Secret(std::io::Error),
    #[error("no candles to trade")]
    NoData,
    /// A bug: the dataflow's agents decided otherwise than the same agents fed directly.
    #[error("the dataflow's decisions differ from the shadow society's: batching candles is unsafe here")]
    Diverged,
    /// The log could not be written on a live desk: it stopped trading.
    #[error(
        "the log cannot be written ({cause}): kill switch engaged, {canceled} of {open} open orders canceled at the \
         venue, and the desk stopped; nothing after the last durable event was traded on"
    )]
    NoLogNoTrade { cause: crypy_eventstore::Error, canceled: usize, open: usize },
}

/// One strategy's realized results over the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StrategyResult {
    pub positions: u32,
    pub pnl: Money,
    pub fees: Money,
}

/// What happened, in the trusted asset.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReport {
    pub run: u32,
    pub first_seq: u64,
    pub last_seq: u64,
    pub events: u64,
    pub candles: u64,
    pub orders: u64,
    pub fills: u64,
    pub trusted: Asset,
    pub start_equity: Money,
    pub end_equity: Money,
    pub fees: Money,
    /// Largest fall of equity (at candle closes) from a previous peak, as a fraction.
    pub max_drawdown: f64,
    pub positions: u32,
    pub per_strategy: BTreeMap<String, StrategyResult>,
    pub end_balances: Vec<crypy_core::Balance>,
    /// For every order a market event led to: from that event entering the log to the
    /// request leaving the desk for the venue (in live mode, the log's fsync included).
    pub order_latencies: Vec<std::time::Duration>,
    /// For the same orders, in the same order: from the market event entering the log to the
    /// agents' decision, before the log is made durable (what of the latency is crypy's own).
    pub order_decisions: Vec<std::time::Duration>,
    /// Assets whose end balance differs from start + fills − fees as the differential ledger
    /// computed it (empty: the accounting holds exactly).
    pub accounting_mismatches: Vec<String>,
}

impl SimReport {
    pub fn total_return(&self) -> f64 {
        crate::summary::total_return(self.start_equity, self.end_equity)
    }
}

fn wall_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Buffers events for the log with the seqs they will get, so that causes can name them
/// before they are written; writes in large batches, each ending on an input boundary.
struct Recorder<'a> {
    log: &'a EventLog,
    run: u32,
    /// The run's first seq.
    first_seq: u64,
    next_seq: u64,
    buffer: Vec<NewEvent>,
    /// A backtest's appends, encoded and written on a thread of their own.
    writer: Option<LogWriter>,
}

/// Appends on a thread of its own, in the order given: a backtest's desk thread has better
/// to do than encode and write, and nothing waits for the log there but the run's end (a
/// live desk appends on its own thread: an order leaves only once its cause is durable).
struct LogWriter {
    batches: Option<std::sync::mpsc::SyncSender<Vec<NewEvent>>>,
    /// Each append's result, with the batch written: the desk frees its events (on the
    /// thread that allocated them) and fills the buffer again, rather than growing one
    /// anew from fresh pages.
    results: std::sync::mpsc::Receiver<(Result<(), crypy_eventstore::Error>, Vec<NewEvent>)>,
    /// Batches back from the writer, for the recorder to empty and reuse.
    spare: Vec<Vec<NewEvent>>,
    /// Batches sent whose result has not been read.
    pending: usize,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
}

impl LogWriter {
    fn start(log: &EventLog) -> Option<Self> {
        // Two batches queued at most: a writer that falls behind slows the desk, rather than
        // the queue growing.
        let (batches, queue) = std::sync::mpsc::sync_channel::<Vec<NewEvent>>(2);
        let (done, results) = std::sync::mpsc::channel();
        let writer_log = log.clone();
        let thread = std::thread::Builder::new()
            .name("crypy-log-writer".into())
            .spawn(move || {
                for batch in queue {
                    let result = writer_log.append(&batch).map(drop);
                    // Freed by the desk's thread, which allocated it.
                    if done.send((result, batch)).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(LogWriter {
            batches: Some(batches),
            results,
            spare: Vec::new(),
            pending: 0,
            thread: Some(thread),
            dir: log.dir().to_path_buf(),
        })
    }

    fn stopped(&self) -> crypy_eventstore::Error {
        crypy_eventstore::Error::Io { path: self.dir.clone(), error: std::io::Error::other("the log writer stopped") }
    }

    /// Hands `batch` to the writer; fails with an earlier append's error, if any.
    fn send(&mut self, batch: Vec<NewEvent>) -> Result<(), SimError> {
        while let Ok((result, buffer)) = self.results.try_recv() {
            self.pending -= 1;
            self.spare.push(buffer);
            result?;
        }
        let sent = self.batches.as_ref().is_some_and(|b| b.send(batch).is_ok());
        if !sent {
            return Err(SimError::Log(self.stopped()));
        }
        self.pending += 1;
        Ok(())
    }

    /// Waits until everything sent is appended.
    fn wait(&mut self) -> Result<(), SimError> {
        let mut first_error = Ok(());
        while self.pending > 0 {
            let result = match self.results.recv() {
                Ok((result, buffer)) => {
                    self.spare.push(buffer);
                    result
                }
                Err(_) => Err(self.stopped()),
            };
            self.pending -= 1;
            if first_error.is_ok() {
                first_error = result;
            }
        }
        Ok(first_error?)
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.batches.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Recorder<'_> {
    fn push(&mut self, source: AgentId, event: Event, cause: Option<u64>, time: i64) -> u64 {
        let seq = self.next_seq;
        self.buffer.push(NewEvent { run: self.run, time, wall: wall_now(), source, cause, event });
        self.next_seq += 1;
        seq
    }

    /// Writes every buffered event; returns once the log has them.
    fn flush(&mut self) -> Result<(), SimError> {
        self.flush_through(self.next_seq.saturating_sub(1))?;
        self.writer.as_mut().map_or(Ok(()), LogWriter::wait)
    }

    /// Writes the buffered events up to and including `seq` (an input boundary); with a
    /// writer thread, without waiting for it.
    fn flush_through(&mut self, seq: u64) -> Result<(), SimError> {
        let first_buffered = self.next_seq - self.buffer.len() as u64;
        let count = (seq + 1).saturating_sub(first_buffered).min(self.buffer.len() as u64) as usize;
        if count == 0 {
            return Ok(());
        }
        match self.writer.as_mut() {
            Some(writer) => {
                let mut rest = writer.spare.pop().unwrap_or_else(|| Vec::with_capacity(FLUSH_AT + STAGE_LIMIT));
                rest.clear();
                rest.extend(self.buffer.drain(count..));
                writer.send(std::mem::replace(&mut self.buffer, rest))
            }
            None => {
                self.log.append(&self.buffer[..count])?;
                self.buffer.drain(..count);
                Ok(())
            }
        }
    }
}

/// The desk's side effects in one place: recording, executing approved orders, observing.
struct DeskLoop<'a, 'o> {
    desk: AgentId,
    run: u32,
    rec: Recorder<'a>,
    books: Books,
    requests: BTreeMap<ClientOrderId, OrderRequest>,
    /// The seq of each order's approval: the cause of what the venue then says about it.
    approvals: BTreeMap<ClientOrderId, u64>,
    runtime: tokio::runtime::Runtime,
    observe: &'o mut dyn FnMut(&Envelope),
    /// Taken out while it steers.
    steering: Option<&'o mut dyn Steering>,
    /// While a command is carried out: what it recorded.
    captured: Option<Vec<Envelope>>,
    live: bool,
    order_latencies: Vec<std::time::Duration>,
    order_decisions: Vec<std::time::Duration>,
    retry: Retry,
    /// The desk's clock: the latest time of its inputs. It never goes back, whatever a
    /// venue's skewed clock stamps on a report.
    clock: i64,
    /// Batching inputs into epochs (a backtest): see [`Shadow`].
    shadow: Option<Shadow>,
    /// Inputs recorded and handed to the dataflow, their epoch not closed yet: each input's
    /// seq and the decisions the shadow foresaw for it.
    staged: Vec<(u64, Vec<Out>)>,
    /// Epochs the dataflow has in hand and whose decisions are not checked yet, oldest first.
    in_flight: std::collections::VecDeque<InFlight>,
    /// Every event up to this seq is checked against the dataflow: the log may have it.
    checked_through: u64,
    /// [`DeskLoop::input`]'s queue, kept between inputs (empty there).
    answers: std::collections::VecDeque<(Event, i64, Option<u64>)>,
}

/// An epoch handed to the dataflow: what the shadow foresaw for its inputs, and the seq of
/// the last event recorded before it closed.
struct InFlight {
    epoch: u64,
    foreseen: Vec<(u64, Vec<Out>)>,
    last_seq: u64,
}

/// Inputs batched into one epoch at most (a backtest).
const STAGE_LIMIT: usize = 4096;

/// Buffered events that make the recorder write (those checked, with a shadow).
const FLUSH_AT: usize = 16_384;

/// A second society fed every input the dataflow's society gets, one at a time and at once:
/// it says at once what the agents will decide for each input. A backtest's venue answers
/// the desk's orders before its next candle, so without it each input needs an epoch of its
/// own (the next candle may depend on this one's orders). With it, the desk acts on what the
/// shadow decides and hands the inputs to the dataflow in epochs of thousands, which run on
/// a thread of their own while the desk goes on; each epoch's decisions are checked against
/// the shadow's before the log gets any of its events, and a difference stops the run
/// (`SimError::Diverged`). So the log holds only decisions the dataflow made, event for event
/// what one epoch per input records; only the simulated venue may have seen an order the
/// dataflow did not confirm, in a run that then fails.
struct Shadow {
    society: Society,
    candles: crate::host::CandleClock,
    /// The next holder lifetimes' keys, prepared on the other core.
    ahead: Option<crate::ahead::Ahead>,
}

/// The agents as a reader sees them: the host's, or the shadow's (see [`DeskLoop::society`]).
#[derive(Debug)]
pub enum Agents<'a> {
    Host(std::sync::MutexGuard<'a, Society>),
    Shadow(&'a Society),
}

impl std::ops::Deref for Agents<'_> {
    type Target = Society;

    fn deref(&self) -> &Society {
        match self {
            Agents::Host(guard) => guard,
            Agents::Shadow(society) => society,
        }
    }
}

impl Shadow {
    /// What the society decides for `input` (nothing for a candle the host keeps from it).
    fn handle(&mut self, input: &Envelope) -> Vec<Out> {
        if let Event::Candle(c) = &input.event {
            if !self.candles.advances(c) {
                return Vec::new();
            }
        }
        let outs = self.society.handle(input);
        if let Some(ahead) = self.ahead.as_mut() {
            for o in &outs {
                ahead.see(&o.event);
            }
        }
        outs
    }
}

impl DeskLoop<'_, '_> {
    /// Hands the staged inputs to the dataflow as one epoch, without waiting for it.
    fn submit_stage(&mut self, host: &mut Host) {
        if self.staged.is_empty() {
            return;
        }
        let epoch = host.submit_epoch();
        let foreseen = std::mem::take(&mut self.staged);
        self.in_flight.push_back(InFlight { epoch, foreseen, last_seq: self.rec.next_seq - 1 });
    }

    /// Waits for the oldest epoch in flight and checks the dataflow's decisions against the
    /// shadow's.
    fn check_oldest(&mut self, host: &mut Host) -> Result<(), SimError> {
        let Some(f) = self.in_flight.pop_front() else { return Ok(()) };
        let decided = host.collect(f.epoch);
        let deciding = |d: &&crate::host::Derived| !d.1.is_empty();
        let agree = decided.iter().filter(deciding).eq(f.foreseen.iter().filter(deciding));
        host.discard(decided);
        if !agree {
            return Err(SimError::Diverged);
        }
        self.checked_through = f.last_seq;
        Ok(())
    }

    /// Checks everything handed to the dataflow: the host's society and totals are then as
    /// up to date as the shadow.
    fn settle(&mut self, host: &mut Host) -> Result<(), SimError> {
        self.submit_stage(host);
        while !self.in_flight.is_empty() {
            self.check_oldest(host)?;
        }
        Ok(())
    }

    /// Writes every recorded event to the log (after checking it, with a shadow).
    fn flush(&mut self, host: &mut Host) -> Result<(), SimError> {
        self.settle(host)?;
        self.rec.flush()
    }

    /// Writes out a large buffer. Called only between inputs, so that an append (atomic in
    /// the log) never splits an input from the decisions it caused: a crash leaves whole
    /// inputs with all their decisions, or nothing of them. With a shadow, only what the
    /// dataflow has confirmed: the newest epoch stays in flight, so the dataflow has work.
    fn flush_if_large(&mut self, host: &mut Host) -> Result<(), SimError> {
        if self.rec.buffer.len() < FLUSH_AT {
            return Ok(());
        }
        if self.shadow.is_none() {
            return self.rec.flush();
        }
        self.submit_stage(host);
        while self.in_flight.len() > 1 {
            self.check_oldest(host)?;
        }
        self.rec.flush_through(self.checked_through)
    }

    /// The agents as they stand after the last input: the shadow's when there is one (the
    /// dataflow's may still be working on the last epochs).
    fn society<'h>(&'h self, host: &'h Host) -> Agents<'h> {
        match &self.shadow {
            Some(shadow) => Agents::Shadow(&shadow.society),
            None => Agents::Host(host.society()),
        }
    }

    fn see(&mut self, e: &Envelope) {
        self.books.see(e);
        (self.observe)(e);
        if let Some(s) = self.steering.as_mut() {
            s.observe(e);
        }
        if let Some(c) = self.captured.as_mut() {
            c.push(e.clone());
        }
    }

    /// Lets the steering act; false when it stops the run.
    fn steer(
        &mut self,
        venue: &mut dyn DeskVenue,
        host: &mut Host,
        log: &EventLog,
        progress: (u64, u64),
        ended: bool,
    ) -> Result<Flow, SimError> {
        let Some(steering) = self.steering.take() else { return Ok(if ended { Flow::Stop } else { Flow::Go }) };
        let mut desk = Desk { lp: self, venue, host, log, progress, ended, failed: None, unseen: Vec::new() };
        let flow = steering.steer(&mut desk);
        let failed = desk.failed.take();
        // What its commands recorded, it sees like everything else (a `watch` shows it).
        for e in std::mem::take(&mut desk.unseen) {
            steering.observe(&e);
        }
        self.steering = Some(steering);
        match failed {
            Some(e) => Err(e),
            None => Ok(flow),
        }
    }

    /// Records what the agents decided for the input recorded as `seq`, each naming its cause;
    /// returns the orders the desk approved, with their approvals' seqs.
    fn record_decisions(
        &mut self,
        seq: u64,
        time: i64,
        outs: impl IntoIterator<Item = Out>,
    ) -> Vec<(ClientOrderId, u64)> {
        let base = seq + 1;
        let mut approved = Vec::new();
        for o in outs {
            let cause = Some(match o.parent {
                Parent::Input => seq,
                Parent::Output(i) => base + i as u64,
            });
            let out_seq = self.rec.push(o.source, o.event.clone(), cause, time);
            match &o.event {
                Event::OrderRequested(r) => {
                    self.requests.insert(r.client_id.clone(), r.clone());
                }
                Event::OrderApproved(a) => approved.push((a.client_id.clone(), out_seq)),
                _ => {}
            }
            let derived =
                Envelope { seq: out_seq, run: self.run, time, wall: 0, source: o.source, cause, event: o.event };
            self.see(&derived);
        }
        approved
    }

    /// Records one external event, lets the agents decide, records their decisions, and
    /// sends what the desk approved to the venue, whose answers are the next inputs.
    fn input(
        &mut self,
        event: Event,
        time: i64,
        cause: Option<u64>,
        venue: &mut dyn DeskVenue,
        host: &mut Host,
    ) -> Result<(), SimError> {
        let entered = std::time::Instant::now();
        let time = time.max(self.clock);
        self.clock = time;
        let from_market = event.kind().group() == crypy_core::event::EventGroup::Market;
        // The venue's answers to this input's orders are inputs of their own, after it.
        let mut queue = std::mem::take(&mut self.answers);
        queue.push_back((event, time, cause));
        while let Some((event, time, cause)) = queue.pop_front() {
            let seq = self.rec.push(self.desk, event.clone(), cause, time);
            let env = Envelope { seq, run: self.run, time, wall: 0, source: self.desk, cause, event };
            self.see(&env);
            let outs = match self.shadow.as_mut() {
                Some(shadow) => {
                    let outs = shadow.handle(&env);
                    host.push(env);
                    self.staged.push((seq, outs.clone()));
                    outs
                }
                None => host.handle(env),
            };
            let approved = self.record_decisions(seq, time, outs);
            // Read off the clock only for the orders a market event led to, not at every event.
            let decided = (from_market && !approved.is_empty()).then(|| entered.elapsed());
            if self.live && !approved.is_empty() {
                // The input and every decision it caused are in the buffer: an input boundary.
                self.flush(host)?;
            }
            for (client_id, approval) in approved {
                self.approvals.insert(client_id.clone(), approval);
                let Some(request) = self.requests.get(&client_id) else { continue };
                if let Some(decided) = decided {
                    self.order_latencies.push(entered.elapsed());
                    self.order_decisions.push(decided);
                }
                for event in retry::place(venue, &self.runtime, self.retry, request) {
                    queue.push_back((event, venue.now().max(time), Some(approval)));
                }
            }
        }
        self.answers = queue;
        if self.staged.len() >= STAGE_LIMIT {
            self.submit_stage(host);
        }
        self.flush_if_large(host)
    }
}

/// The running desk as a [`Steering`] sees it between two inputs: what it can read, and the
/// commands it can carry out. Each command is recorded (durably) before it takes effect and
/// returns every event it led to, the command first.
pub struct Desk<'a, 'b, 'o> {
    lp: &'a mut DeskLoop<'b, 'o>,
    venue: &'a mut dyn DeskVenue,
    host: &'a mut Host,
    log: &'a EventLog,
    progress: (u64, u64),
    ended: bool,
    failed: Option<SimError>,
    /// Recorded while the steering was busy, for its `observe` afterwards.
    unseen: Vec<Envelope>,
}

impl std::fmt::Debug for Desk<'_, '_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desk").field("desk", &self.lp.desk).field("run", &self.lp.run).finish_non_exhaustive()
    }
}

/// The run's figures so far, in the trusted asset.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFigures {
    pub trusted: Asset,
    pub start_equity: Option<Money>,
    pub equity: Money,
    pub max_drawdown: f64,
    pub orders: u64,
    pub fills: u64,
    pub positions: u32,
    pub fees: Money,
}

impl Desk<'_, '_, '_> {
    pub fn id(&self) -> AgentId {
        self.lp.desk
    }

    pub fn run(&self) -> u32 {
        self.lp.run
    }

    /// Whether the market data is over.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Candles done, and in all.
    pub fn progress(&self) -> (u64, u64) {
        self.progress
    }

    /// The venue's clock (ms).
    pub fn market_time(&self) -> i64 {
        self.venue.now()
    }

    /// The run so far, read back from the log by the desk's own rules: for a terminal's
    /// `chart`, on demand, so that nothing is kept per event for charts nobody asks for.
    /// Reads what was appended: call it after recording the command that asks.
    ///
    /// # Errors
    /// The log cannot be read.
    pub fn run_summary(&self) -> Result<crate::summary::RunSummary, String> {
        let events =
            self.log.iter_from(self.lp.rec.first_seq).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
        Ok(crate::summary::summarize(self.lp.run, events))
    }

    /// The agents, to read.
    pub fn society(&self) -> Agents<'_> {
        self.lp.society(self.host)
    }

    /// The account's balances as the venue reports them.
    pub fn balances(&self) -> Vec<crypy_core::Balance> {
        self.venue.balances_now()
    }

    /// Orders approved and not yet filled, canceled or failed (as the desk's gate counts them).
    pub fn open_orders(&self) -> Vec<OrderRequest> {
        let open = self.society().open_order_ids();
        open.iter().filter_map(|id| self.lp.requests.get(id).cloned()).collect()
    }

    pub fn figures(&self) -> RunFigures {
        let b = &self.lp.books;
        RunFigures {
            trusted: b.trusted,
            start_equity: b.start_equity,
            equity: b.value(&self.venue.balances_now()),
            max_drawdown: b.max_drawdown,
            orders: b.orders,
            fills: b.fills,
            positions: b.positions,
            fees: b.fees,
        }
    }

    /// Records `inputs` in order, each caused by `cause` or else by the first, and flushes
    /// the log to disk.
    fn record(&mut self, inputs: Vec<Event>, cause: Option<u64>) -> Result<Vec<Envelope>, String> {
        self.lp.captured = Some(Vec::new());
        let time = self.venue.now();
        let mut first: Option<u64> = cause;
        let mut result = Ok(());
        for event in inputs {
            let seq = self.lp.rec.next_seq;
            if let Err(e) = self.lp.input(event, time, first, self.venue, self.host) {
                result = Err(e);
                break;
            }
            first.get_or_insert(seq);
        }
        let result = result.and_then(|()| self.lp.flush(self.host)).and_then(|()| Ok(self.log.flush()?));
        let recorded = self.lp.captured.take().unwrap_or_default();
        self.unseen.extend(recorded.iter().cloned());
        match result {
            Ok(()) => Ok(recorded),
            Err(e) => {
                let message = format!("the log could not record the command: {e}");
                self.failed = Some(e);
                Err(message)
            }
        }
    }

    fn issued(&self, agent: AgentId, command: &str, session: &str) -> Event {
        Event::CommandIssued(CommandIssued { agent, command: command.to_string(), session: session.to_string() })
    }

    /// Records a command of `agent`'s terminal; the agents act on it (or, for a query, not).
    ///
    /// # Errors
    /// When the log cannot record it: the run then stops.
    pub fn command(&mut self, agent: AgentId, command: &str, session: &str) -> Result<Vec<Envelope>, String> {
        let event = self.issued(agent, command, session);
        self.record(vec![event], None)
    }

    /// The kill switch: every new order refused, every open order canceled at the venue.
    /// Returns the recorded events and how many orders were canceled.
    ///
    /// # Errors
    /// When the log cannot record it: the run then stops.
    pub fn kill(&mut self, command: &str, session: &str) -> Result<(u32, Vec<Envelope>), String> {
        let issued = self.issued(self.lp.desk, command, session);
        let mut recorded = self.record(vec![issued], None)?;
        let cause = recorded.first().map(|e| e.seq);
        let (canceled, _) = cancel_open_orders(self.venue, &self.lp.runtime, self.lp.retry, self.host);
        let mut inputs = vec![Event::KillSwitchEngaged(KillSwitchEngaged {
            reason: format!("by {session}"),
            canceled: canceled.len() as u32,
        })];
        inputs.extend(
            canceled
                .iter()
                .map(|id| Event::OrderCanceled(OrderCanceled { client_id: id.clone(), reason: "kill switch".into() })),
        );
        recorded.extend(self.record(inputs, cause)?);
        Ok((canceled.len() as u32, recorded))
    }

    /// Releases the kill switch.
    ///
    /// # Errors
    /// When the log cannot record it: the run then stops.
    pub fn resume(&mut self, command: &str, session: &str) -> Result<Vec<Envelope>, String> {
        let inputs = vec![
            self.issued(self.lp.desk, command, session),
            Event::KillSwitchReleased(KillSwitchReleased { reason: format!("by {session}") }),
        ];
        self.record(inputs, None)
    }

    /// Records a template setting (checked with [`Society::check_setting`]) and the command
    /// that asked for it.
    ///
    /// # Errors
    /// When the log cannot record it: the run then stops.
    pub fn set_template(
        &mut self,
        agent: AgentId,
        scope: TemplateScope,
        change: crypy_agents::template::FieldChange,
        command: &str,
        session: &str,
    ) -> Result<Vec<Envelope>, String> {
        let inputs = vec![
            self.issued(agent, command, session),
            Event::TemplateChanged(TemplateChanged {
                scope,
                key: change.key,
                old: change.old,
                new: change.new,
                reason: format!("set by {session}"),
            }),
        ];
        self.record(inputs, None)
    }
}

/// What the desk needs of its venue between two awaits: an object-safe view of an
/// [`Exchange`], driven on the desk's runtime, so that the terminals' [`Desk`] is one type
/// whatever the venue.
pub trait DeskVenue {
    fn now(&self) -> i64;
    fn balances_now(&self) -> Vec<crypy_core::Balance>;
    /// Looks an order up by client id, waiting for the venue's answer.
    ///
    /// # Errors
    /// What the venue says.
    fn lookup(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        client_id: &ClientOrderId,
    ) -> Result<Option<crypy_exchange::OrderAck>, crypy_exchange::ExchangeError>;
    /// Places an order, waiting for the venue's answer.
    ///
    /// # Errors
    /// What the venue says.
    fn place(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        order: &OrderRequest,
    ) -> Result<crypy_exchange::OrderAck, crypy_exchange::ExchangeError>;
    /// Cancels an order, waiting for the venue's answer.
    ///
    /// # Errors
    /// What the venue says.
    fn cancel(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        client_id: &ClientOrderId,
    ) -> Result<(), crypy_exchange::ExchangeError>;
}

impl<E: Exchange> DeskVenue for E {
    fn now(&self) -> i64 {
        Exchange::now(self)
    }

    fn balances_now(&self) -> Vec<crypy_core::Balance> {
        Exchange::balances_now(self)
    }

    fn place(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        order: &OrderRequest,
    ) -> Result<crypy_exchange::OrderAck, crypy_exchange::ExchangeError> {
        runtime.block_on(Exchange::place(self, order))
    }

    fn lookup(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        client_id: &ClientOrderId,
    ) -> Result<Option<crypy_exchange::OrderAck>, crypy_exchange::ExchangeError> {
        runtime.block_on(Exchange::lookup(self, client_id))
    }

    fn cancel(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        client_id: &ClientOrderId,
    ) -> Result<(), crypy_exchange::ExchangeError> {
        runtime.block_on(Exchange::cancel(self, client_id))
    }
}

/// A run that fails while trading: when it is the log that failed on a live desk, the kill
/// switch's work is done at once (every open order canceled at the venue, not recorded since
/// nothing can be) and the error says so; the desk then stops, never trading on events it
/// could not record. Other failures end the run as they are.
fn no_log_no_trade(
    failure: SimError,
    live: bool,
    desk_loop: &mut DeskLoop<'_, '_>,
    venue: &mut dyn DeskVenue,
    host: &Host,
) -> SimError {
    let SimError::Log(cause) = failure else { return failure };
    if !live {
        return SimError::Log(cause);
    }
    let (canceled, open) = cancel_open_orders(venue, &desk_loop.runtime, desk_loop.retry, host);
    SimError::NoLogNoTrade { cause, canceled: canceled.len(), open }
}

/// Cancels at the venue every order the desk's gate counts open; returns those the venue
/// canceled, and how many were open. One the venue no longer knows has filled or ended
/// there: its report follows, or the next start reconciles it.
fn cancel_open_orders(
    venue: &mut dyn DeskVenue,
    runtime: &tokio::runtime::Runtime,
    retry: Retry,
    host: &Host,
) -> (Vec<ClientOrderId>, usize) {
    let open = host.society().open_order_ids();
    let count = open.len();
    (open.into_iter().filter(|id| retry::cancel(venue, runtime, retry, id).is_ok()).collect(), count)
}

/// The desk template's `on_stop = "cancel"`: every order still open is canceled at the
/// venue and the cancellation recorded. One the venue no longer knows has ended there (a fill
/// not yet reported): it is left for the next start to reconcile.
fn stop_orders(desk_loop: &mut DeskLoop<'_, '_>, venue: &mut dyn DeskVenue, host: &mut Host) -> Result<(), SimError> {
    let (canceled, _) = cancel_open_orders(venue, &desk_loop.runtime, desk_loop.retry, host);
    for id in canceled {
        let cause = desk_loop.approvals.get(&id).copied();
        let event =
            Event::OrderCanceled(OrderCanceled { client_id: id, reason: "the desk stopped (on_stop = cancel)".into() });
        desk_loop.input(event, venue.now(), cause, venue, host)?;
    }
    Ok(())
}

/// Orders `desk` approved in earlier runs that no fill, cancellation or failure ended, with
/// the fills recorded of them: what a run killed with orders out leaves behind.
fn unfinished_orders(log: &EventLog, desk: AgentId) -> Result<(Vec<Unfinished>, crate::summary::Lifetimes), SimError> {
    let mut open: BTreeMap<ClientOrderId, Unfinished> = BTreeMap::new();
    let mut lifetimes = crate::summary::Lifetimes::default();
    for e in log.iter_from(1) {
        let e = e?;
        lifetimes.see(&e);
        match &e.event {
            Event::OrderApproved(a) if e.source == desk => {
                open.insert(a.client_id.clone(), Unfinished::new(a.client_id.clone()));
            }
            Event::OrderPartiallyFilled(f) => {
                if let Some(u) = open.get_mut(&f.client_id) {
                    u.recorded_fills.insert(f.fill_id.clone());
                }
            }
            Event::OrderFilled(f) => {
                open.remove(&f.client_id);
            }
            Event::OrderCanceled(c) => {
                open.remove(&c.client_id);
            }
            Event::OrderFailed(f) => {
                open.remove(&f.client_id);
            }
            _ => {}
        }
    }
    Ok((open.into_values().collect(), lifetimes))
}

/// What `fills` did to an account's balances, by asset: bought and sold quantities, values
/// and fees, exactly.
fn balance_changes<'f>(fills: impl IntoIterator<Item = &'f crypy_core::Fill>) -> BTreeMap<Asset, Money> {
    let mut change: BTreeMap<Asset, Money> = BTreeMap::new();
    for (asset, amount) in fills.into_iter().flat_map(crypy_core::Fill::balance_changes) {
        *change.entry(asset).or_default() += amount;
    }
    change
}

/// `future`'s output: at once when it is ready on its first poll (a simulator's report,
/// which then costs no trip through the runtime's scheduler, a fair share of a backtest's
/// time per bar), else as the runtime waits for it.
fn at_once_or_wait<F: std::future::Future>(runtime: &tokio::runtime::Runtime, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    {
        // Inside the runtime's context, as any future of the venue may expect.
        let _context = runtime.enter();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
    runtime.block_on(future)
}

/// How long a live desk that was told to stop waits for its open orders to end.
const LIVE_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// What a desk on any venue needs besides the venue.
#[derive(Debug, Clone)]
pub struct DeskOptions {
    pub data_dir: PathBuf,
    pub templates: Templates,
    /// The template files' text, recorded at the start of the run (defaults when `None`).
    pub template_texts: Option<[String; 3]>,
    /// Dataflow worker threads.
    pub workers: usize,
    /// Other processes lending their workers (timely's cluster mode); this one is process 0.
    pub cluster: Option<crate::host::Cluster>,
    /// Market time runs this many times faster than the wall clock (`None`: as the venue
    /// reports it). Only for a venue replaying history.
    pub speed: Option<f64>,
    /// Every append made durable before an order leaves (see [`SimOptions::live`]).
    pub live: bool,
    /// Candles the venue will report in all, when it knows (the simulator); a live venue
    /// reports as long as the market runs.
    pub expected_candles: Option<u64>,
    /// End the run after this many candles (a live venue never ends by itself).
    pub stop_after_candles: Option<u64>,
    /// How long to wait for a live venue before the terminals get a turn (`None`: the venue
    /// answers at once, as the simulator does).
    pub poll: Option<std::time::Duration>,
    /// Fault injection: the log fails after this many appends (see the eventstore's
    /// `Options::fail_after_appends`).
    pub log_fails_after: Option<u64>,
    /// The venue's settings, recorded after the templates (the simulator's configuration).
    pub venue_settings: Option<String>,
    /// One holder's or one pair's own templates (see `crypy_agents::template::scope_file`),
    /// recorded after the shared files.
    pub scoped_templates: Vec<(TemplateScope, String)>,
    /// Template settings recorded after them, before the desk's own lessons (a what-if
    /// repeating what its run learned at its start).
    pub start_settings: Vec<TemplateChanged>,
    /// Batch inputs into epochs with a shadow society (see `Shadow`): a desk replaying
    /// history runs its agents twice (once on the dataflow's thread, checked against the
    /// shadow) and records exactly what it would one input an epoch. Ignored for a live or
    /// paced desk, whose inputs come at the market's pace anyway.
    pub batch_candles: bool,
}

impl DeskOptions {
    /// A desk on a venue replaying `expected_candles` of history as fast as the machine goes,
    /// on one worker, recording the shared template files' defaults, its candles batched into
    /// epochs: set the rest with struct update syntax.
    pub fn simulated(data_dir: PathBuf, templates: Templates, expected_candles: u64) -> Self {
        DeskOptions {
            data_dir,
            templates,
            template_texts: None,
            workers: 1,
            cluster: None,
            speed: None,
            live: false,
            expected_candles: Some(expected_candles),
            stop_after_candles: None,
            poll: None,
            log_fails_after: None,
            venue_settings: None,
            scoped_templates: Vec::new(),
            start_settings: Vec::new(),
            batch_candles: true,
        }
    }
}

/// Runs the simulated desk over `opts.candles`, calling `observe` with every event as it is
/// recorded and `progress` with (candles done, candles in all).
///
/// # Errors
/// Log, configuration, template or secret problems; the log keeps what was recorded.
pub fn run_sim(
    opts: SimOptions,
    observe: impl FnMut(&Envelope),
    progress: impl FnMut(u64, u64),
) -> Result<SimReport, SimError> {
    run_steered(opts, observe, progress, &mut Unsteered)
}

/// [`run_sim`] with a [`Steering`] (see the module doc).
///
/// # Errors
/// As [`run_sim`].
pub fn run_steered(
    opts: SimOptions,
    observe: impl FnMut(&Envelope),
    progress: impl FnMut(u64, u64),
    steering: &mut dyn Steering,
) -> Result<SimReport, SimError> {
    if opts.candles.is_empty() {
        return Err(SimError::NoData);
    }
    let expected = opts.candles.len() as u64;
    let sim = Simulator::new(opts.config.clone(), opts.candles)?;
    let runtime = tokio::runtime::Builder::new_current_thread().build().map_err(SimError::Secret)?;
    let desk = DeskOptions {
        template_texts: opts.template_texts,
        workers: opts.workers,
        speed: opts.speed,
        live: opts.live,
        venue_settings: opts.config_text,
        batch_candles: opts.batch_candles,
        ..DeskOptions::simulated(opts.data_dir, opts.templates, expected)
    };
    run_desk(runtime, sim, desk, observe, progress, steering)
}

/// Runs a desk on `venue` (the simulator, a paper account, a real one): see the module doc.
/// `runtime` runs the venue's calls and whatever it spawned (a live venue's connections).
///
/// # Errors
/// Log, template or secret problems, or a venue that fails beyond its own retries; the log
/// keeps what was recorded.
pub fn run_desk<E: Exchange>(
    runtime: tokio::runtime::Runtime,
    mut venue: E,
    opts: DeskOptions,
    mut observe: impl FnMut(&Envelope),
    mut progress: impl FnMut(u64, u64),
    steering: &mut dyn Steering,
) -> Result<SimReport, SimError> {
    let total = opts.expected_candles.unwrap_or(0);
    let secret = crate::secret::load_or_create(&opts.data_dir).map_err(SimError::Secret)?;
    let log = EventLog::open(
        &opts.data_dir,
        Options {
            // Live, each append is durable before the order it precedes leaves; a backtest
            // lets a background flush make the log durable every 200 ms.
            durability: if opts.live { Durability::EveryBatch } else { Durability::Interval(200) },
            lock_wait: std::time::Duration::from_secs(3),
            fail_after_appends: opts.log_fails_after,
            ..Options::default()
        },
    )?;
    let desk = venue.desk();
    let (unfinished, lifetimes) = unfinished_orders(&log, desk)?;
    let registry = Registry::default();
    let scale = crate::host::Scale { workers: opts.workers.max(1), cluster: opts.cluster.clone() };
    let batching = opts.batch_candles && !opts.live && opts.speed.is_none() && opts.poll.is_none();
    let shadow = if batching {
        Some(Shadow {
            society: Society::new(desk, opts.templates.clone(), &registry, secret.clone())?,
            candles: crate::host::CandleClock::default(),
            ahead: crate::ahead::Ahead::start(&secret, crate::ahead::Reading::Decisions),
        })
    } else {
        None
    };
    let society = Society::new(desk, opts.templates.clone(), &registry, secret)?;
    // With a shadow the desk does not wait for each epoch: the dataflow gets a thread of
    // its own even with one worker.
    let mut host = if batching { Host::beside(society, &scale) } else { Host::with_scale(society, &scale) };
    let run = log.start_run()?;
    let first_seq = log.last_seq() + 1;
    let writer = if batching { LogWriter::start(&log) } else { None };
    let rec = Recorder { log: &log, run, first_seq, next_seq: first_seq, buffer: Vec::new(), writer };
    let books = Books::new(opts.templates.desk.trusted_asset);
    let mut desk_loop = DeskLoop {
        desk,
        run,
        rec,
        books,
        requests: BTreeMap::new(),
        approvals: BTreeMap::new(),
        runtime,
        observe: &mut observe,
        steering: Some(steering),
        captured: None,
        live: opts.live,
        order_latencies: Vec::new(),
        order_decisions: Vec::new(),
        retry: Retry::new(opts.poll.is_some()),
        clock: i64::MIN,
        shadow,
        staged: Vec::new(),
        in_flight: std::collections::VecDeque::new(),
        checked_through: 0,
        answers: std::collections::VecDeque::new(),
    };
    let now = Exchange::now(&venue);
    for (i, (key, default)) in FILES.iter().enumerate() {
        let text = opts.template_texts.as_ref().map_or(default.to_string(), |t| t[i].clone());
        let event = Event::TemplateChanged(TemplateChanged {
            scope: TemplateScope::Desk,
            key: key.to_string(),
            old: None,
            new: Some(text),
            reason: format!("templates of run {run}"),
        });
        desk_loop.input(event, now, None, &mut venue, &mut host)?;
    }
    for (scope, text) in &opts.scoped_templates {
        let event = Event::TemplateChanged(TemplateChanged {
            scope: scope.clone(),
            key: FILES[if matches!(scope, TemplateScope::Holder(_)) { 1 } else { 2 }].0.to_string(),
            old: None,
            new: Some(text.clone()),
            reason: format!("templates of run {run} ({})", crypy_agents::template::scope_file(scope)),
        });
        desk_loop.input(event, now, None, &mut venue, &mut host)?;
    }
    for setting in &opts.start_settings {
        desk_loop.input(Event::TemplateChanged(setting.clone()), now, None, &mut venue, &mut host)?;
    }
    // The desk's lesson from its earlier lifetimes in this data dir, decided here at the
    // edge from the log and recorded as an input, so a replay applies the same.
    let desk_template = desk_loop.society(&host).desk_template().clone();
    if let Some((divert, reason)) =
        crypy_agents::society::learn_divert(&lifetimes.lifetimes(), &desk_template.learning, now, &desk_template.divert)
    {
        let event = Event::TemplateChanged(TemplateChanged {
            scope: TemplateScope::Desk,
            key: "divert".into(),
            old: Some(crypy_agents::template::toml_list(&desk_template.divert)),
            new: Some(crypy_agents::template::toml_list(&divert)),
            reason: format!("learned at the start of run {run}: {reason}"),
        });
        desk_loop.input(event, now, None, &mut venue, &mut host)?;
    }
    if let Some(text) = &opts.venue_settings {
        let event = Event::VenueSettings(crypy_core::event::VenueSettings { text: text.clone() });
        desk_loop.input(event, now, None, &mut venue, &mut host)?;
    }
    let (retry, mut troubles) = (desk_loop.retry, Vec::new());
    let capabilities =
        retry::query(retry, "capabilities", &mut troubles, || desk_loop.runtime.block_on(venue.capabilities()))?;
    let markets = retry::query(retry, "markets", &mut troubles, || desk_loop.runtime.block_on(venue.markets()))?;
    let balances = retry::query(retry, "balances", &mut troubles, || desk_loop.runtime.block_on(venue.balances()))?;
    for trouble in troubles {
        desk_loop.input(trouble, now, None, &mut venue, &mut host)?;
    }
    desk_loop.input(Event::Capabilities(capabilities), now, None, &mut venue, &mut host)?;
    desk_loop.input(Event::Markets(Markets { markets }), now, None, &mut venue, &mut host)?;
    // Fills an earlier run did not live to record are already in the balances the venue
    // reports: they are recorded before them, and kept out of this run's accounting.
    let mut reconciled_fills = Vec::new();
    if !unfinished.is_empty() {
        // An earlier run was killed with orders out: the venue says how each ended, before
        // this run trades.
        for closing in desk_loop.runtime.block_on(venue.reconcile(&unfinished))? {
            if let Event::OrderFilled(f) | Event::OrderPartiallyFilled(f) = &closing.event {
                reconciled_fills.push((**f).clone());
            }
            desk_loop.input(closing.event, closing.time, None, &mut venue, &mut host)?;
        }
    }
    desk_loop.input(Event::Balances(Balances { balances }), now, None, &mut venue, &mut host)?;
    if !unfinished.is_empty() {
        // What the venue said of the earlier run's orders is durable before this run trades.
        desk_loop.flush(&mut host)?;
    }
    let reconciled_change = balance_changes(&reconciled_fills);

    let start_balances = Exchange::balances_now(&venue);
    let mut candles_done = 0u64;
    // The balances equity is valued with at every candle, their room reused, and the fills
    // the desk had seen when they were asked for. A simulator's totals move only with the
    // fills it reports, so a backtest asks again only after one; a live venue's also with
    // its own reports, so a live desk asks at every candle.
    let mut balances = Vec::new();
    let mut balances_after_fills = None;
    // Pacing: market time `t` is due at wall time `started + (t - first) / speed`.
    let pace = opts.speed.filter(|s| *s > 0.0 && s.is_finite());
    let mut clock: Option<(std::time::Instant, i64)> = None;
    let tick = std::time::Duration::from_millis(20);
    // After its last candle a live desk waits (a while) for the orders it has out to end, so
    // that it stops with its books agreeing with the venue.
    let mut draining: Option<std::time::Instant> = None;
    // Consecutive failures of the venue's report stream.
    let mut stream_failures = 0u32;
    // Everything between here and the end of the run writes the log: if it cannot, the desk
    // trades no more (see `no_log_no_trade`).
    let mut trade = || -> Result<(), SimError> {
        loop {
            if draining.is_some_and(|until| {
                std::time::Instant::now() >= until || desk_loop.society(&host).open_order_ids().is_empty()
            }) {
                break;
            }
            if desk_loop.steer(&mut venue, &mut host, &log, (candles_done, total), false)? == Flow::Stop {
                break;
            }
            let next = match opts.poll {
                // Cancel-safe by the trait's contract: a wait that times out loses nothing.
                Some(poll) => {
                    match desk_loop.runtime.block_on(async { tokio::time::timeout(poll, venue.next_event()).await }) {
                        Ok(next) => next,
                        Err(_quiet) => continue,
                    }
                }
                None => at_once_or_wait(&desk_loop.runtime, venue.next_event()),
            };
            let next = match next {
                Ok(next) => {
                    stream_failures = 0;
                    next
                }
                Err(e) if e.is_retryable() => {
                    // The venue keeps what it had to say for after the reconnect.
                    stream_failures += 1;
                    let give_up = stream_failures >= desk_loop.retry.reconnects;
                    let trouble = retry::venue_error(
                        "next_event".into(),
                        &e,
                        stream_failures,
                        if give_up { "give up" } else { "reconnect" },
                    );
                    desk_loop.input(trouble, Exchange::now(&venue), None, &mut venue, &mut host)?;
                    if opts.poll.is_some() {
                        desk_loop.flush(&mut host)?;
                    }
                    if give_up {
                        return Err(e.into());
                    }
                    desk_loop.retry.wait(stream_failures);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let Some(reported) = next else {
                // The data is over: the steering may keep the desk up (a terminal is open).
                while desk_loop.steer(&mut venue, &mut host, &log, (candles_done, total), true)? == Flow::Go {
                    std::thread::sleep(tick);
                }
                break;
            };
            if let Some(speed) = pace {
                let (started, first) = *clock.get_or_insert((std::time::Instant::now(), reported.time));
                let due = started
                    + std::time::Duration::from_secs_f64((reported.time - first).max(0) as f64 / 1000.0 / speed);
                let mut stopped = false;
                while let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                    std::thread::sleep(wait.min(tick));
                    if desk_loop.steer(&mut venue, &mut host, &log, (candles_done, total), false)? == Flow::Stop {
                        stopped = true;
                        break;
                    }
                }
                if stopped {
                    break;
                }
            }
            let cause = match &reported.event {
                Event::OrderFilled(f) | Event::OrderPartiallyFilled(f) => {
                    desk_loop.approvals.get(&f.client_id).copied()
                }
                Event::OrderCanceled(c) => desk_loop.approvals.get(&c.client_id).copied(),
                _ => None,
            };
            // A repeated or stale candle is no progress through the data.
            let is_candle = matches!(&reported.event, Event::Candle(c) if desk_loop.books.candles.is_newer(c));
            desk_loop.input(reported.event, reported.time, cause, &mut venue, &mut host)?;
            if opts.poll.is_some() {
                // A live venue reports at human pace: each input is durable before the next, so
                // a crash loses nothing the venue said.
                desk_loop.flush(&mut host)?;
            }
            if is_candle {
                if opts.poll.is_some() || balances_after_fills != Some(desk_loop.books.fills) {
                    Exchange::balances_into(&venue, &mut balances);
                    balances_after_fills = Some(desk_loop.books.fills);
                }
                let equity = desk_loop.books.value(&balances);
                desk_loop.books.start_equity.get_or_insert(equity);
                desk_loop.books.mark(equity);
                candles_done += 1;
                if candles_done.is_multiple_of(1000) || candles_done == total || opts.poll.is_some() {
                    progress(candles_done, total);
                }
                if draining.is_none() && opts.stop_after_candles.is_some_and(|n| candles_done >= n) {
                    if opts.poll.is_none() {
                        break;
                    }
                    draining = Some(std::time::Instant::now() + LIVE_DRAIN);
                }
            }
        }
        desk_loop.settle(&mut host)
    };
    if let Err(failure) = trade() {
        return Err(no_log_no_trade(failure, opts.live, &mut desk_loop, &mut venue, &host));
    }
    if opts.templates.desk.on_stop == crypy_agents::template::OnStop::Cancel {
        stop_orders(&mut desk_loop, &mut venue, &mut host)?;
    }
    let DeskLoop { mut rec, mut books, order_latencies, order_decisions, .. } = desk_loop;
    // The differential ledger's view: realized P&L per strategy, and balances from fills.
    let totals = host.totals();
    for (name, result) in books.per_strategy.iter_mut() {
        if let Some(pnl) = totals.get(&format!("strategy:{name}")) {
            result.pnl = Money::new(*pnl);
        }
    }
    rec.flush()?;
    log.flush()?;
    let next_seq = rec.next_seq;
    // The log writer's thread ends with the recorder; then the log is closed before the
    // desk returns, so that whoever opens the data dir next finds it free.
    drop(rec);
    log.close();
    let end_balances = Exchange::balances_now(&venue);
    let end_equity = books.value(&end_balances);
    let mut accounting_mismatches = Vec::new();
    let assets: std::collections::BTreeSet<Asset> =
        start_balances.iter().chain(&end_balances).map(|b| b.asset).collect();
    for asset in assets {
        let total =
            |bs: &[crypy_core::Balance]| bs.iter().find(|b| b.asset == asset).map_or(Money::ZERO, |b| b.total());
        let change = totals.get(&format!("asset:{asset}")).copied().unwrap_or_default()
            - reconciled_change.get(&asset).copied().unwrap_or_default().value();
        let expected = total(&start_balances).value() + change;
        if expected != total(&end_balances).value() {
            accounting_mismatches
                .push(format!("{asset}: start + fills − fees = {expected}, venue says {}", total(&end_balances)));
        }
    }
    Ok(SimReport {
        run,
        first_seq,
        last_seq: next_seq - 1,
        events: next_seq - first_seq,
        candles: candles_done,
        orders: books.orders,
        fills: books.fills,
        trusted: books.trusted,
        start_equity: books.start_equity.unwrap_or(end_equity),
        end_equity,
        fees: books.fees,
        max_drawdown: books.max_drawdown,
        positions: books.positions,
        per_strategy: books.per_strategy,
        end_balances,
        order_latencies,
        order_decisions,
        accounting_mismatches,
    })
}
