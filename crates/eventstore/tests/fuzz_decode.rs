//! Fuzzes the record decoder through the log's public API: real records of arbitrary events
//! are replaced by arbitrary bytes, truncated, extended, bit-flipped, or mutated and then
//! re-checksummed (standing in for a writer bug the CRC cannot catch, which is what drives
//! the event decoder itself); and the same records streamed by a fake writer to a
//! `LogReader` in a damaged frame stream.
//!
//! Promises: nothing panics or hangs; a damaged record is a typed error; `verify` reports
//! it; a reader stops at it with an error and never yields an event past it, so no record is
//! ever silently skipped; and `verify` and a reader agree on whether the log is whole.

use std::cell::RefCell;

use crypy_core::arbitrary::new_event;
use crypy_core::NewEvent;
use crypy_eventstore::{Error, EventLog, Options};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

const RECORDS: usize = 12;
const HEADER_LEN: usize = 20;

/// One log per test thread, built once: a fresh sled per case would dominate the run time,
/// so each case damages one record and puts the original back afterwards.
pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    log: EventLog,
    /// (key seq, original bytes, event count) of every record, in seq order.
    pub(crate) records: Vec<(u64, Vec<u8>, u64)>,
    total: u64,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path(), Options { serve_readers: false, ..Options::default() }).unwrap();
        let mut runner = TestRunner::deterministic();
        let strategy = new_event();
        let mut records = Vec::new();
        for i in 0..RECORDS {
            let batch: Vec<NewEvent> =
                (0..1 + i % 5).map(|_| strategy.new_tree(&mut runner).unwrap().current()).collect();
            let range = log.append(&batch).unwrap();
            let bytes = log.raw_record_for_tests(range.first).unwrap().expect("one record per small batch");
            records.push((range.first, bytes, range.len()));
        }
        let total = log.last_seq();
        Fixture { _dir: dir, log, records, total }
    }

    fn with<R>(f: impl FnOnce(&Fixture) -> R) -> R {
        thread_local! {
            static FIXTURE: RefCell<Option<Fixture>> = const { RefCell::new(None) };
        }
        FIXTURE.with(|cell| f(cell.borrow_mut().get_or_insert_with(Fixture::new)))
    }

    /// Plants `bytes` under `key`, reports what verify and a full read see, then restores.
    fn observe(&self, key: u64, bytes: &[u8]) -> Observed {
        self.log.put_raw_record_for_tests(key, bytes).unwrap();
        let verify = self.log.verify().expect("damage is a report, not a failure of verify");
        let mut read = Vec::new();
        for item in self.log.iter_from(1) {
            match item {
                Ok(e) => {
                    // Whatever decoded must also print: the CLI shows events as JSON lines.
                    let _ = e.to_json_line();
                    read.push(Ok(e.seq));
                }
                Err(e) => read.push(Err(e)),
            }
            // An iterator that kept going after an error, or looped, would show up here.
            assert!(read.len() as u64 <= self.total + 1, "the reader yielded more than the log holds");
        }
        let (_, original, _) =
            self.records.iter().find(|(k, ..)| *k == key).expect("only the fixture's keys are fuzzed");
        self.log.put_raw_record_for_tests(key, original).unwrap();
        Observed { problem: verify.problem.map(|p| (p.seq, p.reason)), read }
    }
}

#[derive(Debug)]
struct Observed {
    problem: Option<(u64, String)>,
    read: Vec<Result<u64, Error>>,
}

