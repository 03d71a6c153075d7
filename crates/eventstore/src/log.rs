//! The event log: single writer, many readers, append-only.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crypy_core::{Envelope, NewEvent};
use tokio::sync::watch;

use crate::codec::{self, ChunkWriter, RecordEvents, FORMAT_VERSION};
use crate::lock::DirLock;
use crate::wal::{self, Wal};
use crate::{Error, Result};

/// sled writes any page larger than a quarter of a segment to a blob file of its own, and
/// never fsyncs blob files. A leaf page holds up to 16 records, so segments are sized for 16
/// records of up to about `CHUNK_BYTES` to stay inline, where our fsync covers them. The
/// segment size is fixed when a log is created: sled refuses to reopen with another.
const SEGMENT_BYTES: usize = 8 << 20;
/// Larger batches are split into several records, still applied atomically. A record ends
/// at the first event that takes it past this size, so the 2x slack below absorbs ordinary
/// events; only a single event of many KiB could still reach a blob.
const CHUNK_BYTES: usize = 64 * 1024;
const _: () = assert!(2 * 16 * CHUNK_BYTES <= SEGMENT_BYTES / 4);

/// When appended events become durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// [`EventLog::append`] returns only after its batch is on disk (fsync). A crash of the
    /// process or the machine loses nothing that was acknowledged.
    EveryBatch,
    /// The log is flushed in the background every this many milliseconds. A crash may lose
    /// the events appended in the last interval (plus the flush in flight), never more; what
    /// survives is always a prefix of what was appended, so seqs stay contiguous.
    Interval(u64),
}

/// How to open a log.
#[derive(Clone, Debug)]
pub struct Options {
    pub durability: Durability,
    /// Serve the log's records to readers in other processes on `log.sock` in the data dir
    /// (see [`crate::remote`]); sled cannot share the database itself.
    pub serve_readers: bool,
    /// How long to wait for the data dir's lock before [`Error::Locked`]. Readers with no
    /// live writer hold it only for the moment of a read, so a writer may want to wait a
    /// little rather than fail because of one.
    pub lock_wait: Duration,
    /// Fault injection: appends after this many fail with an I/O error, as on a full disk,
    /// so that tests can show what a desk does when its log fails. `None` in real use.
    pub fail_after_appends: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::EveryBatch,
            serve_readers: true,
            lock_wait: Duration::ZERO,
            fail_after_appends: None,
        }
    }
}

/// Seqs given to one append: `first..=last`, or empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqRange {
    pub first: u64,
    pub last: u64,
}

impl SeqRange {
    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }
    pub fn len(&self) -> u64 {
        if self.is_empty() {
            0
        } else {
            self.last - self.first + 1
        }
    }
}

/// The append-only event log of one data dir.
///
/// One process at a time may open it (see [`Error::Locked`]); inside that process the
/// handle is cheap to clone and any number of threads may read and [`tail`](Self::tail)
/// while one appends. Appends from several threads are serialized.
#[derive(Clone, Debug)]
pub struct EventLog {
    inner: Arc<Inner>,
    /// Shared by the handles callers hold, and only by them (the background flush and a
    /// remote reader's round hold the log for a moment, without one): how many are open.
    handles: Option<Arc<()>>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    dir: PathBuf,
    db: sled::Db,
    /// sled's data file, for the fsync sled itself does not do.
    db_file: std::fs::File,
    chunks: sled::Tree,
    meta: sled::Tree,
    writer: Mutex<Writer>,
    /// Set when the last records are damaged: readers report it when they reach it, and
    /// appends are refused, so that nothing is ever written on top of corruption.
    damaged: Option<Problem>,
    /// The last appended seq, for tails to wake on (not sled's `watch_prefix`, whose
    /// bounded channel would let a slow reader block the writer).
    appended: watch::Sender<u64>,
    /// See [`Options::fail_after_appends`].
    appends_left: Option<AtomicU64>,
    // Dropped after sled: sled must be closed before another handle may open the dir. `None`
    // once a reader has taken it over (see `into_iter_from`).
    lock: Mutex<Option<DirLock>>,
    // Dropped last, once the dir is free: see `EventLog::close`.
    closed: ClosedSignal,
}

