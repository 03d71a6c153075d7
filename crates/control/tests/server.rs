//! The telnet control server and the REPL entry points against a fake desk, over loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crypy_control::lang::{Command, Level, Watch};
use crypy_control::link::{self, DeskLink, Outbox, Reply};
use crypy_control::repl::{self, ReplError};
use crypy_control::server::{Server, ServerError, ServerOptions};

const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const NOP: u8 = 241;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A desk that answers from its own thread, as the real one does between inputs.
struct FakeDesk {
    link: DeskLink,
    /// Every line the desk was asked, with the session that asked.
    asked: Arc<Mutex<Vec<(String, String)>>>,
    thread: JoinHandle<()>,
}

fn fake_desk() -> FakeDesk {
    let (link, inbox) = link::link();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let thread = std::thread::spawn(move || {
        let mut watchers: Vec<Outbox> = Vec::new();
        while let Ok(request) = inbox.recv() {
            log.lock().unwrap().push((request.session.clone(), request.command.to_string()));
            let level = request.level;
            let (text, level) = match request.command {
                Command::Status => (format!("status of {level}"), level),
                Command::Invest(asset) => (format!("investing in {asset}"), Level::Invest(asset)),
                Command::Trade(pair) => (format!("trading {pair}"), Level::Trade(pair)),
                Command::Watch(Watch::On { .. }) => {
                    for i in 0..3 {
                        request.outbox.send(format!("tick {i}"));
                    }
                    watchers.push(request.outbox);
                    ("watching".into(), level)
                }
                Command::Orders => {
                    watchers.retain(|w| w.send("order news".into()));
                    (format!("told {} watchers", watchers.len()), level)
                }
                Command::Kill => {
                    // Floods the watchers until they are gone, timing every send: a send that
                    // waited for a client would show here.
                    let line = "x".repeat(64 * 1024);
                    let started = Instant::now();
                    let mut slowest = Duration::ZERO;
                    let mut gone = false;
                    while !gone && started.elapsed() < Duration::from_secs(4) {
                        let copies: Vec<String> = watchers.iter().map(|_| line.clone()).collect();
                        let before = Instant::now();
                        gone = watchers.iter().zip(copies).any(|(w, l)| !w.send(l));
                        slowest = slowest.max(before.elapsed());
                    }
                    (format!("flooded; gone {gone}; slowest send {} ms", slowest.as_millis()), level)
                }
                // A desk that lost the request: the session must not hang.
                Command::Balances => continue,
                other => (format!("ok {other:?}"), level),
            };
            let _ = request.reply.send(Reply { text, level });
        }
    });
    FakeDesk { link, asked, thread }
}

fn options() -> ServerOptions {
    let mut opts = ServerOptions::new("127.0.0.1:0".parse().unwrap(), "sim:main");
    opts.idle_timeout = Duration::from_secs(10);
    opts.write_timeout = Duration::from_secs(2);
    opts
}

fn start(opts: ServerOptions) -> (Server, FakeDesk) {
    let desk = fake_desk();
    let server = Server::start(opts, desk.link.clone()).unwrap();
    (server, desk)
}

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        Client { stream, buf: Vec::new() }
    }

    /// Connects and reads the greeting and the desk prompt.
    fn at_desk(addr: SocketAddr) -> Client {
        let mut client = Client::connect(addr);
        assert_eq!(client.until("sim:main> "), "crypy control: sim:main; type help\r\nsim:main> ");
        client
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn line(&mut self, line: &str) {
        self.send(format!("{line}\r\n").as_bytes());
    }

    /// Everything up to and including `needle`, as bytes.
    fn until_bytes(&mut self, needle: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(needle.len()).position(|w| w == needle) {
                return self.buf.drain(..at + needle.len()).collect();
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("closed before {:?}; got {}", String::from_utf8_lossy(needle), self.shown()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("{e} before {:?}; got {}", String::from_utf8_lossy(needle), self.shown()),
            }
        }
    }

    fn until(&mut self, needle: &str) -> String {
        String::from_utf8(self.until_bytes(needle.as_bytes())).unwrap()
    }

    /// Sends `line` and returns what comes back up to and including `prompt`.
    fn ask(&mut self, line: &str, prompt: &str) -> String {
        self.line(line);
        self.until(prompt)
    }

    /// What was read and not taken yet, shortened for a failure message.
    fn shown(&self) -> String {
        let text = String::from_utf8_lossy(&self.buf);
        let chars: Vec<char> = text.chars().collect();
        if chars.len() <= 400 {
            format!("{text:?}")
        } else {
            let tail: String = chars[chars.len() - 200..].iter().collect();
            format!("{} bytes, ending {tail:?}", self.buf.len())
        }
    }

    /// Everything until the server closes; panics if it does not within the read timeout.
    fn until_closed(&mut self) -> String {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("{e} while waiting for the close; got {}", self.shown()),
            }
        }
        String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned()
    }
}

