//! The writer's lock on a data dir: an exclusive `flock` on `LOCK`, which holds the owner's
//! pid so the refusal can say who has it. The kernel drops the lock when its process dies,
//! so a crash never leaves a stale lock behind; the pid left in the file is only a hint.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use fs2::FileExt;

use crate::{Error, Result};

/// How long to wait for a lock this process itself holds (a closing handle).
const SAME_PROCESS_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Waits up to `wait` for the lock: readers without a live writer hold it only for
    /// the moment of a read, and a writer should not fail because of one.
    pub(crate) fn acquire(dir: &Path, wait: Duration) -> Result<Self> {
        let path = dir.join("LOCK");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let started = Instant::now();
        while file.try_lock_exclusive().is_err() {
            let mut text = String::new();
            let _ = file.seek(SeekFrom::Start(0));
            let _ = file.read_to_string(&mut text);
            let pid: Option<u32> = text.trim().parse().ok();
            // A handle of this very process that is closing (its background flusher may hold
            // it for the moment of an fsync) lets go within milliseconds: wait for it.
            let patience = if pid == Some(std::process::id()) { wait.max(SAME_PROCESS_WAIT) } else { wait };
            if started.elapsed() >= patience {
                return Err(Error::Locked { dir: dir.to_path_buf(), pid });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let write_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_data()
        };
        write_pid(&mut file).map_err(|e| Error::io(&path, e))?;
        Ok(Self { _file: file })
    }
}
