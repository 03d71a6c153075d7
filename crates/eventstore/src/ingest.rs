//! Appending imported candle files to the log, all or nothing.

use std::path::PathBuf;

use crypy_core::time::format_utc;
use crypy_core::{AgentId, Candle, Event, Interval, NewEvent, Pair};

use crate::import::{read_candles, CandleFormat, ImportError};
use crate::{EventLog, Result, SeqRange};

/// What one imported file held.
#[derive(Clone, Debug)]
pub struct ImportedFile {
    pub path: PathBuf,
    pub candles: usize,
    pub first_open_time: i64,
    pub last_open_time: i64,
}

#[derive(Clone, Debug)]
pub struct ImportSummary {
    /// In time order (not necessarily the order given).
    pub files: Vec<ImportedFile>,
    pub seqs: SeqRange,
}

/// Reads every file, checks them together against each other and against the candles of the
/// same pair and interval already in the log, then appends them in one atomic append.
///
/// Files are ordered by their first candle, so that a shell glob's order
/// (`2021-5-10.json` before `2021-5-2.json`) does not matter. Candle events carry run 0
/// (imported outside any desk lifetime), source `@import`, and the candle's close time as
/// event time.
///
/// # Errors
/// On any problem nothing is appended: a malformed file ([`ImportError`] with file and
/// line), files that overlap each other, or candles not after those already imported.
pub fn import_candles(
    log: &EventLog,
    pair: &Pair,
    interval: Interval,
    paths: &[PathBuf],
    format: Option<CandleFormat>,
    wall: i64,
) -> Result<ImportSummary> {
    let mut files: Vec<(PathBuf, Vec<Candle>)> = Vec::with_capacity(paths.len());
    for path in paths {
        files.push((path.clone(), read_candles(path, pair, interval, format)?));
    }
    files.sort_by_key(|(_, candles)| candles[0].open_time);
    for w in files.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let (a_last, b_first) = (a.1.last().unwrap().open_time, b.1[0].open_time);
        if b_first <= a_last {
            return Err(ImportError {
                file: b.0.clone(),
                line: None,
                message: format!(
                    "overlaps {} (its candles run to {}, this file starts at {}); nothing was imported",
                    a.0.display(),
                    format_utc(a_last),
                    format_utc(b_first)
                ),
            }
            .into());
        }
    }
    if let Some((seq, last)) = last_candle(log, pair, interval)? {
        let (path, candles) = &files[0];
        if candles[0].open_time <= last {
            return Err(ImportError {
                file: path.clone(),
                line: None,
                message: format!(
                    "starts at {}, but the log already has {pair} {interval} candles up to {} (seq {seq}); import only newer data, or use another data dir. Nothing was imported",
                    format_utc(candles[0].open_time),
                    format_utc(last)
                ),
            }
            .into());
        }
    }
    let source = AgentId::system("import").expect("valid system name");
    let summary: Vec<ImportedFile> = files
        .iter()
        .map(|(path, c)| ImportedFile {
            path: path.clone(),
            candles: c.len(),
            first_open_time: c[0].open_time,
            last_open_time: c.last().unwrap().open_time,
        })
        .collect();
    let events: Vec<NewEvent> = files
        .into_iter()
        .flat_map(|(_, candles)| candles)
        .map(|c| NewEvent { run: 0, time: c.close_time(), wall, source, cause: None, event: Event::Candle(c) })
        .collect();
    let seqs = log.append(&events)?;
    Ok(ImportSummary { files: summary, seqs })
}

/// The seq and open time of the newest candle of `pair` at `interval` in the log.
pub fn last_candle(log: &EventLog, pair: &Pair, interval: Interval) -> Result<Option<(u64, i64)>> {
    let mut last = None;
    for e in log.iter_from(1) {
        let e = e?;
        if let Event::Candle(c) = &e.event {
            if &c.pair == pair && c.interval == interval && last.is_none_or(|(_, t)| c.open_time > t) {
                last = Some((e.seq, c.open_time));
            }
        }
    }
    Ok(last)
}