impl Observed {
    /// The reader's invariants whatever the damage: contiguous seqs from 1, at most one
    /// error, and nothing after it.
    fn check_reader(&self) -> Result<(), TestCaseError> {
        for (i, r) in self.read.iter().enumerate() {
            match r {
                Ok(seq) => prop_assert_eq!(*seq, i as u64 + 1, "reader skipped or repeated a seq"),
                Err(e) => {
                    prop_assert_eq!(i, self.read.len() - 1, "reader went on after an error");
                    prop_assert!(
                        matches!(e, Error::Corrupt { .. } | Error::UnsupportedFormat { .. }),
                        "untyped reader error: {e:?}"
                    );
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }
        Ok(())
    }

    fn last_ok(&self) -> u64 {
        self.read.iter().filter(|r| r.is_ok()).count() as u64
    }

    fn failed(&self) -> bool {
        matches!(self.read.last(), Some(Err(_)))
    }
}

#[derive(Debug, Clone)]
enum Damage {
    Flip(Vec<(Index, u8)>),
    Truncate(Index),
    Extend(Vec<u8>),
    Replace(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        prop::collection::vec((any::<Index>(), 0u8..8), 1..4).prop_map(Damage::Flip),
        any::<Index>().prop_map(Damage::Truncate),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Extend),
        prop::collection::vec(any::<u8>(), 0..256).prop_map(Damage::Replace),
    ]
}

fn apply(damage: &Damage, original: &[u8]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    match damage {
        Damage::Flip(flips) => {
            // Several flips may cancel out on one bit; one distinct bit at least stays flipped.
            let mut seen = std::collections::HashSet::new();
            for (at, bit) in flips {
                let i = at.index(bytes.len());
                if seen.insert((i, *bit)) {
                    bytes[i] ^= 1 << bit;
                }
            }
        }
        Damage::Truncate(at) => bytes.truncate(at.index(bytes.len())),
        Damage::Extend(more) => bytes.extend_from_slice(more),
        Damage::Replace(other) => bytes = other.clone(),
    }
    bytes
}

/// Changes a record past what its checksum protects against, then seals it again.
#[derive(Debug, Clone)]
enum Rewrite {
    /// Flip bits in the events (after the header).
    Body(Vec<(Index, u8)>),
    /// Delete some bytes of the events and insert others in their place.
    Splice { at: Index, delete: usize, insert: Vec<u8> },
    /// Claim another event count.
    Count(u32),
    /// Claim another first seq (so the header disagrees with the key).
    FirstSeq(u64),
    /// Overwrite one event's length prefix.
    Length(Index, u32),
}

fn rewrite() -> impl Strategy<Value = Rewrite> {
    prop_oneof![
        3 => prop::collection::vec((any::<Index>(), 0u8..8), 1..6).prop_map(Rewrite::Body),
        3 => (any::<Index>(), 0usize..16, prop::collection::vec(any::<u8>(), 0..24))
            .prop_map(|(at, delete, insert)| Rewrite::Splice { at, delete, insert }),
        1 => prop_oneof![0u32..12, any::<u32>()].prop_map(Rewrite::Count),
        1 => prop_oneof![0u64..80, any::<u64>()].prop_map(Rewrite::FirstSeq),
        1 => (any::<Index>(), prop_oneof![0u32..300, any::<u32>()]).prop_map(|(i, l)| Rewrite::Length(i, l)),
    ]
}

fn seal(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[8..]);
    bytes[4..8].copy_from_slice(&crc.to_le_bytes());
}

