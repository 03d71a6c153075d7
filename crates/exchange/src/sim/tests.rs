use super::*;
use crypy_core::Interval;
use proptest::prelude::*;

fn pair() -> Pair {
    "XBT/EUR".parse().unwrap()
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// Bars of 15 minutes from t=0: (open, high, low, close).
fn bars(ohlc: &[(&str, &str, &str, &str)]) -> Vec<Candle> {
    ohlc.iter()
        .enumerate()
        .map(|(i, (o, h, l, c))| Candle {
            pair: pair(),
            interval: Interval::from_secs(900).unwrap(),
            open_time: i as i64 * 900_000,
            open: o.parse().unwrap(),
            high: h.parse().unwrap(),
            low: l.parse().unwrap(),
            close: c.parse().unwrap(),
            volume: Qty::new(d("1")),
            trades: None,
        })
        .collect()
}

fn quiet_config() -> SimConfig {
    SimConfig { latency_ms: 0, jitter_ms: 0, rate_limit_per_s: None, ..SimConfig::default() }
}

fn order(id: &str, side: Side, kind: OrderKind, qty: &str) -> OrderRequest {
    OrderRequest { client_id: id.parse().unwrap(), pair: pair(), side, kind, qty: Qty::new(d(qty)), allocation: None }
}

/// Reports until the simulator has reported the candle with this index.
fn advance_through(sim: &mut Simulator, bar: usize) -> Vec<VenueEvent> {
    let mut out = Vec::new();
    while let Some(e) = sim.next_now() {
        let done = matches!(&e.event, Event::Candle(c) if c.open_time == bar as i64 * 900_000);
        out.push(e);
        if done {
            break;
        }
    }
    out
}

fn fills(events: &[VenueEvent]) -> Vec<Fill> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::OrderFilled(f) | Event::OrderPartiallyFilled(f) => Some((**f).clone()),
            _ => None,
        })
        .collect()
}

fn balance(sim: &Simulator, asset: &str) -> Money {
    sim.balances_now().iter().find(|b| b.asset.as_str() == asset).map(|b| b.total()).unwrap_or_default()
}

#[test]
fn a_market_order_fills_at_the_next_open_and_pays_the_taker_fee_exactly() {
    let mut sim = Simulator::new(
        quiet_config(),
        bars(&[("100", "110", "90", "105"), ("106", "120", "100", "118"), ("118", "119", "117", "118")]),
    )
    .unwrap();
    advance_through(&mut sim, 0);
    sim.place_now(&order("b1", Side::Buy, OrderKind::Market, "1.5")).unwrap();
    let events = advance_through(&mut sim, 1);
    let f = &fills(&events)[0];
    assert_eq!((f.price.to_string(), f.qty.to_string()), ("106".into(), "1.5".into()));
    assert_eq!(f.fee.value(), d("0.4134"), "1.5 × 106 × 0.0026");
    assert_eq!(events[0].time, 900_000, "executed at the bar's open");
    assert!(matches!(events[1].event, Event::Candle(_)), "the candle comes after its fills");
    assert_eq!(balance(&sim, "EUR").value(), d("10000") - d("159") - d("0.4134"));
    assert_eq!(balance(&sim, "XBT").value(), d("1.5"));
}

