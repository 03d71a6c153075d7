//! [`BitmexExchange`]: a BitMEX account as a crypy [`Exchange`].
//!
//! It owns the REST calls (signed with a short `api-expires`, paced by the `x-ratelimit-*`
//! headers, retried with bounded back-off) and the realtime WebSocket, which runs on a task of its
//! own: it authenticates, subscribes, keeps the L2 books, and turns closed trade bins and the
//! account's executions into [`VenueEvent`]s on a channel that [`next_event`] only reads, so that
//! waiting for an event is cancel-safe. When the socket drops it reconnects with back-off,
//! authenticates and subscribes again; the book resyncs from the new partial, and executions are
//! deduplicated by `execID`, so a fill is reported once even when a reconnect's partial repeats
//! it. The executions in the FIRST session's partial predate the connection and are not reported
//! (a desk reconciles its orders at start, e.g. with [`BitmexExchange::order`]); bins that closed
//! while the socket was down are fetched from `/trade/bucketed`, so the candles stay contiguous.
//!
//! **Never a duplicate order.** `place` sends `clOrdID` (see [`rest::cl_ord_id`]); before it sends
//! again after a timeout, a dropped connection, a 5xx or a 429, it asks `GET /order` for that
//! `clOrdID` and returns the order it finds. BitMEX refuses a second order with the same `clOrdID`
//! ("Duplicate clOrdID"), which `place` also answers with the order found.
//!
//! **No secret leaves.** Errors carry the endpoint and BitMEX's message, never a header; `Debug`
//! shows no key; the raw tap gets only what BitMEX sends, and not the answer to the WebSocket
//! authentication, which echoes the key and signature.
//!
//! [`BitmexExchange`]: crate::bitmex::BitmexExchange
//! [`Exchange`]: crate::Exchange
//! [`VenueEvent`]: crate::VenueEvent
//! [`next_event`]: crate::Exchange::next_event
//! [`BitmexExchange::order`]: crate::bitmex::BitmexExchange::order
//! [`rest::cl_ord_id`]: crate::bitmex::rest::cl_ord_id

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crypy_core::{
    AgentId, Asset, Balance, Candle, Capabilities, ClientOrderId, Event, Interval, Market, OrderRequest, Pair,
    Position, Price, Qty, Quote,
};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::http::{self, OrderState, OrderStatus, RateLimit};
use super::rest::{self, Book, Execution, ExecutionReport, Instrument, Markets};
use super::BitmexCredential;
use crate::{net, Exchange, ExchangeError, OrderAck, RawMessage, RawTap, Unfinished, VenueEvent};

/// How far in the future a request's `api-expires` lies: short, so that a captured request
/// is soon worthless, but long enough for a slow network.
const EXPIRY_SECS: u64 = 10;
/// Attempts of one REST call before its error is returned.
const MAX_ATTEMPTS: u32 = 4;
/// The longest wait before a retry; a venue asking for more gets the error returned instead.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// Silence after which the socket is pinged; as long again without an answer, it is dead.
const PING_AFTER: Duration = Duration::from_secs(5);
/// Executions remembered for deduplication.
const SEEN_EXECUTIONS: usize = 100_000;

/// How to reach a BitMEX account, and what to watch.
#[derive(Clone, Debug)]
pub struct BitmexConfig {
    /// The desk is `bitmex:<account>`.
    pub account: String,
    pub rest_url: String,
    pub ws_url: String,
    /// `None` watches public data only (paper trading): private calls fail with
    /// [`ExchangeError::Rejected`].
    pub credential: Option<BitmexCredential>,
    /// The pairs whose trades, bins and books to subscribe to (`XBT/USD` is `XBTUSD`).
    pub pairs: Vec<Pair>,
    /// The candle interval: 1m, 5m, 1h or 1d (`tradeBin1m`…).
    pub interval: Interval,
    /// Per request and per connection attempt.
    pub timeout: Duration,
    /// When recording: every message received from BitMEX.
    pub raw: Option<RawTap>,
}

impl BitmexConfig {
    /// The production venue, public data only, 1m candles, no pairs yet.
    pub fn new(account: impl Into<String>) -> Self {
        BitmexConfig {
            account: account.into(),
            rest_url: "https://www.bitmex.com/api/v1".into(),
            ws_url: "wss://ws.bitmex.com/realtime".into(),
            credential: None,
            pairs: Vec::new(),
            interval: Interval::from_secs(60).expect("60 s is an interval"),
            timeout: Duration::from_secs(10),
            raw: None,
        }
    }