fn apply_rewrite(rewrite: &Rewrite, original: &[u8]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    let body_len = bytes.len() - HEADER_LEN;
    match rewrite {
        Rewrite::Body(flips) => {
            for (at, bit) in flips {
                bytes[HEADER_LEN + at.index(body_len)] ^= 1 << bit;
            }
        }
        Rewrite::Splice { at, delete, insert } => {
            let start = HEADER_LEN + at.index(body_len + 1);
            let end = (start + delete).min(bytes.len());
            bytes.splice(start..end, insert.iter().copied());
        }
        Rewrite::Count(n) => bytes[16..20].copy_from_slice(&n.to_le_bytes()),
        Rewrite::FirstSeq(s) => bytes[8..16].copy_from_slice(&s.to_le_bytes()),
        Rewrite::Length(which, len) => {
            // Walk the frames to find the chosen event's length prefix.
            let count = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
            let mut pos = HEADER_LEN;
            for _ in 0..which.index(count) {
                pos += 4 + u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            }
            bytes[pos..pos + 4].copy_from_slice(&len.to_le_bytes());
        }
    }
    seal(&mut bytes);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 800, ..ProptestConfig::default() })]

    /// Damage the checksum sees: verify names the record, a reader reads exactly up to it
    /// and then fails.
    #[test]
    fn damage_is_reported_at_its_record_and_never_read_past(which in any::<Index>(), damage in damage()) {
        Fixture::with(|fx| {
            let (key, original, _) = &fx.records[which.index(RECORDS)];
            let bytes = apply(&damage, original);
            prop_assume!(bytes != *original);
            let seen = fx.observe(*key, &bytes);
            seen.check_reader()?;
            let (seq, reason) = seen.problem.clone().expect("verify must report the damage");
            prop_assert_eq!(seq, *key, "verify blamed another seq: {}", reason);
            prop_assert!(!reason.is_empty());
            prop_assert!(seen.failed(), "the reader skipped the damaged record: {:?}", seen.read);
            prop_assert_eq!(seen.last_ok(), key - 1);
            Ok(())
        })?;
    }

    /// Damage the checksum cannot see: whatever the decoder makes of it, verify and a reader
    /// agree, and neither yields anything past the first bad event.
    #[test]
    fn resealed_damage_is_decoded_or_refused_never_skipped(which in any::<Index>(), rewrite in rewrite()) {
        Fixture::with(|fx| {
            let (key, original, _) = &fx.records[which.index(RECORDS)];
            let bytes = apply_rewrite(&rewrite, original);
            let seen = fx.observe(*key, &bytes);
            seen.check_reader()?;
            match &seen.problem {
                None => {
                    prop_assert!(!seen.failed(), "verify passed what the reader refused: {:?}", seen.read);
                    prop_assert_eq!(seen.last_ok(), fx.total);
                }
                Some((seq, reason)) => {
                    prop_assert!(seen.failed(), "verify found {:?} at {} but the reader read on: {:?}", reason, seq, seen.read);
                    prop_assert!(*seq >= *key, "problem at {} before the damaged record at {}", seq, key);
                    prop_assert!(seen.last_ok() <= *seq, "reader read past the problem at {}", seq);
                }
            }
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 800, ..ProptestConfig::default() })]

    /// Arbitrary bytes, not derived from any record.
    #[test]
    fn arbitrary_bytes_are_refused(which in any::<Index>(), bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        Fixture::with(|fx| {
            let key = fx.records[which.index(RECORDS)].0;
            let seen = fx.observe(key, &bytes);
            seen.check_reader()?;
            prop_assert!(seen.problem.is_some());
            prop_assert!(seen.failed());
            Ok(())
        })?;
    }
}

/// A record with a valid checksum whose one event claims to be a megabyte of garbage: it
/// is refused in bounded time, not read as a giant event nor allocated unboundedly.
#[test]
fn a_megabyte_record_is_refused_in_bounded_time() {
    Fixture::with(|fx| {
        let (key, original, _) = &fx.records[3];
        let mut bytes = original[..HEADER_LEN].to_vec();
        bytes[16..20].copy_from_slice(&1u32.to_le_bytes());
        let len = 1 << 20;
        bytes.extend_from_slice(&(len as u32).to_le_bytes());
        bytes.extend((0..len).map(|i| (i * 7 + 3) as u8));
        seal(&mut bytes);
        let seen = fx.observe(*key, &bytes);
        seen.check_reader().unwrap();
        assert!(seen.problem.is_some());
        assert!(seen.failed());
    });
}

