use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use crypy_core::time::format_utc;
use crypy_core::Envelope;
use crypy_eventstore::export::ParquetExport;
use crypy_eventstore::{Error, EventLog, LogReader, Options};
use serde_json::json;

use super::render;
use crate::args::{DataCommand, Filter, LogCommand};
use crate::out::{self, Out};

fn wall_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Opens an existing log for reading, through its live writer if one runs; reading
/// commands never create a data dir by accident.
fn open_reader(dir: &Path) -> anyhow::Result<LogReader> {
    LogReader::open(dir).map_err(|e| match e {
        Error::NoLog { .. } => {
            anyhow::anyhow!("{e} (create one with `crypy log import-candles`, or pass --data-dir)")
        }
        other => explain(other, dir),
    })
}

/// Waits a little for the lock, which a reader polling the log holds for a moment at a time.
fn open_writer(dir: &Path) -> anyhow::Result<EventLog> {
    EventLog::open(dir, Options { lock_wait: Duration::from_secs(3), ..Options::default() })
        .map_err(|e| explain(e, dir))
}

fn explain(e: Error, dir: &Path) -> anyhow::Error {
    match e {
        Error::Locked { .. } => anyhow::Error::new(e)
            .context(format!("another crypy process is using {}; stop it or wait for it to finish", dir.display())),
        other => anyhow::Error::new(other).context(format!("cannot open the log in {}", dir.display())),
    }
}

impl Filter {
    fn keeps(&self, e: &Envelope) -> bool {
        (self.kind.is_empty() || self.kind.contains(&e.kind()))
            && self.pair.as_ref().is_none_or(|p| e.event.pair() == Some(p))
            && self.agent.as_ref().is_none_or(|a| &e.source == a)
    }
}

fn print(out: &mut Out, e: &Envelope, json: bool) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", e.to_json_line())?;
    } else {
        writeln!(out, "{}", render::row(e))?;
    }
    Ok(())
}

