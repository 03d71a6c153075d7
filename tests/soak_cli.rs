use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::util::*;

/// Every fault the simulator can inject, at once, at rates a bad day on a real venue could
/// reach.
fn faulty_config(dir: &Path) -> std::path::PathBuf {
    let default = std::fs::read_to_string(root().join("crates/exchange/src/sim/default.toml")).unwrap();
    let mut config = default.clone();
    for (key, value) in [
        ("partial_fill_probability", "0.2"),
        ("rejection_probability", "0.02"),
        ("duplicate_data_probability", "0.01"),
        ("stale_data_probability", "0.01"),
        ("disconnect_probability", "0.01"),
        ("timeout_probability", "0.05"),
        ("rate_limited_probability", "0.05"),
        ("server_error_probability", "0.05"),
        ("reorder_probability", "0.05"),
        ("clock_skew_ms", "2000"),
    ] {
        let line = config.lines().find(|l| l.starts_with(&format!("{key} = "))).unwrap().to_owned();
        config = config.replace(&line, &format!("{key} = {value}"));
    }
    assert_ne!(config, default);
    let path = dir.join("faulty.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// The bundled quarter of real XBT/EUR candles, laid end to end `copies` times: every other
/// copy runs backwards in time (bars in reverse order, open and close swapped), so that the
/// price path is continuous and comes back to where it started instead of compounding.
fn long_market(dir: &Path, copies: usize) -> std::path::PathBuf {
    let text = std::fs::read_to_string(root().join("replays/kraken_XBTEUR_15m_2023Q4.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let bars: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let start: i64 = bars[0][0].parse().unwrap();
    let mut out = String::with_capacity(text.len() * copies);
    out.push_str(header);
    out.push('\n');
    let mut t = start;
    for copy in 0..copies {
        for i in 0..bars.len() {
            let b = if copy % 2 == 0 { &bars[i] } else { &bars[bars.len() - 1 - i] };
            let (open, close) = if copy % 2 == 0 { (b[1], b[4]) } else { (b[4], b[1]) };
            out.push_str(&format!("{t},{open},{},{},{close},{},{}\n", b[2], b[3], b[5], b[6]));
            t += 900;
        }
    }
    let path = dir.join("long.csv");
    std::fs::write(&path, out).unwrap();
    path
}

/// What the log says about orders: each client id's events, in order.
fn order_histories(data: &Path) -> BTreeMap<String, Vec<String>> {
    let kinds = "order_requested,order_approved,order_acknowledged,order_filled,order_partially_filled,\
                 order_canceled,order_failed,order_refused";
    let mut histories: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in json_lines(&run(crypy(data).args(["log", "show", "--json", "--kind", kinds]), 0)) {
        let client = e["data"]["client_id"].as_str().unwrap().to_owned();
        histories.entry(client).or_default().push(e["kind"].as_str().unwrap().to_owned());
    }
    histories
}

/// More than a million events through a desk on a venue that misbehaves in every way the
/// simulator knows, from one seed: the log stays whole, no order is sent twice or left
/// without an end, the books agree with the venue, and the run replays exactly.
#[test]
fn a_million_events_with_random_faults_keep_every_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let config = faulty_config(dir.path());
    let market = long_market(dir.path(), 90);
    let data = dir.path().join("data");
    let out = run(crypy(&data).args(["sim", "--json", "--config"]).arg(&config).arg("--market").arg(&market), 0);
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let events = summary["events"].as_u64().unwrap();
    assert!(events >= 1_000_000, "{summary}");
    assert_eq!(summary["accounting_ok"], true, "{summary}");

    let verified = run(crypy(&data).args(["log", "verify"]), 0);
    assert!(verified.starts_with("ok") && verified.contains(&format!("seqs 1..={events}")), "{verified}");

    let histories = order_histories(&data);
    let mut unended = Vec::new();
    for (client, history) in &histories {
        let count = |kind: &str| history.iter().filter(|k| *k == kind).count();
        assert_eq!(count("order_requested"), 1, "{client} requested twice: {history:?}");
        assert!(count("order_acknowledged") <= 1, "{client} placed twice: {history:?}");
        let ends = count("order_filled") + count("order_canceled") + count("order_failed") + count("order_refused");
        assert!(ends <= 1, "{client} ended twice: {history:?}");
        if ends == 0 {
            unended.push(client);
        }
    }
    assert!(unended.is_empty(), "orders without an end: {unended:?}");

    // The faults happened, and were survived rather than avoided.
    let stats = run(crypy(&data).args(["log", "stats"]), 0);
    let count = |kind: &str| -> u64 {
        let line = stats.lines().find(|l| l.split_whitespace().next() == Some(kind)).unwrap_or("x 0");
        line.split_whitespace().last().unwrap().replace(',', "").parse().unwrap()
    };
    let venue_errors = count("venue_error");
    let candles = summary["candles"].as_u64().unwrap();
    assert!(venue_errors > 5_000, "{stats}");
    assert!(count("candle") > candles + 5_000, "repeated and stale candles were injected: {stats}");
    assert!(count("order_partially_filled") > 0 && histories.len() > 1_000, "{stats}");
    println!(
        "{events} events, {candles} candles, {} orders, {venue_errors} venue errors survived, {} fills",
        histories.len(),
        summary["fills"]
    );

    let replay: serde_json::Value =
        serde_json::from_str(run(crypy(&data).args(["replay", "--verify", "--json"]), 0).trim()).unwrap();
    assert_eq!(replay["ok"], true, "{replay}");
}

/// Faults the wire recovers from (dropped streams, lost answers, 429s, 5xx, a skewed clock)
/// change nothing the desk does: the same orders, fills and equity as on a clean venue.
#[test]
fn recoverable_wire_faults_change_nothing_the_desk_does() {
    let dir = tempfile::tempdir().unwrap();
    let default = std::fs::read_to_string(root().join("crates/exchange/src/sim/default.toml")).unwrap();
    let mut faulty = default.clone();
    for (clean, fault) in [
        ("disconnect_probability = 0.0", "disconnect_probability = 0.1"),
        ("timeout_probability = 0.0", "timeout_probability = 0.3"),
        ("rate_limited_probability = 0.0", "rate_limited_probability = 0.1"),
        ("server_error_probability = 0.0", "server_error_probability = 0.1"),
        ("clock_skew_ms = 0", "clock_skew_ms = 5000"),
    ] {
        assert!(default.contains(clean), "the default configuration names {clean}");
        faulty = faulty.replace(clean, fault);
    }
    let config = dir.path().join("faulty.toml");
    std::fs::write(&config, faulty).unwrap();
    let sim = |data: &Path, config: Option<&Path>| {
        let mut cmd = crypy(data);
        cmd.args(["sim", "--json"]);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        serde_json::from_str::<serde_json::Value>(run(&mut cmd, 0).lines().last().unwrap()).unwrap()
    };
    let clean = sim(&dir.path().join("clean"), None);
    let data = dir.path().join("faulty");
    let noisy = sim(&data, Some(&config));
    for field in ["candles", "orders", "fills", "positions", "end_equity", "fees", "per_strategy", "accounting_ok"] {
        assert_eq!(noisy[field], clean[field], "{field}: {noisy} vs {clean}");
    }
    let errors = json_lines(&run(crypy(&data).args(["log", "show", "--json", "--kind", "venue_error"]), 0));
    let calls: BTreeSet<String> =
        errors.iter().map(|e| e["data"]["call"].as_str().unwrap().split(' ').next().unwrap().to_owned()).collect();
    // Each kind of call failed, and a lost answer was settled by a look-up, never a resend.
    assert!(["next_event", "place", "lookup"].iter().all(|c| calls.contains(*c)), "{calls:?}");
    assert!(errors.iter().any(|e| e["data"]["error"].as_str().unwrap().contains("timed out")), "{errors:?}");
    let histories = order_histories(&data);
    assert!(histories.values().all(|h| h.iter().filter(|k| *k == "order_acknowledged").count() == 1));
    let replay: serde_json::Value =
        serde_json::from_str(run(crypy(&data).args(["replay", "--verify", "--json"]), 0).trim()).unwrap();
    assert_eq!(replay["ok"], true, "{replay}");
}
