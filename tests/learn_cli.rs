use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::util::*;

const QUARTER: &str = "replays/kraken_XBTEUR_15m_2023Q4.csv";

/// Small templates whose learning is easy to read: one 4×3 grid, focus exactly on what made
/// money (no neighbours, no exploration), evidence from two positions on.
fn templates(dir: &Path) -> PathBuf {
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let edits = [
        ("look_back_bars = 2000", "look_back_bars = 300"),
        ("\"sma_cross fast=5..50/5 slow=20..200/20\",", "\"sma_cross fast=5..20/5 slow=30..90/30\","),
        ("    \"ema_cross fast=5..50/5 slow=20..200/20\",\n", ""),
        ("neighbourhood = 1", "neighbourhood = 0"),
        ("explore = 0.1", "explore = 0.0"),
        ("min_positions = 3", "min_positions = 2"),
        ("evidence_days = 30", "evidence_days = 90"),
    ];
    let mut trader = std::fs::read_to_string(root().join("templates/trader.toml")).unwrap();
    for (from, to) in edits {
        assert!(trader.contains(from), "{from}");
        trader = trader.replace(from, to);
    }
    std::fs::write(templates.join("trader.toml"), trader).unwrap();
    let holder = std::fs::read_to_string(root().join("templates/holder.toml")).unwrap();
    std::fs::write(templates.join("holder.toml"), holder.replace("min_sharpe = 0.5", "min_sharpe = 0.0")).unwrap();
    templates
}

/// The bundled quarter with its last third replaced by another future: the same bars
/// mirrored in time (same timestamps, the prices run backwards).
fn other_future(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join(QUARTER)).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let bars: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let cut = bars.len() * 2 / 3;
    let mut out = vec![header.to_string()];
    out.extend(bars[..cut].iter().map(|b| b.join(",")));
    let tail = &bars[cut..];
    for (i, b) in tail.iter().enumerate() {
        let m = &tail[tail.len() - 1 - i];
        out.push([b[0], m[4], m[2], m[3], m[1], m[5], m[6]].join(","));
    }
    let file = dir.join("future.csv");
    std::fs::write(&file, out.join("\n") + "\n").unwrap();
    file
}

fn learn(dir: &Path, templates: &Path, market: &Path, out: &str, workers: &str) -> (PathBuf, serde_json::Value) {
    let out = dir.join(out);
    let mut cmd = crypy(dir);
    cmd.args(["learn", "--folds", "2", "--json", "--workers", workers, "--templates"]).arg(templates);
    cmd.arg("--out").arg(&out).arg("--market").arg(market);
    let printed = run(&mut cmd, 0);
    (out, serde_json::from_str(printed.trim()).unwrap())
}

/// Every file of a directory tree (relative path → bytes), skipping the runs' logs.
fn files(dir: &Path, skip: &dyn Fn(&Path) -> bool) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut all = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if skip(&path) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                all.insert(path.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&path).unwrap());
            }
        }
    }
    all
}

fn focus(templates: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(templates.join("trader.XBT-EUR.toml")).unwrap_or_default();
    let value: toml::Table = toml::from_str(&text).unwrap();
    value.get("focus").and_then(|f| f.as_array()).into_iter().flatten().map(|v| v.as_str().unwrap().into()).collect()
}

/// Walk-forward learning never looks ahead. The templates the last fold tests were learned
/// from the windows before it only: replacing the last window by another future does not
/// change them by a byte. What made money only in that last window — what a learner that
/// peeked would pick for it — is not selected for it, and is selected by the templates
/// learned once that window is the past.
#[test]
fn walk_forward_learning_never_looks_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let templates = templates(dir.path());
    let (real, report) = learn(dir.path(), &templates, &root().join(QUARTER), "real", "2");
    let (other, _) = learn(dir.path(), &templates, &other_future(dir.path()), "other", "2");
    assert_eq!(report["folds"].as_array().unwrap().len(), 2, "{report}");

    let last_fold = |out: &Path| files(&out.join("learning/fold-2/templates"), &|_| false);
    assert!(!last_fold(&real).is_empty());
    assert_eq!(last_fold(&real), last_fold(&other), "the last fold's templates depend on the past only");
    assert_ne!(focus(&real), focus(&other), "the learned templates do see the last window once it is past");

    let final_focus = focus(&real);
    assert!(!final_focus.is_empty(), "something made money in the last window");
    let tested = focus(&real.join("learning/fold-2/templates"));
    let lessons = std::fs::read_to_string(real.join("learning/changes.jsonl")).unwrap();
    let last_lessons: Vec<serde_json::Value> =
        json_lines(&lessons).into_iter().filter(|l| l["learned_from_window"] == 2).collect();
    for variant in &final_focus {
        assert!(!tested.contains(variant), "{variant} made money only later, yet fold 2 selected it: {tested:?}");
        assert!(
            last_lessons.iter().any(|l| l["data"]["reason"].as_str().unwrap().contains(&format!("{variant} (+"))),
            "{variant}: the lesson names it as having made money in window 2: {last_lessons:?}"
        );
    }
}

