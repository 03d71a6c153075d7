//! Kraken's REST call counter, kept on our side so that we wait before Kraken refuses.
//!
//! Each private call adds to a counter (most calls 1, ledger and trade history 2; AddOrder and
//! CancelOrder are counted by the trading engine instead); the counter decays continuously at
//! the tier's rate, and a call that would take it over the tier's maximum is refused with
//! `EAPI:Rate limit exceeded`. Times are milliseconds on any monotonic clock.

/// Kraken's verification tiers and their counters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tier {
    /// Max 15, decays 0.33 per second.
    Starter,
    /// Max 20, decays 0.5 per second.
    Intermediate,
    /// Max 20, decays 1 per second.
    Pro,
}

impl Tier {
    fn params(self) -> (f64, f64) {
        match self {
            Tier::Starter => (15.0, 0.33),
            Tier::Intermediate => (20.0, 0.5),
            Tier::Pro => (20.0, 1.0),
        }
    }
}

/// What a REST call costs on the counter.
pub fn cost(path: &str) -> f64 {
    match path.rsplit('/').next().unwrap_or("") {
        "Ledgers" | "QueryLedgers" | "TradesHistory" | "QueryTrades" => 2.0,
        "AddOrder" | "CancelOrder" | "AddOrderBatch" | "EditOrder" | "CancelAll" => 0.0,
        _ => 1.0,
    }
}

/// The counter; see the module doc.
#[derive(Clone, Debug)]
pub struct CallCounter {
    max: f64,
    decay_per_ms: f64,
    counter: f64,
    at_ms: u64,
}

impl CallCounter {
    pub fn new(tier: Tier) -> Self {
        let (max, per_s) = tier.params();
        CallCounter { max, decay_per_ms: per_s / 1000.0, counter: 0.0, at_ms: 0 }
    }

    fn decay_to(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64;
        self.counter = (self.counter - elapsed * self.decay_per_ms).max(0.0);
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Counts a call of `cost` at `now_ms` if the counter allows it; otherwise says how many
    /// milliseconds to wait first.
    pub fn admit(&mut self, now_ms: u64, cost: f64) -> Result<(), u64> {
        self.decay_to(now_ms);
        if self.counter + cost <= self.max {
            self.counter += cost;
            Ok(())
        } else {
            let excess = self.counter + cost - self.max;
            Err((excess / self.decay_per_ms).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_fills_the_counter_then_waits_for_decay() {
        let mut c = CallCounter::new(Tier::Starter);
        for i in 0..15 {
            assert_eq!(c.admit(0, 1.0), Ok(()), "call {i}");
        }
        let wait = c.admit(0, 1.0).unwrap_err();
        assert_eq!(wait, 3031, "one call's worth decays in 1 / 0.33 s");
        assert!(c.admit(wait - 10, 1.0).is_err());
        assert_eq!(c.admit(wait, 1.0), Ok(()));
        // Ledgers cost 2; orders are not counted here.
        assert_eq!(cost("/0/private/Ledgers"), 2.0);
        assert_eq!(cost("/0/private/AddOrder"), 0.0);
        assert_eq!(cost("/0/private/Balance"), 1.0);
    }

    #[test]
    fn a_steady_rate_under_the_decay_never_waits() {
        let mut c = CallCounter::new(Tier::Pro);
        for i in 0..10_000u64 {
            assert_eq!(c.admit(i * 1000, 1.0), Ok(()), "call {i}");
        }
    }
}
