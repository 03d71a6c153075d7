//! Writing to stdout without panicking when the reader goes away (`crypy log show | head`).

use std::io::{self, BufWriter, Stdout, Write};

pub type Out = BufWriter<Stdout>;

pub fn stdout() -> Out {
    BufWriter::with_capacity(64 * 1024, io::stdout())
}

pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe))
}

/// Thousands separators for counts humans read.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `1.23 M/s`-style rates.
pub fn rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M/s", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k/s", per_s / 1e3)
    } else {
        format!("{per_s:.0}/s")
    }
}

pub fn flush(out: &mut Out) -> anyhow::Result<()> {
    out.flush()?;
    Ok(())
}
