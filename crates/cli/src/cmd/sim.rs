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
    let (config, config_text) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            (SimConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?, text)
        }
        None => (SimConfig::default(), crypy_exchange::sim::DEFAULT_TOML.to_string()),
    };
    let (templates, texts) = match &args.templates {
        Some(dir) => {
            let texts = read_texts(dir)?;
            (Templates::parse_texts(&texts, dir)?, Some(texts))
        }
        None => (Templates::default(), None),
    };
    let scoped = match &args.templates {
        Some(dir) => crypy_agents::template::read_scoped(dir)?,
        None => Vec::new(),
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
        scoped_templates: scoped,
        start_settings: Vec::new(),
        batch_candles: true,
        workers: scale.workers,
        cluster: scale.cluster,
        speed: args.speed,
        // A paced desk is the live simulator: orders leave only once the log holds them.
        live: args.speed.is_some(),
        expected_candles: Some(expected),
        stop_after_candles: None,
        poll: None,
        log_fails_after: args.ui.fault_log_fails_after,
        venue_settings: Some(config_text),
    };
    super::desk::drive(runtime, sim, options, &desk_name, &args.dir.data_dir, &args.ui, args.stay)
}

/// What a recorded run needs to be traded again: its market data, its simulator
/// configuration and its templates, all from the log.
pub(crate) struct RecordedRun {
    pub(crate) run: u32,
    pub(crate) candles: Vec<crypy_core::Candle>,
    pub(crate) config_text: Option<String>,
    template_texts: [Option<String>; 3],
    /// One holder's or one pair's own templates, recorded at the run's start.
    scoped_templates: Vec<(crypy_core::event::TemplateScope, String)>,
    /// Template settings the desk recorded at the run's start (what it had learned).
    start_settings: Vec<crypy_core::event::TemplateChanged>,
}

/// The last run of the log in `dir` (or `run`), as recorded.
/// The events of `run` (default: the last run) of the log in `dir`, and its number.
///
/// # Errors
/// No log, no such run, or a damaged record.
fn run_events(dir: &Path, run: Option<u32>) -> anyhow::Result<(u32, Vec<crypy_core::Envelope>)> {
    let reader = LogReader::open(dir).with_context(|| format!("cannot open the log in {}", dir.display()))?;
    let mut events: Vec<crypy_core::Envelope> = Vec::new();
    let mut last = 0;
    for e in reader.into_iter_from(1)? {
        let e = e?;
        last = last.max(e.run);
        if e.run == 0 || run.is_some_and(|r| r != e.run) {
            continue;
        }
        if events.last().is_some_and(|p| p.run != e.run) {
            events.clear();
        }
        events.push(e);
    }
    match (events.first(), run) {
        (Some(first), _) => Ok((first.run, events)),
        (None, Some(r)) => bail!("{} has no run {r} (its last is {last})", dir.display()),
        (None, None) => bail!("{} has no run yet: trade first (crypy sim)", dir.display()),
    }
}

pub(crate) fn recorded_run(dir: &Path, run: Option<u32>) -> anyhow::Result<RecordedRun> {
    let (run, events) = run_events(dir, run)?;
    let mut recorded = RecordedRun {
        run,
        candles: Vec::new(),
        config_text: None,
        template_texts: Default::default(),
        scoped_templates: Vec::new(),
        start_settings: Vec::new(),
    };
    let mut clock = crypy_dataflow::host::CandleClock::default();
    let mut started = false;
    for e in events {
        match e.event {
            Event::TemplateChanged(t)
                if !started && t.scope == crypy_core::event::TemplateScope::Desk && t.key.ends_with(".toml") =>
            {
                if let Some(i) = crypy_agents::template::FILES.iter().position(|(name, _)| *name == t.key) {
                    recorded.template_texts[i] = t.new;
                }
            }
            Event::TemplateChanged(t) if !started && t.key.ends_with(".toml") => {
                if let Some(text) = t.new {
                    recorded.scoped_templates.push((t.scope, text));
                }
            }
            Event::TemplateChanged(t) if !started && matches!(e.source, crypy_core::AgentId::Desk { .. }) => {
                recorded.start_settings.push(t);
            }
            Event::VenueSettings(v) if recorded.config_text.is_none() => recorded.config_text = Some(v.text),
            // Repeated and stale candles were the venue's doing: its configuration does it again.
            Event::Candle(c) if clock.advances(&c) => {
                started = true;
                recorded.candles.push(c);
            }
            _ => {}
        }
    }
    Ok(recorded)
}

