use std::path::Path;

use crate::util::*;

fn summary(out: &str) -> serde_json::Value {
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// Every event but its wall-clock time.
fn events(data: &Path) -> Vec<serde_json::Value> {
    json_lines(&run(crypy(data).args(["log", "show", "--json"]), 0))
        .into_iter()
        .map(|mut e| {
            e.as_object_mut().unwrap().remove("wall");
            e
        })
        .collect()
}

/// A run on a venue with faults, re-traded with its own recorded templates and simulator
/// configuration, is the run again, event for event; `crypy compare` reads the same results
/// from both logs as the run printed.
#[test]
fn a_what_if_replay_with_the_recorded_templates_reproduces_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = small_desk(dir.path(), 900, "0.0");
    let default = std::fs::read_to_string(root().join("crates/exchange/src/sim/default.toml")).unwrap();
    let config = dir.path().join("faulty.toml");
    let faulty = default
        .replace("duplicate_data_probability = 0.0", "duplicate_data_probability = 0.1")
        .replace("timeout_probability = 0.0", "timeout_probability = 0.2")
        .replace("partial_fill_probability = 0.0", "partial_fill_probability = 0.3");
    std::fs::write(&config, faulty).unwrap();
    let a = dir.path().join("a");
    let mut cmd = crypy(&a);
    cmd.args(["sim", "--json", "--templates"])
        .arg(&templates)
        .arg("--market")
        .arg(&market)
        .arg("--config")
        .arg(&config);
    let recorded = summary(&run(&mut cmd, 0));
    assert!(recorded["orders"].as_u64().unwrap() > 0, "{recorded}");

    let b = dir.path().join("b");
    let again = summary(&run(crypy(&a).args(["replay", "--json", "--into"]).arg(&b), 0));
    for field in ["events", "candles", "orders", "fills", "end_equity", "fees", "per_strategy", "accounting_ok"] {
        assert_eq!(again[field], recorded[field], "{field}");
    }
    let (ea, eb) = (events(&a), events(&b));
    assert_eq!(ea.len(), eb.len());
    if let Some(i) = (0..ea.len()).find(|&i| ea[i] != eb[i]) {
        panic!("the what-if differs at\n{}\nfrom\n{}", eb[i], ea[i]);
    }

    let compared = summary(&run(crypy(&a).arg("compare").arg(&a).arg(&b).arg("--json"), 0));
    assert_eq!(compared["return_difference"], 0.0, "{compared}");
    let side = &compared["a"];
    assert_eq!(side["end_equity"], recorded["end_equity"]);
    assert_eq!(side["fees"], recorded["fees"]);
    assert_eq!(side["orders"], recorded["orders"]);
    assert_eq!(side["positions"], recorded["positions"]);
    assert_eq!(side["max_drawdown"], recorded["max_drawdown"]);
    for (name, result) in recorded["per_strategy"].as_object().unwrap() {
        assert_eq!(side["per_strategy"][name]["pnl"], result["pnl"], "{name}");
    }
}

/// The same market with other templates: another run, whose templates the new log records,
/// and `crypy compare` says what changed.
#[test]
fn a_what_if_with_other_templates_trades_otherwise_and_compare_says_how() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = small_desk(dir.path(), 900, "0.0");
    let a = dir.path().join("a");
    let mut cmd = crypy(&a);
    cmd.args(["sim", "--quiet", "--templates"]).arg(&templates).arg("--market").arg(&market);
    run(&mut cmd, 0);
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let trader = std::fs::read_to_string(templates.join("trader.toml")).unwrap();
    let trader = trader.replace("stop_loss = 0.05", "stop_loss = 0.01");
    std::fs::write(other.join("trader.toml"), &trader).unwrap();
    std::fs::copy(templates.join("holder.toml"), other.join("holder.toml")).unwrap();

    let b = dir.path().join("b");
    run(crypy(&a).args(["replay", "--into"]).arg(&b).arg("--templates").arg(&other), 0);
    let changed = json_lines(&run(crypy(&b).args(["log", "show", "--json", "--kind", "template_changed"]), 0));
    assert!(changed.iter().any(|e| e["data"]["new"].as_str().unwrap().contains("stop_loss = 0.01")));

    let compared = summary(&run(crypy(&a).arg("compare").arg(&a).arg(&b).arg("--json"), 0));
    assert_ne!(compared["a"]["end_equity"], compared["b"]["end_equity"], "{compared}");
    assert_eq!(compared["a"]["candles"], compared["b"]["candles"]);
    let table = run(crypy(&a).arg("compare").arg(&a).arg(&b), 0);
    assert!(table.contains("return") && table.contains("STRATEGY P&L") && table.contains("B − A"), "{table}");
}

#[test]
fn a_what_if_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = small_desk(dir.path(), 300, "0.0");
    let a = dir.path().join("a");
    let mut cmd = crypy(&a);
    cmd.args(["sim", "--quiet", "--templates"]).arg(&templates).arg("--market").arg(&market);
    run(&mut cmd, 0);
    // Into a data dir that already has something.
    let err = run(crypy(&a).args(["replay", "--into"]).arg(&a), 2);
    assert!(err.contains("is not empty"), "{err}");
    let err = run(crypy(&a).args(["replay", "--run", "7", "--into"]).arg(dir.path().join("b")), 2);
    assert!(err.contains("has no run 7 (its last is 1)"), "{err}");
    let err = run(crypy(&a).args(["replay"]), 2);
    assert!(err.contains("--verify"), "{err}");
    let err = run(crypy(&a).arg("compare").arg(&a).arg(dir.path().join("nothing")), 2);
    assert!(err.contains("cannot open the log"), "{err}");
}
