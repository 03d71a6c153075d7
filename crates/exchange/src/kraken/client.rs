//! [`KrakenExchange`]: a Kraken spot account behind the [`Exchange`] trait.
//!
//! Owns the order path: `cl_ord_id`s derived from crypy's client order ids, prices and
//! quantities at the market's precision, and retries that never double an order (after any
//! answer that leaves it unknown whether Kraken placed it, the order is looked up by its
//! `cl_ord_id` before it is sent again). Market data and executions come from the
//! WebSocket tasks of [`super::ws`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crypy_core::{
    AgentId, Balance, Candle, Capabilities, ClientOrderId, Event, Fill, Interval, Market, Money, OrderKind,
    OrderRequest, Pair, Qty, Side,
};
use rust_decimal::{Decimal, RoundingStrategy};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

use crate::kraken::http::{self, KrakenAddOrder, KrakenAssetPair};
use crate::kraken::limits::Tier;
use crate::kraken::rest::{self, now_ms, KrakenDepth, KrakenOrder, KrakenTicker, KrakenTrade, Rest};
use crate::kraken::ws::{self, BookStatus, PlacedOrder, PrivateStream, PublicStream, SharedState};
use crate::kraken::KrakenCredential;
use crate::{Exchange, ExchangeError, OrderAck, RawTap, Unfinished, VenueEvent};

/// How to reach a Kraken account.
#[derive(Clone, Debug)]
pub struct KrakenConfig {
    /// The desk id is `kraken:<account>`.
    pub account: String,
    pub rest_url: String,
    /// Public WebSocket v2.
    pub ws_url: String,
    /// Private WebSocket v2.
    pub ws_auth_url: String,
    /// `None`: public data only; private calls fail with [`ExchangeError::Rejected`].
    pub credential: Option<KrakenCredential>,
    /// The persistent nonce file; `None` uses a counter from the clock.
    pub nonce_path: Option<PathBuf>,
    /// Pairs to stream (crypy names, `XBT/EUR`).
    pub pairs: Vec<Pair>,
    /// Candle interval of the ohlc channel (a Kraken interval: 1, 5, 15, 30, 60, 240… minutes).
    pub interval: Interval,
    /// Per request.
    pub timeout: Duration,
    pub tier: Tier,
    /// When recording: every message received from Kraken, never a token.
    pub raw: Option<RawTap>,
}

impl KrakenConfig {
    /// Kraken's production endpoints, no key, no pairs, 1-minute candles, 10 s timeouts.
    pub fn new(account: impl Into<String>) -> Self {
        KrakenConfig {
            account: account.into(),
            rest_url: "https://api.kraken.com".into(),
            ws_url: "wss://ws.kraken.com/v2".into(),
            ws_auth_url: "wss://ws-auth.kraken.com/v2".into(),
            credential: None,
            nonce_path: None,
            pairs: Vec::new(),
            interval: Interval::from_secs(60).expect("one minute is an interval"),
            timeout: Duration::from_secs(10),
            tier: Tier::Starter,
            raw: None,
        }
    }
}

/// Kraken's candle intervals, in minutes.
const OHLC_MINUTES: [u32; 9] = [1, 5, 15, 30, 60, 240, 1440, 10080, 21600];

