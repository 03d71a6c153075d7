//! Paper trading: a real venue's live public market data, with orders filled locally by the
//! simulator's fill rules (see [`crate::sim`]) as each live candle closes. Kraken spot has no
//! sandbox, so this is how a strategy meets the real market without real money; it works on
//! any venue.
//!
//! The account (balances, latency, slippage, seed) comes from a [`SimConfig`]; markets and
//! fees come from the venue, so precision and minimum sizes are the venue's own. The venue
//! is used without a key: nothing is ever sent to it but subscriptions.

use crypy_core::{AgentId, Balance, Capabilities, ClientOrderId, Event, Market, OrderRequest};

use crate::sim::{SimConfig, Simulator};
use crate::{Exchange, ExchangeError, OrderAck, VenueEvent};

/// See the module doc.
#[derive(Debug)]
pub struct Paper<E> {
    venue: E,
    sim: Simulator,
    capabilities: Capabilities,
}

impl<E: Exchange> Paper<E> {
    /// Paper trading on `venue`'s markets with the account `account` describes (its
    /// balances, latency, slippage, rejections; fees are the venue's).
    ///
    /// # Errors
    /// When the venue cannot say its markets or capabilities.
    pub async fn new(mut venue: E, mut account: SimConfig) -> Result<Self, ExchangeError> {
        let markets = venue.markets().await?;
        let mut capabilities = venue.capabilities().await?;
        account.maker_fee = capabilities.maker_fee;
        account.taker_fee = capabilities.taker_fee;
        account.order_types.retain(|t| capabilities.order_types.contains(t));
        capabilities.order_types.clone_from(&account.order_types);
        // The fills are ours: no margin, and no venue limit on what we "send".
        capabilities.margin = false;
        capabilities.client_order_ids = true;
        capabilities.rate_limit_per_s = account.rate_limit_per_s;
        let sim = Simulator::live(account, venue.desk(), markets);
        Ok(Paper { venue, sim, capabilities })
    }

    /// The venue under the paper account.
    pub fn venue(&self) -> &E {
        &self.venue
    }
}

impl<E: Exchange> Exchange for Paper<E> {
    fn desk(&self) -> AgentId {
        self.venue.desk()
    }

    fn now(&self) -> i64 {
        self.venue.now().max(self.sim.now())
    }

    fn balances_now(&self) -> Vec<Balance> {
        self.sim.balances_now()
    }

    async fn capabilities(&mut self) -> Result<Capabilities, ExchangeError> {
        Ok(self.capabilities.clone())
    }

    async fn markets(&mut self) -> Result<Vec<Market>, ExchangeError> {
        self.sim.markets().await
    }

    async fn balances(&mut self) -> Result<Vec<Balance>, ExchangeError> {
        Ok(self.sim.balances_now())
    }

    async fn next_event(&mut self) -> Result<Option<VenueEvent>, ExchangeError> {
        loop {
            if let Some(decided) = self.sim.next_queued() {
                return Ok(Some(decided));
            }
            // Cancel-safe: the only await is the venue's own (cancel-safe) one, and what it
            // returns is handled before the next.
            let Some(reported) = self.venue.next_event().await? else { return Ok(None) };
            if let Event::Candle(candle) = reported.event {
                self.sim.feed(candle);
            }
            // Without a key the venue reports nothing of an account; anything else (a
            // balance snapshot of no account) is not the paper account's.
        }
    }

    async fn place(&mut self, order: &OrderRequest) -> Result<OrderAck, ExchangeError> {
        self.sim.place_now(order)
    }

    async fn cancel(&mut self, client_id: &ClientOrderId) -> Result<(), ExchangeError> {
        self.sim.cancel_now(client_id)
    }

    async fn lookup(&mut self, client_id: &ClientOrderId) -> Result<Option<OrderAck>, ExchangeError> {
        self.sim.lookup(client_id).await
    }

    async fn open_orders(&mut self) -> Result<Vec<ClientOrderId>, ExchangeError> {
        self.sim.open_orders().await
    }

