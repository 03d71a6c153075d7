use crate::util::*;

#[test]
fn bench_log_reports_appends_and_scans_of_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        crypy(dir.path())
            .args(["bench", "log", "--events", "5000", "--batch", "1000", "--json", "--dir"])
            .arg(dir.path()),
        0,
    );
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["events"], 5000);
    assert_eq!(r["durability"], "every_batch");
    assert!(r["appends_per_s"].as_f64().unwrap() > 0.0 && r["scan_per_s"].as_f64().unwrap() > 0.0, "{r}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(leftovers.is_empty(), "the scratch log is removed: {leftovers:?}");
}

#[test]
fn bench_eval_scores_the_whole_grid_on_the_bundled_quarter() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        crypy(dir.path()).args([
            "bench",
            "eval",
            "--repeat",
            "2",
            "--json",
            "--strategy",
            "sma_cross fast=5..50/5 slow=20..200/20",
            "--strategy",
            "ema_cross fast=5..10/5 slow=20..40/20",
        ]),
        0,
    );
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["variants"], 90 + 4);
    assert_eq!(r["bars"], 8832);
    assert!(r["bar_steps_per_s"].as_f64().unwrap() > 0.0);
    let best = r["best"]["variant"].as_str().unwrap();
    assert!(best.starts_with("sma_cross:") || best.starts_with("ema_cross:"), "{best}");
    let err = run(crypy(dir.path()).args(["bench", "eval", "--strategy", "macd fast=1 slow=2"]), 2);
    assert!(err.contains("unknown strategy family \"macd\""), "{err}");
}

/// Round trips of "long when SMA(fast) > SMA(slow), flat when below", counted directly on
/// the closes: what any correct event-driven backtest of the rule must make.
fn sma_round_trips(closes: &[f64], fast: usize, slow: usize) -> u64 {
    let sma = |end: usize, n: usize| closes[end + 1 - n..=end].iter().sum::<f64>() / n as f64;
    let (mut long, mut trips) = (false, 0);
    for i in slow - 1..closes.len() {
        let (f, s) = (sma(i, fast), sma(i, slow));
        if f > s && !long {
            long = true;
            trips += 1;
        } else if f < s && long {
            long = false;
        }
    }
    trips
}

#[test]
fn bench_backtest_trades_the_fixed_strategy_through_the_whole_desk() {
    let dir = tempfile::tempdir().unwrap();
    let bundled = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../replays/kraken_XBTEUR_15m_2023Q4.csv");
    let out = run(
        crypy(dir.path())
            .args(["bench", "backtest", "--pair", "XBT/EUR", "--interval", "15m", "--json", "--csv"])
            .arg(&bundled),
        0,
    );
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["bars"], 8832);
    let text = std::fs::read_to_string(&bundled).unwrap();
    let closes: Vec<f64> = text.lines().skip(1).map(|l| l.split(',').nth(4).unwrap().parse().unwrap()).collect();
    // nautilus_trader 1.221 (../shared/bench/nautilus_backtest.py --csv on this file) made
    // 380 orders: 190 round trips.
    assert_eq!(sma_round_trips(&closes, 10, 30), 190);
    assert_eq!(r["round_trips"], 190, "{r}");
    assert_eq!(r["orders"], 380, "{r}");
    assert_eq!(r["fills"], 380, "{r}");
    assert_eq!(r["accounting_ok"], true, "{r}");
    assert!(r["bars_per_s"].as_f64().unwrap() > 0.0);

    let err = run(crypy(dir.path()).args(["bench", "backtest", "--strategy", "sma:30:10", "--csv"]).arg(&bundled), 2);
    assert!(err.contains("the fast period must be shorter"), "{err}");
    // Flags are checked before the candles are read: a missing file is not what is reported.
    for (flag, value, why) in [
        ("--qty", "abc", "--qty \"abc\": not a decimal number"),
        ("--qty", "0", "must buy a positive quantity"),
        ("--fee", "1", "must be in [0, 1)"),
        ("--cash", "0", "starting balance must be positive"),
        ("--strategy", "ema:3", "expected FAMILY:FAST:SLOW"),
    ] {
        let err = run(crypy(dir.path()).args(["bench", "backtest", "--csv", "/no/such/candles.csv", flag, value]), 2);
        assert!(err.contains(why) && !err.contains("candles.csv"), "{flag} {value}: {err}");
    }
}