/// Reopening a log whose last record is damaged finds the damage, and readers still stop
/// at it (this is the path a restarted writer takes, and it is slow, so fewer cases).
#[test]
fn a_damaged_last_record_is_found_again_after_reopening() {
    let mut runner = TestRunner::new(ProptestConfig { cases: 24, ..ProptestConfig::default() });
    let dir = tempfile::tempdir().unwrap();
    let open = || EventLog::open(dir.path(), Options { serve_readers: false, ..Options::default() }).unwrap();
    let (key, original) = {
        let log = open();
        let mut runner = TestRunner::deterministic();
        let batch: Vec<NewEvent> = (0..4).map(|_| new_event().new_tree(&mut runner).unwrap().current()).collect();
        log.append(&batch[..2]).unwrap();
        let r = log.append(&batch[2..]).unwrap();
        (r.first, log.raw_record_for_tests(r.first).unwrap().unwrap())
    };
    runner
        .run(&(damage(), rewrite()), |(damage, rewrite)| {
            for bytes in [apply(&damage, &original), apply_rewrite(&rewrite, &original)] {
                open().put_raw_record_for_tests(key, &bytes).unwrap();
                let log = open();
                let report = log.verify().unwrap();
                let read: Vec<_> = log.iter_from(1).collect();
                let failed = matches!(read.last(), Some(Err(_)));
                prop_assert_eq!(report.problem.is_some(), failed, "verify {:?} vs reader {:?}", report, read);
                if failed {
                    // A writer must not append after damage it cannot repair.
                    let more = new_event().new_tree(&mut TestRunner::deterministic()).unwrap().current();
                    prop_assert!(log.append(&[more]).is_err());
                }
                log.put_raw_record_for_tests(key, &original).unwrap();
            }
            Ok(())
        })
        .unwrap();
}

/// A record that also holds the next record's events, sealed with a valid checksum (a
/// writer bug, not bit rot): verify reports the overlap, so a reader must not read past it
/// as if nothing were wrong.
#[test]
fn a_record_overlapping_the_next_one_is_an_error_for_a_reader() {
    Fixture::with(|fx| {
        let (key, first, n1) = &fx.records[4];
        let (_, second, n2) = &fx.records[5];
        let mut merged = first.clone();
        merged.extend_from_slice(&second[HEADER_LEN..]);
        merged[16..20].copy_from_slice(&((n1 + n2) as u32).to_le_bytes());
        seal(&mut merged);
        let seen = fx.observe(*key, &merged);
        seen.check_reader().unwrap();
        let (seq, reason) = seen.problem.clone().expect("verify reports the overlap");
        assert!(reason.contains("overlaps"), "{reason}");
        assert!(seen.failed(), "verify found {reason:?} at {seq}, the reader read on: {:?}", seen.read);
    });
}

mod remote_frames {
    //! The frames a live writer sends to readers in other processes (`LogReader` over
    //! `log.sock`), from a fake writer that serves real records in a damaged stream: bytes
    //! flipped, cut, inserted, frames of unknown kinds or with lengths past the end.

    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::{Arc, Mutex};

    use crypy_eventstore::LogReader;
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::Fixture;

    /// Frames as the writer sends them: `1, key seq, length, record` for each record, `2`
    /// at the end.
    fn stream(records: &[(u64, Vec<u8>, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, bytes, _) in records {
            out.push(1);
            out.extend_from_slice(&key.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out.push(2);
        out
    }

    /// A fake writer on `dir/log.sock` answering INFO and serving `frames` to every READ.
    fn fake_writer(dir: &std::path::Path, frames: Arc<Mutex<Vec<u8>>>) {
        std::fs::create_dir_all(dir.join("log")).unwrap();
        let listener = UnixListener::bind(dir.join("log.sock")).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut line = String::new();
                if BufReader::new(&stream).read_line(&mut line).is_err() {
                    continue;
                }
                if line.starts_with("INFO") {
                    let _ = stream.write_all(&[0u8; 12]);
                } else {
                    let bytes = frames.lock().unwrap().clone();
                    let _ = stream.write_all(&bytes);
                }
            }
        });
    }

