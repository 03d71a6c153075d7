//! The REST transport to Kraken: signed private calls with their nonces, the local call
//! counter, HTTP status and envelope errors mapped to [`ExchangeError`], and the raw tap.
//! Typed results of the endpoints crypy uses live here too, parsed exactly as decimals.
//!
//! Nothing secret leaves this module: errors name the endpoint and Kraken's error string,
//! never the body sent, the key, the signature or a WebSocket token.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crypy_core::{Asset, Pair, Price, Qty, Side};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};

use crate::kraken::http::{self, asset};
use crate::kraken::limits::{self, CallCounter, Tier};
use crate::kraken::nonce::NonceStore;
use crate::kraken::KrakenCredential;
use crate::{ExchangeError, RawMessage, RawTap};

/// A number Kraken sends either as a JSON string (`"0.01000000"`) or a JSON number
/// (`0.01`), read from its text so that no float ever rounds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dec(pub Decimal);

/// Parses a decimal from JSON text: quoted or not, plain or in scientific notation.
pub fn parse_decimal(text: &str) -> Result<Decimal, String> {
    let t = text.trim().trim_matches('"');
    Decimal::from_str(t).or_else(|_| Decimal::from_scientific(t)).map_err(|_| format!("{t:?} is not a decimal number"))
}

impl<'de> Deserialize<'de> for Dec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: Box<serde_json::value::RawValue> = Deserialize::deserialize(d)?;
        parse_decimal(raw.get()).map(Dec).map_err(serde::de::Error::custom)
    }
}

/// Where nonces come from: the persistent store when the desk has a data dir, else a
/// counter from the clock (enough for one process; a restart starts above the clock).
#[derive(Debug)]
enum Nonces {
    Store(NonceStore),
    Clock(u64),
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Wall clock in ms since the epoch.
pub fn now_ms() -> i64 {
    (now_us() / 1000) as i64
}

/// The HTTP side of a Kraken account.
#[derive(Debug)]
pub struct Rest {
    http: reqwest::Client,
    base: String,
    credential: Option<KrakenCredential>,
    nonces: Mutex<Nonces>,
    counter: Mutex<CallCounter>,
    /// Private calls go one at a time: two in flight could reach Kraken in the other order
    /// than their nonces, and the later nonce arriving first makes the other invalid.
    in_flight: tokio::sync::Mutex<()>,
    started: Instant,
    raw: Option<RawTap>,
}

/// `application/x-www-form-urlencoded` escaping of one key or value.
pub fn form_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a form body into its fields (used by the fake venue and by tests).
pub fn form_decode(body: &str) -> BTreeMap<String, String> {
    let unescape = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => match u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or(""), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    body.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (unescape(k), unescape(v)),
            None => (unescape(kv), String::new()),
        })
        .collect()
}

impl Rest {
    /// # Errors
    /// When the HTTP client cannot be set up or the nonce file cannot be opened.
    pub fn new(
        base: &str,
        credential: Option<KrakenCredential>,
        nonce_path: Option<&Path>,
        timeout: Duration,
        tier: Tier,
        raw: Option<RawTap>,
    ) -> Result<Self, ExchangeError> {
        let nonces = match nonce_path {
            Some(p) => Nonces::Store(NonceStore::open(p).map_err(|e| ExchangeError::Rejected {
                reason: format!("cannot open the Kraken nonce file {}: {e}", p.display()),
            })?),
            None => Nonces::Clock(0),
        };
        Ok(Rest {
            http: crate::net::http_client(timeout)?,
            base: base.trim_end_matches('/').to_owned(),
            credential,
            nonces: Mutex::new(nonces),
            counter: Mutex::new(CallCounter::new(tier)),
            in_flight: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            raw,
        })
    }

    pub fn has_key(&self) -> bool {
        self.credential.is_some()
    }

    fn tap(&self, channel: String, text: &str) {
        if let Some(raw) = &self.raw {
            let _ = raw.send(RawMessage { received: now_ms(), channel, text: text.to_owned() });
        }
    }

    fn next_nonce(&self) -> Result<u64, ExchangeError> {
        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *nonces {
            Nonces::Store(store) => store
                .next(now_us())
                .map_err(|e| ExchangeError::Rejected { reason: format!("cannot keep the Kraken nonce: {e}") }),
            Nonces::Clock(last) => {
                *last = (*last + 1).max(now_us());
                Ok(*last)
            }
        }
    }

