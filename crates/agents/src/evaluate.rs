//! Scoring strategy variants on a window of bars, under the simulator's own rules, so that
//! what a trader predicts is what the simulator then does.
//!
//! **Fill rule.** A variant decides at the close of bar `t` (from closes up to `t`); the
//! market order executes at the open of bar `t + 1`, at `open × (1 + slippage)` when buying
//! and `open × (1 − slippage)` when selling, paying `fee_rate` on the traded value. Orders
//! are long-only. A buy's quantity is fixed when it is decided, as a real order's is:
//! [`all_in_qty`] of the cash at the decision bar's close, down to the market's quantity step;
//! if the next open makes that unaffordable, it fills what the cash affords (as the simulator
//! does) and otherwise leaves the difference as cash. A sell sells everything. A decision at
//! the last bar has no next open and is not executed. Execution prices are not rounded to the
//! price tick here (the simulator rounds them against the trader), so predictions are exact
//! when the prices they execute at are on the tick, e.g. with no slippage.
//!
//! **Metrics** (`f64`, fractions of the starting capital, [`FillRules::capital`]):
//! - `total_return`: equity at the last close, marked to market, minus 1;
//! - `sharpe`: mean over standard deviation of the per-bar returns of that equity (every bar
//!   after the first, flat bars counting as 0), times `sqrt(periods_per_year)`; 0 when flat;
//! - `max_drawdown`: the largest fall of equity from a previous peak, as a fraction of the peak;
//! - `trades`: positions entered; `win_rate`: the share of closed positions that sold for
//!   more than the cash that bought them (a position still open at the end is not judged);
//! - `fees`: every fee paid, as a fraction of the starting capital.
//!
//! **Speed.** Indicators are computed once per distinct (kind, period) for the whole grid;
//! a bar spent flat costs a comparison, a bar spent long a few multiply-adds on returns
//! shared by every variant; variants are split over threads and results come back in grid
//! order whatever the thread count.

use std::fmt;

use crypy_core::event::Metrics;
use crypy_core::{Candle, Money};
use rust_decimal::prelude::FromPrimitive;
use rust_decimal::Decimal;
use thiserror::Error;

use crate::indicator::IndicatorCache;
use crate::strategy::{Strategy, Variant};

/// A window of bars, columnar.
#[derive(Clone, Debug)]
pub struct Bars {
    open: Vec<f64>,
    close: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum EvalError {
    #[error("{opens} opens but {closes} closes")]
    LengthMismatch { opens: usize, closes: usize },
    #[error("bar {index}: prices must be finite and positive, got open {open} close {close}")]
    BadPrice { index: usize, open: f64, close: f64 },
}

impl Bars {
    /// # Errors
    /// When the columns differ in length or a price is not finite and positive.
    pub fn new(open: Vec<f64>, close: Vec<f64>) -> Result<Self, EvalError> {
        if open.len() != close.len() {
            return Err(EvalError::LengthMismatch { opens: open.len(), closes: close.len() });
        }
        if let Some(index) =
            (0..open.len()).find(|&i| !(open[i].is_finite() && open[i] > 0.0 && close[i].is_finite() && close[i] > 0.0))
        {
            return Err(EvalError::BadPrice { index, open: open[index], close: close[index] });
        }
        Ok(Bars { open, close })
    }

    /// Bars from candles, prices converted to `f64` for the maths.
    pub fn from_candles(candles: &[Candle]) -> Result<Self, EvalError> {
        Bars::new(candles.iter().map(|c| c.open.to_f64()).collect(), candles.iter().map(|c| c.close.to_f64()).collect())
    }

    pub fn len(&self) -> usize {
        self.close.len()
    }

    pub fn is_empty(&self) -> bool {
        self.close.is_empty()
    }

    pub fn open(&self) -> &[f64] {
        &self.open
    }