#[test]
fn walks_the_levels_and_explains_mistakes() {
    let (server, desk) = start(options());
    let mut c = Client::at_desk(server.local_addr());
    assert_eq!(c.ask("status", "sim:main> "), "status of desk\r\nsim:main> ");
    assert_eq!(c.ask("", "sim:main> "), "sim:main> ");
    assert_eq!(c.ask("invest EUR", "EUR> "), "investing in EUR\r\nEUR> ");
    assert_eq!(c.ask("status", "EUR> "), "status of EUR\r\nEUR> ");
    assert_eq!(c.ask("trade XBT/EUR", "XBT/EUR> "), "trading XBT/EUR\r\nXBT/EUR> ");
    assert_eq!(c.ask("back", "> "), "EUR> ");
    assert_eq!(c.ask("back", "> "), "sim:main> ");
    let no_way_up = c.ask("back", "sim:main> ");
    assert!(no_way_up.starts_with("error: unknown command \"back\""), "{no_way_up}");

    let help = c.ask("help", "sim:main> ");
    assert!(help.contains("invest ASSET") && help.contains("kill") && !help.contains("strategies"), "{help}");
    assert!(help.lines().count() > 5 && help.lines().all(|l| !l.contains('\n')));
    let typo = c.ask("stauts", "sim:main> ");
    assert!(typo.starts_with("error: unknown command \"stauts\" (did you mean `status`?)"), "{typo}");
    // The doubled 255 is a literal byte, which is no UTF-8.
    c.send(&[b's', IAC, IAC, b'\r', b'\n']);
    assert_eq!(c.until("sim:main> "), "error: not UTF-8\r\nsim:main> ");

    c.line("quit");
    assert_eq!(c.until_closed(), "bye\r\n");
    let asked: Vec<String> = desk.asked.lock().unwrap().iter().map(|(_, line)| line.clone()).collect();
    assert_eq!(asked, ["status", "invest EUR", "status", "trade XBT/EUR"]);
    assert!(desk.asked.lock().unwrap().iter().all(|(session, _)| session.starts_with("telnet 127.0.0.1:")));
    server.stop();
    drop(desk.link);
    desk.thread.join().unwrap();
}

#[test]
fn telnet_negotiation_is_stripped_and_refused() {
    let (server, _desk) = start(options());
    let mut c = Client::at_desk(server.local_addr());
    c.send(&[IAC, DO, 1]);
    c.send(b"status\r\n");
    let got = c.until_bytes(b"sim:main> ");
    assert_eq!(got, [&[IAC, WONT, 1][..], b"status of desk\r\nsim:main> "].concat());

    c.send(&[IAC, WILL, 31, b's', b't', b'a', IAC, NOP, b't', b'u', b's', b'\r', 0, b'\n']);
    let got = c.until_bytes(b"sim:main> ");
    assert_eq!(got, [&[IAC, DONT, 31][..], b"status of desk\r\nsim:main> "].concat());

    // Our own refusals echoed back, and a repeated request, get no answer: no loop.
    c.send(&[IAC, DONT, 1, IAC, WONT, 31, IAC, DO, 1]);
    c.send(b"status\n");
    assert_eq!(c.until_bytes(b"sim:main> "), b"status of desk\r\nsim:main> ");
}

