//! Kraken's order book (WebSocket v2 `book` channel) and its checksum.
//!
//! The book keeps the subscribed depth on each side: a level with quantity 0 is removed, and
//! levels beyond the depth are dropped after every update, as Kraken's own book does. After
//! each update Kraken sends a CRC32 of its book: for the top 10 asks (price ascending) then the
//! top 10 bids (price descending), price then quantity as text at the pair's precision, without
//! the decimal point and leading zeros, all concatenated. A mismatch means our book has drifted
//! and the channel must be resubscribed.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

/// One side's levels: price → quantity.
type Levels = BTreeMap<Decimal, Decimal>;

#[derive(Clone, Debug)]
pub struct Book {
    depth: usize,
    bids: Levels,
    asks: Levels,
}

fn apply_side(levels: &mut Levels, updates: &[(Decimal, Decimal)]) {
    for (price, qty) in updates {
        if qty.is_zero() {
            levels.remove(price);
        } else {
            levels.insert(*price, *qty);
        }
    }
}

/// `d` with exactly `dp` decimals, truncated or padded as Decimal's `{:.dp$}` does; that
/// format panics once the digits pass its 32-byte buffer (1000 at 28 decimals, say).
fn fixed(d: Decimal, dp: usize) -> String {
    let text = d.to_string();
    let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut out = String::with_capacity(whole.len() + 1 + dp);
    out.push_str(whole);
    if dp > 0 {
        out.push('.');
        out.extend(frac.chars().chain(std::iter::repeat('0')).take(dp));
    }
    out
}

fn checksum_text(price: Decimal, qty: Decimal, price_dp: usize, qty_dp: usize, out: &mut String) {
    for text in [fixed(price, price_dp), fixed(qty, qty_dp)] {
        let digits: String = text.chars().filter(|c| *c != '.').collect();
        let trimmed = digits.trim_start_matches('0');
        out.push_str(if trimmed.is_empty() { "0" } else { trimmed });
    }
}

impl Book {
    pub fn new(depth: usize) -> Self {
        Book { depth, bids: Levels::new(), asks: Levels::new() }
    }

    /// Replaces the book with a snapshot.
    pub fn snapshot(&mut self, bids: &[(Decimal, Decimal)], asks: &[(Decimal, Decimal)]) {
        self.bids.clear();
        self.asks.clear();
        self.update(bids, asks);
    }

    /// Applies an update, then keeps only the subscribed depth.
    pub fn update(&mut self, bids: &[(Decimal, Decimal)], asks: &[(Decimal, Decimal)]) {
        apply_side(&mut self.bids, bids);
        apply_side(&mut self.asks, asks);
        while self.bids.len() > self.depth {
            self.bids.pop_first();
        }
        while self.asks.len() > self.depth {
            self.asks.pop_last();
        }
    }

    pub fn best_bid(&self) -> Option<(Decimal, Decimal)> {
        self.bids.last_key_value().map(|(p, q)| (*p, *q))
    }

    pub fn best_ask(&self) -> Option<(Decimal, Decimal)> {
        self.asks.first_key_value().map(|(p, q)| (*p, *q))
    }

    /// Kraken's checksum of the top 10 levels, at the pair's precisions.
    pub fn checksum(&self, price_dp: usize, qty_dp: usize) -> u32 {
        let mut text = String::with_capacity(20 * 24);
        for (p, q) in self.asks.iter().take(10) {
            checksum_text(*p, *q, price_dp, qty_dp, &mut text);
        }
        for (p, q) in self.bids.iter().rev().take(10) {
            checksum_text(*p, *q, price_dp, qty_dp, &mut text);
        }
        crc32fast::hash(text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(levels: &serde_json::Value) -> Vec<(Decimal, Decimal)> {
        // The recording holds floats; Kraken's text is the number at the pair's precision.
        levels
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let p = format!("{:.1}", l["price"].as_f64().unwrap());
                let q = format!("{:.8}", l["qty"].as_f64().unwrap());
                (p.parse().unwrap(), q.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn every_recorded_checksum_matches_and_a_wrong_one_is_caught() {
        let text = include_str!("../../test_data/kraken/ws_v2_book_btcusd_2023-07-30.json");
        let recording: serde_json::Value = serde_json::from_str(text).unwrap();
        let snapshot = &recording["init"]["data"][0];
        let mut book = Book::new(10);
        book.snapshot(&side(&snapshot["bids"]), &side(&snapshot["asks"]));
        assert_eq!(book.checksum(1, 8), snapshot["checksum"].as_u64().unwrap() as u32, "snapshot");
        let updates = recording["updates"].as_array().unwrap();
        assert_eq!(updates.len(), 509);
        let mut last = 0;
        for (i, u) in updates.iter().enumerate() {
            let d = &u["data"][0];
            book.update(&side(&d["bids"]), &side(&d["asks"]));
            last = d["checksum"].as_u64().unwrap() as u32;
            assert_eq!(book.checksum(1, 8), last, "update {i}");
        }
        // The wrong checksum python-kraken-sdk's own test uses for the last update.
        assert_eq!(last, 2_438_878_880);
        assert_ne!(book.checksum(1, 8), 2_438_868_880);
        assert!(book.best_bid().unwrap().0 < book.best_ask().unwrap().0, "a sane book");
    }

    #[test]
    fn fixed_decimals_are_decimals_own_format_without_its_panic() {
        for (d, dp) in [("45281.0", 1), ("0.005", 8), ("-0.5", 0), ("0.5", 0), ("1.23456", 2), ("7", 3), ("0", 0)] {
            let d: Decimal = d.parse().unwrap();
            assert_eq!(fixed(d, dp), format!("{d:.dp$}"), "{d} at {dp}");
        }
        // `format!("{:.28}", 1000)` panics inside rust_decimal.
        assert_eq!(fixed(Decimal::from(1000), 28), format!("1000.{}", "0".repeat(28)));
        assert_eq!(fixed(Decimal::MAX, 30).len(), 29 + 1 + 30);
    }

    #[test]
    fn trailing_zeros_count_and_leading_zeros_do_not() {
        let mut text = String::new();
        checksum_text("45281.0".parse().unwrap(), "0.00500000".parse().unwrap(), 1, 8, &mut text);
        assert_eq!(text, "452810500000");
    }
}
