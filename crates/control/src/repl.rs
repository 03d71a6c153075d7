//! The terminal REPLs: the local one of `crypy sim`, the `--exec` lines, and `crypy attach`,
//! the client of the telnet control server.
//!
//! Local sessions handle `help`, `back` and `quit` themselves, like the telnet server does,
//! and send everything else to the desk. Watched lines are printed above the prompt by
//! rustyline's external printer, so they never garble the line being typed.

use std::borrow::Cow;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustyline::completion::Completer;
use rustyline::config::Configurer;
use rustyline::error::ReadlineError;
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{ColorMode, CompletionType, Config, Context, Editor, ExternalPrinter, Helper};
use thiserror::Error;

use crate::lang::{self, Command, Level, DEFINITIONS};
use crate::link::{self, DeskLink, Outbox, Request};

/// Why a REPL stopped other than by `quit` or end of input.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReplError {
    #[error("the desk has stopped")]
    DeskStopped,
    #[error("terminal: {0}")]
    Terminal(#[from] ReadlineError),
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("control connection: {0}")]
    Io(#[from] io::Error),
}

/// Watched lines a local session queues before the desk drops them.
const LOCAL_OUTBOX: usize = 1024;
/// How long `attach` waits for the server to close after sending `quit` at end of input.
const QUIT_WAIT: Duration = Duration::from_secs(2);
const TOKEN_PROMPT: &str = "token: ";

/// What one line leads to in a local session.
enum Answer {
    /// Text to show (possibly empty, after `back`).
    Text(String),
    Quit,
    DeskStopped,
}

/// Answers one line at `level` the way the telnet server does, moving `level` on.
fn answer(desk: &DeskLink, session: &str, level: &mut Level, line: &str, outbox: &Outbox) -> Answer {
    let command = match lang::parse(level, line) {
        Ok(None) => return Answer::Text(String::new()),
        Ok(Some(command)) => command,
        Err(e) => return Answer::Text(format!("error: {e}")),
    };
    match command {
        Command::Quit => Answer::Quit,
        Command::Help(topic) => Answer::Text(lang::help(level, topic.as_deref())),
        Command::Back => match link::up(level) {
            Some(above) => {
                *level = above;
                Answer::Text(String::new())
            }
            None => Answer::Text("error: already at the desk".into()),
        },
        command => {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let request = Request { session: session.into(), level: *level, command, reply, outbox: outbox.clone() };
            if desk.send(request).is_err() {
                return Answer::DeskStopped;
            }
            match answer.blocking_recv() {
                Ok(reply) => {
                    *level = reply.level;
                    Answer::Text(reply.text)
                }
                Err(_) => Answer::DeskStopped,
            }
        }
    }
}

/// The local REPL of `crypy sim` (stdin is a terminal): line editing, history in the file
/// `history` (if any), tab completion of this level's commands, watched lines printed above
/// the prompt. Runs until `quit`, Ctrl-D, or the desk stops; Ctrl-C clears the line.
///
/// Blocks on the desk's replies, so it must not be called inside a tokio runtime.
pub fn run_local(desk: DeskLink, desk_name: &str, history: Option<PathBuf>) -> Result<(), ReplError> {
    let level = Arc::new(Mutex::new(Level::Desk));
    let mut editor = editor(level.clone())?;
    if let Some(path) = &history {
        // A missing file is just the first run.
        let _ = editor.load_history(path);
    }
    let (outbox, mut watched) = Outbox::new(LOCAL_OUTBOX);
    // With an external printer, rustyline 17.0.2 waits on the terminal before looking at what
    // it has already read, so pasted text stalls after its first character until the next key
    // (kkawakam/rustyline#976, fixed upstream by #977).
    let mut printer = editor.create_external_printer()?;
    let done = Arc::new(AtomicBool::new(false));
    {
        let done = done.clone();
        // Not joined: it blocks until the desk sends the next watched line or drops the
        // outbox, and then sees `done`, drops the receiver, and the desk stops watching.
        std::thread::Builder::new().name("crypy-watch".into()).spawn(move || {
            while let Some(line) = watched.blocking_recv() {
                if done.load(Ordering::Relaxed) || printer.print(format!("{line}\n")).is_err() {
                    break;
                }
            }
        })?;
    }
    let result = loop {
        let current = *lock(&level);
        match editor.readline(&link::prompt(desk_name, &current)) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                let mut next = current;
                match answer(&desk, "local", &mut next, &line, &outbox) {
                    Answer::Text(text) if text.is_empty() => {}
                    Answer::Text(text) => println!("{text}"),
                    Answer::Quit => {
                        println!("bye");
                        break Ok(());
                    }
                    Answer::DeskStopped => {
                        println!("{}", ReplError::DeskStopped);
                        break Ok(());
                    }
                }
                *lock(&level) = next;
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break Ok(()),
            Err(e) => break Err(e.into()),
        }
    };
    done.store(true, Ordering::Relaxed);
    if let Some(path) = &history {
        save_history(&mut editor, path);
    }
    result
}