/// `crypy replay --into`: see [`ReplayArgs::into`].
fn what_if(args: &ReplayArgs, into: &Path) -> anyhow::Result<ExitCode> {
    let source = &args.dir.data_dir;
    let recorded = recorded_run(source, args.run)?;
    anyhow::ensure!(!recorded.candles.is_empty(), "run {} of {} saw no candles", recorded.run, source.display());
    if into.join("db").exists()
        || into.join("conf").exists()
        || std::fs::read_dir(into).is_ok_and(|mut d| d.next().is_some())
    {
        bail!("{} is not empty: a what-if writes a new log into a new data dir", into.display());
    }
    let (config, config_text) = match &recorded.config_text {
        Some(text) => (SimConfig::from_toml(text).context("the run's recorded simulator configuration")?, text.clone()),
        None => {
            eprintln!("run {} recorded no simulator configuration: using the default", recorded.run);
            (SimConfig::default(), crypy_exchange::sim::DEFAULT_TOML.to_string())
        }
    };
    let scoped = match &args.templates {
        Some(dir) => crypy_agents::template::read_scoped(dir)?,
        None => recorded.scoped_templates.clone(),
    };
    let (templates, texts) = match &args.templates {
        Some(dir) => {
            let texts = read_texts(dir)?;
            (Templates::parse_texts(&texts, dir)?, texts)
        }
        None => {
            let texts: [String; 3] = std::array::from_fn(|i| {
                recorded.template_texts[i].clone().unwrap_or_else(|| crypy_agents::template::FILES[i].1.to_string())
            });
            (Templates::parse_texts(&texts, Path::new(""))?, texts)
        }
    };
    // The same secret: holders sign with the same keys, so an unchanged what-if is the run
    // itself, signature for signature.
    std::fs::create_dir_all(into).with_context(|| format!("cannot create {}", into.display()))?;
    let secret = source.join("secret");
    std::fs::copy(&secret, into.join("secret")).with_context(|| format!("cannot copy {}", secret.display()))?;
    let desk_name = crypy_core::AgentId::desk("sim", &config.account)?.to_string();
    let expected = recorded.candles.len() as u64;
    let sim = crypy_exchange::sim::Simulator::new(config, recorded.candles)?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let scale = scale(args.workers, &args.cluster)?;
    let options = DeskOptions {
        template_texts: Some(texts),
        workers: scale.workers,
        cluster: scale.cluster,
        venue_settings: Some(config_text),
        scoped_templates: scoped,
        // What the run learned at its start, unless other templates are the question.
        start_settings: if args.templates.is_none() { recorded.start_settings } else { Vec::new() },
        ..DeskOptions::simulated(into.to_path_buf(), templates, expected)
    };
    let ui = crate::args::DeskUi {
        json: args.json,
        quiet: true,
        workers: args.workers,
        exec: Vec::new(),
        after: 0,
        control: crate::args::ControlArgs { control: None, control_token: None },
        fault_log_fails_after: None,
    };
    super::desk::drive(runtime, sim, options, &desk_name, into, &ui, false)
}

/// The summary of `run` (default: the last) of the log in `dir`.
pub(crate) fn summary_of(dir: &Path, run: Option<u32>) -> anyhow::Result<crypy_dataflow::summary::RunSummary> {
    let (run, events) = run_events(dir, run)?;
    let summary = crypy_dataflow::summary::summarize(run, events);
    anyhow::ensure!(summary.has_balances, "run {run} of {} ended before it recorded its balances", dir.display());
    Ok(summary)
}

