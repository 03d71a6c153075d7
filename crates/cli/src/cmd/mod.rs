mod bench;
mod log;
mod render;

use std::process::ExitCode;

use crate::args::{Cli, Command};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Log(cmd) => log::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
    }
}
