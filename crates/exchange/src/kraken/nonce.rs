//! Kraken refuses a private call whose nonce is not greater than the last one it saw for the
//! API key (`EAPI:Invalid nonce`), across restarts of the client too.
//!
//! The store hands out `max(last + 1, clock in µs)` and keeps a high-water mark on disk:
//! before handing out a nonce above the mark, it durably raises the mark by a lease of
//! [`LEASE`] nonces. After a crash the next process starts above the mark, so above every
//! nonce ever handed out, while most calls cost no fsync.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Nonces reserved per durable write.
pub const LEASE: u64 = 1_000_000;

#[derive(Debug)]
pub struct NonceStore {
    file: File,
    last: u64,
    mark: u64,
}

impl NonceStore {
    /// Opens (or creates) the store at `path`.
    ///
    /// # Errors
    /// I/O errors, or a file that does not hold a number.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let mark = match text.trim() {
            "" => 0,
            t => t.parse().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} does not hold a nonce", path.display()),
                )
            })?,
        };
        // Everything up to the mark may have been handed out before a crash.
        Ok(NonceStore { file, last: mark, mark })
    }

    /// The next nonce, given the clock in microseconds since the epoch.
    ///
    /// # Errors
    /// When the high-water mark cannot be made durable: no nonce is handed out then.
    pub fn next(&mut self, now_us: u64) -> std::io::Result<u64> {
        let nonce = (self.last + 1).max(now_us);
        if nonce > self.mark {
            let mark = nonce + LEASE;
            self.file.set_len(0)?;
            self.file.seek(SeekFrom::Start(0))?;
            write!(self.file, "{mark}")?;
            self.file.sync_data()?;
            self.mark = mark;
        }
        self.last = nonce;
        Ok(nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_only_grow_across_restarts_and_clock_jumps() {
        let dir = std::env::temp_dir().join(format!("crypy-nonce-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kraken.nonce");
        let _ = std::fs::remove_file(&path);
        let mut handed = Vec::new();
        {
            let mut s = NonceStore::open(&path).unwrap();
            handed.push(s.next(1_700_000_000_000_000).unwrap());
            handed.push(s.next(1_700_000_000_000_000).unwrap());
            handed.push(s.next(1_600_000_000_000_000).unwrap()); // the clock went back
        }
        {
            // A "crashed" process's successor, with a clock behind everything.
            let mut s = NonceStore::open(&path).unwrap();
            handed.push(s.next(1).unwrap());
            handed.push(s.next(1_800_000_000_000_000).unwrap());
        }
        assert!(handed.windows(2).all(|w| w[1] > w[0]), "{handed:?}");
        std::fs::write(&path, "garbage").unwrap();
        assert!(NonceStore::open(&path).unwrap_err().to_string().contains("does not hold a nonce"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
