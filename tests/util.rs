use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn crypy(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crypy"));
    cmd.env("CRYPY_DATA_DIR", data_dir).env_remove("RUST_LOG").current_dir(root());
    cmd
}

/// Runs and returns stdout, failing the test with stderr when the exit code is not `code`.
pub fn run(cmd: &mut Command, code: i32) -> String {
    let Output { status, stdout, stderr } = cmd.output().expect("crypy runs");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned());
    assert_eq!(status.code(), Some(code), "{cmd:?} ended with {status}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    if code == 0 {
        stdout
    } else {
        format!("{stdout}{stderr}")
    }
}

pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Imports candle files into `dir`'s log, expecting success.
pub fn import(dir: &Path, pair: &str, interval: &str, file: &str) {
    run(crypy(dir).args(["log", "import-candles", "--pair", pair, "--interval", interval, file]), 0);
}

pub fn import_kraken_quarter(dir: &Path) {
    import(dir, "XBT/EUR", "15m", "replays/kraken_XBTEUR_15m_2023Q4.csv");
}

/// The bundled day of Kraken XBT/EUR 15-minute candles, 96 rows.
pub const ONE_DAY: &str = "tests/fixtures/csv_ms_XBTEUR_15m_2023-10-01.csv";

/// Small templates (holder `min_sharpe` as given) and the first `bars` candles of the bundled
/// quarter, so that a debug build runs a whole desk lifetime in a second or two. Returns the
/// templates dir and the market file.
pub fn small_desk(dir: &Path, bars: usize, min_sharpe: &str) -> (PathBuf, PathBuf) {
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let trader = std::fs::read_to_string(root().join("templates/trader.toml"))
        .unwrap()
        .replace("look_back_bars = 2000", "look_back_bars = 300")
        .replace("evaluate_every_minutes = 60", "evaluate_every_minutes = 120")
        .replace("\"sma_cross fast=5..50/5 slow=20..200/20\",", "\"sma_cross fast=5..20/5 slow=30..90/30\",")
        .replace("\"ema_cross fast=5..50/5 slow=20..200/20\",", "\"ema_cross fast=10 slow=40\",");
    std::fs::write(templates.join("trader.toml"), trader).unwrap();
    let holder = std::fs::read_to_string(root().join("templates/holder.toml"))
        .unwrap()
        .replace("min_sharpe = 0.5", &format!("min_sharpe = {min_sharpe}"));
    std::fs::write(templates.join("holder.toml"), holder).unwrap();
    let text = std::fs::read_to_string(root().join("replays/kraken_XBTEUR_15m_2023Q4.csv")).unwrap();
    let market = dir.join("market.csv");
    std::fs::write(&market, text.lines().take(bars + 1).collect::<Vec<_>>().join("\n")).unwrap();
    (templates, market)
}

/// [`run`], but the process is killed (and the test fails with what it printed) when it has
/// not ended within `limit`: a desk on a live venue runs until told to stop.
pub fn run_within(cmd: &mut Command, code: i32, limit: std::time::Duration) -> String {
    use std::io::Read;
    let mut child =
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("crypy runs");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    match status {
        None => panic!("{cmd:?} did not end within {limit:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"),
        Some(status) => {
            assert_eq!(status.code(), Some(code), "{cmd:?} ended with {status}\nstdout:\n{stdout}\nstderr:\n{stderr}");
            if code == 0 {
                stdout
            } else {
                format!("{stdout}{stderr}")
            }
        }
    }
}
