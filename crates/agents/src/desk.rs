//! The desk's gate: every order request is approved or refused here, with the reason.
//!
//! In order, a request is refused when
//! 1. the kill switch is engaged;
//! 2. its pair is not allowed by the desk template, or not offered by the venue;
//! 3. its value (quantity × limit price, or × the last price for market orders) exceeds the
//!    template's `max_order_notional`;
//! 4. as many orders are open as `max_open_orders` allows;
//! 5. it names no allocation, an unknown one, or one granted to another trader or pair;
//! 6. the allocation's signature does not verify against its holder's key (from the
//!    holder's `agent_spawned` event), or its nonce was already used by another allocation;
//! 7. the allocation has expired (event time after `expires_at`);
//! 8. a buy would take the allocation's spending beyond its amount.
//!
//! Sells that close a position bought under an allocation are checked against the same
//! allocation but do not count against its amount.

use std::collections::{BTreeMap, BTreeSet};

use crypy_core::event::{Allocation, OrderApproved, OrderRefused, PublicKey};
use crypy_core::{AgentId, ClientOrderId, Event, Money, OrderKind, OrderRequest, Pair, Price, Side};

use crate::auth;
use crate::template::DeskLimits;

#[derive(Debug, Clone, Default)]
struct Backing {
    open_orders: u32,
    bought: crypy_core::Qty,
    sold: crypy_core::Qty,
}

/// The desk's gate state; see the module doc.
#[derive(Debug, Clone)]
pub struct DeskGate {
    limits: DeskLimits,
    kill_switch: bool,
    venue_pairs: BTreeSet<Pair>,
    /// The order types the venue takes, once it said (its capabilities): others are refused
    /// here with a reason rather than by the venue.
    venue_order_types: Option<Vec<crypy_core::order::OrderType>>,
    /// Each market's quantity precision and minimum, as the venue reported them.
    venue_lots: BTreeMap<Pair, (u32, crypy_core::Qty)>,
    holder_keys: BTreeMap<AgentId, PublicKey>,
    /// Each allocation, what was bought under it, and whether its signature verified
    /// against the key of the holder generation that granted it (checked at grant time,
    /// so a position outlives its holder's retirement).
    allocations: BTreeMap<u64, (Allocation, Money, Result<(), String>)>,
    /// What each allocation still backs: its open orders and the position bought and sold
    /// under it. An allocation whose position is closed, or that expired unused, is
    /// forgotten (its nonce is not), so that a long run's gate stays small.
    backing: BTreeMap<u64, Backing>,
    /// The allocation and side of each open order.
    order_allocations: BTreeMap<ClientOrderId, (u64, Side)>,
    /// Every (holder, nonce) an allocation has carried: a lookup, not a scan of them all.
    nonces: BTreeSet<(AgentId, u64)>,
    open_orders: BTreeSet<ClientOrderId>,
    last_price: BTreeMap<Pair, Price>,
}

impl DeskGate {
    pub fn new(limits: DeskLimits) -> Self {
        DeskGate {
            kill_switch: limits.kill_switch,
            limits,
            venue_pairs: BTreeSet::new(),
            venue_order_types: None,
            venue_lots: BTreeMap::new(),
            holder_keys: BTreeMap::new(),
            allocations: BTreeMap::new(),
            nonces: BTreeSet::new(),
            backing: BTreeMap::new(),
            order_allocations: BTreeMap::new(),
            open_orders: BTreeSet::new(),
            last_price: BTreeMap::new(),
        }
    }

    pub fn kill_switch(&self) -> bool {
        self.kill_switch
    }

    /// New limits from a template setting; the kill switch stays as it is (the template's
    /// `kill_switch` is where a run starts).
    pub fn set_limits(&mut self, limits: DeskLimits) {
        self.limits = limits;
    }

    pub fn open_orders(&self) -> usize {
        self.open_orders.len()
    }

    /// The orders approved and not yet filled, canceled or failed.
    pub fn open_order_ids(&self) -> impl Iterator<Item = &ClientOrderId> {
        self.open_orders.iter()
    }