    /// Waits until the local call counter admits a call to `path`, so that Kraken never has
    /// to refuse one.
    async fn admit(&self, path: &str) {
        let cost = limits::cost(path);
        if cost == 0.0 {
            return;
        }
        loop {
            let now = self.started.elapsed().as_millis() as u64;
            let wait = self.counter.lock().unwrap_or_else(|p| p.into_inner()).admit(now, cost);
            match wait {
                Ok(()) => return,
                Err(ms) => tokio::time::sleep(Duration::from_millis(ms.max(1))).await,
            }
        }
    }

    async fn finish(
        &self,
        path: &str,
        sent: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<String, ExchangeError> {
        let response = sent.map_err(|e| {
            let why = if e.is_timeout() { "no answer in time".to_owned() } else { "connection failed".to_owned() };
            ExchangeError::Connectivity(format!("Kraken {path}: {why}"))
        })?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|_| ExchangeError::Connectivity(format!("Kraken {path}: the answer broke off")))?;
        if !path.ends_with("/GetWebSocketsToken") {
            self.tap(format!("rest:{path}"), &body);
        }
        match status {
            200..=299 => Ok(body),
            429 => Err(ExchangeError::RateLimited { reason: format!("Kraken {path}: HTTP 429") }),
            500..=599 => Err(ExchangeError::Connectivity(format!("Kraken {path}: HTTP {status}"))),
            _ => match http::result::<serde_json::Value>(&body) {
                Err(e) => Err(e),
                Ok(_) => Err(ExchangeError::Rejected { reason: format!("Kraken {path}: HTTP {status}") }),
            },
        }
    }

    /// A public GET, e.g. `public("Ticker", &[("pair", "XXBTZEUR")])`; returns the body.
    ///
    /// # Errors
    /// Connectivity, HTTP status errors (not Kraken's envelope errors: parse with [`http::result`]).
    pub async fn public(&self, endpoint: &str, query: &[(&str, String)]) -> Result<String, ExchangeError> {
        let path = format!("/0/public/{endpoint}");
        let mut url = format!("{}{path}", self.base);
        if !query.is_empty() {
            let q: Vec<String> = query.iter().map(|(k, v)| format!("{}={}", form_escape(k), form_escape(v))).collect();
            url.push('?');
            url.push_str(&q.join("&"));
        }
        let sent = self.http.get(url).send().await;
        self.finish(&path, sent).await
    }

    /// A signed private POST; returns the body.
    ///
    /// # Errors
    /// [`ExchangeError::Rejected`] without a key; connectivity and HTTP status errors.
    pub async fn private(&self, endpoint: &str, params: &[(&str, String)]) -> Result<String, ExchangeError> {
        let path = format!("/0/private/{endpoint}");
        let Some(credential) = &self.credential else {
            return Err(ExchangeError::Rejected {
                reason: format!("Kraken {endpoint} needs an API key, and this account has none (public data only)"),
            });
        };
        self.admit(&path).await;
        let _turn = self.in_flight.lock().await;
        let nonce = self.next_nonce()?;
        let mut body = format!("nonce={nonce}");
        for (k, v) in params {
            body.push_str(&format!("&{}={}", form_escape(k), form_escape(v)));
        }
        let sign = credential.sign(&path, nonce, &body);
        let sent = self
            .http
            .post(format!("{}{path}", self.base))
            .header("API-Key", credential.api_key())
            .header("API-Sign", sign)
            .header("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
            .body(body)
            .send()
            .await;
        self.finish(&path, sent).await
    }

    /// A private call parsed into its `result`.
    ///
    /// # Errors
    /// As [`Rest::private`], and Kraken's envelope errors.
    pub async fn private_result<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        params: &[(&str, String)],
    ) -> Result<T, ExchangeError> {
        http::result(&self.private(endpoint, params).await?)
    }

    /// A public call parsed into its `result`.
    ///
    /// # Errors
    /// As [`Rest::public`], and Kraken's envelope errors.
    pub async fn public_result<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        query: &[(&str, String)],
    ) -> Result<T, ExchangeError> {
        http::result(&self.public(endpoint, query).await?)
    }
}

// ---------------------------------------------------------------------------------------------
// Typed results.