    #[derive(Debug, Clone)]
    enum Damage {
        Flip(Index, u8),
        Cut(Index, usize),
        Insert(Index, Vec<u8>),
        /// A frame header claiming more bytes than follow (bounded: a 4 GiB claim would
        /// only test the allocator).
        Length(Index, u32),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            (any::<Index>(), 0u8..8).prop_map(|(i, b)| Damage::Flip(i, b)),
            (any::<Index>(), 1usize..64).prop_map(|(i, n)| Damage::Cut(i, n)),
            (any::<Index>(), prop::collection::vec(any::<u8>(), 1..24)).prop_map(|(i, b)| Damage::Insert(i, b)),
            (any::<Index>(), prop_oneof![0u32..64, 0u32..(1 << 24)]).prop_map(|(i, l)| Damage::Length(i, l)),
        ]
    }

    fn apply(frames: &mut Vec<u8>, damage: &Damage, records: &[(u64, Vec<u8>, u64)]) {
        match damage {
            Damage::Flip(i, bit) => {
                let i = i.index(frames.len());
                frames[i] ^= 1 << bit;
            }
            Damage::Cut(i, n) => {
                let a = i.index(frames.len());
                frames.drain(a..(a + n).min(frames.len()));
            }
            Damage::Insert(i, bytes) => {
                let a = i.index(frames.len() + 1);
                frames.splice(a..a, bytes.iter().copied());
            }
            Damage::Length(which, len) => {
                // The length field of the chosen record's frame, if the stream still has it.
                let r = which.index(records.len());
                let at: usize = records[..r].iter().map(|(_, b, _)| 13 + b.len()).sum::<usize>() + 9;
                if at + 4 <= frames.len() {
                    frames[at..at + 4].copy_from_slice(&len.to_le_bytes());
                }
            }
        }
    }

    thread_local! {
        /// One fake writer per test thread; each case swaps what it serves.
        static SERVED: (tempfile::TempDir, Arc<Mutex<Vec<u8>>>) = {
            let dir = tempfile::tempdir().unwrap();
            let frames = Arc::new(Mutex::new(Vec::new()));
            fake_writer(dir.path(), frames.clone());
            (dir, frames)
        };
    }

    /// The harness serves what a writer would: undamaged, every event comes through.
    #[test]
    fn an_undamaged_stream_reads_whole() {
        let records = Fixture::with(|fx| fx.records.clone());
        let total: u64 = records.iter().map(|(_, _, n)| n).sum();
        SERVED.with(|(dir, served)| {
            *served.lock().unwrap() = stream(&records);
            let reader = LogReader::open(dir.path()).unwrap();
            assert!(reader.is_remote());
            let seqs: Vec<u64> = reader.iter_from(1).unwrap().map(|e| e.unwrap().seq).collect();
            assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
            assert!(reader.verify().unwrap().is_ok());
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

        #[test]
        fn damaged_frames_from_a_writer_are_errors_never_panics(damages in prop::collection::vec(damage(), 1..4)) {
            let records = Fixture::with(|fx| fx.records.clone());
            let total: u64 = records.iter().map(|(_, _, n)| n).sum();
            let mut frames = stream(&records);
            for d in &damages {
                apply(&mut frames, d, &records);
            }
            SERVED.with(|(dir, served)| {
                *served.lock().unwrap() = frames;
                let reader = LogReader::open(dir.path()).unwrap();
                prop_assert!(reader.is_remote());
                let mut seen = 0u64;
                let mut failed = false;
                for item in reader.iter_from(1).unwrap() {
                    prop_assert!(!failed, "the reader went on after an error");
                    match item {
                        Ok(e) => {
                            seen += 1;
                            prop_assert_eq!(e.seq, seen, "the reader skipped or repeated a seq");
                        }
                        Err(_) => failed = true,
                    }
                    prop_assert!(seen <= total);
                }
                // Whatever verify makes of it, it answers.
                let _ = reader.verify();
                Ok(())
            })?;
        }
    }
}