    async fn reconcile(&mut self, unfinished: &[crate::Unfinished]) -> Result<Vec<VenueEvent>, ExchangeError> {
        // The paper account lived in the process: the venue never saw these orders.
        Ok(crate::reconcile_lost(unfinished, self.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypy_core::{Candle, OrderKind, Side};

    /// A venue that reports a fixed list of candles: the live feed, as far as paper cares.
    #[derive(Debug)]
    struct Feed {
        candles: std::collections::VecDeque<Candle>,
        markets: Vec<Market>,
    }

    impl Exchange for Feed {
        fn desk(&self) -> AgentId {
            AgentId::desk("kraken", "paper").unwrap()
        }
        fn now(&self) -> i64 {
            0
        }
        fn balances_now(&self) -> Vec<Balance> {
            Vec::new()
        }
        async fn capabilities(&mut self) -> Result<Capabilities, ExchangeError> {
            Ok(Capabilities {
                order_types: vec![crypy_core::order::OrderType::Market, crypy_core::order::OrderType::Limit],
                maker_fee: "0.0016".parse().unwrap(),
                taker_fee: "0.004".parse().unwrap(),
                margin: false,
                websocket: true,
                client_order_ids: true,
                rate_limit_per_s: None,
            })
        }
        async fn markets(&mut self) -> Result<Vec<Market>, ExchangeError> {
            Ok(self.markets.clone())
        }
        async fn balances(&mut self) -> Result<Vec<Balance>, ExchangeError> {
            Err(ExchangeError::Rejected { reason: "public only".into() })
        }
        async fn next_event(&mut self) -> Result<Option<VenueEvent>, ExchangeError> {
            Ok(self.candles.pop_front().map(|c| VenueEvent { time: c.close_time(), event: Event::Candle(c) }))
        }
        async fn place(&mut self, _: &OrderRequest) -> Result<OrderAck, ExchangeError> {
            panic!("paper trading must never send an order to the venue")
        }
        async fn cancel(&mut self, _: &ClientOrderId) -> Result<(), ExchangeError> {
            panic!("paper trading must never send a cancel to the venue")
        }
        async fn lookup(&mut self, _: &ClientOrderId) -> Result<Option<OrderAck>, ExchangeError> {
            panic!("paper trading looks up its own orders")
        }
        async fn open_orders(&mut self) -> Result<Vec<ClientOrderId>, ExchangeError> {
            Ok(Vec::new())
        }
        async fn reconcile(&mut self, _: &[crate::Unfinished]) -> Result<Vec<VenueEvent>, ExchangeError> {
            panic!("paper trading reconciles its own orders")
        }
    }

    fn candle(open_time: i64, open: &str, close: &str) -> Candle {
        Candle {
            pair: "XBT/EUR".parse().unwrap(),
            interval: "1m".parse().unwrap(),
            open_time,
            open: open.parse().unwrap(),
            high: open.max(close).parse().unwrap(),
            low: open.min(close).parse().unwrap(),
            close: close.parse().unwrap(),
            volume: "1".parse().unwrap(),
            trades: None,
        }
    }

    #[tokio::test]
    async fn orders_fill_locally_at_the_next_live_candle_with_the_venues_fees_and_precision() {
        let market = Market {
            pair: "XBT/EUR".parse().unwrap(),
            venue_symbol: "XXBTZEUR".into(),
            price_precision: 1,
            qty_precision: 8,
            min_qty: "0.0001".parse().unwrap(),
            min_notional: None,
        };
        let feed = Feed {
            candles: [
                candle(0, "30000", "30100"),
                candle(60_000, "30100.5", "30050"),
                candle(120_000, "30050", "30000"),
            ]
            .into(),
            markets: vec![market],
        };
        let account = SimConfig::from_toml(crate::sim::DEFAULT_TOML).unwrap();
        let mut paper = Paper::new(feed, account).await.unwrap();
        assert_eq!(paper.desk().to_string(), "kraken:paper");
        let caps = paper.capabilities().await.unwrap();
        assert_eq!(caps.taker_fee.to_string(), "0.004", "the venue's fee, not the simulator's");
        assert_eq!(caps.order_types.len(), 2, "only what the venue accepts");

        let first = paper.next_event().await.unwrap().unwrap();
        assert!(matches!(first.event, Event::Candle(_)));
        let order = OrderRequest {
            client_id: "paper-1".parse().unwrap(),
            pair: "XBT/EUR".parse().unwrap(),
            side: Side::Buy,
            kind: OrderKind::Market,
            qty: "0.01".parse().unwrap(),
            allocation: None,
        };
        paper.place(&order).await.unwrap();
        let bad = OrderRequest { client_id: "paper-2".parse().unwrap(), qty: "0.000000001".parse().unwrap(), ..order };
        assert!(paper.place(&bad).await.unwrap_err().to_string().contains("decimals"), "venue precision applies");
        let Event::OrderFilled(fill) = paper.next_event().await.unwrap().unwrap().event else {
            panic!("the market order fills at the next candle's open")
        };
        assert_eq!((fill.price.to_string(), fill.fee.to_string()), ("30100.5".into(), "1.204020".into()));
        assert!(matches!(paper.next_event().await.unwrap().unwrap().event, Event::Candle(_)));
        let xbt = paper.balances_now().into_iter().find(|b| b.asset.as_str() == "XBT").unwrap();
        assert_eq!(xbt.total().to_string(), "0.01");
        assert!(matches!(paper.next_event().await.unwrap().unwrap().event, Event::Candle(_)));
        assert!(paper.next_event().await.unwrap().is_none(), "the feed ended");
    }
}