/// Tells whoever waits in [`EventLog::close`] that the log is closed.
#[derive(Debug, Default)]
struct ClosedSignal(Mutex<Option<std::sync::mpsc::Sender<()>>>);

impl Drop for ClosedSignal {
    fn drop(&mut self) {
        if let Some(closed) = self.0.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = closed.send(());
        }
    }
}

#[derive(Debug)]
struct Writer {
    next_seq: u64,
    chunk: ChunkWriter,
    /// Under `EveryBatch`, where appends are made durable (see [`crate::wal`]).
    wal: Option<Wal>,
}

/// How often, under `EveryBatch`, sled is flushed and a write-ahead file recycled. Left to
/// itself sled writes a whole 8 MiB buffer when one fills, in the appending thread, and the
/// appends behind it wait milliseconds; flushed this often its writes stay small (measured
/// on `bench latency`: p99.9 3-7.5 ms at 200 ms or never, 1.3-2.2 ms at 50 ms).
const RETIRE_WAL_MS: u64 = 50;

const META_FORMAT: &[u8] = b"format_version";
const META_LAST_RUN: &[u8] = b"last_run";

impl EventLog {
    /// Opens (creating if needed) the log in `dir` for reading and writing.
    ///
    /// A log whose last records are damaged still opens, so that it can be read and
    /// verified, but refuses appends.
    ///
    /// # Errors
    /// [`Error::Locked`] when another handle has it open, [`Error::UnsupportedFormat`] when
    /// a newer crypy wrote it.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock = DirLock::acquire(&dir, options.lock_wait)?;
        // sled's own periodic flush only calls sync_file_range; ours also fsyncs (below).
        let db = open_sled(&dir)?;
        let db_path = dir.join("log").join("db");
        let db_file = std::fs::File::open(&db_path).map_err(|e| Error::io(&db_path, e))?;
        let chunks = db.open_tree("chunks")?;
        let meta = db.open_tree("meta")?;
        match meta.get(META_FORMAT)? {
            Some(v) => {
                let found = u16::from_le_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| Error::Corrupt { seq: 0, reason: "bad format version in log metadata".into() })?,
                );
                if found != FORMAT_VERSION {
                    return Err(Error::UnsupportedFormat { found, supported: FORMAT_VERSION });
                }
            }
            None => {
                meta.insert(META_FORMAT, &FORMAT_VERSION.to_le_bytes())?;
                sync_sled(&db, &db_file, &dir)?;
            }
        }
        // What a crash took from sled's memory, back from the write-ahead files; once sled
        // holds it durably, the files are emptied.
        let (mut wal, found) = Wal::open(&dir)?;
        if recover(&chunks, found)? > 0 {
            sync_sled(&db, &db_file, &dir)?;
        }
        wal.clear_all()?;
        let wal = match options.durability {
            Durability::EveryBatch => {
                wal.size_ahead()?;
                Some(wal)
            }
            Durability::Interval(_) => None,
        };
        let (last_seq, damaged) = find_tail(&chunks)?;
        let (appended, _) = watch::channel(last_seq);
        let log = EventLog {
            inner: Arc::new(Inner {
                dir,
                db,
                db_file,
                chunks,
                meta,
                damaged,
                writer: Mutex::new(Writer { next_seq: last_seq + 1, chunk: ChunkWriter::default(), wal }),
                appended,
                appends_left: options.fail_after_appends.map(AtomicU64::new),
                lock: Mutex::new(Some(lock)),
                closed: ClosedSignal::default(),
            }),
            handles: Some(Arc::new(())),
        };
        if options.serve_readers {
            crate::remote::serve(&log.inner.dir, Arc::downgrade(&log.inner));
        }
        let period = match options.durability {
            Durability::Interval(ms) => ms,
            Durability::EveryBatch => RETIRE_WAL_MS,
        };
        let weak = Arc::downgrade(&log.inner);
        std::thread::Builder::new()
            .name("crypy-log-flush".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(period.max(1)));
                // Holds the log only while flushing, so dropping it is never delayed long.
                let Some(inner) = weak.upgrade() else { return };
                let _ = inner.flush_in_background();
            })
            .map_err(|e| Error::io(&log.inner.dir, e))?;
        Ok(log)
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        EventLog { inner, handles: None }
    }

    /// Closes this handle and, when it is the last one, returns once the log is closed:
    /// durable, its socket gone, sled closed and the data dir's lock released. Dropping the
    /// last handle closes the log too, but a background flush or a remote reader's round in
    /// progress then holds it a moment longer, and whoever opens the dir in that moment
    /// finds it still open (and read through a socket that closes under it). A caller that
    /// opens the dir next (a learning job reads each run's log as soon as the run ends)
    /// closes it with this. Waits at most ten seconds.
    pub fn close(self) {
        if self.handles.as_ref().is_none_or(|h| Arc::strong_count(h) > 1) {
            return;
        }
        let (closed, wait) = std::sync::mpsc::channel();
        *self.inner.closed.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(closed);
        drop(self);
        let _ = wait.recv_timeout(Duration::from_secs(10));
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The last appended seq (0 when empty).
    pub fn last_seq(&self) -> u64 {
        *self.inner.appended.borrow()
    }

    /// Appends `events` with contiguous seqs, atomically: after a crash either all of them
    /// are in the log or none. With [`Durability::EveryBatch`] they are on disk on return.
    ///
    /// # Errors
    /// On any error nothing was appended and the next append reuses the same seqs.
    pub fn append(&self, events: &[NewEvent]) -> Result<SeqRange> {
        let inner = &*self.inner;
        if let Some(p) = &inner.damaged {
            return Err(Error::Corrupt {
                seq: p.seq,
                reason: format!("{}; the log refuses appends until it is repaired (see `crypy log verify`)", p.reason),
            });
        }
        let mut w = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        let first = w.next_seq;
        if events.is_empty() {
            return Ok(SeqRange { first, last: first - 1 });
        }
        if let Some(left) = &inner.appends_left {
            if left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_err() {
                return Err(Error::Io {
                    path: inner.dir.clone(),
                    error: std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left on device (injected)"),
                });
            }
        }
        let mut batch = sled::Batch::default();
        let mut chunk_first = first;
        let Writer { chunk, wal, .. } = &mut *w;
        let written = (|| -> Result<()> {
            chunk.start(chunk_first);
            if let Some(wal) = wal.as_mut() {
                wal.start();
            }
            // A one-record append is a plain insert, atomic by itself. Several records go in
            // a sled batch, whose manifest keeps them atomic in sled's own recovery: the
            // background flush may make sled durable in the middle of an append, and a crash
            // then must not leave part of it. A batch costs more (sled writes and syncs its
            // buffers before and after the manifest); appends under 64 KiB are one record.
            let mut single: Option<(u64, sled::IVec)> = None;
            for (i, event) in events.iter().enumerate() {
                chunk.push(event)?;
                let is_last = i + 1 == events.len();
                if chunk.len_bytes() >= CHUNK_BYTES || is_last {
                    let n = u64::from(chunk.count());
                    let record = chunk.finish();
                    if let Some(wal) = wal.as_mut() {
                        wal.push(record);
                    }
                    if chunk_first == first && is_last {
                        single = Some((chunk_first, sled::IVec::from(record)));
                    } else {
                        batch.insert(&codec::key(chunk_first), record);
                    }
                    chunk_first += n;
                    if !is_last {
                        chunk.start(chunk_first);
                    }
                }
            }
            match single {
                Some((seq, record)) => {
                    inner.chunks.insert(codec::key(seq), record)?;
                }
                None => inner.chunks.apply_batch(std::mem::take(&mut batch))?,
            }
            // Under `EveryBatch` the log always has its write-ahead files (see `open`).
            wal.as_mut().map_or(Ok(()), Wal::commit)
        })();
        if let Err(e) = written {
            // Whatever of the batch sled holds goes, so that the next append's records (on
            // the same seqs, perhaps cut otherwise) never overlap it.
            for key in inner.chunks.range(codec::key(first)..).keys().flatten() {
                let _ = inner.chunks.remove(key);
            }
            return Err(e);
        }
        let last = chunk_first - 1;
        w.next_seq = chunk_first;
        drop(w);
        inner.appended.send_replace(last);
        Ok(SeqRange { first, last })
    }

    /// Makes everything appended so far durable (nothing left to do under `EveryBatch`).
    pub fn flush(&self) -> Result<()> {
        self.inner.make_durable()
    }

    /// Starts a new desk lifetime: returns its run number (1, 2, …), durably recorded.
    pub fn start_run(&self) -> Result<u32> {
        let inner = &*self.inner;
        let _w = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        let run = self.last_run()? + 1;
        inner.meta.insert(META_LAST_RUN, &run.to_le_bytes())?;
        inner.make_durable()?;
        Ok(run)
    }

    /// The last run started in this data dir (0 if none).
    pub fn last_run(&self) -> Result<u32> {
        Ok(match self.inner.meta.get(META_LAST_RUN)? {
            Some(v) => u32::from_le_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| Error::Corrupt { seq: 0, reason: "bad run counter in log metadata".into() })?,
            ),
            None => 0,
        })
    }

    /// Events with seq in `from..=to`, in order.
    pub fn read_range(&self, from: u64, to: u64) -> Result<Vec<Envelope>> {
        let mut out = Vec::new();
        for e in self.iter_from(from) {
            let e = e?;
            if e.seq > to {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    /// Every event from `from` on, in seq order, up to the last one appended when the
    /// iteration starts. A damaged record yields an error and ends the iteration: nothing is
    /// skipped silently.
    pub fn iter_from(&self, from: u64) -> Iter {
        Iter(RecordEvents::new(self.records_from(from), from))
    }

    /// Like [`EventLog::iter_from`], for a reader done with this handle: when it is the only
    /// one, the log is read in windows of records, sled closed and reopened between them,
    /// because sled 0.34 keeps every page a scan reads in memory whatever its cache size and
    /// only closing it lets them go (scanning a 10-million-event log: 900 MB → 59 MB).
    ///
    /// # Errors
    /// [`Error::Locked`] when another process took the data dir in the moment it was free.
    ///
    /// The first window reads through this handle's own sled session, and the data dir's
    /// lock passes to the reader: opening sled replays its log since the last snapshot,
    /// about a tenth of a whole replay's reading.
    pub fn into_iter_from(self, from: u64) -> Result<crate::remote::Events> {
        if Arc::strong_count(&self.inner) > 1 {
            return Ok(Box::new(self.iter_from(from)));
        }
        let lock = self.inner.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        let first = (self.records_from(from), self.inner.db.clone(), 0);
        let (dir, limit, damaged) = (self.inner.dir.clone(), self.last_seq(), self.inner.damaged.clone());
        // Flushes what is pending; sled stays open for `first`.
        drop(self);
        let lock = match lock {
            Some(lock) => lock,
            None => DirLock::acquire(&dir, Duration::from_secs(2))?,
        };
        let records =
            WindowedRecords { dir, _lock: lock, window: Some(first), from: from.max(1), limit, damaged, done: false };
        Ok(Box::new(RecordEvents::new(records, from)))
    }

    /// The raw records from the one holding `from` up to the appended watermark: what
    /// local reads decode and what the socket serves to readers in other processes.
    pub(crate) fn records_from(&self, from: u64) -> LocalRecords {
        LocalRecords {
            chunks: self.inner.chunks.clone(),
            from: from.max(1),
            limit: self.last_seq(),
            damaged: self.inner.damaged.clone(),
            iter: None,
            done: false,
        }
    }

    /// An async stream of every event from `from` on, waiting for new appends at the end.
    pub fn tail(&self, from: u64) -> Tail {
        Tail { log: self.clone(), appended: self.inner.appended.subscribe(), next: from.max(1), buf: VecDeque::new() }
    }

    /// Blocks until the log holds `seq` or `timeout` passes; returns the last seq. For
    /// threads that cannot await (timely workers).
    pub fn wait_for(&self, seq: u64, timeout: Duration) -> u64 {
        let deadline = std::time::Instant::now() + timeout;
        let mut rx = self.inner.appended.subscribe();
        loop {
            let last = *rx.borrow_and_update();
            if last >= seq {
                return last;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return last;
            }
            // watch has no blocking wait; poll with a short sleep, bounded by the deadline.
            std::thread::sleep((deadline - now).min(Duration::from_millis(1)));
        }
    }

    /// Checks every record: header, checksum, decodability, and that seqs run from 1
    /// without gap or overlap. Stops at the first problem.
    pub fn verify(&self) -> Result<VerifyReport> {
        codec::verify_records(self.inner.chunks.iter().map(|item| {
            let (k, v) = item?;
            Ok((codec::seq_of_key(&k)?, v))
        }))
    }

    /// Bytes the log occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.inner.db.size_on_disk()?)
    }

    /// Writes raw bytes as a record under `key_seq`. Exists so tests can plant damaged or
    /// foreign records and check that readers refuse them; never use it otherwise.
    #[doc(hidden)]
    pub fn put_raw_record_for_tests(&self, key_seq: u64, bytes: &[u8]) -> Result<()> {
        self.inner.chunks.insert(codec::key(key_seq), bytes)?;
        self.inner.make_durable()
    }

    /// The raw bytes of the record starting at `key_seq`, for the same tests.
    #[doc(hidden)]
    pub fn raw_record_for_tests(&self, key_seq: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.chunks.get(codec::key(key_seq))?.map(|v| v.to_vec()))
    }
}

