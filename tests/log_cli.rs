use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::util::*;

#[test]
fn import_stats_show_verify_on_the_bundled_quarter() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        crypy(dir.path()).args([
            "log",
            "import-candles",
            "--pair",
            "XBT/EUR",
            "--interval",
            "15m",
            "--json",
            "replays/kraken_XBTEUR_15m_2023Q4.csv",
        ]),
        0,
    );
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["appended"], 8832);
    assert_eq!((summary["first_seq"].as_u64(), summary["last_seq"].as_u64()), (Some(1), Some(8832)));

    let stats: serde_json::Value =
        serde_json::from_str(run(crypy(dir.path()).args(["log", "stats", "--json"]), 0).trim()).unwrap();
    assert_eq!(stats["events"], 8832);
    assert_eq!(stats["kinds"]["candle"], 8832);
    assert_eq!(stats["runs"][0]["run"], 0);
    assert_eq!(stats["time_from"], 1_696_118_400_000i64 + 900_000);
    assert_eq!(stats["time_to"], 1_704_067_200_000i64);
    let human = run(crypy(dir.path()).args(["log", "stats"]), 0);
    assert!(human.contains("8,832") && human.contains("2023-10-01 00:15:00Z"), "{human}");

    let lines = json_lines(&run(crypy(dir.path()).args(["log", "show", "--json", "--from", "2", "--to", "4"]), 0));
    assert_eq!(lines.len(), 3);
    let first = &lines[0];
    for key in ["seq", "run", "time", "wall", "source", "kind", "cause", "data"] {
        assert!(first.get(key).is_some(), "missing {key} in {first}");
    }
    assert_eq!(first["seq"], 2);
    assert_eq!(first["kind"], "candle");
    assert_eq!(first["source"], "@import");
    assert_eq!(first["cause"], serde_json::Value::Null);
    assert_eq!(first["data"]["pair"], "XBT/EUR");
    assert_eq!(first["data"]["interval"], "15m");
    assert_eq!(first["data"]["open"], "25526.8", "prices are exact decimal strings");

    let table = run(crypy(dir.path()).args(["log", "show", "--limit", "2"]), 0);
    let rows: Vec<_> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows[0].contains("SEQ") && rows[0].contains("KIND"));
    assert!(rows[1].contains("candle") && rows[1].contains("O 25507.0"), "{table}");

    let ok = run(crypy(dir.path()).args(["log", "verify"]), 0);
    assert!(ok.starts_with("ok: 8,832 events"), "{ok}");
}

#[test]
fn filters_by_kind_pair_agent_and_range() {
    let dir = tempfile::tempdir().unwrap();
    import_kraken_quarter(dir.path());
    let count = |args: &[&str]| json_lines(&run(crypy(dir.path()).args(["log", "show", "--json"]).args(args), 0)).len();
    assert_eq!(count(&["--kind", "candle", "--from", "8830"]), 3);
    assert_eq!(count(&["--kind", "order_requested"]), 0);
    assert_eq!(count(&["--pair", "XBT/USD"]), 0);
    assert_eq!(count(&["--pair", "xbt/eur", "--to", "10"]), 10);
    assert_eq!(count(&["--agent", "@import", "--from", "100", "--to", "199"]), 100);
    assert_eq!(count(&["--agent", "sim:main"]), 0);
    let err = run(crypy(dir.path()).args(["log", "show", "--kind", "candel"]), 2);
    assert!(err.contains("candle"), "a typo lists the valid kinds: {err}");
}

#[test]
fn tail_prints_the_last_events() {
    let dir = tempfile::tempdir().unwrap();
    import_kraken_quarter(dir.path());
    let lines = json_lines(&run(crypy(dir.path()).args(["log", "tail", "-n", "3", "--json"]), 0));
    assert_eq!(lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect::<Vec<_>>(), vec![8830, 8831, 8832]);
}

