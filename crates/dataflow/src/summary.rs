//! A run's results: kept by the desk as it trades ([`Books`]), and read back from a log
//! afterwards ([`summarize`]) by the same rules, for `crypy compare` and reports.

use std::collections::BTreeMap;

use crypy_core::{Asset, Envelope, Event, Money, Pair, Price, Side};
use rust_decimal::prelude::ToPrimitive;

use crate::aggregates::Ledger;
use crate::sim::StrategyResult;

/// Tracks equity, drawdown and per-strategy results as events go by.
pub(crate) struct Books {
    pub(crate) trusted: Asset,
    /// At the first candle.
    pub(crate) start_equity: Option<Money>,
    pub(crate) last_close: BTreeMap<Pair, Price>,
    pub(crate) candles: crate::host::CandleClock,
    pub(crate) peak: f64,
    pub(crate) max_drawdown: f64,
    /// Which strategy each order serves (the same mapping the differential ledger uses).
    pub(crate) ledger: Ledger,
    pub(crate) per_strategy: BTreeMap<String, StrategyResult>,
    pub(crate) fees: Money,
    pub(crate) fills: u64,
    pub(crate) orders: u64,
    pub(crate) positions: u32,
}

impl Books {
    pub(crate) fn new(trusted: Asset) -> Self {
        Books {
            trusted,
            start_equity: None,
            last_close: BTreeMap::new(),
            candles: crate::host::CandleClock::default(),
            peak: 0.0,
            max_drawdown: 0.0,
            ledger: Ledger::default(),
            per_strategy: BTreeMap::new(),
            fees: Money::ZERO,
            fills: 0,
            orders: 0,
            positions: 0,
        }
    }

