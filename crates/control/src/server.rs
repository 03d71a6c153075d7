//! The telnet control server: one per crypy process, a terminal on the desk for `telnet`,
//! `nc` and `crypy attach`.
//!
//! It speaks plain lines: a greeting, the token prompt when a token is configured, then a
//! prompt per level (`sim:main> `, `EUR> `, `XBT/EUR> `) without a newline. Telnet
//! negotiation is stripped from the input and every option is refused, so a real telnet
//! client stays in its line mode. Each connection is one task on the server's own thread
//! and runtime; the desk only ever answers through a oneshot and fills a session's
//! [`Outbox`] without waiting, so a slow, stuck or hostile client can cost the desk nothing.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{timeout, Instant};

use crate::lang::{self, Command, Level};
use crate::link::{self, DeskLink, Outbox, Reply, Request};

/// How the control server listens and what it allows a session.
#[derive(Clone)]
pub struct ServerOptions {
    pub addr: SocketAddr,
    /// Required when `addr` is not loopback; compared in constant time, never printed.
    pub token: Option<String>,
    /// The desk's name in its prompt: `sim:main`.
    pub desk_name: String,
    /// The longest line a client may send, in bytes; a longer one closes the session.
    pub max_line: usize,
    /// Sessions at once; one more is refused.
    pub max_sessions: usize,
    /// A session without a complete line for this long is closed.
    pub idle_timeout: Duration,
    /// Watched lines queued per session before the desk starts dropping them.
    pub outbox_lines: usize,
    /// A client that does not take what is written to it for this long is closed.
    pub write_timeout: Duration,
}

impl ServerOptions {
    /// The defaults: 4096-byte lines, 16 sessions, 30 min idle, 1024 watched lines, 10 s writes.
    pub fn new(addr: SocketAddr, desk_name: impl Into<String>) -> Self {
        ServerOptions {
            addr,
            token: None,
            desk_name: desk_name.into(),
            max_line: 4096,
            max_sessions: 16,
            idle_timeout: Duration::from_secs(30 * 60),
            outbox_lines: 1024,
            write_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerOptions")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("desk_name", &self.desk_name)
            .field("max_line", &self.max_line)
            .field("max_sessions", &self.max_sessions)
            .field("idle_timeout", &self.idle_timeout)
            .field("outbox_lines", &self.outbox_lines)
            .field("write_timeout", &self.write_timeout)
            .finish()
    }
}

/// Why the control server did not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(
        "the control server would listen on {addr}, which other hosts can reach, so it needs a token: \
         pass --control-token TOKEN or set CRYPY_CONTROL_TOKEN (or listen on 127.0.0.1)"
    )]
    NeedsToken { addr: SocketAddr },
    #[error("the control token is empty; pass a non-empty --control-token or CRYPY_CONTROL_TOKEN")]
    EmptyToken,
    #[error("control server option {what} must be at least 1")]
    Invalid { what: &'static str },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot start the control server: {0}")]
    Start(#[source] io::Error),
}

/// A running control server; stops (and closes its sessions) on [`Server::stop`] or drop.
pub struct Server {
    local_addr: SocketAddr,
    desk_name: String,
    with_token: bool,
    /// Dropping it tells the accept loop and every session to stop.
    stop: Option<watch::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("desk_name", &self.desk_name)
            .field("with_token", &self.with_token)
            .finish_non_exhaustive()
    }
}

const DESK_STOPPED: &str = "the desk has stopped";
/// How long a closing session keeps reading what the client still sends, see [`Session::finish`].
const LINGER: Duration = Duration::from_secs(1);
/// How long stopping waits for sessions to say goodbye.
const STOP_GRACE: Duration = Duration::from_secs(2);
const CHUNK: usize = 4096;