#[test]
fn import_errors_name_file_and_line_and_append_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "ts,open,high,low,close,volume\n1696118400000,1,2,1,1.5,1\n1696119300000,1,2,1,1.5,-3\n")
        .unwrap();
    let data = dir.path().join("data");
    let err = run(crypy(&data).args(["log", "import-candles", "--pair", "XBT/EUR", "--interval", "15m"]).arg(&bad), 2);
    assert!(err.contains(&format!("{}:3", bad.display())) && err.contains("volume"), "{err}");
    let stats: serde_json::Value =
        serde_json::from_str(run(crypy(&data).args(["log", "stats", "--json"]), 0).trim()).unwrap();
    assert_eq!(stats["events"], 0);

    let err = run(crypy(&data).args(["log", "import-candles", "--pair", "XBTEUR", "--interval", "15m", "x.csv"]), 2);
    assert!(err.contains("BASE/QUOTE"), "{err}");
    let err = run(crypy(&data).args(["log", "import-candles", "--pair", "XBT/EUR", "--interval", "15min", "x.csv"]), 2);
    assert!(err.contains("15m"), "{err}");
    let err = run(
        crypy(&data).args([
            "log",
            "import-candles",
            "--pair",
            "XBT/EUR",
            "--interval",
            "1h",
            "tests/fixtures/csv_ms_XBTEUR_15m_2023-10-01.csv",
        ]),
        2,
    );
    assert!(err.contains("not aligned to the 1h interval"), "a wrong --interval is caught: {err}");
}

#[test]
fn reading_a_missing_data_dir_is_a_clear_error_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    for cmd in [&["log", "stats"][..], &["log", "show"], &["log", "verify"], &["log", "tail"]] {
        let err = run(crypy(&missing).args(cmd), 2);
        assert!(err.contains("no crypy log in"), "{err}");
    }
    assert!(!missing.exists());
}

#[test]
fn verify_exits_nonzero_naming_the_first_bad_seq() {
    let dir = tempfile::tempdir().unwrap();
    import_kraken_quarter(dir.path());
    {
        let log = crypy_eventstore_handle(dir.path());
        let mut bytes = log.raw_record_for_tests(1).unwrap().unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        log.put_raw_record_for_tests(1, &bytes).unwrap();
    }
    let out = run(crypy(dir.path()).args(["log", "verify"]), 1);
    assert!(out.contains("first bad seq 1") && out.contains("checksum"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(run(crypy(dir.path()).args(["log", "verify", "--json"]), 1).trim()).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["bad_seq"], 1);
    let err = run(crypy(dir.path()).args(["log", "show"]), 2);
    assert!(err.contains("corrupt log at seq 1"), "a reader never skips damage: {err}");
}

fn crypy_eventstore_handle(dir: &std::path::Path) -> crypy_eventstore::EventLog {
    crypy_eventstore::EventLog::open(dir, crypy_eventstore::Options::default()).unwrap()
}

#[test]
fn tail_follows_what_other_processes_append_without_blocking_them() {
    let dir = tempfile::tempdir().unwrap();
    import(dir.path(), "XBT/EUR", "15m", ONE_DAY);
    let mut follower = crypy(dir.path())
        .args(["log", "tail", "-f", "-n", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("\"seq\":96"), "{first}");
    // Writers still start while the follower runs, and it prints what they append.
    let days = ["2021-5-18.json", "2021-5-19.json", "2021-5-20.json"];
    for day in days {
        let file = format!("replays/bitmex_XBTUSD_1m_2021-05-18_20/{day}");
        import(dir.path(), "XBT/USD", "1m", &file);
    }
    let mut expected = 97u64;
    while expected <= 96 + 3 * 1440 {
        let line = lines.next().expect("the follower stopped early").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["seq"].as_u64(), Some(expected), "{line}");
        expected += 1;
    }
    follower.kill().unwrap();
    follower.wait().unwrap();
}

#[test]
fn parquet_export_has_typed_envelope_columns() {
    use arrow_array::{Array, StringArray, TimestampMillisecondArray, UInt64Array};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let dir = tempfile::tempdir().unwrap();
    import_kraken_quarter(dir.path());
    let file = dir.path().join("events.parquet");
    let out = run(crypy(dir.path()).args(["log", "export", "--from", "11", "--to", "8010", "--parquet"]).arg(&file), 0);
    assert!(out.contains("wrote 8,000 events"), "{out}");
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap()).unwrap().build().unwrap();
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 8000);
    let b = &batches[0];
    let names: Vec<_> = b.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["seq", "run", "time", "wall", "source", "kind", "cause", "data"]);
    let seq = b.column(0).as_any().downcast_ref::<UInt64Array>().unwrap();
    assert_eq!(seq.value(0), 11);
    let time = b.column(2).as_any().downcast_ref::<TimestampMillisecondArray>().unwrap();
    assert_eq!(time.value(0), 1_696_118_400_000 + 10 * 900_000 + 900_000);
    assert!(b.column(6).is_null(0), "cause is null for imported candles");
    let data = b.column(7).as_any().downcast_ref::<StringArray>().unwrap();
    let payload: serde_json::Value = serde_json::from_str(data.value(0)).unwrap();
    assert_eq!(payload["pair"], "XBT/EUR");
    assert!(!dir.path().join("events.parquet.partial").exists());
}

