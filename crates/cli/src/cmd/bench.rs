use std::process::ExitCode;

use anyhow::Context;

use crate::args::BenchCommand;
use crate::out;

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
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
    }
}
