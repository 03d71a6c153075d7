//! What passes between a terminal session and the desk it steers.
//!
//! A session (telnet, the local REPL, `--exec`) parses each line itself — `help`, `back` and
//! `quit` and every parse error never reach the desk — and sends the desk a [`Request`]
//! over the [`DeskLink`]. The desk answers between two of its inputs with a [`Reply`]: the
//! text to show and the level the session is at afterwards (the desk decides whether
//! `invest EUR` or `trade XBT/EUR` leads anywhere). A session waits for the reply to one
//! request before it reads its next line, so no client can queue more than one command.
//!
//! What a session watches arrives through its [`Outbox`]: a bounded queue the desk fills
//! without ever waiting — lines that do not fit are counted and dropped, so a slow or stuck
//! client can never slow the desk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::lang::{Command, Level};

/// Where sessions send their commands; the desk polls the other end between inputs.
pub type DeskLink = std::sync::mpsc::Sender<Request>;

/// The desk's end of the link.
pub type DeskInbox = std::sync::mpsc::Receiver<Request>;

/// A new link: sessions clone the sender, the desk keeps the receiver.
pub fn link() -> (DeskLink, DeskInbox) {
    std::sync::mpsc::channel()
}

/// One parsed command from one session.
#[derive(Debug)]
pub struct Request {
    /// Who is asking, for the log: `telnet 127.0.0.1:53122`, `local`, `exec`.
    pub session: String,
    /// The level the session is at.
    pub level: Level,
    pub command: Command,
    /// Where the answer goes; a session that went away leaves it closed, which is fine.
    pub reply: tokio::sync::oneshot::Sender<Reply>,
    /// Where watched events go, for `watch`.
    pub outbox: Outbox,
}

/// The desk's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// What to show, possibly several lines, without a trailing newline.
    pub text: String,
    /// The session's level after the command.
    pub level: Level,
}

/// A session's bounded queue of watched lines; see the module doc.
#[derive(Debug, Clone)]
pub struct Outbox {
    sender: tokio::sync::mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
}

impl Outbox {
    /// A queue holding at most `capacity` lines, and its receiving end.
    pub fn new(capacity: usize) -> (Outbox, tokio::sync::mpsc::Receiver<String>) {
        let (sender, receiver) = tokio::sync::mpsc::channel(capacity.max(1));
        (Outbox { sender, dropped: Arc::new(AtomicU64::new(0)) }, receiver)
    }

    /// Queues a line without waiting; when the queue is full, counts it as dropped instead
    /// (the next line that fits says how many were lost). False once the session is gone.
    pub fn send(&self, line: String) -> bool {
        let dropped = self.dropped.load(Ordering::Relaxed);
        let line = if dropped > 0 {
            format!("… {dropped} watched line{} dropped (the client reads too slowly)\n{line}", plural(dropped))
        } else {
            line
        };
        match self.sender.try_send(line) {
            Ok(()) => {
                if dropped > 0 {
                    self.dropped.fetch_sub(dropped, Ordering::Relaxed);
                }
                true
            }
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Whether the session has gone away.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Whether two outboxes belong to the same session.
    pub fn same_session(&self, other: &Outbox) -> bool {
        self.sender.same_channel(&other.sender)
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The prompt of a session at `level` of the desk named `desk` (`sim:main`).
pub fn prompt(desk: &str, level: &Level) -> String {
    match level {
        Level::Desk => format!("{desk}> "),
        other => format!("{other}> "),
    }
}

/// The level `back` leads to, or `None` at the desk.
pub fn up(level: &Level) -> Option<Level> {
    match level {
        Level::Desk => None,
        Level::Invest(_) => Some(Level::Desk),
        Level::Trade(pair) => Some(Level::Invest(pair.quote)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_outbox_drops_and_then_says_how_many() {
        let (outbox, mut rx) = Outbox::new(2);
        for i in 0..5 {
            assert!(outbox.send(format!("line {i}")));
        }
        assert_eq!(rx.try_recv().unwrap(), "line 0");
        assert_eq!(rx.try_recv().unwrap(), "line 1");
        assert!(rx.try_recv().is_err());
        assert!(outbox.send("line 5".into()));
        assert_eq!(rx.try_recv().unwrap(), "… 3 watched lines dropped (the client reads too slowly)\nline 5");
        assert!(outbox.send("line 6".into()));
        assert_eq!(rx.try_recv().unwrap(), "line 6");
        drop(rx);
        assert!(!outbox.send("gone".into()));
        assert!(outbox.is_closed());
    }

    #[test]
    fn prompts_and_levels_above() {
        let pair: crypy_core::Pair = "XBT/EUR".parse().unwrap();
        assert_eq!(prompt("sim:main", &Level::Desk), "sim:main> ");
        assert_eq!(prompt("sim:main", &Level::Trade(pair)), "XBT/EUR> ");
        assert_eq!(up(&Level::Trade(pair)), Some(Level::Invest(pair.quote)));
        assert_eq!(up(&Level::Invest(pair.quote)), Some(Level::Desk));
        assert_eq!(up(&Level::Desk), None);
    }
}
