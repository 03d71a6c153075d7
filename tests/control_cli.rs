use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

fn setup(dir: &Path, bars: usize, min_sharpe: &str) -> (PathBuf, PathBuf) {
    small_desk(dir, bars, min_sharpe)
}

fn exec(data: &Path, templates: &Path, market: &Path, after: u64, commands: &[&str]) -> String {
    let mut cmd = crypy(data);
    cmd.args(["sim", "--templates"]).arg(templates).arg("--market").arg(market);
    cmd.args(["--after", &after.to_string()]);
    for c in commands {
        cmd.args(["--exec", c]);
    }
    run(&mut cmd, 0)
}

fn commands_in_log(data: &Path) -> Vec<serde_json::Value> {
    json_lines(&run(crypy(data).args(["log", "show", "--kind", "command_issued", "--json"]), 0))
        .into_iter()
        .map(|l| l["data"].clone())
        .collect()
}

/// The text of every command the log recorded, in order.
fn logged_commands(data: &Path) -> Vec<String> {
    commands_in_log(data).iter().map(|c| c["command"].as_str().unwrap().to_string()).collect()
}

fn replay_ok(data: &Path) {
    let out = run(crypy(data).args(["replay", "--verify", "--json"]), 0);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["ok"], true, "{report}");
}

#[test]
fn exec_prints_each_levels_answers_and_logs_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = setup(dir.path(), 900, "0.0");
    let data = dir.path().join("data");
    let out = exec(
        &data,
        &templates,
        &market,
        800,
        &["status", "invest EUR", "status", "trade XBT/EUR", "strategies", "stauts", "back", "back", "holders"],
    );
    let sections: Vec<&str> = out.split('\n').collect();
    let at = |needle: &str| {
        sections.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} in\n{out}"))
    };
    // Each echo comes before its answer, and the prompt follows the level.
    assert!(at("sim:main> status") < at("800 of 900 candles"), "{out}");
    assert!(at("sim:main> invest EUR") < at("EUR> status"), "{out}");
    assert!(out.contains("EUR> status\nholder     holder EUR, generation"), "{out}");
    assert!(at("EUR> trade XBT/EUR") < at("XBT/EUR> strategies"), "{out}");
    assert!(at("XBT/EUR> strategies") < at("latest evaluation over 300 bars"), "{out}");
    assert!(at("RANK  STRATEGY") < at("XBT/EUR> stauts"), "{out}");
    assert!(out.contains("error: unknown command \"stauts\" (did you mean `status`?)"), "{out}");
    assert!(at("sim:main> holders") > at("EUR> back"), "{out}");
    // Every accepted command is in the log, in order, with its session; the typo is not.
    let logged = logged_commands(&data);
    assert_eq!(logged, ["status", "invest EUR", "status", "trade XBT/EUR", "strategies", "holders"]);
    assert!(commands_in_log(&data).iter().all(|c| c["session"] == "exec"));
    replay_ok(&data);
}

#[test]
fn a_human_accepts_a_refused_proposal_and_the_replay_steers_alike() {
    let dir = tempfile::tempdir().unwrap();
    // A holder whose criteria refuse everything: only a human can accept.
    let (templates, market) = setup(dir.path(), 900, "1000.0");
    let first = exec(&dir.path().join("a"), &templates, &market, 800, &["invest EUR", "proposals"]);
    let last_refused = first
        .lines()
        .rfind(|l| l.contains("refused: sharpe"))
        .unwrap_or_else(|| panic!("no refused proposal in\n{first}"));
    let id: u64 = last_refused.trim_start().trim_start_matches('#').split_whitespace().next().unwrap().parse().unwrap();

    let data = dir.path().join("b");
    let out = exec(
        &data,
        &templates,
        &market,
        800,
        &["invest EUR", &format!("accept {id}"), "accept 999999", "trade XBT/EUR", "exit", "enter", "status"],
    );
    assert!(out.contains(&format!("done: accept {id}")), "{out}");
    assert!(out.contains("allocates 10000 EUR") && out.contains("(signed)"), "{out}");
    assert!(out.contains("error: no proposal #999999"), "{out}");
    // The allocation came while its variant said long: the trader entered at once, and its
    // order is on its way until the next bar fills it.
    assert!(out.contains("enters: ") && out.contains("approves"), "{out}");
    assert!(out.contains("XBT/EUR> exit\nerror: an order is on its way"), "{out}");
    assert!(out.contains("phase       entering"), "{out}");
    let logged = logged_commands(&data);
    assert_eq!(logged, ["invest EUR", format!("accept {id}").as_str(), "trade XBT/EUR", "status"]);
    replay_ok(&data);
}