#[derive(Clone, Debug, Deserialize)]
struct RawOrderDescr {
    pair: String,
    #[serde(rename = "type")]
    side: String,
    ordertype: String,
    price: Option<Dec>,
    price2: Option<Dec>,
}

#[derive(Clone, Debug, Deserialize)]
struct RawOrder {
    status: String,
    #[serde(default)]
    cl_ord_id: Option<String>,
    #[serde(default)]
    userref: Option<i64>,
    opentm: Dec,
    #[serde(default)]
    closetm: Option<Dec>,
    descr: RawOrderDescr,
    vol: Dec,
    vol_exec: Dec,
    cost: Dec,
    fee: Dec,
    price: Dec,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    trades: Vec<String>,
}

/// An order as OpenOrders, ClosedOrders and QueryOrders describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KrakenOrder {
    pub txid: String,
    /// `pending`, `open`, `closed`, `canceled`, `expired`.
    pub status: String,
    pub cl_ord_id: Option<String>,
    pub userref: Option<i64>,
    /// Kraken's pair name as in `descr` (`XBTEUR`).
    pub pair: String,
    pub side: Side,
    /// `market`, `limit`, `stop-loss`…
    pub order_type: String,
    /// Limit or trigger price; `None` for market orders.
    pub price: Option<Price>,
    pub volume: Qty,
    pub volume_executed: Qty,
    /// In the quote asset.
    pub cost: Decimal,
    pub fee: Decimal,
    /// Average fill price; zero when nothing filled.
    pub average_price: Decimal,
    pub open_time_ms: i64,
    pub close_time_ms: Option<i64>,
    pub reason: Option<String>,
    pub trades: Vec<String>,
}

fn seconds_to_ms(d: Dec) -> i64 {
    use rust_decimal::prelude::ToPrimitive;
    // A time past what a Decimal can hold in ms is as unreadable as one past i64, not a panic.
    d.0.checked_mul(Decimal::from(1000)).and_then(|ms| ms.trunc().to_i64()).unwrap_or(0)
}

fn side(text: &str) -> Result<Side, ExchangeError> {
    text.parse().map_err(|_| ExchangeError::Rejected { reason: format!("unknown side {text:?} from Kraken") })
}

fn into_order(txid: String, o: RawOrder) -> Result<KrakenOrder, ExchangeError> {
    let price = o.descr.price.map(|p| p.0).filter(|p| !p.is_zero()).and_then(|p| Price::new_checked(p).ok());
    let _ = o.descr.price2;
    Ok(KrakenOrder {
        txid,
        status: o.status,
        cl_ord_id: o.cl_ord_id.filter(|c| !c.is_empty()),
        userref: o.userref,
        pair: o.descr.pair,
        side: side(&o.descr.side)?,
        order_type: o.descr.ordertype,
        price,
        volume: Qty::new(o.vol.0),
        volume_executed: Qty::new(o.vol_exec.0),
        cost: o.cost.0,
        fee: o.fee.0,
        average_price: o.price.0,
        open_time_ms: seconds_to_ms(o.opentm),
        close_time_ms: o.closetm.map(seconds_to_ms).filter(|t| *t > 0),
        reason: o.reason.map(|r| r.split_whitespace().collect::<Vec<_>>().join(" ")),
        trades: o.trades,
    })
}

fn orders_of(map: BTreeMap<String, RawOrder>) -> Result<Vec<KrakenOrder>, ExchangeError> {
    let mut orders: Vec<KrakenOrder> =
        map.into_iter().map(|(txid, o)| into_order(txid, o)).collect::<Result<_, _>>()?;
    orders.sort_by(|a, b| a.open_time_ms.cmp(&b.open_time_ms).then_with(|| a.txid.cmp(&b.txid)));
    Ok(orders)
}

/// The `result` of OpenOrders.
///
/// # Errors
/// A body that is not that shape, or Kraken's error.
pub fn parse_open_orders(body: &str) -> Result<Vec<KrakenOrder>, ExchangeError> {
    #[derive(Deserialize)]
    struct R {
        open: BTreeMap<String, RawOrder>,
    }
    orders_of(http::result::<R>(body)?.open)
}

