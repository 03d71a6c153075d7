//! Exact decimal money types.
//!
//! Three newtypes over [`rust_decimal::Decimal`] keep prices, quantities and amounts of money
//! from being mixed up, while arithmetic stays exact:
//!
//! | expression        | result  | note                                        |
//! |-------------------|---------|---------------------------------------------|
//! | `Price * Qty`     | `Money` | notional value, in the pair's quote asset   |
//! | `Money / Price`   | `Qty`   | `None` via [`Money::checked_div_price`] on 0 |
//! | `Qty ± Qty`       | `Qty`   | quantities may be signed (positions)        |
//! | `Money ± Money`   | `Money` | amounts may be signed (P&L)                 |
//! | `Money * Decimal` | `Money` | fees: notional times a fee rate             |
//!
//! In text (JSON, TOML, tables) every value is its exact decimal string, `"42000.5"`, never a
//! float. In the binary log each is a (mantissa, scale) pair, which round-trips exactly and is
//! validated on decode.

use std::fmt;
use std::ops::{Add, AddAssign, Mul, Neg, Sub, SubAssign};
use std::str::FromStr;

pub use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ParseError;

/// Parses an exact decimal, rejecting anything a float would round (`1e3` is refused too:
/// exchanges and our files write plain decimals).
pub fn parse_decimal(text: &str) -> Result<Decimal, ParseError> {
    let trimmed = text.trim();
    Decimal::from_str_exact(trimmed).map_err(|e| ParseError::Decimal { text: text.to_owned(), reason: e.to_string() })
}

/// Serde for a bare `Decimal`: exact string in text formats, (mantissa, scale) in binary ones.
pub mod decimal_serde {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(value)
        } else {
            // (sign bit | scale, low 64 bits, high 32 bits of the 96-bit mantissa): three
            // plain unsigned varints, which bincode decodes far faster than an i128.
            let magnitude = value.mantissa().unsigned_abs();
            let head = (value.scale() as u8) | if value.is_sign_negative() { 0x80 } else { 0 };
            (head, magnitude as u64, (magnitude >> 64) as u32).serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        use serde::de::Error;
        if d.is_human_readable() {
            struct Text;
            impl serde::de::Visitor<'_> for Text {
                type Value = Decimal;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a decimal number as a string, e.g. \"42000.5\"")
                }
                fn visit_str<E: Error>(self, v: &str) -> Result<Decimal, E> {
                    parse_decimal(v).map_err(E::custom)
                }
                fn visit_i64<E: Error>(self, v: i64) -> Result<Decimal, E> {
                    Ok(Decimal::from(v))
                }
                fn visit_u64<E: Error>(self, v: u64) -> Result<Decimal, E> {
                    Ok(Decimal::from(v))
                }
            }
            d.deserialize_any(Text)
        } else {
            let (head, low, hi) = <(u8, u64, u32)>::deserialize(d)?;
            let scale = u32::from(head & 0x7f);
            if scale > Decimal::MAX_SCALE {
                return Err(D::Error::custom(format!("decimal scale {scale} exceeds {}", Decimal::MAX_SCALE)));
            }
            Ok(Decimal::from_parts(low as u32, (low >> 32) as u32, hi, head & 0x80 != 0, scale))
        }
    }
}

/// Serde for `Option<Decimal>` with the same encoding as [`decimal_serde`].
pub mod option_decimal_serde {
    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(transparent)]
    struct Wrapped(#[serde(with = "decimal_serde")] Decimal);

    pub fn serialize<S: Serializer>(value: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        value.map(Wrapped).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
    }
}

/// 10^0 to 10^19, every power of ten a `u64` holds.
const POWERS_OF_TEN: [u64; 20] = {
    let mut powers = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        powers[i] = powers[i - 1] * 10;
        i += 1;
    }
    powers
};

