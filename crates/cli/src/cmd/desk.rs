//! Running a desk on any venue from the command line: the terminals (REPL, control port,
//! `--exec` scripts), the narration, and the summary at the end.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use crypy_control::console::{Console, Script};
use crypy_control::describe::story;
use crypy_control::server::{Server, ServerOptions};
use crypy_core::time::format_utc;
use crypy_dataflow::sim::{run_desk, DeskOptions, SimReport};
use crypy_exchange::Exchange;
use serde_json::json;

use crate::args::DeskUi;
use crate::out;

/// Runs a desk on `venue` with terminals as `ui` asks, and prints what happened.
pub fn drive<E: Exchange>(
    runtime: tokio::runtime::Runtime,
    venue: E,
    options: DeskOptions,
    desk_name: &str,
    data_dir: &Path,
    ui: &DeskUi,
    stay: bool,
) -> anyhow::Result<ExitCode> {
    let scripted = !ui.exec.is_empty();
    let repl = std::io::stdin().is_terminal() && !ui.json && !scripted;
    let (link, inbox) = crypy_control::link::link();
    let mut console = Console::new(desk_name.to_string(), inbox, repl || stay);
    if scripted {
        let mut stdout = out::stdout();
        console = console.with_script(Script {
            lines: ui.exec.clone(),
            after: ui.after,
            write: Box::new(move |text| {
                // A closed stdout (a pipe into `head`) only ends the output, not the run.
                let _ = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
            }),
        });
    }
    let stopper = console.stopper();
    let server = match ui.control.control {
        Some(addr) => {
            let mut options = ServerOptions::new(addr, desk_name.to_string());
            options.token = ui.control.control_token.clone();
            let server = Server::start(options, link.clone())?;
            eprintln!("control: telnet {} (or `crypy attach {}`)", server.local_addr(), server.local_addr());
            Some(server)
        }
        None => None,
    };
    let terminal = repl.then(|| {
        let link = link.clone();
        let name = desk_name.to_string();
        let history = data_dir.join("history");
        let stopper = std::sync::Arc::clone(&stopper);
        eprintln!("{name}: the desk runs; type `help` for its commands, `quit` to end");
        std::thread::spawn(move || {
            let result = crypy_control::repl::run_local(link, &name, Some(history));
            stopper.store(true, std::sync::atomic::Ordering::Relaxed);
            result
        })
    });
    drop(link);
    let narrate = !(ui.json || ui.quiet || repl || scripted);
    let mut stdout = out::stdout();
    let mut failed: Option<std::io::Error> = None;
    let live_venue = options.poll.is_some();
    stop_on_signals(std::sync::Arc::clone(&stopper));
    let report = run_desk(
        runtime,
        venue,
        options,
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
            if !(ui.json || repl || scripted) {
                if live_venue {
                    eprintln!("… {} candles", out::count(done));
                } else {
                    eprintln!("… {} of {} candles", out::count(done), out::count(total));
                }
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
    if ui.json {
        println!("{}", summary_json(&report));
    } else {
        print_summary(&report, data_dir)?;
    }
    Ok(ExitCode::SUCCESS)
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

/// SIGINT or SIGTERM: the desk stops after the input in hand, its log flushed and its open
/// orders as the desk template's `on_stop` says. A second signal ends the process at once:
/// the log's appends are atomic, so even then no record is torn (the next start reconciles).
fn stop_on_signals(stopper: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut interrupt), Ok(mut terminate)) =
                (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
            else {
                return;
            };
            let mut received = 0;
            loop {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                received += 1;
                if received == 1 {
                    eprintln!("stopping: the desk ends after the input in hand (a second signal ends it at once)");
                    stopper.store(true, std::sync::atomic::Ordering::Relaxed);
                } else {
                    eprintln!("stopped at once");
                    std::process::exit(130);
                }
            }
        });
    });
    if let Err(e) = spawned {
        eprintln!("signals will end crypy at once: {e}");
    }
}
