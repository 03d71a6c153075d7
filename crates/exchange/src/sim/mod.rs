//! A deterministic exchange: the same configuration (with its seed) and the same candles give
//! the same acknowledgements, fills and balances, event for event.
//!
//! **Time** advances bar by bar through the candles, in close-time order (then pair). For each
//! bar, orders on its pair are matched first, at the bar's open, then the candle itself is
//! reported at its close time. An order placed at time `T` reaches the matching engine at
//! `T + latency + jitter` and takes part in every bar that closes after that (the bar-level
//! approximation: with a latency shorter than a bar, a market order placed at a bar's close
//! executes at the next bar's open).
//!
//! **Fill rules** (prices in the quote asset; `s` = slippage):
//!
//! | order                 | executes when             | at                              | fee   |
//! |-----------------------|---------------------------|---------------------------------|-------|
//! | market buy / sell     | the first bar it takes part in | `open × (1 + s)` / `open × (1 − s)` | taker |
//! | limit buy at `L`      | `low <= L`                | `min(open, L)`                  | maker |
//! | limit sell at `L`     | `high >= L`               | `max(open, L)`                  | maker |
//! | stop-loss sell at `T` | `low <= T`                | `min(open, T) × (1 − s)`        | taker |
//! | stop-loss buy at `T`  | `high >= T`               | `max(open, T) × (1 + s)`        | taker |
//! | take-profit sell at `T` | `high >= T`             | `max(open, T) × (1 − s)`        | taker |
//! | take-profit buy at `T`  | `low <= T`              | `min(open, T) × (1 + s)`        | taker |
//!
//! Execution prices are rounded to the market's price precision against the trader (buys up,
//! sells down). The fee is `qty × price × rate`, exact, charged in the quote asset. A buy that
//! costs more than the account holds at execution fills what it can afford (to the quantity
//! precision) and the rest is canceled with the reason. With `partial_fill_probability`, a
//! fill may take only `partial_fill_fraction` of the remaining quantity; the rest stays open.
//!
//! **Faults** on request (see `default.toml`): market data repeated or stale, and on the wire
//! dropped report streams, timeouts, 429s, 5xx, reordered reports and a skewed clock, each
//! from seeded draws of its own so that injecting them changes nothing else.
//!
//! **Refusals** at placement, as a venue would: unknown pair or order type, quantity or price
//! with more decimals than the market allows, below the minimum size or notional, not enough
//! free balance, a reused client order id, the rate limit, and seeded random rejections.

mod config;

use std::collections::{BTreeMap, HashMap, VecDeque};

use crypy_core::event::OrderCanceled;
use crypy_core::{
    AgentId, Asset, Balance, Candle, ClientOrderId, Event, Fill, Market, Money, OrderKind, OrderRequest, Pair, Price,
    Qty, Side,
};
use rust_decimal::{Decimal, RoundingStrategy};

pub use config::{ConfigError, MarketConfig, SimConfig, DEFAULT_TOML};

use crate::{Exchange, ExchangeError, OrderAck, VenueEvent};

