//! Proptest strategies for every event kind, so that codec and log properties cover the
//! whole language rather than a hand-picked sample.

use proptest::prelude::*;
use rust_decimal::Decimal;

use crate::account::{Balance, Capabilities, Market};
use crate::event::*;
use crate::market::{Candle, Interval, Quote, Trade};
use crate::order::{Fill, OrderKind, OrderRequest, OrderType, Side};
use crate::{AgentId, Asset, ClientOrderId, Money, Pair, Price, Qty};

pub fn decimal() -> impl Strategy<Value = Decimal> {
    (any::<i64>(), 0u32..=18).prop_map(|(m, s)| Decimal::from_i128_with_scale(i128::from(m), s))
}

pub fn price() -> impl Strategy<Value = Price> {
    (1u64..=u64::MAX, 0u32..=12).prop_map(|(m, s)| Price::new(Decimal::from_i128_with_scale(i128::from(m), s)))
}

pub fn qty() -> impl Strategy<Value = Qty> {
    decimal().prop_map(Qty::new)
}

pub fn money() -> impl Strategy<Value = Money> {
    decimal().prop_map(Money::new)
}

pub fn asset() -> impl Strategy<Value = Asset> {
    "[A-Z][A-Z0-9]{1,5}(\\.[A-Z])?".prop_map(|s| s.parse().unwrap())
}

pub fn pair() -> impl Strategy<Value = Pair> {
    (asset(), asset()).prop_filter("base differs from quote", |(b, q)| b != q).prop_map(|(b, q)| Pair::new(b, q))
}

pub fn agent() -> impl Strategy<Value = AgentId> {
    prop_oneof![
        ("[a-z]{2,8}", "[a-z0-9_-]{1,12}").prop_map(|(e, a)| AgentId::desk(&e, &a).unwrap()),
        asset().prop_map(AgentId::Holder),
        (pair(), any::<u32>()).prop_map(|(pair, generation)| AgentId::Trader { pair, generation }),
        "[a-z]{1,10}".prop_map(|n| AgentId::system(&n).unwrap()),
    ]
}

pub fn client_id() -> impl Strategy<Value = ClientOrderId> {
    "[!-~]{1,64}".prop_map(|s| s.parse().unwrap())
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, including quotes and newlines: reasons and commands come from humans.
    ".{0,40}"
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell)]
}

fn finite() -> impl Strategy<Value = f64> {
    // JSON has no NaN or infinity; metrics are always finite.
    -1e12f64..1e12
}

fn metrics() -> impl Strategy<Value = Metrics> {
    (finite(), finite(), finite(), finite(), any::<u32>(), money()).prop_map(
        |(total_return, sharpe, max_drawdown, win_rate, trades, fees)| Metrics {
            total_return,
            sharpe,
            max_drawdown,
            win_rate,
            trades,
            fees,
        },
    )
}

fn candle() -> impl Strategy<Value = Candle> {
    (pair(), 1u32..=604_800, any::<i64>(), price(), price(), price(), price(), qty(), any::<Option<u64>>()).prop_map(
        |(pair, secs, open_time, open, high, low, close, volume, trades)| Candle {
            pair,
            interval: Interval::from_secs(secs).unwrap(),
            open_time,
            open,
            high,
            low,
            close,
            volume,
            trades,
        },
    )
}

fn order_kind() -> impl Strategy<Value = OrderKind> {
    prop_oneof![
        Just(OrderKind::Market),
        price().prop_map(|price| OrderKind::Limit { price }),
        price().prop_map(|trigger| OrderKind::StopLoss { trigger }),
        price().prop_map(|trigger| OrderKind::TakeProfit { trigger }),
    ]
}

fn fill() -> impl Strategy<Value = Fill> {
    (client_id(), proptest::option::of(text()), text(), pair(), side(), qty(), price(), money(), asset(), qty())
        .prop_map(|(client_id, venue_order_id, fill_id, pair, side, qty, price, fee, fee_asset, remaining)| Fill {
            client_id,
            venue_order_id,
            fill_id,
            pair,
            side,
            qty,
            price,
            fee,
            fee_asset,
            remaining,
        })
}

