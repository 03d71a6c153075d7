//! Candle events decoded by hand from the log's bincode bytes.
//!
//! A replay reads mostly candles, and serde's generic decoding of one (a visitor per
//! struct, per field, per decimal) was two thirds of the replay's reading thread. This reads
//! the very bytes bincode's standard configuration writes for a `NewEvent` holding a
//! `Candle` (unsigned varints; signed ones zigzagged; a `u8` as one byte; an option as a
//! 0/1 byte; a string as its varint length and bytes; the variant as a varint index; ids,
//! pairs and decimals as their serde forms write them) and gives the same value.
//!
//! It never decides anything serde would decide otherwise: whatever is not exactly the
//! plain form — another event, a varint written longer than it needs, a bad id, a scale out
//! of range, bytes left over — gives `None`, and the caller decodes through serde, which
//! says what is wrong. The property tests check agreement on every candle and on damaged
//! bytes.

use std::cell::RefCell;
use std::str::FromStr;

use crypy_core::{AgentId, Candle, Event, Interval, NewEvent, Pair, Price, Qty};
use rust_decimal::Decimal;

/// `Event::Candle`'s variant index (checked by a test against serde's encoding).
const CANDLE_VARIANT: u64 = 0;

/// The candle event in `bytes`, if they hold exactly one in its plain form.
pub(crate) fn decode(bytes: &[u8]) -> Option<NewEvent> {
    let mut r = Reader { bytes, pos: 0 };
    let run = u32::try_from(r.varint()?).ok()?;
    let time = r.signed()?;
    let wall = r.signed()?;
    let source = r.text()?;
    let cause = r.option()?;
    if r.varint()? != CANDLE_VARIANT {
        return None;
    }
    // Parsed once the event is known to be a candle: the others go to serde, which parses it.
    let source = LAST_SOURCE.with(|last| last.borrow_mut().parse(source))?;
    let pair = LAST_PAIR.with(|last| last.borrow_mut().parse(r.text()?))?;
    let interval = Interval::from_secs(u32::try_from(r.varint()?).ok()?).ok()?;
    let open_time = r.signed()?;
    let open = Price::try_from(r.decimal()?).ok()?;
    let high = Price::try_from(r.decimal()?).ok()?;
    let low = Price::try_from(r.decimal()?).ok()?;
    let close = Price::try_from(r.decimal()?).ok()?;
    let volume = Qty::try_from(r.decimal()?).ok()?;
    let trades = r.option()?;
    if r.pos != bytes.len() {
        return None;
    }
    let candle = Candle { pair, interval, open_time, open, high, low, close, volume, trades };
    Some(NewEvent { run, time, wall, source, cause, event: Event::Candle(candle) })
}

thread_local! {
    /// A log's candles come from one source, mostly for one pair: their text is parsed once
    /// for a run of equal texts (parsing is a pure function of the text).
    static LAST_SOURCE: RefCell<LastParsed<AgentId>> = const { RefCell::new(LastParsed::new()) };
    static LAST_PAIR: RefCell<LastParsed<Pair>> = const { RefCell::new(LastParsed::new()) };
}

/// The last text parsed and what it gave.
struct LastParsed<T> {
    text: [u8; 80],
    len: usize,
    value: Option<T>,
}

impl<T: Copy + FromStr> LastParsed<T> {
    const fn new() -> Self {
        LastParsed { text: [0; 80], len: 0, value: None }
    }

