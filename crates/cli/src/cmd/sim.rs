use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use crypy_agents::template::{read_texts, Templates};
use crypy_control::console::{Console, Script};
use crypy_control::describe::story;
use crypy_control::server::{Server, ServerOptions};
use crypy_core::time::format_utc;
use crypy_core::Event;
use crypy_dataflow::sim::{run_steered, SimOptions, SimReport};
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
        candles = imported_candles(&args.dir.data_dir)?;
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
    let scripted = !args.exec.is_empty();
    let repl = std::io::stdin().is_terminal() && !args.json && !scripted;
    let desk_name = crypy_core::AgentId::desk("sim", &config.account)?.to_string();
    let (link, inbox) = crypy_control::link::link();
    let mut console = Console::new(desk_name.clone(), inbox, repl || args.stay);
    if scripted {
        let mut stdout = out::stdout();
        console = console.with_script(Script {
            lines: args.exec.clone(),
            after: args.after,
            write: Box::new(move |text| {
                // A closed stdout (a pipe into `head`) only ends the output, not the run.
                let _ = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
            }),
        });
    }
    let stopper = console.stopper();
    let server = match args.control.control {
        Some(addr) => {
            let mut options = ServerOptions::new(addr, desk_name.clone());
            options.token = args.control.control_token.clone();
            let server = Server::start(options, link.clone())?;
            eprintln!("control: telnet {} (or `crypy attach {}`)", server.local_addr(), server.local_addr());
            Some(server)
        }
        None => None,
    };
    let terminal = repl.then(|| {
        let link = link.clone();
        let name = desk_name.clone();
        let history = args.dir.data_dir.join("history");
        let stopper = std::sync::Arc::clone(&stopper);
        eprintln!("{name}: the desk runs; type `help` for its commands, `quit` to end");
        std::thread::spawn(move || {
            let result = crypy_control::repl::run_local(link, &name, Some(history));
            stopper.store(true, std::sync::atomic::Ordering::Relaxed);
            result
        })
    });
    drop(link);
    let narrate = !(args.json || args.quiet || repl || scripted);
    let mut stdout = out::stdout();
    let mut failed: Option<std::io::Error> = None;
    let report = run_steered(
        SimOptions {
            data_dir: args.dir.data_dir.clone(),
            candles,
            config,
            templates,
            template_texts: texts,
            workers: usize::from(args.workers),
            speed: args.speed,
            // A paced desk is the live simulator: orders leave only once the log holds them.
            live: args.speed.is_some(),
        },
        |e| {
            if narrate && failed.is_none() {
                if let Some(text) = story(e) {
                    if let Err(err) = writeln!(stdout, "{}  {:<12} {text}", format_utc(e.time), e.source.to_string()) {
                        failed = Some(err);
                    }
                }
            }
        },
        |done, total| {
            if !(args.json || repl || scripted) {
                eprintln!("… {} of {} candles", out::count(done), out::count(total));
            }
        },
        &mut console,
    )?;
    drop(server);
    if let Some(terminal) = terminal {
        if let Ok(Err(e)) = terminal.join() {
            eprintln!("the terminal stopped: {e}");
        }
    }
    if let Some(err) = failed {
        return Err(err.into());
    }
    out::flush(&mut stdout)?;
    if scripted {
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        println!("{}", summary_json(&report));
    } else {
        print_summary(&report, &args.dir.data_dir)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The candles imported into the log (run 0), in log order.
fn imported_candles(dir: &Path) -> anyhow::Result<Vec<crypy_core::Candle>> {
    let reader = LogReader::open(dir).with_context(|| format!("cannot read the log in {}", dir.display()))?;
    let mut candles = Vec::new();
    for e in reader.iter_from(1)? {
        let e = e?;
        if let (0, Event::Candle(c)) = (e.run, e.event) {
            candles.push(c);
        }
    }
    anyhow::ensure!(
        !candles.is_empty(),
        "no imported candles in {} (import some with `crypy log import-candles`)",
        dir.display()
    );
    Ok(candles)
}

fn money(m: crypy_core::Money) -> String {
    m.value().round_dp(2).to_string()
}

fn summary_json(r: &SimReport) -> serde_json::Value {
    let per: serde_json::Map<String, serde_json::Value> = r
        .per_strategy
        .iter()
        .map(|(k, v)| (k.clone(), json!({"positions": v.positions, "pnl": v.pnl.normalize().to_string(), "fees": v.fees.normalize().to_string()})))
        .collect();
    json!({
        "run": r.run, "first_seq": r.first_seq, "last_seq": r.last_seq, "events": r.events, "candles": r.candles,
        "orders": r.orders, "fills": r.fills, "positions": r.positions, "asset": r.trusted.to_string(),
        "start_equity": r.start_equity.normalize().to_string(), "end_equity": r.end_equity.normalize().to_string(),
        "return": r.total_return(), "fees": r.fees.normalize().to_string(), "max_drawdown": r.max_drawdown,
        "per_strategy": per,
        "accounting_ok": r.accounting_mismatches.is_empty(),
        "accounting_mismatches": r.accounting_mismatches,
        "end_balances": r.end_balances.iter().map(|b| json!({"asset": b.asset.to_string(), "free": b.free.normalize().to_string(), "reserved": b.reserved.normalize().to_string()})).collect::<Vec<_>>(),
    })
}

fn print_summary(r: &SimReport, dir: &Path) -> anyhow::Result<()> {
    let mut o = out::stdout();
    let a = r.trusted;
    writeln!(
        o,
        "\nrun {} in {}: {} candles, {} events (seqs {}..={})",
        r.run,
        dir.display(),
        out::count(r.candles),
        out::count(r.events),
        r.first_seq,
        r.last_seq
    )?;
    writeln!(
        o,
        "equity        {} {a} → {} {a} ({:+.2}%), max drawdown {:.2}%",
        money(r.start_equity),
        money(r.end_equity),
        r.total_return() * 100.0,
        r.max_drawdown * 100.0
    )?;
    writeln!(
        o,
        "trading       {} orders, {} fills, {} positions closed, fees {} {a}",
        r.orders,
        r.fills,
        r.positions,
        money(r.fees)
    )?;
    let balances: Vec<String> =
        r.end_balances.iter().map(|b| format!("{} {}", b.total().normalize(), b.asset)).collect();
    writeln!(o, "balances      {}", balances.join(", "))?;
    if r.accounting_mismatches.is_empty() {
        writeln!(o, "accounting    end balances = start + fills − fees, exactly (differential ledger)")?;
    } else {
        for m in &r.accounting_mismatches {
            writeln!(o, "accounting    MISMATCH {m}")?;
        }
    }
    if !r.per_strategy.is_empty() {
        writeln!(o, "\n{:<24} {:>9} {:>14} {:>12}", "STRATEGY", "POSITIONS", format!("P&L {a}"), format!("FEES {a}"))?;
        for (name, s) in &r.per_strategy {
            writeln!(o, "{name:<24} {:>9} {:>14} {:>12}", s.positions, money(s.pnl), money(s.fees))?;
        }
    }
    writeln!(
        o,
        "\ninspect with `crypy log show --data-dir {}`, check with `crypy replay --verify --data-dir {}`",
        dir.display(),
        dir.display()
    )?;
    out::flush(&mut o)
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
