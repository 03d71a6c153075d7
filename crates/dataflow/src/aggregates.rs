//! Incremental aggregates, maintained by differential dataflow beside the agents: the net
//! change of each asset's balance from fills, and each strategy's realized P&L.
//!
//! Amounts travel as exact fixed-point integers, the decimal times 10^16 in an `i128`, so
//! that differential's integer differences add them exactly; an amount with more than 16
//! decimals, or too large to convert back, is reported rather than rounded.

use std::collections::BTreeMap;

use crypy_core::{ClientOrderId, Event, Side};
use rust_decimal::Decimal;

/// Decimal places of the fixed-point amounts.
pub const SCALE: u32 = 16;

/// The fixed-point form of `d`, or `None` when it has more than [`SCALE`] decimals or
/// overflows.
pub fn to_fixed(d: Decimal) -> Option<i128> {
    let d = d.normalize();
    if d.scale() > SCALE {
        return None;
    }
    d.mantissa().checked_mul(10i128.checked_pow(SCALE - d.scale())?)
}

/// The decimal a fixed-point amount stands for, or `None` when it is out of range.
pub fn from_fixed(v: i128) -> Option<Decimal> {
    Decimal::try_from_i128_with_scale(v, SCALE).ok().map(|d| d.normalize())
}

/// What a fill does to the books: `(key, amount)` updates, keys `asset:<ASSET>` for balances
/// and `strategy:<variant>` for realized P&L. Keeps the little state it needs to know which
/// strategy an order serves (proposal → allocation → order).
#[derive(Debug, Default)]
pub struct Ledger {
    proposal_strategy: BTreeMap<u64, String>,
    allocation_strategy: BTreeMap<u64, String>,
    order_strategy: BTreeMap<ClientOrderId, String>,
    /// Amounts that could not be represented exactly (never silently rounded).
    pub unrepresentable: u64,
}

impl Ledger {
    /// The strategy an order serves, when it was placed under an allocation.
    pub fn strategy_of(&self, order: &ClientOrderId) -> Option<&str> {
        self.order_strategy.get(order).map(String::as_str)
    }

    /// Learns from `event` which strategy each order serves (proposal → allocation →
    /// order): all a reader of [`strategy_of`](Self::strategy_of) needs.
    pub fn learn(&mut self, event: &Event) {
        match event {
            Event::StrategyProposed(p) => {
                self.proposal_strategy.insert(p.proposal, p.strategy.clone());
            }
            Event::AllocationGranted(a) => {
                if let Some(s) = self.proposal_strategy.get(&a.proposal) {
                    self.allocation_strategy.insert(a.id, s.clone());
                }
            }
            Event::OrderRequested(r) => {
                if let Some(s) = r.allocation.and_then(|a| self.allocation_strategy.get(&a)) {
                    self.order_strategy.insert(r.client_id.clone(), s.clone());
                }
            }
            _ => {}
        }
    }

    /// The updates `event` implies, in a fixed order (learning from it as [`learn`](Self::learn)
    /// does).
    pub fn updates(&mut self, event: &Event) -> Vec<(String, i128)> {
        self.learn(event);
        let (Event::OrderFilled(f) | Event::OrderPartiallyFilled(f)) = event else { return Vec::new() };
        let value = f.price.value() * f.qty.value();
        let fee = f.fee.value();
        let (quote, base) = match f.side {
            Side::Buy => (-(value + fee), f.qty.value()),
            Side::Sell => (value - fee, -f.qty.value()),
        };
        let mut out = Vec::new();
        // Concatenated, not formatted: this runs at every fill of a replay's worker.
        for (key, amount) in
            [(["asset:", f.pair.quote.as_str()].concat(), quote), (["asset:", f.pair.base.as_str()].concat(), base)]
        {
            match to_fixed(amount) {
                Some(v) => out.push((key, v)),
                None => self.unrepresentable += 1,
            }
        }
        if let Some(s) = self.order_strategy.get(&f.client_id) {
            match to_fixed(quote) {
                Some(v) => out.push((["strategy:", s].concat(), v)),
                None => self.unrepresentable += 1,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_is_exact_or_refused() {
        for text in ["0", "25.9298360662484", "-10780.967762435476", "0.0000000000000001"] {
            let d: Decimal = text.parse().unwrap();
            assert_eq!(from_fixed(to_fixed(d).unwrap()), Some(d.normalize()), "{text}");
        }
        assert_eq!(to_fixed("0.00000000000000001".parse().unwrap()), None);
    }
}