/// sled's page cache budget, counted in on-disk bytes (its default is 1 GiB).
const CACHE_BYTES: u64 = 32 << 20;

/// Opens sled under the data dir's lock. sled takes a file lock of its own, which its I/O
/// threads may still hold for a moment after a previous handle in this process closed;
/// holding the data dir's lock, such a conflict can only be that remnant, so wait it out.
fn open_sled(dir: &Path) -> Result<sled::Db> {
    let config = sled::Config::new()
        .path(dir.join("log"))
        .mode(sled::Mode::HighThroughput)
        .segment_size(SEGMENT_BYTES)
        // Appends touch only the tail and scans read each record once: a small cache loses
        // nothing.
        .cache_capacity(CACHE_BYTES)
        .flush_every_ms(None);
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && started.elapsed() < Duration::from_secs(2) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return Ok(other?),
        }
    }
}

/// The last seq of the intact log, and what is wrong after it, if anything: walks back
/// from the last record to the newest one that checks out.
fn find_tail(chunks: &sled::Tree) -> Result<(u64, Option<Problem>)> {
    let mut damaged: Option<Problem> = None;
    let mut last_good = 0;
    for item in chunks.iter().rev() {
        let (k, v) = item?;
        let checked = codec::seq_of_key(&k).and_then(|key_seq| {
            let chunk = codec::open_chunk(key_seq, &v)?;
            chunk.decode_from(0, |_| ())?;
            Ok(chunk.last_seq())
        });
        match checked {
            Ok(last) => {
                last_good = last;
                break;
            }
            Err(e @ Error::UnsupportedFormat { .. }) => return Err(e),
            Err(Error::Corrupt { seq, reason }) => damaged = Some(Problem { seq, reason }),
            Err(e) => return Err(e),
        }
    }
    // Report the first seq a reader will miss, which may be before the damaged record.
    if let Some(p) = &mut damaged {
        if p.seq > last_good + 1 {
            p.reason = format!("seq {} is missing, then: {}", last_good + 1, p.reason);
            p.seq = last_good + 1;
        }
    }
    Ok((last_good, damaged))
}