#[test]
fn a_line_without_end_is_cut_off_and_others_go_on() {
    let (server, _desk) = start(options());
    let mut c = Client::at_desk(server.local_addr());
    let mut writer = c.stream.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        // Fails once the server has closed: that is the point.
        let _ = writer.write_all(&vec![b'a'; 1 << 20]);
    });
    assert_eq!(c.until_closed(), "line too long (max 4096 bytes); closing\r\n");
    drop(c);
    flood.join().unwrap();

    let mut next = Client::at_desk(server.local_addr());
    assert_eq!(next.ask("status", "sim:main> "), "status of desk\r\nsim:main> ");
}

#[test]
fn other_hosts_need_a_token() {
    let desk = fake_desk();
    let open = ServerOptions::new("0.0.0.0:0".parse().unwrap(), "sim:main");
    let err = Server::start(open.clone(), desk.link.clone()).unwrap_err();
    assert!(matches!(err, ServerError::NeedsToken { .. }), "{err:?}");
    assert!(err.to_string().contains("--control-token") && err.to_string().contains("CRYPY_CONTROL_TOKEN"), "{err}");
    let empty = ServerOptions { token: Some(" ".into()), ..open.clone() };
    assert!(matches!(Server::start(empty, desk.link.clone()), Err(ServerError::EmptyToken)));

    let guarded = ServerOptions { token: Some("s3cret-token".into()), ..open };
    let server = Server::start(guarded, desk.link.clone()).unwrap();
    assert!(!format!("{server:?}").contains("s3cret-token"));
    let addr: SocketAddr = format!("127.0.0.1:{}", server.local_addr().port()).parse().unwrap();

    let mut wrong = Client::connect(addr);
    assert_eq!(wrong.until("token: "), "crypy control: sim:main; type help\r\ntoken: ");
    wrong.line("status");
    assert_eq!(wrong.until_closed(), "wrong token\r\n");
    assert!(desk.asked.lock().unwrap().is_empty());

    let mut right = Client::connect(addr);
    right.until("token: ");
    right.line("s3cret-token");
    assert_eq!(right.until("sim:main> "), "sim:main> ");
    assert_eq!(right.ask("status", "sim:main> "), "status of desk\r\nsim:main> ");
}

#[test]
fn sessions_beyond_the_maximum_are_refused() {
    let (server, _desk) = start(ServerOptions { max_sessions: 2, ..options() });
    let mut first = Client::at_desk(server.local_addr());
    let _second = Client::at_desk(server.local_addr());
    let mut third = Client::connect(server.local_addr());
    assert_eq!(third.until_closed(), "too many sessions (2); try later\r\n");

    first.line("quit");
    assert_eq!(first.until_closed(), "bye\r\n");
    drop(first);
    // The server counts the session out once it notices the close, a moment later.
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        let mut again = Client::connect(server.local_addr());
        let mut greeting = [0u8; 6];
        again.stream.read_exact(&mut greeting).unwrap();
        if &greeting == b"crypy " {
            break;
        }
        assert!(Instant::now() < deadline, "the closed session is still counted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_idle_session_is_closed() {
    let (server, _desk) = start(ServerOptions { idle_timeout: Duration::from_millis(300), ..options() });
    let started = Instant::now();
    let mut c = Client::at_desk(server.local_addr());
    // A partial line is not activity.
    c.send(b"sta");
    assert_eq!(c.until_closed(), "idle for 0.3 s; closing\r\n");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < READ_TIMEOUT, "{took:?}");
}

#[test]
fn one_session_watches_while_another_works() {
    let (server, desk) = start(options());
    let mut watcher = Client::at_desk(server.local_addr());
    let mut worker = Client::at_desk(server.local_addr());
    watcher.line("watch");
    let got = watcher.until("watching\r\nsim:main> ");
    for i in 0..3 {
        assert!(got.contains(&format!("tick {i}\r\n")), "{got}");
    }
    assert_eq!(worker.ask("status", "sim:main> "), "status of desk\r\nsim:main> ");
    assert_eq!(worker.ask("orders", "sim:main> "), "told 1 watchers\r\nsim:main> ");
    // It arrives while the watcher sits at its prompt.
    assert_eq!(watcher.until("order news\r\n"), "order news\r\n");
    assert_eq!(watcher.ask("status", "sim:main> "), "status of desk\r\nsim:main> ");
    let sessions: Vec<String> = desk.asked.lock().unwrap().iter().map(|(s, _)| s.clone()).collect();
    assert_ne!(sessions[0], sessions[1]);
}

