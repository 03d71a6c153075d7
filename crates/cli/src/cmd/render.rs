//! One-line human summaries of events for tables.

use crypy_core::time::format_utc;
use crypy_core::{Envelope, Event};
use serde_json::Value;

/// The table's header, aligned with [`row`].
pub fn header() -> String {
    format!("{:>9} {:>3} {:<21} {:<12} {:<22} {:>7}  {}", "SEQ", "RUN", "TIME (UTC)", "SOURCE", "KIND", "CAUSE", "DATA")
}

pub fn row(e: &Envelope) -> String {
    let cause = e.cause.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
    format!(
        "{:>9} {:>3} {:<21} {:<12} {:<22} {:>7}  {}",
        e.seq,
        e.run,
        format_utc(e.time),
        e.source.to_string(),
        e.kind().name(),
        cause,
        summary(&e.event)
    )
}

/// The payload in a few words: candles and trades in market notation, everything else as
/// `key=value` pairs of its JSON form.
pub fn summary(event: &Event) -> String {
    match event {
        Event::Candle(c) => format!(
            "{} {} open {} O {} H {} L {} C {} V {}",
            c.pair,
            c.interval,
            format_utc(c.open_time),
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume
        ),
        Event::Trade(t) => format!("{} {} {} @ {}", t.pair, t.side.map_or("?", |s| s.as_str()), t.qty, t.price),
        Event::Quote(q) => format!("{} bid {} x {} ask {} x {}", q.pair, q.bid, q.bid_qty, q.ask, q.ask_qty),
        other => flatten(&other.data_json()),
    }
}

fn flatten(value: &Value) -> String {
    match value {
        Value::Object(map) => map.iter().map(|(k, v)| format!("{k}={}", scalar(v))).collect::<Vec<_>>().join(" "),
        other => scalar(other),
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) if !s.is_empty() && !s.contains(char::is_whitespace) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}