/// sled's flush writes its buffers with `sync_file_range`, which neither flushes the
/// device's cache nor the file's metadata; `fdatasync` on its file (in the data dir `dir`)
/// does both.
fn sync_sled(db: &sled::Db, db_file: &std::fs::File, dir: &Path) -> Result<()> {
    db.flush()?;
    db_file.sync_data().map_err(|e| Error::io(dir.join("log").join("db"), e))
}

impl Inner {
    fn make_durable(&self) -> Result<()> {
        sync_sled(&self.db, &self.db_file, &self.dir)
    }

    /// The background flush: under `Interval`, makes the last interval durable; under
    /// `EveryBatch`, retires a write-ahead file (appends go on to the other one while sled
    /// is flushed), then recycles it.
    fn flush_in_background(&self) -> Result<()> {
        let retired = self.writer.lock().unwrap_or_else(|p| p.into_inner()).wal.as_mut().map(Wal::rotate);
        match retired {
            None => self.make_durable(),
            Some(None) => Ok(()),
            Some(Some(file)) => {
                self.make_durable()?;
                let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(wal) = w.wal.as_mut() {
                    wal.recycle(file);
                }
                Ok(())
            }
        }
    }
}

/// Puts into `chunks` each record found in the write-ahead files that it lacks; returns how
/// many. What sled lacks must follow its last record, seq after seq: files that do not (a
/// log made anew in the dir, files copied from another) are refused, never mixed in.
fn recover(chunks: &sled::Tree, found: Vec<wal::Found>) -> Result<usize> {
    let mut next = match chunks.last()? {
        Some((key, record)) => codec::seq_of_key(&key)? + codec::peek_count(&record).map_or(1, u64::from),
        None => 1,
    };
    let mut batch = sled::Batch::default();
    let mut recovered = 0;
    for (seq, record) in found {
        if chunks.contains_key(codec::key(seq))? {
            continue;
        }
        if seq != next {
            return Err(Error::Corrupt {
                seq,
                reason: format!(
                    "the write-ahead files ({}, {}) hold seq {seq}, which does not follow the log's last \
                     record (it ends at seq {}): they are not this log's, or its tail is damaged; move them \
                     aside to open the log without them",
                    wal::FILE_NAMES[0],
                    wal::FILE_NAMES[1],
                    next - 1
                ),
            });
        }
        next = seq + codec::peek_count(&record).map_or(1, u64::from);
        batch.insert(&codec::key(seq), record);
        recovered += 1;
    }
    if recovered > 0 {
        chunks.apply_batch(batch)?;
    }
    Ok(recovered)
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Under Durability::Interval the last interval may still be in memory: don't lose it
        // on an orderly close.
        if self.make_durable().is_ok() {
            if let Some(wal) = self.writer.get_mut().unwrap_or_else(|p| p.into_inner()).wal.as_mut() {
                let _ = wal.clear_all();
            }
        }
        let _ = std::fs::remove_file(crate::remote::socket_path(&self.dir));
    }
}

