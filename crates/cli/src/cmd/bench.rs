use std::process::ExitCode;

use anyhow::Context;

use std::time::Instant;

use crypy_agents::evaluate::{evaluate_grid, Bars, EvalConfig, FillRules};
use crypy_agents::strategy::{Registry, StrategySpec};
use serde_json::json;

use crate::args::BenchCommand;
use crate::out;

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Backtest(args) => super::bench_desk::backtest(args),
        BenchCommand::Replay(args) => super::bench_desk::replay(args),
        BenchCommand::Latency(args) => super::bench_desk::latency(args),
        BenchCommand::Sweep(args) => super::bench_sweep::run(args),
        BenchCommand::Log { events, batch, dir, json } => {
            anyhow::ensure!(events > 0, "--events must be at least 1");
            anyhow::ensure!(batch > 0, "--batch must be at least 1");
            let scratch = match &dir {
                Some(d) => tempfile::Builder::new().prefix("crypy-bench-").tempdir_in(d),
                None => tempfile::Builder::new().prefix("crypy-bench-").tempdir(),
            }
            .context("cannot create the scratch dir")?;
            if !json {
                eprintln!(
                    "appending {} events in batches of {batch} (fsync each) under {} …",
                    out::count(events),
                    scratch.path().display()
                );
            }
            let r = crypy_eventstore::bench::bench_log(scratch.path(), events, batch)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "durable appends: {} events in {:.3} s = {} (batches of {}, fsync per batch)",
                    out::count(r.events),
                    r.append_seconds,
                    out::rate(r.appends_per_s),
                    r.batch
                );
                println!(
                    "scan:            {} events in {:.3} s = {} (read, checksum, decode)",
                    out::count(r.events),
                    r.scan_seconds,
                    out::rate(r.scan_per_s)
                );
                println!(
                    "size:            {:.1} bytes/event encoded, {:.1} MB on disk",
                    r.encoded_bytes_per_event,
                    r.bytes_on_disk as f64 / 1e6
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Eval { data, interval, strategies, fee, repeat, threads, json } => {
            anyhow::ensure!(repeat > 0, "--repeat must be at least 1");
            let candles = match &data {
                Some(file) => crypy_eventstore::import::read_candles(file, &"XBT/EUR".parse()?, interval, None)?,
                None => super::sim::bundled_candles()?,
            };
            let bars = Bars::from_candles(&candles)?;
            let registry = Registry::default();
            let grids = strategies
                .iter()
                .map(|text| StrategySpec::parse(text).and_then(|spec| registry.build(&spec)))
                .collect::<Result<Vec<_>, _>>()?;
            let variants: usize = grids.iter().map(|g| g.variants().len()).sum();
            let cfg = EvalConfig {
                rules: FillRules { fee_rate: fee, slippage: 0.0, qty_step: 1e-8, capital: 10_000.0 },
                periods_per_year: 365.0 * 86_400.0 / f64::from(interval.secs()),
                threads: 1,
            };
            // Like traders on the dataflow's workers: each thread evaluates grids on its own.
            let threads = match threads {
                0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
                n => n,
            }
            .min(repeat as usize);
            let started = Instant::now();
            let per_thread: Vec<u32> =
                (0..threads as u32).map(|i| repeat / threads as u32 + u32::from(i < repeat % threads as u32)).collect();
            let results = std::thread::scope(|scope| {
                let handles: Vec<_> = per_thread
                    .iter()
                    .map(|&n| {
                        let (bars, grids, cfg) = (&bars, &grids, &cfg);
                        scope.spawn(move || {
                            let mut results = Vec::new();
                            for _ in 0..n {
                                results = evaluate_grid(bars, grids, cfg);
                            }
                            results
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("evaluation threads do not panic"))
                    .next_back()
                    .unwrap_or_default()
            });
            let seconds = started.elapsed().as_secs_f64();
            let steps = variants as f64 * bars.len() as f64 * f64::from(repeat);
            // The trader's own path: every variant followed bar by bar, the grid scored on
            // the sliding window every hour of bars.
            let grids: std::sync::Arc<[_]> = grids.into();
            let every = (3600 / interval.secs().max(1)).max(1) as usize;
            let follow_started = Instant::now();
            let mut scored = 0u64;
            for _ in 0..repeat {
                let mut tracker = crypy_agents::track::Tracker::new(grids.clone(), 2000, cfg.rules);
                for (i, (open, close)) in bars.open().iter().zip(bars.close()).enumerate() {
                    tracker.push(*open, *close);
                    if i % every == 0 {
                        scored += tracker.scores(cfg.periods_per_year).len() as u64;
                    }
                }
            }
            let follow_seconds = follow_started.elapsed().as_secs_f64();
            let follow_rate = steps / follow_seconds;
            std::hint::black_box(scored);
            let best = results
                .iter()
                .max_by(|a, b| a.score.total_return.total_cmp(&b.score.total_return))
                .expect("a grid has at least one variant");
            if json {
                println!(
                    "{}",
                    json!({
                        "variants": variants, "bars": bars.len(), "repeat": repeat, "threads": threads, "seconds": seconds,
                        "bar_steps_per_s": steps / seconds,
                        "follow_seconds": follow_seconds, "follow_bar_steps_per_s": follow_rate,
                        "follow_bars_per_s": bars.len() as f64 * f64::from(repeat) / follow_seconds,
                        "best": {"variant": best.variant.to_string(), "total_return": best.score.total_return,
                                 "sharpe": best.score.sharpe, "max_drawdown": best.score.max_drawdown,
                                 "trades": best.score.trades},
                    })
                );
            } else {
                println!(
                    "evaluated {variants} variants × {} bars × {repeat} = {} bar-steps in {seconds:.3} s on {threads} threads: {}",
                    out::count(bars.len() as u64),
                    out::count(steps as u64),
                    out::rate(steps / seconds).replace("/s", " bar-steps/s")
                );
                println!(
                    "followed bar by bar (scored every {every} bars on a 2,000-bar window): {} in {follow_seconds:.3} s, {} bars/s",
                    out::rate(follow_rate).replace("/s", " bar-steps/s"),
                    out::count((bars.len() as f64 * f64::from(repeat) / follow_seconds) as u64)
                );
                println!("best: {best}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
