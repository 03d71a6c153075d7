//! Benchmarks of the whole desk: `bench backtest` (one fixed strategy through simulator, log,
//! dataflow and agents), `bench replay` (a recorded run through the dataflow again) and
//! `bench latency` (market event in the log → order request out of the desk).

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use crypy_agents::template::Templates;
use crypy_core::{Candle, Interval, Money, Pair};
use crypy_dataflow::sim::{run_sim, SimOptions, SimReport};
use crypy_exchange::sim::SimConfig;
use serde_json::json;

use crate::out;

/// `sma:10:30` or `ema:10:30` (or the family's full name): the one variant a backtest trades.
pub fn parse_strategy(text: &str) -> anyhow::Result<(&'static str, u32, u32)> {
    let parts: Vec<&str> = text.split(':').collect();
    let [family, fast, slow] = parts[..] else {
        bail!("--strategy {text:?}: expected FAMILY:FAST:SLOW, e.g. sma:10:30 or ema:12:26")
    };
    let family = match family {
        "sma" | "sma_cross" => "sma_cross",
        "ema" | "ema_cross" => "ema_cross",
        other => bail!("--strategy {text:?}: unknown family {other:?}; known: sma, ema"),
    };
    let period = |p: &str| -> anyhow::Result<u32> {
        p.parse::<u32>().ok().filter(|n| *n >= 1).with_context(|| format!("--strategy {text:?}: {p:?} is not a period"))
    };
    let (fast, slow) = (period(fast)?, period(slow)?);
    if fast >= slow {
        bail!("--strategy {text:?}: the fast period must be shorter than the slow one");
    }
    Ok((family, fast, slow))
}

/// `--qty`, `--fee` and `--cash` checked before any candle is read, each named in its error:
/// a mistyped flag should not first cost a whole CSV's parse and then be reported as a
/// template's or the simulator's field.
fn check_amounts(qty: &str, fee: &str, cash: &str) -> anyhow::Result<()> {
    let decimal = |flag: &str, text: &str| -> anyhow::Result<Money> {
        text.parse().map_err(|_| anyhow::anyhow!("{flag} {text:?}: not a decimal number"))
    };
    let positive = |m: Money| !m.is_zero() && !m.is_sign_negative();
    if !positive(decimal("--qty", qty)?) {
        bail!("--qty {qty:?}: every entry must buy a positive quantity");
    }
    let rate = decimal("--fee", fee)?;
    if rate.is_sign_negative() || rate.value() >= 1.into() {
        bail!("--fee {fee:?}: a fee rate on traded value must be in [0, 1)");
    }
    if !positive(decimal("--cash", cash)?) {
        bail!("--cash {cash:?}: the quote asset's starting balance must be positive, or no order can be paid");
    }
    Ok(())
}

/// The templates of a fixed-strategy backtest: one trader trading one variant with a fixed
/// quantity, a holder that accepts every proposal, no stop-loss or take-profit, and desk
/// limits that never bind — so that the agents do exactly what the peers' backtests do
/// (enter when the fast average is above the slow one and flat, leave when it is below),
/// through the same proposal, allocation and gate path as any run. Nothing learns: the peers'
/// strategy objects do not. The holder's key is the shipped template's: one per asset.
pub fn backtest_templates(
    pair: Pair,
    interval: Interval,
    strategy: (&str, u32, u32),
    qty: &str,
) -> anyhow::Result<[String; 3]> {
    let (family, fast, slow) = strategy;
    let desk = format!(
        "trusted_asset = \"{quote}\"\n[limits]\nallowed_pairs = [\"{pair}\"]\nmax_order_notional = \"1000000000\"\n\
         max_open_orders = 10\nkill_switch = false\n[learning]\ndivert_after_losing_lifetimes = 0\nevidence_days = 90\n",
        quote = pair.quote
    );
    let holder = format!(
        "pairs = [\"{pair}\"]\n[criteria]\nmin_return = -inf\nmin_sharpe = -inf\nmax_drawdown = 1.0\nmin_trades = 0\n\
         max_fraction = 1.0\nallocation_ttl_minutes = 525600\n[learning]\navoid_after_losing_pairs = 0\nevidence_days = 30\n\
         [authorization]\nkey = \"asset\"\n"
    );
    // Evaluating every bar lets the next trader generation propose (and so re-enter) on the
    // first bar after the previous one's exit, as a single strategy object would.
    let trader = format!(
        "look_back_bars = {window}\nevaluate_every_minutes = {every}\nstrategies = [\"{family} fast={fast} slow={slow}\"]\n\
         propose_min_return = -inf\npropose_min_trades = 0\nstop_loss = 1.0\ntake_profit = inf\norder_qty = \"{qty}\"\n\
         [learning]\nmin_positions = 0\nneighbourhood = 0\ndrop_after_losses = 0\nexplore = 0.0\nevidence_days = 30\n",
        window = 2 * slow,
        every = (interval.secs() / 60).max(1),
    );
    let texts = [desk, holder, trader];
    Templates::parse_texts(&texts, Path::new("bench backtest")).context("the backtest's templates")?;
    Ok(texts)
}

