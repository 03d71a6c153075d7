//! Following a pair bar by bar: every variant of the grid trades along as the bars arrive,
//! so that scoring the whole grid on the look-back window costs a few operations per
//! variant instead of a simulation of the window per variant.
//!
//! **What it scores.** For each variant, the window simulation [`crate::evaluate`] describes
//! (same fill rule, same sizing, same metrics), started flat on the window's first bar with
//! one rule added: a variant enters only on a fresh signal inside the window (it is flat at
//! a bar and says long at the next), not because it already said long when the window
//! opened — a window then never starts mid-position. Quantities are not truncated to the
//! market's step, so every result scales with the capital: results are fractions of it.
//! With that, a window's result is a chain of whole trades, each independent of the capital
//! it started with, and the chain can slide: [`Tracker::scores`] equals
//! [`crate::evaluate::simulate`] run on the window with those signals, up to rounding (the
//! tests check both agree to 1e-9).
//!
//! **How.** Indicators are [`Stream`]s (bit for bit what the batch computation gives on the
//! whole series). Each variant keeps its open trade's running summary and a sliding window
//! of its closed trades' summaries, aggregated with two stacks (amortised O(1) per trade in
//! and out). A summary is a monoid — growth, peak, trough, worst fall from a peak, sums of
//! per-bar returns and of their squares, fees, counts — so the window's metrics are one
//! combination per variant.

use std::collections::BTreeMap;
use std::sync::Arc;

use crypy_core::{Event, Pair};
use rust_decimal::prelude::ToPrimitive;

use crate::evaluate::{FillRules, Score};
use crate::indicator::{IndicatorKey, Stream};
use crate::strategy::{Strategy, Variant};

/// What a run of bars did to equity, relative to the equity it started with.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Summary {
    /// Equity at the end.
    growth: f64,
    /// Highest and lowest equity, the start included.
    peak: f64,
    trough: f64,
    /// The lowest ratio of equity to an earlier peak (1 when it never fell).
    worst: f64,
    /// Sums of the per-bar returns and of their squares.
    sum: f64,
    sum_sq: f64,
    /// Fees paid, as a fraction of the starting equity.
    fees: f64,
    trades: u32,
    closed: u32,
    wins: u32,
}

impl Summary {
    const EMPTY: Summary = Summary {
        growth: 1.0,
        peak: 1.0,
        trough: 1.0,
        worst: 1.0,
        sum: 0.0,
        sum_sq: 0.0,
        fees: 0.0,
        trades: 0,
        closed: 0,
        wins: 0,
    };

    /// `self` followed by `next`.
    fn then(&self, next: &Summary) -> Summary {
        let g = self.growth;
        Summary {
            growth: g * next.growth,
            peak: self.peak.max(g * next.peak),
            trough: self.trough.min(g * next.trough),
            worst: self.worst.min(next.worst).min(g * next.trough / self.peak),
            sum: self.sum + next.sum,
            sum_sq: self.sum_sq + next.sum_sq,
            fees: self.fees + g * next.fees,
            trades: self.trades + next.trades,
            closed: self.closed + next.closed,
            wins: self.wins + next.wins,
        }
    }

    /// One more bar, ending at `level` (relative to the summary's start); `previous` is the
    /// level the bar started from.
    #[inline(always)]
    fn step(&mut self, previous: f64, level: f64) {
        let r = level / previous - 1.0;
        self.sum += r;
        self.sum_sq += r * r;
        if level > self.peak {
            self.peak = level;
        } else {
            if level < self.trough {
                self.trough = level;
            }
            // Divide only when this may be the worst fall yet.
            if level < self.peak * self.worst {
                self.worst = self.worst.min(level / self.peak);
            }
        }
        self.growth = level;
    }
}

/// A sliding window of closed trades, oldest first: two stacks, the front one holding for
/// each trade the summary of it and every newer trade in the front.
#[derive(Clone, Debug, Default)]
struct TradeWindow {
    /// (entry bar, summary from this trade to the newest of the front); oldest last.
    front: Vec<(u64, Summary)>,
    /// (entry bar, the trade's own summary); newest last.
    back: Vec<(u64, Summary)>,
    back_total: Option<Summary>,
}

