use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use crypy_agents::template::{read_texts, Templates};
use crypy_core::Event;
use crypy_dataflow::host::{Cluster, Scale};
use crypy_dataflow::sim::DeskOptions;
use crypy_eventstore::LogReader;
use crypy_exchange::sim::SimConfig;
use serde_json::json;

use crate::args::{ClusterArgs, ReplayArgs, SimArgs};
use crate::out;

/// The bundled market data, so `crypy sim` runs from anywhere.
const BUNDLED: &str = include_str!("../../../../replays/kraken_XBTEUR_15m_2023Q4.csv");

/// The bundled Kraken XBT/EUR 15-minute candles of 2023 Q4.
pub fn bundled_candles() -> anyhow::Result<Vec<crypy_core::Candle>> {
    let name = Path::new("replays/kraken_XBTEUR_15m_2023Q4.csv");
    Ok(crypy_eventstore::import::parse_candles(BUNDLED, name, &"XBT/EUR".parse()?, "15m".parse()?, None)?)
}

pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let scale = scale(args.ui.workers, &args.cluster)?;
    if scale.cluster.as_ref().is_some_and(|c| c.process != 0) {
        return serve(&scale);
    }
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
        workers: scale.workers,
        cluster: scale.cluster,
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

/// The workers `--workers` and `--processes/--process/--hosts` ask for.
///
/// # Errors
/// A hosts file that cannot be read or does not name one `host:port` per process, or a
/// process index out of range.
pub fn scale(workers: u16, cluster: &ClusterArgs) -> anyhow::Result<Scale> {
    let mut scale = Scale::threads(usize::from(workers));
    let processes = usize::from(cluster.processes);
    if processes == 1 && cluster.hosts.is_none() {
        anyhow::ensure!(cluster.process == 0, "--process {} needs --processes and --hosts", cluster.process);
        return Ok(scale);
    }
    let Some(path) = &cluster.hosts else { bail!("--processes {processes} needs --hosts FILE (one host:port a line)") };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the hosts file {}", path.display()))?;
    let mut addresses = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let port_ok = line.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        anyhow::ensure!(
            port_ok,
            "{}:{}: {:?} is not host:port",
            path.display(),
            n + 1,
            line.chars().take(80).collect::<String>()
        );
        addresses.push(line.to_owned());
    }
    anyhow::ensure!(
        addresses.len() == processes,
        "{} names {} processes, --processes says {processes}",
        path.display(),
        addresses.len()
    );
    let process = usize::from(cluster.process);
    anyhow::ensure!(process < processes, "--process {process} is not below --processes {processes}");
    scale.cluster = Some(Cluster { process, addresses });
    Ok(scale)
}

/// A process of a cluster other than 0: lends its workers until process 0 is done.
fn serve(scale: &Scale) -> anyhow::Result<ExitCode> {
    let process = scale.cluster.as_ref().map_or(0, |c| c.process);
    crypy_dataflow::host::serve(scale).map_err(|e| anyhow::anyhow!("process {process}: {e}"))?;
    eprintln!("process {process}: served {} workers until process 0 was done", scale.workers);
    Ok(ExitCode::SUCCESS)
}

pub fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let scale = scale(args.workers, &args.cluster)?;
    if scale.cluster.as_ref().is_some_and(|c| c.process != 0) {
        return serve(&scale);
    }
    let dir = &args.dir.data_dir;
    let reader = LogReader::open(dir).with_context(|| format!("cannot open the log in {}", dir.display()))?;
    let secret = std::fs::read(dir.join("secret"))
        .with_context(|| format!("cannot read the data dir's secret in {}", dir.display()))?;
    let workers = scale.peers();
    let processes = scale.cluster.as_ref().map_or(1, |c| c.addresses.len());
    let started = std::time::Instant::now();
    let report =
        crypy_dataflow::replay::verify(reader.into_iter_from(1)?, &secret, args.epoch, &scale, args.max_differences)?;
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
                "workers": workers, "processes": processes, "seconds": seconds, "market_events_per_s": rate,
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