/// rust_decimal's `to_f64`, bit for bit, without its 128-bit division when the mantissa
/// fits 64 bits (every price and quantity of a market): indicators convert each bar's
/// prices, and a replay must get the very floats the recorded run got.
fn decimal_to_f64(d: Decimal) -> f64 {
    let scale = d.scale();
    let mantissa = match u64::try_from(d.mantissa().unsigned_abs()) {
        Ok(mantissa) if (1..=19).contains(&scale) => mantissa,
        _ => return rust_decimal::prelude::ToPrimitive::to_f64(&d).unwrap_or(f64::NAN),
    };
    // The same steps as rust_decimal's `as_f64`, in 64 bits: each integer is below 2^64, so
    // its conversion to f64 rounds exactly as the 128-bit one.
    let precision = POWERS_OF_TEN[scale as usize];
    let integral = (mantissa / precision) as f64;
    let fraction = (mantissa % precision) as f64 / precision as f64;
    let negative = d.is_sign_negative();
    if fraction == 0.0 {
        return if negative { -integral } else { integral };
    }
    // `10f64.powi(scale)` exactly: every power of ten up to 10^22 is a float, and so is
    // each product `powi` forms on the way.
    let round_to = precision as f64;
    let rounded = ((integral + fraction) * round_to).round() / round_to;
    if negative {
        -rounded
    } else {
        rounded
    }
}

macro_rules! decimal_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(Decimal);

        impl $name {
            pub const ZERO: Self = Self(Decimal::ZERO);

            /// The exact decimal inside.
            pub const fn value(self) -> Decimal {
                self.0
            }
            pub fn is_zero(self) -> bool {
                self.0.is_zero()
            }
            pub fn is_sign_negative(self) -> bool {
                self.0.is_sign_negative() && !self.0.is_zero()
            }
            pub fn abs(self) -> Self {
                Self(self.0.abs())
            }
            /// Rounds toward zero to `dp` decimal places: what an exchange's precision allows
            /// without ever spending more than we have.
            pub fn truncate_to(self, dp: u32) -> Self {
                Self(self.0.trunc_with_scale(dp).normalize())
            }
            /// Drops trailing zeros (`1.500` becomes `1.5`); the value is unchanged.
            pub fn normalize(self) -> Self {
                Self(self.0.normalize())
            }
            /// Best-effort float, for indicator maths only: never feed it back into money.
            pub fn to_f64(self) -> f64 {
                decimal_to_f64(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                decimal_serde::serialize(&self.0, s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::try_from(decimal_serde::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }

        impl Add for $name {
            type Output = Self;
            fn add(self, rhs: Self) -> Self {
                Self(self.0 + rhs.0)
            }
        }
        impl Sub for $name {
            type Output = Self;
            fn sub(self, rhs: Self) -> Self {
                Self(self.0 - rhs.0)
            }
        }
        impl AddAssign for $name {
            fn add_assign(&mut self, rhs: Self) {
                self.0 += rhs.0;
            }
        }
        impl SubAssign for $name {
            fn sub_assign(&mut self, rhs: Self) {
                self.0 -= rhs.0;
            }
        }
        impl std::iter::Sum for $name {
            fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
                iter.fold(Self::ZERO, |a, b| a + b)
            }
        }
        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                Self::try_from(parse_decimal(s)?)
            }
        }
    };
}

decimal_newtype!(
    /// A price in the quote asset of a pair. Always strictly positive.
    Price
);
decimal_newtype!(
    /// A quantity of an asset (the base asset of a pair for orders). Signed for positions.
    Qty
);
decimal_newtype!(
    /// An amount of money in some asset (balances, notionals, fees, P&L). Signed.
    Money
);

impl Price {
    /// # Errors
    /// [`ParseError::NonPositivePrice`] unless `value > 0`.
    pub fn new_checked(value: Decimal) -> Result<Self, ParseError> {
        Self::try_from(value)
    }

    /// # Panics
    /// When `value <= 0`; use [`Price::new_checked`] for untrusted input.
    pub fn new(value: Decimal) -> Self {
        Self::new_checked(value).expect("price must be positive")
    }
}

impl TryFrom<Decimal> for Price {
    type Error = ParseError;
    fn try_from(value: Decimal) -> Result<Self, ParseError> {
        // A sign test, not a comparison: this runs for every decoded price.
        if value.is_sign_positive() && !value.is_zero() {
            Ok(Self(value))
        } else {
            Err(ParseError::NonPositivePrice(value.to_string()))
        }
    }
}

