//! What BitMEX's REST and realtime tables say, in crypy's terms: instruments (→ [`Market`]s),
//! trade buckets (→ [`Candle`]s), margins (→ [`Balance`]s), positions, executions and the L2 book;
//! and what crypy sends: order bodies, `clOrdID`s and query strings.
//!
//! Pure functions over text: no I/O, so every rule here is tested on recorded bodies.
//!
//! ## How BitMEX maps onto crypy
//! - A [`Market`] is an instrument that is a perpetual swap (`typ` `FFWCSX`) or a spot pair
//!   (`IFXXXP`), its [`Pair`] `underlying/quoteCurrency` (`XBTUSD` is `XBT/USD`, `XBT_USDT` is
//!   `XBT/USDT`). Dated futures (`XBTU21`) would collide with the perpetual on the same pair, so
//!   they are not markets (still listed by [`Instrument`]s). On a collision the first listed wins.
//! - A crypy [`Qty`] on BitMEX is the instrument's own order quantity, `orderQty`, unconverted:
//!   USD contracts on the inverse `XBTUSD`, contracts on linear and quanto swaps, the instrument's
//!   unit on spot. Converting to the base asset would need the multiplier and a price, and would
//!   not survive the round trip exactly; so `min_qty` is `lotSize`, `qty_precision` the decimals
//!   of `lotSize`, and fills, positions and candle volumes are in the same unit.
//! - `price_precision` is the decimals of `tickSize`; a price must also be a multiple of the tick
//!   (`0.5` on `XBTUSD`), which [`check_order`] enforces before anything is sent.
//! - Margin amounts come in the settlement currency's smallest unit: `XBt` is 1e-8 `XBT`, `USDt`
//!   1e-6 `USDT`, `Gwei` 1e-9 `ETH`; they are scaled exactly (decimal shifts, no division). A
//!   balance's total is `walletBalance`, free is `availableMargin`, reserved the rest. Fees
//!   (`execComm`) and realised P&L are scaled the same way.
//!
//! [`Market`]: crypy_core::Market
//! [`Candle`]: crypy_core::Candle
//! [`Balance`]: crypy_core::Balance
//! [`Pair`]: crypy_core::Pair
//! [`Qty`]: crypy_core::Qty
//! [`Instrument`]: crate::bitmex::rest::Instrument
//! [`check_order`]: crate::bitmex::rest::check_order

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

use crypy_core::time::parse_iso_utc;
use crypy_core::{
    Asset, Balance, Candle, ClientOrderId, Fill, Interval, Market, Money, OrderKind, OrderRequest, Pair, Position,
    Price, Qty, Side,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::ExchangeError;

/// A JSON number (or numeric string, or null) read exactly from its text, never through `f64`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Num(pub Option<Decimal>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw: Option<Box<RawValue>> = Option::deserialize(d)?;
        match raw {
            None => Ok(Num(None)),
            Some(raw) => parse_number(raw.get()).map(Num).map_err(D::Error::custom),
        }
    }
}

/// The exact decimal of a JSON number's text (`42900.0429`, `"1000"`, `1e-05`).
pub fn parse_number(text: &str) -> Result<Option<Decimal>, String> {
    let text = text.trim().trim_matches('"');
    if text.is_empty() || text == "null" {
        return Ok(None);
    }
    Decimal::from_str_exact(text)
        .or_else(|_| Decimal::from_scientific(text))
        .map(|d| Some(d.normalize()))
        .map_err(|e| format!("{text:?} is not a decimal: {e}"))
}

fn bad(what: impl Into<String>) -> ExchangeError {
    ExchangeError::Rejected { reason: what.into() }
}

/// Decimal places of a step such as a tick or lot size (`0.5` → 1, `100` → 0).
pub fn decimals(step: Decimal) -> u32 {
    step.normalize().scale()
}