impl TradeWindow {
    /// The entry bar of the oldest trade held, `u64::MAX` when none.
    fn oldest(&self) -> u64 {
        match self.front.last() {
            Some((entry, _)) => *entry,
            None => self.back.first().map_or(u64::MAX, |(entry, _)| *entry),
        }
    }

    fn push(&mut self, entry: u64, trade: Summary) {
        self.back_total = Some(match &self.back_total {
            Some(total) => total.then(&trade),
            None => trade,
        });
        self.back.push((entry, trade));
    }

    /// Drops the trades entered before `first_entry`.
    fn retire_before(&mut self, first_entry: u64) {
        loop {
            if self.front.is_empty() {
                if self.back.first().is_none_or(|(entry, _)| *entry >= first_entry) {
                    return;
                }
                let mut newer: Option<Summary> = None;
                for (entry, trade) in self.back.drain(..).rev() {
                    let total = match &newer {
                        Some(n) => trade.then(n),
                        None => trade,
                    };
                    newer = Some(total);
                    self.front.push((entry, total));
                }
                self.back_total = None;
            }
            match self.front.last() {
                Some((entry, _)) if *entry < first_entry => {
                    self.front.pop();
                }
                _ => return,
            }
        }
    }

    fn total(&self) -> Summary {
        let front = self.front.last().map_or(Summary::EMPTY, |(_, s)| *s);
        match &self.back_total {
            Some(back) => front.then(back),
            None => front,
        }
    }
}

/// A position one variant holds, in units of the cash that entered it.
#[derive(Clone, Copy, Debug)]
struct OpenTrade {
    entry: u64,
    qty: f64,
    /// Cash left over after the buy (the order was sized at the decision's close).
    cash: f64,
    level: f64,
    summary: Summary,
}

/// What one variant needs at every bar, kept small so that a grid's worth stays in the
/// first-level cache; the rest lives in the tracker's other per-variant vectors.
#[derive(Clone, Copy, Debug)]
struct Follower {
    /// The two series a crossing variant compares, read without a call.
    above: u32,
    below: u32,
    crossing: bool,
    /// What it said after the last bar.
    long: bool,
    /// Whether it holds a position (in the tracker's `trades`).
    open: bool,
    /// The entry bar of its oldest closed trade in the window, `u64::MAX` when none.
    oldest_closed: u64,
}

/// How a variant that is not a plain crossing decides.
#[derive(Clone, Debug)]
struct Rule {
    strategy: usize,
    /// Indices into the tracker's streams, in the order the strategy needs them.
    inputs: Vec<usize>,
}

/// Every variant of a grid, following one pair; see the module documentation.
#[derive(Clone)]
pub struct Tracker {
    strategies: Arc<[Box<dyn Strategy>]>,
    variants: Vec<Variant>,
    followers: Vec<Follower>,
    /// Per variant: its position (meaningful while `open`), its rule, its closed trades.
    trades: Vec<OpenTrade>,
    rules_of: Vec<Rule>,
    windows: Vec<TradeWindow>,
    streams: Vec<Stream>,
    latest: Vec<f64>,
    look_back: usize,
    rules: FillRules,
    bars: u64,
    last_close: f64,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("variants", &self.variants.len())
            .field("bars", &self.bars)
            .field("look_back", &self.look_back)
            .finish_non_exhaustive()
    }
}