impl Qty {
    pub const fn new(value: Decimal) -> Self {
        Self(value)
    }
}

impl TryFrom<Decimal> for Qty {
    type Error = ParseError;
    fn try_from(value: Decimal) -> Result<Self, ParseError> {
        Ok(Self(value))
    }
}

impl Neg for Qty {
    type Output = Self;
    fn neg(self) -> Self {
        Self(-self.0)
    }
}

impl Money {
    pub const fn new(value: Decimal) -> Self {
        Self(value)
    }

    /// How much of the base asset this amount buys at `price`; `None` on overflow.
    pub fn checked_div_price(self, price: Price) -> Option<Qty> {
        self.0.checked_div(price.0).map(Qty)
    }
}

impl TryFrom<Decimal> for Money {
    type Error = ParseError;
    fn try_from(value: Decimal) -> Result<Self, ParseError> {
        Ok(Self(value))
    }
}

impl Neg for Money {
    type Output = Self;
    fn neg(self) -> Self {
        Self(-self.0)
    }
}

impl Mul<Qty> for Price {
    type Output = Money;
    fn mul(self, rhs: Qty) -> Money {
        Money(self.0 * rhs.0)
    }
}

impl Mul<Decimal> for Money {
    type Output = Money;
    fn mul(self, rhs: Decimal) -> Money {
        Money(self.0 * rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The fast conversion gives rust_decimal's float bit for bit, for any mantissa
        /// (64-bit or wider), scale and sign.
        #[test]
        fn floats_are_rust_decimals(lo in proptest::num::u64::ANY, hi in 0u32..4, small in proptest::bool::ANY,
                                    scale in 0u32..=28, negative in proptest::bool::ANY) {
            let mantissa = if small { i128::from(lo >> 20) } else { (i128::from(hi) << 64) | i128::from(lo) };
            let d = Decimal::from_i128_with_scale(if negative { -mantissa } else { mantissa }, scale);
            let expected = rust_decimal::prelude::ToPrimitive::to_f64(&d).unwrap();
            proptest::prop_assert_eq!(decimal_to_f64(d).to_bits(), expected.to_bits(), "{}", d);
        }
    }

    #[test]
    fn floats_of_market_prices_are_rust_decimals() {
        for text in [
            "0.1",
            "37512.4",
            "0.00000001",
            "-2.5",
            "1e0",
            "98765.4321",
            "0.30000000000000004",
            "12345678901.123456789",
        ] {
            let Ok(d) = text.parse::<Decimal>() else { continue };
            let expected = rust_decimal::prelude::ToPrimitive::to_f64(&d).unwrap();
            assert_eq!(decimal_to_f64(d).to_bits(), expected.to_bits(), "{text}");
        }
    }

    #[test]
    fn notional_is_exact() {
        let p: Price = "0.1".parse().unwrap();
        let q: Qty = "0.2".parse().unwrap();
        assert_eq!((p * q).to_string(), "0.02");
    }

    #[test]
    fn prices_must_be_positive() {
        assert!("0".parse::<Price>().is_err());
        assert!("-1".parse::<Price>().is_err());
        assert!("1e3".parse::<Price>().is_err());
        assert!("abc".parse::<Qty>().is_err());
    }

    #[test]
    fn json_is_an_exact_string_and_binary_round_trips() {
        let p: Price = "42000.123456789".parse().unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"42000.123456789\"");
        assert_eq!(serde_json::from_str::<Price>("\"42000.123456789\"").unwrap(), p);
        let bytes = bincode::serde::encode_to_vec(p, bincode::config::standard()).unwrap();
        let (back, _): (Price, usize) = bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.value().scale(), 9);
    }

    #[test]
    fn binary_decode_rejects_out_of_range_scale() {
        let bytes = bincode::serde::encode_to_vec((29u8, 1u64, 0u32), bincode::config::standard()).unwrap();
        let res: Result<(Qty, usize), _> = bincode::serde::decode_from_slice(&bytes, bincode::config::standard());
        assert!(res.is_err());
    }

    #[test]
    fn truncation_never_rounds_up() {
        let q: Qty = "0.123456789".parse().unwrap();
        assert_eq!(q.truncate_to(4).to_string(), "0.1234");
    }
}