#[test]
fn the_fill_table() {
    // One bar after placement: open 100, high 104, low 95, close 101.
    let cases: [(Side, OrderKind, Option<&str>); 10] = [
        (Side::Buy, OrderKind::Limit { price: "96".parse().unwrap() }, Some("96")),
        (Side::Buy, OrderKind::Limit { price: "102".parse().unwrap() }, Some("100")),
        (Side::Buy, OrderKind::Limit { price: "94".parse().unwrap() }, None),
        (Side::Sell, OrderKind::Limit { price: "103".parse().unwrap() }, Some("103")),
        (Side::Sell, OrderKind::Limit { price: "99".parse().unwrap() }, Some("100")),
        (Side::Sell, OrderKind::StopLoss { trigger: "96".parse().unwrap() }, Some("96")),
        (Side::Sell, OrderKind::StopLoss { trigger: "94".parse().unwrap() }, None),
        (Side::Sell, OrderKind::TakeProfit { trigger: "104".parse().unwrap() }, Some("104")),
        (Side::Sell, OrderKind::TakeProfit { trigger: "105".parse().unwrap() }, None),
        (Side::Buy, OrderKind::StopLoss { trigger: "103".parse().unwrap() }, Some("103")),
    ];
    for (i, (side, kind, want)) in cases.into_iter().enumerate() {
        let mut cfg = quiet_config();
        cfg.balances.insert("XBT".parse().unwrap(), Money::new(d("1")));
        let mut sim = Simulator::new(cfg, bars(&[("100", "100", "100", "100"), ("100", "104", "95", "101")])).unwrap();
        advance_through(&mut sim, 0);
        sim.place_now(&order(&format!("o{i}"), side, kind, "0.5")).unwrap();
        let got = fills(&advance_through(&mut sim, 1));
        assert_eq!(got.first().map(|f| f.price.to_string()), want.map(String::from), "case {i}: {side:?} {kind:?}");
        if let Some(f) = got.first() {
            let maker = matches!(kind, OrderKind::Limit { .. });
            let rate = if maker { d("0.0016") } else { d("0.0026") };
            assert_eq!(f.fee.value(), f.price.value() * d("0.5") * rate, "case {i}");
        }
    }
}

#[test]
fn slippage_moves_the_price_against_the_trader_and_rounds_against_it() {
    let cfg = SimConfig { slippage: d("0.001"), ..quiet_config() };
    let mut sim = Simulator::new(cfg, bars(&[("100", "100", "100", "100"), ("100.5", "101", "99", "100")])).unwrap();
    advance_through(&mut sim, 0);
    sim.place_now(&order("b", Side::Buy, OrderKind::Market, "1")).unwrap();
    let f = &fills(&advance_through(&mut sim, 1))[0];
    // 100.5 × 1.001 = 100.6005, rounded up to the market's 1 decimal.
    assert_eq!(f.price.to_string(), "100.7");
}

#[test]
fn refusals_say_why() {
    let mut sim =
        Simulator::new(quiet_config(), bars(&[("100", "100", "100", "100"), ("100", "100", "100", "100")])).unwrap();
    let early = sim.place_now(&order("e", Side::Buy, OrderKind::Market, "1")).unwrap_err();
    assert!(early.to_string().contains("no price for XBT/EUR yet"), "{early}");
    advance_through(&mut sim, 0);
    let cases = [
        (order("a", Side::Buy, OrderKind::Market, "0.000000001"), "more than 8 decimals"),
        (order("b", Side::Buy, OrderKind::Market, "0.00001"), "below the minimum 0.0001"),
        (order("c", Side::Buy, OrderKind::Market, "1000"), "insufficient funds"),
        (order("d", Side::Sell, OrderKind::Market, "1"), "insufficient funds"),
        (order("f", Side::Buy, OrderKind::Limit { price: "99.55".parse().unwrap() }, "1"), "more than 1 decimals"),
        (order("g", Side::Buy, OrderKind::Market, "-1"), "must be positive"),
    ];
    for (o, needle) in cases {
        let err = sim.place_now(&o).unwrap_err();
        assert!(err.to_string().contains(needle), "{needle:?}: {err}");
    }
    let mut other = order("h", Side::Buy, OrderKind::Market, "1");
    other.pair = "ETH/EUR".parse().unwrap();
    assert!(sim.place_now(&other).unwrap_err().to_string().contains("unknown pair ETH/EUR"));
    sim.place_now(&order("ok", Side::Buy, OrderKind::Market, "1")).unwrap();
    let again = sim.place_now(&order("ok", Side::Buy, OrderKind::Market, "1")).unwrap_err();
    assert!(again.to_string().contains("already used"), "{again}");
    assert_eq!(balance(&sim, "EUR").value(), d("10000"), "refusals move no money");
}