/// SplitMix64: tiny, fast and fixed forever, so a seed means the same run in every crypy
/// version (a general-purpose RNG crate may change its algorithm between releases).
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Debug)]
struct OpenOrder {
    request: OrderRequest,
    venue_id: String,
    /// When it reaches the matching engine.
    arrival: i64,
    remaining: Qty,
    /// What is held for it: quote for buys, base for sells.
    reserved: Money,
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct Simulator {
    cfg: SimConfig,
    desk: AgentId,
    markets: BTreeMap<Pair, Market>,
    candles: Vec<Candle>,
    next_candle: usize,
    now: i64,
    rng: SplitMix64,
    free: BTreeMap<Asset, Money>,
    reserved: BTreeMap<Asset, Money>,
    /// Open orders by placement number: matched in the order they were placed.
    orders: BTreeMap<u64, OpenOrder>,
    /// Every order it accepted, by client id: ids are never reused, and a desk whose answer
    /// was lost can look its order up.
    accepted: HashMap<ClientOrderId, OrderAck>,
    placed: u64,
    fills: u64,
    /// Placement times within the last second, for the rate limit.
    recent: VecDeque<i64>,
    last_close: BTreeMap<Pair, Price>,
    queue: VecDeque<VenueEvent>,
    /// Draws for market-data faults only, so that injecting them leaves every other draw
    /// (latency, partial fills, rejections) as it was.
    data_rng: SplitMix64,
    /// The last bar reported per pair, for stale-data faults.
    previous_bar: BTreeMap<Pair, Candle>,
    /// Draws for wire faults only (dropped streams, timeouts, 429s, 5xx, reordering, skew).
    wire_rng: SplitMix64,
}

impl Simulator {
    /// A simulator over `candles` (any order; they are sorted by close time, then pair).
    /// Candles of pairs the configuration has no market for are refused.
    ///
    /// # Errors
    /// A candle for an unknown pair.
    pub fn new(cfg: SimConfig, mut candles: Vec<Candle>) -> Result<Self, ConfigError> {
        let markets = cfg.markets();
        if let Some(c) = candles.iter().find(|c| !markets.iter().any(|m| m.pair == c.pair)) {
            return Err(ConfigError(format!("market data for {}, which has no [[markets]] entry", c.pair)));
        }
        candles.sort_by_key(|c| (c.close_time(), c.pair));
        let desk = AgentId::desk("sim", &cfg.account).map_err(|e| ConfigError(e.to_string()))?;
        let now = candles.first().map_or(0, |c| c.open_time);
        let mut sim = Simulator::live(cfg, desk, markets);
        sim.candles = candles;
        sim.now = now;
        Ok(sim)
    }

    /// A simulator without history: it trades on the candles [`feed`](Self::feed) gives it as
    /// they close, over `markets` (a real venue's, for paper trading), as the desk `desk`.
    /// `cfg`'s own markets are not used.
    pub fn live(cfg: SimConfig, desk: AgentId, markets: Vec<Market>) -> Self {
        Simulator {
            rng: SplitMix64(cfg.seed),
            free: cfg.balances.clone(),
            reserved: BTreeMap::new(),
            desk,
            markets: markets.into_iter().map(|m| (m.pair, m)).collect(),
            candles: Vec::new(),
            next_candle: 0,
            now: 0,
            orders: BTreeMap::new(),
            accepted: HashMap::new(),
            placed: 0,
            fills: 0,
            recent: VecDeque::new(),
            last_close: BTreeMap::new(),
            queue: VecDeque::new(),
            data_rng: SplitMix64(cfg.seed ^ 0xDA7A_FA17),
            previous_bar: BTreeMap::new(),
            wire_rng: SplitMix64(cfg.seed ^ 0x3172_E5FA_0175_0000),
            cfg,
        }
    }

    /// A candle that just closed: orders on its pair are matched by the fill rules, then the
    /// candle is reported (take both with [`next_queued`](Self::next_queued)). Candles of
    /// pairs without a market, or older than what was fed before, are ignored: false.
    pub fn feed(&mut self, bar: Candle) -> bool {
        if !self.markets.contains_key(&bar.pair) || bar.close_time() < self.now {
            return false;
        }
        self.match_bar(&bar);
        self.last_close.insert(bar.pair, bar.close);
        self.push(bar.close_time(), Event::Candle(bar));
        true
    }

    /// The configuration's market-data faults after `bar`: it again, or the bar before it.
    fn inject_data_faults(&mut self, bar: Candle) {
        let (duplicate, stale) = (self.cfg.duplicate_data_probability, self.cfg.stale_data_probability);
        if duplicate > 0.0 && self.data_rng.next_f64() < duplicate {
            self.push(bar.close_time(), Event::Candle(bar.clone()));
        }
        if stale > 0.0 && self.data_rng.next_f64() < stale {
            if let Some(before) = self.previous_bar.get(&bar.pair).cloned() {
                self.push(bar.close_time(), Event::Candle(before));
            }
        }
        if stale > 0.0 {
            self.previous_bar.insert(bar.pair, bar);
        }
    }

    /// The next report already decided, without advancing the data.
    pub fn next_queued(&mut self) -> Option<VenueEvent> {
        let e = self.queue.pop_front()?;
        self.now = self.now.max(e.time);
        Some(e)
    }

    /// The venue's clock: the time of the last thing it reported.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Every asset held free or reserved, in asset order.
    pub fn balances_now(&self) -> Vec<Balance> {
        let mut out = Vec::new();
        merged_balances(&self.free, &self.reserved, &mut out);
        out
    }

    fn free_of(&self, asset: &Asset) -> Money {
        self.free.get(asset).copied().unwrap_or_default()
    }

