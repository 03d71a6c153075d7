use std::path::{Path, PathBuf};

use rust_decimal::Decimal;

use crate::util::*;

fn setup(dir: &Path, bars: usize) -> (PathBuf, PathBuf) {
    small_desk(dir, bars, "0.0")
}

fn sim(data: &Path, templates: &Path, market: &Path) -> serde_json::Value {
    sim_on(data, templates, market, 1)
}

fn sim_on(data: &Path, templates: &Path, market: &Path, workers: u32) -> serde_json::Value {
    let out = run(
        crypy(data)
            .args(["sim", "--json", "--workers", &workers.to_string(), "--templates"])
            .arg(templates)
            .arg("--market")
            .arg(market),
        0,
    );
    serde_json::from_str(out.trim()).unwrap()
}

fn log_without_wall(data: &Path) -> Vec<serde_json::Value> {
    let mut lines = json_lines(&run(crypy(data).args(["log", "show", "--json"]), 0));
    for l in &mut lines {
        l.as_object_mut().unwrap().remove("wall");
    }
    lines
}

#[test]
fn two_runs_on_the_same_inputs_give_the_same_log_but_wall_whatever_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = setup(dir.path(), 1500);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    // The same inputs include the data dir's secret, from which holder keys derive.
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("secret"), [7u8; 32]).unwrap();
    std::fs::write(b.join("secret"), [7u8; 32]).unwrap();
    let ra = sim(&a, &templates, &market);
    // The second on two dataflow workers: the pair's tracker then runs on the other one.
    let rb = sim_on(&b, &templates, &market, 2);
    assert!(ra["orders"].as_u64().unwrap() > 0 && ra["fills"].as_u64().unwrap() > 0, "the agents trade: {ra}");
    for key in ["events", "orders", "fills", "start_equity", "end_equity", "fees", "max_drawdown"] {
        assert!(ra.get(key).is_some(), "summary lacks {key}: {ra}");
        assert_eq!(ra[key], rb[key], "{key}");
    }
    let (la, lb) = (log_without_wall(&a), log_without_wall(&b));
    assert_eq!(la.len() as u64, ra["events"].as_u64().unwrap());
    assert!(la == lb, "the logs differ");
}

#[test]
fn replay_verifies_a_fresh_log_and_names_an_altered_decision() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = setup(dir.path(), 1500);
    let data = dir.path().join("data");
    sim(&data, &templates, &market);
    let ok = run(crypy(&data).args(["replay", "--verify"]), 0);
    assert!(ok.contains("ok: every recorded decision is reproduced exactly"), "{ok}");
    // Any epoch batching and any number of workers give the same derived events.
    let mut compared = Vec::new();
    for (epoch, workers) in [("1", "1"), ("7", "2"), ("100000", "3")] {
        let r: serde_json::Value = serde_json::from_str(
            run(crypy(&data).args(["replay", "--verify", "--json", "--epoch", epoch, "--workers", workers]), 0).trim(),
        )
        .unwrap();
        assert_eq!(r["ok"], true, "epoch {epoch}, {workers} workers: {r}");
        assert_eq!(r["workers"], workers.parse::<u64>().unwrap());
        compared.push(r["compared"].as_u64().unwrap());
    }
    assert!(compared[0] > 0 && compared.iter().all(|c| *c == compared[0]), "{compared:?}");

    // Copy the log event by event into another data dir, changing one recorded decision.
    let events: Vec<crypy_core::Envelope> = {
        let log = crypy_eventstore::EventLog::open(&data, crypy_eventstore::Options::default()).unwrap();
        log.iter_from(1).collect::<Result<_, _>>().unwrap()
    };
    let victim = events.iter().find(|e| e.kind().name() == "allocation_granted").expect("an allocation").seq;
    let tamper = |name: &str, change: &dyn Fn(&mut crypy_core::event::Allocation)| {
        let tampered = dir.path().join(name);
        let copy = crypy_eventstore::EventLog::open(&tampered, crypy_eventstore::Options::default()).unwrap();
        copy.start_run().unwrap();
        let batch: Vec<_> = events
            .iter()
            .cloned()
            .map(|e| {
                let mut event = e.event;
                if e.seq == victim {
                    if let crypy_core::Event::AllocationGranted(a) = &mut event {
                        change(a);
                    }
                }
                crypy_core::NewEvent { run: e.run, time: e.time, wall: e.wall, source: e.source, cause: e.cause, event }
            })
            .collect();
        copy.append(&batch).unwrap();
        drop(copy);
        std::fs::copy(data.join("secret"), tampered.join("secret")).unwrap();
        run(crypy(&tampered).args(["replay", "--verify"]), 1)
    };
    let out = tamper("tampered", &|a| a.amount = "999999".parse().unwrap());
    assert!(out.contains(&format!("difference at seq {victim}")), "{out}");
    assert!(out.contains("999999"), "the difference shows the recorded event: {out}");
    // The holders' signatures the replay prepares ahead from the log are what the key makes
    // over the recorded fields, never the recorded signature: an altered one still differs.
    let out = tamper("resigned", &|a| a.signature.0[7] ^= 1);
    assert!(out.contains(&format!("difference at seq {victim}")), "{out}");
}