#[test]
fn the_rate_limit_counts_orders_per_second_of_venue_time() {
    let cfg = SimConfig { rate_limit_per_s: Some(2), ..quiet_config() };
    let mut sim = Simulator::new(
        cfg,
        bars(&[("100", "100", "100", "100"), ("100", "100", "100", "100"), ("100", "100", "100", "100")]),
    )
    .unwrap();
    advance_through(&mut sim, 0);
    sim.place_now(&order("a", Side::Buy, OrderKind::Limit { price: "50".parse().unwrap() }, "0.1")).unwrap();
    sim.place_now(&order("b", Side::Buy, OrderKind::Limit { price: "50".parse().unwrap() }, "0.1")).unwrap();
    let err =
        sim.place_now(&order("c", Side::Buy, OrderKind::Limit { price: "50".parse().unwrap() }, "0.1")).unwrap_err();
    assert!(err.is_retryable() && err.to_string().contains("2 orders per second"), "{err}");
    advance_through(&mut sim, 1);
    sim.place_now(&order("c", Side::Buy, OrderKind::Limit { price: "50".parse().unwrap() }, "0.1")).unwrap();
}

#[test]
fn a_buy_that_became_too_expensive_fills_what_it_can_and_cancels_the_rest() {
    let mut cfg = quiet_config();
    cfg.balances.insert("EUR".parse().unwrap(), Money::new(d("1000")));
    let mut sim = Simulator::new(cfg, bars(&[("100", "100", "100", "100"), ("200", "200", "200", "200")])).unwrap();
    advance_through(&mut sim, 0);
    sim.place_now(&order("all-in", Side::Buy, OrderKind::Market, "9.9")).unwrap();
    let events = advance_through(&mut sim, 1);
    let f = &fills(&events)[0];
    assert_eq!(f.qty.to_string(), "4.98703371", "1000 / (200 × 1.0026), truncated to 8 decimals");
    assert!(events
        .iter()
        .any(|e| matches!(&e.event, Event::OrderCanceled(c) if c.reason.contains("insufficient funds"))));
    assert!(balance(&sim, "EUR") >= Money::ZERO);
    assert!(
        sim.balances_now().iter().all(|b| b.reserved.is_zero()),
        "nothing stays reserved: {:?}",
        sim.balances_now()
    );
}

#[test]
fn latency_longer_than_a_bar_delays_the_fill() {
    let cfg = SimConfig { latency_ms: 1_000_000, ..quiet_config() };
    let mut sim = Simulator::new(
        cfg,
        bars(&[("100", "100", "100", "100"), ("101", "101", "101", "101"), ("102", "102", "102", "102")]),
    )
    .unwrap();
    advance_through(&mut sim, 0);
    let ack = sim.place_now(&order("slow", Side::Buy, OrderKind::Market, "1")).unwrap();
    assert_eq!(ack.time, 900_000 + 1_000_000);
    assert!(fills(&advance_through(&mut sim, 1)).is_empty());
    let f = &fills(&advance_through(&mut sim, 2))[0];
    assert_eq!(f.price.to_string(), "102");
}

#[test]
fn cancel_releases_what_the_order_held() {
    let mut sim =
        Simulator::new(quiet_config(), bars(&[("100", "100", "100", "100"), ("100", "100", "100", "100")])).unwrap();
    advance_through(&mut sim, 0);
    let id: ClientOrderId = "l".parse().unwrap();
    sim.place_now(&order("l", Side::Buy, OrderKind::Limit { price: "50".parse().unwrap() }, "10")).unwrap();
    assert!(sim.balances_now()[0].reserved > Money::ZERO);
    sim.cancel_now(&id).unwrap();
    assert!(sim.balances_now()[0].reserved.is_zero());
    assert_eq!(balance(&sim, "EUR").value(), d("10000"));
    assert!(matches!(sim.cancel_now(&id), Err(ExchangeError::UnknownOrder(_))));
}