#[test]
fn bench_replay_and_latency_measure_a_real_run() {
    let dir = tempfile::tempdir().unwrap();
    let bundled = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../replays/kraken_XBTEUR_15m_2023Q4.csv");
    let data = dir.path().join("data");
    run(
        crypy(dir.path())
            .args(["bench", "backtest", "--pair", "XBT/EUR", "--interval", "15m", "--json", "--csv"])
            .arg(&bundled)
            .arg("--data-dir")
            .arg(&data),
        0,
    );
    let out = run(crypy(dir.path()).args(["bench", "replay", "--json", "--data-dir"]).arg(&data), 0);
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["market_events"], 8832, "{r}");
    assert!(r["peak_rss_bytes"].as_u64().unwrap() > 0, "{r}");

    let out = run(
        crypy(dir.path())
            .args(["bench", "latency", "--pair", "XBT/EUR", "--interval", "15m", "--bars", "3000", "--json", "--csv"])
            .arg(&bundled),
        0,
    );
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let closes: Vec<f64> = std::fs::read_to_string(&bundled)
        .unwrap()
        .lines()
        .skip(1)
        .take(3000)
        .map(|l| l.split(',').nth(4).unwrap().parse().unwrap())
        .collect();
    // Every entry and every exit is an order a candle led to; an open position at the end
    // has no exit.
    let trips = sma_round_trips(&closes, 10, 30);
    let orders = r["orders"].as_u64().unwrap();
    assert!(orders == 2 * trips || orders == 2 * trips - 1, "{orders} orders for {trips} round trips");
    let (p50, p99, max) = (r["p50_us"].as_f64().unwrap(), r["p99_us"].as_f64().unwrap(), r["max_us"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{r}");
    // Deciding is a part of each order's latency, the durable flush the rest.
    let (decided_p50, decided_p99) = (r["decided_p50_us"].as_f64().unwrap(), r["decided_p99_us"].as_f64().unwrap());
    assert!(0.0 < decided_p50 && decided_p50 <= decided_p99 && decided_p50 <= p50 && decided_p99 <= p99, "{r}");

    let err = run(crypy(dir.path()).args(["bench", "latency", "--bars", "0", "--csv"]).arg(&bundled), 2);
    assert!(err.contains("--bars 0: at least one bar"), "{err}");
}

#[test]
fn bench_sweep_gives_vectorbts_results_from_the_bundled_candles() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("../agents/tests/fixtures/vectorbt_sweep_kraken_xbteur_15m.json")).unwrap(),
    )
    .unwrap();
    for (fill, label) in [("close", "close"), ("next-open", "next_open")] {
        let out = run(crypy(dir.path()).args(["bench", "sweep", "--repeat", "1", "--json", "--fill", fill]), 0);
        let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(r["bars"], 8832);
        let (got, want) = (r["results"].as_array().unwrap(), fixture[label].as_array().unwrap());
        assert_eq!(got.len(), 90);
        assert_eq!(got.len(), want.len());
        // The CLI reads the CSV into exact decimals first; the doubles it sweeps must still
        // be the ones vectorbt read, or the returns would drift in the last bits.
        for (g, w) in got.iter().zip(want) {
            assert_eq!((&g["fast"], &g["slow"], &g["orders"]), (&w["fast"], &w["slow"], &w["orders"]), "{fill}");
            assert_eq!(g["total_return"].as_f64(), w["total_return"].as_f64(), "{fill}: {g} vs {w}");
        }
        let best = want.iter().map(|w| w["total_return"].as_f64().unwrap()).fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(r["best"]["total_return"].as_f64(), Some(best));
    }

    let err = run(crypy(dir.path()).args(["bench", "sweep", "--fast", "50", "--slow", "20"]), 2);
    assert!(err.contains("no pair with fast < slow"), "{err}");
    let err = run(crypy(dir.path()).args(["bench", "sweep", "--fast", "5..x"]), 2);
    assert!(err.contains("--fast") && err.contains("`x`"), "{err}");
}
