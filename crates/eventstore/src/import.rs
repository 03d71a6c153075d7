//! Candle files into candle events.
//!
//! Three real formats are read, recognised from their content:
//!
//! | format  | shape                                                        | time column          |
//! |---------|--------------------------------------------------------------|----------------------|
//! | CSV     | header naming `ts` (or `time`/`timestamp`), `open`, `high`, `low`, `close`, `volume`, optionally `count`/`trades` | open time, s or ms |
//! | Kraken  | Kraken's OHLCVT export: `time,open,high,low,close,volume,trades`, no header | open time, s |
//! | BitMEX  | a JSON array as `GET /api/v1/trade/bucketed` returns it      | **end** of the bucket |
//! | Parquet | columns named as for CSV; times as integers (s or ms) or Arrow timestamps; prices as decimals, integers, strings or floats (read by their shortest round-trip text) | open time |
//!
//! A time below 10^11 is read as seconds, otherwise as milliseconds (10^11 s is the year
//! 5138; 10^11 ms is 1973). BitMEX volume is `homeNotional` (base asset: XBT for XBTUSD),
//! rounded to 8 decimals because BitMEX's JSON carries float noise (`43.23621418000001`).
//!
//! Each file is parsed and checked whole before anything is appended: rows must be in
//! strictly increasing time and aligned to the interval (so gaps are whole intervals, which is
//! fine: Kraken omits empty intervals), and sane (`low <= close <= high`, volume >= 0).

use std::fmt;
use std::path::{Path, PathBuf};

use crypy_core::money::parse_decimal;
use crypy_core::{Candle, Interval, Pair, Price, Qty};
use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;

/// A file that cannot be imported, with where and why.
#[derive(Debug, Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ImportError {
    pub file: PathBuf,
    /// 1-based line (CSV) or record number (JSON), when the problem has one.
    pub line: Option<usize>,
    pub message: String,
}

/// The candle file formats; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CandleFormat {
    Csv,
    Kraken,
    Bitmex,
}

impl fmt::Display for CandleFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CandleFormat::Csv => "csv",
            CandleFormat::Kraken => "kraken",
            CandleFormat::Bitmex => "bitmex",
        })
    }
}

impl std::str::FromStr for CandleFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "csv" => Ok(CandleFormat::Csv),
            "kraken" => Ok(CandleFormat::Kraken),
            "bitmex" => Ok(CandleFormat::Bitmex),
            _ => Err(format!("unknown candle format {s:?}; expected csv, kraken or bitmex")),
        }
    }
}

/// Recognises the format from the first non-blank bytes.
pub fn detect_format(text: &str) -> Option<CandleFormat> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('[') {
        return Some(CandleFormat::Bitmex);
    }
    let first = trimmed.lines().next()?;
    let field = first.split(',').next()?.trim();
    if field.parse::<u64>().is_ok() {
        Some(CandleFormat::Kraken)
    } else if !field.is_empty() {
        Some(CandleFormat::Csv)
    } else {
        None
    }
}

/// Reads and checks one candle file.
///
/// # Errors
/// [`ImportError`] naming the file and line of the first problem.
pub fn read_candles(
    path: &Path,
    pair: &Pair,
    interval: Interval,
    format: Option<CandleFormat>,
) -> Result<Vec<Candle>, ImportError> {
    let err = |message: String| ImportError { file: path.to_path_buf(), line: None, message };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if format.is_none() && bytes.starts_with(b"PAR1") {
        let candles = parquet_candles(bytes, path, pair, interval)?;
        check_sequence(&candles, interval).map_err(|(i, message)| ImportError {
            file: path.to_path_buf(),
            line: Some(i + 1),
            message,
        })?;
        return Ok(candles);
    }
    let text = String::from_utf8(bytes).map_err(|_| err("not UTF-8 text, nor a Parquet file".into()))?;
    parse_candles(&text, path, pair, interval, format)
}