/// Bars as (open, up, down, close move) and orders as (kind, side, qty, price).
type Walk = Vec<(u32, u32, u32, u32)>;
type Flow = Vec<(u8, u8, u16, u16)>;

/// A random walk of real-looking bars and a random order flow.
fn scenario() -> impl Strategy<Value = (Walk, Flow, u64)> {
    (
        proptest::collection::vec((900u32..1100, 0u32..30, 0u32..30, 0u32..60), 5..60),
        proptest::collection::vec((any::<u8>(), any::<u8>(), 1u16..5000, 900u16..1100), 0..80),
        any::<u64>(),
    )
}

fn build(walk: &[(u32, u32, u32, u32)]) -> Vec<Candle> {
    walk.iter()
        .enumerate()
        .map(|(i, (o, up, down, c))| {
            let open = Decimal::from(*o);
            let close = Decimal::from(o + c).min(open + Decimal::from(*up)).max(open - Decimal::from(*down));
            Candle {
                pair: pair(),
                interval: Interval::from_secs(900).unwrap(),
                open_time: i as i64 * 900_000,
                open: Price::new(open),
                high: Price::new(open.max(close) + Decimal::from(*up)),
                low: Price::new((open.min(close) - Decimal::from(*down)).max(Decimal::ONE)),
                close: Price::new(close),
                volume: Qty::new(Decimal::ONE),
                trades: None,
            }
        })
        .collect()
}

fn run_scenario(
    cfg: SimConfig,
    walk: &[(u32, u32, u32, u32)],
    flow: &[(u8, u8, u16, u16)],
) -> (Simulator, Vec<VenueEvent>) {
    let mut sim = Simulator::new(cfg, build(walk)).unwrap();
    let mut events = Vec::new();
    let mut flow = flow.iter().enumerate();
    while let Some(e) = sim.next_now() {
        let is_candle = matches!(e.event, Event::Candle(_));
        events.push(e);
        if !is_candle {
            continue;
        }
        // After each bar, maybe place or cancel something.
        if let Some((i, (what, side, qty, price))) = flow.next() {
            let side = if side % 2 == 0 { Side::Buy } else { Side::Sell };
            let qty = Decimal::new(i64::from(*qty), 4);
            let price: Price = Price::new(Decimal::from(*price));
            let kind = match what % 5 {
                0 | 1 => OrderKind::Market,
                2 => OrderKind::Limit { price },
                3 => OrderKind::StopLoss { trigger: price },
                _ => OrderKind::TakeProfit { trigger: price },
            };
            let id = format!("o{i}");
            let _ = sim.place_now(&order(&id, side, kind, &qty.to_string()));
            if what % 7 == 0 && i > 0 {
                let _ = sim.cancel_now(&format!("o{}", i - 1).parse().unwrap());
            }
        }
    }
    (sim, events)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// End balances are start balances plus fills minus fees, exactly, whatever happens.
    #[test]
    fn accounting_is_exact((walk, flow, seed) in scenario()) {
        let mut cfg = SimConfig { seed, partial_fill_probability: 0.3, rejection_probability: 0.1, ..SimConfig::default() };
        cfg.balances.insert("XBT".parse().unwrap(), Money::new(d("2")));
        let (sim, events) = run_scenario(cfg, &walk, &flow);
        let (mut eur, mut xbt) = (d("10000"), d("2"));
        for f in fills(&events) {
            let value = f.price.value() * f.qty.value();
            match f.side {
                Side::Buy => { eur -= value + f.fee.value(); xbt += f.qty.value(); }
                Side::Sell => { eur += value - f.fee.value(); xbt -= f.qty.value(); }
            }
        }
        prop_assert_eq!(balance(&sim, "EUR").value(), eur);
        prop_assert_eq!(balance(&sim, "XBT").value(), xbt);
        for b in sim.balances_now() {
            prop_assert!(!b.free.is_sign_negative() && !b.reserved.is_sign_negative(), "{:?}", b);
        }
    }

    /// Same seed and data, same reports; the seed matters.
    #[test]
    fn runs_are_deterministic((walk, flow, seed) in scenario()) {
        let cfg = SimConfig { seed, partial_fill_probability: 0.5, rejection_probability: 0.2, jitter_ms: 5000, ..SimConfig::default() };
        let (_, a) = run_scenario(cfg.clone(), &walk, &flow);
        let (_, b) = run_scenario(cfg, &walk, &flow);
        prop_assert_eq!(a, b);
    }
}

