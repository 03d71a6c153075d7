//! Batching a backtest's candles into epochs (with the shadow society) changes nothing the
//! desk records: the same events, causes, times and figures as one epoch per input — on a
//! clean venue and on one that misbehaves in every way the simulator can.

use std::path::Path;

use crypy_agents::template::Templates;
use crypy_core::Envelope;
use crypy_dataflow::sim::{run_sim, SimOptions, SimReport};
use crypy_eventstore::LogReader;
use crypy_exchange::sim::SimConfig;

fn quarter() -> Vec<crypy_core::Candle> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../replays/kraken_XBTEUR_15m_2023Q4.csv");
    crypy_eventstore::import::read_candles(&path, &"XBT/EUR".parse().unwrap(), "15m".parse().unwrap(), None).unwrap()
}

fn trade(dir: &Path, config: &SimConfig, batch_candles: bool) -> (SimReport, Vec<Envelope>) {
    let opts = SimOptions {
        data_dir: dir.to_path_buf(),
        candles: quarter(),
        config: config.clone(),
        config_text: None,
        templates: Templates::default(),
        template_texts: None,
        workers: 1,
        speed: None,
        live: false,
        batch_candles,
    };
    let report = run_sim(opts, |_| {}, |_, _| {}).unwrap();
    let events =
        LogReader::open(dir).unwrap().iter_from(1).unwrap().map(|e| Envelope { wall: 0, ..e.unwrap() }).collect();
    (report, events)
}

fn same_either_way(config: &SimConfig) {
    let tmp = tempfile::tempdir().unwrap();
    let (one, batched) = (tmp.path().join("one"), tmp.path().join("batched"));
    let (a, a_events) = trade(&one, config, false);
    // The same secret: the holders sign alike.
    std::fs::create_dir_all(&batched).unwrap();
    std::fs::copy(one.join("secret"), batched.join("secret")).unwrap();
    let (b, b_events) = trade(&batched, config, true);
    assert!(a.orders > 0, "the quarter trades");
    assert_eq!(a_events.len(), b_events.len());
    if let Some(i) = (0..a_events.len()).find(|&i| a_events[i] != b_events[i]) {
        panic!("batched differs at\n{:?}\nfrom\n{:?}", b_events[i], a_events[i]);
    }
    let figures = |r: &SimReport| (r.orders, r.fills, r.end_equity, r.fees, r.max_drawdown, r.per_strategy.clone());
    assert_eq!(figures(&a), figures(&b));
    assert!(b.accounting_mismatches.is_empty());
}

#[test]
fn batching_candles_records_the_same_run() {
    same_either_way(&SimConfig::default());
}

#[test]
fn batching_candles_records_the_same_run_on_a_misbehaving_venue() {
    let text = crypy_exchange::sim::DEFAULT_TOML
        .replace("partial_fill_probability = 0.0", "partial_fill_probability = 0.2")
        .replace("rejection_probability = 0.0", "rejection_probability = 0.05")
        .replace("duplicate_data_probability = 0.0", "duplicate_data_probability = 0.02")
        .replace("stale_data_probability = 0.0", "stale_data_probability = 0.02")
        .replace("disconnect_probability = 0.0", "disconnect_probability = 0.01")
        .replace("timeout_probability = 0.0", "timeout_probability = 0.05")
        .replace("rate_limited_probability = 0.0", "rate_limited_probability = 0.05")
        .replace("server_error_probability = 0.0", "server_error_probability = 0.05")
        .replace("reorder_probability = 0.0", "reorder_probability = 0.05")
        .replace("clock_skew_ms = 0", "clock_skew_ms = 2000");
    assert!(text.contains("partial_fill_probability = 0.2") && text.contains("disconnect_probability = 0.01"));
    assert!(text.contains("clock_skew_ms = 2000"));
    same_either_way(&SimConfig::from_toml(&text).unwrap());
}