/// One BitMEX instrument (the fields crypy uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instrument {
    pub symbol: String,
    /// `FFWCSX` perpetual, `FFCCSX` future, `IFXXXP` spot, …
    pub typ: String,
    pub state: String,
    pub underlying: String,
    pub quote_currency: String,
    /// In BitMEX's unit spelling: `XBt`, `USDt`.
    pub settl_currency: String,
    pub lot_size: Decimal,
    pub tick_size: Decimal,
    pub max_order_qty: Option<Decimal>,
    pub multiplier: Option<Decimal>,
    pub is_inverse: bool,
    pub is_quanto: bool,
    pub maker_fee: Decimal,
    pub taker_fee: Decimal,
    pub last_price: Option<Price>,
    /// `underlying/quoteCurrency`, when both are asset codes crypy accepts.
    pub pair: Option<Pair>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawInstrument {
    symbol: String,
    #[serde(default)]
    typ: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    underlying: String,
    #[serde(default)]
    quote_currency: String,
    #[serde(default)]
    settl_currency: Option<String>,
    #[serde(default)]
    lot_size: Num,
    #[serde(default)]
    tick_size: Num,
    #[serde(default)]
    max_order_qty: Num,
    #[serde(default)]
    multiplier: Num,
    #[serde(default)]
    is_inverse: bool,
    #[serde(default)]
    is_quanto: bool,
    #[serde(default)]
    maker_fee: Num,
    #[serde(default)]
    taker_fee: Num,
    #[serde(default)]
    last_price: Num,
}

/// Parses an `/instrument` or `/instrument/active` body. Instruments without a positive lot
/// and tick size (indices, which cannot be traded) are left out.
///
/// # Errors
/// A body that is not a list of instruments.
pub fn parse_instruments(body: &str) -> Result<Vec<Instrument>, ExchangeError> {
    let raw: Vec<RawInstrument> =
        serde_json::from_str(body).map_err(|e| bad(format!("instrument list does not parse: {e}")))?;
    Ok(raw
        .into_iter()
        .filter_map(|r| {
            let positive = |n: Num| n.0.filter(|d| *d > Decimal::ZERO);
            let pair = match (r.underlying.parse::<Asset>(), r.quote_currency.parse::<Asset>()) {
                (Ok(b), Ok(q)) if b != q => Some(Pair::new(b, q)),
                _ => None,
            };
            Some(Instrument {
                lot_size: positive(r.lot_size)?,
                tick_size: positive(r.tick_size)?,
                max_order_qty: r.max_order_qty.0,
                multiplier: r.multiplier.0,
                is_inverse: r.is_inverse,
                is_quanto: r.is_quanto,
                maker_fee: r.maker_fee.0.unwrap_or_default(),
                taker_fee: r.taker_fee.0.unwrap_or_default(),
                last_price: r.last_price.0.and_then(|p| Price::try_from(p).ok()),
                settl_currency: r.settl_currency.unwrap_or_default(),
                pair,
                symbol: r.symbol,
                typ: r.typ,
                state: r.state,
                underlying: r.underlying,
                quote_currency: r.quote_currency,
            })
        })
        .collect())
}

impl Instrument {
    /// Whether crypy trades it as a market: a perpetual or a spot pair (see the module doc).
    pub fn is_market(&self) -> bool {
        self.pair.is_some() && (self.typ == "FFWCSX" || self.typ == "IFXXXP")
    }

    pub fn market(&self) -> Option<Market> {
        Some(Market {
            pair: self.pair?,
            venue_symbol: self.symbol.clone(),
            price_precision: decimals(self.tick_size),
            qty_precision: decimals(self.lot_size),
            min_qty: Qty::new(self.lot_size),
            min_notional: None,
        })
    }

    /// The asset fees and P&L of this instrument settle in, and the scale of its unit.
    pub fn settlement(&self) -> (Option<Asset>, u32) {
        currency_unit(&self.settl_currency)
    }
}

/// The markets among `instruments`, keyed both ways: pair → instrument, symbol → instrument.
#[derive(Clone, Debug, Default)]
pub struct Markets {
    pub by_pair: BTreeMap<Pair, Instrument>,
    pub by_symbol: BTreeMap<String, Instrument>,
}

impl Markets {
    pub fn new(instruments: &[Instrument]) -> Markets {
        let mut m = Markets::default();
        for i in instruments.iter().filter(|i| i.is_market()) {
            if let Some(pair) = i.pair {
                if let std::collections::btree_map::Entry::Vacant(e) = m.by_pair.entry(pair) {
                    e.insert(i.clone());
                    m.by_symbol.insert(i.symbol.clone(), i.clone());
                }
            }
        }
        m
    }