    /// Learns from an event (prices, markets, keys, allocations, order outcomes, kill
    /// switch); returns the verdict when it is an order request. `time` is the event time.
    pub fn handle(&mut self, time: i64, source: &AgentId, event: &Event) -> Option<Event> {
        match event {
            Event::Candle(c) => match self.last_price.get_mut(&c.pair) {
                Some(last) => *last = c.close,
                None => drop(self.last_price.insert(c.pair, c.close)),
            },
            Event::Trade(t) => {
                self.last_price.insert(t.pair, t.price);
            }
            Event::Markets(m) => {
                self.venue_pairs = m.markets.iter().map(|m| m.pair).collect();
                self.venue_lots = m.markets.iter().map(|m| (m.pair, (m.qty_precision, m.min_qty))).collect();
            }
            Event::Capabilities(c) => self.venue_order_types = Some(c.order_types.clone()),
            Event::AgentSpawned(s) => {
                if let Some(key) = s.public_key {
                    self.holder_keys.insert(s.agent, key);
                }
            }
            Event::AllocationGranted(a) if !self.allocations.contains_key(&a.id) => {
                let verdict = self.verify(a);
                self.nonces.insert((a.holder, a.nonce));
                self.forget_expired(time);
                self.allocations.insert(a.id, ((**a).clone(), Money::ZERO, verdict));
                self.backing.insert(a.id, Backing::default());
            }
            Event::KillSwitchEngaged(_) => self.kill_switch = true,
            Event::KillSwitchReleased(_) => self.kill_switch = false,
            Event::OrderFilled(f) | Event::OrderPartiallyFilled(f) => {
                if let Some((allocation, side)) = self.order_allocations.get(&f.client_id).copied() {
                    if let Some(b) = self.backing.get_mut(&allocation) {
                        match side {
                            Side::Buy => b.bought += f.qty,
                            Side::Sell => b.sold += f.qty,
                        }
                    }
                }
                if matches!(event, Event::OrderFilled(_)) {
                    self.order_ended(&f.client_id);
                }
            }
            Event::OrderCanceled(c) => self.order_ended(&c.client_id),
            Event::OrderFailed(f) => self.order_ended(&f.client_id),
            Event::OrderRequested(request) => {
                return Some(match self.judge(time, source, request) {
                    Ok(()) => {
                        self.open_orders.insert(request.client_id.clone());
                        if let Some(id) = request.allocation {
                            self.order_allocations.insert(request.client_id.clone(), (id, request.side));
                            if let Some(b) = self.backing.get_mut(&id) {
                                b.open_orders += 1;
                            }
                        }
                        Event::OrderApproved(OrderApproved { client_id: request.client_id.clone() })
                    }
                    Err(reason) => Event::OrderRefused(OrderRefused { client_id: request.client_id.clone(), reason }),
                });
            }
            _ => {}
        }
        None
    }

    fn order_ended(&mut self, client_id: &ClientOrderId) {
        self.open_orders.remove(client_id);
        let Some((id, _)) = self.order_allocations.remove(client_id) else { return };
        let Some(b) = self.backing.get_mut(&id) else { return };
        b.open_orders = b.open_orders.saturating_sub(1);
        if b.open_orders == 0 && !b.bought.is_zero() && b.sold >= b.bought {
            self.backing.remove(&id);
            self.allocations.remove(&id);
        }
    }

