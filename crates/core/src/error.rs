use thiserror::Error;

/// A domain value could not be read from text or from its binary form.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Not a decimal number, or one outside the 96-bit mantissa / 28-digit scale range.
    #[error("invalid decimal {text:?}: {reason}")]
    Decimal { text: String, reason: String },
    /// A price must be strictly positive.
    #[error("price must be positive, got {0}")]
    NonPositivePrice(String),
    /// An asset code is 1 to 16 characters among A-Z, 0-9 and '.'.
    #[error("invalid asset {0:?}: expected 1-16 characters among A-Z, 0-9 and '.'")]
    Asset(String),
    /// A pair is written `BASE/QUOTE`, e.g. `XBT/EUR`.
    #[error("invalid pair {0:?}: expected BASE/QUOTE, e.g. XBT/EUR")]
    Pair(String),
    /// See [`crate::AgentId`] for the accepted shapes.
    #[error("invalid agent id {0:?}: expected <exchange>:<account>, <ASSET>, <BASE/QUOTE>#<generation> or @<name>")]
    AgentId(String),
    /// Intervals are a number with a unit: `1m`, `15m`, `1h`, `4h`, `1d`, `1w`, or seconds (`900s`).
    #[error("invalid interval {0:?}: expected e.g. 1m, 15m, 1h, 1d or 900s")]
    Interval(String),
    /// Unknown name for an enumerated value (side, order kind, event kind, venue…).
    #[error("unknown {what} {got:?}; expected one of: {expected}")]
    Unknown { what: &'static str, got: String, expected: String },
    /// A client order id is 1 to 64 printable ASCII characters without spaces.
    #[error("invalid client order id {0:?}: expected 1-64 printable ASCII characters, no spaces")]
    ClientOrderId(String),
}
