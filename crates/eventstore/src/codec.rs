//! The on-disk record: one sled value per appended chunk of events.
//!
//! ```text
//! offset  size  field
//!      0     2  magic 0xC7 0x59
//!      2     2  format version (u16 LE)
//!      4     4  CRC-32 (IEEE) of every byte from offset 8 to the end
//!      8     8  seq of the first event (u64 LE); equals the record's key
//!     16     4  event count n (u32 LE), at least 1
//!     20     …  n times: length (u32 LE) then the event (bincode 2, standard config)
//! ```
//!
//! The events of a chunk have contiguous seqs (`first`, `first + 1`, …), so a seq is never
//! stored twice and a chunk cannot hold a gap. The checksum covers the seq and the count,
//! so a record moved under another key is caught too.

use crypy_core::{Envelope, NewEvent};

use crate::{Error, Problem, Result, VerifyReport};

const MAGIC: [u8; 2] = [0xC7, 0x59];
/// The version this build writes, and the only one it reads (2: `strategy_evaluated` carries
/// the grid's size and how many variants passed).
pub const FORMAT_VERSION: u16 = 2;
pub(crate) const HEADER_LEN: usize = 20;

pub(crate) fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Builds one chunk in a reused buffer.
#[derive(Debug, Default)]
pub(crate) struct ChunkWriter {
    buf: Vec<u8>,
    count: u32,
}

impl ChunkWriter {
    pub(crate) fn start(&mut self, first_seq: u64) {
        self.buf.clear();
        self.buf.extend_from_slice(&MAGIC);
        self.buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.extend_from_slice(&first_seq.to_le_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        self.count = 0;
    }

    pub(crate) fn push(&mut self, event: &NewEvent) -> Result<()> {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        crate::event_encode::encode(event, &mut self.buf).map_err(|e| Error::Encode(e.to_string()))?;
        let len =
            u32::try_from(self.buf.len() - at - 4).map_err(|_| Error::Encode("event larger than 4 GiB".into()))?;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.count += 1;
        Ok(())
    }

    pub(crate) fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// Seals the header and returns the record's bytes.
    pub(crate) fn finish(&mut self) -> &[u8] {
        self.buf[16..20].copy_from_slice(&self.count.to_le_bytes());
        let crc = crc32fast::hash(&self.buf[8..]);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        &self.buf
    }
}

/// A chunk whose header and checksum have been checked; events are decoded on demand.
#[derive(Debug)]
pub(crate) struct Chunk<'a> {
    pub first_seq: u64,
    pub count: u32,
    pub body: &'a [u8],
}

/// The key of a record: the first seq, big-endian so that sled's byte order is seq order.
pub(crate) fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(crate) fn seq_of_key(key: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| Error::Corrupt { seq: 0, reason: format!("record key of {} bytes, expected 8", key.len()) })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Checks a record's header and checksum. `key_seq` is the seq its key says, reported in
/// errors because the header itself cannot be trusted yet.
pub(crate) fn open_chunk(key_seq: u64, bytes: &[u8]) -> Result<Chunk<'_>> {
    let corrupt = |reason: String| Error::Corrupt { seq: key_seq, reason };
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(format!("record of {} bytes is shorter than its header", bytes.len())));
    }
    if bytes[0..2] != MAGIC {
        return Err(corrupt("bad magic bytes: not a crypy record".into()));
    }
    let version = u16::from_le_bytes([bytes[2], bytes[3]]);
    if version == 0 {
        return Err(corrupt("format version 0".into()));
    }
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedFormat { found: version, supported: FORMAT_VERSION });
    }
    let stored_crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    let crc = crc32fast::hash(&bytes[8..]);
    if crc != stored_crc {
        return Err(corrupt(format!("checksum mismatch (stored {stored_crc:08x}, computed {crc:08x})")));
    }
    let first_seq = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    let count = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
    if first_seq != key_seq {
        return Err(corrupt(format!("record says it starts at seq {first_seq}, but is stored under {key_seq}")));
    }
    if count == 0 {
        return Err(corrupt("empty record".into()));
    }
    Ok(Chunk { first_seq, count, body: &bytes[HEADER_LEN..] })
}

impl Chunk<'_> {
    pub(crate) fn last_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count) - 1
    }

    /// Decodes the events with seq >= `from`, calling `f` for each.
    pub(crate) fn decode_from(&self, from: u64, mut f: impl FnMut(Envelope)) -> Result<()> {
        let mut cursor = Cursor::new(self);
        while let Some(seq) = cursor.next_seq() {
            if seq < from {
                cursor.skip(self.body)?;
            } else {
                f(cursor.decode(self.body)?);
            }
        }
        cursor.finish(self.body)
    }
}