    /// The testnet venue.
    pub fn testnet(account: impl Into<String>) -> Self {
        BitmexConfig {
            rest_url: "https://testnet.bitmex.com/api/v1".into(),
            ws_url: "wss://ws.testnet.bitmex.com/realtime".into(),
            ..Self::new(account)
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn rejected(reason: impl Into<String>) -> ExchangeError {
    ExchangeError::Rejected { reason: reason.into() }
}

fn no_key() -> ExchangeError {
    rejected("this BitMEX desk has no API key: public data only")
}

fn tap(raw: &Option<RawTap>, channel: String, text: &str) {
    if let Some(raw) = raw {
        let _ = raw.send(RawMessage { received: now_ms(), channel, text: text.to_owned() });
    }
}

/// A REST call that failed, with what a retry needs to know.
#[derive(Debug)]
enum Failure {
    Status {
        status: u16,
        body: String,
        wait: Option<Duration>,
    },
    /// No answer: the request may or may not have been executed.
    Unreachable(String),
}

impl Failure {
    fn error(&self, what: &str) -> ExchangeError {
        match self {
            Failure::Status { status, body, .. } => match http::error(*status, body) {
                ExchangeError::Rejected { reason } => rejected(format!("{what}: {reason}")),
                ExchangeError::RateLimited { reason } => {
                    ExchangeError::RateLimited { reason: format!("{what}: {reason}") }
                }
                ExchangeError::Connectivity(reason) => ExchangeError::Connectivity(format!("{what}: {reason}")),
                other => other,
            },
            Failure::Unreachable(reason) => ExchangeError::Connectivity(format!("{what}: {reason}")),
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Failure::Status { status, .. } => matches!(status, 429 | 502..=504),
            Failure::Unreachable(_) => true,
        }
    }

    /// How long to wait before attempt `attempt + 1`: what the venue asked, else doubling.
    fn wait(&self, attempt: u32) -> Duration {
        match self {
            Failure::Status { wait: Some(w), .. } => *w,
            _ => Duration::from_millis(200u64 << attempt.min(6)),
        }
    }
}

/// Signed REST calls with rate-limit pacing.
#[derive(Debug)]
struct Rest {
    http: reqwest::Client,
    /// `https://www.bitmex.com/api/v1`, without a trailing slash.
    base: String,
    /// `/api/v1`: what the signature covers before the endpoint's path.
    base_path: String,
    credential: Option<BitmexCredential>,
    raw: Option<RawTap>,
    limit: Mutex<Option<RateLimit>>,
    /// Set when an order route said `x-ratelimit-remaining-1s: 0`: no request before it.
    not_before: Mutex<Option<tokio::time::Instant>>,
}

impl Rest {
    fn new(cfg: &BitmexConfig) -> Result<Rest, ExchangeError> {
        let base = cfg.rest_url.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base).map_err(|e| rejected(format!("BitMEX REST URL {base}: {e}")))?;
        Ok(Rest {
            http: net::http_client(cfg.timeout)?,
            base_path: url.path().trim_end_matches('/').to_owned(),
            base,
            credential: cfg.credential.clone(),
            raw: cfg.raw.clone(),
            limit: Mutex::new(None),
            not_before: Mutex::new(None),
        })
    }

    /// Waits for the window to reset when the last answer said none is left (of the minute's
    /// requests, or of the second's on order routes).
    async fn pace(&self) {
        let not_before = *self.not_before.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = not_before {
            tokio::time::sleep_until(t).await;
        }
        let limit = *self.limit.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = limit.filter(|l| l.remaining == 0) {
            let wait = Duration::from_secs(l.reset.saturating_sub(now_secs())).min(MAX_WAIT);
            tokio::time::sleep(wait).await;
        }
    }

    /// One request. `query` is already encoded (see [`rest::encode`]), so that what is signed
    /// is what is sent.
    async fn once(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        body: Option<&str>,
        private: bool,
    ) -> Result<String, Failure> {
        self.pace().await;
        let target = if query.is_empty() {
            format!("{}{path}", self.base_path)
        } else {
            format!("{}{path}?{query}", self.base_path)
        };
        let url = format!("{}{}", self.base, &target[self.base_path.len()..]);
        let mut request = self.http.request(method.clone(), url);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        match &self.credential {
            Some(c) => {
                let expires = now_secs() + EXPIRY_SECS;
                let signature = c.sign(method.as_str(), &target, expires, body.unwrap_or(""));
                request = request
                    .header("api-key", c.api_key())
                    .header("api-expires", expires.to_string())
                    .header("api-signature", signature);
            }
            None if private => {
                return Err(Failure::Status { status: 401, body: String::new(), wait: None });
            }
            None => {}
        }
        let response = request.send().await.map_err(|e| Failure::Unreachable(describe(&e)))?;
        let status = response.status().as_u16();
        let headers = response.headers();
        let pairs = headers.iter().filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)));
        let limit = http::rate_limit(pairs);
        if limit.is_some() {
            *self.limit.lock().unwrap_or_else(|e| e.into_inner()) = limit;
        }
        if headers.get("x-ratelimit-remaining-1s").and_then(|v| v.to_str().ok()).map(str::trim) == Some("0") {
            *self.not_before.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(tokio::time::Instant::now() + Duration::from_secs(1));
        }
        let retry_after = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .or_else(|| {
                (status == 429).then(|| limit.map(|l| Duration::from_secs(l.reset.saturating_sub(now_secs()))))?
            });
        let text = response.text().await.map_err(|e| Failure::Unreachable(describe(&e)))?;
        tap(&self.raw, format!("rest:{}{path}", self.base_path), &text);
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(Failure::Status { status, body: text, wait: retry_after })
        }
    }

    /// A request that may be repeated as is (reads, cancels, amends to absolute values):
    /// retried on 429, 5xx and connection failures, at most [`MAX_ATTEMPTS`] times.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Option<&str>,
        private: bool,
    ) -> Result<String, ExchangeError> {
        if private && self.credential.is_none() {
            return Err(no_key());
        }
        let what = format!("{method} {}{path}", self.base_path);
        let mut attempt = 0;
        loop {
            match self.once(&method, path, query, body, private).await {
                Ok(text) => return Ok(text),
                Err(f) if f.retryable() && attempt + 1 < MAX_ATTEMPTS && f.wait(attempt) <= MAX_WAIT => {
                    tokio::time::sleep(f.wait(attempt)).await;
                    attempt += 1;
                }
                Err(f) => return Err(f.error(&what)),
            }
        }
    }

    /// The order with this `clOrdID`, if BitMEX has it.
    async fn find(&self, cl_ord_id: &str) -> Result<Option<(OrderState, i64)>, ExchangeError> {
        let query = format!("filter={}&reverse=true&count=1", rest::encode(&rest::cl_ord_id_json(cl_ord_id)));
        let text = self.call(Method::GET, "/order", &query, None, true).await?;
        Ok(with_times(&text)?.into_iter().find(|(o, _)| o.client_id.as_ref().is_some_and(|c| c.as_str() == cl_ord_id)))
    }
}

