//! A fake BitMEX on loopback: REST (`/api/v1`) and the realtime WebSocket (`/realtime`), for
//! tests of the adapter and of the `crypy` binary. It owns no real money and sends nothing
//! anywhere.
//!
//! It checks requests the way BitMEX does (`api-key`, `api-expires` in the future,
//! `api-signature` over verb, path with query, expiry and body; duplicate `clOrdID`s; lot and
//! tick sizes), answers with BitMEX's error bodies and `x-ratelimit-*` headers, and keeps the
//! account: orders, executions, positions, margin. Market orders fill at once at the latest
//! close; limit, stop and if-touched orders fill when a streamed candle crosses their price.
//! Faults are injected per path ([`fail_next`]) and the sockets can be dropped
//! ([`drop_websockets`]) to test what a client does about them.
//!
//! [`fail_next`]: crate::loopback::bitmex::FakeBitmex::fail_next
//! [`drop_websockets`]: crate::loopback::bitmex::FakeBitmex::drop_websockets
//!
//! Known simplifications: a limit order never fills on arrival, even when marketable; margin
//! only moves by fees (no unrealised P&L or order margin); one account.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crypy_core::{Candle, Interval, Pair};
use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::{HttpRequest, HttpResponse, HttpServer, Reply, ServerWs, WsServer};
use crate::bitmex::rest::{self, iso, Instrument, Markets, Num};
use crate::bitmex::BitmexCredential;

/// The recorded `/instrument/active` slice (XBTUSD, ETHUSD, SOLUSDT, XBTEUR, XBTU21), 2021-07-22.
pub const RECORDED_INSTRUMENTS: &str = include_str!("../../test_data/bitmex/instrument_active_2021-07-22.json");
/// Recorded XBTUSD 1m buckets, 2021-05-19 13:00–13:59 (ends of bins).
pub const RECORDED_BUCKETS: &str = include_str!("../../test_data/bitmex/trade_bucketed_1m_XBTUSD_2021-05-19.json");
/// A recorded XBTUSD `orderBookL2` partial (25 levels a side) and 40 messages after it.
pub const RECORDED_BOOK: &str = include_str!("../../test_data/bitmex/ws_orderBookL2_XBTUSD_2021-07-22.jsonl");

/// The recorded buckets as XBT/USD candles.
pub fn recorded_candles() -> Vec<Candle> {
    let pair: Pair = "XBT/USD".parse().expect("a pair");
    rest::parse_buckets(RECORDED_BUCKETS, pair, Interval::from_secs(60).expect("1m")).expect("recorded buckets parse")
}

/// What the fake venue holds and streams.
#[derive(Clone, Debug)]
pub struct FakeBitmexOptions {
    pub key: String,
    pub secret: String,
    /// An `/instrument/active` body.
    pub instruments: String,
    /// The account's margin: BitMEX currency and wallet balance in its unit (`("XBt", 100_000_000)` is 1 XBT).
    pub margins: Vec<(String, i64)>,
    /// Closed candles `/trade/bucketed` serves (1m), before any streamed one.
    pub history: Vec<Candle>,
    /// Candles streamed on `tradeBin1m`, one per `candle_pace`, from the first subscription.
    pub candles: Vec<Candle>,
    pub candle_pace: Duration,
    /// `orderBookL2` messages, one JSON object a line: a partial, then updates; sent to each
    /// `orderBookL2_25` subscriber of its symbol.
    pub book: String,
    /// How late a [`Fault::Timeout`] answer comes.
    pub timeout_delay: Duration,
}

impl FakeBitmexOptions {
    /// The recorded instruments, book and history, 1 XBT of margin, no candles to stream.
    pub fn new(key: impl Into<String>, secret: impl Into<String>) -> Self {
        FakeBitmexOptions {
            key: key.into(),
            secret: secret.into(),
            instruments: RECORDED_INSTRUMENTS.to_owned(),
            margins: vec![("XBt".into(), 100_000_000)],
            history: recorded_candles(),
            candles: Vec::new(),
            candle_pace: Duration::from_millis(50),
            book: RECORDED_BOOK.to_owned(),
            timeout_delay: Duration::from_secs(30),
        }
    }
}

/// BitMEX's way of each: 429 with `x-ratelimit-remaining: 0` and `retry-after: 1`, 503 "The
/// system is currently overloaded", a late answer after `timeout_delay`.
pub use super::Fault;

/// An order the fake accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeOrder {
    pub order_id: String,
    pub cl_ord_id: String,
    pub symbol: String,
    /// `Buy` or `Sell`.
    pub side: String,
    /// `Market`, `Limit`, `Stop`, `MarketIfTouched`.
    pub ord_type: String,
    pub qty: Decimal,
    pub price: Option<Decimal>,
    pub stop_px: Option<Decimal>,
    /// `New`, `Filled`, `Canceled`.
    pub status: String,
    pub leaves: Decimal,
    pub cum: Decimal,
    pub avg_px: Option<Decimal>,
    pub time: i64,
}

impl FakeOrder {
    /// New or partially filled.
    pub fn is_open(&self) -> bool {
        self.status == "New" || self.status == "PartiallyFilled"
    }
}

/// A request as the fake saw it (without its headers, which carry the key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeRequest {
    pub method: String,
    pub target: String,
    pub body: String,
    pub status: u16,
}

enum Out {
    Text(String),
    Close,
}

