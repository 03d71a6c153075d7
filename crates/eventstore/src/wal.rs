//! The log's write-ahead files: what makes a durable append one write and one `fdatasync`.
//!
//! sled makes its writes durable only through its flush, which writes each of its buffers
//! and waits for each with `sync_file_range` (two of each per append), before our
//! `fdatasync` flushes the device's cache. Those waits were most of a durable append's time,
//! and of the time from a market event to the order it causes on a live desk. Under
//! [`crate::Durability::EveryBatch`] an append now goes to sled, in memory, and as one frame
//! to the active one of two write-ahead files, which is `fdatasync`ed before the append
//! returns. In the background the log switches to the other file, flushes sled (everything
//! in the retired file is then durable in sled) and recycles the retired file. Opening a log
//! reads both files and puts back into sled every record it lacks: what a crash took from
//! sled's memory.
//!
//! A file is a sequence of frames: `b"CW"`, the payload's length (u32 LE), the CRC-32 of the
//! payload (u32 LE), then the payload: the append's records (see [`crate::codec`]), each as
//! its length (u32 LE) and its bytes. A frame cut short or failing its checksum ends the
//! file: its append never returned, so nothing acknowledged is lost by dropping it.
//!
//! The files keep their size while the log is open: they are sized ahead when it opens, and
//! a recycled file is written again from its start rather than cut to nothing. An
//! `fdatasync` that has no file size to commit is the disk's flush and little else (on this
//! machine's ext4, 3,000 syncs of 200 bytes: p50 150–156 µs growing the file, 100–102 µs
//! writing within its size). Frames left from a file's earlier use hold records sled has
//! durably, and a file's frames end where a frame's first seq does not follow the frame
//! before it: seqs only grow, so what follows the new frames is older. Opening and closing
//! a log cut the files to nothing, so no earlier frame outlives the log that wrote it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The two files, in the data dir.
pub(crate) const FILE_NAMES: [&str; 2] = ["log.wal.0", "log.wal.1"];
const FRAME_MAGIC: [u8; 2] = *b"CW";
const FRAME_HEADER: usize = 10;
/// The size the files are given when a log opens: room for a desk's appends many times
/// over between two recyclings (a file outgrown keeps its new size while the log is open).
const SIZED_AHEAD_BYTES: u64 = 4 << 20;
/// The frame's buffer is kept for the next append up to this size: an import appends
/// hundreds of MB at once, a desk a few KB.
const KEPT_FRAME_BYTES: usize = 4 << 20;

/// The two files and which one appends go to.
#[derive(Debug)]
pub(crate) struct Wal {
    paths: [PathBuf; 2],
    files: [File; 2],
    /// Bytes of the frames written in each file since its last recycling: where the next
    /// frame goes.
    lens: [u64; 2],
    active: usize,
    /// The frame being built, reused.
    frame: Vec<u8>,
    /// Set when a failed append could not be undone in the file: a later frame written
    /// after a partial one would be unreadable, so appends stop.
    broken: Option<String>,
}

/// A record found in a write-ahead file: its first seq and its bytes.
pub(crate) type Found = (u64, Vec<u8>);

