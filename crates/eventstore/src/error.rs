use std::path::PathBuf;

use thiserror::Error;

/// The log's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with the log. Every variant is fail-stop for the operation that met it:
/// nothing is half-appended, and a reader that meets a bad record stops there rather than
/// skipping it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process (or another handle in this one) has the log open for writing.
    #[error("log at {} is locked by pid {}", dir.display(), pid.map_or_else(|| "unknown".to_string(), |p| p.to_string()))]
    Locked { dir: PathBuf, pid: Option<u32> },
    /// There is no log in this data dir (reading never creates one).
    #[error("no crypy log in {}", dir.display())]
    NoLog { dir: PathBuf },
    /// The writer serving this log to other processes reported a problem.
    #[error("the process writing the log reports: {0}")]
    Remote(String),
    /// The log, or one record in it, was written in another format version than this crypy's.
    #[error("log format version {found}, but this crypy reads version {supported}: {}", format_advice(*.found, *.supported))]
    UnsupportedFormat { found: u16, supported: u16 },
    /// A record fails its checks: bad checksum, wrong header, undecodable event, a gap.
    #[error("corrupt log at seq {seq}: {reason}")]
    Corrupt { seq: u64, reason: String },
    /// An event could not be encoded (never expected for well-formed events).
    #[error("cannot encode event: {0}")]
    Encode(String),
    /// sled failed (I/O underneath, or its own corruption report). The message includes
    /// sled's, so it is not also chained as a source (which would print it twice).
    #[error("storage error: {0}")]
    Storage(sled::Error),
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    /// A candle file could not be imported; nothing of it was appended.
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
    /// Parquet export failed.
    #[error("parquet export: {0}")]
    Parquet(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io { path: path.into(), error }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Storage(e)
    }
}

fn format_advice(found: u16, supported: u16) -> &'static str {
    if found > supported {
        "upgrade crypy to read it"
    } else {
        "it was written before a format change; import its market data into a new data dir"
    }
}