fn market() -> impl Strategy<Value = Market> {
    (pair(), "[A-Z]{3,10}", 0u32..=12, 0u32..=12, qty(), proptest::option::of(money())).prop_map(
        |(pair, venue_symbol, price_precision, qty_precision, min_qty, min_notional)| Market {
            pair,
            venue_symbol,
            price_precision,
            qty_precision,
            min_qty,
            min_notional,
        },
    )
}

fn capabilities() -> impl Strategy<Value = Capabilities> {
    let order_type = prop_oneof![
        Just(OrderType::Market),
        Just(OrderType::Limit),
        Just(OrderType::StopLoss),
        Just(OrderType::TakeProfit)
    ];
    (
        proptest::collection::vec(order_type, 0..4),
        decimal(),
        decimal(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<Option<u32>>(),
    )
        .prop_map(|(order_types, maker_fee, taker_fee, margin, websocket, client_order_ids, rate_limit_per_s)| {
            Capabilities { order_types, maker_fee, taker_fee, margin, websocket, client_order_ids, rate_limit_per_s }
        })
}

fn retire_reason() -> impl Strategy<Value = RetireReason> {
    prop_oneof![
        Just(RetireReason::CapitalCommitted),
        Just(RetireReason::Superseded),
        Just(RetireReason::ChanceGone),
        Just(RetireReason::PositionClosed),
        Just(RetireReason::AllocationExpired),
        Just(RetireReason::Human),
        Just(RetireReason::Shutdown),
    ]
}

fn scope() -> impl Strategy<Value = TemplateScope> {
    prop_oneof![
        Just(TemplateScope::Desk),
        asset().prop_map(TemplateScope::Holder),
        pair().prop_map(TemplateScope::Trader)
    ]
}

/// Any event, every kind equally likely.
pub fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        candle().prop_map(Event::Candle),
        (pair(), price(), qty(), proptest::option::of(side()), proptest::option::of(text()))
            .prop_map(|(pair, price, qty, side, trade_id)| Event::Trade(Trade { pair, price, qty, side, trade_id })),
        (pair(), price(), qty(), price(), qty()).prop_map(|(pair, bid, bid_qty, ask, ask_qty)| Event::Quote(Quote {
            pair,
            bid,
            bid_qty,
            ask,
            ask_qty
        })),
        proptest::collection::vec(
            (asset(), money(), money()).prop_map(|(asset, free, reserved)| Balance { asset, free, reserved }),
            0..4
        )
        .prop_map(|balances| Event::Balances(Balances { balances })),
        capabilities().prop_map(Event::Capabilities),
        proptest::collection::vec(market(), 0..3).prop_map(|markets| Event::Markets(Markets { markets })),
        (agent(), proptest::option::of(agent()), any::<u32>(), proptest::option::of(any::<[u8; 32]>())).prop_map(
            |(agent, parent, generation, key)| Event::AgentSpawned(AgentSpawned {
                agent,
                parent,
                generation,
                public_key: key.map(PublicKey)
            })
        ),
        (agent(), retire_reason(), text()).prop_map(|(agent, reason, detail)| Event::AgentRetired(AgentRetired {
            agent,
            reason,
            detail
        })),
        (pair(), text(), any::<u32>(), any::<(u32, u32)>(), metrics()).prop_map(
            |(pair, strategy, bars, (variants, passing), metrics)| Event::StrategyEvaluated(StrategyEvaluated {
                pair,
                strategy,
                bars,
                variants,
                passing,
                metrics
            })
        ),
        (any::<u64>(), pair(), text(), metrics()).prop_map(|(proposal, pair, strategy, metrics)| {
            Event::StrategyProposed(StrategyProposed { proposal, pair, strategy, metrics })
        }),
        (any::<u64>(), agent())
            .prop_map(|(proposal, trader)| Event::ProposalAccepted(ProposalAccepted { proposal, trader })),
        (any::<u64>(), agent(), text()).prop_map(|(proposal, trader, reason)| Event::ProposalRefused(
            ProposalRefused { proposal, trader, reason }
        )),
        (any::<[u64; 4]>(), agent(), agent(), pair(), asset(), money(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(
            |([id, proposal, expires, nonce], holder, trader, pair, asset, amount, sig_a, sig_b)| {
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&sig_a);
                signature[32..].copy_from_slice(&sig_b);
                Event::AllocationGranted(Box::new(Allocation {
                    id,
                    proposal,
                    holder,
                    trader,
                    pair,
                    asset,
                    amount,
                    expires_at: expires as i64,
                    nonce,
                    signature: Signature(signature),
                }))
            }
        ),
        (any::<u64>(), pair(), text()).prop_map(|(allocation, pair, reason)| Event::EntryDecided(EntryDecision {
            allocation,
            pair,
            reason
        })),
        (any::<u64>(), pair(), text()).prop_map(|(allocation, pair, reason)| Event::EntrySkipped(EntrySkipped {
            allocation,
            pair,
            reason
        })),
        (client_id(), pair(), side(), order_kind(), qty(), any::<Option<u64>>()).prop_map(
            |(client_id, pair, side, kind, qty, allocation)| {
                Event::OrderRequested(OrderRequest { client_id, pair, side, kind, qty, allocation })
            }
        ),
        client_id().prop_map(|client_id| Event::OrderApproved(OrderApproved { client_id })),
        (client_id(), text()).prop_map(|(client_id, reason)| Event::OrderRefused(OrderRefused { client_id, reason })),
        client_id().prop_map(|client_id| Event::OrderSent(OrderSent { client_id })),
        (client_id(), text()).prop_map(|(client_id, venue_order_id)| Event::OrderAcknowledged(OrderAcknowledged {
            client_id,
            venue_order_id
        })),
        fill().prop_map(|f| Event::OrderFilled(Box::new(f))),
        fill().prop_map(|f| Event::OrderPartiallyFilled(Box::new(f))),
        (client_id(), text()).prop_map(|(client_id, reason)| Event::OrderCanceled(OrderCanceled { client_id, reason })),
        (client_id(), text(), any::<bool>())
            .prop_map(|(client_id, error, retryable)| Event::OrderFailed(OrderFailed { client_id, error, retryable })),
        (agent(), text(), text()).prop_map(|(agent, command, session)| Event::CommandIssued(CommandIssued {
            agent,
            command,
            session
        })),
        (text(), any::<u32>())
            .prop_map(|(reason, canceled)| Event::KillSwitchEngaged(KillSwitchEngaged { reason, canceled })),
        text().prop_map(|reason| Event::KillSwitchReleased(KillSwitchReleased { reason })),
        (scope(), text(), proptest::option::of(text()), proptest::option::of(text()), text()).prop_map(
            |(scope, key, old, new, reason)| Event::TemplateChanged(TemplateChanged { scope, key, old, new, reason })
        ),
        (text(), text(), any::<u32>(), text()).prop_map(|(call, error, attempt, then)| Event::VenueError(VenueError {
            call,
            error,
            attempt,
            then
        })),
        text().prop_map(|text| Event::VenueSettings(VenueSettings { text })),
    ]
}