#[test]
fn the_random_scenarios_really_trade() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut full, mut partial, mut canceled) = (0, 0, 0);
    for _ in 0..20 {
        let (walk, flow, seed) = scenario().new_tree(&mut runner).unwrap().current();
        let mut cfg = SimConfig { seed, partial_fill_probability: 0.3, ..SimConfig::default() };
        cfg.balances.insert("XBT".parse().unwrap(), Money::new(d("2")));
        let (_, events) = run_scenario(cfg, &walk, &flow);
        for e in &events {
            match e.event {
                Event::OrderFilled(_) => full += 1,
                Event::OrderPartiallyFilled(_) => partial += 1,
                Event::OrderCanceled(_) => canceled += 1,
                _ => {}
            }
        }
    }
    assert!(full > 50 && partial > 5, "full {full}, partial {partial}, canceled {canceled}");
}

/// The reports of a run through the `Exchange` interface, failed calls left out: what a desk
/// that tries again sees.
fn wire_reports(cfg: SimConfig, candles: Vec<Candle>) -> (Vec<VenueEvent>, u32) {
    let mut sim = Simulator::new(cfg, candles).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (mut out, mut dropped) = (Vec::new(), 0);
    let mut placed = 0;
    loop {
        match runtime.block_on(sim.next_event()) {
            Ok(Some(e)) => {
                // An order every fourth bar keeps fills flowing beside the candles.
                if matches!(e.event, Event::Candle(_)) && out.len() % 4 == 0 {
                    placed += 1;
                    let o = order(&format!("w{placed}"), Side::Buy, OrderKind::Market, "0.001");
                    sim.place_now(&o).unwrap();
                }
                out.push(e);
            }
            Ok(None) => return (out, dropped),
            Err(ExchangeError::Connectivity(_)) => dropped += 1,
            Err(e) => panic!("{e}"),
        }
    }
}

fn walk(n: usize) -> Vec<Candle> {
    let prices: Vec<String> = (0..n).map(|i| format!("{}", 20_000 + (i * 37 % 200))).collect();
    let ohlc: Vec<(&str, &str, &str, &str)> =
        (0..n).map(|i| (prices[i].as_str(), "30000", "10000", prices[(i + 1) % n].as_str())).collect();
    bars(&ohlc)
}

#[test]
fn a_dropped_report_stream_loses_nothing() {
    let clean = wire_reports(quiet_config(), walk(200));
    let faulty = wire_reports(SimConfig { disconnect_probability: 0.3, ..quiet_config() }, walk(200));
    assert_eq!(clean.1, 0);
    assert!(faulty.1 > 30, "{} drops", faulty.1);
    assert_eq!(faulty.0, clean.0, "the same reports, in the same order, once each");
}

#[test]
fn reordering_crosses_channels_only_and_skew_moves_account_reports_only() {
    let clean = wire_reports(quiet_config(), walk(400)).0;
    let cfg = SimConfig { reorder_probability: 1.0, clock_skew_ms: 3000, ..quiet_config() };
    let faulty = wire_reports(cfg, walk(400)).0;
    let candles = |r: &[VenueEvent]| -> Vec<VenueEvent> {
        r.iter().filter(|e| matches!(e.event, Event::Candle(_))).cloned().collect()
    };
    let account = |r: &[VenueEvent]| -> Vec<Event> {
        r.iter().filter(|e| !matches!(e.event, Event::Candle(_))).map(|e| e.event.clone()).collect()
    };
    // Each channel keeps its order (and candles their times); only the interleaving changes.
    assert_eq!(candles(&faulty), candles(&clean));
    assert_eq!(account(&faulty), account(&clean));
    assert_ne!(faulty, clean);
    let skewed = faulty.iter().zip(&clean).filter(|(a, b)| a.time != b.time).count();
    assert!(skewed > 0);
}