    pub fn list(&self) -> Vec<Market> {
        self.by_pair.values().filter_map(Instrument::market).collect()
    }

    /// # Errors
    /// [`ExchangeError::Rejected`] for a pair BitMEX has no market for.
    pub fn instrument(&self, pair: &Pair) -> Result<&Instrument, ExchangeError> {
        self.by_pair.get(pair).ok_or_else(|| bad(format!("BitMEX has no market for {pair}")))
    }
}

/// A BitMEX currency spelling as a crypy asset and the decimal scale of its unit.
pub fn currency_unit(currency: &str) -> (Option<Asset>, u32) {
    let (code, scale) = match currency {
        "XBt" => ("XBT", 8),
        "USDt" => ("USDT", 6),
        "Gwei" => ("ETH", 9),
        other => (other, 0),
    };
    (code.parse().ok(), scale)
}

/// `amount` units of `currency` in whole units of its asset: an exact shift of the decimal point.
pub fn scaled(amount: Decimal, scale: u32) -> Money {
    let mut d = amount;
    // Cannot fail for BitMEX's amounts (≤ 96 bits, scale ≤ 9).
    let _ = d.set_scale(d.scale() + scale);
    Money::new(d.normalize())
}

// --- trade buckets -----------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBucket {
    timestamp: String,
    #[serde(default)]
    symbol: String,
    #[serde(default)]
    open: Num,
    #[serde(default)]
    high: Num,
    #[serde(default)]
    low: Num,
    #[serde(default)]
    close: Num,
    #[serde(default)]
    trades: Option<u64>,
    #[serde(default)]
    volume: Num,
}

/// A BitMEX bin size for a crypy interval.
///
/// # Errors
/// For intervals BitMEX has no bins of (only 1m, 5m, 1h and 1d).
pub fn bin_size(interval: Interval) -> Result<&'static str, ExchangeError> {
    match interval.secs() {
        60 => Ok("1m"),
        300 => Ok("5m"),
        3600 => Ok("1h"),
        86_400 => Ok("1d"),
        _ => Err(bad(format!("BitMEX has no {interval} bins (1m, 5m, 1h, 1d)"))),
    }
}

/// One bucket as a candle. Its `timestamp` is the END of the bucket, so `open_time` is that
/// minus the interval. `open` is BitMEX's previous close and may lie outside `[low, high]`,
/// which [`Candle::check`] allows; a bucket without trades has no high or low (or nulls),
/// and gets `close` for both, so `close` always lies in the range. `None` for a bucket with
/// no price at all (a symbol that never traded).
fn bucket_candle(b: &RawBucket, pair: Pair, interval: Interval) -> Result<Option<Candle>, ExchangeError> {
    let end = parse_iso_utc(&b.timestamp).ok_or_else(|| bad(format!("bucket time {:?}", b.timestamp)))?;
    let price = |n: Num| n.0.and_then(|d| Price::try_from(d).ok());
    let Some(close) = price(b.close) else { return Ok(None) };
    let mut high = price(b.high).unwrap_or(close).max(close);
    let mut low = price(b.low).unwrap_or(close).min(close);
    if low > high {
        std::mem::swap(&mut low, &mut high);
    }
    let candle = Candle {
        pair,
        interval,
        open_time: end - interval.millis(),
        open: price(b.open).unwrap_or(close),
        high,
        low,
        close,
        volume: Qty::new(b.volume.0.unwrap_or_default()),
        trades: b.trades,
    };
    candle.check().map_err(|e| bad(format!("bucket {}: {e}", b.timestamp)))?;
    Ok(Some(candle))
}

/// Parses a `/trade/bucketed` body (or a `tradeBin*` table's rows) for `pair`.
///
/// # Errors
/// A body that is not a list of buckets, or a bucket with a bad time.
pub fn parse_buckets(body: &str, pair: Pair, interval: Interval) -> Result<Vec<Candle>, ExchangeError> {
    let raw: Vec<RawBucket> = serde_json::from_str(body).map_err(|e| bad(format!("buckets do not parse: {e}")))?;
    let mut out = Vec::with_capacity(raw.len());
    for b in &raw {
        out.extend(bucket_candle(b, pair, interval)?);
    }
    Ok(out)
}

