//! Reading a log that another process is writing.
//!
//! sled cannot share a database between processes, so the writer serves its records to
//! readers in other processes on a Unix socket, `log.sock` in the data dir (mode 0600). The
//! writer only forwards the stored bytes; the reader checks every record's checksum and
//! decodes it, exactly as it would reading the file itself.
//!
//! Protocol: the client sends one line, then the server answers and closes.
//!
//! ```text
//! INFO\n                      -> last_seq: u64 LE, last_run: u32 LE
//! READ <from> once\n          -> frames until the appended end, then END
//! READ <from> follow\n        -> frames forever, as records are appended
//! frame: 1u8, key_seq: u64 LE, len: u32 LE, record bytes
//!        2u8 (END) | 3u8 (heartbeat, ignore) | 4u8, len: u32 LE, UTF-8 error message
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::{Duration, Instant};

use crypy_core::Envelope;

use crate::codec::{self, RecordEvents};
use crate::log::Inner;
use crate::{Error, EventLog, Result, VerifyReport};

const SOCKET: &str = "log.sock";
const FRAME_RECORD: u8 = 1;
const FRAME_END: u8 = 2;
const FRAME_HEARTBEAT: u8 = 3;
const FRAME_ERROR: u8 = 4;
/// How often an idle follower is pinged, which is also how soon a vanished one is noticed.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// Records sent per round (at most 64 KiB each).
const RECORDS_PER_ROUND: usize = 64;

pub(crate) fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET)
}