impl Server {
    /// Checks the options, binds, and serves on a thread of its own with its own
    /// current-thread runtime. Returns once bound, so a client may connect right away.
    pub fn start(opts: ServerOptions, desk: DeskLink) -> Result<Server, ServerError> {
        let token_digest = match &opts.token {
            Some(token) if token.trim().is_empty() => return Err(ServerError::EmptyToken),
            Some(token) => Some(digest(token.as_bytes())),
            None if !opts.addr.ip().is_loopback() => return Err(ServerError::NeedsToken { addr: opts.addr }),
            None => None,
        };
        for (what, n) in [("max_line", opts.max_line), ("max_sessions", opts.max_sessions)] {
            if n == 0 {
                return Err(ServerError::Invalid { what });
            }
        }
        let listener =
            std::net::TcpListener::bind(opts.addr).map_err(|source| ServerError::Bind { addr: opts.addr, source })?;
        listener.set_nonblocking(true).map_err(ServerError::Start)?;
        let local_addr = listener.local_addr().map_err(ServerError::Start)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ServerError::Start)?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener).map_err(ServerError::Start)?
        };
        let (stop, stopped) = watch::channel(());
        let shared = Arc::new(Shared {
            desk,
            desk_name: opts.desk_name.clone(),
            token_digest,
            max_line: opts.max_line,
            max_sessions: opts.max_sessions,
            idle_timeout: opts.idle_timeout,
            outbox_lines: opts.outbox_lines,
            write_timeout: opts.write_timeout,
            sessions: AtomicUsize::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("crypy-control".into())
            .spawn(move || runtime.block_on(serve(listener, shared, stopped)))
            .map_err(ServerError::Start)?;
        Ok(Server {
            local_addr,
            desk_name: opts.desk_name,
            with_token: opts.token.is_some(),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where it listens: the real port when the options asked for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every session, and joins the server's thread.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What every session reads; the token itself is not kept, only its digest.
struct Shared {
    desk: DeskLink,
    desk_name: String,
    token_digest: Option<[u8; 32]>,
    max_line: usize,
    max_sessions: usize,
    idle_timeout: Duration,
    outbox_lines: usize,
    write_timeout: Duration,
    sessions: AtomicUsize,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Compares digests rather than the tokens so neither the length nor a common prefix of the
/// token shows in the time taken, and folds every byte so there is no early exit.
fn token_matches(expected: &[u8; 32], given: &[u8]) -> bool {
    let given = digest(given);
    let diff = expected.iter().zip(given.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

/// Counts a live session for as long as its task exists, however the task ends.
struct Counted(Arc<Shared>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    // Only this loop increments, so checking and then counting cannot race.
                    if shared.sessions.load(Ordering::Relaxed) >= shared.max_sessions {
                        tasks.spawn(refuse(stream, shared.max_sessions));
                    } else {
                        shared.sessions.fetch_add(1, Ordering::Relaxed);
                        let counted = Counted(shared.clone());
                        tasks.spawn(session(stream, peer, counted, stop.clone()));
                    }
                }
                // Out of file descriptors and the like: pausing beats spinning on the error.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let _ = timeout(STOP_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
}

async fn refuse(mut stream: TcpStream, max: usize) {
    let message = format!("too many sessions ({max}); try later\r\n");
    let _ = timeout(Duration::from_secs(1), stream.write_all(message.as_bytes())).await;
    let _ = stream.shutdown().await;
}

async fn session(stream: TcpStream, peer: SocketAddr, counted: Counted, stop: watch::Receiver<()>) {
    let shared = counted.0.clone();
    let (rd, wr) = stream.into_split();
    let mut session = Session { rd, wr, input: LineInput::new(shared.max_line), shared, stop, peer };
    let Err(close) = session.run().await;
    session.finish(close).await;
    drop(counted);
}

/// Why a session ends.
enum Close {
    /// The client went away or stopped taking output: nothing more to say.
    Gone,
    /// The server is stopping.
    Stop,
    /// Say this, then close.
    Say(String),
}

struct Session {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    input: LineInput,
    shared: Arc<Shared>,
    stop: watch::Receiver<()>,
    peer: SocketAddr,
}

impl Session {
    async fn run(&mut self) -> Result<Infallible, Close> {
        let greeting = format!("crypy control: {}; type help", self.shared.desk_name);
        self.write_text(&greeting).await?;
        // Created before the token so every wait below has the same shape; nothing can reach
        // it before a request carries a clone to the desk.
        let (outbox, mut watched) = Outbox::new(self.shared.outbox_lines);
        if let Some(expected) = self.shared.token_digest {
            self.write(b"token: ").await?;
            let given = self.next_line(&mut watched).await?;
            if !token_matches(&expected, &given) {
                return Err(Close::Say("wrong token".into()));
            }
        }
        let mut level = Level::Desk;
        loop {
            self.write(link::prompt(&self.shared.desk_name, &level).as_bytes()).await?;
            let line = self.next_line(&mut watched).await?;
            let Ok(line) = String::from_utf8(line) else {
                self.write_text("error: not UTF-8").await?;
                continue;
            };
            let command = match lang::parse(&level, &line) {
                Ok(None) => continue,
                Ok(Some(command)) => command,
                Err(e) => {
                    self.write_text(&format!("error: {e}")).await?;
                    continue;
                }
            };
            match command {
                Command::Quit => return Err(Close::Say("bye".into())),
                Command::Help(topic) => self.write_text(&lang::help(&level, topic.as_deref())).await?,
                Command::Back => match link::up(&level) {
                    Some(above) => level = above,
                    None => self.write_text("error: already at the desk").await?,
                },
                command => {
                    let (reply, answer) = oneshot::channel();
                    let session = format!("telnet {}", self.peer);
                    let request = Request { session, level, command, reply, outbox: outbox.clone() };
                    if self.shared.desk.send(request).is_err() {
                        return Err(Close::Say(DESK_STOPPED.into()));
                    }
                    let reply = self.await_reply(answer, &mut watched).await?;
                    if !reply.text.is_empty() {
                        self.write_text(&reply.text).await?;
                    }
                    level = reply.level;
                }
            }
        }
    }

    /// The next complete line, forwarding watched lines and answering telnet negotiation
    /// while it waits.
    async fn next_line(&mut self, watched: &mut mpsc::Receiver<String>) -> Result<Vec<u8>, Close> {
        let deadline = Instant::now() + self.shared.idle_timeout;
        let mut chunk = [0u8; CHUNK];
        loop {
            // Before the line they came with: the client may be waiting for them.
            if !self.input.answers.is_empty() {
                let answers = std::mem::take(&mut self.input.answers);
                self.write(&answers).await?;
            }
            if let Some(line) = self.input.lines.pop_front() {
                return Ok(line);
            }
            if self.input.too_long {
                return Err(Close::Say(format!("line too long (max {} bytes); closing", self.shared.max_line)));
            }
            tokio::select! {
                biased;
                _ = self.stop.changed() => return Err(Close::Stop),
                read = self.rd.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => return Err(Close::Gone),
                    Ok(n) => self.input.feed(&chunk[..n]),
                },
                Some(line) = watched.recv() => self.write_text(&line).await?,
                _ = tokio::time::sleep_until(deadline) => {
                    let idle = self.shared.idle_timeout.as_secs_f64();
                    return Err(Close::Say(format!("idle for {idle} s; closing")));
                }
            }
        }
    }

    /// The desk's reply; the idle clock does not run meanwhile, since the wait is the desk's.
    async fn await_reply(
        &mut self,
        mut answer: oneshot::Receiver<Reply>,
        watched: &mut mpsc::Receiver<String>,
    ) -> Result<Reply, Close> {
        let reply = loop {
            tokio::select! {
                biased;
                _ = self.stop.changed() => return Err(Close::Stop),
                // The reply goes first so a desk that watches faster than the client reads
                // cannot hold it back for ever.
                reply = &mut answer => break reply.map_err(|_| Close::Say(DESK_STOPPED.into()))?,
                Some(line) = watched.recv() => self.write_text(&line).await?,
            }
        };
        // What the desk queued before it replied is shown before the reply (`watch` shows
        // its first lines, then says it is watching); bounded, as the desk may go on queueing.
        for _ in 0..self.shared.outbox_lines {
            let Ok(line) = watched.try_recv() else { break };
            self.write_text(&line).await?;
        }
        Ok(reply)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Close> {
        match timeout(self.shared.write_timeout, self.wr.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Close::Gone),
        }
    }

    /// Writes text as telnet lines: every line ends with CR LF.
    async fn write_text(&mut self, text: &str) -> Result<(), Close> {
        self.write(crlf(text).as_bytes()).await
    }

    async fn finish(mut self, close: Close) {
        let farewell = match close {
            Close::Gone => return,
            Close::Stop => {
                let _ =
                    timeout(Duration::from_millis(200), self.wr.write_all(b"the control server is stopping\r\n")).await;
                return;
            }
            Close::Say(farewell) => farewell,
        };
        if self.write_text(&farewell).await.is_err() {
            return;
        }
        let _ = self.wr.shutdown().await;
        // Closing a socket with unread input makes the kernel answer with a reset, which can
        // destroy the farewell before the client reads it (a client still sending a too-long
        // line is exactly that case): read and drop what still comes, briefly.
        let mut sink = [0u8; CHUNK];
        let drain = async {
            loop {
                match self.rd.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        tokio::select! {
            _ = self.stop.changed() => {}
            _ = timeout(LINGER, drain) => {}
        }
    }
}

/// `text` with every line ended by CR LF, as telnet wants.
fn crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.split('\n') {
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push_str("\r\n");
    }
    out
}

/// A session's input: telnet-decoded bytes cut into lines, with the length limit applied as
/// bytes arrive rather than when a newline finally does.
struct LineInput {
    telnet: Telnet,
    max_line: usize,
    current: Vec<u8>,
    lines: std::collections::VecDeque<Vec<u8>>,
    too_long: bool,
    answers: Vec<u8>,
    decoded: Vec<u8>,
}

impl LineInput {
    fn new(max_line: usize) -> Self {
        LineInput {
            telnet: Telnet::default(),
            max_line,
            current: Vec::new(),
            lines: Default::default(),
            too_long: false,
            answers: Vec::new(),
            decoded: Vec::with_capacity(CHUNK),
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        if self.too_long {
            return;
        }
        self.decoded.clear();
        self.telnet.decode(bytes, &mut self.decoded, &mut self.answers);
        for &b in &self.decoded {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.current);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.lines.push_back(line);
                continue;
            }
            self.current.push(b);
            // A CR may still turn out to be the line's end, so it does not count yet.
            let len = self.current.len() - usize::from(b == b'\r');
            if len > self.max_line {
                self.too_long = true;
                self.current = Vec::new();
                return;
            }
        }
    }
}

const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const SE: u8 = 240;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum TelnetState {
    #[default]
    Data,
    Iac,
    /// After IAC and one of WILL, WONT, DO, DONT: the option byte comes next.
    Option(u8),
    Sub,
    SubIac,
}

/// Strips telnet commands from the input and refuses every option. Each option is refused
/// once per direction, so a client that answers our refusal, or repeats its request, cannot
/// start a loop.
#[derive(Debug, Default)]
struct Telnet {
    state: TelnetState,
    after_cr: bool,
    refused_do: [u64; 4],
    refused_will: [u64; 4],
}

impl Telnet {
    /// Appends the data in `input` to `data` and the answers to negotiation to `answers`.
    fn decode(&mut self, input: &[u8], data: &mut Vec<u8>, answers: &mut Vec<u8>) {
        for &b in input {
            self.state = match self.state {
                TelnetState::Data => {
                    if b == IAC {
                        TelnetState::Iac
                    } else if b == 0 && self.after_cr {
                        // Telnet's bare carriage return is CR NUL; the NUL means nothing here.
                        self.after_cr = false;
                        TelnetState::Data
                    } else {
                        data.push(b);
                        self.after_cr = b == b'\r';
                        TelnetState::Data
                    }
                }
                TelnetState::Iac => match b {
                    IAC => {
                        data.push(IAC);
                        self.after_cr = false;
                        TelnetState::Data
                    }
                    WILL..=DONT => TelnetState::Option(b),
                    SB => TelnetState::Sub,
                    _ => TelnetState::Data,
                },
                TelnetState::Option(verb) => {
                    let (refused, answer) = match verb {
                        DO => (Some(&mut self.refused_do), WONT),
                        WILL => (Some(&mut self.refused_will), DONT),
                        // WONT and DONT need no answer: we never asked for anything.
                        _ => (None, 0),
                    };
                    if let Some(refused) = refused {
                        let (word, bit) = (usize::from(b / 64), 1u64 << (b % 64));
                        if refused[word] & bit == 0 {
                            refused[word] |= bit;
                            answers.extend_from_slice(&[IAC, answer, b]);
                        }
                    }
                    TelnetState::Data
                }
                TelnetState::Sub => {
                    if b == IAC {
                        TelnetState::SubIac
                    } else {
                        TelnetState::Sub
                    }
                }
                TelnetState::SubIac => {
                    if b == SE {
                        TelnetState::Data
                    } else {
                        TelnetState::Sub
                    }
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(input: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (mut data, mut answers) = (Vec::new(), Vec::new());
        Telnet::default().decode(input, &mut data, &mut answers);
        (data, answers)
    }

    #[test]
    fn negotiation_is_stripped_and_refused_once() {
        let input = [
            &[IAC, DO, 1][..],
            b"sta",
            &[IAC, 241],
            b"tus",
            &[IAC, WILL, 31, IAC, SB, 31, 0, 80, IAC, IAC, 0, 24, IAC, SE],
            &[IAC, DO, 1, IAC, DONT, 1, IAC, WONT, 3],
            &[IAC, IAC],
            b"\r\0\n",
        ]
        .concat();
        let (data, answers) = decode(&input);
        assert_eq!(data, [&b"status"[..], &[IAC], b"\r\n"].concat());
        assert_eq!(answers, [IAC, WONT, 1, IAC, DONT, 31]);
    }

    #[test]
    fn state_carries_across_chunks() {
        let mut telnet = Telnet::default();
        let (mut data, mut answers) = (Vec::new(), Vec::new());
        for chunk in [&[b'a', b'\r'][..], &[0], &[IAC], &[DO], &[24, b'b']] {
            telnet.decode(chunk, &mut data, &mut answers);
        }
        assert_eq!(data, b"a\rb");
        assert_eq!(answers, [IAC, WONT, 24]);
    }

    #[test]
    fn lines_are_cut_at_the_limit_before_the_newline() {
        let mut input = LineInput::new(4);
        input.feed(b"abcd\r\nab");
        input.feed(b"cd\r");
        assert_eq!(input.lines.pop_front().unwrap(), b"abcd");
        assert!(!input.too_long);
        input.feed(b"\nabcde");
        assert_eq!(input.lines.pop_front().unwrap(), b"abcd");
        assert!(input.too_long);
        assert!(input.current.is_empty());
    }

    #[test]
    fn tokens_compare_by_digest() {
        let expected = digest(b"s3cret");
        assert!(token_matches(&expected, b"s3cret"));
        assert!(!token_matches(&expected, b"s3cre"));
        assert!(!token_matches(&expected, b""));
    }

    #[test]
    fn crlf_ends_every_line() {
        assert_eq!(crlf("a\nb\r\nc"), "a\r\nb\r\nc\r\n");
        assert_eq!(crlf(""), "\r\n");
    }

    #[test]
    fn options_debug_redacts_the_token() {
        let mut opts = ServerOptions::new("127.0.0.1:0".parse().unwrap(), "sim:main");
        opts.token = Some("hunter2".into());
        let shown = format!("{opts:?}");
        assert!(!shown.contains("hunter2") && shown.contains("<redacted>"), "{shown}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn no_input_makes_the_decoder_panic(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let (data, _) = decode(&input);
            prop_assert!(data.len() <= input.len());
        }

        #[test]
        fn bytes_without_iac_pass_through_but_for_cr_nul(
            input in proptest::collection::vec(prop_oneof![0u8..255, Just(b'\r'), Just(0u8)], 0..300)
        ) {
            let expected: Vec<u8> = input
                .iter()
                .enumerate()
                .filter(|&(i, &b)| !(b == 0 && i > 0 && input[i - 1] == b'\r'))
                .map(|(_, &b)| b)
                .collect();
            let (data, answers) = decode(&input);
            prop_assert_eq!(data, expected);
            prop_assert!(answers.is_empty());
        }
    }
}
