use std::path::Path;
use std::time::Duration;

use crypy_exchange::loopback::kraken::{FakeKraken, FakeKrakenOptions, Fault};

use crate::util::*;

/// A desk on a live venue that has not ended by then is stuck: fail with what it printed.
const LIMIT: Duration = Duration::from_secs(120);

/// Kraken's documented example secret (its REST authentication guide), and a key.
const KRAKEN_SECRET: &str = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";
const KRAKEN_KEY: &str = "TESTKEY-Kr4k3n-d0-n0t-l0g";

/// The bundled quarter's first `bars` candles.
fn bundled(bars: usize) -> Vec<crypy_core::Candle> {
    let text = std::fs::read_to_string(root().join("replays/kraken_XBTEUR_15m_2023Q4.csv")).unwrap();
    let candles = crypy_eventstore::import::parse_candles(
        &text,
        Path::new("kraken_XBTEUR_15m_2023Q4.csv"),
        &"XBT/EUR".parse().unwrap(),
        "15m".parse().unwrap(),
        None,
    )
    .unwrap();
    candles.into_iter().take(bars).collect()
}

fn fake_kraken(bars: usize) -> FakeKraken {
    let mut opts = FakeKrakenOptions::new(KRAKEN_KEY, KRAKEN_SECRET);
    opts.candles = bundled(bars);
    opts.candle_pace = Duration::from_millis(8);
    opts.balances = FakeKrakenOptions::balance_body(&[("ZEUR", "10000.0000")]);
    FakeKraken::start(opts).unwrap()
}

fn kraken(data: &Path, fake: &FakeKraken, templates: &Path, candles: usize) -> std::process::Command {
    let mut cmd = crypy(data);
    cmd.args(["kraken", "--rest-url", &fake.rest_url(), "--ws-url", &fake.ws_url()])
        .args(["--ws-auth-url", &fake.ws_auth_url(), "--interval", "15m"])
        .args(["--templates"])
        .arg(templates)
        .args(["--candles", &candles.to_string(), "--timeout", "1"])
        .env_remove("CRYPY_KRAKEN_KEY")
        .env_remove("CRYPY_KRAKEN_SECRET");
    cmd
}

fn summary(out: &str) -> serde_json::Value {
    serde_json::from_str(out.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn replay_ok(data: &Path) {
    let out = run(crypy(data).args(["replay", "--verify", "--json"]), 0);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["ok"], true, "{report}");
}

#[test]
fn kraken_paper_trades_live_candles_locally_and_the_run_replays() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, _) = small_desk(dir.path(), 900, "0.0");
    let fake = fake_kraken(900);
    let data = dir.path().join("paper");
    let out = run_within(kraken(&data, &fake, &templates, 899).args(["--paper", "--record", "--json"]), 0, LIMIT);
    let s = summary(&out);
    assert_eq!(s["candles"], 899, "{s}");
    assert!(s["orders"].as_u64().unwrap() > 0 && s["fills"].as_u64().unwrap() > 0, "the desk traded: {s}");
    assert_eq!(s["accounting_ok"], true, "{s}");
    assert!(fake.orders().is_empty(), "paper trading sent an order to the venue: {:?}", fake.orders());
    assert!(
        fake.requests().iter().all(|r| r.path.starts_with("/0/public/")),
        "paper trading used a private endpoint: {:?}",
        fake.requests().iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    // The desk is kraken:paper, and the log replays exactly.
    let shown = run(crypy(&data).args(["log", "show", "--kind", "agent_spawned", "--json"]), 0);
    assert!(json_lines(&shown)[0]["source"] == "kraken:paper", "{shown}");
    replay_ok(&data);
    // The raw messages are kept beside the events.
    let recordings: Vec<_> = std::fs::read_dir(data.join("recordings")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    let raw = std::fs::read_to_string(&recordings[0]).unwrap();
    let lines = json_lines(&raw);
    assert!(lines.iter().any(|l| l["channel"].as_str().unwrap().contains("AssetPairs")), "{}", &raw[..500]);
    assert!(lines.iter().any(|l| l["text"].as_str().unwrap().contains("\"ohlc\"")), "no ohlc message recorded");
    // The session's candles become a simulator replay.
    let again = dir.path().join("again");
    let out = run(
        crypy(&again)
            .args(["sim", "--json", "--from-run", "1", "--data-dir"])
            .arg(&data)
            .arg("--templates")
            .arg(&templates),
        0,
    );
    assert_eq!(summary(&out)["candles"], 899);
}

#[test]
fn a_live_kraken_desk_survives_faults_without_a_duplicate_order_and_never_shows_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, _) = small_desk(dir.path(), 900, "0.0");
    let fake = fake_kraken(900);
    // The first order's answer comes after the client gave up (the order is placed); the
    // second meets a 429 and then a 503 before it goes through; the websockets drop once
    // orders flow.
    fake.fail_next("/0/private/AddOrder", Fault::Timeout);
    let data = dir.path().join("live");
    let mut cmd = kraken(&data, &fake, &templates, 899);
    cmd.args(["--json", "--record"]).env("CRYPY_KRAKEN_KEY", KRAKEN_KEY).env("CRYPY_KRAKEN_SECRET", KRAKEN_SECRET);
    let faults = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while fake.orders().is_empty() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            fake.fail_next("/0/private/AddOrder", Fault::TooManyRequests);
            fake.fail_next("/0/private/AddOrder", Fault::ServerError);
            fake.drop_websockets();
        });
        let out = run_within(&mut cmd, 0, LIMIT);
        watcher.join().unwrap();
        out
    });
    let out = faults;
    let s = summary(&out);
    assert!(s["candles"].as_u64().unwrap() >= 899, "{s}");
    let orders = fake.orders();
    assert!(orders.len() >= 2, "the desk placed orders through the faults: {s}");
    let adds = fake.requests().iter().filter(|r| r.path.ends_with("/AddOrder")).count();
    assert!(adds > orders.len(), "the faults made the client resend ({adds} AddOrder for {} orders)", orders.len());
    assert_eq!(s["accounting_ok"], true, "the desk's books agree with the venue's: {s}");
    let mut ids: Vec<_> = orders.iter().map(|o| o.cl_ord_id.clone().unwrap()).collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "an order was placed twice: {orders:?}");
    assert_eq!(s["orders"].as_u64().unwrap() as usize, orders.len(), "every order the desk asked for, once: {s}");
    assert!(s["fills"].as_u64().unwrap() > 0, "{s}");
    replay_ok(&data);
    // The key and secret are nowhere: not in the log, the --json output, or the recording.
    let exported = run(crypy(&data).args(["log", "show", "--json"]), 0);
    for (name, text) in [("log", exported.as_str()), ("--json output", out.as_str())] {
        assert!(!text.contains(KRAKEN_KEY) && !text.contains(KRAKEN_SECRET), "a secret in the {name}");
    }
    for entry in std::fs::read_dir(&data).unwrap().chain(std::fs::read_dir(data.join("recordings")).unwrap()) {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(KRAKEN_KEY) && !text.contains(KRAKEN_SECRET), "a secret in {}", path.display());
        }
    }
}