    pub(crate) fn value(&self, balances: &[crypy_core::Balance]) -> Money {
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

    /// Takes one event (the desk's books, which need no ledger updates).
    pub(crate) fn see(&mut self, e: &Envelope) {
        self.ledger.learn(&e.event);
        self.book(e);
    }

    /// Takes one event; returns the ledger's balance and P&L updates for it.
    pub(crate) fn see_with_updates(&mut self, e: &Envelope) -> Vec<(String, i128)> {
        let updates = self.ledger.updates(&e.event);
        self.book(e);
        updates
    }

    fn book(&mut self, e: &Envelope) {
        match &e.event {
            // A repeated or stale candle does not move prices back (as for the agents).
            Event::Candle(c) if self.candles.advances(c) => match self.last_close.get_mut(&c.pair) {
                Some(close) => *close = c.close,
                None => drop(self.last_close.insert(c.pair, c.close)),
            },
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

    pub(crate) fn mark(&mut self, equity: Money) {
        let e = equity.to_f64();
        if e > self.peak {
            self.peak = e;
        } else if self.peak > 0.0 {
            self.max_drawdown = self.max_drawdown.max(1.0 - e / self.peak);
        }
    }
}

/// What a run did, read from its log.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub run: u32,
    pub events: u64,
    /// Candles that moved a pair forward (repeated or stale ones are not progress).
    pub candles: u64,
    pub orders: u64,
    pub fills: u64,
    pub positions: u32,
    pub trusted: Asset,
    pub start_equity: Money,
    pub end_equity: Money,
    pub fees: Money,
    pub max_drawdown: f64,
    pub per_strategy: BTreeMap<String, StrategyResult>,
    /// Whether the run recorded a venue balance to start from (a run killed before that has
    /// no equity to speak of).
    pub has_balances: bool,
    /// What charts draw.
    pub series: RunSeries,
    /// Every variant each pair's traders proposed, and what came of it.
    pub scoreboard: BTreeMap<(Pair, String), VariantScore>,
}

/// A pair's record with one strategy variant over a run: the traders' scoreboard.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VariantScore {
    pub proposed: u32,
    /// Proposals its holder granted capital.
    pub accepted: u32,
    /// Positions closed.
    pub positions: u32,
    pub wins: u32,
    pub losses: u32,
    /// Realized P&L of the closed positions in the quote asset, fees included (learning and
    /// reports; the exact figures are the ledger's).
    pub pnl: f64,
    /// Largest fall of that realized P&L from its running peak, in the quote asset.
    pub drawdown: f64,
    peak: f64,
}

/// The positions of a log's allocations, each from its first fill to the sell that closes it:
/// what the traders' scoreboard and the desk's lifetimes both count.
#[derive(Debug, Default)]
struct PositionBook {
    /// Each order's (run, allocation) and pair.
    orders: BTreeMap<crypy_core::ClientOrderId, ((u32, u64), Pair)>,
    /// Quote-asset flow of each open position so far, fees included.
    flows: BTreeMap<(u32, u64), f64>,
}

/// A position closed: its (run, allocation), pair and realized P&L in the quote asset.
struct ClosedPosition {
    allocation: (u32, u64),
    pair: Pair,
    pnl: f64,
}

impl PositionBook {
    fn see(&mut self, e: &Envelope) -> Option<ClosedPosition> {
        match &e.event {
            Event::OrderRequested(r) => {
                if let Some(a) = r.allocation {
                    self.orders.insert(r.client_id.clone(), ((e.run, a), r.pair));
                }
                None
            }
            Event::OrderFilled(f) | Event::OrderPartiallyFilled(f) => {
                let &(allocation, pair) = self.orders.get(&f.client_id)?;
                let value = (f.price.value() * f.qty.value()).to_f64().unwrap_or(0.0);
                let fee = f.fee.value().to_f64().unwrap_or(0.0);
                let flow = self.flows.entry(allocation).or_default();
                *flow += if f.side == Side::Buy { -(value + fee) } else { value - fee };
                if f.side != Side::Sell || !matches!(e.event, Event::OrderFilled(_)) {
                    return None;
                }
                let pnl = self.flows.remove(&allocation).unwrap_or_default();
                Some(ClosedPosition { allocation, pair, pnl })
            }
            _ => None,
        }
    }
}

/// Builds the scoreboard from a run's events.
#[derive(Debug, Default)]
struct Scorer {
    proposals: BTreeMap<u64, (Pair, String)>,
    allocations: BTreeMap<(u32, u64), (Pair, String)>,
    positions: PositionBook,
    board: BTreeMap<(Pair, String), VariantScore>,
}

impl Scorer {
    fn see(&mut self, e: &Envelope) {
        match &e.event {
            Event::StrategyProposed(p) => {
                let key = (p.pair, p.strategy.clone());
                self.board.entry(key.clone()).or_default().proposed += 1;
                self.proposals.insert(p.proposal, key);
            }
            Event::AllocationGranted(a) => {
                if let Some(key) = self.proposals.get(&a.proposal) {
                    self.board.entry(key.clone()).or_default().accepted += 1;
                    self.allocations.insert((e.run, a.id), key.clone());
                }
            }
            _ => {}
        }
        let Some(closed) = self.positions.see(e) else { return };
        let Some(key) = self.allocations.get(&closed.allocation) else { return };
        let score = self.board.entry(key.clone()).or_default();
        score.positions += 1;
        if closed.pnl > 0.0 {
            score.wins += 1;
        } else {
            score.losses += 1;
        }
        score.pnl += closed.pnl;
        score.peak = score.peak.max(score.pnl);
        score.drawdown = score.drawdown.max(score.peak - score.pnl);
    }
}

/// A run's results over time, for charts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSeries {
    /// (time, equity in the trusted asset) at every candle that moves a pair forward.
    pub equity: Vec<(i64, f64)>,
    /// (close time, close) of each pair's candles.
    pub closes: BTreeMap<Pair, Vec<(i64, f64)>>,
    /// Every fill: (time, pair, side, price, client order id).
    pub fills: Vec<(i64, Pair, Side, f64, String)>,
    /// Every template change: (time, which template and key, reason).
    pub template_changes: Vec<(i64, String, String)>,
}

impl RunSummary {
    pub fn total_return(&self) -> f64 {
        total_return(self.start_equity, self.end_equity)
    }
}

/// `end` over `start`, minus one; zero from nothing.
pub fn total_return(start: Money, end: Money) -> f64 {
    if start.is_zero() {
        0.0
    } else {
        (end.value() / start.value()).to_f64().unwrap_or(1.0) - 1.0
    }
}

