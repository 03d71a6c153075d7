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
