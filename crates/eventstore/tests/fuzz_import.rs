//! Fuzzes the candle importers: format detection and `parse_candles` for headered CSV,
//! Kraken OHLCVT and BitMEX bucketed JSON, fed arbitrary text and real files (the bundled
//! replays) with random bytes spliced in, fields dropped or replaced by huge, negative,
//! NaN or empty values, empty lines added and rows swapped; and the Parquet importer, fed
//! cells of any value and valid files with damaged bytes.
//!
//! Promises: never a panic or a hang; a file that cannot be imported is an error naming the
//! file and, for a bad row, its line (1-based, inside the file); a row made invalid is
//! blamed exactly on its own line.

use std::path::{Path, PathBuf};

use crypy_core::{Interval, Pair};
use crypy_eventstore::import::{detect_format, parse_candles, CandleFormat, ImportError};
use proptest::prelude::*;
use proptest::sample::Index;

const NAME: &str = "fuzzed/candles.csv";
const KRAKEN_ROWS: usize = 24;
const BITMEX_ROWS: usize = 12;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The head of the bundled Kraken quarter (15m), header included.
fn kraken_csv() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let all = std::fs::read_to_string(root().join("replays/kraken_XBTEUR_15m_2023Q4.csv")).unwrap();
        all.lines().take(KRAKEN_ROWS + 1).map(|l| format!("{l}\n")).collect()
    })
}

/// The first records of a bundled BitMEX day (1m), one per line so mutations hit records.
fn bitmex_json() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let all =
            std::fs::read_to_string(root().join("replays/bitmex_XBTUSD_1m_2021-05-18_20/2021-5-18.json")).unwrap();
        let rows: Vec<serde_json::Value> = serde_json::from_str(&all).unwrap();
        let rows: Vec<String> = rows.iter().take(BITMEX_ROWS).map(|r| r.to_string()).collect();
        format!("[\n{}\n]\n", rows.join(",\n"))
    })
}

fn pair() -> Pair {
    "XBT/EUR".parse().unwrap()
}

fn interval(text: &str) -> Interval {
    text.parse().unwrap()
}

fn format() -> impl Strategy<Value = Option<CandleFormat>> {
    prop_oneof![
        Just(None),
        Just(Some(CandleFormat::Csv)),
        Just(Some(CandleFormat::Kraken)),
        Just(Some(CandleFormat::Bitmex))
    ]
}

fn parse(text: &str, format: Option<CandleFormat>, interval: Interval) -> Result<usize, ImportError> {
    parse_candles(text, Path::new(NAME), &pair(), interval, format).map(|c| c.len())
}

/// Every error names the file, and a line that is in it.
fn check_error(err: &ImportError, text: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(&err.file, Path::new(NAME));
    let shown = err.to_string();
    prop_assert!(shown.starts_with(NAME), "{}", shown);
    prop_assert!(!err.message.trim().is_empty(), "{:?}", err);
    if let Some(line) = err.line {
        // JSON errors count lines too; a CSV line, or a BitMEX record number, is never past
        // the number of lines (records are at least one line's worth of text each).
        let lines = text.split('\n').count() + text.matches("},{").count();
        prop_assert!((1..=lines).contains(&line), "line {} of {}: {}", line, lines, shown);
        prop_assert!(shown.starts_with(&format!("{NAME}:{line}: ")), "{}", shown);
    }
    Ok(())
}