/// An editor completing like bash: the common prefix first, the list on a second Tab.
fn editor(level: Arc<Mutex<Level>>) -> Result<Editor<ReplHelper, DefaultHistory>, ReplError> {
    let config = Config::builder().completion_type(CompletionType::List).auto_add_history(false).build();
    let mut editor = Editor::with_config(config)?;
    editor.set_helper(Some(ReplHelper::new(level)));
    Ok(editor)
}

fn save_history(editor: &mut Editor<ReplHelper, DefaultHistory>, path: &std::path::Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = editor.save_history(path) {
        // Losing the history is no reason to fail a session that went well.
        eprintln!("warning: cannot save the history to {}: {e}", path.display());
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `lines` non-interactively (`--exec`): each is answered as in the REPL, `help`,
/// `back` and `quit` locally, as session `exec`. For each line `write` gets the echo
/// `<prompt><line>`, then the answer (or `error: …`) if there is one, then any watched
/// lines queued meanwhile; every piece comes without a trailing newline. `quit` stops
/// (after writing `bye`).
///
/// Returns [`ReplError::DeskStopped`] on the first line the desk could not answer; a parse
/// error or a refusal is output, not an error. Blocks on the desk's replies, so it must not
/// be called inside a tokio runtime.
pub fn run_lines(
    desk: &DeskLink,
    desk_name: &str,
    lines: &[String],
    write: &mut dyn FnMut(&str),
) -> Result<(), ReplError> {
    let (outbox, mut watched) = Outbox::new(LOCAL_OUTBOX);
    let mut level = Level::Desk;
    for line in lines {
        write(&format!("{}{line}", link::prompt(desk_name, &level)));
        match answer(desk, "exec", &mut level, line, &outbox) {
            Answer::Text(text) if text.is_empty() => {}
            Answer::Text(text) => write(&text),
            Answer::Quit => {
                write("bye");
                return Ok(());
            }
            Answer::DeskStopped => return Err(ReplError::DeskStopped),
        }
        while let Ok(line) = watched.try_recv() {
            write(&line);
        }
    }
    Ok(())
}

/// `crypy attach ADDR`: a client of the telnet control server. On a terminal it edits lines
/// with history and completion and prints what the server sends above the prompt; the
/// prompt is whatever the server last sent without a newline. The server's `token: ` prompt
/// is answered with `token` when given, else read without showing what is typed. Without a
/// terminal it is [`attach_lines`] on stdin and stdout. Returns when the user quits or the
/// server closes the connection.
pub fn attach(addr: &str, token: Option<&str>) -> Result<(), ReplError> {
    let stream = TcpStream::connect(addr).map_err(|source| ReplError::Connect { addr: addr.into(), source })?;
    let _ = stream.set_nodelay(true);
    if io::stdin().is_terminal() {
        attach_terminal(stream, token)
    } else {
        attach_stream(stream, token, &mut io::stdin().lock(), &mut io::stdout())
    }
}

/// `crypy attach` without a terminal: sends each line of `input` once the server's prompt
/// has arrived, echoing it after the prompt, and copies everything the server sends to
/// `output` (CR LF become LF). At the end of `input` sends `quit` and waits briefly for the
/// server to close. The token, sent for the `token: ` prompt, is never written to `output`.
pub fn attach_lines(
    addr: &str,
    token: Option<&str>,
    input: &mut dyn BufRead,
    output: &mut (dyn Write + Send),
) -> Result<(), ReplError> {
    let stream = TcpStream::connect(addr).map_err(|source| ReplError::Connect { addr: addr.into(), source })?;
    let _ = stream.set_nodelay(true);
    attach_stream(stream, token, input, output)
}

/// What the reader of the server's output tells the thread that sends lines.
enum FromServer {
    Prompt(String),
    Closed,
}

/// One piece of what the server sends.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Line(String),
    Prompt(String),
}

/// Cuts the server's output into lines and prompts. A prompt is what the server writes at the
/// start of a line and never ends: `token: `, or one word and `> `. Recognising it by its
/// shape rather than by where a read ends keeps a prompt split by the network from being
/// taken early, and one followed at once by a watched line from being missed.
#[derive(Debug, Default)]
struct ServerText {
    tail: Vec<u8>,
}

impl ServerText {
    fn feed(&mut self, bytes: &[u8], pieces: &mut Vec<Piece>) {
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.tail);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                pieces.push(Piece::Line(String::from_utf8_lossy(&line).into_owned()));
            } else {
                self.tail.push(b);
                if b == b' ' && is_prompt(&self.tail) {
                    let prompt = std::mem::take(&mut self.tail);
                    pieces.push(Piece::Prompt(String::from_utf8_lossy(&prompt).into_owned()));
                }
            }
        }
    }

    /// What is left when the server closes.
    fn rest(&mut self) -> Option<Piece> {
        let rest = std::mem::take(&mut self.tail);
        (!rest.is_empty()).then(|| Piece::Line(String::from_utf8_lossy(&rest).into_owned()))
    }
}

