//! Indicators: one value per bar, `NaN` until enough bars have been seen.
//!
//! | indicator | first valid index | definition |
//! |-----------|-------------------|------------|
//! | `sma(n)`  | `n - 1` | mean of the last `n` closes |
//! | `ema(n)`  | `n - 1` | `α = 2/(n+1)`, seeded with the SMA of the first `n` closes |
//! | `rsi(n)`  | `n`     | Wilder's: gains and losses smoothed with `α = 1/n`, seeded with their mean over the first `n` changes; `100 - 100/(1 + gain/loss)` |

use std::collections::HashMap;
use std::fmt;

/// An indicator computed over a whole window at once.
pub trait Indicator: Send + Sync + fmt::Debug {
    /// What it is, for caching and display.
    fn key(&self) -> IndicatorKey;
    /// Writes one value per close into `out` (resized to `closes.len()`).
    fn compute(&self, closes: &[f64], out: &mut Vec<f64>);
}

/// Names an indicator and its parameter: two equal keys compute the same series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndicatorKey {
    Sma(u32),
    Ema(u32),
    Rsi(u32),
}

impl IndicatorKey {
    /// The built-in indicator this key names.
    pub fn indicator(self) -> Box<dyn Indicator> {
        match self {
            IndicatorKey::Sma(n) => Box::new(Sma(n)),
            IndicatorKey::Ema(n) => Box::new(Ema(n)),
            IndicatorKey::Rsi(n) => Box::new(Rsi(n)),
        }
    }
}

impl fmt::Display for IndicatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndicatorKey::Sma(n) => write!(f, "sma({n})"),
            IndicatorKey::Ema(n) => write!(f, "ema({n})"),
            IndicatorKey::Rsi(n) => write!(f, "rsi({n})"),
        }
    }
}

/// Sizes `out` to `len` values, all `NaN`; `false` when the series is too short to have a
/// value at `first_valid`, in which case it stays all `NaN`.
fn nan_until(out: &mut Vec<f64>, len: usize, first_valid: usize) -> bool {
    out.clear();
    out.resize(len, f64::NAN);
    len > first_valid
}

#[derive(Clone, Copy, Debug)]
pub struct Sma(pub u32);

impl Indicator for Sma {
    fn key(&self) -> IndicatorKey {
        IndicatorKey::Sma(self.0)
    }

