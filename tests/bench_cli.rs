use crate::util::*;

#[test]
fn bench_log_reports_appends_and_scans_of_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        crypy(dir.path())
            .args(["bench", "log", "--events", "5000", "--batch", "1000", "--json", "--dir"])
            .arg(dir.path()),
        0,
    );
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["events"], 5000);
    assert_eq!(r["durability"], "every_batch");
    assert!(r["appends_per_s"].as_f64().unwrap() > 0.0 && r["scan_per_s"].as_f64().unwrap() > 0.0, "{r}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(leftovers.is_empty(), "the scratch log is removed: {leftovers:?}");
}

#[test]
fn bench_eval_scores_the_whole_grid_on_the_bundled_quarter() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        crypy(dir.path()).args([
            "bench",
            "eval",
            "--repeat",
            "2",
            "--json",
            "--strategy",
            "sma_cross fast=5..50/5 slow=20..200/20",
            "--strategy",
            "ema_cross fast=5..10/5 slow=20..40/20",
        ]),
        0,
    );
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["variants"], 90 + 4);
    assert_eq!(r["bars"], 8832);
    assert!(r["bar_steps_per_s"].as_f64().unwrap() > 0.0);
    let best = r["best"]["variant"].as_str().unwrap();
    assert!(best.starts_with("sma_cross:") || best.starts_with("ema_cross:"), "{best}");
    let err = run(crypy(dir.path()).args(["bench", "eval", "--strategy", "macd fast=1 slow=2"]), 2);
    assert!(err.contains("unknown strategy family \"macd\""), "{err}");
}
