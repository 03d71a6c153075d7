use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use crate::util::*;

/// A data dir holding two real pairs (the bundled Kraken XBT/EUR quarter and BitMEX XBT/USD
/// days) and a simulator configuration that trades both.
fn two_pairs(dir: &Path) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    let kraken = root().join("replays/kraken_XBTEUR_15m_2023Q4.csv");
    import(&data, "XBT/EUR", "15m", kraken.to_str().unwrap());
    let bitmex: Vec<PathBuf> =
        (18..=20).map(|d| root().join(format!("replays/bitmex_XBTUSD_1m_2021-05-18_20/2021-5-{d}.json"))).collect();
    run(crypy(&data).args(["log", "import-candles", "--pair", "XBT/USD", "--interval", "1m"]).args(&bitmex), 0);
    let default = std::fs::read_to_string(root().join("crates/exchange/src/sim/default.toml")).unwrap();
    let config = default.replace("[balances]\nEUR = \"10000\"", "[balances]\nEUR = \"10000\"\nUSD = \"10000\"")
        + "\n[[markets]]\npair = \"XBT/USD\"\nprice_precision = 1\nqty_precision = 8\nmin_qty = \"0.0001\"\n";
    let path = dir.join("two.toml");
    std::fs::write(&path, config).unwrap();
    (data, path)
}

/// `n` loopback addresses free a moment ago, as a hosts file.
fn hosts_file(dir: &Path, n: usize) -> PathBuf {
    let listeners: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let text: String = listeners.iter().map(|l| format!("{}\n", l.local_addr().unwrap())).collect();
    let path = dir.join("hosts");
    std::fs::write(&path, format!("# one host:port a line, process 0 first\n{text}")).unwrap();
    path
}

