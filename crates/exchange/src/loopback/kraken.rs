//! A fake Kraken spot venue: REST (`/0/public/*`, `/0/private/*`) and WebSocket v2 (public
//! and private), on loopback, for tests.
//!
//! It checks what Kraken checks: the `API-Key`, the `API-Sign` recomputed from path, nonce
//! and body (`EAPI:Invalid signature`), strictly increasing nonces (`EAPI:Invalid nonce`),
//! AddOrder's fields against the recorded AssetPairs (pair, minimum volume, decimals), and
//! `cl_ord_id` unique among open orders. Public endpoints answer with recorded bodies; orders
//! are kept and filled: market orders at once at the current candle's close, limit, stop-loss
//! and take-profit orders when a streamed candle reaches their price, up to the candle's
//! volume (a larger order fills in parts over several candles). Fills go out on the
//! private `executions` channel (a token from GetWebSocketsToken, good for one connection);
//! the public stream
//! plays the recorded v2 book and the given candles on `ohlc`.
//!
//! Faults are injected per path ([`FakeKraken::fail_next`]); a [`Fault::Timeout`] does the
//! work and answers late, as a real venue that placed the order but was slow to say so.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crypy_core::{Candle, Side};
use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use tokio::sync::mpsc::UnboundedSender;
use tokio_tungstenite::tungstenite::Message;

use super::{HttpRequest, HttpResponse, HttpServer, Reply, ServerWs, WsServer};
use crate::kraken::http::KrakenAssetPair;
use crate::kraken::rest::{crypy_asset, form_decode, now_ms, pair_of_v2, parse_decimal, v2_symbol};
use crate::kraken::KrakenCredential;

/// Kraken's way of each: 429 with `EAPI:Rate limit exceeded`, 503 with `EService:Unavailable`.
pub use super::Fault;

/// What the fake serves.
#[derive(Clone, Debug)]
pub struct FakeKrakenOptions {
    pub key: String,
    /// Base64, as Kraken issues it.
    pub secret: String,
    /// An AssetPairs body: the markets.
    pub asset_pairs: String,
    /// A Balance body.
    pub balances: String,
    pub ticker: String,
    pub ohlc: String,
    pub depth: String,
    /// A recorded v2 book (`{"init": snapshot, "updates": [...]}`), played on `book`.
    pub book: Option<String>,
    /// Change the checksum of this update (index into `updates`) once, on the first play.
    pub corrupt_book_update: Option<usize>,
    /// Streamed on `ohlc`, one per `candle_pace` once a client subscribes; with a zero pace
    /// only [`FakeKraken::next_candle`] advances them.
    pub candles: Vec<Candle>,
    pub candle_pace: Duration,
    /// How late a [`Fault::Timeout`] answers.
    pub late_by: Duration,
    /// TradeVolume's fees in percent, as Kraken gives them: (taker, maker).
    pub fee_percent: (Decimal, Decimal),
}

impl FakeKrakenOptions {
    /// Recorded Kraken bodies (crate `test_data/kraken`) and no candles.
    pub fn new(key: impl Into<String>, secret: impl Into<String>) -> Self {
        FakeKrakenOptions {
            key: key.into(),
            secret: secret.into(),
            asset_pairs: include_str!("../../test_data/kraken/http_asset_pairs_2020-07-14.json").into(),
            balances: include_str!("../../test_data/kraken/http_balance_2020-07-14.json").into(),
            ticker: include_str!("../../test_data/kraken/http_ticker_xxbtzeur_2019-10-15.json").into(),
            ohlc: include_str!("../../test_data/kraken/http_ohlc_xxbtzeur_60_2020-07-14.json").into(),
            depth: include_str!("../../test_data/kraken/http_depth_xbtusdt_2025-11.json").into(),
            book: Some(include_str!("../../test_data/kraken/ws_v2_book_btcusd_2023-07-30.json").into()),
            corrupt_book_update: None,
            candles: Vec::new(),
            candle_pace: Duration::ZERO,
            late_by: Duration::from_secs(3),
            fee_percent: (Decimal::new(26, 2), Decimal::new(16, 2)),
        }
    }
}

impl FakeKrakenOptions {
    /// A Balance body for [`FakeKrakenOptions::balances`] from Kraken asset codes and amounts,
    /// e.g. `&[("ZEUR", "10000.0000"), ("XXBT", "1.0000000000")]`.
    pub fn balance_body(balances: &[(&str, &str)]) -> String {
        let map: BTreeMap<&str, &str> = balances.iter().copied().collect();
        serde_json::json!({ "error": [], "result": map }).to_string()
    }
}

/// An order the fake accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeOrder {
    pub txid: String,
    pub cl_ord_id: Option<String>,
    /// Kraken's symbol (`XXBTZEUR`).
    pub symbol: String,
    pub side: Side,
    pub ordertype: String,
    pub price: Option<Decimal>,
    pub volume: Decimal,
    pub executed: Decimal,
    pub cost: Decimal,
    pub fee: Decimal,
    /// `open`, `closed`, `canceled`.
    pub status: String,
    pub open_ms: i64,
    pub close_ms: Option<i64>,
    pub trades: Vec<String>,
}

/// One trade (a fill of an order), as TradesHistory and QueryTrades report it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FakeTrade {
    id: String,
    order: usize,
    qty: Decimal,
    price: Decimal,
    cost: Decimal,
    fee: Decimal,
    time_ms: i64,
}

