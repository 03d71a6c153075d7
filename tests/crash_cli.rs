use std::process::Stdio;
use std::time::Duration;

use crate::util::*;

/// SplitMix64: the kill moments come from a fixed seed, so every run of the test kills at
/// the same moments (as far as the machine's speed allows).
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, from: u64, to: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        from + (z ^ (z >> 31)) % (to - from)
    }
}

#[test]
fn a_desk_killed_twenty_times_loses_no_event_and_no_order_and_its_books_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = small_desk(dir.path(), 900, "0.0");
    let data = dir.path().join("data");
    // Live (paced) mode: every order is durable before it leaves, fills come later, so a
    // kill often leaves orders out.
    let sim = || {
        let mut cmd = crypy(&data);
        cmd.args(["sim", "--quiet", "--speed", "150000x", "--templates"]).arg(&templates).arg("--market").arg(&market);
        cmd
    };
    let mut moments = Moments(20_261_124);
    let mut killed = 0;
    while killed < 20 {
        let mut child = sim().stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(moments.next_ms(150, 2_500)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
        // After every kill the log is whole: every record's checksum, seqs contiguous.
        let verified = run(crypy(&data).args(["log", "verify"]), 0);
        assert!(verified.contains("ok"), "{verified}");
    }
    // A last run to the end reconciles what the last kill left and trades on.
    let last = run(sim().args(["--json"]), 0);
    let summary: serde_json::Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
    assert_eq!(summary["accounting_ok"], true, "{summary}");
    let events = json_lines(&run(crypy(&data).args(["log", "show", "--json"]), 0));
    // Each start is a later run than the one before (a kill during start-up may leave a run
    // with no event, or none at all); the last start is the last run.
    let runs: Vec<u64> = events.iter().map(|e| e["run"].as_u64().unwrap()).collect();
    assert!(runs.windows(2).all(|w| w[1] >= w[0]) && runs[0] == 1, "runs in order");
    assert_eq!(summary["run"].as_u64(), runs.last().copied(), "{summary}");
    assert!(runs.last().unwrap() >= &15, "most starts began a run: {}", runs.last().unwrap());
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1) && seqs[0] == 1, "seqs are contiguous");
    let kind = |e: &serde_json::Value| e["kind"].as_str().unwrap().to_string();
    let client = |e: &serde_json::Value| e["data"]["client_id"].as_str().unwrap().to_string();
    let requested: Vec<String> = events.iter().filter(|e| kind(e) == "order_requested").map(client).collect();
    let unique: std::collections::BTreeSet<&String> = requested.iter().collect();
    assert_eq!(unique.len(), requested.len(), "a client order id was used twice");
    let mut open = std::collections::BTreeSet::new();
    for e in &events {
        match kind(e).as_str() {
            "order_approved" => {
                open.insert(client(e));
            }
            "order_filled" | "order_canceled" | "order_failed" => {
                open.remove(&client(e));
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "orders never ended nor reconciled: {open:?}");
    let reconciled = events
        .iter()
        .filter(|e| kind(e) == "order_canceled")
        .filter(|e| e["data"]["reason"].as_str().unwrap().contains("ended with the run that placed it"))
        .count();
    assert!(reconciled > 0, "no kill left an order out: the test did not test reconciliation");
    println!(
        "{killed} kills, {} events, {} orders, {reconciled} reconciled at restarts",
        events.len(),
        requested.len()
    );
    // Every run, killed or not, replays to the same decisions.
    let replay: serde_json::Value =
        serde_json::from_str(run(crypy(&data).args(["replay", "--verify", "--json"]), 0).trim()).unwrap();
    assert_eq!(replay["ok"], true, "{replay}");
}

/// Sends `signal` (TERM, INT) to `pid` with the shell's own `kill`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("sh").arg("-c").arg(format!("kill -{signal} {pid}")).status().unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

fn open_orders_in_log(data: &std::path::Path) -> Vec<String> {
    let events = json_lines(&run(crypy(data).args(["log", "show", "--json"]), 0));
    let mut open = std::collections::BTreeSet::new();
    for e in &events {
        let client = || e["data"]["client_id"].as_str().unwrap().to_string();
        match e["kind"].as_str().unwrap() {
            "order_approved" => {
                open.insert(client());
            }
            "order_filled" | "order_canceled" | "order_failed" => {
                open.remove(&client());
            }
            _ => {}
        }
    }
    open.into_iter().collect()
}

#[test]
fn sigterm_stops_the_desk_cleanly_and_a_second_signal_stops_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = small_desk(dir.path(), 900, "0.0");
    let sim = |data: &std::path::Path| {
        let mut cmd = crypy(data);
        // Slow enough to be mid-run when the signal comes, with orders about: 900 minutes
        // take 2.7 s at this speed, however fast the desk itself gets.
        cmd.args(["sim", "--json", "--speed", "20000x", "--templates"]).arg(&templates).arg("--market").arg(&market);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    };
    // Signal once the desk has traded (the running desk serves its log to readers).
    let wait_for_an_order = |data: &std::path::Path| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let shown = crypy(data).args(["log", "show", "--kind", "order_requested", "--json"]).output().unwrap();
            if !shown.stdout.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let data = dir.path().join("term");
    let child = sim(&data).spawn().unwrap();
    wait_for_an_order(&data);
    signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("stopping: the desk ends after the input in hand"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(summary["candles"].as_u64().unwrap() < 900, "stopped early: {summary}");
    assert!(summary["orders"].as_u64().unwrap() > 0, "the desk had traded when it stopped: {summary}");
    assert_eq!(summary["accounting_ok"], true, "{summary}");
    assert!(open_orders_in_log(&data).is_empty(), "on_stop = cancel leaves no order open");
    run(crypy(&data).args(["log", "verify"]), 0);
    let replay: serde_json::Value =
        serde_json::from_str(run(crypy(&data).args(["replay", "--verify", "--json"]), 0).trim()).unwrap();
    assert_eq!(replay["ok"], true, "{replay}");

    // Two signals: out at once, the log still whole.
    let data = dir.path().join("twice");
    let child = sim(&data).spawn().unwrap();
    wait_for_an_order(&data);
    // Two kinds: two signals of one kind sent back to back may reach the process as one.
    signal(child.id(), "TERM");
    signal(child.id(), "INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    run(crypy(&data).args(["log", "verify"]), 0);
}

#[test]
fn a_desk_whose_log_fails_stops_trading_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = small_desk(dir.path(), 900, "0.0");
    let data = dir.path().join("full");
    // Live: the first order's append succeeds, the next one meets a full disk.
    let mut cmd = crypy(&data);
    cmd.args(["sim", "--quiet", "--speed", "1000000x", "--fault-log-fails-after", "1", "--templates"])
        .arg(&templates)
        .arg("--market")
        .arg(&market);
    let err = run(&mut cmd, 2);
    assert!(err.contains("the log cannot be written") && err.contains("no space left on device"), "{err}");
    assert!(err.contains("kill switch engaged") && err.contains("the desk stopped"), "{err}");
    run(crypy(&data).args(["log", "verify"]), 0);
    // Only what was recorded was traded on: one order, whose approval reached the log.
    let requested = json_lines(&run(crypy(&data).args(["log", "show", "--kind", "order_requested", "--json"]), 0));
    assert_eq!(requested.len(), 1, "{requested:?}");
    // The next start reconciles it and trades on.
    let out = run(crypy(&data).args(["sim", "--json", "--templates"]).arg(&templates).arg("--market").arg(&market), 0);
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["accounting_ok"], true, "{summary}");
    assert!(open_orders_in_log(&data).is_empty());
}