/// What [`EventLog::verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub events: u64,
    /// The last seq of the intact prefix.
    pub last_seq: u64,
    pub problem: Option<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// The first bad seq and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub seq: u64,
    pub reason: String,
}

/// See [`EventLog::iter_from`]. Decodes one event per step straight from the record's
/// bytes: nothing is buffered beyond the current record.
#[derive(Debug)]
pub struct Iter(RecordEvents<LocalRecords, sled::IVec>);

impl Iterator for Iter {
    type Item = Result<Envelope>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}

/// See [`EventLog::records_from`].
pub(crate) struct LocalRecords {
    chunks: sled::Tree,
    from: u64,
    /// Records past this seq may still be half-applied: readers stop here.
    limit: u64,
    /// Reported when the reader reaches the end of the intact log.
    damaged: Option<Problem>,
    iter: Option<sled::Iter>,
    done: bool,
}

impl std::fmt::Debug for LocalRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRecords").field("from", &self.from).field("limit", &self.limit).finish_non_exhaustive()
    }
}

impl LocalRecords {
    /// Positions on the record holding `from` (or the first after it).
    fn seek(&self) -> Result<sled::Iter> {
        let start = match self.chunks.range(..=codec::key(self.from)).next_back() {
            Some(item) => {
                let (k, v) = item?;
                let key_seq = codec::seq_of_key(&k)?;
                match codec::peek_count(&v) {
                    Some(n) if key_seq + u64::from(n) <= self.from => self.from,
                    _ => key_seq,
                }
            }
            None => self.from,
        };
        Ok(self.chunks.range(codec::key(start)..))
    }