fn is_prompt(tail: &[u8]) -> bool {
    tail == TOKEN_PROMPT.as_bytes()
        || tail.strip_suffix(b"> ").is_some_and(|name| !name.is_empty() && !name.iter().any(u8::is_ascii_whitespace))
}

fn send_line(mut stream: &TcpStream, line: &str) -> io::Result<()> {
    stream.write_all(format!("{line}\r\n").as_bytes())
}

fn attach_stream(
    stream: TcpStream,
    token: Option<&str>,
    input: &mut dyn BufRead,
    output: &mut (dyn Write + Send),
) -> Result<(), ReplError> {
    let output = Mutex::new(output);
    let (events, prompts) = std_mpsc::channel();
    let reader = stream.try_clone()?;
    std::thread::scope(|scope| {
        let output = &output;
        scope.spawn(move || {
            let mut reader = reader;
            let mut text = ServerText::default();
            let mut chunk = [0u8; 4096];
            let mut pieces = Vec::new();
            loop {
                let n = match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                text.feed(&chunk[..n], &mut pieces);
                let mut out = lock(output);
                for piece in pieces.drain(..) {
                    match piece {
                        Piece::Line(line) => {
                            let _ = writeln!(out, "{line}");
                        }
                        Piece::Prompt(prompt) if prompt == TOKEN_PROMPT && token.is_some() => {
                            if let Some(token) = token {
                                let _ = send_line(&reader, token);
                            }
                        }
                        Piece::Prompt(prompt) => {
                            let _ = write!(out, "{prompt}");
                            let _ = events.send(FromServer::Prompt(prompt));
                        }
                    }
                }
                let _ = out.flush();
            }
            if let Some(Piece::Line(rest)) = text.rest() {
                let _ = writeln!(lock(output), "{rest}");
            }
            let _ = lock(output).flush();
            let _ = events.send(FromServer::Closed);
        });

        let result = (|| -> Result<(), ReplError> {
            let mut line = String::new();
            while let Ok(FromServer::Prompt(prompt)) = prompts.recv() {
                line.clear();
                if input.read_line(&mut line)? == 0 {
                    {
                        let mut out = lock(output);
                        writeln!(out, "quit")?;
                        out.flush()?;
                    }
                    send_line(&stream, "quit")?;
                    let deadline = std::time::Instant::now() + QUIT_WAIT;
                    while let Ok(FromServer::Prompt(_)) =
                        prompts.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                    {
                    }
                    return Ok(());
                }
                let line = line.trim_end_matches(['\n', '\r']);
                {
                    let mut out = lock(output);
                    if prompt == TOKEN_PROMPT {
                        writeln!(out)?;
                    } else {
                        writeln!(out, "{line}")?;
                    }
                    out.flush()?;
                }
                send_line(&stream, line)?;
            }
            Ok(())
        })();
        // Ends the reader, whether the server closed or we stopped waiting for it.
        let _ = stream.shutdown(Shutdown::Both);
        result
    })
}

