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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crypy_agents::society::{Parent, Society};

use crate::aggregates::Ledger;
use crate::host::Host;
use crypy_agents::strategy::Registry;
use crypy_agents::template::{Templates, FILES};
use crypy_core::event::{Balances, Markets, OrderAcknowledged, OrderFailed, TemplateChanged, TemplateScope};
use crypy_core::{
    AgentId, Asset, Candle, ClientOrderId, Envelope, Event, Money, NewEvent, OrderRequest, Pair, Price, Side,
};
use crypy_eventstore::{Durability, EventLog, Options};
use crypy_exchange::sim::{SimConfig, Simulator};
use crypy_exchange::Exchange;
use rust_decimal::prelude::ToPrimitive;
use thiserror::Error;

/// What a simulated run needs.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub data_dir: PathBuf,
    pub candles: Vec<Candle>,
    pub config: SimConfig,
    pub templates: Templates,
    /// The template files' text, recorded at the start of the run (defaults when `None`).
    pub template_texts: Option<[String; 3]>,
    /// Dataflow worker threads.
    pub workers: usize,
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SimError {
    #[error(transparent)]
    Log(#[from] crypy_eventstore::Error),
    #[error("simulator: {0}")]
    Config(#[from] crypy_exchange::sim::ConfigError),
    #[error("templates: {0}")]
    Templates(#[from] crypy_agents::template::TemplateError),
    #[error("exchange: {0}")]
    Exchange(#[from] crypy_exchange::ExchangeError),
    #[error("the data dir's secret: {0}")]
    Secret(std::io::Error),
    #[error("no candles to trade")]
    NoData,
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
    /// Assets whose end balance differs from start + fills − fees as the differential ledger
    /// computed it (empty: the accounting holds exactly).
    pub accounting_mismatches: Vec<String>,
}

impl SimReport {
    pub fn total_return(&self) -> f64 {
        if self.start_equity.is_zero() {
            0.0
        } else {
            (self.end_equity.value() / self.start_equity.value()).to_f64().unwrap_or(1.0) - 1.0
        }
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
    next_seq: u64,
    buffer: Vec<NewEvent>,
}

impl Recorder<'_> {
    fn push(&mut self, source: AgentId, event: Event, cause: Option<u64>, time: i64) -> u64 {
        let seq = self.next_seq;
        self.buffer.push(NewEvent { run: self.run, time, wall: wall_now(), source, cause, event });
        self.next_seq += 1;
        seq
    }

    /// Writes out a large buffer. Called only between inputs, so that an append (atomic in
    /// the log) never splits an input from the decisions it caused: a crash leaves whole
    /// inputs with all their decisions, or nothing of them.
    fn flush_if_large(&mut self) -> Result<(), SimError> {
        if self.buffer.len() >= 16_384 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SimError> {
        if !self.buffer.is_empty() {
            self.log.append(&self.buffer)?;
            self.buffer.clear();
        }
        Ok(())
    }
}

/// Tracks equity, drawdown and per-strategy results as events go by.
struct Books {
    trusted: Asset,
    last_close: BTreeMap<Pair, Price>,
    peak: f64,
    max_drawdown: f64,
    /// Which strategy each order serves (the same mapping the differential ledger uses).
    ledger: Ledger,
    per_strategy: BTreeMap<String, StrategyResult>,
    fees: Money,
    fills: u64,
    orders: u64,
    positions: u32,
}

impl Books {
    fn value(&self, balances: &[crypy_core::Balance]) -> Money {
        balances
            .iter()
            .map(|b| {
                if b.asset == self.trusted {
                    b.total()
                } else {
                    let price = self
                        .last_close
                        .iter()
                        .find(|(p, _)| p.base == b.asset && p.quote == self.trusted)
                        .map(|(_, c)| *c);
                    price.map_or(Money::ZERO, |p| Money::new(b.total().value() * p.value()))
                }
            })
            .sum()
    }

    fn see(&mut self, e: &Envelope) {
        self.ledger.updates(e);
        match &e.event {
            Event::Candle(c) => {
                self.last_close.insert(c.pair, c.close);
            }
            Event::OrderRequested(_) => self.orders += 1,
            Event::OrderFilled(f) | Event::OrderPartiallyFilled(f) => {
                self.fills += 1;
                self.fees += f.fee;
                let strategy = self.ledger.strategy_of(&f.client_id).map(str::to_owned);
                // P&L comes from the differential ledger at the end of the run.
                if let Some(s) = &strategy {
                    self.per_strategy.entry(s.clone()).or_default().fees += f.fee;
                }
                if f.side == Side::Sell && matches!(e.event, Event::OrderFilled(_)) {
                    self.positions += 1;
                    if let Some(s) = strategy {
                        self.per_strategy.entry(s).or_default().positions += 1;
                    }
                }
            }
            _ => {}
        }
    }

    fn mark(&mut self, equity: Money) {
        let e = equity.to_f64();
        if e > self.peak {
            self.peak = e;
        } else if self.peak > 0.0 {
            self.max_drawdown = self.max_drawdown.max(1.0 - e / self.peak);
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
}

impl DeskLoop<'_, '_> {
    /// Records one external event, lets the agents decide, records their decisions, and
    /// sends what the desk approved to the venue, whose answers are the next inputs.
    fn input(
        &mut self,
        event: Event,
        time: i64,
        cause: Option<u64>,
        sim: &mut Simulator,
        host: &mut Host,
    ) -> Result<(), SimError> {
        let mut queue = std::collections::VecDeque::from([(event, time, cause)]);
        while let Some((event, time, cause)) = queue.pop_front() {
            let seq = self.rec.push(self.desk, event.clone(), cause, time);
            let env = Envelope { seq, run: self.run, time, wall: 0, source: self.desk, cause, event };
            self.books.see(&env);
            (self.observe)(&env);
            let outs = host.handle(env.clone());
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
                self.books.see(&derived);
                (self.observe)(&derived);
            }
            for (client_id, approval) in approved {
                self.approvals.insert(client_id.clone(), approval);
                let Some(request) = self.requests.get(&client_id) else { continue };
                let event = match self.runtime.block_on(sim.place(request)) {
                    Ok(ack) => {
                        Event::OrderAcknowledged(OrderAcknowledged { client_id, venue_order_id: ack.venue_order_id })
                    }
                    Err(e) => {
                        Event::OrderFailed(OrderFailed { client_id, error: e.to_string(), retryable: e.is_retryable() })
                    }
                };
                queue.push_back((event, sim.now(), Some(approval)));
            }
        }
        self.rec.flush_if_large()
    }
}

/// Runs the simulated desk over `opts.candles`, calling `observe` with every event as it is
/// recorded and `progress` with (candles done, candles in all).
///
/// # Errors
/// Log, configuration, template or secret problems; the log keeps what was recorded.
pub fn run_sim(
    opts: SimOptions,
    mut observe: impl FnMut(&Envelope),
    mut progress: impl FnMut(u64, u64),
) -> Result<SimReport, SimError> {
    if opts.candles.is_empty() {
        return Err(SimError::NoData);
    }
    let total = opts.candles.len() as u64;
    let secret = crate::secret::load_or_create(&opts.data_dir).map_err(SimError::Secret)?;
    let log = EventLog::open(
        &opts.data_dir,
        Options {
            durability: Durability::Interval(200),
            lock_wait: std::time::Duration::from_secs(3),
            ..Options::default()
        },
    )?;
    let mut sim = Simulator::new(opts.config.clone(), opts.candles)?;
    let desk = sim.desk();
    let registry = Registry::default();
    let mut host = Host::new(Society::new(desk, opts.templates.clone(), &registry, secret)?, opts.workers);
    let run = log.start_run()?;
    let first_seq = log.last_seq() + 1;
    let rec = Recorder { log: &log, run, next_seq: first_seq, buffer: Vec::new() };
    let books = Books {
        trusted: opts.templates.desk.trusted_asset,
        last_close: BTreeMap::new(),
        peak: 0.0,
        max_drawdown: 0.0,
        ledger: Ledger::default(),
        per_strategy: BTreeMap::new(),
        fees: Money::ZERO,
        fills: 0,
        orders: 0,
        positions: 0,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build().map_err(SimError::Secret)?;
    let mut desk_loop = DeskLoop {
        desk,
        run,
        rec,
        books,
        requests: BTreeMap::new(),
        approvals: BTreeMap::new(),
        runtime,
        observe: &mut observe,
    };
    let now = sim.now();
    for (i, (key, default)) in FILES.iter().enumerate() {
        let text = opts.template_texts.as_ref().map_or(default.to_string(), |t| t[i].clone());
        let event = Event::TemplateChanged(TemplateChanged {
            scope: TemplateScope::Desk,
            key: key.to_string(),
            old: None,
            new: Some(text),
            reason: format!("templates of run {run}"),
        });
        desk_loop.input(event, now, None, &mut sim, &mut host)?;
    }
    let capabilities = desk_loop.runtime.block_on(sim.capabilities())?;
    let markets = desk_loop.runtime.block_on(sim.markets())?;
    let balances = desk_loop.runtime.block_on(sim.balances())?;
    desk_loop.input(Event::Capabilities(capabilities), now, None, &mut sim, &mut host)?;
    desk_loop.input(Event::Markets(Markets { markets }), now, None, &mut sim, &mut host)?;
    desk_loop.input(Event::Balances(Balances { balances }), now, None, &mut sim, &mut host)?;

    let start_balances = sim.balances_now();
    let mut start_equity: Option<Money> = None;
    let mut candles_done = 0u64;
    while let Some(venue) = desk_loop.runtime.block_on(sim.next_event())? {
        let cause = match &venue.event {
            Event::OrderFilled(f) | Event::OrderPartiallyFilled(f) => desk_loop.approvals.get(&f.client_id).copied(),
            Event::OrderCanceled(c) => desk_loop.approvals.get(&c.client_id).copied(),
            _ => None,
        };
        let is_candle = matches!(venue.event, Event::Candle(_));
        desk_loop.input(venue.event, venue.time, cause, &mut sim, &mut host)?;
        if is_candle {
            let equity = desk_loop.books.value(&sim.balances_now());
            start_equity.get_or_insert(equity);
            desk_loop.books.mark(equity);
            candles_done += 1;
            if candles_done.is_multiple_of(1000) || candles_done == total {
                progress(candles_done, total);
            }
        }
    }
    let DeskLoop { mut rec, mut books, .. } = desk_loop;
    // The differential ledger's view: realized P&L per strategy, and balances from fills.
    let totals = host.totals();
    for (name, result) in books.per_strategy.iter_mut() {
        if let Some(pnl) = totals.get(&format!("strategy:{name}")) {
            result.pnl = Money::new(*pnl);
        }
    }
    rec.flush()?;
    log.flush()?;
    let end_balances = sim.balances_now();
    let end_equity = books.value(&end_balances);
    let mut accounting_mismatches = Vec::new();
    let assets: std::collections::BTreeSet<Asset> =
        start_balances.iter().chain(&end_balances).map(|b| b.asset).collect();
    for asset in assets {
        let total =
            |bs: &[crypy_core::Balance]| bs.iter().find(|b| b.asset == asset).map_or(Money::ZERO, |b| b.total());
        let change = totals.get(&format!("asset:{asset}")).copied().unwrap_or_default();
        let expected = total(&start_balances).value() + change;
        if expected != total(&end_balances).value() {
            accounting_mismatches
                .push(format!("{asset}: start + fills − fees = {expected}, venue says {}", total(&end_balances)));
        }
    }
    Ok(SimReport {
        run,
        first_seq,
        last_seq: rec.next_seq - 1,
        events: rec.next_seq - first_seq,
        candles: candles_done,
        orders: books.orders,
        fills: books.fills,
        trusted: books.trusted,
        start_equity: start_equity.unwrap_or(end_equity),
        end_equity,
        fees: books.fees,
        max_drawdown: books.max_drawdown,
        positions: books.positions,
        per_strategy: books.per_strategy,
        end_balances,
        accounting_mismatches,
    })
}
