use crate::util::*;

/// `crypy report` writes one self-contained HTML file: every chart inline SVG, nothing to
/// fetch, one entry or exit mark per fill, one row per strategy, every template change.
#[test]
fn a_report_is_one_self_contained_file_with_the_runs_charts() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = small_desk(dir.path(), 900, "0.0");
    let data = dir.path().join("data");
    let mut cmd = crypy(&data);
    cmd.args(["sim", "--json", "--templates"]).arg(&templates).arg("--market").arg(&market);
    let out = run(&mut cmd, 0);
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let file = dir.path().join("report.html");
    let printed = run(crypy(&data).args(["report", "--out"]).arg(&file), 0);
    assert!(printed.contains("wrote the report of run 1"), "{printed}");
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    // Nothing fetched: no script, no link, no URL at all.
    for needle in ["<script", "<link", "http:", "https:", "src="] {
        assert!(!html.contains(needle), "{needle} in the report");
    }
    // Price, equity and drawdown charts.
    assert_eq!(html.matches("<polyline").count(), 3);
    let fills = summary["fills"].as_u64().unwrap() as usize;
    let marks = html.matches(r#"class="entry""#).count() + html.matches(r#"class="exit""#).count();
    assert_eq!(marks, fills, "one mark per fill");
    let strategies = summary["per_strategy"].as_object().unwrap().len();
    assert_eq!(html.matches(r#"<tr class="strategy">"#).count(), strategies);
    // The traders' scoreboard: a row per variant a pair proposed.
    let proposed = json_lines(&run(crypy(&data).args(["log", "show", "--json", "--kind", "strategy_proposed"]), 0));
    let variants: std::collections::BTreeSet<(String, String)> = proposed
        .iter()
        .map(|p| (p["data"]["pair"].as_str().unwrap().to_string(), p["data"]["strategy"].as_str().unwrap().to_string()))
        .collect();
    assert!(!variants.is_empty());
    assert_eq!(html.matches(r#"<tr class="score">"#).count(), variants.len());
    let changes = json_lines(&run(crypy(&data).args(["log", "show", "--json", "--kind", "template_changed"]), 0));
    assert!(changes.len() > 3, "the run's three templates and what its traders learned: {changes:?}");
    assert_eq!(html.matches(r#"class="change""#).count(), changes.len(), "every template change");
    assert!(html.contains(&format!("{:+.2}%", summary["return"].as_f64().unwrap() * 100.0)), "the run's return");
    // A run that is not there is an error, and nothing is written.
    let missing = dir.path().join("missing.html");
    let err = run(crypy(&data).args(["report", "--run", "9", "--out"]).arg(&missing), 2);
    assert!(err.contains("has no run 9"), "{err}");
    assert!(!missing.exists());
}