/// A simulator holding `cash` of the pair's quote asset, trading only that pair.
pub fn backtest_config(pair: Pair, cash: &str, fee: &str) -> anyhow::Result<SimConfig> {
    let text = format!(
        "account = \"bench\"\nseed = 42\norder_types = [\"market\"]\nmaker_fee = \"{fee}\"\ntaker_fee = \"{fee}\"\n\
         slippage = \"0\"\nlatency_ms = 0\njitter_ms = 0\nrate_limit_per_s = 1000\n\
         [balances]\n{quote} = \"{cash}\"\n\
         [[markets]]\npair = \"{pair}\"\nvenue_symbol = \"{base}{quote}\"\nprice_precision = 2\nqty_precision = 8\n\
         min_qty = \"0.00000001\"\n",
        quote = pair.quote,
        base = pair.base,
    );
    Ok(SimConfig::from_toml(&text)?)
}

/// The process's peak resident memory in bytes, as the kernel counts it (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub struct Backtest<'a> {
    pub candles: Vec<Candle>,
    pub pair: Pair,
    pub interval: Interval,
    /// As [`parse_strategy`] gives it.
    pub strategy: (&'static str, u32, u32),
    pub qty: &'a str,
    pub fee: &'a str,
    pub cash: &'a str,
    pub workers: usize,
    pub data_dir: &'a Path,
    pub live: bool,
}

pub struct BacktestResult {
    pub seconds: f64,
    pub report: SimReport,
    pub round_trips: u64,
    pub open_at_end: bool,
}

/// Runs the backtest: the simulator, the durable log, the dataflow and the agents, exactly
/// as `crypy sim` runs them.
pub fn run_backtest(b: Backtest<'_>) -> anyhow::Result<BacktestResult> {
    let texts = backtest_templates(b.pair, b.interval, b.strategy, b.qty)?;
    let templates = Templates::parse_texts(&texts, Path::new("bench backtest"))?;
    let config = backtest_config(b.pair, b.cash, b.fee)?;
    let (mut buys, mut sells) = (0u64, 0u64);
    let started = Instant::now();
    let report = run_sim(
        SimOptions {
            data_dir: b.data_dir.to_path_buf(),
            candles: b.candles,
            config,
            config_text: None,
            templates,
            template_texts: Some(texts),
            workers: b.workers,
            speed: None,
            live: b.live,
            // Nobody steers a backtest: its candles go into epochs in batches.
            batch_candles: !b.live,
        },
        |e| {
            if let crypy_core::Event::OrderFilled(f) = &e.event {
                match f.side {
                    crypy_core::Side::Buy => buys += 1,
                    crypy_core::Side::Sell => sells += 1,
                }
            }
        },
        |_, _| {},
    )?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(BacktestResult { seconds, report, round_trips: buys, open_at_end: buys > sells })
}

/// The candles of a bench run: the first `bars` of the file, at least one.
fn bench_candles(csv: &Path, pair: &Pair, interval: Interval, bars: Option<usize>) -> anyhow::Result<Vec<Candle>> {
    let mut candles = crypy_eventstore::import::read_candles(csv, pair, interval, None)?;
    if let Some(n) = bars {
        candles.truncate(n);
    }
    anyhow::ensure!(!candles.is_empty(), "{}: no candles", csv.display());
    Ok(candles)
}