/// Up to `count` closed buckets of `symbol`, oldest first, from `start` (ms, an open time) or
/// the latest.
async fn buckets(
    rest: &Rest,
    symbol: &str,
    pair: Pair,
    interval: Interval,
    start: Option<i64>,
    count: u32,
) -> Result<Vec<Candle>, ExchangeError> {
    let bin = rest::bin_size(interval)?;
    let count = count.clamp(1, 1000);
    let query = match start {
        // A bucket's timestamp is its end: the first bucket opening at `start` ends one
        // interval later.
        Some(start) => format!(
            "binSize={bin}&partial=false&symbol={}&count={count}&reverse=false&startTime={}",
            rest::encode(symbol),
            rest::encode(&rest::iso(start + interval.millis()))
        ),
        None => format!("binSize={bin}&partial=false&symbol={}&count={count}&reverse=true", rest::encode(symbol)),
    };
    let private = rest.credential.is_some();
    let text = rest.call(Method::GET, "/trade/bucketed", &query, None, private).await?;
    let mut candles = rest::parse_buckets(&text, pair, interval)?;
    candles.sort_by_key(|c| c.open_time);
    Ok(candles)
}

/// Orders with their venue times (`transactTime`, else `timestamp`, else now).
fn with_times(body: &str) -> Result<Vec<(OrderState, i64)>, ExchangeError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Times {
        transact_time: Option<String>,
        timestamp: Option<String>,
    }
    let orders = rest::parse_orders(body)?;
    let times: Vec<Times> = if body.trim_start().starts_with('[') {
        serde_json::from_str(body).unwrap_or_default()
    } else {
        serde_json::from_str(body).map(|t| vec![t]).unwrap_or_default()
    };
    Ok(orders
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            let t = times.get(i).and_then(|t| t.transact_time.as_deref().or(t.timestamp.as_deref()));
            (o, t.and_then(crypy_core::time::parse_iso_utc).unwrap_or_else(now_ms))
        })
        .collect())
}

/// What went wrong with a request, without its URL (whose query says what was asked).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "connection failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} ({detail})")
    }
}

/// What the socket's task and the desk's calls share.
#[derive(Debug, Default)]
struct Shared {
    balances: BTreeMap<Asset, Balance>,
    /// Last known `walletBalance` and `availableMargin` per BitMEX currency.
    margins: BTreeMap<String, (Option<Decimal>, Option<Decimal>)>,
    books: BTreeMap<String, Book>,
    /// The crypy id behind each `clOrdID` sent.
    client_ids: HashMap<String, ClientOrderId>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    /// Positions by symbol, as loaded at connect and updated by the `position` table.
    positions: BTreeMap<String, rest::PositionRow>,
    /// Close time of the last candle reported, per pair.
    last_bin: HashMap<Pair, i64>,
    /// WebSocket sessions that authenticated and subscribed.
    sessions: u64,
}

impl Shared {
    fn client_id(&self, cl_ord_id: &str) -> Option<ClientOrderId> {
        self.client_ids.get(cl_ord_id).cloned().or_else(|| cl_ord_id.parse().ok())
    }