/// Any event with a plausible envelope, ready to append.
pub fn new_event() -> impl Strategy<Value = NewEvent> {
    (any::<u32>(), any::<i64>(), any::<i64>(), agent(), any::<Option<u64>>(), event())
        .prop_map(|(run, time, wall, source, cause, event)| NewEvent { run, time, wall, source, cause, event })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn json_key_is_the_kind_name(e in event()) {
            let json = serde_json::to_value(&e).unwrap();
            let key = match &json {
                serde_json::Value::Object(map) => map.keys().next().unwrap().clone(),
                serde_json::Value::String(s) => s.clone(),
                other => panic!("unexpected {other}"),
            };
            prop_assert_eq!(key, e.kind().name());
        }

        #[test]
        fn binary_round_trip(e in new_event()) {
            let cfg = bincode::config::standard();
            let bytes = bincode::serde::encode_to_vec(&e, cfg).unwrap();
            let (back, used): (NewEvent, usize) = bincode::serde::borrow_decode_from_slice(&bytes, cfg).unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(back, e);
        }

        #[test]
        fn json_round_trip(e in event()) {
            let text = serde_json::to_string(&e).unwrap();
            let back: Event = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, e);
        }
    }

    #[test]
    fn the_strategy_covers_every_kind() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let strategy = event();
        let mut seen = BTreeSet::new();
        for _ in 0..5000 {
            seen.insert(strategy.new_tree(&mut runner).unwrap().current().kind());
        }
        let missing: Vec<_> = EventKind::ALL.iter().filter(|k| !seen.contains(k)).collect();
        assert!(missing.is_empty(), "never generated: {missing:?}");
    }
}