    pub fn close(&self) -> &[f64] {
        &self.close
    }
}

/// The simulator's execution rules, as the trader must assume them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FillRules {
    /// Fee on the traded value of a market order (the venue's taker fee), e.g. 0.0026.
    pub fee_rate: f64,
    /// Price impact of a market order as a fraction of the open, e.g. 0.0005.
    pub slippage: f64,
    /// The market's quantity step (`10^-qty_precision`); 0 for a continuous quantity.
    pub qty_step: f64,
    /// The cash a variant starts with, in the quote asset. Results are fractions of it, but
    /// quantities are truncated to the step in absolute terms, so it matters.
    pub capital: f64,
}

impl FillRules {
    fn size(&self, qty: f64) -> f64 {
        if self.qty_step > 0.0 {
            // The small nudge keeps 0.29999999999 from truncating to 0.2 when it means 0.3.
            ((qty / self.qty_step) * (1.0 + 1e-12)).floor() * self.qty_step
        } else {
            qty
        }
    }
}

/// The quantity an all-in buy decided at `price` asks for: what `cash` buys at `price`
/// moved by `slippage`, with the fee, truncated to `qty_precision` decimals. The trader sizes
/// its orders with this, and the evaluator assumes it.
pub fn all_in_qty(
    cash: Money,
    price: crypy_core::Price,
    taker_fee: Decimal,
    slippage: Decimal,
    qty_precision: u32,
) -> crypy_core::Qty {
    let unit = price.value() * (Decimal::ONE + slippage) * (Decimal::ONE + taker_fee);
    if unit.is_zero() || cash.value() <= Decimal::ZERO {
        return crypy_core::Qty::ZERO;
    }
    crypy_core::Qty::new(cash.value() / unit).truncate_to(qty_precision)
}

/// How to evaluate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalConfig {
    pub rules: FillRules,
    /// For annualising the Sharpe ratio: bars per year at the window's interval.
    pub periods_per_year: f64,
    /// Threads to split one grid over; 0 means one per core for grids big enough to gain
    /// from it (millions of bar-steps), one otherwise.
    pub threads: usize,
}

impl Default for EvalConfig {
    /// Kraken's base taker fee, no slippage, 15-minute bars, every core.
    fn default() -> Self {
        EvalConfig {
            rules: FillRules { fee_rate: 0.0026, slippage: 0.0, qty_step: 0.0, capital: 10_000.0 },
            periods_per_year: 365.0 * 96.0,
            threads: 0,
        }
    }
}

/// A variant's result on one window.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Score {
    pub total_return: f64,
    pub sharpe: f64,
    pub max_drawdown: f64,
    pub win_rate: f64,
    pub trades: u32,
    /// Fees paid, as a fraction of the starting capital.
    pub fees: f64,
}

impl Score {
    /// The metrics a `strategy_evaluated` event carries, fees in money for `capital`.
    pub fn metrics(&self, capital: Money) -> Metrics {
        let fees = Decimal::from_f64(self.fees).unwrap_or_default() * capital.value();
        Metrics {
            total_return: self.total_return,
            sharpe: self.sharpe,
            max_drawdown: self.max_drawdown,
            win_rate: self.win_rate,
            trades: self.trades,
            fees: Money::new(fees.round_dp(8).normalize()),
        }
    }
}

/// One variant's score.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub variant: Variant,
    pub score: Score,
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.score;
        write!(
            f,
            "{} return {:+.2}% sharpe {:.2} drawdown {:.2}% trades {} wins {:.0}% fees {:.3}%",
            self.variant,
            s.total_return * 100.0,
            s.sharpe,
            s.max_drawdown * 100.0,
            s.trades,
            s.win_rate * 100.0,
            s.fees * 100.0
        )
    }
}