#[test]
fn a_placement_whose_answer_is_lost_is_booked_and_found_by_its_client_id() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let cfg = SimConfig { timeout_probability: 1.0, ..quiet_config() };
    let mut sim = Simulator::new(cfg, walk(3)).unwrap();
    runtime.block_on(sim.next_event()).unwrap();
    let o = order("lost-1", Side::Buy, OrderKind::Market, "0.001");
    let err = runtime.block_on(sim.place(&o)).unwrap_err();
    assert!(err.is_retryable() && err.to_string().contains("may have been placed"), "{err}");
    let found = runtime.block_on(sim.lookup(&o.client_id)).unwrap().expect("the venue has it");
    assert_eq!(found.venue_order_id, "SIM-1");
    // Sending it again cannot make a second order.
    let again = runtime.block_on(sim.place(&o)).unwrap_err();
    assert!(again.to_string().contains("already used"), "{again}");
    assert_eq!(runtime.block_on(sim.open_orders()).unwrap().len(), 1);
    assert_eq!(runtime.block_on(sim.lookup(&"never-sent".parse().unwrap())).unwrap(), None);
}

#[test]
fn refused_requests_are_not_executed() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for cfg in [
        SimConfig { rate_limited_probability: 1.0, ..quiet_config() },
        SimConfig { server_error_probability: 1.0, ..quiet_config() },
    ] {
        let mut sim = Simulator::new(cfg, walk(3)).unwrap();
        runtime.block_on(sim.next_event()).unwrap();
        let o = order("refused-1", Side::Buy, OrderKind::Market, "0.001");
        assert!(runtime.block_on(sim.place(&o)).unwrap_err().is_retryable());
        assert_eq!(sim.lookup_now(&o.client_id), None);
        assert!(runtime.block_on(sim.balances()).is_err());
    }
}

#[test]
fn fault_chances_out_of_range_are_named() {
    let text = DEFAULT_TOML.replace("timeout_probability = 0.0", "timeout_probability = 1.5");
    assert!(SimConfig::from_toml(&text).unwrap_err().to_string().contains("timeout_probability 1.5"));
    let text = DEFAULT_TOML.replace("disconnect_probability = 0.0", "disconnect_probability = 1.0");
    assert!(SimConfig::from_toml(&text).unwrap_err().to_string().contains("never let a report through"));
}

proptest! {
    /// The merged balances are those of every asset either map holds, each once, in order.
    #[test]
    fn merged_balances_cover_every_asset_once(
        free in proptest::collection::btree_map(0usize..7, 0i64..1_000_000, 0..6),
        reserved in proptest::collection::btree_map(0usize..7, 0i64..1_000_000, 0..6),
    ) {
        const ASSETS: [&str; 7] = ["ADA", "DOT", "ETH", "EUR", "SOL", "USD", "XBT"];
        let money = |m: &BTreeMap<usize, i64>| -> BTreeMap<Asset, Money> {
            m.iter().map(|(a, v)| (ASSETS[*a].parse().unwrap(), Money::new(Decimal::new(*v, 4)))).collect()
        };
        let (free, reserved) = (money(&free), money(&reserved));
        let assets: std::collections::BTreeSet<&Asset> = free.keys().chain(reserved.keys()).collect();
        let expected: Vec<Balance> = assets
            .into_iter()
            .map(|a| Balance {
                asset: *a,
                free: free.get(a).copied().unwrap_or_default(),
                reserved: reserved.get(a).copied().unwrap_or_default(),
            })
            .collect();
        // Into a buffer that held something else: nothing of it remains.
        let mut out = vec![Balance { asset: "BTC".parse().unwrap(), free: Money::ZERO, reserved: Money::ZERO }; 3];
        super::merged_balances(&free, &reserved, &mut out);
        prop_assert_eq!(out, expected);
    }
}
