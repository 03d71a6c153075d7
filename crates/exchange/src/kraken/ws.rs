//! Kraken's WebSocket v2 streams: the public one (book, trade, ohlc) and the private one
//! (executions, balances), each run by a background task that reconnects with back-off and
//! resubscribes, turning what Kraken sends into crypy events on a channel.
//!
//! What becomes an event: committed candles (the ohlc channel updates the open candle; the
//! previous one is committed when a newer `interval_begin` arrives), our own fills (once per
//! execution id, however often Kraken repeats it, e.g. in the snapshot after a reconnect) and
//! cancellations. The book is kept here, checksum-verified after every message, and
//! resubscribed when it drifts; trades and book updates never become events (they would
//! flood the log).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crypy_core::{Balance, Candle, ClientOrderId, Event, Fill, Interval, Market, Money, Pair, Price, Qty, Side};
use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc::UnboundedSender;
use tokio_tungstenite::tungstenite::Message;

use crate::kraken::book::Book;
use crate::kraken::rest::{crypy_asset, now_ms, pair_of_v2, v2_symbol, Dec, Rest, WsToken};
use crate::{RawMessage, RawTap, VenueEvent};

/// Depth of the book subscription: the checksum covers the top 10 levels.
pub const BOOK_DEPTH: usize = 10;

#[derive(Deserialize)]
struct Frame {
    channel: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    data: Option<Box<RawValue>>,
    method: Option<String>,
    success: Option<bool>,
    result: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Level {
    price: Dec,
    qty: Dec,
}

#[derive(Deserialize)]
struct BookData {
    symbol: String,
    #[serde(default)]
    bids: Vec<Level>,
    #[serde(default)]
    asks: Vec<Level>,
    checksum: Option<u32>,
}

#[derive(Deserialize)]
struct OhlcData {
    symbol: String,
    open: Dec,
    high: Dec,
    low: Dec,
    close: Dec,
    #[serde(default)]
    trades: Option<Dec>,
    volume: Dec,
    interval_begin: String,
    interval: u32,
}

#[derive(Deserialize)]
struct FeeData {
    asset: String,
    qty: Dec,
}

#[derive(Deserialize)]
struct ExecData {
    exec_type: String,
    order_id: String,
    #[serde(default)]
    cl_ord_id: Option<String>,
    #[serde(default)]
    symbol: Option<String>,
    #[serde(default)]
    side: Option<String>,
    #[serde(default)]
    order_qty: Option<Dec>,
    #[serde(default)]
    cum_qty: Option<Dec>,
    #[serde(default)]
    order_status: Option<String>,
    #[serde(default)]
    exec_id: Option<String>,
    #[serde(default)]
    last_qty: Option<Dec>,
    #[serde(default)]
    last_price: Option<Dec>,
    #[serde(default)]
    fees: Option<Vec<FeeData>>,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct BalanceData {
    asset: String,
    balance: Dec,
}

/// What we placed, so that executions can be told apart and completed.
#[derive(Clone, Debug)]
pub struct PlacedOrder {
    pub client_id: ClientOrderId,
    pub pair: Pair,
    pub side: Side,
    pub qty: Qty,
    pub filled: Qty,
}

/// The state of one pair's book, for the client and its tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BookStatus {
    /// Snapshots received (the first one, and one after every reconnect or resubscription).
    pub snapshots: u64,
    /// Messages whose checksum matched our book.
    pub verified: u64,
    /// Checksums that did not match (each one drops the book and resubscribes).
    pub mismatches: u64,
    pub best_bid: Option<(Price, Qty)>,
    pub best_ask: Option<(Price, Qty)>,
}

/// State shared by the client and its background tasks. Never locked across an await.
#[derive(Debug, Default)]
pub struct Shared {
    /// cl_ord_id sent to Kraken → what we placed.
    pub placed: HashMap<String, PlacedOrder>,
    /// Execution ids already reported, and closing events (order id + type) already reported.
    pub seen: HashSet<String>,
    pub balances: BTreeMap<crypy_core::Asset, Balance>,
    pub markets: HashMap<Pair, Market>,
    books: HashMap<Pair, (Book, bool)>,
    pub book_status: HashMap<Pair, BookStatus>,
    /// The open candle of each pair and the open time of the last one committed.
    open_candles: HashMap<Pair, Candle>,
    committed: HashMap<Pair, i64>,
    ohlc_seen: HashSet<Pair>,
    /// Private snapshots seen: the first one is history, later ones may hold missed fills.
    pub private_sessions: u64,
    /// Public and private (re)connections made, for tests and diagnostics.
    pub public_connections: u64,
    pub private_connections: u64,
}

pub type SharedState = Arc<Mutex<Shared>>;

pub fn lock(shared: &SharedState) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

fn tap(raw: &Option<RawTap>, channel: &str, text: &str) {
    if let Some(raw) = raw {
        let _ = raw.send(RawMessage { received: now_ms(), channel: format!("ws:{channel}"), text: text.to_owned() });
    }
}

/// The private stream's text with its token replaced, for the raw tap.
fn redact_token(text: &str) -> String {
    match text.find("\"token\"") {
        None => text.to_owned(),
        Some(at) => {
            let rest = &text[at + 7..];
            let Some(open) = rest.find('"') else { return text.to_owned() };
            let Some(close) = rest[open + 1..].find('"') else { return text.to_owned() };
            format!("{}\"token\"{}\"redacted\"{}", &text[..at], &rest[..open], &rest[open + 1 + close + 1..])
        }
    }
}

/// Back-off between reconnections: 100 ms doubling to 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(6)).min(5_000))
}