impl Tracker {
    /// Follows every variant of `strategies`, scoring windows of `look_back` bars under
    /// `rules` (its `qty_step` and `capital` are not used: see the module documentation).
    pub fn new(strategies: Arc<[Box<dyn Strategy>]>, look_back: usize, rules: FillRules) -> Self {
        let mut keys: BTreeMap<IndicatorKey, usize> = BTreeMap::new();
        let mut streams = Vec::new();
        let mut variants = Vec::new();
        let mut followers = Vec::new();
        let mut rules_of = Vec::new();
        for (index, strategy) in strategies.iter().enumerate() {
            for variant in strategy.variants() {
                let mut slot = |key: IndicatorKey| {
                    *keys.entry(key).or_insert_with(|| {
                        streams.push(Stream::new(key));
                        streams.len() - 1
                    })
                };
                let inputs: Vec<usize> = strategy.needs(variant).into_iter().map(&mut slot).collect();
                let crossing = strategy.crossing(variant).map(|(above, below)| (slot(above), slot(below)));
                variants.push(variant.clone());
                let (above, below) = crossing.map_or((0, 0), |(a, b)| (a as u32, b as u32));
                followers.push(Follower {
                    above,
                    below,
                    crossing: crossing.is_some(),
                    long: false,
                    open: false,
                    oldest_closed: u64::MAX,
                });
                rules_of.push(Rule { strategy: index, inputs });
            }
        }
        let latest = vec![f64::NAN; streams.len()];
        let empty = OpenTrade { entry: 0, qty: 0.0, cash: 0.0, level: 0.0, summary: Summary::EMPTY };
        Tracker {
            strategies,
            trades: vec![empty; variants.len()],
            windows: vec![TradeWindow::default(); variants.len()],
            rules_of,
            variants,
            followers,
            streams,
            latest,
            look_back: look_back.max(2),
            rules,
            bars: 0,
            last_close: f64::NAN,
        }
    }

    /// The grid, in order.
    pub fn variants(&self) -> &[Variant] {
        &self.variants
    }

    /// Bars seen so far.
    pub fn bars(&self) -> u64 {
        self.bars
    }

    /// Bars in the current window.
    pub fn window(&self) -> usize {
        (self.bars as usize).min(self.look_back)
    }

    /// Whether variant `index` wants to be long after the last bar.
    pub fn wants_long(&self, index: usize) -> bool {
        self.followers[index].long
    }

    /// Every variant's signal after the last bar, as a [`BarView::wants`] bit set, into
    /// `wants`, whose room is reused.
    pub fn wants_into(&self, wants: &mut Vec<u64>) {
        wants.clear();
        wants.resize(self.followers.len().div_ceil(64), 0);
        for (i, f) in self.followers.iter().enumerate() {
            wants[i / 64] |= u64::from(f.long) << (i % 64);
        }
    }