pub fn compare(args: crate::args::CompareArgs) -> anyhow::Result<ExitCode> {
    let a = summary_of(&args.a, args.run_a)?;
    let b = summary_of(&args.b, args.run_b)?;
    let f = |m: crypy_core::Money| m.value().round_dp(2).to_string();
    let strategies: std::collections::BTreeSet<&String> = a.per_strategy.keys().chain(b.per_strategy.keys()).collect();
    let zero = crypy_dataflow::sim::StrategyResult::default();
    if args.json {
        let side = |s: &crypy_dataflow::summary::RunSummary| {
            json!({
                "run": s.run, "events": s.events, "candles": s.candles, "orders": s.orders, "fills": s.fills,
                "positions": s.positions, "asset": s.trusted.to_string(), "start_equity": s.start_equity.to_string(),
                "end_equity": s.end_equity.to_string(), "return": s.total_return(), "max_drawdown": s.max_drawdown,
                "fees": s.fees.to_string(),
                "per_strategy": s.per_strategy.iter().map(|(k, r)| (k.clone(), json!({
                    "positions": r.positions, "pnl": r.pnl.to_string(), "fees": r.fees.to_string() }))).collect::<serde_json::Map<_, _>>(),
            })
        };
        println!(
            "{}",
            json!({ "a": side(&a), "b": side(&b), "return_difference": b.total_return() - a.total_return() })
        );
        return Ok(ExitCode::SUCCESS);
    }
    use std::fmt::Write as _;
    let mut text = String::new();
    writeln!(
        text,
        "{:<22} {:>18} {:>18} {:>14}",
        "",
        format!("A (run {})", a.run),
        format!("B (run {})", b.run),
        "B − A"
    )?;
    let pct = |x: f64| format!("{:+.2}%", x * 100.0);
    writeln!(
        text,
        "{:<22} {:>18} {:>18} {:>14}",
        "return",
        pct(a.total_return()),
        pct(b.total_return()),
        pct(b.total_return() - a.total_return())
    )?;
    writeln!(
        text,
        "{:<22} {:>18} {:>18} {:>14}",
        format!("end equity ({})", a.trusted),
        f(a.end_equity),
        f(b.end_equity),
        f(b.end_equity - a.end_equity)
    )?;
    writeln!(
        text,
        "{:<22} {:>18} {:>18} {:>14}",
        "max drawdown",
        pct(a.max_drawdown),
        pct(b.max_drawdown),
        pct(b.max_drawdown - a.max_drawdown)
    )?;
    for (name, x, y) in [
        ("orders", a.orders, b.orders),
        ("fills", a.fills, b.fills),
        ("positions closed", u64::from(a.positions), u64::from(b.positions)),
        ("candles", a.candles, b.candles),
    ] {
        writeln!(
            text,
            "{:<22} {:>18} {:>18} {:>14}",
            name,
            out::count(x),
            out::count(y),
            format!("{:+}", y as i128 - x as i128)
        )?;
    }
    writeln!(text, "{:<22} {:>18} {:>18} {:>14}", "fees", f(a.fees), f(b.fees), f(b.fees - a.fees))?;
    if !strategies.is_empty() {
        writeln!(text)?;
        writeln!(text, "{:<22} {:>18} {:>18} {:>14}", "STRATEGY P&L", "A", "B", "B − A")?;
        for s in strategies {
            let (x, y) = (a.per_strategy.get(s).unwrap_or(&zero), b.per_strategy.get(s).unwrap_or(&zero));
            writeln!(
                text,
                "{:<22} {:>18} {:>18} {:>14}",
                s,
                format!("{} ({})", f(x.pnl), x.positions),
                format!("{} ({})", f(y.pnl), y.positions),
                f(y.pnl - x.pnl)
            )?;
        }
    }
    use std::io::Write as _;
    let mut stdout = out::stdout();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush())?;
    Ok(ExitCode::SUCCESS)
}

/// The candles of `run` in the log (run 0: those imported), in log order.
pub(crate) fn logged_candles(dir: &Path, run: u32) -> anyhow::Result<Vec<crypy_core::Candle>> {
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
    if let Some(into) = &args.into {
        return what_if(&args, into);
    }
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