/// The `result` of ClosedOrders: the orders and the total count Kraken has.
///
/// # Errors
/// A body that is not that shape, or Kraken's error.
pub fn parse_closed_orders(body: &str) -> Result<(Vec<KrakenOrder>, u64), ExchangeError> {
    #[derive(Deserialize)]
    struct R {
        closed: BTreeMap<String, RawOrder>,
        #[serde(default)]
        count: u64,
    }
    let r = http::result::<R>(body)?;
    Ok((orders_of(r.closed)?, r.count))
}

/// The `result` of QueryOrders.
///
/// # Errors
/// A body that is not that shape, or Kraken's error.
pub fn parse_query_orders(body: &str) -> Result<Vec<KrakenOrder>, ExchangeError> {
    orders_of(http::result::<BTreeMap<String, RawOrder>>(body)?)
}

/// One of our trades (TradesHistory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KrakenTrade {
    pub trade_id: String,
    pub order_txid: String,
    pub pair: String,
    pub time_ms: i64,
    pub side: Side,
    pub order_type: String,
    pub price: Price,
    pub volume: Qty,
    pub cost: Decimal,
    pub fee: Decimal,
}

/// The `result` of TradesHistory: trades (oldest first) and Kraken's total count.
///
/// # Errors
/// A body that is not that shape, or Kraken's error.
#[derive(Deserialize)]
struct RawTrade {
    ordertxid: String,
    pair: String,
    time: Dec,
    #[serde(rename = "type")]
    side: String,
    ordertype: String,
    price: Dec,
    cost: Dec,
    fee: Dec,
    vol: Dec,
}

/// Trades by id, oldest first.
fn into_trades(raw: BTreeMap<String, RawTrade>) -> Result<Vec<KrakenTrade>, ExchangeError> {
    let mut trades = raw
        .into_iter()
        .map(|(id, t)| {
            Ok(KrakenTrade {
                trade_id: id,
                order_txid: t.ordertxid,
                pair: t.pair,
                time_ms: seconds_to_ms(t.time),
                side: side(&t.side)?,
                order_type: t.ordertype,
                price: Price::new_checked(t.price.0)
                    .map_err(|e| ExchangeError::Rejected { reason: format!("trade price: {e}") })?,
                volume: Qty::new(t.vol.0),
                cost: t.cost.0,
                fee: t.fee.0,
            })
        })
        .collect::<Result<Vec<_>, ExchangeError>>()?;
    trades.sort_by(|a, b| a.time_ms.cmp(&b.time_ms).then_with(|| a.trade_id.cmp(&b.trade_id)));
    Ok(trades)
}

pub fn parse_trades_history(body: &str) -> Result<(Vec<KrakenTrade>, u64), ExchangeError> {
    #[derive(Deserialize)]
    struct R {
        trades: BTreeMap<String, RawTrade>,
        #[serde(default)]
        count: u64,
    }
    let r = http::result::<R>(body)?;
    Ok((into_trades(r.trades)?, r.count))
}

/// The `result` of QueryTrades: the trades asked for, oldest first.
///
/// # Errors
/// A body that is not that shape, or Kraken's error.
pub fn parse_query_trades(body: &str) -> Result<Vec<KrakenTrade>, ExchangeError> {
    into_trades(http::result::<BTreeMap<String, RawTrade>>(body)?)
}

/// One pair of a Ticker result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KrakenTicker {
    /// Kraken's symbol (`XXBTZEUR`).
    pub symbol: String,
    pub ask: Price,
    pub bid: Price,
    pub last: Price,
    /// Volume today and over the last 24 hours, in the base asset.
    pub volume_today: Qty,
    pub volume_24h: Qty,
    pub open_today: Price,
}

/// The `result` of Ticker, one entry per pair, sorted by symbol.
///
/// # Errors
/// A body that is not that shape, or Kraken's error.
pub fn parse_ticker(body: &str) -> Result<Vec<KrakenTicker>, ExchangeError> {
    #[derive(Deserialize)]
    struct T {
        a: Vec<Dec>,
        b: Vec<Dec>,
        c: Vec<Dec>,
        v: Vec<Dec>,
        o: Dec,
    }
    let r = http::result::<BTreeMap<String, T>>(body)?;
    r.into_iter()
        .map(|(symbol, t)| {
            let bad = || ExchangeError::Rejected { reason: format!("Ticker {symbol}: missing or bad field") };
            let price = |v: &[Dec]| v.first().and_then(|d| Price::new_checked(d.0).ok()).ok_or_else(bad);
            Ok(KrakenTicker {
                ask: price(&t.a)?,
                bid: price(&t.b)?,
                last: price(&t.c)?,
                volume_today: Qty::new(t.v.first().ok_or_else(bad)?.0),
                volume_24h: Qty::new(t.v.get(1).ok_or_else(bad)?.0),
                open_today: Price::new_checked(t.o.0).map_err(|_| bad())?,
                symbol,
            })
        })
        .collect()
}

