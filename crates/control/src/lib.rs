//! # crypy-control
//!
//! Owns the controlflow: the line-oriented command language with its help, the telnet
//! server that gives every agent a terminal, and the REPL client of `crypy <exchange>`.
//!
//! It must not change an agent's state behind the log's back: every accepted command
//! becomes a `CommandIssued` event before it takes effect.
//!
//! Nothing is implemented here yet: the controlflow arrives with its own issue.
#![forbid(unsafe_code)]