    /// A running sum over the window, rebuilt from scratch every `n` bars so that rounding
    /// errors never accumulate over long windows.
    fn compute(&self, closes: &[f64], out: &mut Vec<f64>) {
        let n = self.0.max(1) as usize;
        if !nan_until(out, closes.len(), n - 1) {
            return;
        }
        let inv = 1.0 / n as f64;
        let mut sum: f64 = closes[..n].iter().sum();
        out[n - 1] = sum * inv;
        for t in n..closes.len() {
            if (t - n + 1).is_multiple_of(n) {
                sum = closes[t + 1 - n..=t].iter().sum();
            } else {
                sum += closes[t] - closes[t - n];
            }
            out[t] = sum * inv;
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Ema(pub u32);

impl Indicator for Ema {
    fn key(&self) -> IndicatorKey {
        IndicatorKey::Ema(self.0)
    }

    fn compute(&self, closes: &[f64], out: &mut Vec<f64>) {
        let n = self.0.max(1) as usize;
        if !nan_until(out, closes.len(), n - 1) {
            return;
        }
        let alpha = 2.0 / (n as f64 + 1.0);
        let mut ema = closes[..n].iter().sum::<f64>() / n as f64;
        out[n - 1] = ema;
        for t in n..closes.len() {
            ema += alpha * (closes[t] - ema);
            out[t] = ema;
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Rsi(pub u32);

impl Indicator for Rsi {
    fn key(&self) -> IndicatorKey {
        IndicatorKey::Rsi(self.0)
    }

    fn compute(&self, closes: &[f64], out: &mut Vec<f64>) {
        let n = self.0.max(1) as usize;
        if !nan_until(out, closes.len(), n) {
            return;
        }
        let (mut gain, mut loss) = (0.0, 0.0);
        for t in 1..=n {
            let d = closes[t] - closes[t - 1];
            if d > 0.0 {
                gain += d;
            } else {
                loss -= d;
            }
        }
        gain /= n as f64;
        loss /= n as f64;
        out[n] = rsi_of(gain, loss);
        let alpha = 1.0 / n as f64;
        for t in n + 1..closes.len() {
            let d = closes[t] - closes[t - 1];
            gain += alpha * (d.max(0.0) - gain);
            loss += alpha * ((-d).max(0.0) - loss);
            out[t] = rsi_of(gain, loss);
        }
    }
}

/// One indicator updated bar by bar, for a trader that follows a pair as it trades: after
/// the same closes it holds exactly (bit for bit) the last value [`Indicator::compute`] gives,
/// so streaming and whole-window evaluations see the same signals.
#[derive(Clone, Debug)]
pub struct Stream {
    key: IndicatorKey,
    n: usize,
    /// Closes seen so far.
    seen: usize,
    /// Closes the ring holds once full: `n`, or `n + 1` for RSI's `n` changes.
    size: usize,
    /// The last `n` closes (the last `n + 1` for RSI), oldest at `head`.
    ring: Vec<f64>,
    head: usize,
    /// SMA: the running sum; EMA: the average; RSI: the smoothed gain.
    a: f64,
    /// RSI: the smoothed loss.
    b: f64,
    last: f64,
    value: f64,
}

impl Stream {
    pub fn new(key: IndicatorKey) -> Self {
        let n = match key {
            IndicatorKey::Sma(n) | IndicatorKey::Ema(n) | IndicatorKey::Rsi(n) => n.max(1) as usize,
        };
        let size = if matches!(key, IndicatorKey::Rsi(_)) { n + 1 } else { n };
        Stream {
            key,
            n,
            seen: 0,
            size,
            ring: Vec::with_capacity(size),
            head: 0,
            a: 0.0,
            b: 0.0,
            last: f64::NAN,
            value: f64::NAN,
        }
    }

    pub fn key(&self) -> IndicatorKey {
        self.key
    }

    /// The current value, `NaN` until enough closes have been seen.
    pub fn value(&self) -> f64 {
        self.value
    }

    /// The ring's closes, oldest first.
    fn oldest_first(&self) -> impl Iterator<Item = f64> + '_ {
        self.ring[self.head..].iter().chain(&self.ring[..self.head]).copied()
    }

    fn remember(&mut self, close: f64) -> Option<f64> {
        if self.ring.len() < self.size {
            self.ring.push(close);
            None
        } else {
            let dropped = std::mem::replace(&mut self.ring[self.head], close);
            self.head = (self.head + 1) % self.size;
            Some(dropped)
        }
    }

    /// Takes the next close; returns the new value.
    pub fn push(&mut self, close: f64) -> f64 {
        let t = self.seen;
        self.seen += 1;
        let n = self.n;
        let previous = std::mem::replace(&mut self.last, close);
        let dropped = self.remember(close);
        match self.key {
            IndicatorKey::Sma(_) => {
                if t + 1 < n {
                    return self.value;
                }
                if t + 1 == n || (t - n + 1).is_multiple_of(n) {
                    self.a = self.oldest_first().sum();
                } else {
                    self.a += close - dropped.expect("the ring is full past warm-up");
                }
                self.value = self.a * (1.0 / n as f64);
            }
            IndicatorKey::Ema(_) => {
                if t + 1 < n {
                    return self.value;
                }
                if t + 1 == n {
                    self.a = self.oldest_first().sum::<f64>() / n as f64;
                } else {
                    self.a += 2.0 / (n as f64 + 1.0) * (close - self.a);
                }
                self.value = self.a;
            }
            IndicatorKey::Rsi(_) => {
                if t < n {
                    return self.value;
                }
                if t == n {
                    let closes: Vec<f64> = self.oldest_first().collect();
                    let (mut gain, mut loss) = (0.0, 0.0);
                    for w in closes.windows(2) {
                        let d = w[1] - w[0];
                        if d > 0.0 {
                            gain += d;
                        } else {
                            loss -= d;
                        }
                    }
                    self.a = gain / n as f64;
                    self.b = loss / n as f64;
                } else {
                    let d = close - previous;
                    let alpha = 1.0 / n as f64;
                    self.a += alpha * (d.max(0.0) - self.a);
                    self.b += alpha * ((-d).max(0.0) - self.b);
                }
                self.value = rsi_of(self.a, self.b);
            }
        }
        self.value
    }
}

fn rsi_of(gain: f64, loss: f64) -> f64 {
    if loss == 0.0 {
        if gain == 0.0 {
            50.0
        } else {
            100.0
        }
    } else {
        100.0 - 100.0 / (1.0 + gain / loss)
    }
}

/// Every indicator series one evaluation needs, each computed once and shared by all the
/// variants that use it.
#[derive(Debug, Default)]
pub struct IndicatorCache {
    series: HashMap<IndicatorKey, Vec<f64>>,
    /// `prefix[t] = closes[0] + … + closes[t-1]`, compensated (Kahan) so that differences of
    /// far-apart sums stay accurate: every SMA of the grid is then one subtraction per bar.
    prefix: Vec<f64>,
}

impl IndicatorCache {
    /// Computes every key in `keys` not computed yet.
    pub fn fill(&mut self, closes: &[f64], keys: impl IntoIterator<Item = IndicatorKey>) {
        for key in keys {
            if self.series.contains_key(&key) {
                continue;
            }
            let mut out = Vec::new();
            match key {
                IndicatorKey::Sma(n) => self.sma_from_prefix(closes, n.max(1) as usize, &mut out),
                other => other.indicator().compute(closes, &mut out),
            }
            self.series.insert(key, out);
        }
    }

    fn sma_from_prefix(&mut self, closes: &[f64], n: usize, out: &mut Vec<f64>) {
        if self.prefix.len() != closes.len() + 1 {
            self.prefix.clear();
            self.prefix.push(0.0);
            let (mut sum, mut carry) = (0.0f64, 0.0f64);
            for c in closes {
                let y = c - carry;
                let t = sum + y;
                carry = (t - sum) - y;
                sum = t;
                self.prefix.push(sum);
            }
        }
        if !nan_until(out, closes.len(), n - 1) {
            return;
        }
        let inv = 1.0 / n as f64;
        let (hi, lo) = (&self.prefix[n..], &self.prefix[..=closes.len() - n]);
        for ((o, h), l) in out[n - 1..].iter_mut().zip(hi).zip(lo) {
            *o = (h - l) * inv;
        }
    }

    /// The series for `key`.
    ///
    /// # Panics
    /// If `key` was not part of a [`fill`](Self::fill): strategies declare what they need.
    pub fn get(&self, key: IndicatorKey) -> &[f64] {
        self.series.get(&key).unwrap_or_else(|| panic!("indicator {key} was not computed"))
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive_sma(closes: &[f64], n: usize, t: usize) -> f64 {
        closes[t + 1 - n..=t].iter().sum::<f64>() / n as f64
    }

    proptest! {
        #[test]
        fn sma_matches_the_mean_of_the_window(closes in proptest::collection::vec(1.0f64..100_000.0, 1..400), n in 1u32..50) {
            let mut out = Vec::new();
            Sma(n).compute(&closes, &mut out);
            for (t, v) in out.iter().enumerate() {
                if t + 1 < n as usize {
                    prop_assert!(v.is_nan());
                } else {
                    let want = naive_sma(&closes, n as usize, t);
                    prop_assert!((v - want).abs() <= want.abs() * 1e-12, "t={} got {} want {}", t, v, want);
                }
            }
        }

        #[test]
        fn the_cached_sma_agrees_with_the_direct_one(closes in proptest::collection::vec(1.0f64..100_000.0, 1..600), n in 1u32..80) {
            let mut direct = Vec::new();
            Sma(n).compute(&closes, &mut direct);
            let mut cache = IndicatorCache::default();
            cache.fill(&closes, [IndicatorKey::Sma(n)]);
            // Each stored prefix is within an ulp of the running total, so an SMA is within
            // a few ulps of the total, divided by n.
            let bound = 4.0 * f64::EPSILON * closes.iter().sum::<f64>() / f64::from(n);
            for (a, b) in direct.iter().zip(cache.get(IndicatorKey::Sma(n))) {
                prop_assert!((a.is_nan() && b.is_nan()) || (a - b).abs() <= bound, "{} vs {} (bound {})", a, b, bound);
            }
        }

        #[test]
        fn a_stream_holds_what_the_whole_series_computes(closes in proptest::collection::vec(1.0f64..100_000.0, 1..400), n in 1u32..40, kind in 0u8..3) {
            let key = match kind { 0 => IndicatorKey::Sma(n), 1 => IndicatorKey::Ema(n), _ => IndicatorKey::Rsi(n) };
            let mut whole = Vec::new();
            key.indicator().compute(&closes, &mut whole);
            let mut stream = Stream::new(key);
            for (t, c) in closes.iter().enumerate() {
                let v = stream.push(*c);
                prop_assert!(v.to_bits() == whole[t].to_bits() || (v.is_nan() && whole[t].is_nan()), "{} at {}: {} vs {}", key, t, v, whole[t]);
            }
        }

        #[test]
        fn rsi_stays_within_0_and_100(closes in proptest::collection::vec(1.0f64..1000.0, 2..300), n in 1u32..30) {
            let mut out = Vec::new();
            Rsi(n).compute(&closes, &mut out);
            prop_assert!(out.iter().filter(|v| !v.is_nan()).all(|v| (0.0..=100.0).contains(v)));
        }
    }

    #[test]
    fn ema_is_seeded_with_the_sma_then_smooths() {
        let closes = [1.0, 2.0, 3.0, 4.0, 5.0];
        let mut out = Vec::new();
        Ema(3).compute(&closes, &mut out);
        assert!(out[0].is_nan() && out[1].is_nan());
        assert_eq!(out[2], 2.0);
        assert_eq!(out[3], 2.0 + 0.5 * (4.0 - 2.0));
        assert_eq!(out[4], 3.0 + 0.5 * (5.0 - 3.0));
    }

    #[test]
    fn rsi_of_a_steady_rise_is_100_and_of_a_fall_is_0() {
        let up: Vec<f64> = (1..30).map(f64::from).collect();
        let down: Vec<f64> = up.iter().rev().copied().collect();
        let mut out = Vec::new();
        Rsi(14).compute(&up, &mut out);
        assert_eq!(out[20], 100.0);
        Rsi(14).compute(&down, &mut out);
        assert_eq!(out[20], 0.0);
    }
}
