//! Identifiers. Every one has a single canonical text form, used in the log, in JSON and on
//! the command line, so that what a human types is what the log stores.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ParseError;

/// Where an id's text form goes: a `Vec` (the log's encoder, allocations' signed text) or
/// a buffer on the stack (serde, which wants a `&str`).
trait TextSink {
    fn put(&mut self, bytes: &[u8]);
}

impl TextSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Room for the longest id's text form (a desk: 32 + 1 + 32 bytes); a text that does not
/// fit marks it overflowed, and serde then falls back to `Display`.
struct StackText {
    len: usize,
    bytes: [u8; 80],
    overflowed: bool,
}

impl Default for StackText {
    fn default() -> Self {
        StackText { len: 0, bytes: [0; 80], overflowed: false }
    }
}

impl StackText {
    /// The text written, unless it did not fit.
    fn text(&self) -> Option<&str> {
        (!self.overflowed).then(|| std::str::from_utf8(&self.bytes[..self.len]).ok()).flatten()
    }
}

impl TextSink for StackText {
    fn put(&mut self, bytes: &[u8]) {
        match self.bytes.get_mut(self.len..self.len + bytes.len()) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => self.overflowed = true,
        }
    }
}

/// `n`'s decimal digits, in `digits[start..]`.
fn decimal_digits(mut n: u32) -> ([u8; 10], usize) {
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return (digits, start);
        }
    }
}

/// An id's text form, exactly its `Display` (property test), written as bytes without
/// `fmt`'s machinery: every event the log encodes holds a few ids, and formatting them
/// through `Display` was a tenth of a backtest's encoding.
trait TextForm: fmt::Display {
    fn write_text(&self, out: &mut impl TextSink);
}

impl<const N: usize> InlineStr<N> {
    fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

macro_rules! append_text {
    ($($name:ident),*) => {$(
        impl $name {
            /// Appends this id's text form, exactly its `Display`, to `out`.
            pub fn append_text(&self, out: &mut Vec<u8>) {
                self.write_text(out);
            }
        }
    )*};
}

append_text!(Asset, Pair, AgentId, ClientOrderId);

/// Serializes through `Display` and deserializes through `FromStr`, in every format: ids are
/// short, and one text form everywhere keeps the binary log and the JSON output in step.
macro_rules! serde_via_str {
    ($name:ident, $expecting:literal) => {
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                // Written on the stack: `collect_str` would allocate a String per id.
                let mut buf = StackText::default();
                self.write_text(&mut buf);
                match buf.text() {
                    Some(text) => s.serialize_str(text),
                    None => s.collect_str(self),
                }
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

/// A short ASCII string stored inline, so ids are `Copy` and decoding them never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct InlineStr<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> InlineStr<N> {
    /// Checks and maps every byte in one pass (this runs for every id the log decodes).
    /// `None` if `s` is empty, longer than `N`, or has a byte `map` refuses.
    fn checked(s: &str, map: impl Fn(u8) -> Option<u8>) -> Option<Self> {
        let src = s.as_bytes();
        if src.is_empty() || src.len() > N {
            return None;
        }
        let mut bytes = [0u8; N];
        for (dst, &b) in bytes.iter_mut().zip(src) {
            *dst = map(b)?;
        }
        Some(Self { len: src.len() as u8, bytes })
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).expect("InlineStr holds ASCII only")
    }
}

impl<const N: usize> PartialOrd for InlineStr<N> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<const N: usize> Ord for InlineStr<N> {
    /// `str`'s order, 16 bytes at a time (ids key the agents' maps, searched at every
    /// candle). The bytes past `len` are zero and those before never are, so a string
    /// sorts before any longer one it begins, as in `str`: the whole arrays compare alike.
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let ((words, rest), (other_words, other_rest)) = (self.bytes.as_chunks::<16>(), other.bytes.as_chunks::<16>());
        for (a, b) in words.iter().zip(other_words) {
            match u128::from_be_bytes(*a).cmp(&u128::from_be_bytes(*b)) {
                std::cmp::Ordering::Equal => {}
                unequal => return unequal,
            }
        }
        rest.cmp(other_rest)
    }
}

/// An asset code as crypy names it: upper case, e.g. `XBT`, `EUR`, `ETH2.S`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Asset(InlineStr<16>);

impl Asset {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromStr for Asset {
    type Err = ParseError;
    /// Lower case is accepted and upper-cased (`eur` is `EUR`).
    fn from_str(s: &str) -> Result<Self, ParseError> {
        InlineStr::checked(s, |b| (b.is_ascii_alphanumeric() || b == b'.').then(|| b.to_ascii_uppercase()))
            .map(Self)
            .ok_or_else(|| ParseError::Asset(s.to_owned()))
    }
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Asset({})", self.as_str())
    }
}

impl TextForm for Asset {
    fn write_text(&self, out: &mut impl TextSink) {
        out.put(self.0.bytes());
    }
}

serde_via_str!(Asset, "an asset code such as \"EUR\"");

