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

pub fn import_kraken_quarter(dir: &Path) {
    run(
        crypy(dir).args([
            "log",
            "import-candles",
            "--pair",
            "XBT/EUR",
            "--interval",
            "15m",
            "replays/kraken_XBTEUR_15m_2023Q4.csv",
        ]),
        0,
    );
}