    /// Whether the execution is new, remembering it.
    fn first_sight(&mut self, exec_id: &str) -> bool {
        if !self.seen.insert(exec_id.to_owned()) {
            return false;
        }
        self.seen_order.push_back(exec_id.to_owned());
        if self.seen_order.len() > SEEN_EXECUTIONS {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    fn set_margin(&mut self, currency: &str, wallet: Option<Decimal>, available: Option<Decimal>) {
        let entry = self.margins.entry(currency.to_owned()).or_default();
        entry.0 = wallet.or(entry.0);
        entry.1 = available.or(entry.1);
        if let Some(b) = rest::margin_balance(currency, entry.0, entry.1) {
            self.balances.insert(b.asset, b);
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// A BitMEX account as an [`Exchange`]. See the module doc.
#[derive(Debug)]
pub struct BitmexExchange {
    desk: AgentId,
    rest: Arc<Rest>,
    instruments: Vec<Instrument>,
    markets: Arc<Markets>,
    pairs: Vec<Pair>,
    interval: Interval,
    shared: Arc<Mutex<Shared>>,
    events: mpsc::UnboundedReceiver<VenueEvent>,
    feed: tokio::task::JoinHandle<()>,
}

impl Drop for BitmexExchange {
    fn drop(&mut self) {
        self.feed.abort();
    }
}

impl BitmexExchange {
    /// Loads the instruments (→ markets) and, with a key, the margin (→ balances) and
    /// positions; then opens the WebSocket, authenticates and subscribes, and returns once
    /// every subscription is acknowledged. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`ExchangeError::Rejected`] for a bad key or signature, an unknown pair or an interval
    /// BitMEX has no bins of; [`ExchangeError::Connectivity`] when BitMEX cannot be reached.
    pub async fn connect(cfg: BitmexConfig) -> Result<Self, ExchangeError> {
        let desk = AgentId::desk("bitmex", &cfg.account).map_err(|e| rejected(format!("desk name: {e}")))?;
        let bin = rest::bin_size(cfg.interval)?;
        let rest = Arc::new(Rest::new(&cfg)?);
        let instruments =
            rest::parse_instruments(&rest.call(Method::GET, "/instrument/active", "", None, false).await?)?;
        let markets = Arc::new(Markets::new(&instruments));
        let mut topics = Vec::new();
        for pair in &cfg.pairs {
            let symbol = &markets.instrument(pair)?.symbol;
            topics.extend([
                format!("trade:{symbol}"),
                format!("tradeBin{bin}:{symbol}"),
                format!("orderBookL2_25:{symbol}"),
            ]);
        }
        let shared = Arc::new(Mutex::new(Shared::default()));
        if cfg.credential.is_some() {
            let margin = rest.call(Method::GET, "/user/margin", "currency=all", None, true).await?;
            let balances = rest::parse_margins(&margin)?;
            let positions = rest::parse_position_rows(&rest.call(Method::GET, "/position", "", None, true).await?)?;
            let mut s = lock(&shared);
            for b in balances {
                s.balances.insert(b.asset, b);
            }
            s.positions = positions.into_iter().map(|p| (p.symbol.clone(), p)).collect();
            drop(s);
            topics.extend(["execution", "order", "position", "margin"].map(String::from));
        }
        let (tx, events) = mpsc::unbounded_channel();
        let (ready_tx, ready) = oneshot::channel();
        let feed = Feed {
            url: cfg.ws_url.clone(),
            timeout: cfg.timeout,
            credential: cfg.credential.clone(),
            topics,
            markets: markets.clone(),
            interval: cfg.interval,
            shared: shared.clone(),
            tx,
            raw: cfg.raw.clone(),
            rest: rest.clone(),
        };
        let feed = tokio::spawn(feed.run(ready_tx));
        let exchange = BitmexExchange {
            desk,
            rest,
            instruments,
            markets,
            pairs: cfg.pairs.clone(),
            interval: cfg.interval,
            shared,
            events,
            feed,
        };
        match ready.await {
            Ok(Ok(())) => Ok(exchange),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ExchangeError::Connectivity("BitMEX WebSocket: the feed stopped".into())),
        }
    }

    fn instrument(&self, pair: &Pair) -> Result<&Instrument, ExchangeError> {
        self.markets.instrument(pair)
    }

    fn remember(&self, client_id: &ClientOrderId) -> String {
        let cl = rest::cl_ord_id(client_id);
        lock(&self.shared).client_ids.insert(cl.clone(), client_id.clone());
        cl
    }

    /// Every instrument BitMEX lists as active, fresh from `/instrument/active`.
    ///
    /// # Errors
    /// When BitMEX cannot be reached or answers something else.
    pub async fn instruments(&self) -> Result<Vec<Instrument>, ExchangeError> {
        rest::parse_instruments(&self.rest.call(Method::GET, "/instrument/active", "", None, false).await?)
    }

    /// The instruments loaded at connect.
    pub fn loaded_instruments(&self) -> &[Instrument] {
        &self.instruments
    }

    /// Up to `count` (≤ 1000) closed candles of `pair` from `/trade/bucketed`, oldest first,
    /// starting at `start` (ms; the latest ones when `None`). At the stream's interval, the
    /// stream then reports only later bins.
    ///
    /// # Errors
    /// An unknown pair or interval, or BitMEX's error.
    pub async fn trade_bucketed(
        &self,
        pair: &Pair,
        interval: Interval,
        start: Option<i64>,
        count: u32,
    ) -> Result<Vec<Candle>, ExchangeError> {
        let candles = buckets(&self.rest, &self.instrument(pair)?.symbol, *pair, interval, start, count).await?;
        // A desk that loaded history first must not get its last bin again from the stream.
        if let Some(last) = candles.last().filter(|_| interval == self.interval) {
            let mut s = lock(&self.shared);
            let known = s.last_bin.entry(*pair).or_insert(i64::MIN);
            *known = (*known).max(last.close_time());
        }
        Ok(candles)
    }

    /// The account's open positions (quantity in `orderQty` units; see [`rest`]).
    ///
    /// # Errors
    /// Without a key, or BitMEX's error.
    pub async fn positions(&self) -> Result<Vec<Position>, ExchangeError> {
        let text = self.rest.call(Method::GET, "/position", "", None, true).await?;
        rest::parse_positions(&text, &self.markets)
    }

    /// The positions as last known (loaded at connect, then the `position` table), without a
    /// call.
    pub fn positions_now(&self) -> Vec<Position> {
        lock(&self.shared).positions.values().filter_map(|p| p.position(&self.markets)).collect()
    }

    /// The order with this client id, if BitMEX has it.
    ///
    /// # Errors
    /// Without a key, or BitMEX's error.
    pub async fn order(&self, client_id: &ClientOrderId) -> Result<Option<OrderState>, ExchangeError> {
        Ok(self.rest.find(&rest::cl_ord_id(client_id)).await?.map(|(o, _)| o))
    }

    /// The executions of the order sent as `client_id` (`GET /execution/tradeHistory`), oldest
    /// first.
    ///
    /// # Errors
    /// Without a key, or BitMEX's error.
    pub async fn executions(&self, client_id: &ClientOrderId) -> Result<Vec<Execution>, ExchangeError> {
        let filter = rest::cl_ord_id_json(&rest::cl_ord_id(client_id));
        let query = format!("filter={}&count=500&reverse=false", rest::encode(&filter));
        let text = self.rest.call(Method::GET, "/execution/tradeHistory", &query, None, true).await?;
        serde_json::from_str(&text).map_err(|e| rejected(format!("BitMEX trade history: {e}")))
    }

    /// The fills of order `o` (sent as `id`) not in `recorded`, from BitMEX's trade history.
    ///
    /// # Errors
    /// Trades that do not add up to what the order filled, or BitMEX's errors.
    async fn unrecorded_fills(
        &self,
        id: &ClientOrderId,
        o: &OrderState,
        recorded: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<VenueEvent>, ExchangeError> {
        if o.filled.is_zero() {
            return Ok(Vec::new());
        }
        let trades: Vec<Execution> =
            self.executions(id).await?.into_iter().filter(|x| x.exec_type == "Trade").collect();
        let listed: Decimal = trades.iter().filter_map(|x| x.last_qty.0).sum();
        if listed != o.filled.value() {
            return Err(crate::unrecorded_fill("BitMEX", id, &o.venue_order_id, &o.filled.to_string()));
        }
        let mut out = Vec::new();
        for x in trades.iter().filter(|x| !recorded.contains(&x.exec_id)) {
            if let Some(ExecutionReport::Fill(fill)) = x.report(&self.markets, |_| Some(id.clone()))? {
                let time = x.time().unwrap_or_else(now_ms);
                let event = if fill.remaining.is_zero() {
                    Event::OrderFilled(Box::new(fill))
                } else {
                    Event::OrderPartiallyFilled(Box::new(fill))
                };
                out.push(VenueEvent { time, event });
            }
        }
        Ok(out)
    }

    /// Changes an open order's quantity and/or limit price (`PUT /order`).
    ///
    /// # Errors
    /// [`ExchangeError::UnknownOrder`] when BitMEX has no such order; its error otherwise.
    pub async fn amend(
        &self,
        client_id: &ClientOrderId,
        qty: Option<Qty>,
        price: Option<Price>,
    ) -> Result<OrderState, ExchangeError> {
        let cl = self.remember(client_id);
        let body = rest::amend_body(&cl, qty, price);
        let text =
            self.rest.call(Method::PUT, "/order", "", Some(&body), true).await.map_err(|e| not_found(e, client_id))?;
        rest::parse_orders(&text)?.pop().ok_or_else(|| ExchangeError::UnknownOrder(client_id.clone()))
    }

    /// Cancels every open order, or those of `pair` (`DELETE /order/all`); returns them.
    ///
    /// # Errors
    /// Without a key, or BitMEX's error.
    pub async fn cancel_all(&self, pair: Option<&Pair>) -> Result<Vec<OrderState>, ExchangeError> {
        let body = match pair {
            Some(p) => format!(r#"{{"symbol":"{}"}}"#, self.instrument(p)?.symbol),
            None => "{}".to_owned(),
        };
        let text = self.rest.call(Method::DELETE, "/order/all", "", Some(&body), true).await?;
        rest::parse_orders(&text)
    }

    /// Best bid and ask of `pair`'s book as the socket keeps it.
    pub fn quote(&self, pair: &Pair) -> Option<Quote> {
        let symbol = &self.markets.by_pair.get(pair)?.symbol;
        let s = lock(&self.shared);
        let (bid, ask) = s.books.get(symbol)?.best();
        let (bid, ask) = (bid?, ask?);
        Some(Quote {
            pair: *pair,
            bid: Price::try_from(bid.0).ok()?,
            bid_qty: Qty::new(bid.1),
            ask: Price::try_from(ask.0).ok()?,
            ask_qty: Qty::new(ask.1),
        })
    }

    /// Levels in `pair`'s book.
    pub fn book_levels(&self, pair: &Pair) -> usize {
        let Some(i) = self.markets.by_pair.get(pair) else { return 0 };
        lock(&self.shared).books.get(&i.symbol).map_or(0, Book::len)
    }

    /// How many WebSocket sessions have authenticated and subscribed (1 + reconnects).
    pub fn ws_sessions(&self) -> u64 {
        lock(&self.shared).sessions
    }
}

/// A 404 from an order route names the order.
fn not_found(e: ExchangeError, client_id: &ClientOrderId) -> ExchangeError {
    match &e {
        ExchangeError::Rejected { reason }
            if reason.contains("Not Found") || reason.contains("Invalid origClOrdID") =>
        {
            ExchangeError::UnknownOrder(client_id.clone())
        }
        _ => e,
    }
}

impl Exchange for BitmexExchange {
    fn desk(&self) -> AgentId {
        self.desk
    }

    async fn capabilities(&mut self) -> Result<Capabilities, ExchangeError> {
        use crypy_core::order::OrderType;
        // The fees of the first watched pair (or of any market): BitMEX's are per instrument.
        let fees = self
            .pairs
            .first()
            .and_then(|p| self.markets.by_pair.get(p))
            .or_else(|| self.markets.by_pair.values().next())
            .map_or((Decimal::ZERO, Decimal::ZERO), |i| (i.maker_fee, i.taker_fee));
        Ok(Capabilities {
            order_types: vec![OrderType::Market, OrderType::Limit, OrderType::StopLoss, OrderType::TakeProfit],
            maker_fee: fees.0,
            taker_fee: fees.1,
            margin: true,
            websocket: true,
            client_order_ids: true,
            rate_limit_per_s: Some(10),
        })
    }

    async fn markets(&mut self) -> Result<Vec<Market>, ExchangeError> {
        Ok(self.markets.list())
    }

    async fn balances(&mut self) -> Result<Vec<Balance>, ExchangeError> {
        let text = self.rest.call(Method::GET, "/user/margin", "currency=all", None, true).await?;
        let balances = rest::parse_margins(&text)?;
        let mut s = lock(&self.shared);
        for b in &balances {
            s.balances.insert(b.asset, b.clone());
        }
        Ok(balances)
    }

    fn now(&self) -> i64 {
        now_ms()
    }

    fn balances_now(&self) -> Vec<Balance> {
        lock(&self.shared).balances.values().cloned().collect()
    }

    async fn next_event(&mut self) -> Result<Option<VenueEvent>, ExchangeError> {
        match self.events.recv().await {
            Some(e) => Ok(Some(e)),
            None => Err(ExchangeError::Connectivity("BitMEX WebSocket: the feed stopped".into())),
        }
    }

    async fn place(&mut self, order: &OrderRequest) -> Result<OrderAck, ExchangeError> {
        if self.rest.credential.is_none() {
            return Err(no_key());
        }
        let instrument = self.instrument(&order.pair)?;
        rest::check_order(order, instrument)?;
        let body = rest::order_body(order, &instrument.symbol);
        let cl = self.remember(&order.client_id);
        let what = format!("POST {}/order", self.rest.base_path);
        let ack = |(o, time): (OrderState, i64)| OrderAck { venue_order_id: o.venue_order_id, time };
        let mut last = None;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                // The last attempt may have placed it: never send it twice.
                if let Some(found) = self.rest.find(&cl).await? {
                    return Ok(ack(found));
                }
            }
            match self.rest.once(&Method::POST, "/order", "", Some(&body), true).await {
                Ok(text) => {
                    let mut orders = with_times(&text)?;
                    return orders.pop().map(ack).ok_or_else(|| rejected(format!("{what}: no order in the answer")));
                }
                Err(Failure::Status { status: 400, body: ref b, .. }) if b.contains("Duplicate clOrdID") => {
                    return self.rest.find(&cl).await?.map(ack).ok_or_else(|| {
                        rejected(format!("{what}: clOrdID {cl} was used before and the order is gone"))
                    });
                }
                Err(f) if f.retryable() => {
                    let wait = f.wait(attempt);
                    let error = f.error(&what);
                    if wait > MAX_WAIT {
                        return Err(error);
                    }
                    last = Some(error);
                    tokio::time::sleep(wait).await;
                }
                Err(f) => return Err(f.error(&what)),
            }
        }
        if let Some(found) = self.rest.find(&cl).await? {
            return Ok(ack(found));
        }
        Err(last.unwrap_or(ExchangeError::Connectivity(what)))
    }

    async fn cancel(&mut self, client_id: &ClientOrderId) -> Result<(), ExchangeError> {
        let cl = self.remember(client_id);
        let text = self
            .rest
            .call(Method::DELETE, "/order", "", Some(&rest::cl_ord_id_json(&cl)), true)
            .await
            .map_err(|e| not_found(e, client_id))?;
        match rest::parse_orders(&text)?.pop() {
            Some(o) if o.status == OrderStatus::Canceled => Ok(()),
            _ => Err(ExchangeError::UnknownOrder(client_id.clone())),
        }
    }

    async fn lookup(&mut self, client_id: &ClientOrderId) -> Result<Option<OrderAck>, ExchangeError> {
        let now = Exchange::now(self);
        Ok(self.order(client_id).await?.map(|o| OrderAck { venue_order_id: o.venue_order_id, time: now }))
    }

    async fn open_orders(&mut self) -> Result<Vec<ClientOrderId>, ExchangeError> {
        let query = format!("filter={}&count=500&reverse=true", rest::encode(r#"{"open":true}"#));
        let text = self.rest.call(Method::GET, "/order", &query, None, true).await?;
        let s = lock(&self.shared);
        Ok(rest::parse_orders(&text)?
            .into_iter()
            .filter(|o| matches!(o.status, OrderStatus::New | OrderStatus::PartiallyFilled))
            .filter_map(|o| {
                let cl = o.client_id.map(|c| c.as_str().to_owned()).unwrap_or(o.venue_order_id);
                s.client_id(&cl)
            })
            .collect())
    }

    async fn reconcile(&mut self, unfinished: &[Unfinished]) -> Result<Vec<VenueEvent>, ExchangeError> {
        let mut out = Vec::new();
        for u in unfinished {
            let id = &u.client_id;
            let Some(o) = self.order(id).await? else {
                out.push(crate::canceled_now(id, now_ms(), "unknown to BitMEX: the request never arrived".into()));
                continue;
            };
            out.extend(self.unrecorded_fills(id, &o, &u.recorded_fills).await?);
            let closing = if matches!(o.status, OrderStatus::New | OrderStatus::PartiallyFilled) {
                self.cancel(id).await?;
                format!("left open by an earlier run; canceled at restart ({})", o.venue_order_id)
            } else if !o.filled.is_zero() && o.remaining.is_zero() {
                // Its last fill, just reported, ended it.
                continue;
            } else {
                format!("ended at BitMEX as {:?} ({})", o.status, o.venue_order_id)
            };
            out.push(crate::canceled_now(id, now_ms(), closing));
        }
        Ok(out)
    }
}

// --- the WebSocket -------------------------------------------------------------------------

/// The socket's task: connects, reconnects, and reports.
struct Feed {
    url: String,
    timeout: Duration,
    credential: Option<BitmexCredential>,
    topics: Vec<String>,
    markets: Arc<Markets>,
    interval: Interval,
    shared: Arc<Mutex<Shared>>,
    tx: mpsc::UnboundedSender<VenueEvent>,
    raw: Option<RawTap>,
    /// For the bins missed while the socket was down.
    rest: Arc<Rest>,
}

#[derive(Deserialize)]
struct WsMessage<'a> {
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    subscribe: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    status: Option<u16>,
}

type Ready = Option<oneshot::Sender<Result<(), ExchangeError>>>;

impl Feed {
    async fn run(self, ready: oneshot::Sender<Result<(), ExchangeError>>) {
        let mut ready: Ready = Some(ready);
        let mut failures = 0u32;
        loop {
            let sessions = lock(&self.shared).sessions;
            let result = self.session(&mut ready).await;
            // A book without its socket goes stale: none until the next partial.
            lock(&self.shared).books.clear();
            if self.tx.is_closed() {
                return;
            }
            if lock(&self.shared).sessions > sessions {
                failures = 0;
            } else {
                failures += 1;
            }
            if let Err(e) = result {
                // At connect, a refusal (bad key) or a venue that stays unreachable is the
                // caller's error; later, the socket just reconnects.
                if ready.is_some() && (!e.is_retryable() || failures >= 3) {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(e));
                    }
                    return;
                }
            }
            let backoff = Duration::from_millis(100u64 << failures.min(8)).min(Duration::from_secs(30));
            tokio::time::sleep(backoff).await;
        }
    }

    async fn session(&self, ready: &mut Ready) -> Result<(), ExchangeError> {
        let mut ws = net::ws_connect(&self.url, self.timeout).await?;
        let closed = |what: String| ExchangeError::Connectivity(format!("BitMEX WebSocket: {what}"));
        let mut authed = true;
        if let Some(c) = &self.credential {
            authed = false;
            let expires = now_secs() + EXPIRY_SECS;
            let auth =
                serde_json::json!({"op": "authKeyExpires", "args": [c.api_key(), expires, c.sign_websocket(expires)]});
            ws.send(Message::text(auth.to_string())).await.map_err(|e| closed(e.to_string()))?;
        }
        let mut pending: HashSet<String> = self.topics.iter().cloned().collect();
        if !self.topics.is_empty() {
            let subscribe = serde_json::json!({"op": "subscribe", "args": self.topics});
            ws.send(Message::text(subscribe.to_string())).await.map_err(|e| closed(e.to_string()))?;
        }
        // A first session's execution partial is history the desk already knows from before.
        let first = ready.is_some();
        let mut counted = false;
        let mut pinged = false;
        loop {
            if authed && pending.is_empty() && !counted {
                counted = true;
                lock(&self.shared).sessions += 1;
                if let Some(r) = ready.take() {
                    let _ = r.send(Ok(()));
                }
            }
            let next = tokio::time::timeout(PING_AFTER, ws.next()).await;
            let text = match next {
                Err(_) if pinged => return Err(closed("no answer to a ping".into())),
                Err(_) => {
                    pinged = true;
                    ws.send(Message::text("ping")).await.map_err(|e| closed(e.to_string()))?;
                    continue;
                }
                Ok(None) => return Err(closed("closed".into())),
                Ok(Some(Err(e))) => return Err(closed(e.to_string())),
                Ok(Some(Ok(Message::Text(t)))) => t,
                Ok(Some(Ok(Message::Close(_)))) => return Err(closed("closed by BitMEX".into())),
                Ok(Some(Ok(_))) => {
                    pinged = false;
                    continue;
                }
            };
            pinged = false;
            let text = text.as_str();
            if text == "pong" {
                continue;
            }
            // The answer to authKeyExpires echoes the key and signature: never recorded.
            let secret = text.contains("authKeyExpires");
            let Ok(msg) = serde_json::from_str::<WsMessage>(text) else { continue };
            if !secret {
                let channel =
                    msg.table.as_deref().unwrap_or(if msg.subscribe.is_some() { "subscribe" } else { "info" });
                tap(&self.raw, format!("ws:{channel}"), text);
            }
            if let Some(error) = msg.error {
                let status = msg.status.unwrap_or(400);
                let reason = format!("BitMEX WebSocket: {status} {error}");
                return Err(if status == 429 || status >= 500 {
                    ExchangeError::Connectivity(reason)
                } else {
                    rejected(reason)
                });
            }
            if msg.success == Some(true) {
                match msg.subscribe {
                    Some(topic) => {
                        pending.remove(&topic);
                    }
                    None if secret => authed = true,
                    None => {}
                }
                continue;
            }
            if let (Some(table), Some(action), Some(data)) = (msg.table, msg.action, msg.data) {
                if !first && action == "partial" && table.starts_with("tradeBin") {
                    self.fill_gap(data.get()).await;
                }
                self.table(&table, &action, data.get(), first)?;
            }
        }
    }

    /// Reports the bins that closed while the socket was down (a reconnect's partial holds
    /// only the last), from `/trade/bucketed`, before the partial's own. When BitMEX cannot
    /// say, the gap stays: the next bins still come.
    async fn fill_gap(&self, data: &str) {
        let Ok(latest) = rest::bin_rows(data, &self.markets, self.interval) else { return };
        let step = self.interval.millis();
        for candle in latest {
            let Some(last) = lock(&self.shared).last_bin.get(&candle.pair).copied() else { continue };
            let missing = (candle.close_time() - last) / step - 1;
            let Some(symbol) = self.markets.by_pair.get(&candle.pair).map(|i| i.symbol.clone()) else { continue };
            if missing <= 0 {
                continue;
            }
            let count = u32::try_from(missing.min(1000)).unwrap_or(1000);
            let Ok(found) = buckets(&self.rest, &symbol, candle.pair, self.interval, Some(last), count).await else {
                continue;
            };
            let mut s = lock(&self.shared);
            for c in found {
                let close = c.close_time();
                if close > s.last_bin.get(&c.pair).copied().unwrap_or(i64::MIN) && close < candle.close_time() {
                    s.last_bin.insert(c.pair, close);
                    let _ = self.tx.send(VenueEvent { time: close, event: Event::Candle(c) });
                }
            }
        }
    }

    /// Applies one table message.
    fn table(&self, table: &str, action: &str, data: &str, first: bool) -> Result<(), ExchangeError> {
        let mut s = lock(&self.shared);
        if table.starts_with("orderBookL2") {
            rest::apply_book(&mut s.books, action, data)?;
        } else if table.starts_with("tradeBin") {
            for candle in rest::bin_rows(data, &self.markets, self.interval)? {
                let close = candle.close_time();
                if s.last_bin.get(&candle.pair).is_none_or(|&last| close > last) {
                    s.last_bin.insert(candle.pair, close);
                    let _ = self.tx.send(VenueEvent { time: close, event: Event::Candle(candle) });
                }
            }
        } else if table == "execution" {
            let rows: Vec<Execution> =
                serde_json::from_str(data).map_err(|e| rejected(format!("BitMEX execution rows: {e}")))?;
            for x in rows {
                if !s.first_sight(&x.exec_id) || (first && action == "partial") {
                    continue;
                }
                let report = x.report(&self.markets, |cl| s.client_id(cl))?;
                let time = x.time().unwrap_or_else(now_ms);
                let event = match report {
                    Some(ExecutionReport::Fill(fill)) => {
                        if let Some(b) = s.balances.get_mut(&fill.fee_asset) {
                            b.free -= fill.fee;
                        }
                        if fill.remaining.is_zero() {
                            Event::OrderFilled(Box::new(fill))
                        } else {
                            Event::OrderPartiallyFilled(Box::new(fill))
                        }
                    }
                    Some(ExecutionReport::Canceled { client_id, reason }) => {
                        Event::OrderCanceled(crypy_core::event::OrderCanceled { client_id, reason })
                    }
                    None => continue,
                };
                let _ = self.tx.send(VenueEvent { time, event });
            }
        } else if table == "position" {
            let rows = rest::parse_position_rows(data)?;
            if action == "partial" {
                s.positions.clear();
            }
            for row in rows {
                s.positions
                    .entry(row.symbol.clone())
                    .or_insert_with(|| rest::PositionRow { symbol: row.symbol.clone(), ..Default::default() })
                    .merge(&row);
            }
        } else if table == "margin" {
            for (currency, wallet, available) in rest::margin_rows(data) {
                s.set_margin(&currency, wallet, available);
            }
        }
        Ok(())
    }
}