/// Text with the characters the parsers split on over-represented.
fn candle_ish_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[0-9]{1,14}",
        2 => Just(",".to_string()),
        2 => Just("\n".to_string()),
        1 => Just(".".to_string()),
        1 => prop::sample::select(vec![
            "ts", "time", "open", "high", "low", "close", "volume", "count", "NaN", "inf", "-", "e+", "E", "\r",
            "\u{feff}", "[", "]", "{", "}", "\"", ":", "null", "\"timestamp\"", "\"2021-05-18T00:00:00.000Z\"", " ",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
}

#[derive(Debug, Clone)]
enum Edit {
    /// Random text spliced into a line.
    Splice(Index, String),
    /// A field removed from a line.
    DropField(Index),
    /// A price field replaced by a value no importer may accept.
    BadPrice(Index, &'static str),
    /// A field replaced by something odd that may or may not be valid.
    OddField(Index, String),
    EmptyLine,
    /// Two lines swapped.
    Swap(Index),
    /// A line duplicated.
    Duplicate,
}

const BAD_PRICES: &[&str] = &[
    "-1",
    "-0.5",
    "0",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "",
    "abc",
    "1e999999",
    "99999999999999999999999999999999999999",
    "1..2",
    "0x10",
    "--1",
    "1e",
];

fn odd_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| v.to_string()),
        "[0-9]{20,60}",
        "-?[0-9]{1,6}\\.[0-9]{0,30}",
        "[0-9]e[+-]?[0-9]{1,12}",
        prop::sample::select(BAD_PRICES.to_vec()).prop_map(str::to_string),
        any::<String>(),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<Index>(), prop_oneof!["[,0-9.\\-eE]{1,8}", any::<String>()]).prop_map(|(i, s)| Edit::Splice(i, s)),
        2 => any::<Index>().prop_map(Edit::DropField),
        2 => (any::<Index>(), prop::sample::select(BAD_PRICES.to_vec())).prop_map(|(i, v)| Edit::BadPrice(i, v)),
        3 => (any::<Index>(), odd_value()).prop_map(|(i, v)| Edit::OddField(i, v)),
        1 => Just(Edit::EmptyLine),
        1 => any::<Index>().prop_map(Edit::Swap),
        1 => Just(Edit::Duplicate),
    ]
}

