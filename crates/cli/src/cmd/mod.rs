mod bench;
mod bench_desk;
mod bench_sweep;
mod desk;
mod learn;
mod log;
mod render;
mod report;
mod sim;
mod templates;
mod venue;

use std::process::ExitCode;

use crate::args::{Cli, Command};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Sim(args) => sim::run(args),
        Command::Kraken(args) => venue::kraken(args),
        Command::Bitmex(args) => venue::bitmex(args),
        Command::Replay(args) => sim::replay(args),
        Command::Compare(args) => sim::compare(args),
        Command::Report(args) => report::run(args),
        Command::Learn(args) => learn::run(args),
        Command::Attach(args) => {
            crypy_control::repl::attach(&args.addr, args.token.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Log(cmd) => log::run(cmd),
        Command::Data(cmd) => log::data(cmd),
        Command::Templates(cmd) => templates::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
    }
}