#[test]
fn candles_go_out_to_parquet_as_exact_decimals_and_come_back_the_same() {
    use arrow_array::{Array, Decimal128Array, StringArray, TimestampMillisecondArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import_kraken_quarter(&data);
    // A run sees the same candles again: they are exported once.
    run(crypy(&data).args(["sim", "--quiet", "--from-log"]), 0);
    let file = dir.path().join("candles.parquet");
    let out = run(crypy(&data).args(["data", "export-candles", "--pair", "XBT/EUR", "--parquet"]).arg(&file), 0);
    assert!(out.contains("wrote 8,832 candles (XBT/EUR)"), "{out}");

    let reader =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap()).unwrap().build().unwrap();
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 8832);
    let b = &batches[0];
    let schema = b.schema();
    let columns: Vec<(String, String)> =
        schema.fields().iter().map(|f| (f.name().clone(), f.data_type().to_string())).collect();
    let expected = [
        ("pair", "Utf8"),
        ("interval", "Utf8"),
        ("ts", "Timestamp(ms, \"UTC\")"),
        ("open", "Decimal128(38, 1)"),
        ("high", "Decimal128(38, 1)"),
        ("low", "Decimal128(38, 1)"),
        ("close", "Decimal128(38, 1)"),
        ("volume", "Decimal128(38, 8)"),
        ("trades", "UInt64"),
    ];
    let expected: Vec<(String, String)> = expected.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    assert_eq!(columns, expected);
    assert_eq!(b.column(0).as_any().downcast_ref::<StringArray>().unwrap().value(0), "XBT/EUR");
    let ts = b.column(2).as_any().downcast_ref::<TimestampMillisecondArray>().unwrap();
    assert_eq!(ts.value(0), 1_696_118_400_000);
    let close = b.column(6).as_any().downcast_ref::<Decimal128Array>().unwrap();
    assert_eq!(close.value_as_string(0), "25526.7");
    let volume = b.column(7).as_any().downcast_ref::<Decimal128Array>().unwrap();
    assert_eq!(volume.value_as_string(0), "1.37303653");

    // Read back by crypy itself: the same candles, value for value (a column has one scale,
    // so 4.3057356 comes back as 4.30573560: the same number).
    let again = dir.path().join("again");
    run(crypy(&again).args(["log", "import-candles", "--pair", "XBT/EUR", "--interval", "15m"]).arg(&file), 0);
    let candles = |d: &std::path::Path| -> Vec<String> {
        let shown = run(crypy(d).args(["log", "show", "--json", "--kind", "candle", "--to", "8832"]), 0);
        json_lines(&shown)
            .into_iter()
            .map(|e| {
                let c = &e["data"];
                let number = |k: &str| -> rust_decimal::Decimal { c[k].as_str().unwrap().parse().unwrap() };
                let values: Vec<String> = ["open", "high", "low", "close", "volume"]
                    .iter()
                    .map(|k| number(k).normalize().to_string())
                    .collect();
                format!("{} {} {} {} {}", c["pair"], c["interval"], c["open_time"], values.join(" "), c["trades"])
            })
            .collect()
    };
    let (back, original) = (candles(&again), candles(&data));
    assert_eq!(back.len(), original.len());
    if let Some(i) = (0..back.len()).find(|&i| back[i] != original[i]) {
        panic!("candle {i} came back as {} instead of {}", back[i], original[i]);
    }

    // Nothing half-written is left by a failure, and an empty selection is a valid file.
    let err = run(crypy(&data).args(["data", "export-candles", "--parquet", "/nonexistent-dir/c.parquet"]), 2);
    assert!(err.contains("cannot export to /nonexistent-dir/c.parquet"), "{err}");
    let none = dir.path().join("none.parquet");
    let out = run(crypy(&data).args(["data", "export-candles", "--pair", "ETH/EUR", "--parquet"]).arg(&none), 0);
    assert!(out.contains("wrote 0 candles (none)"), "{out}");
}