/// A live desk killed while Kraken filled its order unseen (the private stream had gone
/// quiet): the next start imports that fill from Kraken's own trades, before the balances it
/// is part of, its books agree with the venue's, and both runs replay exactly.
#[test]
fn a_fill_made_while_the_desk_was_down_is_imported_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, _) = small_desk(dir.path(), 900, "0.0");
    let fake = fake_kraken(900);
    fake.mute_executions(true);
    let data = dir.path().join("live");
    let keyed = |cmd: &mut std::process::Command| {
        cmd.env("CRYPY_KRAKEN_KEY", KRAKEN_KEY).env("CRYPY_KRAKEN_SECRET", KRAKEN_SECRET);
    };
    let mut first = kraken(&data, &fake, &templates, 899);
    keyed(&mut first);
    let mut child = first.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fake.orders().iter().all(|o| o.executed.is_zero()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    fake.mute_executions(false);
    let unseen: Vec<String> =
        fake.orders().iter().filter(|o| !o.executed.is_zero()).map(|o| o.cl_ord_id.clone().unwrap()).collect();
    assert!(!unseen.is_empty(), "the desk placed an order and Kraken filled it: {:?}", fake.orders());

    let mut second = kraken(&data, &fake, &templates, 20);
    keyed(second.arg("--json"));
    let s = summary(&run_within(&mut second, 0, LIMIT));
    assert_eq!(s["run"], 2, "{s}");
    assert_eq!(s["accounting_ok"], true, "{s}");
    let kinds = "order_approved,order_filled,order_partially_filled,order_canceled,balances";
    let events = json_lines(&run(crypy(&data).args(["log", "show", "--json", "--kind", kinds]), 0));
    let balances_of_run_2 =
        events.iter().find(|e| e["kind"] == "balances" && e["run"] == 2).expect("run 2 records balances")["seq"]
            .as_u64()
            .unwrap();
    let trades_at_kraken: Vec<String> = fake.orders().iter().flat_map(|o| o.trades.clone()).collect();
    for id in &unseen {
        let fills: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["kind"].as_str().unwrap().contains("filled") && e["data"]["client_id"] == id.as_str())
            .collect();
        assert!(!fills.is_empty(), "the fill of {id} made while the desk was down is in the log");
        for f in fills {
            assert_eq!(f["run"], 2, "{f}");
            assert!(f["seq"].as_u64().unwrap() < balances_of_run_2, "recorded before the balances it is part of");
            assert!(trades_at_kraken.iter().any(|t| f["data"]["fill_id"] == t.as_str()), "Kraken's trade id: {f}");
        }
    }
    replay_ok(&data);
}