pub fn backtest(args: crate::args::BacktestArgs) -> anyhow::Result<ExitCode> {
    let strategy = parse_strategy(&args.strategy)?;
    check_amounts(&args.qty, &args.fee, &args.cash)?;
    let candles = bench_candles(&args.csv, &args.pair, args.interval, None)?;
    let scratch =
        tempfile::Builder::new().prefix("crypy-backtest-").tempdir().context("cannot create a scratch dir")?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| scratch.path().to_path_buf());
    let bars = candles.len() as u64;
    if !args.json {
        eprintln!(
            "backtesting {} on {} {} bars of {} through the simulator, the log ({}), the dataflow and the desk …",
            args.strategy,
            out::count(bars),
            args.interval,
            args.pair,
            data_dir.display()
        );
    }
    let r = run_backtest(Backtest {
        candles,
        pair: args.pair,
        interval: args.interval,
        strategy,
        qty: &args.qty,
        fee: &args.fee,
        cash: &args.cash,
        workers: usize::from(args.workers),
        data_dir: &data_dir,
        live: false,
    })?;
    let rate = bars as f64 / r.seconds;
    let rep = &r.report;
    if args.json {
        println!(
            "{}",
            json!({
                "strategy": args.strategy, "qty": args.qty, "fee": args.fee, "workers": args.workers,
                "seconds": r.seconds, "bars": bars, "bars_per_s": rate, "round_trips": r.round_trips,
                "open_at_end": r.open_at_end, "orders": rep.orders, "fills": rep.fills, "events": rep.events,
                "events_per_s": rep.events as f64 / r.seconds, "total_return": rep.total_return(),
                "fees": rep.fees.to_string(), "accounting_ok": rep.accounting_mismatches.is_empty(),
                "peak_rss_bytes": peak_rss_bytes(),
            })
        );
    } else {
        println!(
            "{} bars in {:.3} s: {} bars/s ({} events logged, {} events/s)",
            out::count(bars),
            r.seconds,
            out::count(rate as u64),
            out::count(rep.events),
            out::count((rep.events as f64 / r.seconds) as u64)
        );
        println!(
            "{} round trips ({} orders, {} fills{}), return {:+.4} %, fees {} {}",
            out::count(r.round_trips),
            out::count(rep.orders),
            out::count(rep.fills),
            if r.open_at_end { ", the last position still open" } else { "" },
            rep.total_return() * 100.0,
            rep.fees,
            rep.trusted
        );
        if let Some(rss) = peak_rss_bytes() {
            println!("peak memory {:.0} MB", rss as f64 / 1e6);
        }
    }
    if !rep.accounting_mismatches.is_empty() {
        bail!("the accounting does not hold: {}", rep.accounting_mismatches.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}

/// The `q` quantile (0..=1) of sorted `values`, by the nearest rank.
fn quantile(sorted: &[std::time::Duration], q: f64) -> std::time::Duration {
    if sorted.is_empty() {
        return std::time::Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn latency(args: crate::args::LatencyArgs) -> anyhow::Result<ExitCode> {
    let strategy = parse_strategy(&args.strategy)?;
    anyhow::ensure!(args.bars != Some(0), "--bars 0: at least one bar is needed to measure anything");
    let candles = bench_candles(&args.csv, &args.pair, args.interval, args.bars)?;
    let scratch = tempfile::Builder::new().prefix("crypy-latency-").tempdir().context("cannot create a scratch dir")?;
    let bars = candles.len() as u64;
    if !args.json {
        eprintln!(
            "trading {} live on {} {} bars of {}: every order leaves only once the log holds it durably …",
            args.strategy,
            out::count(bars),
            args.interval,
            args.pair
        );
    }
    let r = run_backtest(Backtest {
        candles,
        pair: args.pair,
        interval: args.interval,
        strategy,
        qty: "0.01",
        fee: "0.001",
        cash: "1000000",
        workers: 1,
        data_dir: scratch.path(),
        live: true,
    })?;
    let mut l = r.report.order_latencies.clone();
    anyhow::ensure!(!l.is_empty(), "no market event led to an order: nothing to measure (more bars?)");
    l.sort();
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    let (p50, p99, p999, max) = (quantile(&l, 0.5), quantile(&l, 0.99), quantile(&l, 0.999), l[l.len() - 1]);
    let mean = l.iter().map(|d| us(*d)).sum::<f64>() / l.len() as f64;
    // The part before the log is made durable: the agents' own time, apart from the disk's.
    let mut decided = r.report.order_decisions.clone();
    decided.sort();
    let (decided_p50, decided_p99) = (quantile(&decided, 0.5), quantile(&decided, 0.99));
    if args.json {
        println!(
            "{}",
            json!({
                "orders": l.len(), "bars": bars, "seconds": r.seconds,
                "p50_us": us(p50), "p99_us": us(p99), "p99_9_us": us(p999), "max_us": us(max), "mean_us": mean,
                "decided_p50_us": us(decided_p50), "decided_p99_us": us(decided_p99),
            })
        );
    } else {
        println!(
            "{} orders, market event in the log → order request out of the desk (durable log, fsync included):",
            out::count(l.len() as u64)
        );
        println!(
            "p50 {:.0} µs   p99 {:.0} µs   p99.9 {:.0} µs   max {:.0} µs   (mean {mean:.0} µs)",
            us(p50),
            us(p99),
            us(p999),
            us(max)
        );
        println!(
            "of which deciding, before the log is made durable: p50 {:.0} µs   p99 {:.0} µs",
            us(decided_p50),
            us(decided_p99)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn replay(args: crate::args::BenchReplayArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.data_dir;
    let reader =
        crypy_eventstore::LogReader::open(dir).with_context(|| format!("cannot open the log in {}", dir.display()))?;
    let secret = std::fs::read(dir.join("secret"))
        .with_context(|| format!("cannot read the data dir's secret in {}", dir.display()))?;
    let workers = usize::from(args.workers);
    let started = Instant::now();
    let report = crypy_dataflow::replay::verify(
        reader.into_iter_from(1)?,
        &secret,
        args.epoch,
        &crypy_dataflow::host::Scale::threads(workers),
        1,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let rate = report.market_events as f64 / seconds.max(1e-9);
    let rss = peak_rss_bytes();
    if args.json {
        println!(
            "{}",
            json!({
                "ok": report.is_ok(), "workers": workers, "epoch": args.epoch, "seconds": seconds,
                "inputs": report.inputs, "market_events": report.market_events, "derived_events": report.compared,
                "market_events_per_s": rate, "events_per_s": (report.inputs + report.compared) as f64 / seconds,
                "peak_rss_bytes": rss,
            })
        );
    } else {
        println!(
            "{} market events ({} inputs, {} derived events checked) in {seconds:.3} s: {} market events/s on {workers} worker{}",
            out::count(report.market_events),
            out::count(report.inputs),
            out::count(report.compared),
            out::count(rate as u64),
            if workers == 1 { "" } else { "s" }
        );
        if let Some(rss) = rss {
            println!("peak memory {:.0} MB", rss as f64 / 1e6);
        }
    }
    anyhow::ensure!(report.is_ok(), "the replay differs from the log: run `crypy replay --verify` for the differences");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backtest's agents never learn: a fixed strategy that loses twice at the start must
    /// still be traded at every crossing, as the peers' strategy objects do.
    #[test]
    fn backtest_agents_do_not_learn() {
        let pair: Pair = "XBT/USD".parse().unwrap();
        let texts = backtest_templates(pair, "1m".parse().unwrap(), ("sma_cross", 10, 30), "0.01").unwrap();
        let t = Templates::parse_texts(&texts, Path::new("bench")).unwrap();
        assert_eq!(t.trader.learning.min_positions, 0);
        assert_eq!(t.trader.learning.drop_after_losses, 0);
        assert_eq!(t.holder.learning.avoid_after_losing_pairs, 0);
        assert_eq!(t.desk.learning.divert_after_losing_lifetimes, 0);
        // Its holder signs as a default holder does: a like-for-like of `crypy sim`.
        assert_eq!(t.holder.authorization, Templates::default().holder.authorization);
    }
}
