//! The data dir's secret: 32 random bytes in `DIR/secret` (mode 0600), created on first
//! use. Holder keys derive from it, so a replay re-derives the same signatures; it is never
//! written to the log, a trace or an error message.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Reads the secret of `dir`, creating it if there is none.
///
/// # Errors
/// When the file cannot be read or created, or holds something other than 32 bytes.
pub fn load_or_create(dir: &Path) -> std::io::Result<Vec<u8>> {
    let path = dir.join("secret");
    match std::fs::File::open(&path) {
        Ok(mut f) => {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            if bytes.len() != 32 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} should hold 32 bytes, holds {}", path.display(), bytes.len()),
                ));
            }
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            let mut bytes = vec![0u8; 32];
            std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            Ok(bytes)
        }
        Err(e) => Err(e),
    }
}