/// Candles from `tradeBin*` rows, each with its symbol.
pub fn bin_rows(data: &str, markets: &Markets, interval: Interval) -> Result<Vec<Candle>, ExchangeError> {
    let raw: Vec<RawBucket> = serde_json::from_str(data).map_err(|e| bad(format!("bins do not parse: {e}")))?;
    let mut out = Vec::new();
    for b in &raw {
        if let Some(i) = markets.by_symbol.get(&b.symbol) {
            if let Some(pair) = i.pair {
                out.extend(bucket_candle(b, pair, interval)?);
            }
        }
    }
    Ok(out)
}

// --- margins and positions -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMargin {
    currency: String,
    #[serde(default)]
    wallet_balance: Num,
    #[serde(default)]
    available_margin: Num,
}

/// A margin row as a balance (see the module doc), or `None` for a currency crypy cannot name
/// or a row without a wallet balance (an update of other fields).
pub fn margin_balance(currency: &str, wallet: Option<Decimal>, available: Option<Decimal>) -> Option<Balance> {
    let (asset, scale) = currency_unit(currency);
    let total = scaled(wallet?, scale);
    let free = available.map_or(total, |a| scaled(a, scale)).min(total);
    // Not `total - free`: a margin whose parts differ by more than a Decimal holds is no
    // balance we can state, and subtracting would panic.
    let reserved = Money::new(total.value().checked_sub(free.value())?);
    Some(Balance { asset: asset?, free, reserved })
}

/// Parses a `/user/margin` body: one object, or a list (`?currency=all`).
///
/// # Errors
/// A body that is neither.
pub fn parse_margins(body: &str) -> Result<Vec<Balance>, ExchangeError> {
    let rows: Vec<RawMargin> = if body.trim_start().starts_with('[') {
        serde_json::from_str(body)
    } else {
        serde_json::from_str(body).map(|m| vec![m])
    }
    .map_err(|e| bad(format!("margin does not parse: {e}")))?;
    Ok(rows.iter().filter_map(|m| margin_balance(&m.currency, m.wallet_balance.0, m.available_margin.0)).collect())
}

/// Margin rows of the `margin` table, as partial balances keyed by BitMEX currency.
pub fn margin_rows(data: &str) -> Vec<(String, Option<Decimal>, Option<Decimal>)> {
    serde_json::from_str::<Vec<RawMargin>>(data)
        .map(|rows| rows.into_iter().map(|m| (m.currency, m.wallet_balance.0, m.available_margin.0)).collect())
        .unwrap_or_default()
}

/// A field that may be absent (`None`) or null (`Some(Num(None))`): a table update carries
/// only what changed, and a null says the value is gone (a flat position has no entry price).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Num>, D::Error> {
    Num::deserialize(d).map(Some)
}

/// One row of `/position` or of the `position` table (an update holds only what changed).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PositionRow {
    pub symbol: String,
    #[serde(default, deserialize_with = "present")]
    pub current_qty: Option<Num>,
    #[serde(default, deserialize_with = "present")]
    pub avg_entry_price: Option<Num>,
    #[serde(default, deserialize_with = "present")]
    pub realised_pnl: Option<Num>,
}

impl PositionRow {
    /// Takes the fields `update` carries.
    pub fn merge(&mut self, update: &PositionRow) {
        self.current_qty = update.current_qty.or(self.current_qty);
        self.avg_entry_price = update.avg_entry_price.or(self.avg_entry_price);
        self.realised_pnl = update.realised_pnl.or(self.realised_pnl);
    }

    /// In crypy's terms (quantity in `orderQty` units, realised P&L in the settlement asset);
    /// `None` for an instrument that is not a market.
    pub fn position(&self, markets: &Markets) -> Option<Position> {
        let i = markets.by_symbol.get(&self.symbol)?;
        let (_, scale) = i.settlement();
        let value = |n: Option<Num>| n.and_then(|n| n.0);
        Some(Position {
            pair: i.pair?,
            qty: Qty::new(value(self.current_qty).unwrap_or_default()),
            avg_price: value(self.avg_entry_price).and_then(|d| Price::try_from(d).ok()),
            realized_pnl: scaled(value(self.realised_pnl).unwrap_or_default(), scale),
        })
    }
}