    fn move_funds(&mut self, asset: Asset, free_delta: Money, reserved_delta: Money) {
        *self.free.entry(asset).or_default() += free_delta;
        *self.reserved.entry(asset).or_default() += reserved_delta;
    }

    fn reject(reason: impl Into<String>) -> ExchangeError {
        ExchangeError::Rejected { reason: reason.into() }
    }

    /// Validates and books an order, returning its acknowledgement.
    pub fn place_now(&mut self, order: &OrderRequest) -> Result<OrderAck, ExchangeError> {
        let market = self
            .markets
            .get(&order.pair)
            .cloned()
            .ok_or_else(|| Self::reject(format!("unknown pair {}", order.pair)))?;
        let order_type = order.kind.order_type();
        if !self.cfg.order_types.contains(&order_type) {
            return Err(Self::reject(format!("order type {order_type:?} is not supported")));
        }
        if self.accepted.contains_key(&order.client_id) {
            return Err(Self::reject(format!("client order id {} was already used", order.client_id)));
        }
        if order.qty.is_sign_negative() || order.qty.is_zero() {
            return Err(Self::reject(format!("quantity {} must be positive", order.qty)));
        }
        if order.qty.value().normalize().scale() > market.qty_precision {
            return Err(Self::reject(format!(
                "quantity {} has more than {} decimals",
                order.qty, market.qty_precision
            )));
        }
        if order.qty < market.min_qty {
            return Err(Self::reject(format!("quantity {} is below the minimum {}", order.qty, market.min_qty)));
        }
        let limit_price = match order.kind {
            OrderKind::Market => None,
            OrderKind::Limit { price }
            | OrderKind::StopLoss { trigger: price }
            | OrderKind::TakeProfit { trigger: price } => Some(price),
        };
        if let Some(p) = limit_price {
            if p.value().normalize().scale() > market.price_precision {
                return Err(Self::reject(format!("price {p} has more than {} decimals", market.price_precision)));
            }
        }
        let reference = match limit_price.or_else(|| self.last_close.get(&order.pair).copied()) {
            Some(p) => p,
            None => return Err(Self::reject(format!("no price for {} yet", order.pair))),
        };
        if let Some(min) = market.min_notional {
            if reference * order.qty < min {
                return Err(Self::reject(format!("order value {} is below the minimum {min}", reference * order.qty)));
            }
        }
        if let Some(limit) = self.cfg.rate_limit_per_s {
            while self.recent.front().is_some_and(|t| *t <= self.now - 1000) {
                self.recent.pop_front();
            }
            if self.recent.len() >= limit as usize {
                return Err(ExchangeError::RateLimited { reason: format!("more than {limit} orders per second") });
            }
        }
        let (asset, need) = match order.side {
            Side::Buy => {
                let price = reference.value() * (Decimal::ONE + self.cfg.slippage.max(Decimal::ZERO));
                (
                    order.pair.quote,
                    Money::new(order.qty.value() * price * (Decimal::ONE + self.cfg.taker_fee.max(self.cfg.maker_fee))),
                )
            }
            Side::Sell => (order.pair.base, Money::new(order.qty.value())),
        };
        if self.free_of(&asset) < need {
            return Err(Self::reject(format!(
                "insufficient funds: needs {need} {asset}, {} free",
                self.free_of(&asset)
            )));
        }
        if self.rng.next_f64() < self.cfg.rejection_probability {
            return Err(Self::reject("simulated rejection"));
        }
        self.recent.push_back(self.now);
        self.placed += 1;
        let jitter = if self.cfg.jitter_ms > 0 { self.rng.next_u64() % (self.cfg.jitter_ms + 1) } else { 0 };
        let arrival = self.now + (self.cfg.latency_ms + jitter) as i64;
        let venue_id = format!("SIM-{}", self.placed);
        let ack = OrderAck { venue_order_id: venue_id.clone(), time: arrival };
        self.accepted.insert(order.client_id.clone(), ack.clone());
        self.move_funds(asset, -need, need);
        self.orders.insert(
            self.placed,
            OpenOrder {
                request: order.clone(),
                venue_id: venue_id.clone(),
                arrival,
                remaining: order.qty,
                reserved: need,
            },
        );
        Ok(ack)
    }