/// Starts serving the log's records to other processes. Failing to bind (a path too long
/// for a Unix socket, say) is not an error for the writer: readers then get `Locked`.
pub(crate) fn serve(dir: &Path, log: Weak<Inner>) {
    let path = socket_path(dir);
    // We hold the data dir's lock, so a socket file left here belongs to a dead writer.
    let _ = std::fs::remove_file(&path);
    let Ok(listener) = UnixListener::bind(&path) else { return };
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let spawned = std::thread::Builder::new().name("crypy-log-serve".into()).spawn(move || loop {
        if log.strong_count() == 0 {
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let log = log.clone();
                let _ = std::thread::Builder::new().name("crypy-log-reader".into()).spawn(move || {
                    let _ = handle(stream, log);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    });
    if spawned.is_err() {
        let _ = std::fs::remove_file(&path);
    }
}

fn handle(stream: UnixStream, weak: Weak<Inner>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(128)).read_line(&mut line)?;
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, &stream);
    let words: Vec<&str> = line.split_whitespace().collect();
    let fail = |out: &mut std::io::BufWriter<&UnixStream>, msg: String| -> std::io::Result<()> {
        out.write_all(&[FRAME_ERROR])?;
        out.write_all(&(msg.len() as u32).to_le_bytes())?;
        out.write_all(msg.as_bytes())?;
        out.flush()
    };
    match words.as_slice() {
        ["INFO"] => {
            let Some(log) = upgrade(&weak) else { return Ok(()) };
            let run = log.last_run().unwrap_or(0);
            out.write_all(&log.last_seq().to_le_bytes())?;
            out.write_all(&run.to_le_bytes())?;
            out.flush()
        }
        ["READ", from, mode @ ("once" | "follow")] => {
            let Ok(mut next) = from.parse::<u64>() else { return fail(&mut out, format!("bad seq {from:?}")) };
            next = next.max(1);
            let follow = *mode == "follow";
            // A one-off read ends at what was appended when it was asked for.
            let Some(end) = upgrade(&weak).map(|log| log.last_seq()) else { return Ok(()) };
            let mut last_write = Instant::now();
            loop {
                // A bounded batch at a time: the log is held only while reading it, and a
                // reader of a huge log never makes the writer buffer it all.
                let Some(log) = upgrade(&weak) else { return Ok(()) };
                let mut records = Vec::with_capacity(RECORDS_PER_ROUND);
                let mut failure = None;
                for item in log.records_from(next).take(RECORDS_PER_ROUND) {
                    match item {
                        Ok(r) => records.push(r),
                        Err(e) => {
                            failure = Some(e.to_string());
                            break;
                        }
                    }
                }
                drop(log);
                let caught_up = records.len() < RECORDS_PER_ROUND;
                for (key_seq, bytes) in &records {
                    out.write_all(&[FRAME_RECORD])?;
                    out.write_all(&key_seq.to_le_bytes())?;
                    out.write_all(&(bytes.len() as u32).to_le_bytes())?;
                    out.write_all(bytes)?;
                    // A damaged header cannot say where the next record starts: the reader
                    // will report the damage, so stop here.
                    match codec::peek_count(bytes) {
                        Some(n) if n > 0 => next = next.max(key_seq + u64::from(n)),
                        _ => return out.flush(),
                    }
                }
                if let Some(msg) = failure {
                    return fail(&mut out, msg);
                }
                if !records.is_empty() {
                    out.flush()?;
                    last_write = Instant::now();
                }
                if !follow && (next > end || caught_up) {
                    out.write_all(&[FRAME_END])?;
                    return out.flush();
                }
                if !caught_up {
                    continue;
                }
                if last_write.elapsed() >= HEARTBEAT {
                    out.write_all(&[FRAME_HEARTBEAT])?;
                    out.flush()?;
                    last_write = Instant::now();
                }
                // Hold the log only briefly, so that closing it is never delayed for long.
                let Some(log) = upgrade(&weak) else { return Ok(()) };
                log.wait_for(next, Duration::from_millis(20));
            }
        }
        _ => fail(&mut out, format!("unknown request {:?}", line.trim())),
    }
}

fn upgrade(log: &Weak<Inner>) -> Option<EventLog> {
    log.upgrade().map(EventLog::from_inner)
}

/// A log served by a live writer in another process.
#[derive(Debug, Clone)]
pub struct RemoteLog {
    socket: PathBuf,
}

impl RemoteLog {
    /// `Some` when a writer is serving the log in `dir` right now.
    pub fn connect(dir: &Path) -> Option<RemoteLog> {
        let socket = socket_path(dir);
        let remote = RemoteLog { socket };
        remote.info().ok().map(|_| remote)
    }

    fn request(&self, line: &str) -> Result<UnixStream> {
        let io = |e| Error::io(&self.socket, e);
        let mut stream = UnixStream::connect(&self.socket).map_err(io)?;
        stream.write_all(line.as_bytes()).map_err(io)?;
        Ok(stream)
    }

    /// The writer's last appended seq and last run.
    pub fn info(&self) -> Result<(u64, u32)> {
        let mut stream = self.request("INFO\n")?;
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).map_err(|e| Error::io(&self.socket, e))?;
        Ok((u64::from_le_bytes(buf[..8].try_into().unwrap()), u32::from_le_bytes(buf[8..].try_into().unwrap())))
    }

    /// The raw records from the one holding `from`; with `follow`, forever, as the writer
    /// appends (the iteration ends when the writer goes away).
    pub fn records(&self, from: u64, follow: bool) -> Result<RemoteRecords> {
        let mode = if follow { "follow" } else { "once" };
        let stream = self.request(&format!("READ {from} {mode}\n"))?;
        Ok(RemoteRecords {
            input: BufReader::with_capacity(256 * 1024, stream),
            socket: self.socket.clone(),
            follow,
            done: false,
        })
    }
}

/// Raw records streamed from a writer; see [`RemoteLog::records`].
#[derive(Debug)]
pub struct RemoteRecords {
    input: BufReader<UnixStream>,
    socket: PathBuf,
    follow: bool,
    done: bool,
}

impl RemoteRecords {
    fn frame(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        let io = |e| Error::io(&self.socket, e);
        loop {
            let mut tag = [0u8; 1];
            self.input.read_exact(&mut tag).map_err(io)?;
            match tag[0] {
                FRAME_RECORD => {
                    let mut head = [0u8; 12];
                    self.input.read_exact(&mut head).map_err(io)?;
                    let key_seq = u64::from_le_bytes(head[..8].try_into().unwrap());
                    let len = u32::from_le_bytes(head[8..].try_into().unwrap()) as usize;
                    let mut bytes = vec![0u8; len];
                    self.input.read_exact(&mut bytes).map_err(io)?;
                    return Ok(Some((key_seq, bytes)));
                }
                FRAME_END => return Ok(None),
                FRAME_HEARTBEAT => continue,
                FRAME_ERROR => {
                    let mut len = [0u8; 4];
                    self.input.read_exact(&mut len).map_err(io)?;
                    let mut msg = vec![0u8; u32::from_le_bytes(len) as usize];
                    self.input.read_exact(&mut msg).map_err(io)?;
                    return Err(Error::Remote(String::from_utf8_lossy(&msg).into_owned()));
                }
                other => return Err(Error::Remote(format!("unexpected frame {other} from the writer"))),
            }
        }
    }
}