/// Runs the fill rule over one variant's wishes (`want_long[t]`: long after bar `t` closes).
pub fn simulate(bars: &Bars, want_long: &[bool], rules: &FillRules, periods_per_year: f64) -> Score {
    let n = bars.len().min(want_long.len());
    let want_long = &want_long[..n];
    simulate_with(bars, n, |t| want_long[t], rules, periods_per_year)
}

/// [`simulate`] for a variant that is long exactly while `above[t] > below[t]`, without
/// materialising its signals (`NaN` compares false, so warm-up bars are flat).
pub fn simulate_crossing(bars: &Bars, above: &[f64], below: &[f64], rules: &FillRules, periods_per_year: f64) -> Score {
    let n = bars.len().min(above.len()).min(below.len());
    let (above, below) = (&above[..n], &below[..n]);
    simulate_with(bars, n, |t| above[t] > below[t], rules, periods_per_year)
}

#[inline(always)]
fn simulate_with(
    bars: &Bars,
    n: usize,
    wants: impl Fn(usize) -> bool,
    rules: &FillRules,
    periods_per_year: f64,
) -> Score {
    let (open, close) = (&bars.open[..n], &bars.close[..n]);
    let buy_factor = 1.0 + rules.slippage;
    let sell_factor = 1.0 - rules.slippage;
    let fee = rules.fee_rate;

    let capital = rules.capital;
    let mut long = false;
    let mut cash = capital;
    let mut qty = 0.0f64;
    let mut entry_cash = 0.0f64;
    let mut equity = capital;
    let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
    let mut peak = capital;
    let mut max_drawdown = 0.0f64;
    let mut fees = 0.0f64;
    let (mut trades, mut closed, mut wins) = (0u32, 0u32, 0u32);

    // Two accumulators for the return sums, so that consecutive bars' additions do not wait
    // on each other; they are combined at the end.
    let (mut sum_b, mut sum_sq_b) = (0.0f64, 0.0f64);
    let mut t = 1;
    while t < n {
        let want = wants(t - 1);
        if want == long && !long {
            // Flat: nothing changes until the next wish to be long.
            t += 1;
            while t < n && !wants(t - 1) {
                t += 1;
            }
            continue;
        }
        let before = equity;
        if want == long {
            // Long through bar t, and maybe through t + 1 as well: two bars per step.
            if t + 1 < n && wants(t) {
                let e0 = cash + qty * close[t];
                let e1 = cash + qty * close[t + 1];
                let (r0, r1) = (e0 / before - 1.0, e1 / e0 - 1.0);
                sum += r0;
                sum_sq += r0 * r0;
                sum_b += r1;
                sum_sq_b += r1 * r1;
                for e in [e0, e1] {
                    if e > peak {
                        peak = e;
                    } else if e < peak * (1.0 - max_drawdown) {
                        max_drawdown = 1.0 - e / peak;
                    }
                }
                equity = e1;
                t += 2;
                continue;
            }
            equity = cash + qty * close[t];
        } else {
            if want {
                let price = open[t] * buy_factor;
                qty = rules.size(cash / (close[t - 1] * buy_factor * (1.0 + fee)));
                if qty * price * (1.0 + fee) > cash {
                    qty = rules.size(cash / (price * (1.0 + fee)));
                }
                let value = qty * price;
                fees += value * fee;
                entry_cash = cash;
                cash -= value * (1.0 + fee);
                trades += 1;
            } else {
                let proceeds = qty * open[t] * sell_factor;
                let paid = proceeds * fee;
                fees += paid;
                cash += proceeds - paid;
                qty = 0.0;
                closed += 1;
                wins += u32::from(cash > entry_cash);
            }
            long = want;
            equity = cash + qty * close[t];
        }
        let r = equity / before - 1.0;
        sum += r;
        sum_sq += r * r;
        if equity > peak {
            peak = equity;
        } else if equity < peak * (1.0 - max_drawdown) {
            max_drawdown = 1.0 - equity / peak;
        }
        t += 1;
    }
    sum += sum_b;
    sum_sq += sum_sq_b;

    let sharpe = sharpe(sum, sum_sq, n.saturating_sub(1) as f64, periods_per_year);
    Score {
        total_return: equity / capital - 1.0,
        sharpe,
        max_drawdown,
        win_rate: if closed > 0 { f64::from(wins) / f64::from(closed) } else { 0.0 },
        trades,
        fees: fees / capital,
    }
}

