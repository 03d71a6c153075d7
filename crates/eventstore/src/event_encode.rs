//! Events encoded by hand into the log's bincode bytes.
//!
//! Every appended event was encoded through serde: a serializer call per field, ids written
//! out and checked again as UTF-8, a generic varint per number. That was four fifths of an
//! append's work (`bench log`) and of a backtest's log writer. This writes the very bytes
//! bincode's standard configuration writes for a `NewEvent` — the envelope always, and the
//! payload of the market events a log is mostly made of (candles and trades); any other
//! payload is handed to serde after the envelope, which is the same thing, since bincode
//! writes a struct as its fields one after the other. The property tests check byte
//! equality with serde on every kind of event.

use crypy_core::{Candle, Event, NewEvent, Trade};
use rust_decimal::Decimal;

use crate::codec::bincode_config;

/// `Event::Candle`'s and `Event::Trade`'s variant indexes (checked by a test against serde).
const CANDLE_VARIANT: u64 = 0;
const TRADE_VARIANT: u64 = 1;

/// Appends `event` to `out` exactly as `bincode::serde::encode_into_std_write` with
/// [`bincode_config`] would.
pub(crate) fn encode(event: &NewEvent, out: &mut Vec<u8>) -> Result<(), bincode::error::EncodeError> {
    varint(out, u64::from(event.run));
    signed(out, event.time);
    signed(out, event.wall);
    text(out, |out| event.source.append_text(out));
    option(out, event.cause);
    match &event.event {
        Event::Candle(candle) => encode_candle(candle, out),
        Event::Trade(trade) => encode_trade(trade, out),
        other => {
            bincode::serde::encode_into_std_write(other, out, bincode_config())?;
        }
    }
    Ok(())
}

fn encode_candle(c: &Candle, out: &mut Vec<u8>) {
    varint(out, CANDLE_VARIANT);
    text(out, |out| c.pair.append_text(out));
    varint(out, u64::from(c.interval.secs()));
    signed(out, c.open_time);
    for price in [c.open, c.high, c.low, c.close] {
        decimal(out, price.value());
    }
    decimal(out, c.volume.value());
    option(out, c.trades);
}

fn encode_trade(t: &Trade, out: &mut Vec<u8>) {
    varint(out, TRADE_VARIANT);
    text(out, |out| t.pair.append_text(out));
    decimal(out, t.price.value());
    decimal(out, t.qty.value());
    match t.side {
        None => out.push(0),
        Some(side) => {
            out.push(1);
            // Unit variants are written as their index, in declaration order.
            varint(out, side as u64);
        }
    }
    match &t.trade_id {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            text(out, |out| out.extend_from_slice(id.as_bytes()));
        }
    }
}