/// One cell as exact text: integers and decimals as they are, floats by their shortest
/// round-trip form (`25507.0` is `25507`), strings as they are.
fn cell_text(col: &arrow_array::ArrayRef, row: usize) -> Option<String> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use arrow_schema::DataType;
    if col.is_null(row) {
        return None;
    }
    Some(match col.data_type() {
        DataType::Float64 => col.as_primitive::<Float64Type>().value(row).to_string(),
        DataType::Float32 => col.as_primitive::<Float32Type>().value(row).to_string(),
        DataType::Int64 => col.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Int32 => col.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::UInt64 => col.as_primitive::<UInt64Type>().value(row).to_string(),
        DataType::UInt32 => col.as_primitive::<UInt32Type>().value(row).to_string(),
        DataType::Utf8 => col.as_string::<i32>().value(row).to_string(),
        DataType::LargeUtf8 => col.as_string::<i64>().value(row).to_string(),
        DataType::Decimal128(_, scale) => rust_decimal::Decimal::try_from_i128_with_scale(
            col.as_primitive::<Decimal128Type>().value(row),
            (*scale).max(0) as u32,
        )
        .ok()?
        .to_string(),
        _ => return None,
    })
}

/// A time cell in ms: Arrow timestamps of any unit, or whole numbers of s or ms.
fn cell_ms(col: &arrow_array::ArrayRef, row: usize) -> Option<i64> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use arrow_schema::{DataType, TimeUnit};
    if col.is_null(row) {
        return None;
    }
    match col.data_type() {
        // A time past i64 in ms is no time: refused as "not a time", not a panic.
        DataType::Timestamp(TimeUnit::Second, _) => {
            col.as_primitive::<TimestampSecondType>().value(row).checked_mul(1000)
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Some(col.as_primitive::<TimestampMillisecondType>().value(row))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Some(col.as_primitive::<TimestampMicrosecondType>().value(row) / 1000)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            Some(col.as_primitive::<TimestampNanosecondType>().value(row) / 1_000_000)
        }
        _ => ms_from_epoch_number(&cell_text(col, row)?).ok(),
    }
}

/// Candles from a Parquet file with columns named as in the CSV format (`ts`/`time`/
/// `timestamp`, `open`, `high`, `low`, `close`, `volume`, optionally `count`/`trades`).
fn parquet_candles(bytes: Vec<u8>, path: &Path, pair: &Pair, interval: Interval) -> Result<Vec<Candle>, ImportError> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let err = |line: Option<usize>, message: String| ImportError { file: path.to_path_buf(), line, message };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .and_then(|b| b.build())
        .map_err(|e| err(None, format!("not a readable Parquet file: {e}")))?;
    let mut candles = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| err(None, format!("Parquet: {e}")))?;
        let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().to_ascii_lowercase()).collect();
        let fields: Vec<&str> = names.iter().map(String::as_str).collect();
        let cols = header_columns(&fields).map_err(|m| err(None, m))?;
        let col = |i: usize| batch.column(cols[i].expect("required columns are always set"));
        for row in 0..batch.num_rows() {
            let n = candles.len() + 1;
            let at = |m: String| err(Some(n), format!("row {n}: {m}"));
            let text = |i: usize, name: &str| {
                cell_text(col(i), row).ok_or_else(|| at(format!("{name} is missing or not a number")))
            };
            let open_time = cell_ms(col(0), row).ok_or_else(|| at("time is missing or not a time".into()))?;
            let candle = Candle {
                pair: *pair,
                interval,
                open_time,
                open: price(&text(1, "open")?, "open").map_err(at)?,
                high: price(&text(2, "high")?, "high").map_err(at)?,
                low: price(&text(3, "low")?, "low").map_err(at)?,
                close: price(&text(4, "close")?, "close").map_err(at)?,
                volume: qty(&text(5, "volume")?, "volume").map_err(at)?,
                trades: cols[6].and_then(|c| cell_text(batch.column(c), row)).and_then(|t| t.parse().ok()),
            };
            candle.check().map_err(at)?;
            candles.push(candle);
        }
    }
    if candles.is_empty() {
        return Err(err(None, "no candles in file".into()));
    }
    Ok(candles)
}