/// A tradable pair, written `BASE/QUOTE` (`XBT/EUR`): prices are in the quote asset,
/// quantities in the base asset. Venue symbols (`XXBTZEUR`, `XBTUSD`) are a venue adapter's
/// business and never appear here.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pair {
    pub base: Asset,
    pub quote: Asset,
}

impl Pair {
    pub fn new(base: Asset, quote: Asset) -> Self {
        Self { base, quote }
    }
}

impl FromStr for Pair {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::Pair(s.to_owned());
        let (base, quote) = s.split_once('/').ok_or_else(bad)?;
        let pair = Self { base: base.parse().map_err(|_| bad())?, quote: quote.parse().map_err(|_| bad())? };
        if pair.base == pair.quote {
            return Err(bad());
        }
        Ok(pair)
    }
}

impl fmt::Display for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.quote)
    }
}

impl fmt::Debug for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pair({self})")
    }
}

impl TextForm for Pair {
    fn write_text(&self, out: &mut impl TextSink) {
        out.put(self.base.0.bytes());
        out.put(b"/");
        out.put(self.quote.0.bytes());
    }
}

serde_via_str!(Pair, "a pair such as \"XBT/EUR\"");

/// Who emitted an event.
///
/// | agent  | text form                  | example        |
/// |--------|----------------------------|----------------|
/// | desk   | `<exchange>:<account>`     | `sim:main`     |
/// | holder | `<ASSET>`                  | `EUR`          |
/// | trader | `<BASE/QUOTE>#<generation>`| `XBT/EUR#3`    |
/// | system | `@<name>`                  | `@import`      |
///
/// System ids name the parts of crypy that are not agents (the importer, a benchmark).
/// Names (exchange, account, system) are 1-32 characters among letters, digits, `-_.`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AgentId {
    Desk { exchange: Name, account: Name },
    Holder(Asset),
    Trader { pair: Pair, generation: u32 },
    System(Name),
}

/// A name inside an [`AgentId`]: 1-32 characters among letters, digits, `-`, `_` and `.`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(InlineStr<32>);

impl Name {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromStr for Name {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        InlineStr::checked(s, |b| (b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')).then_some(b))
            .map(Self)
            .ok_or_else(|| ParseError::AgentId(s.to_owned()))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({})", self.as_str())
    }
}

impl AgentId {
    pub fn desk(exchange: &str, account: &str) -> Result<Self, ParseError> {
        format!("{exchange}:{account}").parse()
    }

    pub fn system(name: &str) -> Result<Self, ParseError> {
        format!("@{name}").parse()
    }

    /// The pair a trader works on; other agents have none.
    pub fn pair(&self) -> Option<&Pair> {
        match self {
            AgentId::Trader { pair, .. } => Some(pair),
            _ => None,
        }
    }
}

impl FromStr for AgentId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::AgentId(s.to_owned());
        if let Some(name) = s.strip_prefix('@') {
            return name.parse().map(Self::System).map_err(|_| bad());
        }
        if let Some((exchange, account)) = s.split_once(':') {
            let mut exchange: Name = exchange.parse().map_err(|_| bad())?;
            exchange.0.bytes.make_ascii_lowercase();
            return Ok(Self::Desk { exchange, account: account.parse().map_err(|_| bad())? });
        }
        if let Some((pair, generation)) = s.split_once('#') {
            let pair = pair.parse().map_err(|_| bad())?;
            let generation = generation.parse().map_err(|_| bad())?;
            return Ok(Self::Trader { pair, generation });
        }
        s.parse().map(Self::Holder).map_err(|_| bad())
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentId::Desk { exchange, account } => write!(f, "{exchange}:{account}"),
            AgentId::Holder(asset) => write!(f, "{asset}"),
            AgentId::Trader { pair, generation } => write!(f, "{pair}#{generation}"),
            AgentId::System(name) => write!(f, "@{name}"),
        }
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({self})")
    }
}

impl TextForm for AgentId {
    fn write_text(&self, out: &mut impl TextSink) {
        match self {
            AgentId::Desk { exchange, account } => {
                out.put(exchange.0.bytes());
                out.put(b":");
                out.put(account.0.bytes());
            }
            AgentId::Holder(asset) => asset.write_text(out),
            AgentId::Trader { pair, generation } => {
                pair.write_text(out);
                out.put(b"#");
                let (digits, start) = decimal_digits(*generation);
                out.put(&digits[start..]);
            }
            AgentId::System(name) => {
                out.put(b"@");
                out.put(name.0.bytes());
            }
        }
    }
}

serde_via_str!(AgentId, "an agent id such as \"sim:main\", \"EUR\" or \"XBT/EUR#1\"");

/// The idempotency key of an order: unique forever in a data dir, across restarts, and sent
/// to the venue (Kraken `cl_ord_id`, BitMEX `clOrdID`) so a retried request cannot double.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientOrderId(String);