/// A position inside a checked chunk's body, for decoding one event at a time. It holds no
/// borrow, so an iterator can keep it beside the record's bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor {
    pos: usize,
    seq: u64,
    last: u64,
}

impl Cursor {
    pub(crate) fn new(chunk: &Chunk<'_>) -> Self {
        Cursor { pos: 0, seq: chunk.first_seq, last: chunk.last_seq() }
    }

    /// The seq of the event under the cursor, or `None` past the last one.
    pub(crate) fn next_seq(&self) -> Option<u64> {
        (self.seq <= self.last).then_some(self.seq)
    }

    fn frame<'b>(&mut self, body: &'b [u8]) -> Result<&'b [u8]> {
        let seq = self.seq;
        let corrupt = |reason: String| Error::Corrupt { seq, reason };
        let rest = body.get(self.pos..).unwrap_or_default();
        if rest.len() < 4 {
            return Err(corrupt("record ends before its last event".into()));
        }
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let Some(bytes) = rest.get(4..4 + len) else {
            return Err(corrupt(format!("event length {len} runs past the record's end")));
        };
        self.pos += 4 + len;
        self.seq += 1;
        Ok(bytes)
    }

    pub(crate) fn skip(&mut self, body: &[u8]) -> Result<()> {
        self.frame(body).map(|_| ())
    }

    /// `body` must be the body of the chunk this cursor was made for.
    pub(crate) fn decode(&mut self, body: &[u8]) -> Result<Envelope> {
        let seq = self.seq;
        let bytes = self.frame(body)?;
        let corrupt = |reason: String| Error::Corrupt { seq, reason };
        if let Some(candle) = crate::candle_codec::decode(bytes) {
            return Ok(Envelope::new(seq, candle));
        }
        let (event, used): (NewEvent, usize) = bincode::serde::borrow_decode_from_slice(bytes, bincode_config())
            .map_err(|e| corrupt(format!("undecodable event: {e}")))?;
        if used != bytes.len() {
            return Err(corrupt(format!("event decoded from {used} of its {} bytes", bytes.len())));
        }
        Ok(Envelope::new(seq, event))
    }

    /// Checks that nothing follows the last event.
    pub(crate) fn finish(&self, body: &[u8]) -> Result<()> {
        if self.pos != body.len() {
            return Err(Error::Corrupt {
                seq: self.last,
                reason: format!("{} stray bytes after the last event", body.len().saturating_sub(self.pos)),
            });
        }
        Ok(())
    }
}