    /// The acknowledgement of the order accepted under `client_id`, if any (open or ended).
    pub fn lookup_now(&self, client_id: &ClientOrderId) -> Option<OrderAck> {
        self.accepted.get(client_id).cloned()
    }

    /// A wire fault with chance `p`.
    fn wire_fault(&mut self, p: f64) -> bool {
        p > 0.0 && self.wire_rng.next_f64() < p
    }

    /// A request refused (429) or failed (5xx) before the venue executed it, by the
    /// configuration's chances.
    fn request_fault(&mut self, what: &str) -> Result<(), ExchangeError> {
        if self.wire_fault(self.cfg.rate_limited_probability) {
            return Err(ExchangeError::RateLimited { reason: format!("HTTP 429 on {what} (simulated)") });
        }
        if self.wire_fault(self.cfg.server_error_probability) {
            return Err(ExchangeError::Connectivity(format!("HTTP 503 on {what} (simulated)")));
        }
        Ok(())
    }

    /// The next report as the wire delivers it: maybe swapped with the one after it, its
    /// time maybe skewed.
    fn deliver(&mut self) -> Option<VenueEvent> {
        // Market data and account reports travel on separate channels (as on a venue's
        // public and private websockets), each in order: what can overtake is one channel's
        // message the other's.
        let crosses =
            |q: &VecDeque<VenueEvent>| matches!(q[0].event, Event::Candle(_)) != matches!(q[1].event, Event::Candle(_));
        if self.queue.len() >= 2 && crosses(&self.queue) && self.wire_fault(self.cfg.reorder_probability) {
            self.queue.swap(0, 1);
        }
        let mut e = self.next_queued()?;
        let skew = self.cfg.clock_skew_ms;
        if skew > 0 && !matches!(e.event, Event::Candle(_)) {
            // The venue stamps its own reports; a bar's time is the bar's.
            let offset = (self.wire_rng.next_u64() % (2 * skew + 1)) as i64 - skew as i64;
            e.time += offset;
        }
        Some(e)
    }

    /// Cancels an open order, releasing what it held.
    pub fn cancel_now(&mut self, client_id: &ClientOrderId) -> Result<(), ExchangeError> {
        let key = self
            .orders
            .iter()
            .find(|(_, o)| &o.request.client_id == client_id)
            .map(|(k, _)| *k)
            .ok_or_else(|| ExchangeError::UnknownOrder(client_id.clone()))?;
        let order = self.orders.remove(&key).expect("found above");
        self.release(&order);
        Ok(())
    }

    fn release(&mut self, order: &OpenOrder) {
        let asset = match order.request.side {
            Side::Buy => order.request.pair.quote,
            Side::Sell => order.request.pair.base,
        };
        self.move_funds(asset, order.reserved, -order.reserved);
    }

    /// Where and at what price `order` executes in `bar`, if it does, and whether as maker.
    fn execution(&self, order: &OpenOrder, bar: &Candle) -> Option<(Decimal, bool)> {
        let (open, high, low) = (bar.open.value(), bar.high.value(), bar.low.value());
        let s = self.cfg.slippage;
        let (up, down) = (Decimal::ONE + s, Decimal::ONE - s);
        let side = order.request.side;
        match (order.request.kind, side) {
            (OrderKind::Market, Side::Buy) => Some((open * up, false)),
            (OrderKind::Market, Side::Sell) => Some((open * down, false)),
            (OrderKind::Limit { price }, Side::Buy) => (low <= price.value()).then(|| (open.min(price.value()), true)),
            (OrderKind::Limit { price }, Side::Sell) => {
                (high >= price.value()).then(|| (open.max(price.value()), true))
            }
            (OrderKind::StopLoss { trigger }, Side::Sell) => {
                (low <= trigger.value()).then(|| (open.min(trigger.value()) * down, false))
            }
            (OrderKind::StopLoss { trigger }, Side::Buy) => {
                (high >= trigger.value()).then(|| (open.max(trigger.value()) * up, false))
            }
            (OrderKind::TakeProfit { trigger }, Side::Sell) => {
                (high >= trigger.value()).then(|| (open.max(trigger.value()) * down, false))
            }
            (OrderKind::TakeProfit { trigger }, Side::Buy) => {
                (low <= trigger.value()).then(|| (open.min(trigger.value()) * up, false))
            }
        }
    }