#[test]
fn repeated_and_stale_market_data_change_nothing_the_desk_does() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = small_desk(dir.path(), 900, "0.0");
    let faulty = dir.path().join("faulty.toml");
    let default = std::fs::read_to_string(root().join("crates/exchange/src/sim/default.toml")).unwrap();
    let config = default
        .replace("duplicate_data_probability = 0.0", "duplicate_data_probability = 0.2")
        .replace("stale_data_probability = 0.0", "stale_data_probability = 0.2");
    assert_ne!(config, default, "the default configuration names both faults");
    std::fs::write(&faulty, config).unwrap();
    let sim = |data: &std::path::Path, config: Option<&std::path::Path>| {
        let mut cmd = crypy(data);
        cmd.args(["sim", "--json", "--templates"]).arg(&templates).arg("--market").arg(&market);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let out = run(&mut cmd, 0);
        serde_json::from_str::<serde_json::Value>(out.lines().last().unwrap()).unwrap()
    };
    let clean = sim(&dir.path().join("clean"), None);
    let data = dir.path().join("faulty");
    let noisy = sim(&data, Some(&faulty));
    // Repeated and stale candles are recorded, but are no progress through the data.
    assert_eq!(noisy["candles"], clean["candles"]);
    assert!(noisy["events"].as_u64().unwrap() > clean["events"].as_u64().unwrap() + 200, "faults were injected");
    assert!(clean["orders"].as_u64().unwrap() > 0, "{clean}");
    for field in ["orders", "fills", "positions", "end_equity", "fees", "per_strategy", "accounting_ok"] {
        assert_eq!(noisy[field], clean[field], "{field}: {noisy} vs {clean}");
    }
    let replay: serde_json::Value =
        serde_json::from_str(run(crypy(&data).args(["replay", "--verify", "--json"]), 0).trim()).unwrap();
    assert_eq!(replay["ok"], true, "{replay}");
}