impl Wal {
    /// Opens (creating) the files in `dir` and returns every record they hold, oldest frame
    /// first. A torn last frame is cut off the file.
    pub(crate) fn open(dir: &Path) -> Result<(Wal, Vec<Found>)> {
        let paths = FILE_NAMES.map(|name| dir.join(name));
        let mut created = false;
        let mut open = |path: &PathBuf| -> Result<File> {
            created |= !path.exists();
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| Error::io(path, e))
        };
        let files = [open(&paths[0])?, open(&paths[1])?];
        if created {
            // The files' names must survive a crash as well as what is written in them.
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
        }
        let mut found = Vec::new();
        let mut lens = [0; 2];
        for i in 0..2 {
            let bytes = std::fs::read(&paths[i]).map_err(|e| Error::io(&paths[i], e))?;
            let whole = read_frames(&bytes, &mut found);
            if whole < bytes.len() {
                files[i].set_len(whole as u64).map_err(|e| Error::io(&paths[i], e))?;
            }
            lens[i] = whole as u64;
        }
        // In seq order: the retired file's frames come before the active one's, whichever
        // file that is. A seq is in one frame only: a failed append is cut back from its file.
        found.sort_by_key(|(seq, _)| *seq);
        Ok((Wal { paths, files, lens, active: 0, frame: Vec::new(), broken: None }, found))
    }

    /// Starts the next frame.
    pub(crate) fn start(&mut self) {
        if self.frame.capacity() > KEPT_FRAME_BYTES {
            self.frame = Vec::new();
        }
        self.frame.clear();
        self.frame.extend_from_slice(&FRAME_MAGIC);
        self.frame.extend_from_slice(&[0; 8]);
    }

    /// Adds a record to the frame being built.
    pub(crate) fn push(&mut self, record: &[u8]) {
        self.frame.extend_from_slice(&(record.len() as u32).to_le_bytes());
        self.frame.extend_from_slice(record);
    }

    /// Writes the frame and makes it durable. On failure the file is cut back to where the
    /// frame started, so that the next append's frame follows whole ones.
    pub(crate) fn commit(&mut self) -> Result<()> {
        if let Some(reason) = &self.broken {
            return Err(Error::io(&self.paths[self.active], std::io::Error::other(reason.clone())));
        }
        let payload_len = u32::try_from(self.frame.len() - FRAME_HEADER)
            .map_err(|_| Error::Encode("an append larger than 4 GiB".into()))?;
        let crc = crc32fast::hash(&self.frame[FRAME_HEADER..]);
        self.frame[2..6].copy_from_slice(&payload_len.to_le_bytes());
        self.frame[6..10].copy_from_slice(&crc.to_le_bytes());
        let (file, at) = (&self.files[self.active], self.lens[self.active]);
        let written = file.write_all_at(&self.frame, at).and_then(|()| file.sync_data());
        match written {
            Ok(()) => {
                self.lens[self.active] += self.frame.len() as u64;
                Ok(())
            }
            Err(error) => {
                if let Err(undo) = file.set_len(at) {
                    self.broken = Some(format!(
                        "the log's write-ahead file could not be cut back after a failed append ({undo}); reopen the log"
                    ));
                }
                Err(Error::io(&self.paths[self.active], error))
            }
        }
    }

    /// Sends the next appends to the other file when that one is recycled; returns the file
    /// to recycle once sled is flushed (the one just retired, or the other one still
    /// waiting), or `None` when neither has frames.
    pub(crate) fn rotate(&mut self) -> Option<usize> {
        let other = 1 - self.active;
        if self.lens[other] == 0 {
            if self.lens[self.active] == 0 {
                return None;
            }
            self.active = other;
        }
        Some(1 - self.active)
    }

    /// Lets file `i` be written again from its start: sled holds durably every record in it.
    /// Its frames stay until overwritten; opening a log skips the records sled has.
    pub(crate) fn recycle(&mut self, i: usize) {
        self.lens[i] = 0;
    }

    /// Cuts both files to nothing: sled holds durably every record in them.
    pub(crate) fn clear_all(&mut self) -> Result<()> {
        for i in 0..2 {
            self.files[i]
                .set_len(0)
                .and_then(|()| self.files[i].sync_data())
                .map_err(|e| Error::io(&self.paths[i], e))?;
            self.lens[i] = 0;
        }
        Ok(())
    }

    /// Gives both files, just cut to nothing, their size ahead, durably, so that an append's
    /// `fdatasync` has no size to commit.
    pub(crate) fn size_ahead(&self) -> Result<()> {
        for (file, path) in self.files.iter().zip(&self.paths) {
            file.set_len(SIZED_AHEAD_BYTES).and_then(|()| file.sync_data()).map_err(|e| Error::io(path, e))?;
        }
        Ok(())
    }
}

/// Appends the records of the frames at the start of `bytes` to `found`: every whole frame
/// whose seqs follow the frame before it. Returns the length of those frames.
fn read_frames(bytes: &[u8], found: &mut Vec<Found>) -> usize {
    let mut at = 0;
    let mut next_seq = None;
    while let Some(header) = bytes.get(at..at + FRAME_HEADER) {
        if header[..2] != FRAME_MAGIC {
            break;
        }
        let len = u32::from_le_bytes(header[2..6].try_into().expect("4 bytes")) as usize;
        if len == 0 {
            // An append has at least one record.
            break;
        }
        let crc = u32::from_le_bytes(header[6..10].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len) else { break };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some((records, after)) = split_records(payload, next_seq) else { break };
        found.extend(records);
        next_seq = Some(after);
        at += FRAME_HEADER + len;
    }
    at
}