#[test]
fn a_client_that_never_reads_does_not_block_the_desk() {
    // A send that waited for the stuck client would take about the write timeout.
    let opts = ServerOptions { outbox_lines: 16, write_timeout: Duration::from_secs(1), ..options() };
    let (server, _desk) = start(opts);
    let mut stuck = Client::at_desk(server.local_addr());
    stuck.line("watch");
    stuck.until("watching\r\nsim:main> ");

    let mut worker = Client::at_desk(server.local_addr());
    let started = Instant::now();
    worker.line("kill");
    let flooded = worker.until("sim:main> ");
    assert!(flooded.starts_with("flooded; gone true; slowest send "), "{flooded}");
    let slowest: u64 = flooded.split(' ').nth(5).unwrap().parse().unwrap();
    assert!(slowest < 250, "{flooded}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(worker.ask("status", "sim:main> "), "status of desk\r\nsim:main> ");
    // The server gave up on the stuck session: what it had sent ends, and so does the connection.
    let rest = stuck.until_closed();
    assert!(rest.starts_with("xxxx"), "{}", &rest[..rest.len().min(100)]);
}

#[test]
fn a_lost_reply_closes_the_session() {
    let (server, _desk) = start(options());
    let mut c = Client::at_desk(server.local_addr());
    c.line("balances");
    assert_eq!(c.until_closed(), "the desk has stopped\r\n");
}

#[test]
fn stopping_closes_the_sessions_and_lets_go_of_the_desk() {
    let (server, desk) = start(options());
    let mut c = Client::at_desk(server.local_addr());
    server.stop();
    assert_eq!(c.until_closed(), "the control server is stopping\r\n");
    drop(desk.link);
    // The desk's loop ends only once the server has dropped its link too.
    desk.thread.join().unwrap();
}

#[test]
fn exec_lines_are_echoed_and_answered() {
    let desk = fake_desk();
    let lines: Vec<String> =
        ["status", "invest EUR", "status", "bogus", "back", "quit", "status"].iter().map(|s| s.to_string()).collect();
    let mut out = Vec::new();
    repl::run_lines(&desk.link, "sim:main", &lines, &mut |s| out.push(s.to_string())).unwrap();
    assert_eq!(
        out,
        [
            "sim:main> status",
            "status of desk",
            "sim:main> invest EUR",
            "investing in EUR",
            "EUR> status",
            "status of EUR",
            "EUR> bogus",
            "error: unknown command \"bogus\"; type `help` for the commands of this level",
            "EUR> back",
            "sim:main> quit",
            "bye",
        ]
    );
    assert!(desk.asked.lock().unwrap().iter().all(|(session, _)| session == "exec"));

    let (gone, inbox) = link::link();
    drop(inbox);
    let mut out = Vec::new();
    let err = repl::run_lines(&gone, "sim:main", &lines, &mut |s| out.push(s.to_string())).unwrap_err();
    assert!(matches!(err, ReplError::DeskStopped), "{err:?}");
    assert_eq!(out, ["sim:main> status"]);
}

#[test]
fn attach_without_a_terminal_sends_lines_after_prompts() {
    let mut opts = options();
    opts.token = Some("s3cret-token".into());
    let (server, _desk) = start(opts);
    let addr = server.local_addr().to_string();
    let mut input = &b"status\ninvest EUR\nstatus\n"[..];
    let mut output = Vec::new();
    repl::attach_lines(&addr, Some("s3cret-token"), &mut input, &mut output).unwrap();
    let output = String::from_utf8(output).unwrap();
    assert_eq!(
        output,
        "crypy control: sim:main; type help\n\
         sim:main> status\nstatus of desk\n\
         sim:main> invest EUR\ninvesting in EUR\n\
         EUR> status\nstatus of EUR\n\
         EUR> quit\nbye\n"
    );

    let mut input = &b"status\n"[..];
    let mut output = Vec::new();
    repl::attach_lines(&addr, Some("wrong"), &mut input, &mut output).unwrap();
    assert_eq!(String::from_utf8(output).unwrap(), "crypy control: sim:main; type help\nwrong token\n");
}