/// `crypy learn` twice on the same inputs — on one thread, then on two — writes the same
/// templates, the same lessons, the same report, and its runs record the same template
/// changes (only the wall clock differs).
#[test]
fn learning_twice_gives_identical_templates_and_lessons() {
    let dir = tempfile::tempdir().unwrap();
    let templates = templates(dir.path());
    let market = root().join(QUARTER);
    let (one, first) = learn(dir.path(), &templates, &market, "one", "1");
    let (two, second) = learn(dir.path(), &templates, &market, "two", "2");
    assert_eq!(first["folds"], second["folds"]);
    assert!(first["changes"].as_u64().unwrap() > 0, "something was learned: {first}");
    // Each run's log holds its own random secret and the wall clock; everything else is compared.
    let not_logs = |p: &Path| p.join("log").is_dir() || p.join("secret").is_file();
    assert_eq!(files(&one, &not_logs), files(&two, &not_logs));
    for name in ["window-0", "fold-1-out-of-sample", "fold-2-out-of-sample", "fold-2-in-sample", "fold-2-baseline"] {
        let changes = |out: &Path| {
            let shown = run(
                crypy(&out.join("learning").join(name)).args(["log", "show", "--json", "--kind", "template_changed"]),
                0,
            );
            json_lines(&shown)
                .into_iter()
                .map(|mut e| {
                    e.as_object_mut().unwrap().remove("wall");
                    e
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(changes(&one), changes(&two), "{name}");
    }
    let html = std::fs::read_to_string(one.join("learning/report.html")).unwrap();
    assert_eq!(html.matches(r#"<tr class="fold">"#).count(), 2);
    assert_eq!(html.matches(r#"<svg class="chart""#).count(), 3, "fold returns and two equity curves");
    assert_eq!(html.matches(r#"<tr class="lesson">"#).count() as u64, first["changes"].as_u64().unwrap());
    for needle in ["<script", "<link", "http:", "https:", "src="] {
        assert!(!html.contains(needle), "{needle} in the report");
    }
    // The learned templates are templates: a desk runs on them.
    let data = dir.path().join("data");
    run(crypy(&data).args(["sim", "--quiet", "--templates"]).arg(&one).arg("--market").arg(&market), 0);
    let history = run(crypy(&data).args(["templates", "history"]), 0);
    assert!(history.contains("trader.XBT-EUR.toml: first recorded"), "{history}");
}

/// Mistakes get clear messages and write nothing.
#[test]
fn learning_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("desk.toml"), "").unwrap();
    let err = run(crypy(dir.path()).args(["learn", "--market", QUARTER, "--out"]).arg(&full), 2);
    assert!(err.contains("is not empty"), "{err}");
    let err = run(crypy(dir.path()).args(["learn", "--out", "x"]), 2);
    assert!(err.contains("--data-dir") || err.contains("--market"), "{err}");
    let empty = dir.path().join("empty-data");
    let out = dir.path().join("out");
    let err = run(crypy(dir.path()).args(["learn", "--data-dir"]).arg(&empty).arg("--out").arg(&out), 2);
    assert!(err.contains("neither imported candles nor a run"), "{err}");
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("trader.XBT.toml"), "").unwrap();
    let err =
        run(crypy(dir.path()).args(["learn", "--market", QUARTER, "--templates"]).arg(&bad).arg("--out").arg(&out), 2);
    assert!(err.contains("not a template file name"), "{err}");
}