/// Like [`read_candles`], for text already in memory; `name` is used in error messages.
pub fn parse_candles(
    text: &str,
    name: &Path,
    pair: &Pair,
    interval: Interval,
    format: Option<CandleFormat>,
) -> Result<Vec<Candle>, ImportError> {
    let err = |line: Option<usize>, message: String| ImportError { file: name.to_path_buf(), line, message };
    let format = match format.or_else(|| detect_format(text)) {
        Some(f) => f,
        None => return Err(err(None, "empty file, or not a candle file (CSV, Kraken OHLCVT or BitMEX JSON)".into())),
    };
    let candles = match format {
        CandleFormat::Csv | CandleFormat::Kraken => parse_csv(text, pair, interval, format),
        CandleFormat::Bitmex => parse_bitmex(text, pair, interval),
    }
    .map_err(|(line, message)| err(line, message))?;
    check_sequence(&candles, interval).map_err(|(i, message)| err(Some(line_of(text, format, i)), message))?;
    if candles.is_empty() {
        return Err(err(None, "no candles in file".into()));
    }
    Ok(candles)
}

/// Maps a candle index back to its line (CSV) or record number (JSON) for messages.
fn line_of(text: &str, format: CandleFormat, index: usize) -> usize {
    match format {
        CandleFormat::Bitmex => index + 1,
        _ => {
            let mut seen = 0;
            for (n, line) in text.lines().enumerate() {
                let field = line.split(',').next().unwrap_or("").trim();
                if field.parse::<f64>().is_ok() {
                    if seen == index {
                        return n + 1;
                    }
                    seen += 1;
                }
            }
            index + 1
        }
    }
}

type RowError = (Option<usize>, String);

fn ms_from_epoch_number(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let value: i64 = match t.parse() {
        Ok(v) => v,
        // Some exports write whole seconds as floats (`1498910400.0`).
        Err(_) => match t.strip_suffix(".0").and_then(|w| w.parse().ok()) {
            Some(v) => v,
            None => return Err(format!("time {t:?} is not a whole number of seconds or milliseconds")),
        },
    };
    if value < 0 {
        return Err(format!("time {value} is negative"));
    }
    Ok(if value < 100_000_000_000 { value * 1000 } else { value })
}

/// A decimal as exports write them: plain, or in scientific notation (Kraken's OHLCVT files
/// have volumes like `1E+1`), read exactly either way.
fn decimal(field: &str) -> Result<rust_decimal::Decimal, ()> {
    let text = field.trim();
    match parse_decimal(text) {
        Ok(d) => Ok(d),
        Err(_) if text.contains(['e', 'E']) => {
            rust_decimal::Decimal::from_scientific(&text.replace("e+", "e").replace("E+", "E")).map_err(|_| ())
        }
        Err(_) => Err(()),
    }
}

fn price(field: &str, name: &str) -> Result<Price, String> {
    let d = decimal(field).map_err(|_| format!("{name} {:?} is not a decimal number", field.trim()))?;
    Price::new_checked(d).map_err(|_| format!("{name} {} must be positive", field.trim()))
}

fn qty(field: &str, name: &str) -> Result<Qty, String> {
    decimal(field).map(Qty::new).map_err(|_| format!("{name} {:?} is not a decimal number", field.trim()))
}

fn parse_csv(text: &str, pair: &Pair, interval: Interval, format: CandleFormat) -> Result<Vec<Candle>, RowError> {
    // Column positions: time, open, high, low, close, volume, optional trades.
    let mut cols: Option<[Option<usize>; 7]> = None;
    let mut candles = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = raw.trim_start_matches('\u{feff}').trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let at = |msg: String| (Some(line_no), msg);
        if cols.is_none() {
            if fields[0].parse::<f64>().is_err() {
                cols = Some(header_columns(&fields).map_err(at)?);
                continue;
            }
            if format == CandleFormat::Csv {
                return Err(at("no header line; a CSV needs one naming ts,open,high,low,close,volume".into()));
            }
            if !(6..=7).contains(&fields.len()) {
                return Err(at(format!(
                    "{} columns; Kraken OHLCVT has 6 or 7 (time,open,high,low,close,volume,trades)",
                    fields.len()
                )));
            }
            cols = Some([Some(0), Some(1), Some(2), Some(3), Some(4), Some(5), (fields.len() == 7).then_some(6)]);
        }
        let c = cols.expect("set above");
        let get = |i: usize| -> Result<&str, RowError> {
            let col = c[i].expect("required columns are always set");
            fields
                .get(col)
                .copied()
                .ok_or_else(|| at(format!("{} columns, expected at least {}", fields.len(), col + 1)))
        };
        let open_time = ms_from_epoch_number(get(0)?).map_err(at)?;
        let trades = match c[6].and_then(|col| fields.get(col)) {
            Some(t) if !t.is_empty() && *t != "NULL" => {
                Some(t.parse::<u64>().map_err(|_| at(format!("trade count {t:?} is not a whole number")))?)
            }
            _ => None,
        };
        let candle = Candle {
            pair: *pair,
            interval,
            open_time,
            open: price(get(1)?, "open").map_err(at)?,
            high: price(get(2)?, "high").map_err(at)?,
            low: price(get(3)?, "low").map_err(at)?,
            close: price(get(4)?, "close").map_err(at)?,
            volume: qty(get(5)?, "volume").map_err(at)?,
            trades,
        };
        candle.check().map_err(at)?;
        candles.push(candle);
    }
    Ok(candles)
}