    /// Takes the next bar. Prices must be finite and positive (the log's candles are).
    pub fn push(&mut self, open: f64, close: f64) {
        let t = self.bars;
        let (buy, sell) = (open * (1.0 + self.rules.slippage), open * (1.0 - self.rules.slippage));
        let fee = self.rules.fee_rate;
        let sizing_price = self.last_close * (1.0 + self.rules.slippage) * (1.0 + fee);
        for (stream, latest) in self.streams.iter_mut().zip(&mut self.latest) {
            *latest = stream.push(close);
        }
        let latest = &self.latest;
        let first_entry = (t + 2).saturating_sub(self.look_back as u64);
        for (i, f) in self.followers.iter_mut().enumerate() {
            // The order decided at the last close executes at this open; then this bar's
            // close is the next decision.
            if t > 0 && (f.long || f.open) {
                Self::execute(f, &mut self.trades[i], &mut self.windows[i], t, buy, sell, close, fee, sizing_price);
            }
            f.long = if f.crossing {
                latest[f.above as usize] > latest[f.below as usize]
            } else {
                let rule = &self.rules_of[i];
                let values: Vec<f64> = rule.inputs.iter().map(|i| latest[*i]).collect();
                self.strategies[rule.strategy].wants_now(&self.variants[i], &values, f.long)
            };
            if f.oldest_closed < first_entry {
                let window = &mut self.windows[i];
                window.retire_before(first_entry);
                f.oldest_closed = window.oldest();
            }
        }
        self.bars += 1;
        self.last_close = close;
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn execute(
        f: &mut Follower,
        trade: &mut OpenTrade,
        window: &mut TradeWindow,
        t: u64,
        buy: f64,
        sell: f64,
        close: f64,
        fee: f64,
        sizing_price: f64,
    ) {
        match (f.open, f.long) {
            (false, false) => {}
            (true, true) => {
                let level = trade.cash + trade.qty * close;
                trade.summary.step(trade.level, level);
                trade.level = level;
            }
            (false, true) => {
                let mut qty = 1.0 / sizing_price;
                if qty * buy * (1.0 + fee) > 1.0 {
                    qty = 1.0 / (buy * (1.0 + fee));
                }
                let value = qty * buy;
                let mut summary = Summary { trades: 1, fees: value * fee, ..Summary::EMPTY };
                let cash = 1.0 - value * (1.0 + fee);
                let level = cash + qty * close;
                summary.step(1.0, level);
                *trade = OpenTrade { entry: t, qty, cash, level, summary };
                f.open = true;
            }
            (true, false) => {
                let proceeds = trade.qty * sell;
                let paid = proceeds * fee;
                let cash = trade.cash + proceeds - paid;
                let mut summary = trade.summary;
                summary.step(trade.level, cash);
                summary.fees += paid;
                summary.closed = 1;
                summary.wins = u32::from(cash > 1.0);
                f.open = false;
                window.push(trade.entry, summary);
                f.oldest_closed = f.oldest_closed.min(trade.entry);
            }
        }
    }

    /// Every variant's score on the current window, in grid order.
    pub fn scores(&self, periods_per_year: f64) -> Vec<Score> {
        let mut scores = Vec::new();
        self.scores_into(periods_per_year, &mut scores);
        scores
    }

    /// [`scores`](Self::scores) into `scores`, whose room is reused.
    pub fn scores_into(&self, periods_per_year: f64, scores: &mut Vec<Score>) {
        let first_entry = (self.bars + 1).saturating_sub(self.look_back as u64);
        let steps = self.window().saturating_sub(1) as f64;
        scores.clear();
        scores.extend(self.followers.iter().zip(&self.windows).zip(&self.trades).map(|((f, window), trade)| {
            let mut total = window.total();
            if f.open && trade.entry >= first_entry {
                total = total.then(&trade.summary);
            }
            Score {
                total_return: total.growth - 1.0,
                sharpe: crate::evaluate::sharpe(total.sum, total.sum_sq, steps, periods_per_year),
                max_drawdown: 1.0 - total.worst,
                win_rate: if total.closed > 0 { f64::from(total.wins) / f64::from(total.closed) } else { 0.0 },
                trades: total.trades,
                fees: total.fees,
            }
        }));
    }
}

/// What the traders of one pair learn from one bar: every variant's signal and, on an
/// evaluation bar, the grid's scores on the window.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BarView {
    pub pair: Pair,
    /// Bit `i % 64` of word `i / 64`: variant `i` wants to be long after this bar.
    pub wants: Vec<u64>,
    /// On evaluation bars: the window's length in bars and every variant's score, in grid order.
    pub scores: Option<(u32, Vec<Score>)>,
}

impl BarView {
    pub fn wants_long(&self, variant: usize) -> bool {
        wants_bit(&self.wants, variant)
    }
}

/// Variant `i`'s signal in a [`BarView::wants`] bit set.
pub fn wants_bit(wants: &[u64], i: usize) -> bool {
    wants.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
}

/// Kraken's base taker fee, assumed until the venue reports its capabilities.
pub const DEFAULT_TAKER_FEE: rust_decimal::Decimal = rust_decimal::Decimal::from_parts(26, 0, 0, false, 4);

/// The traders' shared eyes on the market: a [`Tracker`] per pair, created at the pair's
/// first candle. On the first bar closing at or after each multiple of `evaluate_every`
/// minutes (every bar when bars are longer), once the window is at least half full, a bar's
/// view carries the grid's scores. Fees come from the venue's capabilities.
#[derive(Clone, Debug)]
pub struct Watch {
    strategies: Arc<[Box<dyn Strategy>]>,
    look_back: usize,
    /// Milliseconds.
    evaluate_every: i64,
    fee_rate: f64,
    trackers: BTreeMap<Pair, Tracker>,
    /// Room of views the caller handed back ([`Watch::recycle`]), for the next views: a view
    /// per candle was two allocations per bar in each society.
    spare_wants: Vec<u64>,
    spare_scores: Vec<Score>,
}