/// A frame's records, each checked as a record and following the one before it (the first
/// following `next_seq`, when given), and the seq after the last; `None` if any is not so.
fn split_records(mut payload: &[u8], mut next_seq: Option<u64>) -> Option<(Vec<Found>, u64)> {
    let mut records = Vec::new();
    while !payload.is_empty() {
        let len = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
        let record = payload.get(4..4 + len)?;
        let seq = u64::from_le_bytes(record.get(8..16)?.try_into().ok()?);
        if next_seq.is_some_and(|next| next != seq) {
            return None;
        }
        let chunk = crate::codec::open_chunk(seq, record).ok()?;
        next_seq = Some(seq.checked_add(u64::from(chunk.count))?);
        records.push((seq, record.to_vec()));
        payload = &payload[4 + len..];
    }
    Some((records, next_seq?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ChunkWriter;
    use crypy_core::{AgentId, Event, NewEvent};

    fn record(first_seq: u64, count: u64) -> Vec<u8> {
        let mut chunk = ChunkWriter::default();
        chunk.start(first_seq);
        for i in 0..count {
            let event = NewEvent {
                run: 1,
                time: i as i64,
                wall: 0,
                source: AgentId::system("test").unwrap(),
                cause: None,
                event: Event::KillSwitchReleased(crypy_core::event::KillSwitchReleased { reason: format!("r{i}") }),
            };
            chunk.push(&event).unwrap();
        }
        chunk.finish().to_vec()
    }

    fn append(wal: &mut Wal, records: &[&[u8]]) {
        wal.start();
        for r in records {
            wal.push(r);
        }
        wal.commit().unwrap();
    }

    #[test]
    fn frames_come_back_and_a_torn_one_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (record(1, 3), record(4, 2), record(6, 1));
        {
            let (mut wal, found) = Wal::open(dir.path()).unwrap();
            assert!(found.is_empty());
            append(&mut wal, &[&a, &b]);
            append(&mut wal, &[&c]);
        }
        let whole = std::fs::metadata(dir.path().join("log.wal.0")).unwrap().len();
        // A crash in the middle of a third frame: its first bytes only.
        let elsewhere = tempfile::tempdir().unwrap();
        append(&mut Wal::open(elsewhere.path()).unwrap().0, &[&record(7, 1)]);
        let third = std::fs::read(elsewhere.path().join("log.wal.0")).unwrap();
        for cut in [3, 12, third.len() / 2, third.len() - 1] {
            let (wal, _) = Wal::open(dir.path()).unwrap();
            wal.files[0].write_all_at(&third[..cut], whole).unwrap();
        }
        let (_, found) = Wal::open(dir.path()).unwrap();
        assert_eq!(found, vec![(1, a), (4, b), (6, c)]);
        assert_eq!(std::fs::metadata(dir.path().join("log.wal.0")).unwrap().len(), whole);
    }

    #[test]
    fn a_damaged_frame_ends_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (record(1, 1), record(2, 1));
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            append(&mut wal, &[&a]);
            append(&mut wal, &[&b]);
        }
        let path = dir.path().join("log.wal.0");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, found) = Wal::open(dir.path()).unwrap();
        assert_eq!(found, vec![(1, a)]);
    }

    #[test]
    fn rotation_alternates_and_waits_for_the_other_file_to_be_recycled() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        assert_eq!(wal.rotate(), None, "nothing to retire");
        append(&mut wal, &[&record(1, 1)]);
        assert_eq!(wal.rotate(), Some(0));
        append(&mut wal, &[&record(2, 1)]);
        // File 0 not recycled yet (sled's flush failed, say): appends stay on file 1, and file
        // 0 is offered again.
        assert_eq!(wal.rotate(), Some(0));
        wal.recycle(0);
        assert_eq!(wal.rotate(), Some(1));
        append(&mut wal, &[&record(3, 1)]);
        wal.recycle(1);
        assert_eq!(wal.rotate(), Some(0));
        // Recycling leaves the frames: seq 2 (in sled by now) is still in file 1, and seq 3
        // took seq 1's place in file 0.
        let (_, found) = Wal::open(dir.path()).unwrap();
        assert_eq!(found.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), vec![2, 3]);
    }

    /// A recycled file keeps its size and is written again from its start; frames after the
    /// new ones, left from its earlier use, are older and not read. Closing cuts the files.
    #[test]
    fn older_frames_after_a_recycled_files_new_ones_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.size_ahead().unwrap();
        append(&mut wal, &[&record(1, 2)]);
        append(&mut wal, &[&record(3, 1)]);
        assert_eq!(wal.rotate(), Some(0));
        append(&mut wal, &[&record(4, 1)]);
        wal.recycle(0);
        assert_eq!(wal.rotate(), Some(1));
        // Over the frame of seqs 1..=2, one of the same size: the frame of seq 3 follows it
        // whole, and would be read back were seqs not required to follow one another.
        append(&mut wal, &[&record(5, 2)]);
        for name in FILE_NAMES {
            assert_eq!(std::fs::metadata(dir.path().join(name)).unwrap().len(), SIZED_AHEAD_BYTES);
        }
        let (mut reopened, found) = Wal::open(dir.path()).unwrap();
        assert_eq!(found.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), vec![4, 5]);
        reopened.clear_all().unwrap();
        for name in FILE_NAMES {
            assert_eq!(std::fs::metadata(dir.path().join(name)).unwrap().len(), 0);
        }
    }

    #[test]
    fn a_frame_whose_records_do_not_follow_each_other_ends_the_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            append(&mut wal, &[&record(1, 1)]);
            append(&mut wal, &[&record(2, 2), &record(5, 1)]);
        }
        let (_, found) = Wal::open(dir.path()).unwrap();
        assert_eq!(found.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), vec![1]);
    }
}