    /// Forgets allocations that expired before `time` with nothing bought and no order open:
    /// no order can use them any more.
    fn forget_expired(&mut self, time: i64) {
        let expired: Vec<u64> = self
            .allocations
            .iter()
            .filter(|(id, (a, _, _))| {
                time > a.expires_at && self.backing.get(id).is_none_or(|b| b.open_orders == 0 && b.bought.is_zero())
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.allocations.remove(&id);
            self.backing.remove(&id);
        }
    }

    /// Signed by the key its holder generation published, and with a nonce that holder
    /// never used before (holders number their allocations across generations).
    fn verify(&self, a: &Allocation) -> Result<(), String> {
        let Some(key) = self.holder_keys.get(&a.holder) else {
            return Err(format!("no key known for holder {}", a.holder));
        };
        if auth::verify(key, a).is_err() {
            return Err(format!("allocation {} is not signed by holder {}", a.id, a.holder));
        }
        if self.nonces.contains(&(a.holder, a.nonce)) {
            return Err(format!("allocation {} reuses nonce {} of holder {}", a.id, a.nonce, a.holder));
        }
        Ok(())
    }

    fn judge(&mut self, time: i64, source: &AgentId, r: &OrderRequest) -> Result<(), String> {
        if self.kill_switch {
            return Err("kill switch engaged".into());
        }
        if !self.limits.allowed_pairs.is_empty() && !self.limits.allowed_pairs.contains(&r.pair) {
            return Err(format!("pair {} is not allowed by the desk template", r.pair));
        }
        if !self.venue_pairs.is_empty() && !self.venue_pairs.contains(&r.pair) {
            return Err(format!("the venue offers no market {}", r.pair));
        }
        let order_type = r.kind.order_type();
        if self.venue_order_types.as_ref().is_some_and(|types| !types.contains(&order_type)) {
            return Err(format!("the venue does not take {order_type:?} orders"));
        }
        if let Some((precision, min)) = self.venue_lots.get(&r.pair) {
            if r.qty.value().normalize().scale() > *precision {
                return Err(format!("quantity {} has more than the venue's {precision} decimals", r.qty));
            }
            if r.qty < *min {
                return Err(format!("quantity {} is below the venue's minimum {min}", r.qty));
            }
        }
        let price = match r.kind {
            OrderKind::Limit { price }
            | OrderKind::StopLoss { trigger: price }
            | OrderKind::TakeProfit { trigger: price } => Some(price),
            OrderKind::Market => self.last_price.get(&r.pair).copied(),
        };
        let Some(price) = price else { return Err(format!("no price known for {} yet", r.pair)) };
        let notional = price * r.qty;
        if notional > self.limits.max_order_notional {
            return Err(format!(
                "order value {notional} exceeds max_order_notional {}",
                self.limits.max_order_notional
            ));
        }
        if self.open_orders.len() >= self.limits.max_open_orders as usize {
            return Err(format!("{} orders already open (max_open_orders)", self.open_orders.len()));
        }
        let Some(id) = r.allocation else { return Err("no holder authorization".into()) };
        let Some((allocation, spent, verdict)) = self.allocations.get(&id) else {
            return Err(format!("unknown allocation {id}"));
        };
        if &allocation.trader != source || allocation.pair != r.pair {
            return Err(format!("allocation {id} was granted to {} for {}", allocation.trader, allocation.pair));
        }
        verdict.clone()?;
        if r.side == Side::Buy {
            if time > allocation.expires_at {
                return Err(format!("allocation {id} expired"));
            }
            if *spent + notional > allocation.amount {
                return Err(format!(
                    "order value {notional} goes beyond allocation {id} ({} of {} used)",
                    spent, allocation.amount
                ));
            }
        }
        if r.side == Side::Buy {
            if let Some((_, spent, _)) = self.allocations.get_mut(&id) {
                *spent += notional;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{HolderKey, KeyScope};
    use crate::template::Templates;
    use crypy_core::event::{AgentSpawned, KillSwitchEngaged, Signature};
    use crypy_core::{Candle, Interval, Qty};

    fn pair() -> Pair {
        "XBT/EUR".parse().unwrap()
    }

    fn trader() -> AgentId {
        "XBT/EUR#1".parse().unwrap()
    }

    fn eur() -> AgentId {
        "EUR".parse().unwrap()
    }

    /// A gate that knows the EUR holder's key, a price of 40,000 and a signed allocation of
    /// 1,000 EUR for XBT/EUR#1, valid until t = 1,000.
    fn gate() -> (DeskGate, Allocation) {
        let mut g = DeskGate::new(Templates::default().desk.limits);
        let key = HolderKey::derive(b"secret", &eur(), 1, KeyScope::Asset);
        g.handle(
            0,
            &"sim:main".parse().unwrap(),
            &Event::AgentSpawned(AgentSpawned {
                agent: eur(),
                parent: Some("sim:main".parse().unwrap()),
                generation: 1,
                public_key: Some(key.public()),
            }),
        );
        let candle = Candle {
            pair: pair(),
            interval: Interval::from_secs(900).unwrap(),
            open_time: 0,
            open: "40000".parse().unwrap(),
            high: "40000".parse().unwrap(),
            low: "40000".parse().unwrap(),
            close: "40000".parse().unwrap(),
            volume: Qty::ZERO,
            trades: None,
        };
        g.handle(0, &"sim:main".parse().unwrap(), &Event::Candle(candle));
        let mut a = Allocation {
            id: 1,
            proposal: 1,
            holder: eur(),
            trader: trader(),
            pair: pair(),
            asset: "EUR".parse().unwrap(),
            amount: "1000".parse().unwrap(),
            expires_at: 1000,
            nonce: 1,
            signature: Signature([0; 64]),
        };
        key.sign(&mut a);
        g.handle(0, &eur(), &Event::AllocationGranted(Box::new(a.clone())));
        (g, a)
    }

    fn request(id: &str, side: Side, qty: &str, allocation: Option<u64>) -> OrderRequest {
        OrderRequest {
            client_id: id.parse().unwrap(),
            pair: pair(),
            side,
            kind: OrderKind::Market,
            qty: qty.parse().unwrap(),
            allocation,
        }
    }

    fn verdict(g: &mut DeskGate, time: i64, from: &AgentId, r: OrderRequest) -> Result<(), String> {
        match g.handle(time, from, &Event::OrderRequested(r)) {
            Some(Event::OrderApproved(_)) => Ok(()),
            Some(Event::OrderRefused(r)) => Err(r.reason),
            other => panic!("no verdict: {other:?}"),
        }
    }

    #[test]
    fn a_signed_order_within_its_allocation_is_approved_and_counted() {
        let (mut g, _) = gate();
        assert_eq!(verdict(&mut g, 10, &trader(), request("a", Side::Buy, "0.02", Some(1))), Ok(()));
        // 800 EUR used; another 0.01 (400 EUR) goes beyond the 1,000.
        let err = verdict(&mut g, 10, &trader(), request("b", Side::Buy, "0.01", Some(1))).unwrap_err();
        assert!(err.contains("goes beyond allocation 1"), "{err}");
        // Selling what was bought is fine.
        assert_eq!(verdict(&mut g, 10, &trader(), request("c", Side::Sell, "0.02", Some(1))), Ok(()));
    }

    #[test]
    fn the_venues_capabilities_and_lots_bound_what_the_desk_approves() {
        let (mut g, _) = gate();
        let desk: AgentId = "kraken:main".parse().unwrap();
        let capabilities = crypy_core::Capabilities {
            order_types: vec![crypy_core::order::OrderType::Limit],
            maker_fee: "0.0016".parse().unwrap(),
            taker_fee: "0.0026".parse().unwrap(),
            margin: false,
            websocket: true,
            client_order_ids: true,
            rate_limit_per_s: None,
        };
        g.handle(0, &desk, &Event::Capabilities(capabilities));
        let err = verdict(&mut g, 10, &trader(), request("a", Side::Buy, "0.02", Some(1))).unwrap_err();
        assert_eq!(err, "the venue does not take Market orders");
        let limit = OrderRequest {
            kind: OrderKind::Limit { price: "40000".parse().unwrap() },
            ..request("b", Side::Buy, "0.02", Some(1))
        };
        assert_eq!(verdict(&mut g, 10, &trader(), limit.clone()), Ok(()));
        let market = crypy_core::Market {
            pair: pair(),
            venue_symbol: "XXBTZEUR".into(),
            price_precision: 1,
            qty_precision: 4,
            min_qty: "0.001".parse().unwrap(),
            min_notional: None,
        };
        g.handle(0, &desk, &Event::Markets(crypy_core::event::Markets { markets: vec![market] }));
        let fine = OrderRequest { client_id: "c".parse().unwrap(), qty: "0.00001".parse().unwrap(), ..limit.clone() };
        let err = verdict(&mut g, 10, &trader(), fine).unwrap_err();
        assert_eq!(err, "quantity 0.00001 has more than the venue's 4 decimals");
        let small = OrderRequest { client_id: "d".parse().unwrap(), qty: "0.0005".parse().unwrap(), ..limit };
        let err = verdict(&mut g, 10, &trader(), small).unwrap_err();
        assert_eq!(err, "quantity 0.0005 is below the venue's minimum 0.001");
    }

    #[test]
    fn refusals_name_their_reason() {
        let other_trader: AgentId = "XBT/EUR#2".parse().unwrap();
        type Setup = Box<dyn Fn(&mut DeskGate, &Allocation)>;
        let cases: Vec<(Setup, AgentId, OrderRequest, i64, &str)> = vec![
            (Box::new(|_, _| {}), trader(), request("u", Side::Buy, "0.001", None), 10, "no holder authorization"),
            (Box::new(|_, _| {}), trader(), request("x", Side::Buy, "0.001", Some(9)), 10, "unknown allocation 9"),
            (Box::new(|_, _| {}), other_trader, request("o", Side::Buy, "0.001", Some(1)), 10, "granted to XBT/EUR#1"),
            (Box::new(|_, _| {}), trader(), request("l", Side::Buy, "0.001", Some(1)), 1001, "expired"),
            (Box::new(|_, _| {}), trader(), request("n", Side::Buy, "3", Some(1)), 10, "exceeds max_order_notional"),
            (
                Box::new(|g, _| {
                    g.handle(
                        0,
                        &"sim:main".parse().unwrap(),
                        &Event::KillSwitchEngaged(KillSwitchEngaged { reason: "test".into(), canceled: 0 }),
                    );
                }),
                trader(),
                request("k", Side::Buy, "0.001", Some(1)),
                10,
                "kill switch",
            ),
            (
                // Signed by another holder's key: a forgery for EUR.
                Box::new(|g, a| {
                    let mut forged = a.clone();
                    forged.id = 2;
                    forged.nonce = 2;
                    HolderKey::derive(b"secret", &"XBT".parse().unwrap(), 1, KeyScope::Asset).sign(&mut forged);
                    g.handle(0, &"EUR".parse().unwrap(), &Event::AllocationGranted(Box::new(forged)));
                }),
                trader(),
                request("f", Side::Buy, "0.001", Some(2)),
                10,
                "not signed by holder EUR",
            ),
            (
                // The holder's own signature, on an amount someone raised afterwards.
                Box::new(|g, a| {
                    let mut raised = a.clone();
                    raised.id = 3;
                    raised.amount = "1000000".parse().unwrap();
                    g.handle(0, &"EUR".parse().unwrap(), &Event::AllocationGranted(Box::new(raised)));
                }),
                trader(),
                request("r", Side::Buy, "0.001", Some(3)),
                10,
                "not signed by holder EUR",
            ),
        ];
        for (setup, from, r, time, needle) in cases {
            let (mut g, a) = gate();
            setup(&mut g, &a);
            let err = verdict(&mut g, time, &from, r).unwrap_err();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
    }

    #[test]
    fn the_kill_switch_stops_every_new_order_and_open_orders_are_limited() {
        let (mut g, _) = gate();
        let mut limits = Templates::default().desk.limits;
        limits.max_open_orders = 1;
        g.limits = limits;
        assert_eq!(verdict(&mut g, 10, &trader(), request("a", Side::Buy, "0.001", Some(1))), Ok(()));
        let err = verdict(&mut g, 10, &trader(), request("b", Side::Buy, "0.001", Some(1))).unwrap_err();
        assert!(err.contains("already open"), "{err}");
        g.handle(
            10,
            &trader(),
            &Event::OrderCanceled(crypy_core::event::OrderCanceled {
                client_id: "a".parse().unwrap(),
                reason: "x".into(),
            }),
        );
        assert_eq!(verdict(&mut g, 10, &trader(), request("b", Side::Buy, "0.001", Some(1))), Ok(()));
        g.handle(10, &trader(), &Event::KillSwitchEngaged(KillSwitchEngaged { reason: "panic".into(), canceled: 1 }));
        for (i, side) in [Side::Buy, Side::Sell].into_iter().enumerate() {
            let err = verdict(&mut g, 10, &trader(), request(&format!("k{i}"), side, "0.001", Some(1))).unwrap_err();
            assert!(err.contains("kill switch"), "{err}");
        }
    }
}