impl Iterator for RemoteRecords {
    type Item = Result<(u64, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut item = self.frame().transpose();
        // A follower's writer went away (closed, reset, or cut a frame short as its process
        // exited): the stream simply ends. Records are length-prefixed and checksummed, so a
        // cut never yields a bad event; the caller resumes from the next seq elsewhere.
        if self.follow && matches!(item, Some(Err(Error::Io { .. }))) {
            item = None;
        }
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

/// Events, checked and decoded, however the log is reached.
pub type Events = Box<dyn Iterator<Item = Result<Envelope>> + Send>;

/// A log opened for reading: through the live writer when there is one, directly otherwise.
#[derive(Debug)]
pub enum LogReader {
    /// No writer was running: this process holds the log (and its lock) while it reads.
    Local(EventLog),
    /// A writer in another process serves the log.
    Remote(RemoteLog),
}

impl LogReader {
    /// Opens the log in `dir` for reading without ever creating one.
    ///
    /// # Errors
    /// [`Error::NoLog`] when `dir` holds no log; [`Error::Locked`] when another process
    /// writes it but does not serve readers.
    pub fn open(dir: &Path) -> Result<LogReader> {
        if !dir.join("log").is_dir() {
            return Err(Error::NoLog { dir: dir.to_path_buf() });
        }
        if let Some(remote) = RemoteLog::connect(dir) {
            return Ok(LogReader::Remote(remote));
        }
        match EventLog::open(dir, crate::Options::default()) {
            Ok(log) => Ok(LogReader::Local(log)),
            // The writer may have started between our two attempts.
            Err(Error::Locked { .. }) if RemoteLog::connect(dir).is_some() => {
                Ok(LogReader::Remote(RemoteLog::connect(dir).expect("checked")))
            }
            Err(e) => Err(e),
        }
    }

    /// Every event from `from` on, up to the end at the time of the call.
    pub fn iter_from(&self, from: u64) -> Result<Events> {
        Ok(match self {
            LogReader::Local(log) => Box::new(log.iter_from(from)),
            LogReader::Remote(remote) => Box::new(RecordEvents::new(remote.records(from, false)?, from)),
        })
    }

    /// As [`LogReader::iter_from`], for a reader done with this handle; a local log is read
    /// with bounded memory however long it is (see [`EventLog::into_iter_from`]).
    pub fn into_iter_from(self, from: u64) -> Result<Events> {
        match self {
            LogReader::Local(log) => log.into_iter_from(from),
            LogReader::Remote(remote) => Ok(Box::new(RecordEvents::new(remote.records(from, false)?, from))),
        }
    }

    /// Every event from `from` on, then new ones as a live writer appends them. The
    /// iteration ends when the writer goes away; a local reader ends at the end of the log.
    pub fn follow(&self, from: u64) -> Result<Events> {
        Ok(match self {
            LogReader::Local(log) => Box::new(log.iter_from(from)),
            LogReader::Remote(remote) => Box::new(RecordEvents::new(remote.records(from, true)?, from)),
        })
    }

    pub fn last_seq(&self) -> Result<u64> {
        match self {
            LogReader::Local(log) => Ok(log.last_seq()),
            LogReader::Remote(remote) => Ok(remote.info()?.0),
        }
    }

    pub fn verify(&self) -> Result<VerifyReport> {
        match self {
            LogReader::Local(log) => log.verify(),
            LogReader::Remote(remote) => codec::verify_records(remote.records(1, false)?),
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, LogReader::Remote(_))
    }
}

/// Bytes the log's files occupy in `dir`.
pub fn size_on_disk(dir: &Path) -> u64 {
    fn walk(path: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(path) else { return 0 };
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path()),
                Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => 0,
            })
            .sum()
    }
    walk(&dir.join("log"))
}