    /// Matches the open orders of `bar`'s pair at its open, in placement order.
    fn match_bar(&mut self, bar: &Candle) {
        let keys: Vec<u64> = self
            .orders
            .iter()
            .filter(|(_, o)| o.request.pair == bar.pair && o.arrival < bar.close_time())
            .map(|(k, _)| *k)
            .collect();
        if keys.is_empty() {
            // Most bars: no order to match, and no market (with its symbol's String) to copy.
            return;
        }
        let market = self.markets[&bar.pair].clone();
        for key in keys {
            let order = self.orders[&key].clone();
            let Some((raw_price, maker)) = self.execution(&order, bar) else { continue };
            let rounding = match order.request.side {
                Side::Buy => RoundingStrategy::AwayFromZero,
                Side::Sell => RoundingStrategy::ToZero,
            };
            let price = raw_price.round_dp_with_strategy(market.price_precision, rounding).normalize();
            let Ok(price) = Price::new_checked(price) else { continue };
            let rate = if maker { self.cfg.maker_fee } else { self.cfg.taker_fee };
            let time = bar.open_time.max(order.arrival);
            let mut qty = order.remaining;
            if self.cfg.partial_fill_probability > 0.0 && self.rng.next_f64() < self.cfg.partial_fill_probability {
                let part = Qty::new(order.remaining.value() * self.cfg.partial_fill_fraction)
                    .truncate_to(market.qty_precision);
                if part >= market.min_qty && part < order.remaining && !part.is_zero() {
                    qty = part;
                }
            }
            let mut short_of_funds = false;
            if order.request.side == Side::Buy {
                let available = order.reserved + self.free_of(&order.request.pair.quote);
                let cost = |q: Qty| (price * q) + (price * q) * rate;
                if cost(qty) > available {
                    let affordable = Money::new(available.value() / (price.value() * (Decimal::ONE + rate)));
                    qty = Qty::new(affordable.value()).truncate_to(market.qty_precision);
                    short_of_funds = true;
                }
            }
            let mut order = self.orders.remove(&key).expect("listed above");
            if !qty.is_zero() {
                self.execute(&mut order, qty, price, rate, time);
            }
            if short_of_funds {
                self.release(&order);
                self.push(
                    time,
                    Event::OrderCanceled(OrderCanceled {
                        client_id: order.request.client_id.clone(),
                        reason: "insufficient funds at execution".into(),
                    }),
                );
            } else if !order.remaining.is_zero() {
                self.orders.insert(key, order);
            } else {
                self.release(&order);
            }
        }
    }

    /// Books one execution: balances move exactly by value and fee.
    fn execute(&mut self, order: &mut OpenOrder, qty: Qty, price: Price, rate: Decimal, time: i64) {
        let pair = order.request.pair;
        let value = price * qty;
        let fee = value * rate;
        match order.request.side {
            Side::Buy => {
                // Spend from what the order holds first, then from free balance.
                let cost = value + fee;
                let from_reserved = cost.min(order.reserved);
                order.reserved -= from_reserved;
                self.move_funds(pair.quote, -(cost - from_reserved), -from_reserved);
                self.move_funds(pair.base, Money::new(qty.value()), Money::ZERO);
            }
            Side::Sell => {
                let held = Money::new(qty.value());
                order.reserved -= held;
                self.move_funds(pair.base, Money::ZERO, -held);
                self.move_funds(pair.quote, value - fee, Money::ZERO);
            }
        }
        order.remaining -= qty;
        self.fills += 1;
        let fill = Fill {
            client_id: order.request.client_id.clone(),
            venue_order_id: Some(order.venue_id.clone()),
            fill_id: format!("SIM-F{}", self.fills),
            pair,
            side: order.request.side,
            qty,
            price,
            fee,
            fee_asset: pair.quote,
            remaining: order.remaining,
        };
        let event = if order.remaining.is_zero() {
            Event::OrderFilled(Box::new(fill))
        } else {
            Event::OrderPartiallyFilled(Box::new(fill))
        };
        self.push(time, event);
    }

    fn push(&mut self, time: i64, event: Event) {
        self.queue.push_back(VenueEvent { time, event });
    }