/// Walks records in key order checking each one and that seqs run from 1 without gap or
/// overlap; stops at the first problem. Shared by local and remote verification.
pub(crate) fn verify_records<B: AsRef<[u8]>>(records: impl Iterator<Item = Result<(u64, B)>>) -> Result<VerifyReport> {
    let mut report = VerifyReport { records: 0, events: 0, last_seq: 0, problem: None };
    let mut expected = 1u64;
    for item in records {
        let (key_seq, bytes) = match item {
            Ok(r) => r,
            Err(Error::Corrupt { reason, .. }) => {
                report.problem = Some(Problem { seq: expected, reason });
                break;
            }
            Err(e) => return Err(e),
        };
        if key_seq > expected {
            let reason = if key_seq == expected + 1 {
                format!("seq {expected} is missing")
            } else {
                format!("seqs {expected}..={} are missing", key_seq - 1)
            };
            report.problem = Some(Problem { seq: expected, reason });
            break;
        }
        if key_seq < expected {
            let reason = format!("record at seq {key_seq} overlaps the previous one (expected seq {expected})");
            report.problem = Some(Problem { seq: key_seq, reason });
            break;
        }
        let checked = open_chunk(key_seq, bytes.as_ref()).and_then(|chunk| {
            chunk.decode_from(0, |_| ())?;
            Ok(chunk.count)
        });
        match checked {
            Ok(count) => {
                report.records += 1;
                report.events += u64::from(count);
                expected = key_seq + u64::from(count);
                report.last_seq = expected - 1;
            }
            Err(Error::Corrupt { seq, reason }) => {
                report.problem = Some(Problem { seq, reason });
                break;
            }
            Err(Error::UnsupportedFormat { found, supported }) => {
                let reason = format!("written in format version {found} (this crypy reads version {supported})");
                report.problem = Some(Problem { seq: key_seq, reason });
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// Decodes the events of a stream of raw records, from `from` on, checking that the first
/// record holds `from` and that each record starts where the previous one ended.
#[derive(Debug)]
pub(crate) struct RecordEvents<I, B> {
    records: I,
    next: u64,
    /// The seq after the last record opened: the next record must start there. The first
    /// record may start before `from`, so only records after it are held to this.
    expected: Option<u64>,
    current: Option<(B, Cursor)>,
    failed: bool,
}

impl<I, B> RecordEvents<I, B> {
    pub(crate) fn new(records: I, from: u64) -> Self {
        RecordEvents { records, next: from.max(1), expected: None, current: None, failed: false }
    }
}

impl<I: Iterator<Item = Result<(u64, B)>>, B: AsRef<[u8]>> RecordEvents<I, B> {
    fn step(&mut self) -> Result<Option<Envelope>> {
        loop {
            if let Some((bytes, cursor)) = &mut self.current {
                let body = &bytes.as_ref()[HEADER_LEN..];
                if let Some(seq) = cursor.next_seq() {
                    if seq < self.next {
                        cursor.skip(body)?;
                        continue;
                    }
                    let e = cursor.decode(body)?;
                    self.next = e.seq + 1;
                    return Ok(Some(e));
                }
                cursor.finish(body)?;
                self.current = None;
            }
            let Some(item) = self.records.next() else { return Ok(None) };
            let (key_seq, bytes) = item?;
            let chunk = open_chunk(key_seq, bytes.as_ref())?;
            // An overlap is what verify reports too; skipping the repeated seqs would read
            // past a record that is wrong without a word.
            if let Some(expected) = self.expected.filter(|e| key_seq < *e) {
                return Err(Error::Corrupt {
                    seq: key_seq,
                    reason: format!("record at seq {key_seq} overlaps the previous one (expected seq {expected})"),
                });
            }
            self.expected = Some(chunk.last_seq() + 1);
            if key_seq > self.next {
                return Err(Error::Corrupt {
                    seq: self.next,
                    reason: format!("seq {} is missing (the next record starts at {key_seq})", self.next),
                });
            }
            if chunk.last_seq() < self.next {
                continue;
            }
            let cursor = Cursor::new(&chunk);
            self.current = Some((bytes, cursor));
        }
    }
}

impl<I: Iterator<Item = Result<(u64, B)>>, B: AsRef<[u8]>> Iterator for RecordEvents<I, B> {
    type Item = Result<Envelope>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(e) => e.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// The event count in a record's header, without checking it (for a server that only
/// forwards records; the reader checks them).
pub(crate) fn peek_count(bytes: &[u8]) -> Option<u32> {
    bytes.get(16..20).map(|b| u32::from_le_bytes(b.try_into().unwrap()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypy_core::arbitrary::new_event;
    use proptest::prelude::*;

    fn encode(first: u64, events: &[NewEvent]) -> Vec<u8> {
        let mut w = ChunkWriter::default();
        w.start(first);
        for e in events {
            w.push(e).unwrap();
        }
        w.finish().to_vec()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn chunks_round_trip(first in 1u64..u64::MAX / 2, events in proptest::collection::vec(new_event(), 1..20)) {
            let bytes = encode(first, &events);
            let chunk = open_chunk(first, &bytes).unwrap();
            let mut out = Vec::new();
            chunk.decode_from(0, |e| out.push(e)).unwrap();
            prop_assert_eq!(out.len(), events.len());
            for (i, (got, want)) in out.into_iter().zip(events).enumerate() {
                prop_assert_eq!(got, Envelope::new(first + i as u64, want));
            }
        }

        #[test]
        fn any_flipped_byte_is_caught(events in proptest::collection::vec(new_event(), 1..5), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = encode(7, &events);
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let res = open_chunk(7, &bytes).and_then(|c| c.decode_from(0, |_| ()));
            prop_assert!(res.is_err(), "flip at byte {} bit {} went unnoticed", i, bit);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = open_chunk(1, &bytes).and_then(|c| c.decode_from(0, |_| ()));
        }
    }

    #[test]
    fn newer_format_is_refused_not_misread() {
        let mut bytes = encode(1, &[]);
        bytes[2..4].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert!(
            matches!(open_chunk(1, &bytes), Err(Error::UnsupportedFormat { found, .. }) if found == FORMAT_VERSION + 1)
        );
    }
}