/// Parses a `/position` body (or a `position` table's rows).
///
/// # Errors
/// A body that is not a list of positions.
pub fn parse_position_rows(body: &str) -> Result<Vec<PositionRow>, ExchangeError> {
    serde_json::from_str(body).map_err(|e| bad(format!("positions do not parse: {e}")))
}

/// Parses a `/position` body into crypy positions. Positions on instruments that are not
/// markets are left out.
///
/// # Errors
/// A body that is not a list of positions.
pub fn parse_positions(body: &str, markets: &Markets) -> Result<Vec<Position>, ExchangeError> {
    Ok(parse_position_rows(body)?.iter().filter_map(|p| p.position(markets)).collect())
}

// --- executions ------------------------------------------------------------------------------

/// One row of the `execution` table (the fields crypy uses).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    #[serde(rename = "execID")]
    pub exec_id: String,
    #[serde(rename = "orderID", default)]
    pub order_id: String,
    #[serde(rename = "clOrdID", default)]
    pub cl_ord_id: Option<String>,
    #[serde(default)]
    pub symbol: String,
    #[serde(default)]
    pub side: Option<String>,
    #[serde(default)]
    pub last_qty: Num,
    #[serde(default)]
    pub last_px: Num,
    #[serde(default)]
    pub exec_type: String,
    #[serde(default)]
    pub ord_status: Option<String>,
    #[serde(default)]
    pub leaves_qty: Num,
    #[serde(default)]
    pub exec_comm: Num,
    #[serde(default)]
    pub settl_currency: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub transact_time: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// What an execution means to the desk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecutionReport {
    /// A trade: filled completely (`remaining` zero) or in part.
    Fill(Fill),
    Canceled {
        client_id: ClientOrderId,
        reason: String,
    },
}

impl Execution {
    /// Venue time in ms: `transactTime`, else `timestamp`.
    pub fn time(&self) -> Option<i64> {
        self.transact_time.as_deref().or(self.timestamp.as_deref()).and_then(parse_iso_utc)
    }

    /// The execution as a fill or a cancellation, `None` for other kinds (New, Replaced,
    /// Funding…). `client_id` names the order: crypy's id for the `clOrdID` it sent.
    ///
    /// # Errors
    /// A trade without a side, quantity or price.
    pub fn report(
        &self,
        markets: &Markets,
        client_id: impl FnOnce(&str) -> Option<ClientOrderId>,
    ) -> Result<Option<ExecutionReport>, ExchangeError> {
        let cl = self.cl_ord_id.as_deref().filter(|c| !c.is_empty()).unwrap_or(&self.order_id);
        let Some(client_id) = client_id(cl) else { return Ok(None) };
        let fail = |what: &str| bad(format!("execution {}: {what}", self.exec_id));
        match self.exec_type.as_str() {
            "Trade" => {
                let instrument = markets.by_symbol.get(&self.symbol).ok_or_else(|| fail("unknown symbol"))?;
                let side = match self.side.as_deref() {
                    Some("Buy") => Side::Buy,
                    Some("Sell") => Side::Sell,
                    _ => return Err(fail("no side")),
                };
                let qty = self.last_qty.0.filter(|q| *q > Decimal::ZERO).ok_or_else(|| fail("no lastQty"))?;
                let price = self.last_px.0.and_then(|p| Price::try_from(p).ok()).ok_or_else(|| fail("no lastPx"))?;
                let currency = self.settl_currency.as_deref().unwrap_or(&instrument.settl_currency);
                let (fee_asset, scale) = currency_unit(currency);
                Ok(Some(ExecutionReport::Fill(Fill {
                    client_id,
                    venue_order_id: (!self.order_id.is_empty()).then(|| self.order_id.clone()),
                    fill_id: self.exec_id.clone(),
                    pair: instrument.pair.ok_or_else(|| fail("no pair"))?,
                    side,
                    qty: Qty::new(qty),
                    price,
                    fee: scaled(self.exec_comm.0.unwrap_or_default(), scale),
                    fee_asset: fee_asset.ok_or_else(|| fail("unknown settlement currency"))?,
                    remaining: Qty::new(self.leaves_qty.0.unwrap_or_default()),
                })))
            }
            "Canceled" => Ok(Some(ExecutionReport::Canceled {
                client_id,
                reason: self.text.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| "canceled".into()),
            })),
            _ => Ok(None),
        }
    }
}