    /// The next report, advancing one bar when nothing is pending.
    pub fn next_now(&mut self) -> Option<VenueEvent> {
        if self.queue.is_empty() {
            let bar = self.candles.get(self.next_candle)?.clone();
            self.next_candle += 1;
            self.match_bar(&bar);
            match self.last_close.get_mut(&bar.pair) {
                Some(close) => *close = bar.close,
                None => drop(self.last_close.insert(bar.pair, bar.close)),
            }
            let faulty_data = self.cfg.duplicate_data_probability > 0.0 || self.cfg.stale_data_probability > 0.0;
            if self.queue.is_empty() && !faulty_data {
                // The bar alone to report, nothing to overtake it or be put beside it: what
                // the queue would hand back, without the trip through it (most bars of a
                // backtest).
                let time = bar.close_time();
                self.now = self.now.max(time);
                return Some(VenueEvent { time, event: Event::Candle(bar) });
            }
            self.push(bar.close_time(), Event::Candle(bar.clone()));
            self.inject_data_faults(bar);
        }
        self.deliver()
    }
}

/// The balances of every asset in `free` or `reserved`, in asset order. A desk values its
/// equity with these at every candle: the two sorted maps are merged, not collected into a set.
fn merged_balances(free: &BTreeMap<Asset, Money>, reserved: &BTreeMap<Asset, Money>, out: &mut Vec<Balance>) {
    out.clear();
    out.reserve(free.len().max(reserved.len()));
    let (mut frees, mut reserves) = (free.iter().peekable(), reserved.iter().peekable());
    loop {
        let asset = match (frees.peek(), reserves.peek()) {
            (None, None) => break,
            (Some((a, _)), Some((b, _))) => *(*a).min(*b),
            (Some((a, _)), None) => **a,
            (None, Some((b, _))) => **b,
        };
        let free = frees.next_if(|(a, _)| **a == asset).map_or(Money::ZERO, |(_, m)| *m);
        let reserved = reserves.next_if(|(a, _)| **a == asset).map_or(Money::ZERO, |(_, m)| *m);
        out.push(Balance { asset, free, reserved });
    }
}

impl Exchange for Simulator {
    fn desk(&self) -> AgentId {
        self.desk
    }

    fn now(&self) -> i64 {
        Simulator::now(self)
    }

    fn balances_now(&self) -> Vec<Balance> {
        Simulator::balances_now(self)
    }

    fn balances_into(&self, out: &mut Vec<Balance>) {
        merged_balances(&self.free, &self.reserved, out);
    }

    async fn capabilities(&mut self) -> Result<crypy_core::Capabilities, ExchangeError> {
        self.request_fault("capabilities")?;
        Ok(self.cfg.capabilities())
    }

    async fn markets(&mut self) -> Result<Vec<Market>, ExchangeError> {
        self.request_fault("markets")?;
        Ok(self.markets.values().cloned().collect())
    }

    async fn balances(&mut self) -> Result<Vec<Balance>, ExchangeError> {
        self.request_fault("balances")?;
        Ok(self.balances_now())
    }

    async fn next_event(&mut self) -> Result<Option<VenueEvent>, ExchangeError> {
        if self.wire_fault(self.cfg.disconnect_probability) {
            // Before anything is taken from the queue: the venue sends it after the reconnect.
            return Err(ExchangeError::Connectivity("the report stream dropped (simulated)".into()));
        }
        Ok(self.next_now())
    }

    async fn place(&mut self, order: &OrderRequest) -> Result<OrderAck, ExchangeError> {
        self.request_fault("place")?;
        let ack = self.place_now(order)?;
        if self.wire_fault(self.cfg.timeout_probability) {
            return Err(ExchangeError::Connectivity(
                "timed out waiting for the answer (simulated); the order may have been placed".into(),
            ));
        }
        Ok(ack)
    }

    async fn cancel(&mut self, client_id: &ClientOrderId) -> Result<(), ExchangeError> {
        self.request_fault("cancel")?;
        self.cancel_now(client_id)
    }

    async fn lookup(&mut self, client_id: &ClientOrderId) -> Result<Option<OrderAck>, ExchangeError> {
        self.request_fault("lookup")?;
        Ok(self.lookup_now(client_id))
    }

    async fn open_orders(&mut self) -> Result<Vec<ClientOrderId>, ExchangeError> {
        Ok(self.orders.values().map(|o| o.request.client_id.clone()).collect())
    }

    async fn reconcile(&mut self, unfinished: &[crate::Unfinished]) -> Result<Vec<VenueEvent>, ExchangeError> {
        Ok(crate::reconcile_lost(unfinished, self.now))
    }
}

#[cfg(test)]
mod tests;