fn attach_terminal(stream: TcpStream, token: Option<&str>) -> Result<(), ReplError> {
    let level = Arc::new(Mutex::new(Level::Desk));
    let mut editor = editor(level.clone())?;
    let mut printer = editor.create_external_printer()?;
    let (events, prompts) = std_mpsc::channel();
    let mut reader = stream.try_clone()?;
    let token_owned = token.map(str::to_owned);
    let typing = Arc::new(AtomicBool::new(false));
    let typing_seen = typing.clone();
    let reader_thread = std::thread::Builder::new().name("crypy-attach".into()).spawn(move || {
        let mut text = ServerText::default();
        let mut chunk = [0u8; 4096];
        let mut pieces = Vec::new();
        let mut desk_name: Option<String> = None;
        loop {
            let n = match reader.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            text.feed(&chunk[..n], &mut pieces);
            for piece in pieces.drain(..) {
                match piece {
                    Piece::Line(line) => {
                        if desk_name.is_none() {
                            desk_name = greeted_desk(&line);
                        }
                        let _ = printer.print(format!("{line}\n"));
                    }
                    Piece::Prompt(prompt) if prompt == TOKEN_PROMPT && token_owned.is_some() => {
                        if let Some(token) = &token_owned {
                            let _ = send_line(&reader, token);
                        }
                    }
                    Piece::Prompt(prompt) => {
                        if let Some(at) = level_of_prompt(&prompt, desk_name.as_deref()) {
                            *lock(&level) = at;
                        }
                        let _ = events.send(FromServer::Prompt(prompt));
                    }
                }
            }
        }
        if let Some(Piece::Line(rest)) = text.rest() {
            let _ = printer.print(format!("{rest}\n"));
        }
        // Otherwise the user would go on typing at a prompt nobody answers any more.
        if typing_seen.load(Ordering::SeqCst) {
            let _ = printer.print("connection closed (press Enter)\n".into());
        }
        let _ = events.send(FromServer::Closed);
    })?;

    let result = (|| -> Result<(), ReplError> {
        while let Ok(FromServer::Prompt(prompt)) = prompts.recv() {
            let secret = prompt == TOKEN_PROMPT;
            if let Some(helper) = editor.helper_mut() {
                helper.masking = secret;
            }
            // Masking is highlighting, which rustyline skips unless colours are forced.
            editor.set_color_mode(if secret { ColorMode::Forced } else { ColorMode::Enabled });
            typing.store(true, Ordering::SeqCst);
            let line = loop {
                match editor.readline(&prompt) {
                    Ok(line) => break Some(line),
                    Err(ReadlineError::Interrupted) => continue,
                    Err(ReadlineError::Eof) => break None,
                    Err(e) => return Err(e.into()),
                }
            };
            typing.store(false, Ordering::SeqCst);
            let Some(line) = line else {
                let _ = send_line(&stream, "quit");
                let deadline = std::time::Instant::now() + QUIT_WAIT;
                while let Ok(FromServer::Prompt(_)) =
                    prompts.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                {
                }
                return Ok(());
            };
            if !secret && !line.trim().is_empty() {
                let _ = editor.add_history_entry(line.as_str());
            }
            if send_line(&stream, &line).is_err() {
                return Ok(());
            }
        }
        Ok(())
    })();
    let _ = stream.shutdown(Shutdown::Both);
    let _ = reader_thread.join();
    result
}

/// The desk's name from the server's greeting, `crypy control: sim:main; type help`.
fn greeted_desk(line: &str) -> Option<String> {
    line.strip_prefix("crypy control: ")?.strip_suffix("; type help").map(str::to_owned)
}

/// The level a prompt of the server stands for, so completion can follow it.
fn level_of_prompt(prompt: &str, desk_name: Option<&str>) -> Option<Level> {
    let name = prompt.strip_suffix("> ")?;
    if Some(name) == desk_name {
        return Some(Level::Desk);
    }
    if let Ok(pair) = name.parse() {
        return Some(Level::Trade(pair));
    }
    if let Ok(asset) = name.parse() {
        return Some(Level::Invest(asset));
    }
    Some(Level::Desk)
}