fn header_columns(fields: &[&str]) -> Result<[Option<usize>; 7], String> {
    let find = |names: &[&str]| fields.iter().position(|f| names.iter().any(|n| f.eq_ignore_ascii_case(n)));
    let mut cols = [None; 7];
    let wanted: [&[&str]; 7] = [
        &["ts", "time", "timestamp", "unix"],
        &["open"],
        &["high"],
        &["low"],
        &["close"],
        &["volume"],
        &["count", "trades", "tradecount"],
    ];
    for (i, names) in wanted.iter().enumerate() {
        cols[i] = find(names);
        if cols[i].is_none() && i < 6 {
            return Err(format!(
                "header {:?} has no {:?} column (expected ts,open,high,low,close,volume)",
                fields.join(","),
                names[0]
            ));
        }
    }
    Ok(cols)
}

/// One row of BitMEX `trade/bucketed`. Numbers are kept as their JSON text so that prices
/// are read exactly, never through a float.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BitmexBucket<'a> {
    timestamp: &'a str,
    #[serde(borrow)]
    open: Option<&'a RawValue>,
    #[serde(borrow)]
    high: Option<&'a RawValue>,
    #[serde(borrow)]
    low: Option<&'a RawValue>,
    #[serde(borrow)]
    close: Option<&'a RawValue>,
    trades: Option<u64>,
    #[serde(borrow)]
    home_notional: Option<&'a RawValue>,
}

fn parse_bitmex(text: &str, pair: &Pair, interval: Interval) -> Result<Vec<Candle>, RowError> {
    let rows: Vec<BitmexBucket> = serde_json::from_str(text)
        .map_err(|e| (Some(e.line()), format!("not a BitMEX trade/bucketed JSON array: {e}")))?;
    let mut candles = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let at = |msg: String| (Some(i + 1), format!("record {}: {msg}", i + 1));
        let end = crypy_core::time::parse_iso_utc(row.timestamp)
            .ok_or_else(|| at(format!("timestamp {:?} is not ISO 8601 UTC", row.timestamp)))?;
        let num = |v: Option<&RawValue>, name: &str| -> Result<String, RowError> {
            match v {
                Some(raw) if raw.get() != "null" => Ok(raw.get().to_owned()),
                _ => Err(at(format!("{name} is missing"))),
            }
        };
        let volume = match row.home_notional {
            Some(raw) if raw.get() != "null" => qty(raw.get(), "homeNotional").map_err(at)?,
            _ => Qty::ZERO,
        };
        let candle = Candle {
            pair: *pair,
            interval,
            open_time: end - interval.millis(),
            open: price(&num(row.open, "open")?, "open").map_err(at)?,
            high: price(&num(row.high, "high")?, "high").map_err(at)?,
            low: price(&num(row.low, "low")?, "low").map_err(at)?,
            close: price(&num(row.close, "close")?, "close").map_err(at)?,
            volume: Qty::new(volume.value().round_dp(8).normalize()),
            trades: row.trades,
        };
        candle.check().map_err(at)?;
        candles.push(candle);
    }
    Ok(candles)
}

