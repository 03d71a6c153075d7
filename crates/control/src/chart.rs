//! The `chart` command: a small terminal chart of a pair's price and the desk's equity, from
//! the run's log read back on demand (`Desk::run_summary`), so the desk keeps nothing per
//! event for it.

use std::fmt::Write as _;

use crypy_core::Pair;
use crypy_dataflow::summary::RunSummary;

/// Points drawn at most: the latest ones.
const KEEP: usize = 4_096;
const ROWS: usize = 8;
const COLUMNS: usize = 64;

/// The chart of `pair`'s closes and the desk's equity over the run summarized in `run`.
pub fn chart(run: &RunSummary, pair: Pair) -> String {
    let latest = |series: &[(i64, f64)]| -> Vec<f64> {
        series[series.len().saturating_sub(KEEP)..].iter().map(|(_, v)| *v).collect()
    };
    let closes = latest(run.series.closes.get(&pair).map_or(&[][..], Vec::as_slice));
    if closes.is_empty() {
        return format!("no {pair} candle seen yet");
    }
    let equity = latest(&run.series.equity);
    let mut text = plot(&format!("{pair} close, last {} candles", closes.len()), &closes);
    text.push('\n');
    text.push_str(&plot(&format!("equity in {}, at the same candles of every pair", run.trusted), &equity));
    text
}

/// A `ROWS`-line plot of `values` squeezed into `COLUMNS` columns (each the last value of its
/// share), with its range on the left.
pub fn plot(title: &str, values: &[f64]) -> String {
    let mut text = format!("{title}\n");
    if values.is_empty() {
        text.push_str("(nothing yet)");
        return text;
    }
    let columns: Vec<f64> = (0..COLUMNS.min(values.len()))
        .map(|i| values[((i + 1) * values.len()).div_ceil(COLUMNS.min(values.len())) - 1])
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let level = |v: f64| (((v - lo) / span) * (ROWS - 1) as f64).round() as usize;
    let width = format!("{hi:.2}").len().max(format!("{lo:.2}").len());
    for row in (0..ROWS).rev() {
        let label = match row {
            r if r == ROWS - 1 => format!("{hi:>width$.2}"),
            0 => format!("{lo:>width$.2}"),
            _ => " ".repeat(width),
        };
        let line: String = columns.iter().map(|v| if level(*v) == row { '•' } else { ' ' }).collect();
        let _ = writeln!(text, "{label} │{}", line.trim_end());
    }
    text.pop();
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rising_series_climbs_from_the_bottom_left_to_the_top_right() {
        let values: Vec<f64> = (0..200).map(f64::from).collect();
        let text = plot("rising", &values);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + ROWS);
        assert!(lines[1].starts_with("199.00 │") && lines[1].ends_with('•'), "{text}");
        assert!(lines[ROWS].starts_with("  0.00 │•"), "{text}");
    }

    #[test]
    fn flat_and_empty_series_are_drawn_without_dividing_by_nothing() {
        assert!(plot("flat", &[5.0; 10]).contains("5.00 │••••••••••"));
        assert!(plot("none", &[]).contains("nothing yet"));
    }
}