impl ClientOrderId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ClientOrderId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::ClientOrderId(s.to_owned()))
        }
    }
}

impl fmt::Display for ClientOrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClientOrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientOrderId({})", self.0)
    }
}

impl TextForm for ClientOrderId {
    fn write_text(&self, out: &mut impl TextSink) {
        out.put(self.0.as_bytes());
    }
}

serde_via_str!(ClientOrderId, "a client order id");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_round_trip_through_text() {
        for text in ["sim:main", "kraken:alice", "EUR", "XBT/EUR#3", "@import"] {
            let id: AgentId = text.parse().unwrap();
            assert_eq!(id.to_string(), text);
        }
        assert!(matches!("EUR".parse::<AgentId>().unwrap(), AgentId::Holder(_)));
        assert!(matches!("XBT/EUR#0".parse::<AgentId>().unwrap(), AgentId::Trader { generation: 0, .. }));
    }

    proptest::proptest! {
        /// Ids sort as their text does, whatever their lengths.
        #[test]
        fn ids_sort_as_their_text(a in "[A-Z0-9.]{1,16}", b in "[A-Z0-9.]{1,16}", x in "[A-Za-z0-9_.-]{1,32}", y in "[A-Za-z0-9_.-]{1,32}") {
            let (pa, pb): (Asset, Asset) = (a.parse().unwrap(), b.parse().unwrap());
            proptest::prop_assert_eq!(pa.cmp(&pb), a.cmp(&b));
            proptest::prop_assert_eq!(pa == pb, a == b);
            let (nx, ny): (Name, Name) = (x.parse().unwrap(), y.parse().unwrap());
            proptest::prop_assert_eq!(nx.cmp(&ny), x.cmp(&y));
            // A prefix sorts first.
            let longer: Asset = format!("{}A", &a[..a.len().min(15)]).parse().unwrap();
            let prefix: Asset = a[..a.len().min(15)].parse().unwrap();
            proptest::prop_assert!(prefix < longer);
        }
    }

    /// The text an id is encoded with is exactly its `Display`, at every length.
    fn written(id: &impl TextForm) -> String {
        let mut out = StackText::default();
        id.write_text(&mut out);
        out.text().expect("an id's text fits").to_string()
    }

    proptest::proptest! {
        #[test]
        fn ids_are_written_as_displayed(
            exchange in "[a-z0-9_.-]{1,32}",
            account in "[A-Za-z0-9_.-]{1,32}",
            base in "[A-Z0-9.]{1,16}",
            quote in "[A-Z0-9.]{1,16}",
            generation in proptest::num::u32::ANY,
            client in "[!-~]{1,64}",
        ) {
            let desk = AgentId::desk(&exchange, &account).unwrap();
            let holder = AgentId::Holder(base.parse().unwrap());
            let system = AgentId::system(&account).unwrap();
            proptest::prop_assert_eq!(written(&desk), desk.to_string());
            proptest::prop_assert_eq!(written(&holder), holder.to_string());
            proptest::prop_assert_eq!(written(&system), system.to_string());
            if base != quote {
                let pair: Pair = format!("{base}/{quote}").parse().unwrap();
                let trader = AgentId::Trader { pair, generation };
                proptest::prop_assert_eq!(written(&pair), pair.to_string());
                proptest::prop_assert_eq!(written(&trader), trader.to_string());
            }
            let client: ClientOrderId = client.parse().unwrap();
            proptest::prop_assert_eq!(written(&client), client.to_string());
            let appended = |append: &dyn Fn(&mut Vec<u8>)| {
                let mut out = b"x".to_vec();
                append(&mut out);
                out
            };
            for id in [desk, holder, system] {
                proptest::prop_assert_eq!(appended(&|o| id.append_text(o)), format!("x{id}").into_bytes());
            }
            if base != quote {
                let pair: Pair = format!("{base}/{quote}").parse().unwrap();
                let trader = AgentId::Trader { pair, generation };
                proptest::prop_assert_eq!(appended(&|o| pair.append_text(o)), format!("x{pair}").into_bytes());
                proptest::prop_assert_eq!(appended(&|o| trader.append_text(o)), format!("x{trader}").into_bytes());
                let asset = pair.base;
                proptest::prop_assert_eq!(appended(&|o| asset.append_text(o)), format!("x{asset}").into_bytes());
            }
            proptest::prop_assert_eq!(appended(&|o| client.append_text(o)), format!("x{client}").into_bytes());
        }
    }

    #[test]
    fn bad_ids_are_refused() {
        for text in ["", "sim:", ":acct", "XBT/EUR#x", "XBT/XBT", "@", "a b", "XBT/EUR#"] {
            assert!(text.parse::<AgentId>().is_err(), "{text:?} accepted");
        }
        assert!("XBTEUR".parse::<Pair>().is_err());
        assert!("xbt/eur".parse::<Pair>().unwrap().to_string() == "XBT/EUR");
        assert!("has space".parse::<ClientOrderId>().is_err());
    }
}
