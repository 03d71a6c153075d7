//! # crypy-eventstore
//!
//! Owns the append-only event log of a data dir: every input and decision of a crypy run,
//! in order, checksummed, on [sled]. It also owns moving data in and out of the log: candle
//! files in ([`import`], [`ingest`]), Parquet out ([`export`]).
//!
//! - [`EventLog::open`] takes the data dir's writer lock (a second writer gets
//!   [`Error::Locked`] naming the pid that has it).
//! - [`EventLog::append`] gives a batch contiguous seqs and stores it atomically; the
//!   [`Durability`] policy says when it is on disk. Under the default one a batch is made
//!   durable by one write and one `fdatasync` of a write-ahead file (`log.wal.0`/`.1` in the
//!   data dir), whose records go back into sled when a log opens after a crash; sled itself is
//!   flushed in the background.
//! - [`EventLog::iter_from`], [`EventLog::read_range`] read; [`EventLog::tail`] follows
//!   new appends asynchronously.
//! - [`EventLog::verify`] finds the first missing, out-of-order or corrupt record.
//! - [`LogReader`] reads a log from another process: through the live writer, which serves
//!   its records on a Unix socket, or directly when no writer runs.
//!
//! Events are stored in chunks, one sled value per appended batch (see [`codec`] for the
//! record layout): each record carries a format version and a CRC-32, checked on every read.
//! A log or record written in another format version is refused, never misread.
//!
//! It must not interpret events beyond what storage needs (kinds and pairs for filtering):
//! no agent logic, no exchange access.
//!
//! ```no_run
//! use crypy_eventstore::{EventLog, Options};
//! let log = EventLog::open("crypy-data", Options::default())?;
//! for event in log.iter_from(1) {
//!     println!("{}", event?.to_json_line());
//! }
//! # Ok::<(), crypy_eventstore::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

/// `crypy bench log`.
pub mod bench;
mod candle_codec;
/// The on-disk record layout.
pub mod codec;
mod error;
mod event_encode;
/// Events to Parquet.
pub mod export;
/// Candle files (CSV, Kraken OHLCVT, BitMEX JSON) to candles.
pub mod import;
/// Imported candles into the log, all or nothing.
pub mod ingest;
mod lock;
mod log;
/// Reading a log another process writes, and [`LogReader`], which reads either way.
pub mod remote;
mod wal;

pub use error::{Error, Result};
pub use log::{Durability, EventLog, Iter, Options, Problem, SeqRange, Tail, VerifyReport};
pub use remote::LogReader;
