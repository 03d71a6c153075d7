//! `crypy bench log`: what the log sustains on this machine.

use std::path::Path;
use std::time::Instant;

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
fn sample_events(n: u64) -> Vec<NewEvent> {
    let pair: Pair = "XBT/EUR".parse().expect("valid pair");
    let source = AgentId::desk("sim", "bench").expect("valid id");
    (0..n)
        .map(|i| NewEvent {
            run: 1,
            time: 1_700_000_000_000 + i as i64 * 50,
            wall: 1_700_000_000_000 + i as i64 * 50,
            source,
            cause: None,
            event: Event::Trade(Trade {
                pair,
                price: Price::new(Decimal::new(3_500_000 + (i % 9973) as i64, 1)),
                qty: Qty::new(Decimal::new(1 + (i % 777) as i64, 4)),
                side: Some(if i % 2 == 0 { Side::Buy } else { Side::Sell }),
                trade_id: None,
            }),
        })
        .collect()
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
    let data = sample_events(events);
    let log = EventLog::open(dir, Options { serve_readers: false, ..Options::default() })?;
    let started = Instant::now();
    for chunk in data.chunks(batch.max(1)) {
        log.append(chunk)?;
    }
    let append_seconds = started.elapsed().as_secs_f64();
    let encoded: usize = data
        .iter()
        .map(|e| bincode::serde::encode_to_vec(e, bincode::config::standard()).map(|v| v.len()).unwrap_or(0))
        .sum();
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