/// Starts process `i` of a cluster (not 0), which needs no data dir.
fn helper(args: &[&str], hosts: &Path, i: usize) -> Child {
    let mut cmd = crypy(Path::new("/nonexistent-crypy-data"));
    cmd.args(args).args(["--processes", "2", "--process", &i.to_string(), "--hosts"]).arg(hosts);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

fn summary(out: &str) -> serde_json::Value {
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// The same run and the same replay on 1 worker, 2 workers, and 2 processes of 2 workers on
/// localhost: the same decisions, event for event.
#[test]
fn the_answer_is_the_same_on_one_worker_two_workers_and_two_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = two_pairs(dir.path());
    // The same imported data, for the run on two processes.
    let copy = dir.path().join("on-two-processes");
    copy_dir(&data, &copy);
    let sim = |data: &Path, extra: &[&str]| {
        let mut cmd = crypy(data);
        cmd.args(["sim", "--from-log", "--json", "--config"]).arg(&config).args(extra);
        summary(&run(&mut cmd, 0))
    };
    let one = sim(&data, &[]);
    // Both pairs traded, on real data.
    let orders = json_lines(&run(crypy(&data).args(["log", "show", "--json", "--kind", "order_requested"]), 0));
    let pairs: std::collections::BTreeSet<&str> = orders.iter().map(|o| o["data"]["pair"].as_str().unwrap()).collect();
    assert_eq!(pairs.into_iter().collect::<Vec<_>>(), ["XBT/EUR", "XBT/USD"], "{one}");

    // The replay of that run agrees with it at every scale.
    let replay = |extra: &[&str]| {
        let mut cmd = crypy(&data);
        cmd.args(["replay", "--verify", "--json"]).args(extra);
        summary(&run(&mut cmd, 0))
    };
    for workers in ["1", "2", "3"] {
        let r = replay(&["--workers", workers]);
        assert_eq!((r["ok"].clone(), r["workers"].to_string()), (true.into(), workers.to_string()), "{r}");
    }
    let hosts = hosts_file(dir.path(), 2);
    let mut other = helper(&["replay", "--verify", "--workers", "2"], &hosts, 1);
    let r = replay(&["--workers", "2", "--processes", "2", "--process", "0", "--hosts", hosts.to_str().unwrap()]);
    assert_eq!((r["ok"].clone(), r["workers"].clone(), r["processes"].clone()), (true.into(), 4.into(), 2.into()));
    assert!(other.wait().unwrap().success());

    // A run made on two processes is the run made on one: the same decisions, the same books.
    // Holders sign with keys derived from the data dir's secret: the same secret, the same
    // signatures.
    std::fs::copy(data.join("secret"), copy.join("secret")).unwrap();
    let hosts = hosts_file(dir.path(), 2);
    let mut other = helper(&["sim", "--workers", "2"], &hosts, 1);
    let two = sim(&copy, &["--workers", "2", "--processes", "2", "--process", "0", "--hosts", hosts.to_str().unwrap()]);
    assert!(other.wait().unwrap().success());
    for field in ["events", "orders", "fills", "end_equity", "fees", "per_strategy", "accounting_ok"] {
        assert_eq!(two[field], one[field], "{field}");
    }
    let decisions = |d: &Path| {
        let all = json_lines(&run(crypy(d).args(["log", "show", "--json", "--from", "13153"]), 0));
        all.into_iter()
            .map(|mut e| {
                e.as_object_mut().unwrap().remove("wall");
                e.as_object_mut().unwrap().remove("run");
                e
            })
            .collect::<Vec<_>>()
    };
    let (on_two, on_one) = (decisions(&copy), decisions(&data));
    assert_eq!(on_two.len(), on_one.len());
    if let Some(i) = (0..on_one.len()).find(|&i| on_two[i] != on_one[i]) {
        panic!("the run on two processes differs at\n{}\nfrom\n{}", on_two[i], on_one[i]);
    }
}

#[test]
fn a_bad_cluster_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let err = run(crypy(&data).args(["replay", "--verify", "--processes", "2"]), 2);
    assert!(err.contains("--hosts"), "{err}");
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1:4000\nnot-an-address\n").unwrap();
    let err = run(crypy(&data).args(["replay", "--verify", "--processes", "2", "--hosts"]).arg(&hosts), 2);
    assert!(err.contains(":2:") && err.contains("not host:port"), "{err}");
    std::fs::write(&hosts, "127.0.0.1:4000\n").unwrap();
    let err = run(crypy(&data).args(["replay", "--verify", "--processes", "2", "--hosts"]).arg(&hosts), 2);
    assert!(err.contains("names 1 processes, --processes says 2"), "{err}");
    std::fs::write(&hosts, "127.0.0.1:4000\n127.0.0.1:4001\n").unwrap();
    let args = ["replay", "--verify", "--processes", "2", "--process", "2", "--hosts"];
    let err = run(crypy(&data).args(args).arg(&hosts), 2);
    assert!(err.contains("--process 2 is not below --processes 2"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `crypy learn` on two processes of a cluster (each run's agents spread over both, the runs
/// one after another) learns what it learns on one: the same templates and the same lessons.
#[test]
fn learning_on_two_processes_learns_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = small_desk(dir.path(), 3000, "0.0");
    let learn = |out: &str, cluster: &[&str]| {
        let out = dir.path().join(out);
        let mut cmd = crypy(dir.path());
        cmd.args(["learn", "--folds", "1", "--json", "--templates"]).arg(&templates).arg("--market").arg(&market);
        cmd.arg("--out").arg(&out).args(cluster);
        let printed = run(&mut cmd, 0);
        (out, summary(&printed))
    };
    let (alone, one) = learn("alone", &[]);
    let hosts = hosts_file(dir.path(), 2);
    let other = helper(&["learn", "--folds", "1"], &hosts, 1);
    let (clustered, two) =
        learn("cluster", &["--processes", "2", "--process", "0", "--hosts", hosts.to_str().unwrap()]);
    let served = other.wait_with_output().unwrap();
    assert!(served.status.success(), "{}", String::from_utf8_lossy(&served.stderr));
    assert!(String::from_utf8_lossy(&served.stderr).contains("served 4 learning runs"));
    assert_eq!(one["folds"], two["folds"]);
    for file in ["desk.toml", "holder.toml", "trader.toml", "learning/changes.jsonl", "learning/report.html"] {
        let read = |d: &Path| std::fs::read_to_string(d.join(file)).unwrap();
        assert_eq!(read(&alone), read(&clustered), "{file}");
    }
}