impl Watch {
    pub fn new(strategies: Arc<[Box<dyn Strategy>]>, look_back: usize, evaluate_every_minutes: u32) -> Self {
        Watch {
            strategies,
            look_back,
            evaluate_every: i64::from(evaluate_every_minutes.max(1)) * 60_000,
            fee_rate: DEFAULT_TAKER_FEE.to_f64().unwrap_or_default(),
            trackers: BTreeMap::new(),
            spare_wants: Vec::new(),
            spare_scores: Vec::new(),
        }
    }

    /// Takes back the room of a view the caller is done with.
    pub fn recycle(&mut self, view: BarView) {
        self.spare_wants = view.wants;
        if let Some((_, scores)) = view.scores {
            self.spare_scores = scores;
        }
    }

    /// Takes one input event: capabilities set the fee, a candle moves its pair's tracker
    /// and yields the bar's view. Anything else is ignored.
    pub fn see(&mut self, event: &Event) -> Option<BarView> {
        match event {
            Event::Capabilities(c) => {
                self.fee_rate = c.taker_fee.to_f64().unwrap_or(self.fee_rate);
                for tracker in self.trackers.values_mut() {
                    tracker.rules.fee_rate = self.fee_rate;
                }
                None
            }
            Event::Candle(c) => {
                let (strategies, look_back) = (&self.strategies, self.look_back);
                let rules = FillRules { fee_rate: self.fee_rate, slippage: 0.0, qty_step: 0.0, capital: 1.0 };
                let tracker =
                    self.trackers.entry(c.pair).or_insert_with(|| Tracker::new(strategies.clone(), look_back, rules));
                tracker.push(c.open.to_f64(), c.close.to_f64());
                let mut wants = std::mem::take(&mut self.spare_wants);
                tracker.wants_into(&mut wants);
                let window = tracker.window();
                let closes_at = c.open_time + c.interval.millis();
                let due = closes_at.rem_euclid(self.evaluate_every) < c.interval.millis() && window * 2 >= look_back;
                let periods_per_year = 365.0 * 86_400.0 / f64::from(c.interval.secs().max(1));
                let scores = due.then(|| {
                    let mut scores = std::mem::take(&mut self.spare_scores);
                    tracker.scores_into(periods_per_year, &mut scores);
                    (window as u32, scores)
                });
                Some(BarView { pair: c.pair, wants, scores })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::{simulate, Bars};
    use crate::strategy::{Registry, StrategySpec};
    use proptest::prelude::{proptest, ProptestConfig};
    use proptest::strategy::Strategy as _;

    fn grid(specs: &[&str]) -> Arc<[Box<dyn Strategy>]> {
        let registry = Registry::default();
        specs.iter().map(|s| registry.build(&StrategySpec::parse(s).unwrap()).unwrap()).collect::<Vec<_>>().into()
    }

    /// Each variant's signals over the whole series, the batch way.
    fn signals(strategies: &[Box<dyn Strategy>], closes: &[f64]) -> Vec<Vec<bool>> {
        let mut out = Vec::new();
        for s in strategies {
            for v in s.variants() {
                let (above, below) = s.crossing(v).unwrap();
                let (mut a, mut b) = (Vec::new(), Vec::new());
                above.indicator().compute(closes, &mut a);
                below.indicator().compute(closes, &mut b);
                out.push(a.iter().zip(&b).map(|(x, y)| x > y).collect());
            }
        }
        out
    }

    fn close_enough(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance * (1.0 + a.abs().max(b.abs()))
    }

    /// Follows `open`/`close` and, after every bar from `from` on, checks each variant's score
    /// against the window simulated from scratch with the fresh-signal rule.
    fn check(open: &[f64], close: &[f64], look_back: usize, from: usize, every: usize, fee: f64, slippage: f64) {
        let strategies = grid(&["sma_cross fast=2..10/3 slow=5..30/6", "ema_cross fast=2..10/4 slow=6..30/8"]);
        let rules = FillRules { fee_rate: fee, slippage, qty_step: 0.0, capital: 1.0 };
        let want = signals(&strategies, close);
        let mut tracker = Tracker::new(strategies.clone(), look_back, rules);
        for b in 0..close.len() {
            tracker.push(open[b], close[b]);
            for (i, w) in want.iter().enumerate() {
                assert_eq!(tracker.wants_long(i), w[b], "variant {i} at bar {b}");
            }
            if b < from || !(b - from).is_multiple_of(every) {
                continue;
            }
            let a = (b + 1).saturating_sub(look_back);
            let bars = Bars::new(open[a..=b].to_vec(), close[a..=b].to_vec()).unwrap();
            let scores = tracker.scores(1000.0);
            for (i, w) in want.iter().enumerate() {
                let mut fresh = Vec::with_capacity(b + 1 - a);
                for t in a..=b {
                    let before = if t > 0 { w[t - 1] } else { false };
                    let held = t > a && fresh[t - a - 1];
                    fresh.push(w[t] && (held || !before));
                }
                let expected = simulate(&bars, &fresh, &rules, 1000.0);
                let got = &scores[i];
                let what = format!("variant {} bar {b}: {got:?} vs {expected:?}", tracker.variants()[i]);
                assert_eq!(got.trades, expected.trades, "{what}");
                assert_eq!(got.win_rate, expected.win_rate, "{what}");
                assert!(close_enough(got.total_return, expected.total_return, 1e-9), "{what}");
                assert!(close_enough(got.max_drawdown, expected.max_drawdown, 1e-9), "{what}");
                assert!(close_enough(got.fees, expected.fees, 1e-9), "{what}");
                assert!(close_enough(got.sharpe, expected.sharpe, 1e-6), "{what}");
            }
        }
    }

    fn walk() -> impl proptest::strategy::Strategy<Value = (Vec<f64>, Vec<f64>)> {
        proptest::collection::vec((-0.03f64..0.03, -0.01f64..0.01), 2..260).prop_map(|steps| {
            let mut price = 100.0;
            let (mut open, mut close) = (Vec::new(), Vec::new());
            for (change, gap) in steps {
                open.push(price * (1.0 + gap));
                price *= 1.0 + change;
                close.push(price);
            }
            (open, close)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn the_sliding_scores_are_the_window_simulated_afresh(
            (open, close) in walk(), look_back in 2usize..120, fee in 0.0f64..0.01, slippage in 0.0f64..0.005,
        ) {
            check(&open, &close, look_back, 0, 1, fee, slippage);
        }
    }

    #[test]
    fn the_bundled_quarter_scores_like_the_window_simulated_afresh() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../replays/kraken_XBTEUR_15m_2023Q4.csv");
        let text = std::fs::read_to_string(file).unwrap();
        let (mut open, mut close) = (Vec::new(), Vec::new());
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split(',').collect();
            open.push(cols[1].parse::<f64>().unwrap());
            close.push(cols[4].parse::<f64>().unwrap());
        }
        assert!(close.len() > 8000);
        check(&open, &close, 2000, 1990, 397, 0.0026, 0.0);
    }

    /// Views made in a watch's recycled room are the views a fresh watch makes.
    #[test]
    fn recycled_views_are_the_fresh_ones() {
        let strategies = grid(&["sma_cross fast=2..10/3 slow=5..30/6", "ema_cross fast=2..10/4 slow=6..30/8"]);
        let (mut fresh, mut reusing) = (Watch::new(strategies.clone(), 40, 3), Watch::new(strategies, 40, 3));
        let pair: Pair = "XBT/EUR".parse().unwrap();
        let mut price = 100.0f64;
        for bar in 0..300i64 {
            price *= 1.0 + 0.01 * ((bar * 7919 % 13) as f64 - 6.0) / 6.0;
            let p = |x: f64| crypy_core::Price::new(rust_decimal::Decimal::from_f64_retain(x).unwrap().round_dp(2));
            let candle = Event::Candle(crypy_core::market::Candle {
                pair,
                interval: "1m".parse().unwrap(),
                open_time: bar * 60_000,
                open: p(price * 0.999),
                high: p(price * 1.01),
                low: p(price * 0.99),
                close: p(price),
                volume: crypy_core::Qty::new(rust_decimal::Decimal::ONE),
                trades: None,
            });
            let (a, b) = (fresh.see(&candle).unwrap(), reusing.see(&candle).unwrap());
            assert_eq!((a.pair, &a.wants, &a.scores), (b.pair, &b.wants, &b.scores), "bar {bar}");
            reusing.recycle(b);
        }
    }
}