/// The results of one run from its events in log order, by the desk's own rules: equity is
/// the balances (the venue's at the start, plus every fill) valued at the last close of each
/// pair in the trusted asset (the run's desk template's), marked at every candle that moves
/// a pair forward; realized P&L per strategy from the differential ledger's rule.
pub fn summarize(run: u32, events: impl IntoIterator<Item = Envelope>) -> RunSummary {
    let mut books: Option<Books> = None;
    let mut balances: BTreeMap<Asset, Money> = BTreeMap::new();
    let mut totals: BTreeMap<String, i128> = BTreeMap::new();
    let mut trusted = crypy_agents::template::Templates::default().desk.trusted_asset;
    let (mut count, mut candles, mut has_balances) = (0u64, 0u64, false);
    let mut series = RunSeries::default();
    let mut scorer = Scorer::default();
    for e in events {
        count += 1;
        scorer.see(&e);
        match &e.event {
            Event::TemplateChanged(t) => {
                let scope = match &t.scope {
                    crypy_core::event::TemplateScope::Desk => "desk".to_string(),
                    crypy_core::event::TemplateScope::Holder(a) => format!("holder {a}"),
                    crypy_core::event::TemplateScope::Trader(p) => format!("trader {p}"),
                };
                series.template_changes.push((e.time, format!("{scope}: {}", t.key), t.reason.clone()));
            }
            Event::OrderFilled(f) | Event::OrderPartiallyFilled(f) => {
                series.fills.push((e.time, f.pair, f.side, f.price.to_f64(), f.client_id.to_string()));
            }
            _ => {}
        }
        if let Event::TemplateChanged(t) = &e.event {
            if t.scope == crypy_core::event::TemplateScope::Desk && t.key == crypy_agents::template::FILES[0].0 {
                if let Some(desk) = t.new.as_deref().and_then(|text| {
                    crypy_agents::template::DeskTemplate::parse(crypy_agents::template::FILES[0].0, text).ok()
                }) {
                    trusted = desk.trusted_asset;
                }
            }
        }
        let b = books.get_or_insert_with(|| Books::new(trusted));
        let advances = matches!(&e.event, Event::Candle(c) if b.candles.is_newer(c));
        for (key, amount) in b.see_with_updates(&e) {
            *totals.entry(key).or_default() += amount;
        }
        match &e.event {
            Event::Balances(bs) => {
                has_balances = true;
                balances = bs.balances.iter().map(|x| (x.asset, x.total())).collect();
            }
            Event::OrderFilled(f) | Event::OrderPartiallyFilled(f) => {
                for (asset, amount) in f.balance_changes() {
                    *balances.entry(asset).or_default() += amount;
                }
            }
            _ => {}
        }
        if advances {
            candles += 1;
            if let Event::Candle(c) = &e.event {
                series.closes.entry(c.pair).or_default().push((c.close_time(), c.close.to_f64()));
            }
            let now: Vec<crypy_core::Balance> = balances
                .iter()
                .map(|(asset, total)| crypy_core::Balance { asset: *asset, free: *total, reserved: Money::ZERO })
                .collect();
            let equity = b.value(&now);
            b.start_equity.get_or_insert(equity);
            b.mark(equity);
            series.equity.push((e.time, equity.to_f64()));
        }
    }
    let mut b = books.unwrap_or_else(|| Books::new(trusted));
    for (name, result) in b.per_strategy.iter_mut() {
        if let Some(pnl) = totals.get(&format!("strategy:{name}")).and_then(|v| crate::aggregates::from_fixed(*v)) {
            result.pnl = Money::new(pnl);
        }
    }
    let end: Vec<crypy_core::Balance> = balances
        .iter()
        .map(|(asset, total)| crypy_core::Balance { asset: *asset, free: *total, reserved: Money::ZERO })
        .collect();
    let end_equity = b.value(&end);
    RunSummary {
        run,
        events: count,
        candles,
        orders: b.orders,
        fills: b.fills,
        positions: b.positions,
        trusted: b.trusted,
        start_equity: b.start_equity.unwrap_or(end_equity),
        end_equity,
        fees: b.fees,
        max_drawdown: b.max_drawdown,
        per_strategy: b.per_strategy,
        has_balances,
        series,
        scoreboard: scorer.board,
    }
}

/// Each holder asset's realized results per desk lifetime (run), read from a log as it goes
/// by: the evidence of the desk's learning rule ([`crypy_agents::society::learn_divert`]).
/// A position counts in the lifetime that closed it, in its pair's quote asset (the asset of
/// the holder that funded it).
#[derive(Debug, Default)]
pub struct Lifetimes {
    positions: PositionBook,
    ends: BTreeMap<u32, i64>,
    results: BTreeMap<Asset, BTreeMap<u32, (u32, f64)>>,
}

impl Lifetimes {
    pub fn see(&mut self, e: &Envelope) {
        if e.run == 0 {
            return;
        }
        let end = self.ends.entry(e.run).or_insert(e.time);
        *end = (*end).max(e.time);
        if let Some(closed) = self.positions.see(e) {
            let result = self.results.entry(closed.pair.quote).or_default().entry(closed.allocation.0).or_default();
            result.0 += 1;
            result.1 += closed.pnl;
        }
    }

    /// Every asset's lifetimes with closed positions, in run order.
    pub fn lifetimes(&self) -> BTreeMap<Asset, Vec<crypy_agents::society::Lifetime>> {
        self.results
            .iter()
            .map(|(asset, runs)| {
                let lives = runs
                    .iter()
                    .map(|(run, (positions, pnl))| crypy_agents::society::Lifetime {
                        run: *run,
                        end: self.ends.get(run).copied().unwrap_or(0),
                        positions: *positions,
                        pnl: *pnl,
                    })
                    .collect();
                (*asset, lives)
            })
            .collect()
    }
}
