//! `crypy bench log`: what the log sustains on this machine.

use std::path::Path;
use std::time::{Duration, Instant};

use crypy_core::{AgentId, Event, NewEvent, Pair, Price, Qty, Side, Trade};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::{Error, EventLog, Options, Result};

/// Figures of one run; see [`bench_log`].
#[derive(Clone, Debug, Serialize)]
pub struct LogBench {
    pub events: u64,
    pub batch: usize,
    pub durability: &'static str,
    pub append_seconds: f64,
    /// Events appended per second, each batch fsynced before the next starts.
    pub appends_per_s: f64,
    pub scan_seconds: f64,
    /// Events read back and decoded per second.
    pub scan_per_s: f64,
    pub bytes_on_disk: u64,
    pub encoded_bytes_per_event: f64,
}

/// Small, realistic events: public trades with varying prices and sizes.
/// The `i`-th event of the benchmark: a trade, its fields varied so that they encode like
/// real ones.
fn sample_event(i: u64, pair: Pair, source: AgentId) -> NewEvent {
    NewEvent {
        run: 1,
        time: 1_700_000_000_000 + i as i64 * 50,
        wall: 1_700_000_000_000 + i as i64 * 50,
        source,
        cause: None,
        event: Event::Trade(Trade {
            pair,
            price: Price::new(Decimal::new(3_500_000 + (i % 9973) as i64, 1)),
            qty: Qty::new(Decimal::new(1 + (i % 777) as i64, 4)),
            side: Some(if i.is_multiple_of(2) { Side::Buy } else { Side::Sell }),
            trade_id: None,
        }),
    }
}

/// Appends `events` small events in batches of `batch` to a fresh log in `dir`, each batch
/// made durable before the next (the log's `EveryBatch` policy), then scans them all back.
///
/// # Errors
/// When `dir` already holds a log, or on any log error.
pub fn bench_log(dir: &Path, events: u64, batch: usize) -> Result<LogBench> {
    if dir.join("log").exists() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "the benchmark needs an empty directory"),
        ));
    }
    let log = EventLog::open(dir, Options { serve_readers: false, ..Options::default() })?;
    let (pair, source): (Pair, AgentId) =
        ("XBT/EUR".parse().expect("valid pair"), AgentId::desk("sim", "bench").expect("valid id"));
    // The events are made a million at a time (a thousand batches of the default size), and
    // only the appends are timed: the benchmark's memory stops growing with `events` past a
    // million (about 300 MB), and a million appends run back to back as before. Made a
    // hundred batches at a time, the appends measured ~5 % slower.
    let per_batch = batch.max(1);
    let per_round = 1_000_000u64.max(per_batch as u64);
    let mut appending = Duration::ZERO;
    let mut data = Vec::new();
    for first in (0..events).step_by(per_round as usize) {
        data.clear();
        data.extend((first..(first + per_round).min(events)).map(|i| sample_event(i, pair, source)));
        let started = Instant::now();
        for chunk in data.chunks(per_batch) {
            log.append(chunk)?;
        }
        appending += started.elapsed();
    }
    // The events' encoded size, made again rather than kept (they are a function of `i`).
    let mut bytes = Vec::new();
    let mut encoded = 0;
    for i in 0..events {
        bytes.clear();
        crate::event_encode::encode(&sample_event(i, pair, source), &mut bytes)
            .map_err(|e| Error::Encode(e.to_string()))?;
        encoded += bytes.len();
    }
    let append_seconds = appending.as_secs_f64();
    drop(data);

    let started = Instant::now();
    let mut seen = 0u64;
    let mut checksum = 0u64;
    for e in log.iter_from(1) {
        let e = e?;
        seen += 1;
        checksum = checksum.wrapping_add(e.seq ^ e.time as u64);
    }
    let scan_seconds = started.elapsed().as_secs_f64();
    std::hint::black_box(checksum);
    if seen != events {
        return Err(Error::Corrupt { seq: seen + 1, reason: format!("scanned {seen} events, appended {events}") });
    }
    Ok(LogBench {
        events,
        batch,
        durability: "every_batch",
        append_seconds,
        appends_per_s: events as f64 / append_seconds,
        scan_seconds,
        scan_per_s: events as f64 / scan_seconds,
        bytes_on_disk: log.size_on_disk()?,
        encoded_bytes_per_event: encoded as f64 / events.max(1) as f64,
    })
}
