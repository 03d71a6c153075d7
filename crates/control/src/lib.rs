//! # crypy-control
//!
//! Owns the controlflow: the line-oriented command language with its help, the telnet
//! server that gives every agent a terminal, and the REPL client of `crypy <exchange>`.
//!
//! Sessions (telnet, the local REPL, `--exec`) parse lines and send commands over a
//! [`link`]; the desk's [`console`] answers them between two inputs of the run.
//!
//! It must not change an agent's state behind the log's back: every accepted command
//! becomes a `CommandIssued` event before it takes effect, and what steers goes through the
//! agents as an input. It must never make the desk wait for a client.
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

/// The desk's side of the terminals: answering and carrying out commands between inputs.
/// The `chart` command's terminal charts.
pub mod chart;
pub mod console;
/// One line of text per event, for people.
pub mod describe;
/// The command language: words, quoting, levels, commands, help.
pub mod lang;
/// What passes between a terminal session and the desk.
pub mod link;
/// The terminal REPLs: local, --exec lines, attach.
pub mod repl;
/// The telnet control server.
pub mod server;
