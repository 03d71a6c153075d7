use std::path::Path;

use crate::util::*;

/// Two EUR pairs of real bars (the bundled Kraken XBT/EUR quarter, and the same quarter
/// mirrored in time as a second pair), traders that know one strategy family only, and a
/// holder that accepts what they propose: the family loses on both pairs.
fn one_family_two_pairs(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let text = std::fs::read_to_string(root().join("replays/kraken_XBTEUR_15m_2023Q4.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let bars: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let mut mirrored = format!("{header}\n");
    for (i, b) in bars.iter().rev().enumerate() {
        mirrored.push_str(&format!("{},{},{},{},{},{},{}\n", bars[i][0], b[4], b[2], b[3], b[1], b[5], b[6]));
    }
    let second = dir.join("mirrored.csv");
    std::fs::write(&second, mirrored).unwrap();
    let data = dir.join("data");
    import(&data, "XBT/EUR", "15m", root().join("replays/kraken_XBTEUR_15m_2023Q4.csv").to_str().unwrap());
    import(&data, "ETH/EUR", "15m", second.to_str().unwrap());

    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let trader = std::fs::read_to_string(root().join("templates/trader.toml")).unwrap();
    let trader = trader
        .replace("look_back_bars = 2000", "look_back_bars = 300")
        .replace("\"sma_cross fast=5..50/5 slow=20..200/20\",", "\"sma_cross fast=5..20/5 slow=30..90/30\",")
        .replace("    \"ema_cross fast=5..50/5 slow=20..200/20\",\n", "");
    assert!(!trader.contains("ema_cross"));
    std::fs::write(templates.join("trader.toml"), trader).unwrap();
    let holder = std::fs::read_to_string(root().join("templates/holder.toml")).unwrap();
    std::fs::write(templates.join("holder.toml"), holder.replace("min_sharpe = 0.5", "min_sharpe = 0.0")).unwrap();
    let default = std::fs::read_to_string(root().join("crates/exchange/src/sim/default.toml")).unwrap();
    let config = dir.join("two.toml");
    let markets = "\n[[markets]]\npair = \"ETH/EUR\"\nprice_precision = 1\nqty_precision = 8\nmin_qty = \"0.0001\"\n";
    std::fs::write(&config, default + markets).unwrap();
    (data, templates, config)
}

/// A strategy family that lost on two pairs is avoided by the holder's next lifetime: a
/// template change names the evidence, and no trader of that holder proposes the family
/// again; the run replays exactly (learning is a derived decision like any other).
#[test]
fn a_family_that_lost_on_two_pairs_is_not_proposed_by_the_next_holder_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let (data, templates, config) = one_family_two_pairs(dir.path());
    let mut cmd = crypy(&data);
    cmd.args(["sim", "--from-log", "--quiet", "--config"]).arg(&config).arg("--templates").arg(&templates);
    run(&mut cmd, 0);

    let changes = json_lines(&run(crypy(&data).args(["log", "show", "--json", "--kind", "template_changed"]), 0));
    let learned: Vec<&serde_json::Value> = changes.iter().filter(|e| e["data"]["key"] == "avoid").collect();
    assert_eq!(learned.len(), 1, "{learned:?}");
    let change = learned[0];
    assert_eq!(change["source"], "EUR");
    assert_eq!(change["data"]["scope"]["holder"], "EUR");
    assert_eq!(change["data"]["new"], "[\"sma_cross\"]");
    let reason = change["data"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("sma_cross lost on 2 pairs") && reason.contains("XBT/EUR (-") && reason.contains("ETH/EUR (-"),
        "{reason}"
    );
    assert!(change["cause"].is_u64(), "a learned change names the event it learned from");

    let learned_at = change["seq"].as_u64().unwrap();
    let proposed = json_lines(&run(crypy(&data).args(["log", "show", "--json", "--kind", "strategy_proposed"]), 0));
    let before = proposed.iter().filter(|e| e["seq"].as_u64().unwrap() < learned_at).count();
    let after: Vec<_> = proposed.iter().filter(|e| e["seq"].as_u64().unwrap() > learned_at).collect();
    assert!(before > 0, "the family was proposed before it lost");
    assert!(after.is_empty(), "proposed after it was avoided: {after:?}");

    let replay: serde_json::Value =
        serde_json::from_str(run(crypy(&data).args(["replay", "--verify", "--json"]), 0).trim()).unwrap();
    assert_eq!(replay["ok"], true, "{replay}");
}

/// A desk whose EUR holders lost in its two earlier lifetimes diverts EUR at the start of the
/// third: a template change names the evidence (run by run), no EUR holder is spawned, nothing
/// is traded; the run replays exactly and a what-if of it repeats the lesson. A human lifts
/// it by listing nothing in `divert` and turning the rule off.
#[test]
fn an_asset_whose_holders_usually_lost_is_diverted_at_the_next_desk_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let (data, templates, config) = one_family_two_pairs(dir.path());
    let desk = std::fs::read_to_string(root().join("templates/desk.toml")).unwrap();
    assert!(desk.contains("divert_after_losing_lifetimes = 3"));
    std::fs::write(
        templates.join("desk.toml"),
        desk.replace("divert_after_losing_lifetimes = 3", "divert_after_losing_lifetimes = 2"),
    )
    .unwrap();
    let sim = |templates: &Path| {
        let mut cmd = crypy(&data);
        cmd.args(["sim", "--from-log", "--json", "--config"]).arg(&config).arg("--templates").arg(templates);
        let out = run(&mut cmd, 0);
        serde_json::from_str::<serde_json::Value>(out.lines().last().unwrap()).unwrap()
    };
    for _ in 0..2 {
        let summary = sim(&templates);
        assert!(summary["end_equity"].as_str().unwrap().parse::<f64>().unwrap() < 10_000.0, "{summary}");
    }
    let third = sim(&templates);
    assert_eq!(third["orders"], 0, "{third}");

    let changes = json_lines(&run(crypy(&data).args(["log", "show", "--json", "--kind", "template_changed"]), 0));
    let diverts: Vec<&serde_json::Value> = changes.iter().filter(|e| e["data"]["key"] == "divert").collect();
    assert_eq!(diverts.len(), 1, "{diverts:?}");
    let divert = diverts[0];
    assert_eq!((divert["run"].as_u64(), divert["data"]["new"].as_str()), (Some(3), Some("[\"EUR\"]")));
    assert_eq!(divert["data"]["scope"], "desk");
    let reason = divert["data"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("EUR holders lost in 2 of 2 lifetimes: run 1 (-") && reason.contains("run 2 (-"),
        "{reason}"
    );
    let spawned = json_lines(&run(crypy(&data).args(["log", "show", "--json", "--kind", "agent_spawned"]), 0));
    assert!(spawned.iter().all(|e| e["run"] != 3), "nothing spawned in run 3");
    let replay: serde_json::Value =
        serde_json::from_str(run(crypy(&data).args(["replay", "--verify", "--json"]), 0).trim()).unwrap();
    assert_eq!(replay["ok"], true, "{replay}");
    let what_if = dir.path().join("what-if");
    let out = run(crypy(&data).args(["replay", "--json", "--into"]).arg(&what_if), 0);
    let again: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(again["orders"], 0, "the what-if repeats what the run learned at its start: {again}");

    // Lifted by a human: the rule off, nothing diverted; EUR trades again.
    let lifted = dir.path().join("lifted");
    std::fs::create_dir_all(&lifted).unwrap();
    for f in ["holder.toml", "trader.toml"] {
        std::fs::copy(templates.join(f), lifted.join(f)).unwrap();
    }
    std::fs::write(
        lifted.join("desk.toml"),
        desk.replace("divert_after_losing_lifetimes = 3", "divert_after_losing_lifetimes = 0"),
    )
    .unwrap();
    assert!(sim(&lifted)["orders"].as_u64().unwrap() > 0);
}
