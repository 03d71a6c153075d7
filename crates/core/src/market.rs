//! Market data: what a venue (or the simulator) says about prices.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Pair, ParseError, Price, Qty, Side};

/// A candle's length, in whole seconds. Text form: `1m`, `15m`, `1h`, `1d`, `1w`, or `Ns`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interval(u32);

impl Interval {
    /// # Errors
    /// [`ParseError::Interval`] for zero.
    pub fn from_secs(secs: u32) -> Result<Self, ParseError> {
        if secs == 0 {
            return Err(ParseError::Interval("0s".into()));
        }
        Ok(Self(secs))
    }
    pub fn secs(self) -> u32 {
        self.0
    }
    pub fn millis(self) -> i64 {
        i64::from(self.0) * 1000
    }
}

impl FromStr for Interval {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::Interval(s.to_owned());
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (num, unit) = s.split_at(split);
        let n: u32 = num.parse().map_err(|_| bad())?;
        let unit_secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(bad()),
        };
        Self::from_secs(n.checked_mul(unit_secs).ok_or_else(bad)?).map_err(|_| bad())
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        for (unit, len) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
            if s.is_multiple_of(len) {
                return write!(f, "{}{unit}", s / len);
            }
        }
        write!(f, "{s}s")
    }
}

impl fmt::Debug for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Interval({self})")
    }
}

/// Text in JSON (`"15m"`), seconds in the binary log.
impl Serialize for Interval {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u32(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if d.is_human_readable() {
            String::deserialize(d)?.parse().map_err(D::Error::custom)
        } else {
            Interval::from_secs(u32::deserialize(d)?).map_err(D::Error::custom)
        }
    }
}

/// One OHLCV bar. `open_time` is the start of the interval (ms since the Unix epoch); the
/// candle is known only at `open_time + interval`, which is the time its event carries.
///
/// `open` is not required to lie within `[low, high]`: BitMEX sets each bucket's open to the
/// previous close, which real data shows outside the bucket's own range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candle {
    pub pair: Pair,
    pub interval: Interval,
    pub open_time: i64,
    pub open: Price,
    pub high: Price,
    pub low: Price,
    pub close: Price,
    /// In the base asset.
    pub volume: Qty,
    /// Number of trades in the bar, when the source says.
    pub trades: Option<u64>,
}

impl Candle {
    /// When the bar closes: the earliest moment it can be known.
    pub fn close_time(&self) -> i64 {
        self.open_time + self.interval.millis()
    }

    /// Checks what every real source guarantees: `low <= close <= high` and a non-negative
    /// volume. (`open` is deliberately not checked; see the type's doc.)
    pub fn check(&self) -> Result<(), String> {
        if self.low > self.high {
            return Err(format!("low {} is above high {}", self.low, self.high));
        }
        if self.close < self.low || self.close > self.high {
            return Err(format!("close {} is outside [low {}, high {}]", self.close, self.low, self.high));
        }
        if self.volume.is_sign_negative() {
            return Err(format!("volume {} is negative", self.volume));
        }
        Ok(())
    }
}

/// One public trade on a venue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    pub pair: Pair,
    pub price: Price,
    pub qty: Qty,
    /// The taker's side, when the venue says.
    pub side: Option<Side>,
    /// The venue's trade id, when it has one.
    pub trade_id: Option<String>,
}

/// Best bid and ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub pair: Pair,
    pub bid: Price,
    pub bid_qty: Qty,
    pub ask: Price,
    pub ask_qty: Qty,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_and_print() {
        for (text, secs) in [("1m", 60), ("15m", 900), ("1h", 3600), ("1d", 86_400), ("90s", 90)] {
            let i: Interval = text.parse().unwrap();
            assert_eq!(i.secs(), secs);
            assert_eq!(i.to_string(), text);
        }
        assert_eq!("60m".parse::<Interval>().unwrap().to_string(), "1h");
        for bad in ["", "m", "0m", "15", "15x", "-1m", "99999999999d"] {
            assert!(bad.parse::<Interval>().is_err(), "{bad:?} accepted");
        }
    }
}
