//! The sweep against vectorbt 1.2's own output on real bars: the 90-combination benchmark grid
//! on the bundled Kraken XBT/EUR 15-minute quarter, fees 0.26 %, fills at the close and at the
//! next open. The fixture is written by `bench/vectorbt_fixture.py` (see its header).
//!
//! An `#[ignore]`d test does the same for any CSV and fixture named by environment variables,
//! e.g. the peer benchmark's one-year synthetic series, and times the sweep:
//!
//! ```sh
//! /tmp/peerbench-venv/bin/python bench/vectorbt_fixture.py --csv /tmp/peerbench/bars_525600_seed42.csv \
//!     --out /tmp/vbt_sweep_525600.json
//! SWEEP_CSV=/tmp/peerbench/bars_525600_seed42.csv SWEEP_FIXTURE=/tmp/vbt_sweep_525600.json \
//!     cargo test --release -p crypy-agents --test sweep_vectorbt -- --ignored --nocapture
//! ```

use std::path::Path;
use std::time::Instant;

use crypy_agents::sweep::{sweep, ComboResult, Fill, SweepConfig, SweepGrid};
use serde_json::Value;

/// The `open` and `close` columns of a CSV whose header names them.
fn read_csv(path: &Path) -> (Vec<f64>, Vec<f64>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no {name} column"));
    let (o, c) = (col("open"), col("close"));
    let (mut open, mut close) = (Vec::new(), Vec::new());
    for line in lines.filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        open.push(fields[o].parse().expect("an open price"));
        close.push(fields[c].parse().expect("a close price"));
    }
    (open, close)
}

/// Compares one fill rule's results with the fixture's; returns the largest relative
/// difference of the total returns and how many were bit-identical.
fn compare(label: &str, got: &[ComboResult], want: &Value) -> (f64, usize) {
    let want = want.as_array().unwrap_or_else(|| panic!("{label}: a list"));
    assert_eq!(got.len(), want.len(), "{label}: combinations");
    let (mut max_rel, mut exact) = (0.0f64, 0);
    for (g, w) in got.iter().zip(want) {
        let (fast, slow) = (w["fast"].as_u64().unwrap(), w["slow"].as_u64().unwrap());
        assert_eq!((u64::from(g.fast), u64::from(g.slow)), (fast, slow), "{label}: order");
        let orders = w["orders"].as_u64().unwrap();
        assert_eq!(u64::from(g.orders), orders, "{label}: orders of ({fast}, {slow})");
        let tr = w["total_return"].as_f64().unwrap();
        let rel = (g.total_return - tr).abs() / tr.abs().max(1e-300);
        assert!(
            rel <= 1e-9 || g.total_return == tr,
            "{label}: ({fast}, {slow}) total return {} vs vectorbt's {tr}",
            g.total_return
        );
        max_rel = max_rel.max(if g.total_return == tr { 0.0 } else { rel });
        exact += usize::from(g.total_return.to_bits() == tr.to_bits());
    }
    (max_rel, exact)
}

fn check(csv: &Path, fixture: &Path, threads: usize) {
    let (open, close) = read_csv(csv);
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(fixture).expect("the fixture")).unwrap();
    assert_eq!(fixture["bars"].as_u64(), Some(close.len() as u64), "fixture and CSV differ in length");
    let grid = SweepGrid::benchmark();
    let fees = fixture["fees"].as_f64().unwrap();
    let init_cash = fixture["init_cash"].as_f64().unwrap();
    for (label, fill) in [("close", Fill::Close), ("next_open", Fill::NextOpen)] {
        if fixture[label].is_null() {
            continue;
        }
        let cfg = SweepConfig { fees, init_cash, fill, threads };
        let mut times = Vec::new();
        let mut got = Vec::new();
        for _ in 0..if threads == 0 { 1 } else { 7 } {
            let t = Instant::now();
            got = sweep(&open, &close, &grid, &cfg).unwrap();
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let (max_rel, exact) = compare(label, &got, &fixture[label]);
        eprintln!(
            "{label}: {} combinations on {} bars, max relative difference {max_rel:e}, {exact} bit-identical; \
             median {:.4} s (threads {threads})",
            got.len(),
            close.len(),
            times[times.len() / 2]
        );
    }
}

#[test]
fn the_benchmark_grid_matches_vectorbt_on_the_kraken_quarter() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    check(
        &root.join("../../replays/kraken_XBTEUR_15m_2023Q4.csv"),
        &root.join("tests/fixtures/vectorbt_sweep_kraken_xbteur_15m.json"),
        0,
    );
}

#[test]
#[ignore = "needs SWEEP_CSV and SWEEP_FIXTURE (see the module docs)"]
fn a_given_series_matches_vectorbt() {
    let csv = std::env::var("SWEEP_CSV").expect("SWEEP_CSV");
    let fixture = std::env::var("SWEEP_FIXTURE").expect("SWEEP_FIXTURE");
    for threads in [1, 2] {
        check(Path::new(&csv), Path::new(&fixture), threads);
    }
}
