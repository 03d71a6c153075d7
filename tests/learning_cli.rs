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

/// A strategy family that lost on two pairs is avoided by the holder's next lifetime until its
/// evidence expires: a template change names the evidence and the expiry, no trader of that
/// holder proposes the family meanwhile, and a later lifetime lifts it once the evidence is
/// too old; the run replays exactly (learning is a derived decision like any other).
#[test]
fn a_family_that_lost_on_two_pairs_is_not_proposed_by_the_next_holder_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let (data, templates, config) = one_family_two_pairs(dir.path());
    let mut cmd = crypy(&data);
    cmd.args(["sim", "--from-log", "--quiet", "--config"]).arg(&config).arg("--templates").arg(&templates);
    run(&mut cmd, 0);

    let changes = json_lines(&run(crypy(&data).args(["log", "show", "--json", "--kind", "template_changed"]), 0));
    let learned: Vec<&serde_json::Value> = changes.iter().filter(|e| e["data"]["key"] == "avoid_until").collect();
    assert!(learned.len() >= 2, "learned, then expired: {learned:?}");
    let change = learned[0];
    assert_eq!(change["source"], "EUR");
    assert_eq!(change["data"]["scope"]["holder"], "EUR");
    let until = change["data"]["new"].as_str().unwrap();
    assert!(until.starts_with("[\"sma_cross until 2023-1"), "avoided until its evidence expires: {until}");
    let reason = change["data"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("sma_cross lost on 2 pairs") && reason.contains("XBT/EUR (-") && reason.contains("ETH/EUR (-"),
        "{reason}"
    );
    assert!(change["cause"].is_u64(), "a learned change names the event it learned from");

    let expiry = learned[1];
    assert_eq!((expiry["data"]["old"].as_str(), expiry["data"]["new"].as_str()), (Some(until), Some("[]")));
    assert!(expiry["data"]["reason"].as_str().unwrap().contains("sma_cross: its evidence expired"), "{expiry}");
    let expires = until.trim_start_matches("[\"sma_cross until ").trim_end_matches("\"]").replace(' ', "T");
    let expires_ms = chrono_free_ms(&expires);
    assert!(expiry["time"].as_i64().unwrap() >= expires_ms, "lifted only once the evidence is too old");

    let (learned_at, lifted_at) = (change["seq"].as_u64().unwrap(), expiry["seq"].as_u64().unwrap());
    let proposed = json_lines(&run(crypy(&data).args(["log", "show", "--json", "--kind", "strategy_proposed"]), 0));
    let seq = |e: &&serde_json::Value| e["seq"].as_u64().unwrap();
    let before = proposed.iter().filter(|e| seq(e) < learned_at).count();
    // The avoidance ends at its time; the holder's next lifetime then says so.
    let meanwhile: Vec<_> =
        proposed.iter().filter(|e| seq(e) > learned_at && e["time"].as_i64().unwrap() < expires_ms).collect();
    let later = proposed.iter().filter(|e| seq(e) > lifted_at).count();
    assert!(before > 0, "the family was proposed before it lost");
    assert!(meanwhile.is_empty(), "proposed while it was avoided: {meanwhile:?}");
    assert!(later > 0, "proposed again once the avoidance expired");

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

/// Milliseconds of `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
fn chrono_free_ms(text: &str) -> i64 {
    let (date, time) = text.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + format!("{ms:0<3}")[..3].parse::<i64>().unwrap()
}

/// A pair's own template file narrows what its traders propose: with `focus` on one variant
/// only that variant is proposed; a focus naming nothing of the grid (learned on another
/// grid) narrows nothing; `drop` keeps a variant out. The shared file stays as it is.
#[test]
fn a_pairs_own_template_focuses_and_drops() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = small_desk(dir.path(), 2000, "0.0");
    let shared = std::fs::read_to_string(templates.join("trader.toml")).unwrap();
    assert!(shared.contains("focus = []") && shared.contains("drop = []"));
    let proposed = |name: &str, focus: &str, drop: &str| -> Vec<String> {
        std::fs::write(
            templates.join("trader.XBT-EUR.toml"),
            // Learning off, so that what is proposed is the file's doing alone.
            shared
                .replace("focus = []", &format!("focus = {focus}"))
                .replace("drop = []", &format!("drop = {drop}"))
                .replace("min_positions = 3", "min_positions = 0"),
        )
        .unwrap();
        let data = dir.path().join(name);
        let mut cmd = crypy(&data);
        cmd.args(["sim", "--quiet", "--templates"]).arg(&templates).arg("--market").arg(&market);
        run(&mut cmd, 0);
        let shown = run(crypy(&data).args(["log", "show", "--json", "--kind", "strategy_proposed"]), 0);
        json_lines(&shown).iter().map(|e| e["data"]["strategy"].as_str().unwrap().to_string()).collect()
    };
    let open = proposed("open", "[]", "[]");
    assert!(open.iter().any(|s| s != "sma_cross:5:30"), "{open:?}");
    let focused = proposed("focused", "[\"sma_cross:5:30\"]", "[]");
    assert!(!focused.is_empty() && focused.iter().all(|s| s == "sma_cross:5:30"), "{focused:?}");
    let stale = proposed("stale", "[\"sma_cross:999:1000\"]", "[]");
    assert_eq!(stale.len(), open.len(), "a focus on nothing of the grid narrows nothing");
    let dropped = proposed("dropped", "[]", "[\"sma_cross:5:30\"]");
    assert!(!dropped.is_empty() && dropped.iter().all(|s| s != "sma_cross:5:30"), "{dropped:?}");
}