    fn step(&mut self) -> Result<Option<(u64, sled::IVec)>> {
        if self.from > self.limit && self.damaged.is_none() {
            return Ok(None);
        }
        if self.iter.is_none() {
            self.iter = Some(self.seek()?);
        }
        let iter = self.iter.as_mut().expect("set above");
        if let Some(item) = iter.next() {
            let (k, v) = item?;
            let key_seq = codec::seq_of_key(&k)?;
            if key_seq <= self.limit {
                return Ok(Some((key_seq, v)));
            }
        }
        match self.damaged.take() {
            Some(p) => Err(Error::Corrupt { seq: p.seq, reason: p.reason }),
            None => Ok(None),
        }
    }
}

impl Iterator for LocalRecords {
    type Item = Result<(u64, sled::IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step().transpose();
        self.done = ends_reading(&item);
        item
    }
}

/// A record reader ends for good at its end or its first error.
fn ends_reading<T>(item: &Option<Result<T>>) -> bool {
    !matches!(item, Some(Ok(_)))
}

/// Records per sled session of [`WindowedRecords`] (records hold up to 64 KiB).
const WINDOW_RECORDS: usize = 512;

/// See [`EventLog::into_iter_from`].
struct WindowedRecords {
    dir: PathBuf,
    /// sled's session for the current window, and how many records it has given.
    window: Option<(LocalRecords, sled::Db, usize)>,
    from: u64,
    limit: u64,
    damaged: Option<Problem>,
    done: bool,
    // Dropped last, after sled.
    _lock: DirLock,
}

