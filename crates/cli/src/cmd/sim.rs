use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use crypy_agents::template::{read_texts, Templates};
use crypy_core::Event;
use crypy_dataflow::sim::DeskOptions;
use crypy_eventstore::LogReader;
use crypy_exchange::sim::SimConfig;
use serde_json::json;

use crate::args::{ReplayArgs, SimArgs};
use crate::out;

/// The bundled market data, so `crypy sim` runs from anywhere.
const BUNDLED: &str = include_str!("../../../../replays/kraken_XBTEUR_15m_2023Q4.csv");

/// The bundled Kraken XBT/EUR 15-minute candles of 2023 Q4.
pub fn bundled_candles() -> anyhow::Result<Vec<crypy_core::Candle>> {
    let name = Path::new("replays/kraken_XBTEUR_15m_2023Q4.csv");
    Ok(crypy_eventstore::import::parse_candles(BUNDLED, name, &"XBT/EUR".parse()?, "15m".parse()?, None)?)
}

pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let mut candles = Vec::new();
    if args.from_log {
        candles = logged_candles(&args.dir.data_dir, 0)?;
    } else if let Some(run) = args.from_run {
        candles = logged_candles(&args.dir.data_dir, run)?;
    } else if args.markets.is_empty() {
        candles = bundled_candles()?;
    }
    for file in &args.markets {
        candles.extend(crypy_eventstore::import::read_candles(file, &args.pair, args.interval, None)?);
    }
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            SimConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => SimConfig::default(),
    };
    let (templates, texts) = match &args.templates {
        Some(dir) => {
            let texts = read_texts(dir)?;
            (Templates::parse_texts(&texts, dir)?, Some(texts))
        }
        None => (Templates::default(), None),
    };
    let desk_name = crypy_core::AgentId::desk("sim", &config.account)?.to_string();
    let expected = candles.len() as u64;
    if candles.is_empty() {
        return Err(crypy_dataflow::sim::SimError::NoData.into());
    }
    let sim = crypy_exchange::sim::Simulator::new(config, candles)?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let options = DeskOptions {
        data_dir: args.dir.data_dir.clone(),
        templates,
        template_texts: texts,
        workers: usize::from(args.ui.workers),
        speed: args.speed,
        // A paced desk is the live simulator: orders leave only once the log holds them.
        live: args.speed.is_some(),
        expected_candles: Some(expected),
        stop_after_candles: None,
        poll: None,
        log_fails_after: args.ui.fault_log_fails_after,
    };
    super::desk::drive(runtime, sim, options, &desk_name, &args.dir.data_dir, &args.ui, args.stay)
}

/// The candles of `run` in the log (run 0: those imported), in log order.
fn logged_candles(dir: &Path, run: u32) -> anyhow::Result<Vec<crypy_core::Candle>> {
    let reader = LogReader::open(dir).with_context(|| format!("cannot read the log in {}", dir.display()))?;
    let mut candles = Vec::new();
    for e in reader.iter_from(1)? {
        let e = e?;
        if let Event::Candle(c) = e.event {
            if e.run == run {
                candles.push(c);
            }
        }
    }
    if candles.is_empty() {
        if run == 0 {
            anyhow::bail!("no imported candles in {} (import some with `crypy log import-candles`)", dir.display());
        }
        anyhow::bail!("run {run} of {} saw no candles (`crypy log stats` lists the runs)", dir.display());
    }
    Ok(candles)
}

pub fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir.data_dir;
    let reader = LogReader::open(dir).with_context(|| format!("cannot open the log in {}", dir.display()))?;
    let secret = std::fs::read(dir.join("secret"))
        .with_context(|| format!("cannot read the data dir's secret in {}", dir.display()))?;
    let workers = usize::from(args.workers);
    let started = std::time::Instant::now();
    let report =
        crypy_dataflow::replay::verify(reader.into_iter_from(1)?, &secret, args.epoch, workers, args.max_differences)?;
    let seconds = started.elapsed().as_secs_f64();
    let rate = report.market_events as f64 / seconds.max(1e-9);
    if args.json {
        let diffs: Vec<_> = report
            .differences
            .iter()
            .map(|d| json!({"seq": d.seq, "expected": d.expected, "found": d.found}))
            .collect();
        println!(
            "{}",
            json!({
                "ok": report.is_ok(), "runs": report.runs, "inputs": report.inputs,
                "market_events": report.market_events, "compared": report.compared, "differences": diffs,
                "workers": workers, "seconds": seconds, "market_events_per_s": rate,
            })
        );
    } else {
        println!(
            "replayed {} runs: {} inputs, {} derived events compared",
            report.runs,
            out::count(report.inputs),
            out::count(report.compared)
        );
        println!(
            "{} market events in {seconds:.3} s: {} market events/s on {workers} worker{}",
            out::count(report.market_events),
            out::count(rate as u64),
            if workers == 1 { "" } else { "s" }
        );
        for d in &report.differences {
            println!(
                "difference at seq {}:\n  derived now: {}\n  recorded:    {}",
                d.seq,
                d.expected.as_deref().unwrap_or("(nothing)"),
                d.found.as_deref().unwrap_or("(nothing)")
            );
        }
        if report.is_ok() {
            println!("ok: every recorded decision is reproduced exactly");
        }
    }
    Ok(if report.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