/// Form fields of a request.
type Params = Vec<(&'static str, String)>;

/// How many times an order request is sent at most (rate limits, timeouts, 5xx).
const MAX_ATTEMPTS: u32 = 5;

/// Kraken's `cl_ord_id` for a client order id: the id itself when Kraken takes it as free
/// text (at most 18 letters, digits, `-` or `_`), else a UUID made from its SHA-256, so
/// that the same id always maps to the same `cl_ord_id` (a retry after a restart too).
pub fn cl_ord_id(id: &ClientOrderId) -> String {
    let s = id.as_str();
    if s.len() <= 18 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return s.to_owned();
    }
    let digest = Sha256::digest(s.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    // Version 4 and RFC 4122 variant bits, so that it is a well-formed UUID.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// A decimal with exactly `dp` places, as Kraken wants it.
fn fixed(value: Decimal, dp: u32) -> String {
    let mut v = value;
    v.rescale(dp);
    v.to_string()
}

/// A Kraken spot account; see the module doc.
#[derive(Debug)]
pub struct KrakenExchange {
    desk: AgentId,
    rest: Arc<Rest>,
    shared: SharedState,
    events: UnboundedReceiver<VenueEvent>,
    // Kept so that `next_event` waits rather than ending when no stream runs.
    _sender: UnboundedSender<VenueEvent>,
    markets: Vec<Market>,
    symbols: HashMap<Pair, String>,
    pairs: Vec<Pair>,
    /// (taker, maker) rates from TradeVolume, once asked.
    fees: Option<(Decimal, Decimal)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for KrakenExchange {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn rejected(reason: impl Into<String>) -> ExchangeError {
    ExchangeError::Rejected { reason: reason.into() }
}

impl KrakenExchange {
    /// Loads the markets (and with a key the balances), then starts the WebSocket streams.
    /// Must run inside a tokio runtime (the streams are spawned tasks).
    ///
    /// # Errors
    /// A bad account name, unknown pairs, Kraken's errors, or Kraken out of reach.
    pub async fn connect(cfg: KrakenConfig) -> Result<Self, ExchangeError> {
        let desk = AgentId::desk("kraken", &cfg.account).map_err(|e| rejected(format!("account name: {e}")))?;
        let minutes = cfg.interval.secs() / 60;
        if !cfg.interval.secs().is_multiple_of(60) || !OHLC_MINUTES.contains(&minutes) {
            return Err(rejected(format!(
                "Kraken has no {} candles (it has 1, 5, 15, 30, 60, 240, 1440, 10080 and 21600 minutes)",
                cfg.interval
            )));
        }
        let rest = Arc::new(Rest::new(
            &cfg.rest_url,
            cfg.credential.clone(),
            cfg.nonce_path.as_deref(),
            cfg.timeout,
            cfg.tier,
            cfg.raw.clone(),
        )?);
        let pairs: std::collections::BTreeMap<String, KrakenAssetPair> = rest.public_result("AssetPairs", &[]).await?;
        let markets = http::parse_markets(&pairs);
        let symbols: HashMap<Pair, String> = markets.iter().map(|m| (m.pair, m.venue_symbol.clone())).collect();
        if let Some(unknown) = cfg.pairs.iter().find(|p| !symbols.contains_key(p)) {
            return Err(rejected(format!("Kraken has no pair {unknown}")));
        }
        let shared = SharedState::default();
        ws::lock(&shared).markets = markets.iter().map(|m| (m.pair, m.clone())).collect();
        let (sender, events) = tokio::sync::mpsc::unbounded_channel();
        let mut exchange = KrakenExchange {
            desk,
            rest: rest.clone(),
            shared: shared.clone(),
            events,
            _sender: sender.clone(),
            markets,
            symbols,
            pairs: cfg.pairs.clone(),
            fees: None,
            tasks: Vec::new(),
        };
        if rest.has_key() {
            exchange.balances().await?;
        }
        if !cfg.pairs.is_empty() {
            let public = PublicStream {
                url: cfg.ws_url.clone(),
                pairs: cfg.pairs.clone(),
                interval: cfg.interval,
                timeout: cfg.timeout,
                raw: cfg.raw.clone(),
            };
            exchange.tasks.push(tokio::spawn(ws::run_public(public, shared.clone(), sender.clone())));
        }
        if rest.has_key() {
            let private = PrivateStream { url: cfg.ws_auth_url.clone(), timeout: cfg.timeout, raw: cfg.raw.clone() };
            exchange.tasks.push(tokio::spawn(ws::run_private(private, rest, shared, sender)));
        }
        Ok(exchange)
    }

    fn market(&self, pair: &Pair) -> Result<&Market, ExchangeError> {
        self.markets.iter().find(|m| m.pair == *pair).ok_or_else(|| rejected(format!("Kraken has no pair {pair}")))
    }

    fn symbol(&self, pair: &Pair) -> Result<String, ExchangeError> {
        self.symbols.get(pair).cloned().ok_or_else(|| rejected(format!("Kraken has no pair {pair}")))
    }

    /// The AddOrder fields of an order, and its `cl_ord_id`.
    fn order_params(&self, order: &OrderRequest) -> Result<(Params, String), ExchangeError> {
        let market = self.market(&order.pair)?;
        let qty = order.qty.value().trunc_with_scale(market.qty_precision);
        if qty <= Decimal::ZERO || qty < market.min_qty.value() {
            return Err(rejected(format!(
                "{} {} at {} decimals is below Kraken's minimum {} for {}",
                order.qty, order.pair.base, market.qty_precision, market.min_qty, order.pair
            )));
        }
        let dp = market.price_precision;
        // Rounding never makes a limit worse than asked: buys round down, sells up.
        let limit = |p: Decimal| match order.side {
            Side::Buy => p.round_dp_with_strategy(dp, RoundingStrategy::ToZero),
            Side::Sell => p.round_dp_with_strategy(dp, RoundingStrategy::AwayFromZero),
        };
        let trigger = |p: Decimal| p.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
        let (ordertype, price) = match order.kind {
            OrderKind::Market => ("market", None),
            OrderKind::Limit { price } => ("limit", Some(limit(price.value()))),
            OrderKind::StopLoss { trigger: t } => ("stop-loss", Some(trigger(t.value()))),
            OrderKind::TakeProfit { trigger: t } => ("take-profit", Some(trigger(t.value()))),
        };
        let cl = cl_ord_id(&order.client_id);
        let mut params = vec![
            ("cl_ord_id", cl.clone()),
            ("ordertype", ordertype.to_owned()),
            ("pair", market.venue_symbol.clone()),
            ("type", order.side.as_str().to_owned()),
            ("volume", fixed(qty, market.qty_precision)),
        ];
        if let Some(p) = price {
            if p <= Decimal::ZERO {
                return Err(rejected(format!("price {p} rounds to nothing at {dp} decimals")));
            }
            params.push(("price", fixed(p, dp)));
        }
        Ok((params, cl))
    }

    /// The order Kraken has under `cl`, open or closed.
    ///
    /// # Errors
    /// Kraken's errors or Kraken out of reach.
    pub async fn find_order(&self, cl: &str) -> Result<Option<KrakenOrder>, ExchangeError> {
        let params = [("cl_ord_id", cl.to_owned()), ("trades", "true".to_owned())];
        let open = rest::parse_open_orders(&self.rest.private("OpenOrders", &params).await?)?;
        if let Some(o) = open.into_iter().find(|o| o.cl_ord_id.as_deref() == Some(cl)) {
            return Ok(Some(o));
        }
        let (closed, _) = rest::parse_closed_orders(&self.rest.private("ClosedOrders", &params).await?)?;
        Ok(closed.into_iter().rev().find(|o| o.cl_ord_id.as_deref() == Some(cl)))
    }

    fn client_id_of(&self, o: &KrakenOrder) -> ClientOrderId {
        let s = ws::lock(&self.shared);
        o.cl_ord_id
            .as_ref()
            .and_then(|c| s.placed.get(c).map(|p| p.client_id.clone()).or_else(|| c.parse().ok()))
            .or_else(|| o.txid.parse().ok())
            .unwrap_or_else(|| "kraken-unknown".parse().expect("a valid id"))
    }

    /// Cancels every open order; returns how many Kraken canceled.
    ///
    /// # Errors
    /// Kraken's errors or Kraken out of reach.
    pub async fn cancel_all(&mut self) -> Result<u64, ExchangeError> {
        #[derive(serde::Deserialize)]
        struct R {
            count: u64,
        }
        Ok(self.rest.private_result::<R>("CancelAll", &[]).await?.count)
    }

    /// The open orders, as Kraken describes them.
    ///
    /// # Errors
    /// Kraken's errors or Kraken out of reach.
    pub async fn open_orders_detailed(&mut self) -> Result<Vec<KrakenOrder>, ExchangeError> {
        rest::parse_open_orders(&self.rest.private("OpenOrders", &[]).await?)
    }

    /// The most recent closed orders (Kraken's first page of 50), oldest first.
    ///
    /// # Errors
    /// Kraken's errors or Kraken out of reach.
    pub async fn closed_orders(&mut self) -> Result<Vec<KrakenOrder>, ExchangeError> {
        Ok(rest::parse_closed_orders(&self.rest.private("ClosedOrders", &[]).await?)?.0)
    }

    /// Orders by Kraken txid.
    ///
    /// # Errors
    /// Kraken's errors or Kraken out of reach.
    pub async fn query_orders(&mut self, txids: &[String]) -> Result<Vec<KrakenOrder>, ExchangeError> {
        rest::parse_query_orders(&self.rest.private("QueryOrders", &[("txid", txids.join(","))]).await?)
    }

    /// Trades by id (Kraken answers at most 20 per call), oldest first.
    ///
    /// # Errors
    /// Kraken's errors or Kraken out of reach.
    pub async fn query_trades(&self, ids: &[String]) -> Result<Vec<KrakenTrade>, ExchangeError> {
        let mut trades = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(20) {
            let body = self.rest.private("QueryTrades", &[("txid", chunk.join(","))]).await?;
            trades.extend(rest::parse_query_trades(&body)?);
        }
        trades.sort_by(|a, b| a.time_ms.cmp(&b.time_ms).then_with(|| a.trade_id.cmp(&b.trade_id)));
        Ok(trades)
    }

    /// The fills of order `o` (sent as `id`) that are not in `recorded`, from its trades, each
    /// with what was left of the order after it.
    ///
    /// # Errors
    /// An order filled without trades listed, trades of an unknown pair, or Kraken's errors.
    async fn unrecorded_fills(
        &self,
        id: &ClientOrderId,
        o: &KrakenOrder,
        recorded: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<VenueEvent>, ExchangeError> {
        if o.volume_executed.is_zero() || o.trades.iter().all(|t| recorded.contains(t)) {
            return Ok(Vec::new());
        }
        let trades = self.query_trades(&o.trades).await?;
        let listed: Decimal = trades.iter().map(|t| t.volume.value()).sum();
        if trades.len() != o.trades.len() || listed != o.volume_executed.value() {
            return Err(crate::unrecorded_fill("Kraken", id, &o.txid, &o.volume_executed.to_string()));
        }
        let mut filled = Decimal::ZERO;
        let mut out = Vec::new();
        for t in trades {
            filled += t.volume.value();
            if recorded.contains(&t.trade_id) {
                continue;
            }
            let market = self
                .markets
                .iter()
                .find(|m| m.venue_symbol == t.pair || format!("{}{}", m.pair.base, m.pair.quote) == t.pair)
                .ok_or_else(|| {
                    rejected(format!("trade {} of order {}: unknown pair {}", t.trade_id, o.txid, t.pair))
                })?;
            let remaining = Qty::new((o.volume.value() - filled).max(Decimal::ZERO));
            let fill = Fill {
                client_id: id.clone(),
                venue_order_id: Some(o.txid.clone()),
                fill_id: t.trade_id,
                pair: market.pair,
                side: t.side,
                qty: t.volume,
                price: t.price,
                fee: Money::new(t.fee),
                fee_asset: market.pair.quote,
                remaining,
            };
            let event = if remaining.is_zero() {
                Event::OrderFilled(Box::new(fill))
            } else {
                Event::OrderPartiallyFilled(Box::new(fill))
            };
            out.push(VenueEvent { time: t.time_ms, event });
        }
        Ok(out)
    }

    /// Our most recent trades (Kraken's first page of 50), oldest first.
    ///
    /// # Errors
    /// Kraken's errors or Kraken out of reach.
    pub async fn trades_history(&mut self) -> Result<Vec<KrakenTrade>, ExchangeError> {
        Ok(rest::parse_trades_history(&self.rest.private("TradesHistory", &[]).await?)?.0)
    }

    /// # Errors
    /// An unknown pair, Kraken's errors or Kraken out of reach.
    pub async fn ticker(&mut self, pair: &Pair) -> Result<KrakenTicker, ExchangeError> {
        let symbol = self.symbol(pair)?;
        let all = rest::parse_ticker(&self.rest.public("Ticker", &[("pair", symbol.clone())]).await?)?;
        let n = all.len();
        all.into_iter()
            .find(|t| t.symbol == symbol || n == 1)
            .ok_or_else(|| rejected(format!("Kraken's Ticker has no {symbol}")))
    }

    /// Committed candles (up to 720, the open one left out).
    ///
    /// # Errors
    /// An unknown pair, Kraken's errors or Kraken out of reach.
    pub async fn ohlc(&mut self, pair: &Pair, interval: Interval) -> Result<Vec<Candle>, ExchangeError> {
        let symbol = self.symbol(pair)?;
        let minutes = (interval.secs() / 60).to_string();
        let result: serde_json::Value =
            self.rest.public_result("OHLC", &[("pair", symbol.clone()), ("interval", minutes)]).await?;
        let key = if result.get(&symbol).is_some() {
            symbol
        } else {
            result
                .as_object()
                .and_then(|o| o.keys().find(|k| k.as_str() != "last").cloned())
                .ok_or_else(|| rejected("OHLC without rows"))?
        };
        http::parse_ohlc(&result, &key, *pair, interval)
    }

    /// The order book to `count` levels a side.
    ///
    /// # Errors
    /// An unknown pair, Kraken's errors or Kraken out of reach.
    pub async fn depth(&mut self, pair: &Pair, count: u32) -> Result<KrakenDepth, ExchangeError> {
        let symbol = self.symbol(pair)?;
        let all = rest::parse_depth(
            &self.rest.public("Depth", &[("pair", symbol.clone()), ("count", count.to_string())]).await?,
        )?;
        let n = all.len();
        all.into_iter().find(|d| d.symbol == symbol || n == 1).ok_or_else(|| rejected(format!("no Depth for {symbol}")))
    }

    /// Asks Kraken to check an order without placing it; returns its description.
    ///
    /// # Errors
    /// What Kraken finds wrong with it, or Kraken out of reach.
    pub async fn validate_order(&mut self, order: &OrderRequest) -> Result<String, ExchangeError> {
        let (mut params, _) = self.order_params(order)?;
        params.push(("validate", "true".into()));
        Ok(self.rest.private_result::<KrakenAddOrder>("AddOrder", &params).await?.descr.order)
    }

    /// This account's fee rates (taker, maker) on `pair`, from TradeVolume (Kraken gives
    /// percentages: `0.2600` is 0.26 %).
    ///
    /// # Errors
    /// An unknown pair, no key, Kraken's errors or Kraken out of reach.
    pub async fn fee_rates(&mut self, pair: &Pair) -> Result<(Decimal, Decimal), ExchangeError> {
        #[derive(serde::Deserialize)]
        struct Fee {
            fee: rest::Dec,
        }
        #[derive(serde::Deserialize)]
        struct R {
            #[serde(default)]
            fees: HashMap<String, Fee>,
            #[serde(default)]
            fees_maker: HashMap<String, Fee>,
        }
        let symbol = self.symbol(pair)?;
        let r: R = self.rest.private_result("TradeVolume", &[("pair", symbol.clone())]).await?;
        let rate = |m: &HashMap<String, Fee>| m.get(&symbol).map(|f| f.fee.0 / Decimal::from(100));
        let taker = rate(&r.fees).ok_or_else(|| rejected(format!("TradeVolume without a fee for {symbol}")))?;
        Ok((taker, rate(&r.fees_maker).unwrap_or(taker)))
    }

    /// The state of a streamed pair's book.
    pub fn book_status(&self, pair: &Pair) -> Option<BookStatus> {
        ws::lock(&self.shared).book_status.get(pair).cloned()
    }

    /// Connections made so far: (public, private). More than one means a reconnection.
    pub fn connections(&self) -> (u64, u64) {
        let s = ws::lock(&self.shared);
        (s.public_connections, s.private_connections)
    }
}

fn ack_of(o: &KrakenOrder) -> OrderAck {
    OrderAck { venue_order_id: o.txid.clone(), time: o.open_time_ms }
}

impl Exchange for KrakenExchange {
    fn desk(&self) -> AgentId {
        self.desk
    }

    async fn capabilities(&mut self) -> Result<Capabilities, ExchangeError> {
        use crypy_core::order::OrderType;
        if self.fees.is_none() && self.rest.has_key() {
            if let Some(pair) = self.pairs.first().copied() {
                // Kraken's published base rates serve when the account's cannot be had.
                self.fees = self.fee_rates(&pair).await.ok();
            }
        }
        let (taker_fee, maker_fee) = self.fees.unwrap_or((Decimal::new(26, 4), Decimal::new(16, 4)));
        Ok(Capabilities {
            order_types: vec![OrderType::Market, OrderType::Limit, OrderType::StopLoss, OrderType::TakeProfit],
            maker_fee,
            taker_fee,
            margin: false,
            websocket: true,
            client_order_ids: true,
            // The REST counter decays by 0.33 to 1 call a second depending on the tier.
            rate_limit_per_s: Some(1),
        })
    }

    async fn markets(&mut self) -> Result<Vec<Market>, ExchangeError> {
        Ok(self.markets.clone())
    }

    async fn balances(&mut self) -> Result<Vec<Balance>, ExchangeError> {
        let result: std::collections::BTreeMap<String, String> = self.rest.private_result("Balance", &[]).await?;
        let balances = http::parse_balances(&result)?;
        ws::lock(&self.shared).balances = balances.iter().map(|b| (b.asset, b.clone())).collect();
        Ok(balances)
    }

    fn now(&self) -> i64 {
        now_ms()
    }

    fn balances_now(&self) -> Vec<Balance> {
        ws::lock(&self.shared).balances.values().cloned().collect()
    }

    async fn next_event(&mut self) -> Result<Option<VenueEvent>, ExchangeError> {
        Ok(self.events.recv().await)
    }

    async fn place(&mut self, order: &OrderRequest) -> Result<OrderAck, ExchangeError> {
        let (params, cl) = self.order_params(order)?;
        // Known before Kraken answers: a fill may beat the answer over the WebSocket.
        ws::lock(&self.shared).placed.insert(
            cl.clone(),
            PlacedOrder {
                client_id: order.client_id.clone(),
                pair: order.pair,
                side: order.side,
                qty: order.qty,
                filled: crypy_core::Qty::ZERO,
            },
        );
        let mut unsure = false;
        let mut last = None;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200u64 << attempt.min(5))).await;
            }
            if unsure {
                match self.find_order(&cl).await {
                    Ok(Some(o)) => return Ok(ack_of(&o)),
                    Ok(None) => {}
                    Err(e) if e.is_retryable() => {
                        last = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            match self.rest.private_result::<KrakenAddOrder>("AddOrder", &params).await {
                Ok(r) => {
                    let txid = r.txid.into_iter().next().ok_or_else(|| rejected("AddOrder answered without a txid"))?;
                    return Ok(OrderAck { venue_order_id: txid, time: now_ms() });
                }
                Err(e) if e.is_retryable() => {
                    unsure = true;
                    last = Some(e);
                }
                Err(ExchangeError::Rejected { reason }) if reason.to_ascii_lowercase().contains("duplicate") => {
                    if let Ok(Some(o)) = self.find_order(&cl).await {
                        return Ok(ack_of(&o));
                    }
                    return Err(ExchangeError::Rejected { reason });
                }
                Err(e) => {
                    ws::lock(&self.shared).placed.remove(&cl);
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ExchangeError::Connectivity("Kraken AddOrder: out of attempts".into())))
    }

    async fn cancel(&mut self, client_id: &ClientOrderId) -> Result<(), ExchangeError> {
        #[derive(serde::Deserialize)]
        struct R {
            count: u64,
        }
        let cl = cl_ord_id(client_id);
        match self.rest.private_result::<R>("CancelOrder", &[("cl_ord_id", cl)]).await {
            Ok(r) if r.count > 0 => Ok(()),
            Ok(_) => Err(ExchangeError::UnknownOrder(client_id.clone())),
            Err(ExchangeError::Rejected { reason }) if reason.contains("Unknown order") => {
                Err(ExchangeError::UnknownOrder(client_id.clone()))
            }
            Err(e) => Err(e),
        }
    }

    async fn lookup(&mut self, client_id: &ClientOrderId) -> Result<Option<OrderAck>, ExchangeError> {
        let now = Exchange::now(self);
        Ok(self.find_order(&cl_ord_id(client_id)).await?.map(|o| OrderAck { venue_order_id: o.txid, time: now }))
    }

    async fn open_orders(&mut self) -> Result<Vec<ClientOrderId>, ExchangeError> {
        let orders = self.open_orders_detailed().await?;
        Ok(orders.iter().map(|o| self.client_id_of(o)).collect())
    }

    async fn reconcile(&mut self, unfinished: &[Unfinished]) -> Result<Vec<VenueEvent>, ExchangeError> {
        let mut out = Vec::new();
        for u in unfinished {
            let id = &u.client_id;
            let Some(o) = self.find_order(&cl_ord_id(id)).await? else {
                out.push(crate::canceled_now(id, now_ms(), "unknown to Kraken: the request never arrived".into()));
                continue;
            };
            let fills = self.unrecorded_fills(id, &o, &u.recorded_fills).await?;
            let filled_completely = o.volume_executed >= o.volume;
            out.extend(fills);
            let closing = if o.status == "open" || o.status == "pending" {
                self.cancel(id).await?;
                format!("left open by an earlier run; canceled at restart ({})", o.txid)
            } else if filled_completely {
                // Its last fill, just reported, ended it.
                continue;
            } else {
                format!("ended at Kraken as {} ({})", o.status, o.txid)
            };
            out.push(crate::canceled_now(id, now_ms(), closing));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cl_ord_ids_are_stable_and_in_krakens_formats() {
        let short: ClientOrderId = "run1-12-0".parse().unwrap();
        assert_eq!(cl_ord_id(&short), "run1-12-0");
        let long: ClientOrderId = "a-very-long-client-order-id-0001".parse().unwrap();
        let u = cl_ord_id(&long);
        assert_eq!(u, cl_ord_id(&long));
        assert_eq!(u.len(), 36);
        assert_eq!(u.matches('-').count(), 4);
        assert_eq!(&u[14..15], "4");
        let odd: ClientOrderId = "x/y".parse().unwrap();
        assert_eq!(cl_ord_id(&odd).len(), 36, "characters Kraken may refuse go through the hash");
        assert_ne!(cl_ord_id(&odd), u);
    }

    #[test]
    fn fixed_decimals() {
        assert_eq!(fixed("1.5".parse().unwrap(), 8), "1.50000000");
        assert_eq!(fixed("37500".parse().unwrap(), 1), "37500.0");
    }
}