/// Order, spacing and alignment; returns the index of the first offending candle.
fn check_sequence(candles: &[Candle], interval: Interval) -> Result<(), (usize, String)> {
    let step = interval.millis();
    for (i, c) in candles.iter().enumerate() {
        if c.open_time.rem_euclid(step) != 0 {
            return Err((
                i,
                format!(
                    "open time {} is not aligned to the {interval} interval (wrong --interval?)",
                    crypy_core::time::format_utc(c.open_time)
                ),
            ));
        }
        if let Some(prev) = i.checked_sub(1).map(|j| &candles[j]) {
            // Compared, not subtracted: Parquet times span all of i64, and the difference
            // of two far apart ones overflows.
            if c.open_time <= prev.open_time {
                return Err((
                    i,
                    format!(
                        "time {} is not after the previous row's {}",
                        crypy_core::time::format_utc(c.open_time),
                        crypy_core::time::format_utc(prev.open_time)
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod decimal_tests {
    #[test]
    fn scientific_notation_is_read_exactly() {
        assert_eq!(super::decimal("1E+1").unwrap().to_string(), "10");
        assert_eq!(super::decimal(" 2.5e-3 ").unwrap().to_string(), "0.0025");
        assert_eq!(super::decimal("0.10").unwrap().to_string(), "0.10");
        assert!(super::decimal("1E+").is_err() && super::decimal("abc").is_err() && super::decimal("NaN").is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn xbteur() -> Pair {
        "XBT/EUR".parse().unwrap()
    }

    #[test]
    fn reads_headered_csv_in_ms_and_kraken_without_header() {
        let csv =
            write("ts,open,high,low,close,volume\n1696118400000,1.5,2,1,1.5,10\n1696119300000,1.5,1.5,1.5,1.5,0\n");
        let c = read_candles(csv.path(), &xbteur(), "15m".parse().unwrap(), None).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].open_time, 1_696_119_300_000);
        let kraken = write("1696118400,25507.0,25526.7,25499.2,25526.7,1.37303653,98\n");
        let c = read_candles(kraken.path(), &xbteur(), "15m".parse().unwrap(), None).unwrap();
        assert_eq!(c[0].open_time, 1_696_118_400_000);
        assert_eq!(c[0].trades, Some(98));
        assert_eq!(c[0].open.to_string(), "25507.0");
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let cases = [
            ("ts,open,high,low,close,volume\n1696118400000,1,2,1,1.5,10\n1696119300000,1,2,1,x,10\n", 3, "close"),
            ("ts,open,high,low,close,volume\n1696118400000,1,2,1,3,10\n", 2, "outside"),
            ("ts,open,high,low,close,volume\n1696119300000,1,2,1,1,10\n1696118400000,1,2,1,1,10\n", 3, "not after"),
            ("ts,open,high,low,close,volume\n1696118400000,1,2,1,1,10\n1696118460000,1,2,1,1,10\n", 3, "aligned"),
            ("ts,open,high,low,close,volume\n1696118460000,1,2,1,1,10\n", 2, "aligned"),
            ("1696118400,1,2,1,1\n", 1, "columns"),
            ("time,open,high,close\n", 1, "low"),
        ];
        for (text, line, needle) in cases {
            let f = write(text);
            let err = read_candles(f.path(), &xbteur(), "15m".parse().unwrap(), None).unwrap_err();
            assert_eq!(err.line, Some(line), "{err}");
            let msg = err.to_string();
            assert!(msg.contains(needle) && msg.contains(&f.path().display().to_string()), "{msg}");
        }
    }

    #[test]
    fn bitmex_open_outside_range_is_real_data_and_time_is_bucket_end() {
        let json = r#"[{"timestamp":"2021-04-15T00:01:00.000Z","symbol":"XBTUSD","open":63111,"high":63100.5,"low":63071.5,"close":63071.5,"trades":182,"volume":2727528,"homeNotional":43.23621418000001}]"#;
        let f = write(json);
        let c = read_candles(f.path(), &"XBT/USD".parse().unwrap(), "1m".parse().unwrap(), None).unwrap();
        assert_eq!(c[0].open_time, crypy_core::time::parse_iso_utc("2021-04-15T00:00:00Z").unwrap());
        assert_eq!(c[0].open.to_string(), "63111");
        assert_eq!(c[0].volume.to_string(), "43.23621418");
    }
}