#[test]
fn template_settings_are_checked_logged_and_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = setup(dir.path(), 400, "0.0");
    let data = dir.path().join("data");
    let out = exec(
        &data,
        &templates,
        &market,
        10,
        &[
            "limits set max_open_orders 3",
            "limits",
            "limits set max_open_orders many",
            "template set trusted_asset USD",
            "invest EUR",
            "criteria set min_trades 7",
            "criteria",
            "trade XBT/EUR",
            "template set stop_loss 0.02",
            "template set look_back_bars 10",
        ],
    );
    assert!(out.contains("desk template limits.max_open_orders: 10 → 3"), "{out}");
    assert!(out.contains("max_open_orders     3"), "{out}");
    assert!(out.contains("error: limits.max_open_orders takes a integer"), "{out}");
    assert!(out.contains("error: trusted_asset takes effect at the next run"), "{out}");
    assert!(out.contains("holder EUR template criteria.min_trades: 3 → 7"), "{out}");
    assert!(out.contains("min_trades              7"), "{out}");
    assert!(out.contains("trader XBT/EUR template stop_loss: 0.05 → 0.02"), "{out}");
    assert!(out.contains("error: look_back_bars takes effect at the next run"), "{out}");
    let changes = json_lines(&run(crypy(&data).args(["log", "show", "--kind", "template_changed", "--json"]), 0));
    let keys: Vec<&str> = changes.iter().map(|c| c["data"]["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        ["desk.toml", "holder.toml", "trader.toml", "limits.max_open_orders", "criteria.min_trades", "stop_loss"]
    );
    replay_ok(&data);
}

// --- the telnet control port ------------------------------------------------------------

struct Desk {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Desk {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `crypy sim` with a control port on an ephemeral port and waits for its address.
fn start_desk(data: &Path, templates: &Path, market: &Path, extra: &[&str]) -> Desk {
    let mut cmd = crypy(data);
    cmd.args(["sim", "--quiet", "--stay", "--templates"]).arg(templates).arg("--market").arg(market);
    cmd.args(extra).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    // Dropping the desk kills and waits for the process, whatever happens below.
    let mut desk = Desk { child: cmd.spawn().unwrap(), addr: SocketAddr::from(([127, 0, 0, 1], 0)) };
    let mut stderr = BufReader::new(desk.child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("crypy sim ended without a control port");
        }
        if let Some(rest) = line.strip_prefix("control: telnet ") {
            let addr: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
            // Keep draining stderr so the desk never blocks on it.
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            desk.addr = SocketAddr::from(([127, 0, 0, 1], addr.port()));
            return desk;
        }
    }
}

struct Client {
    stream: TcpStream,
    seen: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Client { stream, seen: Vec::new() }
    }

    /// Reads until `needle` has arrived (after what earlier calls consumed); returns the text
    /// up to and including it.
    fn until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(i) = String::from_utf8_lossy(&self.seen).find(needle) {
                let text = String::from_utf8_lossy(&self.seen).into_owned();
                let end = i + needle.len();
                self.seen = text.as_bytes()[end..].to_vec();
                return text[..end].to_string();
            }
            assert!(Instant::now() < deadline, "no {needle:?}; got {:?}", String::from_utf8_lossy(&self.seen));
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("closed before {needle:?}; got {:?}", String::from_utf8_lossy(&self.seen)),
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends a command and returns its answer, up to the next prompt `prompt`.
    fn ask(&mut self, command: &str, prompt: &str) -> String {
        self.send(format!("{command}\r\n").as_bytes());
        self.until(prompt)
    }

    /// Reads to the end of the connection; true when the server closed it.
    fn closed(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 4096];
        loop {
            assert!(Instant::now() < deadline, "still open: {:?}", String::from_utf8_lossy(&self.seen));
            match self.stream.read(&mut buf) {
                Ok(0) => return String::from_utf8_lossy(&self.seen).into_owned(),
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return String::from_utf8_lossy(&self.seen).into_owned(),
            }
        }
    }
}