    /// `text`, still unchecked bytes: the same bytes as last time were valid UTF-8 then.
    fn parse(&mut self, text: &[u8]) -> Option<T> {
        if let Some(value) = self.value {
            if &self.text[..self.len] == text {
                return Some(value);
            }
        }
        let value = std::str::from_utf8(text).ok()?.parse().ok()?;
        if let Some(room) = self.text.get_mut(..text.len()) {
            room.copy_from_slice(text);
            (self.len, self.value) = (text.len(), Some(value));
        }
        Some(value)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let taken = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(taken)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// bincode's varint: a byte below 251 is the value; 251, 252 and 253 announce a `u16`,
    /// `u32` or `u64` after it. Only the shortest form is taken.
    fn varint(&mut self) -> Option<u64> {
        let (value, least) = match self.byte()? {
            b @ 0..=250 => return Some(u64::from(b)),
            251 => (u64::from(u16::from_le_bytes(self.take(2)?.try_into().ok()?)), 251),
            252 => (u64::from(u32::from_le_bytes(self.take(4)?.try_into().ok()?)), 0x1_0000),
            253 => (u64::from_le_bytes(self.take(8)?.try_into().ok()?), 0x1_0000_0000),
            _ => return None,
        };
        (value >= least).then_some(value)
    }

    fn signed(&mut self) -> Option<i64> {
        let zigzag = self.varint()?;
        Some((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64))
    }

    fn option(&mut self) -> Option<Option<u64>> {
        match self.byte()? {
            0 => Some(None),
            1 => Some(Some(self.varint()?)),
            _ => None,
        }
    }

    /// A string's bytes, not yet checked to be UTF-8.
    fn text(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        self.take(len)
    }

    /// `decimal_serde`'s binary form: (sign bit | scale, low 64 bits, high 32 bits).
    fn decimal(&mut self) -> Option<Decimal> {
        let head = self.byte()?;
        let low = self.varint()?;
        let high = u32::try_from(self.varint()?).ok()?;
        let scale = u32::from(head & 0x7f);
        if scale > Decimal::MAX_SCALE {
            return None;
        }
        Some(Decimal::from_parts(low as u32, (low >> 32) as u32, high, head & 0x80 != 0, scale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(event: &NewEvent) -> Vec<u8> {
        bincode::serde::encode_to_vec(event, crate::codec::bincode_config()).unwrap()
    }

    /// What serde makes of `bytes`, as the log's reader takes it: all of them, or an error.
    fn by_serde(bytes: &[u8]) -> Option<NewEvent> {
        let decoded = bincode::serde::borrow_decode_from_slice::<NewEvent, _>(bytes, crate::codec::bincode_config());
        decoded.ok().filter(|(_, used)| *used == bytes.len()).map(|(event, _)| event)
    }

    fn decimal(lo: u64, hi: u32, scale: u32, negative: bool) -> Decimal {
        Decimal::from_parts(lo as u32, (lo >> 32) as u32, hi, negative, scale)
    }

    prop_compose! {
        fn candles()(
            run in any::<u32>(), time in any::<i64>(), wall in any::<i64>(),
            source in prop::sample::select(vec!["sim:main", "kraken:alice", "@import", "EUR", "XBT/EUR#7"]),
            cause in any::<Option<u64>>(),
            pair in prop::sample::select(vec!["XBT/USD", "ETH/EUR", "ETH2.S/XBT"]),
            secs in 1u32..=u32::MAX, open_time in any::<i64>(),
            prices in prop::collection::vec((any::<u64>(), 0u32..4, 0u32..=28), 5),
            small in prop::collection::vec(0u64..100_000, 5),
            plain in any::<bool>(),
            trades in any::<Option<u64>>(),
        ) -> NewEvent {
            // Plain prices (what markets send) or any 96-bit mantissa at any scale.
            let at = |i: usize| if plain { decimal(small[i], 0, prices[i].2.min(8), false) } else { decimal(prices[i].0, prices[i].1, prices[i].2, false) };
            let candle = Candle {
                pair: pair.parse::<Pair>().unwrap(),
                interval: Interval::from_secs(secs).unwrap(),
                open_time,
                open: Price::try_from(at(0)).unwrap(),
                high: Price::try_from(at(1)).unwrap(),
                low: Price::try_from(at(2)).unwrap(),
                close: Price::try_from(at(3)).unwrap(),
                volume: Qty::try_from(at(4)).unwrap(),
                trades,
            };
            NewEvent { run, time, wall, source: source.parse::<AgentId>().unwrap(), cause, event: Event::Candle(candle) }
        }
    }

    proptest! {
        /// Every candle the log writes comes back, by hand, as serde decodes it.
        #[test]
        fn candles_decode_as_serde_decodes_them(event in candles()) {
            let bytes = encoded(&event);
            prop_assert_eq!(decode(&bytes), Some(event.clone()));
            prop_assert_eq!(by_serde(&bytes), Some(event));
        }

        /// Damaged bytes are never read otherwise than serde reads them: what the hand
        /// decoder takes, serde takes the same; the rest is left to serde.
        #[test]
        fn damaged_candles_are_left_to_serde(
            event in candles(),
            at in any::<prop::sample::Index>(),
            value in any::<u8>(),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = encoded(&event);
            let i = at.index(bytes.len());
            bytes[i] = value;
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            if let Some(fast) = decode(&bytes) {
                prop_assert_eq!(by_serde(&bytes), Some(fast));
            }
        }
    }

    /// Other events are not candles; a candle written with a longer varint than it needs is
    /// left to serde.
    #[test]
    fn only_plain_candles_are_taken() {
        let other = NewEvent {
            run: 1,
            time: 5,
            wall: 6,
            source: "sim:main".parse().unwrap(),
            cause: None,
            event: Event::KillSwitchReleased(crypy_core::event::KillSwitchReleased { reason: "a human".into() }),
        };
        assert_eq!(decode(&encoded(&other)), None);
        let candle = NewEvent {
            run: 1,
            time: 60_000,
            wall: 7,
            source: "sim:main".parse().unwrap(),
            cause: None,
            event: Event::Candle(Candle {
                pair: "XBT/USD".parse().unwrap(),
                interval: Interval::from_secs(60).unwrap(),
                open_time: 0,
                open: "1.5".parse().unwrap(),
                high: "2".parse().unwrap(),
                low: "1".parse().unwrap(),
                close: "1.75".parse().unwrap(),
                volume: "10".parse().unwrap(),
                trades: Some(3),
            }),
        };
        let bytes = encoded(&candle);
        assert_eq!(decode(&bytes), Some(candle.clone()));
        // The run (1) as a u16 varint: 251, 1, 0.
        let mut long = vec![251, 1, 0];
        long.extend_from_slice(&bytes[1..]);
        assert_eq!(decode(&long), None);
    }
}