/// A holder signs with one key for all its lifetimes, or (as every log recorded before the
/// setting existed) with a new key per lifetime; each run replays exactly either way.
#[test]
fn holder_keys_follow_the_template_scope_and_both_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = setup(dir.path(), 1500);
    let holder = std::fs::read_to_string(templates.join("holder.toml")).unwrap();
    assert!(holder.contains("key = \"asset\""), "the shipped holder template: {holder}");
    for (scope, text) in
        [("asset", holder.clone()), ("lifetime", holder.replace("key = \"asset\"", "key = \"lifetime\""))]
    {
        let scoped = dir.path().join(format!("templates-{scope}"));
        std::fs::create_dir_all(&scoped).unwrap();
        std::fs::copy(templates.join("trader.toml"), scoped.join("trader.toml")).unwrap();
        std::fs::write(scoped.join("holder.toml"), text).unwrap();
        let data = dir.path().join(format!("data-{scope}"));
        sim(&data, &scoped, &market);
        let keys: Vec<String> = log_without_wall(&data)
            .iter()
            .filter(|e| e["kind"] == "agent_spawned" && !e["data"]["public_key"].is_null())
            .map(|e| e["data"]["public_key"].as_str().unwrap().to_string())
            .collect();
        assert!(keys.len() >= 2, "{scope}: several holder lifetimes: {keys:?}");
        let distinct: std::collections::BTreeSet<_> = keys.iter().collect();
        match scope {
            "asset" => assert_eq!(distinct.len(), 1, "one key for every lifetime: {keys:?}"),
            _ => assert_eq!(distinct.len(), keys.len(), "a key per lifetime: {keys:?}"),
        }
        let ok = run(crypy(&data).args(["replay", "--verify"]), 0);
        assert!(ok.contains("ok: every recorded decision is reproduced exactly"), "{scope}: {ok}");
    }
}

#[test]
fn end_balances_are_start_balances_plus_fills_minus_fees_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = setup(dir.path(), 1500);
    let data = dir.path().join("data");
    let report = sim(&data, &templates, &market);
    let (mut eur, mut xbt) = (Decimal::from(10_000), Decimal::ZERO);
    let d = |v: &serde_json::Value| v.as_str().unwrap().parse::<Decimal>().unwrap();
    for e in json_lines(&run(
        crypy(&data).args(["log", "show", "--json", "--kind", "order_filled,order_partially_filled"]),
        0,
    )) {
        let f = &e["data"];
        let (qty, value, fee) = (d(&f["qty"]), d(&f["qty"]) * d(&f["price"]), d(&f["fee"]));
        if f["side"] == "buy" {
            eur -= value + fee;
            xbt += qty;
        } else {
            eur += value - fee;
            xbt -= qty;
        }
    }
    let balance = |asset: &str| {
        report["end_balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["asset"] == asset)
            .map_or(Decimal::ZERO, |b| d(&b["free"]) + d(&b["reserved"]))
    };
    assert_eq!(balance("EUR"), eur);
    assert_eq!(balance("XBT"), xbt);
    assert_eq!(report["accounting_ok"], true, "the differential ledger agrees with the venue: {report}");
}

#[test]
fn sim_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let err = run(crypy(&data).args(["sim", "--market", "no/such/file.csv"]), 2);
    assert!(err.contains("no/such/file.csv") && err.contains("cannot read"), "{err}");
    let config = dir.path().join("sim.toml");
    std::fs::write(&config, "maker_fee = 0.1\n").unwrap();
    let err = run(crypy(&data).args(["sim", "--config"]).arg(&config), 2);
    assert!(err.contains("sim.toml") && err.contains("decimal number as a string"), "{err}");
    let err = run(crypy(&data).args(["replay", "--verify"]), 2);
    assert!(err.contains("no crypy log"), "{err}");
}

#[test]
fn sim_trades_candles_imported_into_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let err = run(crypy(&data).args(["sim", "--from-log"]), 2);
    assert!(err.contains("no crypy log"), "{err}");
    import(&data, "XBT/EUR", "15m", ONE_DAY);
    let report: serde_json::Value =
        serde_json::from_str(run(crypy(&data).args(["sim", "--from-log", "--json"]), 0).trim()).unwrap();
    assert_eq!(report["candles"], 96);
    assert_eq!(report["run"], 1);
    assert_eq!(report["first_seq"], 97, "the run follows the imported candles");
    run(crypy(&data).args(["replay", "--verify"]), 0);
}

#[test]
fn template_history_and_diff_show_what_changed_between_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = setup(dir.path(), 400);
    let stricter = dir.path().join("stricter");
    std::fs::create_dir_all(&stricter).unwrap();
    for f in ["trader.toml", "holder.toml"] {
        std::fs::copy(templates.join(f), stricter.join(f)).unwrap();
    }
    let holder =
        std::fs::read_to_string(stricter.join("holder.toml")).unwrap().replace("min_sharpe = 0.0", "min_sharpe = 0.9");
    std::fs::write(stricter.join("holder.toml"), holder).unwrap();

    let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let diff = run(crypy(dir.path()).args(["templates", "diff"]).arg(&templates).arg(&stricter), 0);
    assert_eq!(words(&diff), "holder.toml criteria.min_sharpe 0.0 → 0.9", "{diff}");

    let data = dir.path().join("data");
    sim(&data, &templates, &market);
    sim(&data, &stricter, &market);
    let history = run(crypy(&data).args(["templates", "history"]), 0);
    assert!(history.contains("holder.toml: first recorded"), "{history}");
    assert!(words(&history).contains("holder.toml: templates of run 2 criteria.min_sharpe 0.0 → 0.9"), "{history}");
    let changed: Vec<_> = json_lines(&run(crypy(&data).args(["templates", "history", "--json"]), 0))
        .into_iter()
        .filter(|l| l["run"] == 2 && l["reason"] == "templates of run 2")
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!((changed[0]["key"].as_str(), changed[0]["new"].as_str()), (Some("criteria.min_sharpe"), Some("0.9")));
}