impl WindowedRecords {
    fn step(&mut self) -> Result<Option<(u64, sled::IVec)>> {
        if self.window.is_none() {
            let db = open_sled(&self.dir)?;
            let records = LocalRecords {
                chunks: db.open_tree("chunks")?,
                from: self.from,
                limit: self.limit,
                damaged: self.damaged.clone(),
                iter: None,
                done: false,
            };
            self.window = Some((records, db, 0));
        }
        let (records, _, read) = self.window.as_mut().expect("opened above");
        let Some((seq, bytes)) = records.step()? else { return Ok(None) };
        self.from = seq + codec::peek_count(&bytes).map_or(1, u64::from);
        *read += 1;
        if *read == WINDOW_RECORDS {
            self.window = None;
        }
        Ok(Some((seq, bytes)))
    }
}

impl Iterator for WindowedRecords {
    type Item = Result<(u64, sled::IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step().transpose();
        self.done = ends_reading(&item);
        item
    }
}

/// See [`EventLog::tail`].
#[derive(Debug)]
pub struct Tail {
    log: EventLog,
    appended: watch::Receiver<u64>,
    next: u64,
    buf: VecDeque<Envelope>,
}

impl Tail {
    /// The next event, waiting for it to be appended if needed.
    ///
    /// # Errors
    /// A damaged record, as for [`EventLog::iter_from`].
    pub async fn next(&mut self) -> Result<Envelope> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                self.next = e.seq + 1;
                return Ok(e);
            }
            let last = *self.appended.borrow_and_update();
            if last >= self.next {
                let mut it = self.log.iter_from(self.next);
                // Take what is there now, bounded so one call never loads a huge backlog.
                while self.buf.len() < 4096 {
                    match it.next() {
                        Some(e) => self.buf.push_back(e?),
                        None => break,
                    }
                }
                if !self.buf.is_empty() {
                    continue;
                }
            }
            // The sender lives in the log this tail holds, so it cannot be dropped while we wait.
            let _ = self.appended.changed().await;
        }
    }
}