/// A request as it arrived (the key and signature headers are not kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeRequest {
    pub path: String,
    pub body: String,
}

#[derive(Clone, Debug)]
struct PairInfo {
    symbol: String,
    altname: String,
    wsname: String,
    pair_decimals: u32,
    lot_decimals: u32,
    ordermin: Decimal,
    /// Kraken's asset codes (`XXBT`, `ZEUR`), the keys of Balance.
    base: String,
    quote: String,
}

#[derive(Debug)]
struct State {
    key: String,
    credential: KrakenCredential,
    pairs: Vec<PairInfo>,
    balances: BTreeMap<String, Decimal>,
    last_nonce: u64,
    requests: Vec<FakeRequest>,
    faults: Vec<(String, Fault)>,
    orders: Vec<FakeOrder>,
    /// Execution messages' data items, for the snapshot of a new private subscription.
    executions: Vec<String>,
    /// Every trade, in order: TradesHistory and QueryTrades.
    trade_log: Vec<FakeTrade>,
    /// Executions are kept but not sent (a private stream that has gone quiet).
    executions_muted: bool,
    tokens: HashSet<String>,
    private_subs: Vec<UnboundedSender<String>>,
    candle_index: Option<usize>,
    /// The market's clock once candles stream: the open of the one in progress. Executions
    /// carry it, so that they agree with the candles as on a real venue where both are live
    /// (the fake plays history faster than it happened).
    market_ms: Option<i64>,
    ohlc_subscribed: bool,
    book_corrupted: bool,
    next_id: u64,
    /// (taker, maker) as rates.
    fee_rates: (Decimal, Decimal),
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    opts: FakeKrakenOptions,
    candle_tx: tokio::sync::broadcast::Sender<usize>,
    drop_tx: tokio::sync::broadcast::Sender<()>,
    stop: AtomicBool,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fake Kraken; stops when dropped.
#[derive(Debug)]
pub struct FakeKraken {
    inner: Arc<Inner>,
    http: HttpServer,
    public: WsServer,
    private: WsServer,
}

fn envelope_error(error: &str) -> Reply {
    Reply::Respond(HttpResponse::json(200, serde_json::json!({ "error": [error] }).to_string()))
}

fn ok(result: serde_json::Value) -> HttpResponse {
    HttpResponse::json(200, serde_json::json!({ "error": [], "result": result }).to_string())
}

fn rfc3339(ms: i64) -> String {
    crypy_core::time::format_utc(ms).replace(' ', "T")
}

fn seconds(ms: i64) -> serde_json::Value {
    serde_json::Value::from(ms as f64 / 1000.0)
}

impl FakeKraken {
    /// Starts the fake on three loopback ports (REST, public and private WebSocket).
    ///
    /// # Errors
    /// When a port cannot be bound or the options do not parse.
    pub fn start(opts: FakeKrakenOptions) -> std::io::Result<FakeKraken> {
        let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
        let credential = KrakenCredential::new(opts.key.clone(), &opts.secret)
            .map_err(|_| invalid("the fake's secret is not base64".into()))?;
        let pairs: BTreeMap<String, KrakenAssetPair> =
            crate::kraken::http::result(&opts.asset_pairs).map_err(|e| invalid(format!("asset pairs: {e}")))?;
        let codes: BTreeMap<String, serde_json::Value> =
            crate::kraken::http::result(&opts.asset_pairs).map_err(|e| invalid(format!("asset pairs: {e}")))?;
        let pairs = pairs
            .into_iter()
            .filter_map(|(symbol, p)| {
                let code = |side: &str| codes.get(&symbol).and_then(|v| v[side].as_str()).map(str::to_owned);
                Some(PairInfo {
                    base: code("base")?,
                    quote: code("quote")?,
                    wsname: p.wsname.clone()?,
                    symbol,
                    altname: p.altname,
                    pair_decimals: p.pair_decimals,
                    lot_decimals: p.lot_decimals,
                    ordermin: p.ordermin.as_deref().and_then(|m| m.parse().ok()).unwrap_or_default(),
                })
            })
            .collect();
        let balances: BTreeMap<String, String> =
            crate::kraken::http::result(&opts.balances).map_err(|e| invalid(format!("balances: {e}")))?;
        let balances = balances
            .into_iter()
            .map(|(code, amount)| parse_decimal(&amount).map(|a| (code, a)))
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(format!("balances: {e}")))?;
        let state = State {
            key: opts.key.clone(),
            credential,
            pairs,
            balances,
            last_nonce: 0,
            requests: Vec::new(),
            faults: Vec::new(),
            orders: Vec::new(),
            executions: Vec::new(),
            trade_log: Vec::new(),
            executions_muted: false,
            tokens: HashSet::new(),
            private_subs: Vec::new(),
            candle_index: None,
            market_ms: None,
            ohlc_subscribed: false,
            book_corrupted: false,
            next_id: 0,
            fee_rates: (opts.fee_percent.0 / Decimal::from(100), opts.fee_percent.1 / Decimal::from(100)),
        };
        let (candle_tx, _) = tokio::sync::broadcast::channel(4096);
        let (drop_tx, _) = tokio::sync::broadcast::channel(4);
        let inner =
            Arc::new(Inner { state: Mutex::new(state), opts, candle_tx, drop_tx, stop: AtomicBool::new(false) });
        let h = inner.clone();
        let http = HttpServer::start(move |r| handle_http(&h, r))?;
        let p = inner.clone();
        let public = WsServer::start(move |ws, _path| public_ws(p.clone(), ws))?;
        let q = inner.clone();
        let private = WsServer::start(move |ws, _path| private_ws(q.clone(), ws))?;
        if !inner.opts.candle_pace.is_zero() {
            let d = inner.clone();
            std::thread::Builder::new().name("fake-kraken-candles".into()).spawn(move || {
                while !d.stop.load(Ordering::Relaxed) {
                    if d.state().ohlc_subscribed {
                        std::thread::sleep(d.opts.candle_pace);
                        if !advance(&d) {
                            return;
                        }
                    } else {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            })?;
        }
        Ok(FakeKraken { inner, http, public, private })
    }

    pub fn rest_url(&self) -> String {
        self.http.url()
    }

    pub fn ws_url(&self) -> String {
        format!("{}/v2", self.public.url())
    }

    pub fn ws_auth_url(&self) -> String {
        format!("{}/v2", self.private.url())
    }

    /// Makes the next request on `path` (`/0/private/AddOrder`, or just `AddOrder`) fail so.
    /// Several calls queue several faults.
    pub fn fail_next(&self, path: &str, fault: Fault) {
        self.inner.state().faults.push((path.to_owned(), fault));
    }

    /// Closes every open WebSocket connection.
    pub fn drop_websockets(&self) {
        let _ = self.inner.drop_tx.send(());
    }

    /// Every order accepted, in order.
    pub fn orders(&self) -> Vec<FakeOrder> {
        self.inner.state().orders.clone()
    }

    /// The account's balance of a Kraken asset code (`ZEUR`, `XXBT`), fills included.
    pub fn balance(&self, code: &str) -> Option<Decimal> {
        self.inner.state().balances.get(code).copied()
    }

    /// Every request that arrived, in order.
    pub fn requests(&self) -> Vec<FakeRequest> {
        self.inner.state().requests.clone()
    }

    /// Fills up to `qty` of the open order sent as `cl_ord_id` at `price`, as maker (a
    /// partial fill when less than what is left); `false` when there is no such open order.
    pub fn fill_partially(&self, cl_ord_id: &str, qty: Decimal, price: Decimal) -> bool {
        let mut s = self.inner.state();
        let Some(i) = s.orders.iter().position(|o| o.cl_ord_id.as_deref() == Some(cl_ord_id) && o.status == "open")
        else {
            return false;
        };
        fill(&mut s, i, price, true, Some(qty));
        true
    }

    /// Stops (or resumes) sending executions on the private stream; they are kept for the
    /// next subscription's snapshot and for TradesHistory, QueryTrades and the order queries.
    pub fn mute_executions(&self, muted: bool) {
        self.inner.state().executions_muted = muted;
    }

    /// Forgets every trade (TradesHistory and QueryTrades list none), as if they had aged out
    /// of what Kraken keeps.
    pub fn forget_trades(&self) {
        self.inner.state().trade_log.clear();
    }

    /// Streams the next candle now; `false` when there is none left.
    pub fn next_candle(&self) -> bool {
        advance(&self.inner)
    }

    /// How many candles have been streamed.
    pub fn candles_streamed(&self) -> usize {
        self.inner.state().candle_index.map_or(0, |i| i + 1)
    }

    /// Whether a client has subscribed to `ohlc` (streaming starts then).
    pub fn ohlc_subscribed(&self) -> bool {
        self.inner.state().ohlc_subscribed
    }
}

impl Drop for FakeKraken {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        let _ = self.inner.drop_tx.send(());
    }
}

// ---------------------------------------------------------------------------------------------
// REST.

fn handle_http(inner: &Inner, r: HttpRequest) -> Reply {
    let path = r.path().to_owned();
    let mut s = inner.state();
    s.requests.push(FakeRequest { path: path.clone(), body: r.body.clone() });
    let fault = s.faults.iter().position(|(p, _)| *p == path || path.ends_with(&format!("/{p}")));
    let fault = fault.map(|i| s.faults.remove(i).1);
    match fault {
        Some(Fault::TooManyRequests) => {
            return Reply::Respond(HttpResponse::json(429, r#"{"error":["EAPI:Rate limit exceeded"]}"#))
        }
        Some(Fault::ServerError) => {
            return Reply::Respond(HttpResponse::json(503, r#"{"error":["EService:Unavailable"]}"#))
        }
        Some(Fault::HangUp) => return Reply::HangUp,
        Some(Fault::Timeout) | None => {}
    }
    let reply = if let Some(endpoint) = path.strip_prefix("/0/public/") {
        public_endpoint(inner, &s, endpoint)
    } else if let Some(endpoint) = path.strip_prefix("/0/private/") {
        private_endpoint(inner, &mut s, &r, endpoint)
    } else {
        Reply::Respond(HttpResponse::json(404, r#"{"error":["EGeneral:Unknown method"]}"#))
    };
    match (fault, reply) {
        (Some(Fault::Timeout), Reply::Respond(resp)) => Reply::Late(inner.opts.late_by, resp),
        (_, reply) => reply,
    }
}

fn public_endpoint(inner: &Inner, s: &State, endpoint: &str) -> Reply {
    let _ = s;
    let body = match endpoint {
        "AssetPairs" => inner.opts.asset_pairs.clone(),
        "Ticker" => inner.opts.ticker.clone(),
        "OHLC" => inner.opts.ohlc.clone(),
        "Depth" => inner.opts.depth.clone(),
        "Time" => {
            let now = now_ms();
            return Reply::Respond(ok(serde_json::json!({ "unixtime": now / 1000, "rfc1123": "" })));
        }
        _ => return envelope_error("EGeneral:Unknown method"),
    };
    Reply::Respond(HttpResponse::json(200, body))
}

fn private_endpoint(inner: &Inner, s: &mut State, r: &HttpRequest, endpoint: &str) -> Reply {
    if r.header("API-Key") != Some(s.key.as_str()) {
        return envelope_error("EAPI:Invalid key");
    }
    let form = form_decode(&r.body);
    let Some(nonce) = form.get("nonce").and_then(|n| n.parse::<u64>().ok()) else {
        return envelope_error("EAPI:Invalid nonce");
    };
    if r.header("API-Sign") != Some(s.credential.sign(r.path(), nonce, &r.body).as_str()) {
        return envelope_error("EAPI:Invalid signature");
    }
    if nonce <= s.last_nonce {
        return envelope_error("EAPI:Invalid nonce");
    }
    s.last_nonce = nonce;
    let by_cl = |o: &FakeOrder| form.get("cl_ord_id").is_none_or(|c| o.cl_ord_id.as_ref() == Some(c));
    let result = match endpoint {
        "Balance" => {
            let b: BTreeMap<&String, String> = s.balances.iter().map(|(c, a)| (c, a.to_string())).collect();
            serde_json::json!(b)
        }
        "TradeVolume" => {
            let (taker, maker) = inner.opts.fee_percent;
            let pairs: Vec<String> = form.get("pair").map_or(Vec::new(), |p| p.split(',').map(str::to_owned).collect());
            let fee =
                |f: Decimal| serde_json::json!({ "fee": format!("{f:.4}"), "minfee": "0.1000", "maxfee": "0.2600" });
            let fees: serde_json::Map<String, serde_json::Value> =
                pairs.iter().map(|p| (p.clone(), fee(taker))).collect();
            let makers: serde_json::Map<String, serde_json::Value> =
                pairs.iter().map(|p| (p.clone(), fee(maker))).collect();
            serde_json::json!({ "currency": "ZUSD", "volume": "0.0000", "fees": fees, "fees_maker": makers })
        }
        "GetWebSocketsToken" => {
            s.next_id += 1;
            let token = format!("faketoken{:08}", s.next_id);
            s.tokens.insert(token.clone());
            serde_json::json!({ "token": token, "expires": 900 })
        }
        "AddOrder" => match add_order(inner, s, &form) {
            Ok(v) => v,
            Err(e) => return envelope_error(&e),
        },
        "CancelOrder" => {
            let target = form.get("cl_ord_id").or(form.get("txid")).cloned().unwrap_or_default();
            let found = s.orders.iter().position(|o| {
                o.status == "open" && (o.txid == target || o.cl_ord_id.as_deref() == Some(target.as_str()))
            });
            match found {
                Some(i) => {
                    cancel(s, i);
                    serde_json::json!({ "count": 1 })
                }
                None => return envelope_error("EOrder:Unknown order"),
            }
        }
        "CancelAll" => {
            let open: Vec<usize> = (0..s.orders.len()).filter(|i| s.orders[*i].status == "open").collect();
            for i in &open {
                cancel(s, *i);
            }
            serde_json::json!({ "count": open.len() })
        }
        "OpenOrders" => {
            let open: serde_json::Map<String, serde_json::Value> = s
                .orders
                .iter()
                .filter(|o| o.status == "open" && by_cl(o))
                .map(|o| (o.txid.clone(), order_json(s, o)))
                .collect();
            serde_json::json!({ "open": open })
        }
        "ClosedOrders" => {
            let closed: serde_json::Map<String, serde_json::Value> = s
                .orders
                .iter()
                .filter(|o| o.status != "open" && by_cl(o))
                .map(|o| (o.txid.clone(), order_json(s, o)))
                .collect();
            let n = closed.len();
            serde_json::json!({ "closed": closed, "count": n })
        }
        "QueryOrders" => {
            let ids: Vec<&str> = form.get("txid").map_or(Vec::new(), |t| t.split(',').collect());
            let found: serde_json::Map<String, serde_json::Value> = s
                .orders
                .iter()
                .filter(|o| ids.contains(&o.txid.as_str()))
                .map(|o| (o.txid.clone(), order_json(s, o)))
                .collect();
            serde_json::Value::Object(found)
        }
        "TradesHistory" => {
            let trades: serde_json::Map<String, serde_json::Value> =
                s.trade_log.iter().map(|t| (t.id.clone(), trade_json(s, t))).collect();
            let n = trades.len();
            serde_json::json!({ "trades": trades, "count": n })
        }
        "QueryTrades" => {
            let ids: Vec<&str> = form.get("txid").map_or(Vec::new(), |t| t.split(',').collect());
            if ids.is_empty() || ids.len() > 20 {
                return envelope_error("EGeneral:Invalid arguments:txid");
            }
            let found: serde_json::Map<String, serde_json::Value> = s
                .trade_log
                .iter()
                .filter(|t| ids.contains(&t.id.as_str()))
                .map(|t| (t.id.clone(), trade_json(s, t)))
                .collect();
            serde_json::Value::Object(found)
        }
        _ => return envelope_error("EGeneral:Unknown method"),
    };
    Reply::Respond(ok(result))
}

fn trade_json(s: &State, t: &FakeTrade) -> serde_json::Value {
    let o = &s.orders[t.order];
    serde_json::json!({ "ordertxid": o.txid, "postxid": "TKH2SE-M7IF5-CFI7LT", "pair": o.symbol,
        "time": seconds(t.time_ms), "type": o.side.as_str(), "ordertype": o.ordertype,
        "price": t.price.to_string(), "cost": t.cost.to_string(), "fee": t.fee.to_string(),
        "vol": t.qty.to_string(), "margin": "0.00000", "misc": "" })
}

fn avg(o: &FakeOrder) -> Decimal {
    if o.executed.is_zero() {
        Decimal::ZERO
    } else {
        (o.cost / o.executed).round_dp(8)
    }
}

fn order_json(s: &State, o: &FakeOrder) -> serde_json::Value {
    let altname = s.pairs.iter().find(|p| p.symbol == o.symbol).map_or(o.symbol.clone(), |p| p.altname.clone());
    let price = o.price.map_or("0".to_owned(), |p| p.to_string());
    let descr = match o.price {
        Some(p) => format!("{} {} {} @ {} {p}", o.side.as_str(), o.volume, altname, o.ordertype),
        None => format!("{} {} {} @ market", o.side.as_str(), o.volume, altname),
    };
    serde_json::json!({
        "refid": null, "userref": 0, "cl_ord_id": o.cl_ord_id, "status": o.status,
        "opentm": seconds(o.open_ms), "closetm": o.close_ms.map(seconds), "starttm": 0, "expiretm": 0,
        "descr": { "pair": altname, "type": o.side.as_str(), "ordertype": o.ordertype, "price": price,
            "price2": "0", "leverage": "none", "order": descr, "close": "" },
        "vol": o.volume.to_string(), "vol_exec": o.executed.to_string(), "cost": o.cost.to_string(),
        "fee": o.fee.to_string(), "price": avg(o).to_string(), "stopprice": "0", "limitprice": "0",
        "misc": "", "oflags": "fciq", "reason": if o.status == "canceled" { Some("User requested") } else { None },
        "trades": o.trades,
    })
}

fn decimals(d: Decimal) -> u32 {
    d.normalize().scale()
}

fn add_order(inner: &Inner, s: &mut State, form: &BTreeMap<String, String>) -> Result<serde_json::Value, String> {
    let invalid = |field: &str| format!("EGeneral:Invalid arguments:{field}");
    let pair_name = form.get("pair").ok_or_else(|| invalid("pair"))?;
    let pair = s
        .pairs
        .iter()
        .find(|p| p.symbol == *pair_name || p.altname == *pair_name || p.wsname == *pair_name)
        .cloned()
        .ok_or("EQuery:Unknown asset pair")?;
    let side: Side = match form.get("type").map(String::as_str) {
        Some("buy") => Side::Buy,
        Some("sell") => Side::Sell,
        _ => return Err(invalid("type")),
    };
    let ordertype = form.get("ordertype").cloned().ok_or_else(|| invalid("ordertype"))?;
    if !["market", "limit", "stop-loss", "take-profit"].contains(&ordertype.as_str()) {
        return Err(invalid("ordertype"));
    }
    let volume: Decimal = form
        .get("volume")
        .and_then(|v| parse_decimal(v).ok())
        .filter(|v| *v > Decimal::ZERO)
        .ok_or_else(|| invalid("volume"))?;
    if decimals(volume) > pair.lot_decimals {
        return Err(invalid("volume"));
    }
    if volume < pair.ordermin {
        return Err("EOrder:Order minimum not met".into());
    }
    let price = match (ordertype.as_str(), form.get("price")) {
        ("market", _) => None,
        (_, Some(p)) => {
            let p = parse_decimal(p).ok().filter(|p| *p > Decimal::ZERO).ok_or_else(|| invalid("price"))?;
            if decimals(p) > pair.pair_decimals {
                return Err(format!(
                    "EOrder:Invalid price:{} price can only be specified up to {} decimals.",
                    pair.altname, pair.pair_decimals
                ));
            }
            Some(p)
        }
        (_, None) => return Err(invalid("price")),
    };
    let cl_ord_id = form.get("cl_ord_id").cloned();
    if let Some(c) = &cl_ord_id {
        let hex = c.chars().filter(|ch| *ch != '-').all(|ch| ch.is_ascii_hexdigit());
        let uuid = (c.len() == 36 && c.matches('-').count() == 4 || c.len() == 32) && hex;
        if !(uuid || (c.len() <= 18 && !c.is_empty())) {
            return Err(invalid("cl_ord_id"));
        }
        if s.orders.iter().any(|o| o.status == "open" && o.cl_ord_id.as_ref() == Some(c)) {
            return Err("EOrder:Duplicate order".into());
        }
    }
    let descr_price = price.map_or(String::new(), |p| format!(" {p}"));
    let descr = format!("{} {} {} @ {}{}", side.as_str(), form["volume"], pair.altname, ordertype, descr_price);
    if form.get("validate").map(String::as_str) == Some("true") {
        return Ok(serde_json::json!({ "descr": { "order": descr } }));
    }
    let reference = match price {
        Some(p) => Some(p),
        None => market_price(inner, s, &pair),
    };
    let Some(reference) = reference else { return Err("EOrder:Insufficient liquidity".into()) };
    // What the account holds now must cover the order (open orders are not reserved here).
    let held = |code: &str| s.balances.get(code).copied().unwrap_or_default();
    let enough = match side {
        Side::Buy => held(&pair.quote) >= volume * reference * (Decimal::ONE + s.fee_rates.0),
        Side::Sell => held(&pair.base) >= volume,
    };
    if !enough {
        return Err("EOrder:Insufficient funds".into());
    }
    s.next_id += 1;
    let n = s.next_id;
    let txid = format!("O{:05}-FAKE{}-{:06}", n, (b'A' + (n % 26) as u8) as char, n * 7);
    let order = FakeOrder {
        txid: txid.clone(),
        cl_ord_id,
        symbol: pair.symbol.clone(),
        side,
        ordertype: ordertype.clone(),
        price,
        volume,
        executed: Decimal::ZERO,
        cost: Decimal::ZERO,
        fee: Decimal::ZERO,
        status: "open".into(),
        open_ms: now_ms(),
        close_ms: None,
        trades: Vec::new(),
    };
    s.orders.push(order);
    let i = s.orders.len() - 1;
    let new = exec_item(s, i, "new", None);
    publish(s, &new);
    if ordertype == "market" {
        if let Some(p) = market_price(inner, s, &pair) {
            fill(s, i, p, false, None);
        }
    }
    Ok(serde_json::json!({ "descr": { "order": descr }, "txid": [txid] }))
}

/// The close of the pair's current candle (the last one streamed, else its first one).
fn market_price(inner: &Inner, s: &State, pair: &PairInfo) -> Option<Decimal> {
    let candles = &inner.opts.candles;
    let ours = |c: &&Candle| c.pair.to_string() == pair.wsname;
    let streamed = s.candle_index.map_or(0, |i| i + 1).min(candles.len());
    candles[..streamed].iter().rev().find(ours).or_else(|| candles.iter().find(ours)).map(|c| c.close.value())
}

fn exec_item(s: &State, i: usize, exec_type: &str, trade: Option<(&str, Decimal, Decimal, Decimal, bool)>) -> String {
    let o = &s.orders[i];
    let wsname = s.pairs.iter().find(|p| p.symbol == o.symbol).map_or(o.symbol.clone(), |p| p.wsname.clone());
    let pair = wsname.parse().ok();
    let symbol = pair.map_or(wsname.clone(), |p| v2_symbol(&p));
    let quote = symbol.split('/').nth(1).unwrap_or("USD").to_owned();
    let mut item = serde_json::json!({
        "exec_type": exec_type, "order_id": o.txid, "symbol": symbol, "side": o.side.as_str(),
        "order_type": o.ordertype, "order_status": match (o.status.as_str(), exec_type) {
            ("closed", _) => "filled",
            ("open", "new") => "new",
            ("open", _) if !o.executed.is_zero() => "partially_filled",
            (status, _) => status,
        },
        "timestamp": rfc3339(s.market_ms.unwrap_or_else(now_ms)),
    });
    if let Some(c) = &o.cl_ord_id {
        item["cl_ord_id"] = serde_json::json!(c);
    }
    if exec_type == "canceled" {
        item["reason"] = serde_json::json!("User requested");
    }
    let mut text = item.to_string();
    // Quantities as JSON numbers from their exact text, as Kraken writes them.
    text.pop();
    text.push_str(&format!(r#","order_qty":{},"cum_qty":{}"#, o.volume, o.executed));
    if let Some((exec_id, qty, price, fee, maker)) = trade {
        text.push_str(&format!(
            r#","exec_id":"{exec_id}","last_qty":{qty},"last_price":{price},"cost":{},"liquidity_ind":"{}","fees":[{{"asset":"{quote}","qty":{fee}}}]"#,
            (qty * price).normalize(),
            if maker { "m" } else { "t" }
        ));
    }
    text.push('}');
    text
}

/// A v2 `balances` item for a Kraken asset code (v2 says BTC where REST says XXBT).
fn balance_item(code: &str, amount: Decimal) -> Option<String> {
    let name = match crypy_asset(code)?.as_str() {
        "XBT" => "BTC".to_owned(),
        "XDG" => "DOGE".to_owned(),
        a => a.to_owned(),
    };
    Some(format!(r#"{{"asset":"{name}","balance":{amount}}}"#))
}

fn publish(s: &mut State, item: &str) {
    if s.executions_muted {
        return;
    }
    let msg = format!(r#"{{"channel":"executions","type":"update","data":[{item}]}}"#);
    s.private_subs.retain(|tx| tx.send(msg.clone()).is_ok());
}

/// Fills up to `most` of what is left of order `i` at `price`.
fn fill(s: &mut State, i: usize, price: Decimal, maker: bool, most: Option<Decimal>) {
    s.next_id += 1;
    let n = s.next_id;
    let exec_id = format!("T{:05}-FAKE-{:06}", n, n * 13);
    let (taker, maker_rate) = s.fee_rates;
    let rate = if maker { maker_rate } else { taker };
    let o = &mut s.orders[i];
    let left = o.volume - o.executed;
    let qty = most.map_or(left, |m| m.min(left));
    if qty <= Decimal::ZERO {
        return;
    }
    let cost = qty * price;
    let fee = (cost * rate).round_dp(5).normalize();
    o.executed += qty;
    o.cost += cost;
    o.fee += fee;
    if o.executed == o.volume {
        o.status = "closed".into();
        o.close_ms = Some(now_ms());
    }
    o.trades.push(exec_id.clone());
    let time_ms = s.market_ms.unwrap_or_else(now_ms);
    s.trade_log.push(FakeTrade { id: exec_id.clone(), order: i, qty, price, cost, fee, time_ms });
    let o = &s.orders[i];
    let symbol = o.symbol.clone();
    let side = o.side;
    let item = exec_item(s, i, "trade", Some((&exec_id, qty, price, fee, maker)));
    s.executions.push(item.clone());
    publish(s, &item);
    // The account moves as Kraken's would: the fee is paid in the quote asset.
    let Some(pair) = s.pairs.iter().find(|p| p.symbol == symbol).cloned() else { return };
    let (base, quote) = match side {
        Side::Buy => (qty, -cost - fee),
        Side::Sell => (-qty, cost - fee),
    };
    *s.balances.entry(pair.base.clone()).or_default() += base;
    *s.balances.entry(pair.quote.clone()).or_default() += quote;
    let items: Vec<String> = [&pair.base, &pair.quote].iter().filter_map(|c| balance_item(c, s.balances[*c])).collect();
    let msg = format!(r#"{{"channel":"balances","type":"update","data":[{}]}}"#, items.join(","));
    s.private_subs.retain(|tx| tx.send(msg.clone()).is_ok());
}

fn cancel(s: &mut State, i: usize) {
    s.orders[i].status = "canceled".into();
    s.orders[i].close_ms = Some(now_ms());
    let item = exec_item(s, i, "canceled", None);
    s.executions.push(item.clone());
    publish(s, &item);
}

/// Streams the next candle and fills what it reaches.
fn advance(inner: &Inner) -> bool {
    let mut s = inner.state();
    let next = s.candle_index.map_or(0, |i| i + 1);
    let Some(candle) = inner.opts.candles.get(next) else { return false };
    s.candle_index = Some(next);
    s.market_ms = Some(candle.open_time);
    let wsname = candle.pair.to_string();
    let (low, high) = (candle.low.value(), candle.high.value());
    // A resting order takes at most what traded in the candle: big orders fill in parts.
    let volume = candle.volume.value();
    for i in 0..s.orders.len() {
        let o = &s.orders[i];
        let ours = s.pairs.iter().any(|p| p.symbol == o.symbol && p.wsname == wsname);
        let (Some(price), true, true) = (o.price, ours, o.status == "open") else { continue };
        let reached = match (o.ordertype.as_str(), o.side) {
            ("limit", Side::Buy) | ("stop-loss", Side::Sell) | ("take-profit", Side::Buy) => low <= price,
            ("limit", Side::Sell) | ("stop-loss", Side::Buy) | ("take-profit", Side::Sell) => high >= price,
            _ => false,
        };
        if reached {
            let maker = o.ordertype == "limit";
            fill(&mut s, i, price, maker, Some(volume));
        }
    }
    drop(s);
    let _ = inner.candle_tx.send(next);
    true
}

// ---------------------------------------------------------------------------------------------
// WebSockets.

fn ack(channel: &str, symbol: Option<&str>, success: bool, error: Option<&str>) -> Message {
    let now = rfc3339(now_ms());
    let mut v = serde_json::json!({ "method": "subscribe", "result": { "channel": channel }, "success": success,
        "time_in": now, "time_out": now });
    if let Some(s) = symbol {
        v["result"]["symbol"] = serde_json::json!(s);
    }
    if let Some(e) = error {
        v["error"] = serde_json::json!(e);
    }
    Message::text(v.to_string())
}

fn ohlc_message(kind: &str, c: &Candle) -> Message {
    ohlc_message_of(kind, std::slice::from_ref(c))
}

/// One `ohlc` message with `candles` as its data (a snapshot carries the recent ones).
fn ohlc_message_of(kind: &str, candles: &[Candle]) -> Message {
    let data: Vec<String> = candles
        .iter()
        .map(|c| {
            format!(
                r#"{{"symbol":"{}","open":{},"high":{},"low":{},"close":{},"trades":{},"volume":{},"vwap":{},"interval_begin":"{}","interval":{},"timestamp":"{}"}}"#,
                v2_symbol(&c.pair),
                c.open,
                c.high,
                c.low,
                c.close,
                c.trades.unwrap_or(0),
                c.volume,
                c.close,
                rfc3339(c.open_time),
                c.interval.secs() / 60,
                rfc3339(c.open_time),
            )
        })
        .collect();
    Message::text(format!(
        r#"{{"channel":"ohlc","type":"{kind}","timestamp":"{}","data":[{}]}}"#,
        rfc3339(now_ms()),
        data.join(",")
    ))
}

struct Sub {
    method: String,
    channel: String,
    symbols: Vec<String>,
    token: Option<String>,
}

fn parse_sub(text: &str) -> Option<Sub> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let params = &v["params"];
    Some(Sub {
        method: v["method"].as_str()?.to_owned(),
        channel: params["channel"].as_str().unwrap_or("").to_owned(),
        symbols: params["symbol"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        token: params["token"].as_str().map(str::to_owned),
    })
}

async fn send_book(inner: &Inner, ws: &mut ServerWs, symbol: &str) -> bool {
    let Some(book) = &inner.opts.book else { return true };
    let Ok(recording) = serde_json::from_str::<serde_json::Value>(book) else { return true };
    if recording["init"]["data"][0]["symbol"].as_str() != Some(symbol) {
        return true;
    }
    if ws.send(Message::text(recording["init"].to_string())).await.is_err() {
        return false;
    }
    let corrupt = {
        let mut s = inner.state();
        let c = if s.book_corrupted { None } else { inner.opts.corrupt_book_update };
        s.book_corrupted |= c.is_some();
        c
    };
    for (i, u) in recording["updates"].as_array().into_iter().flatten().enumerate() {
        let mut u = u.clone();
        if corrupt == Some(i) {
            let c = u["data"][0]["checksum"].as_u64().unwrap_or(0);
            u["data"][0]["checksum"] = serde_json::json!(c ^ 1);
        }
        if ws.send(Message::text(u.to_string())).await.is_err() {
            return false;
        }
    }
    true
}

async fn public_ws(inner: Arc<Inner>, mut ws: ServerWs) {
    let mut dropped = inner.drop_tx.subscribe();
    let mut candles = inner.candle_tx.subscribe();
    let mut ohlc: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = dropped.recv() => {
                let _ = ws.close(None).await;
                return;
            }
            index = candles.recv() => {
                let Ok(index) = index else { return };
                if let Some(c) = inner.opts.candles.get(index) {
                    if ohlc.contains(&v2_symbol(&c.pair)) && ws.send(ohlc_message("update", c)).await.is_err() {
                        return;
                    }
                }
            }
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let Some(sub) = parse_sub(&text) else { continue };
                if sub.method == "ping" {
                    let _ = ws.send(Message::text(r#"{"method":"pong"}"#)).await;
                    continue;
                }
                for symbol in &sub.symbols {
                    if ws.send(ack(&sub.channel, Some(symbol), true, None)).await.is_err() {
                        return;
                    }
                    if sub.method != "subscribe" {
                        if sub.channel == "ohlc" {
                            ohlc.remove(symbol);
                        }
                        continue;
                    }
                    match sub.channel.as_str() {
                        "book" if !send_book(&inner, &mut ws, symbol).await => return,
                        "ohlc" => {
                            ohlc.insert(symbol.clone());
                            let current = {
                                let mut s = inner.state();
                                s.ohlc_subscribed = true;
                                s.candle_index
                            };
                            let pair = pair_of_v2(symbol);
                            // As Kraken does, the snapshot carries the recent candles (up to
                            // 720), so a client that reconnects recovers what it missed.
                            let mut recent: Vec<Candle> = current
                                .map(|i| {
                                    inner.opts.candles[..=i]
                                        .iter()
                                        .rev()
                                        .filter(|c| Some(c.pair) == pair)
                                        .take(720)
                                        .cloned()
                                        .collect()
                                })
                                .unwrap_or_default();
                            recent.reverse();
                            if !recent.is_empty() && ws.send(ohlc_message_of("snapshot", &recent)).await.is_err() {
                                return;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

async fn private_ws(inner: Arc<Inner>, mut ws: ServerWs) {
    let mut dropped = inner.drop_tx.subscribe();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut tx = Some(tx);
    let mut mine: Option<String> = None;
    loop {
        tokio::select! {
            _ = dropped.recv() => {
                let _ = ws.close(None).await;
                return;
            }
            Some(text) = rx.recv() => {
                if ws.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let Some(sub) = parse_sub(&text) else { continue };
                if sub.method == "ping" {
                    let _ = ws.send(Message::text(r#"{"method":"pong"}"#)).await;
                    continue;
                }
                if sub.method != "subscribe" {
                    continue;
                }
                // A token opens one connection (a reconnecting client must ask for a new one).
                let known = sub.token.as_ref().is_some_and(|t| {
                    let mut s = inner.state();
                    if mine.as_ref() == Some(t) {
                        return true;
                    }
                    let fresh = s.tokens.remove(t);
                    if fresh {
                        mine = Some(t.clone());
                    }
                    fresh
                });
                if !known {
                    let _ = ws.send(ack(&sub.channel, None, false, Some("EAPI:Invalid token"))).await;
                    continue;
                }
                if ws.send(ack(&sub.channel, None, true, None)).await.is_err() {
                    return;
                }
                let snapshot = match sub.channel.as_str() {
                    "executions" => {
                        let mut s = inner.state();
                        if let Some(tx) = tx.take() {
                            s.private_subs.push(tx);
                        }
                        let from = s.executions.len().saturating_sub(50);
                        format!(r#"{{"channel":"executions","type":"snapshot","data":[{}]}}"#, s.executions[from..].join(","))
                    }
                    "balances" => {
                        let mut s = inner.state();
                        if let Some(tx) = tx.take() {
                            s.private_subs.push(tx);
                        }
                        let items: Vec<String> = s.balances.iter().filter_map(|(c, a)| balance_item(c, *a)).collect();
                        format!(r#"{{"channel":"balances","type":"snapshot","data":[{}]}}"#, items.join(","))
                    }
                    _ => continue,
                };
                if ws.send(Message::text(snapshot)).await.is_err() {
                    return;
                }
            }
        }
    }
}