/// The annualised Sharpe ratio of `steps` per-bar returns given their sum and sum of squares
/// (0 when they do not vary).
pub(crate) fn sharpe(sum: f64, sum_sq: f64, steps: f64, periods_per_year: f64) -> f64 {
    if steps <= 0.0 {
        return 0.0;
    }
    let mean = sum / steps;
    let var = sum_sq / steps - mean * mean;
    if var > 1e-300 {
        mean / var.sqrt() * periods_per_year.sqrt()
    } else {
        0.0
    }
}

/// Bar-steps below which a thread does not pay for itself (about 10 ms of work).
const MIN_STEPS_PER_THREAD: usize = 5_000_000;

/// Scores every variant of every strategy on `bars`, in grid order (strategy by strategy,
/// variant by variant), whatever the thread count.
pub fn evaluate_grid(bars: &Bars, strategies: &[Box<dyn Strategy>], cfg: &EvalConfig) -> Vec<Evaluation> {
    let jobs: Vec<(&dyn Strategy, &Variant)> =
        strategies.iter().flat_map(|s| s.variants().iter().map(move |v| (s.as_ref(), v))).collect();
    let mut cache = IndicatorCache::default();
    for (s, v) in &jobs {
        cache.fill(bars.close(), s.needs(v));
    }
    // Starting threads costs more than a small grid takes (a trader's grid on a few thousand
    // bars is a millisecond or two): split only big jobs. Traders run in parallel on the
    // dataflow's workers anyway.
    let steps = jobs.len() * bars.len();
    let threads = match cfg.threads {
        0 if steps < MIN_STEPS_PER_THREAD * 2 => 1,
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(steps / MIN_STEPS_PER_THREAD),
        n => n,
    }
    .clamp(1, jobs.len().max(1));
    let run = |part: &[(&dyn Strategy, &Variant)]| -> Vec<Evaluation> {
        let mut want_long = vec![false; bars.len()];
        part.iter()
            .map(|(s, v)| {
                let score = match s.crossing(v) {
                    Some((above, below)) => {
                        simulate_crossing(bars, cache.get(above), cache.get(below), &cfg.rules, cfg.periods_per_year)
                    }
                    None => {
                        s.signals(v, &cache, &mut want_long);
                        simulate(bars, &want_long, &cfg.rules, cfg.periods_per_year)
                    }
                };
                Evaluation { variant: (*v).clone(), score }
            })
            .collect()
    };
    if threads == 1 {
        return run(&jobs);
    }
    let per = jobs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs.chunks(per).map(|part| scope.spawn(move || run(part))).collect();
        handles.into_iter().flat_map(|h| h.join().expect("evaluation threads do not panic")).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::IndicatorCache;
    use crate::strategy::{Registry, StrategySpec};
    use proptest::prelude::*;

    /// The fill rule written the slow, obvious way: an explicit account per bar, equity
    /// series kept whole, metrics computed from it afterwards.
    fn reference(open: &[f64], close: &[f64], want: &[bool], rules: &FillRules, ppy: f64) -> Score {
        let n = close.len();
        let (mut cash, mut qty, mut fees) = (rules.capital, 0.0, 0.0);
        let (mut trades, mut closed, mut wins, mut entry) = (0, 0, 0, 0.0);
        let mut equity = vec![rules.capital];
        let mut long = false;
        for t in 1..n {
            if want[t - 1] && !long {
                let price = open[t] * (1.0 + rules.slippage);
                qty = rules.size(cash / (close[t - 1] * (1.0 + rules.slippage) * (1.0 + rules.fee_rate)));
                if qty * price * (1.0 + rules.fee_rate) > cash {
                    qty = rules.size(cash / (price * (1.0 + rules.fee_rate)));
                }
                fees += qty * price * rules.fee_rate;
                entry = cash;
                cash -= qty * price * (1.0 + rules.fee_rate);
                trades += 1;
                long = true;
            } else if !want[t - 1] && long {
                let gross = qty * open[t] * (1.0 - rules.slippage);
                fees += gross * rules.fee_rate;
                cash += gross * (1.0 - rules.fee_rate);
                qty = 0.0;
                closed += 1;
                if cash > entry {
                    wins += 1;
                }
                long = false;
            }
            equity.push(cash + qty * close[t]);
        }
        let returns: Vec<f64> = equity.windows(2).map(|w| w[1] / w[0] - 1.0).collect();
        let mean = returns.iter().sum::<f64>() / returns.len().max(1) as f64;
        let var = returns.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / returns.len().max(1) as f64;
        let mut peak: f64 = rules.capital;
        let mut mdd: f64 = 0.0;
        for e in &equity {
            peak = peak.max(*e);
            mdd = mdd.max(1.0 - e / peak);
        }
        Score {
            total_return: equity.last().unwrap() / rules.capital - 1.0,
            sharpe: if var > 1e-300 { mean / var.sqrt() * ppy.sqrt() } else { 0.0 },
            max_drawdown: mdd,
            win_rate: if closed > 0 { wins as f64 / closed as f64 } else { 0.0 },
            trades,
            fees: fees / rules.capital,
        }
    }

    fn close_enough(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    fn prices() -> impl Strategy<Value = (Vec<f64>, Vec<f64>, Vec<bool>)> {
        (2usize..300).prop_flat_map(|n| {
            (
                proptest::collection::vec(10.0f64..1000.0, n),
                proptest::collection::vec(10.0f64..1000.0, n),
                proptest::collection::vec(any::<bool>(), n),
            )
        })
    }

    use proptest::strategy::Strategy;

    proptest! {
        #[test]
        fn the_fast_simulation_matches_the_obvious_one((open, close, want) in prices(), fee in 0.0f64..0.01, slippage in 0.0f64..0.01, step in prop_oneof![Just(0.0), Just(1e-8), Just(1e-3)]) {
            let rules = FillRules { fee_rate: fee, slippage, qty_step: step, capital: 10_000.0 };
            let bars = Bars::new(open.clone(), close.clone()).unwrap();
            let got = simulate(&bars, &want, &rules, 35_040.0);
            let want_score = reference(&open, &close, &want, &rules, 35_040.0);
            prop_assert_eq!(got.trades, want_score.trades);
            prop_assert!(close_enough(got.total_return, want_score.total_return), "{:?} vs {:?}", got, want_score);
            prop_assert!(close_enough(got.max_drawdown, want_score.max_drawdown), "{:?} vs {:?}", got, want_score);
            prop_assert!(close_enough(got.fees, want_score.fees), "{:?} vs {:?}", got, want_score);
            prop_assert!(close_enough(got.win_rate, want_score.win_rate));
            // The fast path sums squares in one pass, the reference takes the two-pass variance;
            // with prices jumping up to 100x per bar (as here) they differ in the sixth digit.
            prop_assert!((got.sharpe - want_score.sharpe).abs() <= 1e-4 * (1.0 + want_score.sharpe.abs()), "{:?} vs {:?}", got, want_score);
        }
    }

    #[test]
    fn a_known_round_trip() {
        // Decide to buy at the close of bar 0, fill at bar 1's open (100); decide to sell at
        // bar 2's close, fill at bar 3's open (121).
        let bars = Bars::new(vec![90.0, 100.0, 110.0, 121.0], vec![95.0, 105.0, 115.0, 120.0]).unwrap();
        let rules = FillRules { fee_rate: 0.01, slippage: 0.0, qty_step: 0.0, capital: 1.0 };
        let s = simulate(&bars, &[true, true, false, false], &rules, 1.0);
        // Sized at bar 0's close (95), which the open at 100 makes unaffordable: it fills
        // what the cash buys at 100.
        let qty = 1.0 / (100.0 * 1.01);
        let cash = qty * 121.0 * 0.99;
        assert!(close_enough(s.total_return, cash - 1.0), "{s:?}");
        assert_eq!((s.trades, s.win_rate), (1, 1.0));
        assert!(close_enough(s.fees, qty * 100.0 * 0.01 + qty * 121.0 * 0.01));
    }

    #[test]
    fn a_decision_at_the_last_bar_is_not_executed() {
        let bars = Bars::new(vec![1.0, 2.0, 3.0], vec![1.0, 2.0, 3.0]).unwrap();
        let s = simulate(
            &bars,
            &[false, false, true],
            &FillRules { fee_rate: 0.0, slippage: 0.0, qty_step: 0.0, capital: 1.0 },
            1.0,
        );
        assert_eq!((s.trades, s.total_return), (0, 0.0));
    }

    #[test]
    fn the_fused_crossing_path_scores_like_the_signals_path() {
        let closes: Vec<f64> =
            (0..2000).map(|i| 50.0 + (i as f64 / 23.0).sin() * 3.0 + (i as f64 / 7.0).cos()).collect();
        let bars = Bars::new(closes.clone(), closes.clone()).unwrap();
        let registry = Registry::default();
        let strategies = vec![
            registry.build(&StrategySpec::parse("sma_cross fast=3..30/3 slow=10..90/10").unwrap()).unwrap(),
            registry.build(&StrategySpec::parse("ema_cross fast=3..30/3 slow=10..90/10").unwrap()).unwrap(),
        ];
        let cfg = EvalConfig::default();
        let fused = evaluate_grid(&bars, &strategies, &cfg);
        let mut cache = IndicatorCache::default();
        let mut want = vec![false; bars.len()];
        let mut i = 0;
        for s in &strategies {
            for v in s.variants() {
                cache.fill(bars.close(), s.needs(v));
                s.signals(v, &cache, &mut want);
                assert_eq!(fused[i].score, simulate(&bars, &want, &cfg.rules, cfg.periods_per_year), "{v}");
                i += 1;
            }
        }
        assert_eq!(i, fused.len());
    }

    #[test]
    fn results_come_back_in_grid_order_for_any_thread_count() {
        let closes: Vec<f64> =
            (0..3000).map(|i| 100.0 + (i as f64 / 37.0).sin() * 7.0 + (i as f64 / 5.0).cos()).collect();
        let opens: Vec<f64> = std::iter::once(100.0).chain(closes.iter().copied()).take(closes.len()).collect();
        let bars = Bars::new(opens, closes).unwrap();
        let registry = Registry::default();
        let strategies = vec![
            registry.build(&StrategySpec::parse("sma_cross fast=5..50/5 slow=20..200/20").unwrap()).unwrap(),
            registry.build(&StrategySpec::parse("ema_cross fast=5..20/5 slow=30..60/10").unwrap()).unwrap(),
        ];
        let one = evaluate_grid(&bars, &strategies, &EvalConfig { threads: 1, ..EvalConfig::default() });
        let three = evaluate_grid(&bars, &strategies, &EvalConfig { threads: 3, ..EvalConfig::default() });
        assert_eq!(one, three);
        assert_eq!(one.len(), 90 + 16);
        assert_eq!(one[0].variant.to_string(), "sma_cross:5:20");
        assert_eq!(one.last().unwrap().variant.to_string(), "ema_cross:20:60");
        assert!(one.iter().any(|e| e.score.trades > 0));
    }
}