/// The `result` of Depth for one pair: bids best first (descending), asks best first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KrakenDepth {
    pub symbol: String,
    pub bids: Vec<(Price, Qty)>,
    pub asks: Vec<(Price, Qty)>,
}

/// # Errors
/// A body that is not that shape, or Kraken's error.
pub fn parse_depth(body: &str) -> Result<Vec<KrakenDepth>, ExchangeError> {
    #[derive(Deserialize)]
    struct D {
        bids: Vec<(Dec, Dec, serde::de::IgnoredAny)>,
        asks: Vec<(Dec, Dec, serde::de::IgnoredAny)>,
    }
    let r = http::result::<BTreeMap<String, D>>(body)?;
    r.into_iter()
        .map(|(symbol, d)| {
            let levels = |v: Vec<(Dec, Dec, serde::de::IgnoredAny)>| {
                v.into_iter()
                    .map(|(p, q, _)| {
                        Price::new_checked(p.0)
                            .map(|p| (p, Qty::new(q.0)))
                            .map_err(|e| ExchangeError::Rejected { reason: format!("Depth {symbol}: {e}") })
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            Ok(KrakenDepth { bids: levels(d.bids)?, asks: levels(d.asks)?, symbol: symbol.clone() })
        })
        .collect()
}

/// The `result` of GetWebSocketsToken. `Debug` hides the token.
#[derive(Clone, Deserialize)]
pub struct WsToken {
    pub token: String,
    pub expires: u64,
}

impl std::fmt::Debug for WsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WsToken(redacted, expires in {} s)", self.expires)
    }
}

/// An asset code in crypy's naming, for a Kraken asset code (REST) or a v2 WebSocket one.
pub fn crypy_asset(code: &str) -> Option<Asset> {
    match code {
        "BTC" => "XBT".parse().ok(),
        "DOGE" => "XDG".parse().ok(),
        _ => asset(code),
    }
}

/// The WebSocket v2 name of a crypy pair: v2 says BTC and DOGE where v1 and REST say XBT and XDG.
pub fn v2_symbol(pair: &Pair) -> String {
    let name = |a: &Asset| match a.as_str() {
        "XBT" => "BTC".to_owned(),
        "XDG" => "DOGE".to_owned(),
        other => other.to_owned(),
    };
    format!("{}/{}", name(&pair.base), name(&pair.quote))
}

/// The crypy pair of a WebSocket v2 symbol (`BTC/USD` → `XBT/USD`).
pub fn pair_of_v2(symbol: &str) -> Option<Pair> {
    let (b, q) = symbol.split_once('/')?;
    Some(Pair::new(crypy_asset(b)?, crypy_asset(q)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_come_from_text() {
        assert_eq!(parse_decimal("\"0.01000000\"").unwrap().to_string(), "0.01000000");
        assert_eq!(parse_decimal("29430.2").unwrap().to_string(), "29430.2");
        assert_eq!(parse_decimal("4.0").unwrap().to_string(), "4.0");
        assert_eq!(parse_decimal("1e-5").unwrap().to_string(), "0.00001");
        assert!(parse_decimal("x").is_err());
    }

    #[test]
    fn forms_round_trip() {
        let body = format!("a={}&b={}", form_escape("x y/+=&"), form_escape("ok-1_2.3"));
        let f = form_decode(&body);
        assert_eq!((f["a"].as_str(), f["b"].as_str()), ("x y/+=&", "ok-1_2.3"));
    }

    #[test]
    fn v2_names() {
        let p: Pair = "XBT/EUR".parse().unwrap();
        assert_eq!(v2_symbol(&p), "BTC/EUR");
        assert_eq!(pair_of_v2("BTC/EUR"), Some(p));
        assert_eq!(pair_of_v2("DOGE/USD").unwrap().to_string(), "XDG/USD");
    }
}