#[test]
fn a_telnet_client_walks_the_levels_kills_and_the_commands_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = setup(dir.path(), 900, "0.0");
    let data = dir.path().join("data");
    let desk = start_desk(&data, &templates, &market, &["--control", "127.0.0.1:0"]);
    let mut c = Client::connect(desk.addr);
    c.until("sim:main> ");
    // A real telnet client negotiates first: IAC DO ECHO, IAC WILL SUPPRESS-GO-AHEAD.
    c.send(&[255, 253, 1, 255, 251, 3]);
    let status = c.ask("status", "sim:main> ");
    assert!(status.contains("sim:main (run 1)") && status.contains("kill switch"), "{status}");
    let holder = c.ask("invest EUR", "EUR> ");
    assert!(holder.contains("capital"), "{holder}");
    let trader = c.ask("trade XBT/EUR", "XBT/EUR> ");
    assert!(trader.contains("phase"), "{trader}");
    // Wait for the data to end so that the evaluation is there.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let back = c.ask("back", "EUR> ");
        assert!(!back.contains("error"), "{back}");
        let desk_status = c.ask("back", "sim:main> ");
        assert!(!desk_status.contains("error"), "{desk_status}");
        if c.ask("status", "sim:main> ").contains("(ended") {
            break;
        }
        assert!(Instant::now() < deadline, "the data never ended");
        std::thread::sleep(Duration::from_millis(200));
        c.ask("invest EUR", "EUR> ");
        c.ask("trade XBT/EUR", "XBT/EUR> ");
    }
    c.ask("invest EUR", "EUR> ");
    c.ask("trade XBT/EUR", "XBT/EUR> ");
    let strategies = c.ask("strategies", "XBT/EUR> ");
    assert!(strategies.contains("latest evaluation over 300 bars") && strategies.contains("sma_cross"), "{strategies}");
    assert!(c.ask("kill", "XBT/EUR> ").contains("unknown command \"kill\""));
    c.ask("back", "EUR> ");
    c.ask("back", "sim:main> ");
    let killed = c.ask("kill", "sim:main> ");
    assert!(killed.contains("kill switch engaged: ") && killed.contains("canceled"), "{killed}");
    assert!(c.ask("kill", "sim:main> ").contains("already engaged"));
    assert!(c.ask("status", "sim:main> ").contains("ENGAGED"));
    c.ask("quit", "bye");
    drop(c);
    drop(desk);

    let logged = commands_in_log(&data);
    let texts: Vec<&str> = logged.iter().map(|c| c["command"].as_str().unwrap()).collect();
    for needed in ["status", "invest EUR", "trade XBT/EUR", "strategies", "kill"] {
        assert!(texts.contains(&needed), "{needed} not logged: {texts:?}");
    }
    assert!(logged.iter().all(|c| c["session"].as_str().unwrap().starts_with("telnet 127.0.0.1:")), "{logged:?}");
    assert!(!texts.iter().any(|t| t.starts_with("back") || t.starts_with("quit")));
    let kills = run(crypy(&data).args(["log", "show", "--kind", "kill_switch_engaged", "--json"]), 0);
    assert_eq!(json_lines(&kills).len(), 1, "{kills}");
    replay_ok(&data);
}

#[test]
fn the_control_port_refuses_strangers_and_survives_a_flood() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = setup(dir.path(), 200, "0.0");
    // Off loopback without a token: refused before anything runs.
    let out = run(
        crypy(&dir.path().join("x"))
            .args(["sim", "--quiet", "--control", "0.0.0.0:0", "--templates"])
            .arg(&templates)
            .arg("--market")
            .arg(&market)
            .env_remove("CRYPY_CONTROL_TOKEN"),
        2,
    );
    assert!(out.contains("--control-token"), "{out}");

    let token = "correct horse battery staple";
    let data = dir.path().join("data");
    let desk = start_desk(&data, &templates, &market, &["--control", "0.0.0.0:0", "--control-token", token]);
    let mut wrong = Client::connect(desk.addr);
    wrong.until("token: ");
    wrong.send(b"status\r\n");
    let said = wrong.closed();
    assert!(said.contains("wrong token") && !said.contains("sim:main>"), "{said}");

    // A megabyte without a newline is cut off; the desk keeps serving.
    let mut flood = Client::connect(desk.addr);
    flood.until("token: ");
    flood.send(format!("{token}\r\n").as_bytes());
    flood.until("sim:main> ");
    let megabyte = vec![b'a'; 1 << 20];
    let _ = flood.stream.write_all(&megabyte);
    assert!(flood.closed().contains("line too long"));

    let mut ok = Client::connect(desk.addr);
    ok.until("token: ");
    ok.send(format!("{token}\r\n").as_bytes());
    ok.until("sim:main> ");
    assert!(ok.ask("status", "sim:main> ").contains("sim:main (run 1)"));
    drop(ok);
    drop(desk);
    let log = run(crypy(&data).args(["log", "show", "--json"]), 0);
    assert!(!log.contains(token), "the token reached the log");
}

/// `chart` at a trader draws the pair's closes and the desk's equity from what the terminal
/// saw, and is recorded like every query.
#[test]
fn chart_draws_the_pairs_price_and_the_desks_equity() {
    let dir = tempfile::tempdir().unwrap();
    let (templates, market) = setup(dir.path(), 900, "0.0");
    let data = dir.path().join("data");
    let out = exec(&data, &templates, &market, 600, &["invest EUR", "trade XBT/EUR", "chart", "scoreboard"]);
    let chart = &out[out.find("XBT/EUR> chart").expect("the chart command ran")..];
    let board = &out[out.find("XBT/EUR> scoreboard").expect("the scoreboard command ran")..];
    assert!(board.contains("variant") && board.contains("proposed") && board.contains("P&L EUR"), "{board}");
    assert!(board.contains("sma_cross:") && board.contains("focus: "), "{board}");
    assert!(chart.contains("XBT/EUR close, last 600 candles"), "{chart}");
    assert!(chart.contains("equity in EUR"), "{chart}");
    assert!(chart.matches('•').count() >= 2 * 64, "two plots of 64 columns: {chart}");
    assert_eq!(logged_commands(&data), ["invest EUR", "trade XBT/EUR", "chart", "scoreboard"]);
}