/// Completion of command names for the level the session is at, and masking of secrets.
#[derive(Debug)]
struct ReplHelper {
    level: Arc<Mutex<Level>>,
    masking: bool,
}

impl ReplHelper {
    fn new(level: Arc<Mutex<Level>>) -> Self {
        ReplHelper { level, masking: false }
    }

    /// The command names a word at `pos` of `line` could become, and where that word starts.
    fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = before[start..].to_ascii_lowercase();
        let kind = lock(&self.level).kind();
        let names = || DEFINITIONS.iter().filter(|d| d.levels.contains(&kind)).map(|d| d.name);
        let earlier: Vec<&str> = before[..start].split_whitespace().collect();
        let fits = match earlier.as_slice() {
            [] => true,
            [help] => help.eq_ignore_ascii_case("help"),
            _ => false,
        };
        if !fits {
            return (start, Vec::new());
        }
        (start, names().filter(|n| n.starts_with(&word)).map(str::to_owned).collect())
    }
}

impl Completer for ReplHelper {
    type Candidate = String;

    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<String>)> {
        if self.masking {
            return Ok((pos, Vec::new()));
        }
        Ok(self.candidates(line, pos))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        if self.masking {
            Cow::Owned("*".repeat(line.chars().count()))
        } else {
            Cow::Borrowed(line)
        }
    }

    fn highlight_char(&self, _line: &str, _pos: usize, kind: CmdKind) -> bool {
        self.masking && kind != CmdKind::MoveCursor
    }
}

impl Validator for ReplHelper {}

impl Helper for ReplHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper(level: Level) -> ReplHelper {
        ReplHelper::new(Arc::new(Mutex::new(level)))
    }

    #[test]
    fn completion_follows_the_level() {
        let desk = helper(Level::Desk);
        assert_eq!(desk.candidates("st", 2), (0, vec!["status".to_string()]));
        assert_eq!(desk.candidates("in", 2), (0, vec!["invest".to_string()]));
        assert!(desk.candidates("tr", 2).1.is_empty());
        assert_eq!(desk.candidates("help ki", 7), (5, vec!["kill".to_string()]));
        assert!(desk.candidates("invest E", 8).1.is_empty());
        let trade = helper(Level::Trade("XBT/EUR".parse().unwrap()));
        assert_eq!(trade.candidates("e", 1).1, vec!["enter", "exit"]);
        assert_eq!(
            trade.candidates("", 0).1.len(),
            DEFINITIONS.iter().filter(|d| d.levels.contains(&lang::LevelKind::Trade)).count()
        );
    }

    #[test]
    fn server_output_is_cut_into_lines_and_prompts() {
        let mut text = ServerText::default();
        let mut pieces = Vec::new();
        text.feed(b"crypy control: sim:main; type help\r\nsim:ma", &mut pieces);
        text.feed(b"in> tick\r\n", &mut pieces);
        text.feed(b"token: ", &mut pieces);
        text.feed(b"bye\r\nnot a> prompt\r\nEUR", &mut pieces);
        text.feed(b"> partial", &mut pieces);
        assert_eq!(
            pieces,
            [
                Piece::Line("crypy control: sim:main; type help".into()),
                Piece::Prompt("sim:main> ".into()),
                Piece::Line("tick".into()),
                Piece::Prompt("token: ".into()),
                Piece::Line("bye".into()),
                Piece::Line("not a> prompt".into()),
                Piece::Prompt("EUR> ".into()),
            ]
        );
        assert_eq!(text.rest(), Some(Piece::Line("partial".into())));
    }

    #[test]
    fn prompts_tell_the_level() {
        let desk = greeted_desk("crypy control: sim:main; type help");
        assert_eq!(desk.as_deref(), Some("sim:main"));
        assert_eq!(level_of_prompt("sim:main> ", desk.as_deref()), Some(Level::Desk));
        assert_eq!(level_of_prompt("EUR> ", desk.as_deref()), Some(Level::Invest("EUR".parse().unwrap())));
        assert_eq!(level_of_prompt("XBT/EUR> ", None), Some(Level::Trade("XBT/EUR".parse().unwrap())));
        assert_eq!(level_of_prompt("token: ", None), None);
    }
}