/// bincode's varint: a value below 251 as one byte; else 251, 252 or 253 and the value as a
/// little-endian `u16`, `u32` or `u64`, the shortest that holds it.
#[inline]
fn varint(out: &mut Vec<u8>, value: u64) {
    if value < 251 {
        out.push(value as u8);
    } else if let Ok(v) = u16::try_from(value) {
        out.push(251);
        out.extend_from_slice(&v.to_le_bytes());
    } else if let Ok(v) = u32::try_from(value) {
        out.push(252);
        out.extend_from_slice(&v.to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// Signed integers are zigzagged (0, -1, 1, -2, … as 0, 1, 2, 3, …), then written as varints.
#[inline]
fn signed(out: &mut Vec<u8>, value: i64) {
    varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

#[inline]
fn option(out: &mut Vec<u8>, value: Option<u64>) {
    match value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            varint(out, v);
        }
    }
}

/// A string: its length as a varint, then its bytes. `write` appends the bytes; ids are
/// shorter than 251 bytes, so their length takes the one byte reserved before them.
fn text(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.push(0);
    write(out);
    let len = out.len() - at - 1;
    if len < 251 {
        out[at] = len as u8;
    } else {
        let mut prefix = Vec::with_capacity(9);
        varint(&mut prefix, len as u64);
        out.splice(at..=at, prefix);
    }
}

/// `decimal_serde`'s binary form: the tuple (sign bit | scale, low 64 bits, high 32 bits of
/// the mantissa), a `u8` as its byte and the others as varints.
#[inline]
fn decimal(out: &mut Vec<u8>, value: Decimal) {
    let magnitude = value.mantissa().unsigned_abs();
    out.push((value.scale() as u8) | if value.is_sign_negative() { 0x80 } else { 0 });
    varint(out, magnitude as u64);
    varint(out, u64::from((magnitude >> 64) as u32));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypy_core::{AgentId, Interval, Pair, Price, Qty, Side};
    use proptest::prelude::*;

    fn by_serde(event: &NewEvent) -> Vec<u8> {
        bincode::serde::encode_to_vec(event, bincode_config()).unwrap()
    }

    fn by_hand(event: &NewEvent) -> Vec<u8> {
        let mut out = Vec::new();
        encode(event, &mut out).unwrap();
        out
    }

    fn decimal_of(lo: u64, hi: u32, scale: u32, negative: bool) -> Decimal {
        Decimal::from_parts(lo as u32, (lo >> 32) as u32, hi, negative, scale)
    }

    fn envelope(event: Event) -> NewEvent {
        NewEvent { run: 3, time: 60_000, wall: -1, source: "sim:main".parse().unwrap(), cause: Some(300), event }
    }

    prop_compose! {
        /// Any decimal a price or quantity holds: any 96-bit mantissa, sign and scale.
        fn any_decimal()(lo in any::<u64>(), hi in any::<u32>(), scale in 0u32..=28, negative in any::<bool>()) -> Decimal {
            decimal_of(lo, hi, scale, negative)
        }
    }

    prop_compose! {
        /// Any price: any positive 96-bit mantissa at any scale.
        fn any_price()(lo in 1..=u64::MAX, hi in any::<u32>(), scale in 0u32..=28) -> Price {
            Price::new(decimal_of(lo, hi, scale, false))
        }
    }

    prop_compose! {
        fn market_events()(
            run in any::<u32>(), time in any::<i64>(), wall in any::<i64>(),
            source in crypy_core::arbitrary::agent(),
            cause in any::<Option<u64>>(),
            pair in crypy_core::arbitrary::pair(),
            secs in 1u32..=u32::MAX, open_time in any::<i64>(),
            prices in prop::collection::vec(any_price(), 4),
            volume in any_decimal(),
            trades in any::<Option<u64>>(),
            side in prop::option::of(prop::sample::select(vec![Side::Buy, Side::Sell])),
            trade_id in prop::option::of(".{0,300}"),
            candle in any::<bool>(),
        ) -> NewEvent {
            let event = if candle {
                Event::Candle(Candle {
                    pair,
                    interval: Interval::from_secs(secs).unwrap(),
                    open_time,
                    open: prices[0],
                    high: prices[1],
                    low: prices[2],
                    close: prices[3],
                    volume: Qty::new(volume),
                    trades,
                })
            } else {
                Event::Trade(Trade { pair, price: prices[0], qty: Qty::new(volume), side, trade_id })
            };
            NewEvent { run, time, wall, source, cause, event }
        }
    }

    proptest! {
        /// Candles and trades, every field at any value, are written byte for byte as serde
        /// writes them.
        #[test]
        fn market_events_encode_as_serde_does(event in market_events()) {
            prop_assert_eq!(by_hand(&event), by_serde(&event));
        }

        /// Every other kind of event too: its envelope by hand, its payload through serde.
        #[test]
        fn every_event_encodes_as_serde_does(event in crypy_core::arbitrary::new_event()) {
            prop_assert_eq!(by_hand(&event), by_serde(&event));
        }
    }

    /// The edges of each varint width, and a source whose text is as long as an id's can be.
    #[test]
    fn varint_widths_and_long_ids_encode_as_serde_does() {
        let edges = [0u64, 250, 251, 255, 65_535, 65_536, u64::from(u32::MAX), u64::from(u32::MAX) + 1, u64::MAX];
        for value in edges {
            let mut event = envelope(Event::Trade(Trade {
                pair: "XBT/EUR".parse::<Pair>().unwrap(),
                price: Price::new(decimal_of(value.max(1), u32::MAX, 28, false)),
                qty: Qty::new(decimal_of(value, u32::MAX, 28, true)),
                side: Some(Side::Sell),
                trade_id: Some("x".repeat((value % 70_000) as usize)),
            }));
            event.cause = Some(value);
            event.time = value as i64;
            event.wall = (value as i64).wrapping_neg();
            assert_eq!(by_hand(&event), by_serde(&event), "at {value}");
        }
        let long = AgentId::desk(&"e".repeat(32), &"a".repeat(32)).unwrap();
        let mut event = envelope(Event::Trade(Trade {
            pair: "XBT/EUR".parse().unwrap(),
            price: Price::new(Decimal::ONE),
            qty: Qty::new(Decimal::ONE),
            side: None,
            trade_id: None,
        }));
        event.source = long;
        assert_eq!(by_hand(&event), by_serde(&event));
    }
}
