//! Importing the three real candle formats from the bundled data.

use std::path::{Path, PathBuf};

use crypy_core::{Event, Interval, Pair};
use crypy_eventstore::ingest::import_candles;
use crypy_eventstore::{Error, EventLog, Options};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn candles(log: &EventLog) -> Vec<(u64, i64, crypy_core::Candle)> {
    log.iter_from(1)
        .map(|e| e.unwrap())
        .filter_map(|e| match e.event {
            Event::Candle(c) => Some((e.seq, e.time, c)),
            _ => None,
        })
        .collect()
}

#[test]
fn kraken_csv_with_header_the_bundled_quarter() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), Options::default()).unwrap();
    let pair: Pair = "XBT/EUR".parse().unwrap();
    let interval: Interval = "15m".parse().unwrap();
    let s =
        import_candles(&log, &pair, interval, &[root().join("replays/kraken_XBTEUR_15m_2023Q4.csv")], None, 0).unwrap();
    assert_eq!(s.seqs.len(), 8832);
    let c = candles(&log);
    assert_eq!(c.len(), 8832);
    let (_, first_time, first) = &c[0];
    assert_eq!(first.open_time, 1_696_118_400_000); // 2023-10-01 00:00Z
    assert_eq!(*first_time, 1_696_118_400_000 + 900_000, "event time is the close");
    assert_eq!(
        (first.open.to_string(), first.high.to_string(), first.low.to_string(), first.close.to_string()),
        ("25507.0".into(), "25526.7".into(), "25499.2".into(), "25526.7".into())
    );
    assert_eq!(first.volume.to_string(), "1.37303653");
    assert_eq!(first.trades, Some(98));
    let (_, _, last) = c.last().unwrap();
    assert_eq!(last.open_time, 1_704_066_300_000); // 2023-12-31 23:45Z
    assert_eq!(last.close.to_string(), "38404.5");
}

#[test]
fn kraken_ohlcvt_without_header_and_csv_in_ms_agree() {
    let pair: Pair = "XBT/EUR".parse().unwrap();
    let interval: Interval = "15m".parse().unwrap();
    let mut seen = Vec::new();
    for file in
        ["tests/fixtures/kraken_ohlcvt_XBTEUR_15m_2023-10-01.csv", "tests/fixtures/csv_ms_XBTEUR_15m_2023-10-01.csv"]
    {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path(), Options::default()).unwrap();
        import_candles(&log, &pair, interval, &[root().join(file)], None, 0).unwrap();
        let c: Vec<_> = candles(&log)
            .into_iter()
            .map(|(_, _, c)| (c.open_time, c.open, c.high, c.low, c.close, c.volume))
            .collect();
        assert_eq!(c.len(), 96, "{file}");
        assert_eq!(c[0].0, 1_696_118_400_000);
        assert_eq!(c[95].0, 1_696_118_400_000 + 95 * 900_000);
        seen.push(c);
    }
    assert_eq!(seen[0], seen[1]);
}

#[test]
fn bitmex_json_days_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), Options::default()).unwrap();
    let pair: Pair = "XBT/USD".parse().unwrap();
    let base = root().join("replays/bitmex_XBTUSD_1m_2021-05-18_20");
    // Deliberately out of order: import sorts files by their first candle.
    let files = ["2021-5-20.json", "2021-5-18.json", "2021-5-19.json"].map(|f| base.join(f));
    let s = import_candles(&log, &pair, "1m".parse().unwrap(), &files, None, 0).unwrap();
    assert_eq!(s.seqs.len(), 3 * 1440);
    let c = candles(&log);
    // The first bucket ends 2021-05-18 00:00Z, so it opened at 2021-05-17 23:59Z.
    assert_eq!(c[0].2.open_time, 1_621_295_940_000);
    assert_eq!(c[0].1, 1_621_296_000_000);
    assert_eq!(c.last().unwrap().2.open_time, 1_621_295_940_000 + (3 * 1440 - 1) * 60_000);
    assert!(c.windows(2).all(|w| w[1].2.open_time - w[0].2.open_time == 60_000));
    // Real data: some opens lie outside [low, high] and are kept as they are.
    assert!(c.iter().any(|(_, _, k)| k.open > k.high || k.open < k.low));
}

#[test]
fn a_bad_row_appends_nothing_and_overlaps_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), Options::default()).unwrap();
    let pair: Pair = "XBT/EUR".parse().unwrap();
    let interval: Interval = "15m".parse().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "ts,open,high,low,close,volume\n1696118400000,1,2,1,1.5,1\n1696119300000,1,2,1,oops,1\n")
        .unwrap();
    let good = root().join("tests/fixtures/csv_ms_XBTEUR_15m_2023-10-01.csv");
    let err = import_candles(&log, &pair, interval, &[good.clone(), bad.clone()], None, 0).unwrap_err();
    assert!(matches!(&err, Error::Import(e) if e.line == Some(3) && e.file == bad), "{err}");
    assert_eq!(log.last_seq(), 0, "nothing of any file may be appended");

    import_candles(&log, &pair, interval, std::slice::from_ref(&good), None, 0).unwrap();
    let err = import_candles(&log, &pair, interval, &[good], None, 0).unwrap_err();
    assert!(err.to_string().contains("already has XBT/EUR 15m candles"), "{err}");
    assert_eq!(log.last_seq(), 96);
}

#[test]
fn parquet_with_float_prices_and_timestamps_imports_like_the_csv() {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, RecordBatch, TimestampMillisecondArray};
    use parquet::arrow::ArrowWriter;

    let pair: Pair = "XBT/EUR".parse().unwrap();
    let interval: Interval = "15m".parse().unwrap();
    let csv = root().join("tests/fixtures/csv_ms_XBTEUR_15m_2023-10-01.csv");
    let from_csv = crypy_eventstore::import::read_candles(&csv, &pair, interval, None).unwrap();

    // What pandas writes: float64 prices, timestamp[ms] times.
    let f = |get: fn(&crypy_core::Candle) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from(from_csv.iter().map(get).collect::<Vec<_>>()))
    };
    let ts: ArrayRef =
        Arc::new(TimestampMillisecondArray::from(from_csv.iter().map(|c| c.open_time).collect::<Vec<_>>()));
    let batch = RecordBatch::try_from_iter([
        ("timestamp", ts),
        ("open", f(|c| c.open.to_f64())),
        ("high", f(|c| c.high.to_f64())),
        ("low", f(|c| c.low.to_f64())),
        ("close", f(|c| c.close.to_f64())),
        ("volume", f(|c| c.volume.to_f64())),
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("candles.parquet");
    let mut writer = ArrowWriter::try_new(std::fs::File::create(&file).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let from_parquet = crypy_eventstore::import::read_candles(&file, &pair, interval, None).unwrap();
    assert_eq!(from_parquet.len(), 96);
    for (p, c) in from_parquet.iter().zip(&from_csv) {
        assert_eq!(p.open_time, c.open_time);
        // Floats are read by their shortest form: 25507.0 comes back as 25507, the same number.
        for (a, b) in
            [(p.open.value(), c.open.value()), (p.close.value(), c.close.value()), (p.volume.value(), c.volume.value())]
        {
            assert_eq!(a.normalize(), b.normalize());
        }
    }

    let broken = dir.path().join("broken.parquet");
    std::fs::write(&broken, b"PAR1 but nothing else").unwrap();
    let err = crypy_eventstore::import::read_candles(&broken, &pair, interval, None).unwrap_err().to_string();
    assert!(err.contains("broken.parquet") && err.contains("not a readable Parquet file"), "{err}");
}