/// Applies `edit` to data line `row` (0-based among `lines`) of a CSV; returns the text and,
/// when the edit surely makes that row invalid, its 1-based line number.
fn edit_csv(lines: &[&str], row: usize, edit: &Edit) -> (String, Option<usize>) {
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let mut bad = None;
    match edit {
        Edit::Splice(at, s) => {
            let line = &mut out[row];
            let mut cut = at.index(line.len() + 1);
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.insert_str(cut, s);
        }
        Edit::DropField(i) => {
            let mut fields: Vec<&str> = out[row].split(',').collect();
            fields.remove(i.index(fields.len()));
            out[row] = fields.join(",");
        }
        Edit::BadPrice(i, v) => {
            let mut fields: Vec<String> = out[row].split(',').map(str::to_string).collect();
            // An earlier edit may have left this line without its prices; then it is just odd.
            if fields.len() >= 6 {
                // open, high, low or close: columns 1..=4 in both CSV layouts used here.
                fields[1 + i.index(4)] = v.to_string();
                bad = Some(row + 1);
            } else {
                fields.push(v.to_string());
            }
            out[row] = fields.join(",");
        }
        Edit::OddField(i, v) => {
            let mut fields: Vec<String> = out[row].split(',').map(str::to_string).collect();
            let n = fields.len();
            fields[i.index(n)] = v.clone();
            out[row] = fields.join(",");
        }
        Edit::EmptyLine => out.insert(row, String::new()),
        Edit::Swap(j) => {
            let j = j.index(out.len());
            out.swap(row, j);
        }
        Edit::Duplicate => {
            let line = out[row].clone();
            out.insert(row, line);
        }
    }
    (out.iter().map(|l| format!("{l}\n")).collect(), bad)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn detection_never_panics_and_agrees_with_its_rule(text in candle_ish_text()) {
        if let Some(CandleFormat::Kraken) = detect_format(&text) {
            let first = text.trim_start_matches('\u{feff}').trim_start().lines().next().unwrap();
            prop_assert!(first.split(',').next().unwrap().trim().parse::<u64>().is_ok());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_is_imported_or_refused_with_file_and_line(
        text in candle_ish_text(),
        format in format(),
        iv in prop::sample::select(vec!["1m", "15m", "1d"]),
    ) {
        if let Err(e) = parse(&text, format, interval(iv)) {
            check_error(&e, &text)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_kraken_csv_is_refused_at_the_bad_line(
        headered in any::<bool>(),
        row in any::<Index>(),
        edits in prop::collection::vec(edit(), 1..3),
        format in format(),
    ) {
        let text = kraken_csv();
        // Without its header the file is Kraken's own OHLCVT export.
        let lines: Vec<&str> = text.lines().skip(usize::from(!headered)).collect();
        let header = usize::from(headered);
        let mut current = lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        let mut bad = None;
        for edit in &edits {
            let refs: Vec<&str> = current.iter().map(String::as_str).collect();
            let r = header + row.index(refs.len() - header);
            let (next, b) = edit_csv(&refs, r, edit);
            // A later edit may move lines around; only a single, final surely-bad edit is
            // pinned to its line.
            bad = b;
            current = next.lines().map(str::to_string).collect();
        }
        let text: String = current.iter().map(|l| format!("{l}\n")).collect();
        match parse(&text, format, interval("15m")) {
            Ok(n) => prop_assert!(bad.is_none() && n > 0, "a bad price was accepted:\n{}", text),
            Err(e) => {
                check_error(&e, &text)?;
                let layout_fits = match format {
                    None | Some(CandleFormat::Kraken) => true,
                    Some(CandleFormat::Csv) => headered,
                    Some(CandleFormat::Bitmex) => false,
                };
                if let (Some(line), 1, true) = (bad, edits.len(), layout_fits) {
                    // Every line before the edited one is untouched and valid.
                    prop_assert_eq!(e.line, Some(line), "{}\n{}", e, text);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_bitmex_json_never_panics(
        row in any::<Index>(),
        edit in edit(),
        format in prop_oneof![Just(None), Just(Some(CandleFormat::Bitmex))],
    ) {
        let text = bitmex_json();
        let lines: Vec<&str> = text.lines().collect();
        // Lines 1..=BITMEX_ROWS hold one record each, between the brackets.
        let r = 1 + row.index(BITMEX_ROWS);
        let (text, _) = edit_csv(&lines, r, &edit);
        if let Err(e) = parse(&text, format, interval("1m")) {
            check_error(&e, &text)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Values BitMEX never sends, in a well-formed record: refused at that record.
    #[test]
    fn bitmex_bad_values_are_refused_at_their_record(
        row in 0..BITMEX_ROWS,
        field in prop::sample::select(vec!["open", "high", "low", "close"]),
        value in prop::sample::select(vec![
            "-1", "0", "\"NaN\"", "null", "\"abc\"", "1e999999", "99999999999999999999999999999999999999", "[]", "{}",
        ]),
    ) {
        let text = bitmex_json();
        let mut rows: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        rows[row][field] = serde_json::from_str(value).unwrap_or(serde_json::Value::String(value.into()));
        let text = serde_json::to_string(&rows).unwrap();
        let e = parse(&text, None, interval("1m")).expect_err("a bad price must be refused");
        check_error(&e, &text)?;
        prop_assert_eq!(e.line, Some(row + 1), "{}", e);
    }
}

/// Huge inputs finish: a 1 MB line, a 1 MB field, a megabyte of commas or newlines, and a
/// 1 MB JSON string. Only completion is checked; how long is the machine's business.
#[test]
fn megabyte_inputs_are_handled() {
    let mb = 1 << 20;
    let long_number = format!("1696118400,{},2,1,1,1\n", "9".repeat(mb));
    let header_then_long = format!("ts,open,high,low,close,volume\n{}\n", "1,".repeat(mb / 2));
    let inputs = [
        "x".repeat(mb),
        ",".repeat(mb),
        "\n".repeat(mb),
        "1,".repeat(mb / 2),
        long_number,
        header_then_long,
        format!("[{{\"timestamp\":\"{}\"}}]", "2".repeat(mb)),
        "[".repeat(mb),
        format!("[{}]", "{},".repeat(mb / 3)),
    ];
    for text in &inputs {
        for format in [None, Some(CandleFormat::Csv), Some(CandleFormat::Kraken), Some(CandleFormat::Bitmex)] {
            let _ = detect_format(text);
            let err = parse(text, format, interval("1m")).expect_err("none of these is a candle file");
            assert!(err.to_string().starts_with(NAME));
        }
    }
}

/// The real files, unmutated, still import: the mutations above start from valid input.
#[test]
fn the_unmutated_fixtures_import() {
    assert_eq!(parse(kraken_csv(), None, interval("15m")).unwrap(), KRAKEN_ROWS);
    let without_header: String = kraken_csv().lines().skip(1).map(|l| format!("{l}\n")).collect();
    assert_eq!(parse(&without_header, None, interval("15m")).unwrap(), KRAKEN_ROWS);
    assert_eq!(parse(bitmex_json(), None, interval("1m")).unwrap(), BITMEX_ROWS);
}

mod parquet_files {
    //! The Parquet importer (`read_candles` on a file starting `PAR1`): typed cells with
    //! extreme values, and valid files with their bytes damaged.

    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampSecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use crypy_eventstore::import::read_candles;
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::{interval, pair};

    /// A candle file: `times` as `ts` (Arrow seconds, or plain integers), prices as floats
    /// or text.
    fn file(times: &[i64], as_timestamp: bool, prices: &[f64], text_prices: bool) -> Vec<u8> {
        let n = times.len();
        let ts: ArrayRef = if as_timestamp {
            Arc::new(TimestampSecondArray::from(times.to_vec()))
        } else {
            Arc::new(Int64Array::from(times.to_vec()))
        };
        let price = |i: usize| -> ArrayRef {
            let v: Vec<f64> = (0..n).map(|r| prices[(r * 4 + i) % prices.len()]).collect();
            if text_prices {
                Arc::new(StringArray::from(v.iter().map(|p| p.to_string()).collect::<Vec<_>>()))
            } else {
                Arc::new(Float64Array::from(v))
            }
        };
        let price_type = if text_prices { DataType::Utf8 } else { DataType::Float64 };
        let ts_type = if as_timestamp { DataType::Timestamp(TimeUnit::Second, None) } else { DataType::Int64 };
        let mut fields = vec![Field::new("ts", ts_type, false)];
        for name in ["open", "high", "low", "close", "volume"] {
            fields.push(Field::new(name, price_type.clone(), false));
        }
        let schema = Arc::new(Schema::new(fields));
        let columns = vec![ts, price(0), price(1), price(2), price(3), price(0)];
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        let mut out = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        out
    }

    fn read(bytes: &[u8]) -> Result<usize, crypy_eventstore::import::ImportError> {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), bytes).unwrap();
        let r = read_candles(f.path(), &pair(), interval("1m"), None).map(|c| c.len());
        if let Err(e) = &r {
            assert_eq!(e.file, f.path());
        }
        r
    }

    fn time() -> impl Strategy<Value = i64> {
        prop_oneof![
            4 => (1_600_000_000i64..1_700_000_000).prop_map(|t| t - t % 60),
            1 => any::<i64>(),
            1 => Just(i64::MAX),
            1 => Just(i64::MIN),
            // The farthest minute-aligned times whose ms still fit an i64.
            1 => Just(-9_223_372_036_854_720i64),
            1 => Just(9_223_372_036_854_720i64),
        ]
    }

    fn price() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => 1.0f64..100_000.0,
            1 => any::<f64>(),
            1 => prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 0.0, f64::MAX, f64::MIN_POSITIVE, 1e28, 8e28]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Cells of any value, in the types the importer reads.
        #[test]
        fn any_cells_are_imported_or_refused(
            times in prop::collection::vec(time(), 1..6),
            prices in prop::collection::vec(price(), 1..8),
            as_timestamp in any::<bool>(),
            text_prices in any::<bool>(),
        ) {
            let _ = read(&file(&times, as_timestamp, &prices, text_prices));
        }

        /// A valid file with bytes flipped or cut.
        #[test]
        fn damaged_files_are_refused_not_panicked_on(
            flips in prop::collection::vec((any::<Index>(), 0u8..8), 1..4),
            cut in any::<Option<Index>>(),
        ) {
            let good = file(&[1_696_118_400, 1_696_118_460], true, &[100.0, 101.0, 99.0, 100.5], false);
            let mut bytes = good.clone();
            for (i, bit) in &flips {
                let i = i.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
            if let Some(c) = cut {
                bytes.truncate(c.index(bytes.len()).max(4));
            }
            let _ = read(&bytes);
        }
    }

    /// Found by this fuzzing: seconds past i64 in ms overflowed, and so did the gap between
    /// the farthest two aligned times.
    #[test]
    fn the_extreme_times_found_are_read_or_refused() {
        let prices = [100.0, 101.0, 99.0, 100.5];
        for as_timestamp in [true, false] {
            let _ = read(&file(&[i64::MAX, 0], as_timestamp, &prices, false));
            let _ = read(&file(&[-9_223_372_036_854_720, 9_223_372_036_854_720], as_timestamp, &prices, false));
        }
    }
}