#[test]
fn a_live_venue_without_a_key_or_with_a_bad_key_file_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let err = run(
        crypy(&data)
            .args(["kraken", "--rest-url", "http://127.0.0.1:9", "--ws-url", "ws://127.0.0.1:9"])
            .env_remove("CRYPY_KRAKEN_KEY")
            .env_remove("CRYPY_KRAKEN_SECRET"),
        2,
    );
    assert!(err.contains("needs its API key") && err.contains("--paper"), "{err}");
    let key_file = dir.path().join("kraken.key");
    std::fs::write(&key_file, format!("key = {KRAKEN_KEY}\nsecret = {KRAKEN_SECRET}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = run(crypy(&data).args(["kraken", "--key-file"]).arg(&key_file), 2);
        assert!(err.contains("can be read by others (mode 640)"), "{err}");
        assert!(!err.contains(KRAKEN_KEY) && !err.contains(KRAKEN_SECRET), "{err}");
    }
    let err =
        run(crypy(&data).args(["kraken"]).env("CRYPY_KRAKEN_KEY", KRAKEN_KEY).env_remove("CRYPY_KRAKEN_SECRET"), 2);
    assert!(err.contains("CRYPY_KRAKEN_KEY is set but CRYPY_KRAKEN_SECRET is not"), "{err}");
}

const BITMEX_KEY: &str = "LAqUlngMIQkIUjXMUreyu3qn";
const BITMEX_SECRET: &str = "chNOOS4KvNXR_Xq4k4c9qsfoKWvnDecLATCRlcBwyKDYnWgO";

/// A fake BitMEX streaming its recorded XBTUSD minutes.
fn fake_bitmex() -> (crypy_exchange::loopback::bitmex::FakeBitmex, usize) {
    use crypy_exchange::loopback::bitmex::{recorded_candles, FakeBitmex, FakeBitmexOptions};
    let mut opts = FakeBitmexOptions::new(BITMEX_KEY, BITMEX_SECRET);
    opts.candles = std::mem::take(&mut opts.history);
    opts.candle_pace = Duration::from_millis(5);
    let streamed = recorded_candles().len();
    (FakeBitmex::start(opts).unwrap(), streamed)
}

#[test]
fn bitmex_testnet_paper_and_live_desks_run_on_the_venues_data_and_never_show_the_key() {
    let (_, streamed) = fake_bitmex();
    assert!(streamed > 10, "{streamed} recorded minutes");
    let candles = (streamed - 2).to_string();
    let dir = tempfile::tempdir().unwrap();
    // A fake streams its candles once, from its first subscriber: one fake per desk.
    let bitmex = |data: &Path, fake: &crypy_exchange::loopback::bitmex::FakeBitmex| {
        let mut cmd = crypy(data);
        cmd.args(["bitmex", "--testnet", "--rest-url", &fake.rest_url(), "--ws-url", &fake.ws_url()])
            .args(["--candles", &candles, "--timeout", "2", "--json", "--record"])
            .env_remove("CRYPY_BITMEX_KEY")
            .env_remove("CRYPY_BITMEX_SECRET");
        cmd
    };
    // Paper: public data only, the account in USD.
    let paper = dir.path().join("paper");
    let (fake, _) = fake_bitmex();
    let s = summary(&run_within(bitmex(&paper, &fake).arg("--paper"), 0, LIMIT));
    assert_eq!(s["candles"].as_u64().unwrap().to_string(), candles, "{s}");
    assert_eq!(s["start_equity"], "0", "no EUR in a USD paper account: {s}");
    assert!(s["end_balances"].as_array().unwrap().iter().any(|b| b["asset"] == "USD" && b["free"] == "10000"), "{s}");
    let shown = run(crypy(&paper).args(["log", "show", "--kind", "markets", "--json"]), 0);
    assert!(shown.contains("XBTUSD"), "the venue's markets are recorded: {}", &shown[..shown.len().min(400)]);
    let spawned = run(crypy(&paper).args(["log", "show", "--kind", "agent_spawned", "--json"]), 0);
    assert_eq!(json_lines(&spawned)[0]["source"], "bitmex:paper");
    replay_ok(&paper);

    // Live on the testnet: the key signs requests, balances come from the margin.
    let live = dir.path().join("live");
    let (fake, _) = fake_bitmex();
    let mut cmd = bitmex(&live, &fake);
    cmd.env("CRYPY_BITMEX_KEY", BITMEX_KEY).env("CRYPY_BITMEX_SECRET", BITMEX_SECRET);
    let out = run_within(&mut cmd, 0, LIMIT);
    let s = summary(&out);
    assert_eq!(s["candles"].as_u64().unwrap().to_string(), candles, "{s}");
    let balances = run(crypy(&live).args(["log", "show", "--kind", "balances", "--json"]), 0);
    assert!(balances.contains("\"XBT\""), "the margin in XBT: {balances}");
    replay_ok(&live);
    let exported = run(crypy(&live).args(["log", "show", "--json"]), 0);
    for (name, text) in [("log", exported.as_str()), ("--json output", out.as_str())] {
        assert!(!text.contains(BITMEX_KEY) && !text.contains(BITMEX_SECRET), "a secret in the {name}");
    }
    for entry in std::fs::read_dir(live.join("recordings")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(text.contains("tradeBin1m"), "the stream is recorded");
        assert!(!text.contains(BITMEX_KEY) && !text.contains(BITMEX_SECRET), "a secret in the recording");
    }
}