pub fn run(cmd: LogCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LogCommand::ImportCandles { dir, pair, interval, format, json, files } => {
            let log = open_writer(&dir.data_dir)?;
            let summary = crypy_eventstore::ingest::import_candles(&log, &pair, interval, &files, format, wall_now())?;
            if json {
                let files: Vec<_> = summary
                    .files
                    .iter()
                    .map(|f| json!({"file": f.path, "candles": f.candles, "first_open_time": f.first_open_time, "last_open_time": f.last_open_time}))
                    .collect();
                println!(
                    "{}",
                    json!({"pair": pair.to_string(), "interval": interval.to_string(), "appended": summary.seqs.len(), "first_seq": summary.seqs.first, "last_seq": summary.seqs.last, "files": files})
                );
            } else {
                for f in &summary.files {
                    println!(
                        "{}: {} candles, {} .. {}",
                        f.path.display(),
                        out::count(f.candles as u64),
                        format_utc(f.first_open_time),
                        format_utc(f.last_open_time)
                    );
                }
                println!(
                    "appended {} {pair} {interval} candles as seqs {}..={} in {}",
                    out::count(summary.seqs.len()),
                    summary.seqs.first,
                    summary.seqs.last,
                    dir.data_dir.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        LogCommand::Stats { dir, json } => stats(&dir.data_dir, json),
        LogCommand::Show { dir, filter, limit, json } => {
            let mut out = out::stdout();
            if !json {
                writeln!(out, "{}", render::header())?;
            }
            let mut shown = 0u64;
            for e in batched(&dir.data_dir, filter.from, filter.to) {
                let e = e?;
                if limit.is_some_and(|l| shown >= l) {
                    break;
                }
                if filter.keeps(&e) {
                    print(&mut out, &e, json)?;
                    shown += 1;
                }
            }
            out::flush(&mut out)?;
            Ok(ExitCode::SUCCESS)
        }
        LogCommand::Tail { dir, lines, follow, json } => {
            let last = open_reader(&dir.data_dir)?.last_seq()?;
            let mut out = out::stdout();
            if !json {
                writeln!(out, "{}", render::header())?;
            }
            let mut next = last.saturating_sub(lines) + 1;
            for e in batched(&dir.data_dir, next, last) {
                let e = e?;
                next = e.seq + 1;
                print(&mut out, &e, json)?;
            }
            out::flush(&mut out)?;
            if follow {
                follow_log(&dir.data_dir, next, json, &mut out)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        LogCommand::Verify { dir, json } => {
            let log = open_reader(&dir.data_dir)?;
            let r = log.verify()?;
            if json {
                println!(
                    "{}",
                    json!({"ok": r.is_ok(), "records": r.records, "events": r.events, "last_good_seq": r.last_seq,
                           "bad_seq": r.problem.as_ref().map(|p| p.seq), "reason": r.problem.as_ref().map(|p| p.reason.clone())})
                );
            } else if let Some(p) = &r.problem {
                println!(
                    "log is damaged: first bad seq {}: {} ({} events before it are intact)",
                    p.seq,
                    p.reason,
                    out::count(r.events)
                );
            } else {
                println!(
                    "ok: {} events in {} records, seqs 1..={}, every checksum valid",
                    out::count(r.events),
                    out::count(r.records),
                    r.last_seq
                );
            }
            Ok(if r.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        LogCommand::Export { dir, filter, parquet } => {
            let mut export = ParquetExport::create(&parquet)?;
            for e in batched(&dir.data_dir, filter.from, filter.to) {
                let e = e?;
                if filter.keeps(&e) {
                    export.push(&e)?;
                }
            }
            let rows = export.finish().with_context(|| format!("cannot export to {}", parquet.display()))?;
            println!("wrote {} events to {}", out::count(rows), parquet.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Events read per batch by [`Batched`]: at ~3 M events/s a batch holds the log for well
/// under a second.
const BATCH: usize = 200_000;

/// The events from `from` to `to` (inclusive), read a batch at a time with the log released
/// before the batch is handed out: a reader whose output blocks (a pipe nobody reads) never
/// holds the data dir's lock, and never stops a writer from starting.
pub fn data(cmd: DataCommand) -> anyhow::Result<ExitCode> {
    let DataCommand::ExportCandles { dir, pair, run, parquet } = cmd;
    let mut seen = std::collections::HashSet::new();
    let mut candles = Vec::new();
    for e in batched(&dir.data_dir, 1, u64::MAX) {
        let e = e?;
        let crypy_core::Event::Candle(c) = e.event else { continue };
        if run.is_some_and(|r| r != e.run) || pair.is_some_and(|p| p != c.pair) {
            continue;
        }
        if seen.insert((c.pair, c.interval, c.open_time)) {
            candles.push(c);
        }
    }
    candles.sort_by_key(|c| (c.open_time, c.pair, c.interval.millis()));
    let rows = crypy_eventstore::export::write_candles(&parquet, &candles)
        .with_context(|| format!("cannot export to {}", parquet.display()))?;
    let pairs: std::collections::BTreeSet<String> = candles.iter().map(|c| c.pair.to_string()).collect();
    let pairs = pairs.into_iter().collect::<Vec<_>>().join(", ");
    println!(
        "wrote {} candles ({}) to {}",
        out::count(rows),
        if pairs.is_empty() { "none" } else { &pairs },
        parquet.display()
    );
    Ok(ExitCode::SUCCESS)
}

struct Batched<'a> {
    dir: &'a Path,
    next: u64,
    to: u64,
    buf: std::vec::IntoIter<Envelope>,
    done: bool,
}

fn batched(dir: &Path, from: u64, to: u64) -> Batched<'_> {
    Batched { dir, next: from.max(1), to, buf: Vec::new().into_iter(), done: false }
}

impl Batched<'_> {
    fn refill(&mut self) -> anyhow::Result<()> {
        let reader = open_reader(self.dir)?;
        let to = self.to;
        let batch: Vec<Envelope> = reader
            .iter_from(self.next)?
            .take_while(|e| e.as_ref().map_or(true, |e| e.seq <= to))
            .take(BATCH)
            .collect::<Result<_, _>>()?;
        drop(reader);
        if batch.len() < BATCH {
            self.done = true;
        }
        if let Some(last) = batch.last() {
            self.next = last.seq + 1;
        }
        self.buf = batch.into_iter();
        Ok(())
    }
}

impl Iterator for Batched<'_> {
    type Item = anyhow::Result<Envelope>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.buf.next() {
                return Some(Ok(e));
            }
            if self.done || self.next > self.to {
                return None;
            }
            if let Err(e) = self.refill() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}

/// Follows the log until interrupted. While a writer runs, its events arrive through it as
/// they are appended; while none runs, the log is polled in batches, never held while
/// printing, so that a writer can always start.
fn follow_log(dir: &Path, mut next: u64, json: bool, out: &mut Out) -> anyhow::Result<()> {
    loop {
        match LogReader::open(dir) {
            Ok(reader) if reader.is_remote() => {
                for e in reader.follow(next)? {
                    let e = e?;
                    next = e.seq + 1;
                    print(out, &e, json)?;
                    out::flush(out)?;
                }
            }
            Ok(reader) => {
                drop(reader);
                for e in batched(dir, next, u64::MAX) {
                    match e {
                        Ok(e) => {
                            next = e.seq + 1;
                            print(out, &e, json)?;
                        }
                        // A writer started between two batches and is not serving yet.
                        Err(e) if matches!(e.downcast_ref::<Error>(), Some(Error::Locked { .. })) => break,
                        Err(e) => return Err(e),
                    }
                }
                out::flush(out)?;
                std::thread::sleep(Duration::from_millis(250));
            }
            // A writer is starting and not serving yet.
            Err(Error::Locked { .. }) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(explain(e, dir)),
        }
    }
}

fn stats(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut total = 0u64;
    let mut first = None;
    let mut last = 0u64;
    let mut runs: BTreeMap<u32, u64> = BTreeMap::new();
    let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut time_range: Option<(i64, i64)> = None;
    for e in batched(dir, 1, u64::MAX) {
        let e = e?;
        total += 1;
        first.get_or_insert(e.seq);
        last = e.seq;
        *runs.entry(e.run).or_default() += 1;
        *kinds.entry(e.kind().name()).or_default() += 1;
        time_range = Some(match time_range {
            None => (e.time, e.time),
            Some((lo, hi)) => (lo.min(e.time), hi.max(e.time)),
        });
    }
    let size = crypy_eventstore::remote::size_on_disk(dir);
    if json {
        println!(
            "{}",
            json!({
                "events": total, "first_seq": first, "last_seq": (total > 0).then_some(last),
                "runs": runs.iter().map(|(r, n)| json!({"run": r, "events": n})).collect::<Vec<_>>(),
                "time_from": time_range.map(|t| t.0), "time_to": time_range.map(|t| t.1),
                "kinds": kinds, "bytes_on_disk": size,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = out::stdout();
    writeln!(out, "data dir     {}", dir.display())?;
    writeln!(out, "events       {}", out::count(total))?;
    match first {
        Some(f) => writeln!(out, "seqs         {f}..={last}")?,
        None => writeln!(out, "seqs         (empty log)")?,
    }
    if let Some((lo, hi)) = time_range {
        writeln!(out, "event time   {} .. {}", format_utc(lo), format_utc(hi))?;
    }
    let runs_text: Vec<String> = runs
        .iter()
        .map(
            |(r, n)| {
                if *r == 0 {
                    format!("0 (imported): {}", out::count(*n))
                } else {
                    format!("{r}: {}", out::count(*n))
                }
            },
        )
        .collect();
    writeln!(out, "runs         {}", if runs_text.is_empty() { "-".to_string() } else { runs_text.join(", ") })?;
    writeln!(out, "on disk      {:.1} MB", size as f64 / 1e6)?;
    if !kinds.is_empty() {
        writeln!(out, "\n{:<24} {:>12}", "KIND", "EVENTS")?;
        for (k, n) in &kinds {
            writeln!(out, "{k:<24} {:>12}", out::count(*n))?;
        }
    }
    out::flush(&mut out)?;
    Ok(ExitCode::SUCCESS)
}