/// Kraken sends a heartbeat every second or so on a subscribed stream; this long without a
/// message we ping, and after as long again without an answer the stream is dead.
const QUIET: Duration = Duration::from_secs(15);

/// The next message, pinging a quiet connection; `None` when the connection is gone.
async fn read(ws: &mut crate::net::WsStream, pinged: &mut bool) -> Option<Message> {
    loop {
        match tokio::time::timeout(QUIET, ws.next()).await {
            Ok(Some(Ok(msg))) => {
                *pinged = false;
                return Some(msg);
            }
            Ok(_) => return None,
            Err(_) if *pinged => return None,
            Err(_) => {
                *pinged = true;
                ws.send(Message::text(r#"{"method":"ping"}"#)).await.ok()?;
            }
        }
    }
}

/// Parameters of the public stream.
#[derive(Clone, Debug)]
pub struct PublicStream {
    pub url: String,
    pub pairs: Vec<Pair>,
    pub interval: Interval,
    pub timeout: Duration,
    pub raw: Option<RawTap>,
}

fn subscribe(channel: &str, symbols: &[String], extra: serde_json::Value) -> Message {
    let mut params = serde_json::json!({ "channel": channel, "symbol": symbols });
    if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    Message::text(serde_json::json!({ "method": "subscribe", "params": params }).to_string())
}

/// Runs the public stream until the event channel closes.
pub async fn run_public(cfg: PublicStream, shared: SharedState, events: UnboundedSender<VenueEvent>) {
    let symbols: Vec<String> = cfg.pairs.iter().map(v2_symbol).collect();
    let minutes = cfg.interval.secs() / 60;
    let mut attempt = 0;
    while !events.is_closed() {
        let Ok(mut ws) = crate::net::ws_connect(&cfg.url, cfg.timeout).await else {
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
            continue;
        };
        lock(&shared).public_connections += 1;
        let subs = [
            subscribe("book", &symbols, serde_json::json!({ "depth": BOOK_DEPTH })),
            subscribe("trade", &symbols, serde_json::json!({ "snapshot": false })),
            subscribe("ohlc", &symbols, serde_json::json!({ "interval": minutes })),
        ];
        let mut ok = true;
        for s in subs {
            ok &= ws.send(s).await.is_ok();
        }
        if !ok {
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
            continue;
        }
        let mut pinged = false;
        loop {
            let Some(msg) = read(&mut ws, &mut pinged).await else { break };
            let text = match msg {
                Message::Text(t) => t.to_string(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Ok(frame) = serde_json::from_str::<Frame>(&text) else { continue };
            let channel = frame.channel.as_deref().unwrap_or("");
            if channel != "heartbeat" {
                tap(&cfg.raw, if channel.is_empty() { frame.method.as_deref().unwrap_or("?") } else { channel }, &text);
            }
            let Some(data) = &frame.data else { continue };
            // Only data proves the connection good: a stream that subscribes and is refused
            // keeps backing off.
            attempt = 0;
            match channel {
                "book" => {
                    let resync = on_book(&shared, frame.kind.as_deref() == Some("snapshot"), data.get());
                    for symbol in resync {
                        let unsub = serde_json::json!({ "method": "unsubscribe",
                            "params": { "channel": "book", "symbol": [symbol], "depth": BOOK_DEPTH } });
                        let _ = ws.send(Message::text(unsub.to_string())).await;
                        let _ = ws.send(subscribe("book", &[symbol], serde_json::json!({ "depth": BOOK_DEPTH }))).await;
                    }
                }
                "ohlc" => {
                    let snapshot = frame.kind.as_deref() == Some("snapshot");
                    for e in on_ohlc(&shared, cfg.interval, minutes, snapshot, data.get()) {
                        let _ = events.send(e);
                    }
                }
                _ => {}
            }
        }
        // The book is only good with the stream that maintained it.
        for (_, (_, ok)) in lock(&shared).books.iter_mut() {
            *ok = false;
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
    }
}

/// Applies a book message; returns the symbols whose book drifted and must be resubscribed.
fn on_book(shared: &SharedState, snapshot: bool, data: &str) -> Vec<String> {
    let Ok(items) = serde_json::from_str::<Vec<BookData>>(data) else { return Vec::new() };
    let mut resync = Vec::new();
    let mut s = lock(shared);
    for item in items {
        let Some(pair) = pair_of_v2(&item.symbol) else { continue };
        let Some(market) = s.markets.get(&pair).cloned() else { continue };
        let side = |levels: &[Level]| levels.iter().map(|l| (l.price.0, l.qty.0)).collect::<Vec<(Decimal, Decimal)>>();
        let (bids, asks) = (side(&item.bids), side(&item.asks));
        let entry = s.books.entry(pair).or_insert_with(|| (Book::new(BOOK_DEPTH), false));
        if snapshot {
            entry.0.snapshot(&bids, &asks);
            entry.1 = true;
        } else if entry.1 {
            entry.0.update(&bids, &asks);
        } else {
            // Updates before a snapshot (after a drift) mean nothing.
            continue;
        }
        let matches = item
            .checksum
            .is_none_or(|c| entry.0.checksum(market.price_precision as usize, market.qty_precision as usize) == c);
        let (best_bid, best_ask) = (entry.0.best_bid(), entry.0.best_ask());
        if !matches {
            entry.1 = false;
            resync.push(item.symbol.clone());
        }
        let status = s.book_status.entry(pair).or_default();
        if snapshot {
            status.snapshots += 1;
        }
        if matches {
            status.verified += 1;
            let level =
                |l: Option<(Decimal, Decimal)>| l.and_then(|(p, q)| Some((Price::new_checked(p).ok()?, Qty::new(q))));
            status.best_bid = level(best_bid);
            status.best_ask = level(best_ask);
        } else {
            status.mismatches += 1;
            status.best_bid = None;
            status.best_ask = None;
        }
    }
    resync
}

/// Applies an ohlc message; returns the candles it commits.
///
/// The first snapshot of a pair holds candles that closed before we connected: history, which
/// the desk gets from REST OHLC if it wants it, so they are not reported. Later snapshots
/// (after a reconnection) report what closed while the stream was down.
fn on_ohlc(shared: &SharedState, interval: Interval, minutes: u32, snapshot: bool, data: &str) -> Vec<VenueEvent> {
    let Ok(mut items) = serde_json::from_str::<Vec<OhlcData>>(data) else { return Vec::new() };
    items.sort_by(|a, b| a.interval_begin.cmp(&b.interval_begin));
    let mut out = Vec::new();
    let mut s = lock(shared);
    let mut first_snapshot = HashSet::new();
    for item in items {
        if item.interval != minutes {
            continue;
        }
        let (Some(pair), Some(open_time)) =
            (pair_of_v2(&item.symbol), crypy_core::time::parse_iso_utc(&item.interval_begin))
        else {
            continue;
        };
        let price = |d: Dec| Price::new_checked(d.0).ok();
        let (Some(open), Some(high), Some(low), Some(close)) =
            (price(item.open), price(item.high), price(item.low), price(item.close))
        else {
            continue;
        };
        use rust_decimal::prelude::ToPrimitive;
        let candle = Candle {
            pair,
            interval,
            open_time,
            open,
            high,
            low,
            close,
            volume: Qty::new(item.volume.0),
            trades: item.trades.and_then(|t| t.0.to_u64()),
        };
        // Only a snapshot that is the first word about a pair is history: when updates came
        // first (a connection made before any candle), a later snapshot is a reconnection's
        // and carries what was missed.
        if s.ohlc_seen.insert(pair) && snapshot {
            first_snapshot.insert(pair);
        }
        let last_committed = s.committed.get(&pair).copied().unwrap_or(i64::MIN);
        match s.open_candles.get(&pair) {
            Some(current) if current.open_time > open_time => continue,
            Some(current) if current.open_time < open_time => {
                let done = current.clone();
                if done.open_time > last_committed && done.check().is_ok() {
                    s.committed.insert(pair, done.open_time);
                    if !first_snapshot.contains(&pair) {
                        out.push(VenueEvent { time: done.close_time(), event: Event::Candle(done) });
                    }
                }
            }
            _ => {}
        }
        s.open_candles.insert(pair, candle);
    }
    out
}

/// Parameters of the private stream.
#[derive(Clone, Debug)]
pub struct PrivateStream {
    pub url: String,
    pub timeout: Duration,
    pub raw: Option<RawTap>,
}

/// Runs the private stream until the event channel closes: a fresh token per connection.
pub async fn run_private(
    cfg: PrivateStream,
    rest: Arc<Rest>,
    shared: SharedState,
    events: UnboundedSender<VenueEvent>,
) {
    let mut attempt = 0;
    while !events.is_closed() {
        let token = match rest.private_result::<WsToken>("GetWebSocketsToken", &[]).await {
            Ok(t) => t,
            Err(_) => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                continue;
            }
        };
        let Ok(mut ws) = crate::net::ws_connect(&cfg.url, cfg.timeout).await else {
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
            continue;
        };
        lock(&shared).private_connections += 1;
        let subs = [
            serde_json::json!({ "method": "subscribe", "params": { "channel": "executions", "token": token.token,
                "snap_trades": true, "snap_orders": true } }),
            serde_json::json!({ "method": "subscribe", "params": { "channel": "balances", "token": token.token } }),
        ];
        let mut ok = true;
        for s in subs {
            ok &= ws.send(Message::text(s.to_string())).await.is_ok();
        }
        if !ok {
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
            continue;
        }
        let mut pinged = false;
        loop {
            let Some(msg) = read(&mut ws, &mut pinged).await else { break };
            let text = match msg {
                Message::Text(t) => t.to_string(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Ok(frame) = serde_json::from_str::<Frame>(&text) else { continue };
            let channel = frame.channel.as_deref().unwrap_or("");
            if channel != "heartbeat" {
                tap(
                    &cfg.raw,
                    if channel.is_empty() { frame.method.as_deref().unwrap_or("?") } else { channel },
                    &redact_token(&text),
                );
            }
            if frame.success == Some(false) {
                let refused = frame.result.as_ref().and_then(|r| r.get("channel")).and_then(|c| c.as_str());
                // Executions refused (a stale token): reconnect with a fresh one. Balances may
                // be refused for want of a permission; fills still update them then.
                if refused != Some("balances") {
                    break;
                }
                continue;
            }
            let Some(data) = &frame.data else { continue };
            // Only data proves the connection good: a stream that subscribes and is refused
            // keeps backing off.
            attempt = 0;
            let snapshot = frame.kind.as_deref() == Some("snapshot");
            match channel {
                "executions" => {
                    for e in on_executions(&shared, snapshot, data.get()) {
                        let _ = events.send(e);
                    }
                }
                "balances" => on_balances(&shared, data.get()),
                _ => {}
            }
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
    }
}

fn on_balances(shared: &SharedState, data: &str) {
    let Ok(items) = serde_json::from_str::<Vec<BalanceData>>(data) else { return };
    let mut s = lock(shared);
    for item in items {
        if let Some(asset) = crypy_asset(&item.asset) {
            s.balances.insert(asset, Balance { asset, free: Money::new(item.balance.0), reserved: Money::ZERO });
        }
    }
}

/// Applies an executions message; returns the fills and cancellations it reports for the
/// first time.
fn on_executions(shared: &SharedState, snapshot: bool, data: &str) -> Vec<VenueEvent> {
    let Ok(items) = serde_json::from_str::<Vec<ExecData>>(data) else { return Vec::new() };
    let mut s = lock(shared);
    // The first snapshot is what happened before this client: known, not news.
    let history = snapshot && s.private_sessions == 0;
    if snapshot {
        s.private_sessions += 1;
    }
    let mut out = Vec::new();
    for e in items {
        let time = e.timestamp.as_deref().and_then(crypy_core::time::parse_iso_utc).unwrap_or_else(now_ms);
        let placed = e.cl_ord_id.as_ref().and_then(|c| s.placed.get(c)).cloned();
        let client_id = match (&placed, &e.cl_ord_id) {
            (Some(p), _) => p.client_id.clone(),
            (None, Some(c)) => c.parse().unwrap_or_else(|_| fallback_id(&e.order_id)),
            (None, None) => fallback_id(&e.order_id),
        };
        match e.exec_type.as_str() {
            "trade" => {
                let Some(exec_id) = e.exec_id.clone() else { continue };
                if !s.seen.insert(format!("exec:{exec_id}")) || (history && placed.is_none()) {
                    continue;
                }
                let pair = e.symbol.as_deref().and_then(pair_of_v2).or(placed.as_ref().map(|p| p.pair));
                let side = e.side.as_deref().and_then(|t| t.parse::<Side>().ok()).or(placed.as_ref().map(|p| p.side));
                let (Some(pair), Some(side), Some(qty), Some(price)) =
                    (pair, side, e.last_qty, e.last_price.and_then(|p| Price::new_checked(p.0).ok()))
                else {
                    continue;
                };
                let qty = Qty::new(qty.0);
                let (mut fee, mut fee_asset) = (Decimal::ZERO, pair.quote);
                for f in e.fees.iter().flatten() {
                    fee = fee.saturating_add(f.qty.0);
                    if let Some(a) = crypy_asset(&f.asset) {
                        fee_asset = a;
                    }
                }
                let order_qty = e.order_qty.map(|q| q.0).or(placed.as_ref().map(|p| p.qty.value()));
                let filled_before = placed.as_ref().map_or(Decimal::ZERO, |p| p.filled.value());
                // Saturating: a venue's absurd numbers must not panic this task, which would end
                // the stream of fills for good.
                let cum = e.cum_qty.map_or(filled_before.saturating_add(qty.value()), |c| c.0);
                let remaining = order_qty.map_or(Decimal::ZERO, |q| q.saturating_sub(cum).max(Decimal::ZERO));
                if let Some(c) = &e.cl_ord_id {
                    if let Some(p) = s.placed.get_mut(c) {
                        p.filled = Qty::new(cum);
                    }
                }
                apply_fill(&mut s.balances, pair, side, qty, price, fee, fee_asset);
                let fill = Fill {
                    client_id,
                    venue_order_id: Some(e.order_id.clone()),
                    fill_id: exec_id,
                    pair,
                    side,
                    qty,
                    price,
                    fee: Money::new(fee),
                    fee_asset,
                    remaining: Qty::new(remaining),
                };
                let done = remaining.is_zero() || e.order_status.as_deref() == Some("filled");
                let event =
                    if done { Event::OrderFilled(Box::new(fill)) } else { Event::OrderPartiallyFilled(Box::new(fill)) };
                out.push(VenueEvent { time, event });
            }
            "canceled" | "expired" => {
                if !s.seen.insert(format!("close:{}", e.order_id)) || (history && placed.is_none()) {
                    continue;
                }
                let reason = e.reason.clone().unwrap_or_else(|| e.exec_type.clone());
                out.push(VenueEvent {
                    time,
                    event: Event::OrderCanceled(crypy_core::event::OrderCanceled { client_id, reason }),
                });
            }
            _ => {}
        }
    }
    out
}

fn fallback_id(order_id: &str) -> ClientOrderId {
    order_id.parse().unwrap_or_else(|_| "kraken-unknown".parse().expect("a valid id"))
}

fn apply_fill(
    balances: &mut BTreeMap<crypy_core::Asset, Balance>,
    pair: Pair,
    side: Side,
    qty: Qty,
    price: Price,
    fee: Decimal,
    fee_asset: crypy_core::Asset,
) {
    // Saturating, as in `on_executions`: these balances are an estimate between snapshots.
    let cost = price.value().saturating_mul(qty.value());
    let mut add = |asset: crypy_core::Asset, amount: Decimal| {
        let b = balances.entry(asset).or_insert(Balance { asset, free: Money::ZERO, reserved: Money::ZERO });
        b.free = Money::new(b.free.value().saturating_add(amount));
    };
    match side {
        Side::Buy => {
            add(pair.base, qty.value());
            add(pair.quote, -cost);
        }
        Side::Sell => {
            add(pair.base, -qty.value());
            add(pair.quote, cost);
        }
    }
    add(fee_asset, -fee);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_snapshot_is_history() {
        let shared = SharedState::default();
        let i: Interval = "1m".parse().unwrap();
        let item = |begin: &str| {
            format!(
                r#"{{"symbol":"BTC/EUR","open":100.5,"high":101.0,"low":100.0,"close":100.7,"volume":1.25,"interval_begin":"2023-10-04T15:{begin}:00Z","interval":1}}"#
            )
        };
        let snapshot = format!("[{},{},{}]", item("25"), item("26"), item("27"));
        assert!(on_ohlc(&shared, i, 1, true, &snapshot).is_empty());
        // The next candle commits the open one (15:27) only.
        let out = on_ohlc(&shared, i, 1, false, &format!("[{}]", item("28")));
        assert_eq!(out.len(), 1);
        // After a reconnection the snapshot reports what closed meanwhile, once.
        let again = format!("[{},{},{}]", item("27"), item("28"), item("29"));
        let out = on_ohlc(&shared, i, 1, true, &again);
        let begins: Vec<i64> = out.iter().map(|e| e.time).collect();
        assert_eq!(begins, [crypy_core::time::parse_iso_utc("2023-10-04T15:29:00Z").unwrap()]);
    }

    #[test]
    fn tokens_are_redacted() {
        let t = r#"{"method":"subscribe","params":{"channel":"executions","token":"SeCrEt/+="}}"#;
        let r = redact_token(t);
        assert!(!r.contains("SeCrEt") && r.contains("\"token\":\"redacted\""), "{r}");
        assert_eq!(redact_token("{\"a\":1}"), "{\"a\":1}");
    }

    #[test]
    fn the_open_candle_is_committed_when_the_next_begins() {
        let shared = SharedState::default();
        let i: Interval = "1m".parse().unwrap();
        let msg = |begin: &str, close: &str| {
            format!(
                r#"[{{"symbol":"BTC/EUR","open":100.5,"high":101.0,"low":100.0,"close":{close},"trades":3,"volume":1.25,"vwap":100.7,"interval_begin":"{begin}","interval":1,"timestamp":"x"}}]"#
            )
        };
        assert!(on_ohlc(&shared, i, 1, false, &msg("2023-10-04T15:25:00.000000000Z", "100.9")).is_empty());
        assert!(on_ohlc(&shared, i, 1, false, &msg("2023-10-04T15:25:00.000000000Z", "100.8")).is_empty());
        let out = on_ohlc(&shared, i, 1, false, &msg("2023-10-04T15:26:00.000000000Z", "100.1"));
        assert_eq!(out.len(), 1);
        let Event::Candle(c) = &out[0].event else { panic!() };
        assert_eq!(
            (c.pair.to_string(), c.close.to_string(), c.volume.to_string()),
            ("XBT/EUR".into(), "100.8".into(), "1.25".into())
        );
        assert_eq!(out[0].time, c.open_time + 60_000);
        // A repeated older candle (a snapshot after a reconnect) commits nothing again.
        assert!(on_ohlc(&shared, i, 1, true, &msg("2023-10-04T15:25:00.000000000Z", "100.8")).is_empty());
        assert!(on_ohlc(&shared, i, 1, false, &msg("2023-10-04T15:25:00.000000000Z", "100.8")).is_empty());
    }
}