struct Socket {
    id: u64,
    authed: bool,
    topics: HashSet<String>,
    tx: mpsc::UnboundedSender<Out>,
}

struct State {
    credential: BitmexCredential,
    key: String,
    instruments_body: String,
    instruments: Vec<Instrument>,
    markets: Markets,
    margins: BTreeMap<String, Decimal>,
    history: Vec<Candle>,
    streamed: Vec<Candle>,
    book: Vec<String>,
    orders: Vec<FakeOrder>,
    executions: Vec<String>,
    positions: BTreeMap<String, (Decimal, Option<Decimal>)>,
    last_price: BTreeMap<String, Decimal>,
    faults: BTreeMap<String, VecDeque<Fault>>,
    requests: Vec<FakeRequest>,
    sockets: Vec<Socket>,
    next_id: u64,
    window: (u64, u32),
    /// Order-route requests in the current second (BitMEX allows 10).
    second: (u64, u32),
    timeout_delay: Duration,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn num(d: Option<Decimal>) -> String {
    d.map_or_else(|| "null".to_owned(), |d| d.normalize().to_string())
}

fn error(status: u16, name: &str, message: &str) -> HttpResponse {
    HttpResponse::json(status, format!(r#"{{"error":{{"message":{},"name":"{name}"}}}}"#, json_str(message)))
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(req: &HttpRequest) -> BTreeMap<String, String> {
    req.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Body {
    symbol: Option<String>,
    side: Option<String>,
    #[serde(default)]
    order_qty: Num,
    #[serde(default)]
    price: Num,
    #[serde(default)]
    stop_px: Num,
    ord_type: Option<String>,
    #[serde(rename = "clOrdID")]
    cl_ord_id: Option<String>,
    #[serde(rename = "origClOrdID")]
    orig_cl_ord_id: Option<String>,
    #[serde(rename = "orderID")]
    order_id: Option<String>,
}

impl State {
    fn uuid(&mut self) -> String {
        self.next_id += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.next_id)
    }

    fn instrument(&self, symbol: &str) -> Option<&Instrument> {
        self.instruments.iter().find(|i| i.symbol == symbol)
    }

    fn order_json(&self, o: &FakeOrder) -> String {
        let settl = self.instrument(&o.symbol).map_or("XBt", |i| i.settl_currency.as_str());
        format!(
            r#"{{"orderID":{},"clOrdID":{},"account":1,"symbol":{},"side":"{}","orderQty":{},"price":{},"stopPx":{},"currency":"USD","settlCurrency":{},"ordType":"{}","timeInForce":"{}","execInst":"","ordStatus":"{}","leavesQty":{},"cumQty":{},"avgPx":{},"text":"Submitted via API.","transactTime":"{}","timestamp":"{}"}}"#,
            json_str(&o.order_id),
            json_str(&o.cl_ord_id),
            json_str(&o.symbol),
            o.side,
            num(Some(o.qty)),
            num(o.price),
            num(o.stop_px),
            json_str(settl),
            o.ord_type,
            if o.ord_type == "Market" { "ImmediateOrCancel" } else { "GoodTillCancel" },
            o.status,
            num(Some(o.leaves)),
            num(Some(o.cum)),
            num(o.avg_px),
            iso(o.time),
            iso(now_ms()),
        )
    }

    fn margin_json(&self) -> String {
        let rows: Vec<String> = self
            .margins
            .iter()
            .map(|(c, w)| {
                format!(
                    r#"{{"account":1,"currency":{},"walletBalance":{w},"marginBalance":{w},"availableMargin":{w},"timestamp":"{}"}}"#,
                    json_str(c),
                    iso(now_ms())
                )
            })
            .collect();
        format!("[{}]", rows.join(","))
    }

    fn positions_json(&self) -> String {
        let rows: Vec<String> = self
            .positions
            .iter()
            .map(|(s, (q, avg))| {
                let currency = self.instrument(s).map_or("XBt", |i| i.settl_currency.as_str());
                format!(
                    r#"{{"account":1,"symbol":{},"currency":{},"currentQty":{},"avgEntryPrice":{},"realisedPnl":0,"isOpen":{},"timestamp":"{}"}}"#,
                    json_str(s),
                    json_str(currency),
                    num(Some(*q)),
                    num(*avg),
                    !q.is_zero(),
                    iso(now_ms())
                )
            })
            .collect();
        format!("[{}]", rows.join(","))
    }

    fn bin_json(&self, c: &Candle) -> Option<String> {
        let symbol = &self.markets.by_pair.get(&c.pair)?.symbol;
        Some(format!(
            r#"{{"timestamp":"{}","symbol":{},"open":{},"high":{},"low":{},"close":{},"trades":{},"volume":{},"vwap":null,"lastSize":null,"turnover":0,"homeNotional":0,"foreignNotional":{}}}"#,
            iso(c.close_time()),
            json_str(symbol),
            c.open,
            c.high,
            c.low,
            c.close,
            c.trades.unwrap_or(0),
            c.volume,
            c.volume
        ))
    }

    /// Sends `text` to every socket subscribed to `topic` (`table` or `table:SYMBOL`).
    fn publish(&mut self, table: &str, symbol: Option<&str>, private: bool, text: &str) {
        self.sockets.retain(|s| {
            let subscribed =
                s.topics.contains(table) || symbol.is_some_and(|sym| s.topics.contains(&format!("{table}:{sym}")));
            if !subscribed || (private && !s.authed) {
                return true;
            }
            s.tx.send(Out::Text(text.to_owned())).is_ok()
        });
    }

    fn publish_rows(&mut self, table: &str, action: &str, symbol: Option<&str>, private: bool, rows: &[String]) {
        let text = format!(r#"{{"table":"{table}","action":"{action}","data":[{}]}}"#, rows.join(","));
        self.publish(table, symbol, private, &text);
    }

    fn last_price(&self, symbol: &str) -> Option<Decimal> {
        self.last_price.get(symbol).copied().or_else(|| self.instrument(symbol)?.last_price.map(|p| p.value()))
    }

    /// Fills order `index` completely at `price`, as taker or maker, and tells the sockets.
    fn fill(&mut self, index: usize, qty: Decimal, price: Decimal, taker: bool) {
        let exec_id = self.uuid();
        let o = &mut self.orders[index];
        let qty = qty.min(o.leaves);
        let before = o.cum;
        o.cum += qty;
        o.leaves -= qty;
        o.avg_px = Some(match o.avg_px {
            Some(avg) if !before.is_zero() => ((avg * before + price * qty) / o.cum).round_dp(8).normalize(),
            _ => price,
        });
        o.status = if o.leaves.is_zero() { "Filled" } else { "PartiallyFilled" }.into();
        o.time = now_ms();
        let o = o.clone();
        let Some(i) = self.instrument(&o.symbol).cloned() else { return };
        let rate = if taker { i.taker_fee } else { i.maker_fee };
        let multiplier = i.multiplier.unwrap_or(Decimal::ONE).abs();
        // What the trade is worth in the settlement currency's unit (XBt for XBTUSD).
        let cost = if i.is_inverse { qty * multiplier / price } else { qty * multiplier * price };
        let cost = cost.round_dp(0);
        let comm = (cost * rate).round_dp(0);
        *self.margins.entry(i.settl_currency.clone()).or_default() -= comm;
        let signed = if o.side == "Buy" { qty } else { -qty };
        let position = self.positions.entry(o.symbol.clone()).or_default();
        let before = position.0;
        position.0 += signed;
        position.1 = if position.0.is_zero() {
            None
        } else if before.is_zero() || before.is_sign_negative() != position.0.is_sign_negative() {
            Some(price)
        } else if before.abs() < position.0.abs() {
            position.1.map(|avg| ((avg * before.abs() + price * qty) / position.0.abs()).round_dp(8))
        } else {
            position.1
        };
        let exec = format!(
            r#"{{"execID":{},"orderID":{},"clOrdID":{},"account":1,"symbol":{},"side":"{}","lastQty":{},"lastPx":{},"orderQty":{},"price":{},"currency":"USD","settlCurrency":{},"execType":"Trade","ordType":"{}","ordStatus":"{}","leavesQty":{},"cumQty":{},"avgPx":{},"commission":{},"execCost":{},"execComm":{},"text":"Submitted via API.","transactTime":"{}","timestamp":"{}"}}"#,
            json_str(&exec_id),
            json_str(&o.order_id),
            json_str(&o.cl_ord_id),
            json_str(&o.symbol),
            o.side,
            num(Some(qty)),
            num(Some(price)),
            num(Some(o.qty)),
            num(o.price),
            json_str(&i.settl_currency),
            o.ord_type,
            o.status,
            num(Some(o.leaves)),
            num(Some(o.cum)),
            num(o.avg_px),
            num(Some(rate)),
            num(Some(cost)),
            num(Some(comm)),
            iso(o.time),
            iso(o.time),
        );
        self.executions.push(exec.clone());
        let order = self.order_json(&o);
        let margin = self.margin_json();
        let positions = self.positions_json();
        self.publish_rows("execution", "insert", Some(&o.symbol), true, &[exec]);
        self.publish_rows("order", "update", Some(&o.symbol), true, &[order]);
        self.publish("margin", None, true, &format!(r#"{{"table":"margin","action":"update","data":{margin}}}"#));
        self.publish(
            "position",
            Some(&o.symbol),
            true,
            &format!(r#"{{"table":"position","action":"update","data":{positions}}}"#),
        );
    }

    fn cancel(&mut self, index: usize) {
        let exec_id = self.uuid();
        let o = &mut self.orders[index];
        o.status = "Canceled".into();
        o.leaves = Decimal::ZERO;
        o.time = now_ms();
        let o = o.clone();
        let exec = format!(
            r#"{{"execID":{},"orderID":{},"clOrdID":{},"account":1,"symbol":{},"side":"{}","lastQty":null,"lastPx":null,"orderQty":{},"price":{},"execType":"Canceled","ordType":"{}","ordStatus":"Canceled","leavesQty":0,"cumQty":{},"text":"Canceled: Cancel from www.bitmex.com","transactTime":"{}","timestamp":"{}"}}"#,
            json_str(&exec_id),
            json_str(&o.order_id),
            json_str(&o.cl_ord_id),
            json_str(&o.symbol),
            o.side,
            num(Some(o.qty)),
            num(o.price),
            o.ord_type,
            num(Some(o.cum)),
            iso(o.time),
            iso(o.time),
        );
        self.executions.push(exec.clone());
        let order = self.order_json(&o);
        self.publish_rows("execution", "insert", Some(&o.symbol), true, &[exec]);
        self.publish_rows("order", "update", Some(&o.symbol), true, &[order]);
    }

    /// Streams one candle: the bin, then whatever it fills.
    fn stream(&mut self, candle: Candle) {
        let Some(row) = self.bin_json(&candle) else { return };
        let Some(symbol) = self.markets.by_pair.get(&candle.pair).map(|i| i.symbol.clone()) else { return };
        self.last_price.insert(symbol.clone(), candle.close.value());
        self.publish_rows("tradeBin1m", "insert", Some(&symbol), false, &[row]);
        let (low, high) = (candle.low.value(), candle.high.value());
        for index in 0..self.orders.len() {
            let o = &self.orders[index];
            if o.symbol != symbol || !o.is_open() {
                continue;
            }
            let buy = o.side == "Buy";
            let fill = match (o.ord_type.as_str(), o.price, o.stop_px) {
                ("Limit", Some(p), _) if (buy && low <= p) || (!buy && high >= p) => Some((p, false)),
                ("Stop", _, Some(s)) if (buy && high >= s) || (!buy && low <= s) => Some((s, true)),
                ("MarketIfTouched", _, Some(s)) if (buy && low <= s) || (!buy && high >= s) => Some((s, true)),
                _ => None,
            };
            if let Some((price, taker)) = fill {
                let qty = self.orders[index].leaves;
                self.fill(index, qty, price, taker);
            }
        }
        self.streamed.push(candle);
    }

    /// Counts an order-route request; `false` when it is over the 10 a second.
    fn order_route_allowed(&mut self) -> bool {
        let now = now_ms() as u64 / 1000;
        if now != self.second.0 {
            self.second = (now, 0);
        }
        self.second.1 += 1;
        self.second.1 <= 10
    }

    fn rate_headers(&mut self, response: HttpResponse, order_route: bool) -> HttpResponse {
        let response = if order_route {
            response.with_header("x-ratelimit-remaining-1s", 10u32.saturating_sub(self.second.1).to_string())
        } else {
            response
        };
        let now = now_ms() as u64 / 1000;
        if now >= self.window.0 + 60 {
            self.window = (now, 0);
        }
        self.window.1 += 1;
        response
            .with_header("x-ratelimit-limit", "120")
            .with_header("x-ratelimit-remaining", 120u32.saturating_sub(self.window.1).max(1).to_string())
            .with_header("x-ratelimit-reset", (self.window.0 + 60).to_string())
    }

    /// `None` when the request is authentic (or needs no key), else BitMEX's 401.
    fn authenticate(&self, req: &HttpRequest, private: bool) -> Option<HttpResponse> {
        let Some(key) = req.header("api-key") else {
            return private.then(|| error(401, "HTTPError", "Not Authorized"));
        };
        if key != self.key {
            return Some(error(401, "HTTPError", "Invalid API Key."));
        }
        let expires: u64 = req.header("api-expires").and_then(|e| e.parse().ok()).unwrap_or(0);
        let now = now_ms() as u64 / 1000;
        if expires <= now {
            return Some(error(
                401,
                "HTTPError",
                &format!("This request has expired - `expires` is in the past. Current time: {now}"),
            ));
        }
        let expected = self.credential.sign(&req.method, &req.target, expires, &req.body);
        if req.header("api-signature") != Some(expected.as_str()) {
            return Some(error(401, "HTTPError", "Signature not valid."));
        }
        None
    }

    fn route(&mut self, req: &HttpRequest) -> HttpResponse {
        let path = req.path().strip_prefix("/api/v1").unwrap_or(req.path()).to_owned();
        let public = matches!(path.as_str(), "/instrument" | "/instrument/active" | "/trade/bucketed");
        if let Some(denied) = self.authenticate(req, !public) {
            return denied;
        }
        let q = query(req);
        let body: Body = if req.body.trim().is_empty() {
            Body::default()
        } else {
            match serde_json::from_str(&req.body) {
                Ok(b) => b,
                Err(e) => return error(400, "ValidationError", &format!("Invalid JSON: {e}")),
            }
        };
        match (req.method.as_str(), path.as_str()) {
            ("GET", "/instrument" | "/instrument/active") => match q.get("symbol") {
                Some(symbol) => {
                    let rows: Vec<serde_json::Value> = serde_json::from_str(&self.instruments_body).unwrap_or_default();
                    let rows: Vec<_> = rows.into_iter().filter(|r| r["symbol"] == symbol.as_str()).collect();
                    HttpResponse::json(200, serde_json::Value::Array(rows).to_string())
                }
                None => HttpResponse::json(200, self.instruments_body.clone()),
            },
            ("GET", "/trade/bucketed") => self.bucketed(&q),
            ("GET", "/user/margin") => {
                if q.get("currency").is_some_and(|c| c == "all") {
                    HttpResponse::json(200, self.margin_json())
                } else {
                    let all = self.margin_json();
                    let first =
                        serde_json::from_str::<Vec<serde_json::Value>>(&all).ok().and_then(|v| v.into_iter().next());
                    HttpResponse::json(200, first.map_or("{}".into(), |v| v.to_string()))
                }
            }
            ("GET", "/position") => HttpResponse::json(200, self.positions_json()),
            ("GET", "/order") => self.list_orders(&q),
            ("GET", "/execution/tradeHistory") => self.trade_history(&q),
            ("POST", "/order") => self.create(&body),
            ("PUT", "/order") => self.amend(&body),
            ("DELETE", "/order") => {
                let cl = body.cl_ord_id.clone().or_else(|| q.get("clOrdID").cloned());
                let id = body.order_id.clone().or_else(|| q.get("orderID").cloned());
                let Some(index) = self
                    .orders
                    .iter()
                    .position(|o| Some(&o.cl_ord_id) == cl.as_ref() || Some(&o.order_id) == id.as_ref())
                else {
                    return error(404, "HTTPError", "Not Found");
                };
                if self.orders[index].is_open() {
                    self.cancel(index);
                    HttpResponse::json(200, format!("[{}]", self.order_json(&self.orders[index])))
                } else {
                    let o = &self.orders[index];
                    let json = self.order_json(o);
                    let with_error = format!(
                        r#"{},"error":"Unable to cancel order due to existing state: {}"}}"#,
                        &json[..json.len() - 1],
                        o.status
                    );
                    HttpResponse::json(200, format!("[{with_error}]"))
                }
            }
            ("DELETE", "/order/all") => {
                let open: Vec<usize> = (0..self.orders.len())
                    .filter(|&i| {
                        self.orders[i].is_open() && body.symbol.as_ref().is_none_or(|s| *s == self.orders[i].symbol)
                    })
                    .collect();
                for &i in &open {
                    self.cancel(i);
                }
                let rows: Vec<String> = open.iter().map(|&i| self.order_json(&self.orders[i])).collect();
                HttpResponse::json(200, format!("[{}]", rows.join(",")))
            }
            _ => error(404, "HTTPError", "Not Found"),
        }
    }

    fn bucketed(&self, q: &BTreeMap<String, String>) -> HttpResponse {
        if q.get("binSize").map(String::as_str) != Some("1m") {
            return error(400, "ValidationError", "binSize: this fake serves 1m only");
        }
        let symbol = q.get("symbol").cloned().unwrap_or_default();
        let count: usize = q.get("count").and_then(|c| c.parse().ok()).unwrap_or(100).min(1000);
        let start = q.get("startTime").and_then(|t| crypy_core::time::parse_iso_utc(t));
        let mut rows: Vec<&Candle> = self
            .history
            .iter()
            .chain(&self.streamed)
            .filter(|c| self.markets.by_pair.get(&c.pair).is_some_and(|i| i.symbol == symbol))
            .filter(|c| start.is_none_or(|s| c.close_time() >= s))
            .collect();
        if q.get("reverse").is_some_and(|r| r == "true") {
            rows.reverse();
        }
        let rows: Vec<String> = rows.into_iter().take(count).filter_map(|c| self.bin_json(c)).collect();
        HttpResponse::json(200, format!("[{}]", rows.join(",")))
    }

    /// The account's trades (executions of type `Trade`), oldest first, filtered as asked.
    fn trade_history(&self, q: &BTreeMap<String, String>) -> HttpResponse {
        let filter: serde_json::Value =
            q.get("filter").and_then(|f| serde_json::from_str(f).ok()).unwrap_or(serde_json::Value::Null);
        let rows: Vec<&String> = self
            .executions
            .iter()
            .filter(|x| {
                let Ok(row) = serde_json::from_str::<serde_json::Value>(x) else { return false };
                row["execType"] == "Trade" && filter["clOrdID"].as_str().is_none_or(|c| row["clOrdID"] == c)
            })
            .collect();
        let rows: Vec<&str> = rows.into_iter().map(String::as_str).collect();
        HttpResponse::json(200, format!("[{}]", rows.join(",")))
    }

    fn list_orders(&self, q: &BTreeMap<String, String>) -> HttpResponse {
        let filter: serde_json::Value =
            q.get("filter").and_then(|f| serde_json::from_str(f).ok()).unwrap_or(serde_json::Value::Null);
        let mut rows: Vec<&FakeOrder> = self
            .orders
            .iter()
            .filter(|o| q.get("symbol").is_none_or(|s| *s == o.symbol))
            .filter(|o| filter["clOrdID"].as_str().is_none_or(|c| c == o.cl_ord_id))
            .filter(|o| filter["orderID"].as_str().is_none_or(|c| c == o.order_id))
            .filter(|o| filter["open"].as_bool() != Some(true) || o.is_open())
            .collect();
        if q.get("reverse").is_some_and(|r| r == "true") {
            rows.reverse();
        }
        let count: usize = q.get("count").and_then(|c| c.parse().ok()).unwrap_or(100);
        let rows: Vec<String> = rows.into_iter().take(count).map(|o| self.order_json(o)).collect();
        HttpResponse::json(200, format!("[{}]", rows.join(",")))
    }

    fn create(&mut self, b: &Body) -> HttpResponse {
        let invalid = |m: &str| error(400, "ValidationError", m);
        let Some(symbol) = b.symbol.clone() else { return invalid("'symbol' is required") };
        let Some(i) = self.instrument(&symbol).cloned() else { return invalid("Invalid symbol") };
        let side = match b.side.as_deref() {
            Some(s @ ("Buy" | "Sell")) => s.to_owned(),
            _ => return invalid("Invalid side"),
        };
        let Some(qty) = b.order_qty.0.filter(|q| *q > Decimal::ZERO) else { return invalid("Invalid orderQty") };
        if !(qty % i.lot_size).is_zero() {
            return invalid(&format!("Order quantity must be a multiple of lot size: {}", i.lot_size));
        }
        for p in [b.price.0, b.stop_px.0].into_iter().flatten() {
            if p <= Decimal::ZERO || !(p % i.tick_size).is_zero() {
                return invalid("Invalid price tickSize");
            }
        }
        let ord_type =
            b.ord_type.clone().unwrap_or_else(|| if b.price.0.is_some() { "Limit" } else { "Market" }.into());
        match (ord_type.as_str(), b.price.0, b.stop_px.0) {
            ("Market", None, None) | ("Limit", Some(_), None) | ("Stop" | "MarketIfTouched", None, Some(_)) => {}
            _ => return invalid(&format!("Invalid ordType {ord_type} for the prices given")),
        }
        let cl_ord_id = b.cl_ord_id.clone().unwrap_or_default();
        if cl_ord_id.len() > rest::MAX_CL_ORD_ID {
            return invalid("clOrdID is too long");
        }
        if !cl_ord_id.is_empty() && self.orders.iter().any(|o| o.cl_ord_id == cl_ord_id) {
            return invalid("Duplicate clOrdID");
        }
        let market_price = self.last_price(&symbol);
        let order = FakeOrder {
            order_id: self.uuid(),
            cl_ord_id,
            symbol,
            side,
            ord_type,
            qty,
            price: b.price.0,
            stop_px: b.stop_px.0,
            status: "New".into(),
            leaves: qty,
            cum: Decimal::ZERO,
            avg_px: None,
            time: now_ms(),
        };
        self.orders.push(order);
        let index = self.orders.len() - 1;
        let json = self.order_json(&self.orders[index]);
        let symbol = self.orders[index].symbol.clone();
        self.publish_rows("order", "insert", Some(&symbol), true, &[json]);
        if self.orders[index].ord_type == "Market" {
            match market_price {
                Some(p) => self.fill(index, qty, p, true),
                None => self.cancel(index),
            }
        }
        HttpResponse::json(200, self.order_json(&self.orders[index]))
    }

    fn amend(&mut self, b: &Body) -> HttpResponse {
        let cl = b.orig_cl_ord_id.clone();
        let Some(index) = self
            .orders
            .iter()
            .position(|o| Some(&o.cl_ord_id) == cl.as_ref() || Some(&o.order_id) == b.order_id.as_ref())
        else {
            return error(400, "ValidationError", "Invalid origClOrdID");
        };
        if !self.orders[index].is_open() {
            return error(400, "ValidationError", "Invalid ordStatus");
        }
        let Some(i) = self.instrument(&self.orders[index].symbol).cloned() else {
            return error(404, "HTTPError", "Not Found");
        };
        if let Some(q) = b.order_qty.0 {
            if q <= Decimal::ZERO || !(q % i.lot_size).is_zero() {
                return error(400, "ValidationError", "Invalid orderQty");
            }
            let o = &mut self.orders[index];
            o.leaves = q - o.cum;
            o.qty = q;
        }
        if let Some(p) = b.price.0 {
            if p <= Decimal::ZERO || !(p % i.tick_size).is_zero() {
                return error(400, "ValidationError", "Invalid price tickSize");
            }
            self.orders[index].price = Some(p);
        }
        let json = self.order_json(&self.orders[index]);
        let symbol = self.orders[index].symbol.clone();
        self.publish_rows("order", "update", Some(&symbol), true, std::slice::from_ref(&json));
        HttpResponse::json(200, json)
    }

    /// Answers one WebSocket text message from a client.
    fn on_ws(&mut self, id: u64, text: &str) {
        let Some(index) = self.sockets.iter().position(|s| s.id == id) else { return };
        let send = |state: &State, text: String| {
            let _ = state.sockets[index].tx.send(Out::Text(text));
        };
        if text == "ping" {
            send(self, "pong".into());
            return;
        }
        let Ok(request) = serde_json::from_str::<serde_json::Value>(text) else {
            send(self, r#"{"status":400,"error":"Unable to parse request","meta":{}}"#.into());
            return;
        };
        let args: Vec<serde_json::Value> = request["args"].as_array().cloned().unwrap_or_default();
        match request["op"].as_str() {
            Some("authKeyExpires") => {
                let key = args.first().and_then(|k| k.as_str()).unwrap_or_default();
                let expires = args.get(1).and_then(|e| e.as_u64().or_else(|| e.as_str()?.parse().ok())).unwrap_or(0);
                let signature = args.get(2).and_then(|s| s.as_str()).unwrap_or_default();
                let now = now_ms() as u64 / 1000;
                let refusal = if key != self.key {
                    Some("Invalid API Key.".to_owned())
                } else if expires <= now {
                    Some(format!("This request has expired - `expires` is in the past. Current time: {now}"))
                } else if signature != self.credential.sign_websocket(expires) {
                    Some("Signature not valid.".to_owned())
                } else {
                    None
                };
                match refusal {
                    None => {
                        self.sockets[index].authed = true;
                        send(self, format!(r#"{{"success":true,"request":{request}}}"#));
                    }
                    Some(e) => send(
                        self,
                        format!(r#"{{"status":401,"error":{},"meta":{{}},"request":{request}}}"#, json_str(&e)),
                    ),
                }
            }
            Some("subscribe") => {
                for topic in args.iter().filter_map(|a| a.as_str()) {
                    let (table, symbol) = topic.split_once(':').map_or((topic, None), |(t, s)| (t, Some(s)));
                    let private = matches!(table, "execution" | "order" | "position" | "margin");
                    let known = private
                        || matches!(table, "trade" | "quote" | "orderBookL2" | "orderBookL2_25" | "instrument")
                        || table.starts_with("tradeBin");
                    if !known {
                        send(
                            self,
                            format!(
                                r#"{{"status":400,"error":"Unknown table: {table}","meta":{{}},"request":{request}}}"#
                            ),
                        );
                        continue;
                    }
                    if private && !self.sockets[index].authed {
                        send(
                            self,
                            format!(
                                r#"{{"status":401,"error":"User requested an account-locked subscription but no authorization is available.","meta":{{}},"request":{request}}}"#
                            ),
                        );
                        continue;
                    }
                    self.sockets[index].topics.insert(topic.to_owned());
                    send(self, format!(r#"{{"success":true,"subscribe":{},"request":{request}}}"#, json_str(topic)));
                    for message in self.partial(table, symbol) {
                        send(self, message);
                    }
                }
            }
            _ => send(
                self,
                format!(r#"{{"status":400,"error":"Unknown or unsupported op","meta":{{}},"request":{request}}}"#),
            ),
        }
    }

    /// The partial (and for the book, the recorded messages after it) for a new subscription.
    fn partial(&self, table: &str, symbol: Option<&str>) -> Vec<String> {
        let rows = |rows: Vec<String>| {
            format!(
                r#"{{"table":"{table}","action":"partial","keys":[],"types":{{}},"filter":{{}},"data":[{}]}}"#,
                rows.join(",")
            )
        };
        let mine = |s: &str| symbol.is_none_or(|sym| sym == s);
        match table {
            "orderBookL2" | "orderBookL2_25" => {
                let lines: Vec<&String> = self
                    .book
                    .iter()
                    .filter(|l| symbol.is_none_or(|s| l.contains(&format!(r#""symbol":"{s}""#))))
                    .collect();
                if lines.is_empty() {
                    return vec![rows(Vec::new())];
                }
                lines
                    .into_iter()
                    .map(|l| l.replace(r#""table":"orderBookL2""#, &format!(r#""table":"{table}""#)))
                    .collect()
            }
            t if t.starts_with("tradeBin") => {
                let last = self
                    .history
                    .iter()
                    .chain(&self.streamed)
                    .rfind(|c| self.markets.by_pair.get(&c.pair).is_some_and(|i| mine(&i.symbol)));
                vec![rows(last.and_then(|c| self.bin_json(c)).into_iter().collect())]
            }
            "execution" => vec![rows(self.executions.clone())],
            "order" => {
                vec![rows(
                    self.orders.iter().filter(|o| o.is_open() && mine(&o.symbol)).map(|o| self.order_json(o)).collect(),
                )]
            }
            "margin" => vec![format!(r#"{{"table":"margin","action":"partial","data":{}}}"#, self.margin_json())],
            "position" => {
                vec![format!(r#"{{"table":"position","action":"partial","data":{}}}"#, self.positions_json())]
            }
            _ => vec![rows(Vec::new())],
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fake venue; stops (servers and candle stream) when dropped.
pub struct FakeBitmex {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    http: HttpServer,
    ws: WsServer,
}

impl std::fmt::Debug for FakeBitmex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeBitmex").field("rest", &self.rest_url()).field("ws", &self.ws_url()).finish()
    }
}

impl Drop for FakeBitmex {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl FakeBitmex {
    /// Starts the REST and WebSocket servers (and the candle stream, which waits for the first
    /// `tradeBin1m` subscriber). Synchronous: no runtime needed.
    ///
    /// # Errors
    /// Instruments that do not parse, or no free port.
    pub fn start(opts: FakeBitmexOptions) -> std::io::Result<FakeBitmex> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let instruments = rest::parse_instruments(&opts.instruments).map_err(|e| invalid(e.to_string()))?;
        let state = Arc::new(Mutex::new(State {
            credential: BitmexCredential::new(opts.key.clone(), opts.secret.clone()),
            key: opts.key.clone(),
            instruments_body: opts.instruments.clone(),
            markets: Markets::new(&instruments),
            instruments,
            margins: opts.margins.iter().map(|(c, a)| (c.clone(), Decimal::from(*a))).collect(),
            history: opts.history.clone(),
            streamed: Vec::new(),
            book: opts.book.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect(),
            orders: Vec::new(),
            executions: Vec::new(),
            positions: BTreeMap::new(),
            last_price: BTreeMap::new(),
            faults: BTreeMap::new(),
            requests: Vec::new(),
            sockets: Vec::new(),
            next_id: 0,
            window: (0, 0),
            second: (0, 0),
            timeout_delay: opts.timeout_delay,
        }));
        {
            // The latest history close is the market price until candles stream.
            let mut s = lock(&state);
            let closes: Vec<(String, Decimal)> = s
                .history
                .iter()
                .filter_map(|c| Some((s.markets.by_pair.get(&c.pair)?.symbol.clone(), c.close.value())))
                .collect();
            s.last_price.extend(closes);
        }
        let http_state = state.clone();
        let http = HttpServer::start(move |req| handle(&http_state, req))?;
        let ws_state = state.clone();
        let ws = WsServer::start(move |ws, path| connection(ws_state.clone(), ws, path))?;
        let stop = Arc::new(AtomicBool::new(false));
        if !opts.candles.is_empty() {
            let (state, stop) = (state.clone(), stop.clone());
            let (candles, pace) = (opts.candles.clone(), opts.candle_pace);
            std::thread::Builder::new().name("fake-bitmex-candles".into()).spawn(move || {
                while !stop.load(Ordering::Relaxed)
                    && !lock(&state).sockets.iter().any(|s| s.topics.iter().any(|t| t.starts_with("tradeBin")))
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                for candle in candles {
                    std::thread::sleep(pace);
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    lock(&state).stream(candle);
                }
            })?;
        }
        Ok(FakeBitmex { state, stop, http, ws })
    }

    /// `http://127.0.0.1:<port>/api/v1`.
    pub fn rest_url(&self) -> String {
        format!("{}/api/v1", self.http.url())
    }

    /// `ws://127.0.0.1:<port>/realtime`.
    pub fn ws_url(&self) -> String {
        format!("{}/realtime", self.ws.url())
    }

    /// Makes the next request on `path` fail with `fault`. `path` is the full path
    /// (`/api/v1/order`), optionally after a method (`POST /api/v1/order`).
    pub fn fail_next(&self, path: &str, fault: Fault) {
        lock(&self.state).faults.entry(path.to_owned()).or_default().push_back(fault);
    }

    /// Closes every WebSocket at once, without a close frame, as a network failure would.
    pub fn drop_websockets(&self) {
        let mut s = lock(&self.state);
        for socket in s.sockets.drain(..) {
            let _ = socket.tx.send(Out::Close);
        }
    }

    /// Every order accepted, in order.
    pub fn orders(&self) -> Vec<FakeOrder> {
        lock(&self.state).orders.clone()
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<FakeRequest> {
        lock(&self.state).requests.clone()
    }

    /// Open WebSockets that authenticated.
    pub fn authenticated_sockets(&self) -> usize {
        lock(&self.state).sockets.iter().filter(|s| s.authed).count()
    }

    /// Fills `qty` of the open order `cl_ord_id` at `price`, as maker (a partial fill when
    /// less than what is left); `false` when there is no such open order.
    pub fn fill_partially(&self, cl_ord_id: &str, qty: Decimal, price: Decimal) -> bool {
        let mut s = lock(&self.state);
        let Some(index) = s.orders.iter().position(|o| o.cl_ord_id == cl_ord_id && o.is_open()) else { return false };
        s.fill(index, qty, price, false);
        true
    }

    /// Forgets every execution (the trade history lists none), as if it had aged out.
    pub fn forget_trades(&self) {
        lock(&self.state).executions.clear();
    }

    /// Streams `candle` now (besides the paced stream): its bin, and the fills it causes.
    pub fn push_candle(&self, candle: Candle) {
        lock(&self.state).stream(candle);
    }
}

fn too_many() -> HttpResponse {
    let reset = now_ms() as u64 / 1000 + 1;
    error(429, "RateLimitError", "Rate limit exceeded, retry in 1 seconds.")
        .with_header("x-ratelimit-limit", "120")
        .with_header("x-ratelimit-remaining", "0")
        .with_header("x-ratelimit-reset", reset.to_string())
        .with_header("retry-after", "1")
}

fn handle(state: &Mutex<State>, req: HttpRequest) -> Reply {
    let mut s = lock(state);
    let order_route = req.path().starts_with("/api/v1/order");
    let fault = [format!("{} {}", req.method, req.path()), req.path().to_owned()]
        .iter()
        .find_map(|k| s.faults.get_mut(k).and_then(VecDeque::pop_front));
    let reply = match fault {
        Some(Fault::TooManyRequests) => Reply::Respond(too_many()),
        Some(Fault::ServerError) => {
            Reply::Respond(error(503, "HTTPError", "The system is currently overloaded. Please try again later."))
        }
        Some(Fault::HangUp) => Reply::HangUp,
        _ if order_route && !s.order_route_allowed() => Reply::Respond(too_many()),
        Some(Fault::Timeout) => {
            let response = s.route(&req);
            let response = s.rate_headers(response, order_route);
            Reply::Late(s.timeout_delay, response)
        }
        None => {
            let response = s.route(&req);
            Reply::Respond(s.rate_headers(response, order_route))
        }
    };
    let status = match &reply {
        Reply::Respond(r) | Reply::Late(_, r) => r.status,
        Reply::HangUp => 0,
    };
    s.requests.push(FakeRequest { method: req.method, target: req.target, body: req.body, status });
    reply
}

async fn connection(state: Arc<Mutex<State>>, ws: ServerWs, path: String) {
    if !path.starts_with("/realtime") {
        return;
    }
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = {
        let mut s = lock(&state);
        s.next_id += 1;
        let id = s.next_id;
        let welcome = format!(
            r#"{{"info":"Welcome to the BitMEX Realtime API.","version":"fake","timestamp":"{}","docs":"https://www.bitmex.com/app/wsAPI","limit":{{"remaining":39}}}}"#,
            iso(now_ms())
        );
        let _ = tx.send(Out::Text(welcome));
        s.sockets.push(Socket { id, authed: false, topics: HashSet::new(), tx });
        id
    };
    loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(t))) => lock(&state).on_ws(id, t.as_str()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_) | Message::Frame(_))) => {}
                _ => break,
            },
            outgoing = rx.recv() => match outgoing {
                Some(Out::Text(t)) => {
                    if sink.send(Message::text(t)).await.is_err() {
                        break;
                    }
                }
                // Dropping the socket without a close frame: a network failure.
                Some(Out::Close) | None => return,
            },
        }
    }
    lock(&state).sockets.retain(|s| s.id != id);
}
