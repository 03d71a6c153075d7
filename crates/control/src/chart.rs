//! The `chart` command: a small terminal chart of a pair's price and the desk's equity, from
//! what the terminal has seen go by (no extra work for the desk).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

use crypy_agents::template::{DeskTemplate, Templates, FILES};
use crypy_core::event::TemplateScope;
use crypy_core::{Asset, Envelope, Event, Money, Pair};

/// Points kept per series: enough for a chart, bounded however long the desk runs.
const KEEP: usize = 4_096;
const ROWS: usize = 8;
const COLUMNS: usize = 64;

/// Prices and equity as the events went by.
#[derive(Debug)]
pub struct History {
    trusted: Asset,
    balances: BTreeMap<Asset, Money>,
    last: BTreeMap<Pair, f64>,
    newest: BTreeMap<Pair, i64>,
    closes: BTreeMap<Pair, VecDeque<f64>>,
    equity: VecDeque<f64>,
}

impl Default for History {
    fn default() -> Self {
        History {
            trusted: Templates::default().desk.trusted_asset,
            balances: BTreeMap::new(),
            last: BTreeMap::new(),
            newest: BTreeMap::new(),
            closes: BTreeMap::new(),
            equity: VecDeque::new(),
        }
    }
}

fn push(series: &mut VecDeque<f64>, v: f64) {
    if series.len() == KEEP {
        series.pop_front();
    }
    series.push_back(v);
}

impl History {
    pub fn see(&mut self, e: &Envelope) {
        match &e.event {
            Event::TemplateChanged(t) if t.scope == TemplateScope::Desk && t.key == FILES[0].0 => {
                if let Some(desk) = t.new.as_deref().and_then(|text| DeskTemplate::parse(FILES[0].0, text).ok()) {
                    self.trusted = desk.trusted_asset;
                }
            }
            Event::Balances(b) => self.balances = b.balances.iter().map(|x| (x.asset, x.total())).collect(),
            Event::OrderFilled(f) | Event::OrderPartiallyFilled(f) => {
                for (asset, amount) in f.balance_changes() {
                    *self.balances.entry(asset).or_default() += amount;
                }
            }
            // A repeated or stale candle moves nothing, as for the agents.
            Event::Candle(c) if self.newest.get(&c.pair).is_none_or(|t| c.open_time > *t) => {
                self.newest.insert(c.pair, c.open_time);
                let close = c.close.to_f64();
                self.last.insert(c.pair, close);
                push(self.closes.entry(c.pair).or_default(), close);
                let equity = self.equity_now();
                push(&mut self.equity, equity);
            }
            _ => {}
        }
    }

    fn equity_now(&self) -> f64 {
        self.balances
            .iter()
            .map(|(asset, amount)| {
                if *asset == self.trusted {
                    amount.to_f64()
                } else {
                    let price = self.last.iter().find(|(p, _)| p.base == *asset && p.quote == self.trusted);
                    price.map_or(0.0, |(_, close)| amount.to_f64() * close)
                }
            })
            .sum()
    }

    /// The chart of `pair`'s price and the desk's equity.
    pub fn chart(&self, pair: Pair) -> String {
        let closes: Vec<f64> = self.closes.get(&pair).map(|c| c.iter().copied().collect()).unwrap_or_default();
        if closes.is_empty() {
            return format!("no {pair} candle seen yet");
        }
        let equity: Vec<f64> = self.equity.iter().copied().collect();
        let mut text = plot(&format!("{pair} close, last {} candles", closes.len()), &closes);
        text.push('\n');
        text.push_str(&plot(&format!("equity in {}, at the same candles of every pair", self.trusted), &equity));
        text
    }
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