// --- the L2 book -------------------------------------------------------------------------------

#[derive(Deserialize)]
struct RawLevel {
    symbol: String,
    id: u64,
    side: String,
    #[serde(default)]
    size: Num,
    #[serde(default)]
    price: Num,
}

/// A book level: price and size.
pub type Level = (Decimal, Decimal);

/// One symbol's `orderBookL2` book: levels by id, as the table keys them (older messages
/// give an update's price only through its id).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Book {
    levels: BTreeMap<u64, (Side, Decimal, Decimal)>,
}

impl Book {
    /// The highest bid and lowest ask, each (price, size).
    pub fn best(&self) -> (Option<Level>, Option<Level>) {
        let mut bid: Option<Level> = None;
        let mut ask: Option<Level> = None;
        for &(side, price, size) in self.levels.values() {
            match side {
                Side::Buy if bid.is_none_or(|(p, _)| price > p) => bid = Some((price, size)),
                Side::Sell if ask.is_none_or(|(p, _)| price < p) => ask = Some((price, size)),
                _ => {}
            }
        }
        (bid, ask)
    }

    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }
}

/// Applies one `orderBookL2*` message (`action` and its `data` array) to `books`, by symbol.
/// A partial replaces the symbol's whole book: that is how a reconnect resyncs.
///
/// # Errors
/// Rows that do not parse.
pub fn apply_book(books: &mut BTreeMap<String, Book>, action: &str, data: &str) -> Result<(), ExchangeError> {
    let rows: Vec<RawLevel> = serde_json::from_str(data).map_err(|e| bad(format!("book rows: {e}")))?;
    if action == "partial" {
        for r in &rows {
            books.insert(r.symbol.clone(), Book::default());
        }
    }
    for r in rows {
        let book = books.entry(r.symbol).or_default();
        let side = if r.side == "Buy" { Side::Buy } else { Side::Sell };
        match action {
            "partial" | "insert" => {
                if let (Some(price), Some(size)) = (r.price.0, r.size.0) {
                    book.levels.insert(r.id, (side, price, size));
                }
            }
            "update" => {
                if let Some(level) = book.levels.get_mut(&r.id) {
                    if let Some(size) = r.size.0 {
                        level.2 = size;
                    }
                    if let Some(price) = r.price.0 {
                        level.1 = price;
                    }
                }
            }
            "delete" => {
                book.levels.remove(&r.id);
            }
            _ => {}
        }
    }
    Ok(())
}

// --- what crypy sends --------------------------------------------------------------------------

/// The longest `clOrdID` BitMEX accepts.
pub const MAX_CL_ORD_ID: usize = 36;

/// The `clOrdID` for a crypy client id: itself when it fits in 36 characters, else a
/// deterministic digest (`h` and 35 hex digits of its SHA-256), so a retry after a restart
/// names the same order.
pub fn cl_ord_id(id: &ClientOrderId) -> String {
    let s = id.as_str();
    if s.len() <= MAX_CL_ORD_ID {
        return s.to_owned();
    }
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::from("h");
    for b in digest.iter() {
        let _ = write!(out, "{b:02x}");
    }
    out.truncate(MAX_CL_ORD_ID);
    out
}

/// Checks an order against the instrument's lot and tick sizes, as BitMEX would.
///
/// # Errors
/// [`ExchangeError::Rejected`] naming the rule broken.
pub fn check_order(order: &OrderRequest, instrument: &Instrument) -> Result<(), ExchangeError> {
    let qty = order.qty.value();
    if qty <= Decimal::ZERO || !(qty % instrument.lot_size).is_zero() {
        return Err(bad(format!(
            "orderQty {} of {} must be a positive multiple of the lot size {}",
            order.qty, instrument.symbol, instrument.lot_size
        )));
    }
    if let Some(max) = instrument.max_order_qty {
        if qty > max {
            return Err(bad(format!("orderQty {} of {} is above {max}", order.qty, instrument.symbol)));
        }
    }
    let price = match order.kind {
        OrderKind::Market => None,
        OrderKind::Limit { price }
        | OrderKind::StopLoss { trigger: price }
        | OrderKind::TakeProfit { trigger: price } => Some(price),
    };
    if let Some(p) = price {
        if !(p.value() % instrument.tick_size).is_zero() {
            return Err(bad(format!(
                "price {p} of {} must be a multiple of the tick size {}",
                instrument.symbol, instrument.tick_size
            )));
        }
    }
    Ok(())
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The body of `POST /order`. Numbers are written as exact decimal text (never through a
/// float), e.g. `{"symbol":"XBTUSD","side":"Buy","orderQty":100,"clOrdID":"1-2-3","ordType":"Limit","price":32180.5}`.
pub fn order_body(order: &OrderRequest, symbol: &str) -> String {
    let side = match order.side {
        Side::Buy => "Buy",
        Side::Sell => "Sell",
    };
    let mut body = format!(
        r#"{{"symbol":{},"side":"{side}","orderQty":{},"clOrdID":{}"#,
        json_str(symbol),
        order.qty.normalize(),
        json_str(&cl_ord_id(&order.client_id))
    );
    match order.kind {
        OrderKind::Market => body.push_str(r#","ordType":"Market""#),
        OrderKind::Limit { price } => {
            let _ = write!(body, r#","ordType":"Limit","price":{}"#, price.normalize());
        }
        OrderKind::StopLoss { trigger } => {
            let _ = write!(body, r#","ordType":"Stop","stopPx":{}"#, trigger.normalize());
        }
        OrderKind::TakeProfit { trigger } => {
            let _ = write!(body, r#","ordType":"MarketIfTouched","stopPx":{}"#, trigger.normalize());
        }
    }
    body.push('}');
    body
}

/// The body of `PUT /order`: new quantity and/or price for the order named by its `clOrdID`.
pub fn amend_body(cl_ord_id: &str, qty: Option<Qty>, price: Option<Price>) -> String {
    let mut body = format!(r#"{{"origClOrdID":{}"#, json_str(cl_ord_id));
    if let Some(q) = qty {
        let _ = write!(body, r#","orderQty":{}"#, q.normalize());
    }
    if let Some(p) = price {
        let _ = write!(body, r#","price":{}"#, p.normalize());
    }
    body.push('}');
    body
}

/// `{"clOrdID":"…"}`, the filter that finds one order, and the body that cancels it.
pub fn cl_ord_id_json(cl_ord_id: &str) -> String {
    format!(r#"{{"clOrdID":{}}}"#, json_str(cl_ord_id))
}

/// Percent-encodes a query value (everything but unreserved characters), so that the text
/// signed is byte for byte the text sent.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS.fffZ`, BitMEX's time format.
pub fn iso(ms: i64) -> String {
    let t = crypy_core::time::format_utc(ms - ms.rem_euclid(1000));
    format!("{}T{}.{:03}Z", &t[..10], &t[11..19], ms.rem_euclid(1000))
}

/// An order as BitMEX returns it, for [`super::http::parse_order`].
///
/// # Errors
/// A body that is not a list of orders (or one order).
pub fn parse_orders(body: &str) -> Result<Vec<super::http::OrderState>, ExchangeError> {
    use super::http::{parse_order, BitmexOrder};
    let orders: Vec<BitmexOrder> = if body.trim_start().starts_with('[') {
        serde_json::from_str(body)
    } else {
        serde_json::from_str(body).map(|o| vec![o])
    }
    .map_err(|e| bad(format!("orders do not parse: {e}")))?;
    orders.iter().map(parse_order).collect()
}

impl FromStr for Instrument {
    type Err = ExchangeError;
    /// One instrument object.
    fn from_str(s: &str) -> Result<Self, ExchangeError> {
        parse_instruments(&format!("[{s}]"))?.pop().ok_or_else(|| bad("no instrument"))
    }
}
