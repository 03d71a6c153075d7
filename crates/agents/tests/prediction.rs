//! What a trader predicts for a strategy is what the simulator then does with it: same
//! bars, same fees, same fill rule, same order sizing.

use std::path::Path;

use crypy_agents::evaluate::{all_in_qty, simulate, Bars, FillRules};
use crypy_agents::indicator::IndicatorCache;
use crypy_agents::strategy::{Registry, StrategySpec};
use crypy_core::{Event, Money, OrderKind, OrderRequest, Side};
use crypy_exchange::sim::{SimConfig, Simulator};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

fn bundled_quarter() -> Vec<crypy_core::Candle> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../replays/kraken_XBTEUR_15m_2023Q4.csv");
    crypy_eventstore::import::read_candles(&file, &"XBT/EUR".parse().unwrap(), "15m".parse().unwrap(), None).unwrap()
}

#[test]
fn the_prediction_for_each_variant_is_what_the_simulator_does() {
    let candles = bundled_quarter();
    let bars = Bars::from_candles(&candles).unwrap();
    let strategy =
        Registry::default().build(&StrategySpec::parse("sma_cross fast=5..20/5 slow=30..60/30").unwrap()).unwrap();
    let cfg = SimConfig { latency_ms: 0, jitter_ms: 0, rate_limit_per_s: None, ..SimConfig::default() };
    let market = cfg.markets()[0].clone();
    let (taker, slippage) = (cfg.taker_fee, cfg.slippage);
    let rules = FillRules {
        fee_rate: taker.to_f64().unwrap(),
        slippage: slippage.to_f64().unwrap(),
        qty_step: 10f64.powi(-(market.qty_precision as i32)),
        capital: cfg.balances[&"EUR".parse().unwrap()].to_f64(),
    };
    let start = cfg.balances[&"EUR".parse().unwrap()];
    let mut cache = IndicatorCache::default();
    let mut checked_trades = 0;
    // The trader's own path: the tracker following the same bars, its window the whole quarter.
    let grid: std::sync::Arc<[Box<dyn crypy_agents::strategy::Strategy>]> = vec![Registry::default()
        .build(&StrategySpec::parse("sma_cross fast=5..20/5 slow=30..60/30").unwrap())
        .unwrap()]
    .into();
    let mut tracker = crypy_agents::track::Tracker::new(grid, bars.len(), rules);
    for (open, close) in bars.open().iter().zip(bars.close()) {
        tracker.push(*open, *close);
    }
    let tracked = tracker.scores(1.0);

    for (index, variant) in strategy.variants().iter().enumerate() {
        cache.fill(bars.close(), strategy.needs(variant));
        let mut want = vec![false; bars.len()];
        strategy.signals(variant, &cache, &mut want);
        let predicted = simulate(&bars, &want, &rules, 1.0);

        let mut sim = Simulator::new(cfg.clone(), candles.clone()).unwrap();
        let (mut bar, mut fees, mut entries, mut next_id) = (0usize, Decimal::ZERO, 0u32, 0u32);
        let (mut eur, mut xbt) = (start, Money::ZERO);
        while let Some(e) = sim.next_now() {
            match &e.event {
                Event::OrderFilled(f) | Event::OrderPartiallyFilled(f) => {
                    fees += f.fee.value();
                    let value = f.price * f.qty;
                    match f.side {
                        Side::Buy => {
                            entries += 1;
                            eur -= value + f.fee;
                            xbt += Money::new(f.qty.value());
                        }
                        Side::Sell => {
                            eur += value - f.fee;
                            xbt -= Money::new(f.qty.value());
                        }
                    }
                }
                Event::Candle(c) => {
                    // The trader's decision at this close, sized the trader's way.
                    let long = !xbt.is_zero();
                    let order = match (want[bar], long) {
                        (true, false) => {
                            Some((Side::Buy, all_in_qty(eur, c.close, taker, slippage, market.qty_precision)))
                        }
                        (false, true) => Some((Side::Sell, crypy_core::Qty::new(xbt.value()))),
                        _ => None,
                    };
                    if let Some((side, qty)) = order {
                        next_id += 1;
                        let request = OrderRequest {
                            client_id: format!("{variant}-{next_id}").parse().unwrap(),
                            pair: c.pair,
                            side,
                            kind: OrderKind::Market,
                            qty,
                            allocation: None,
                        };
                        sim.place_now(&request).unwrap();
                    }
                    bar += 1;
                }
                // The unaffordable rest of a buy the open made dearer.
                Event::OrderCanceled(c) => assert!(c.reason.contains("insufficient funds"), "{c:?}"),
                other => panic!("unexpected {other:?}"),
            }
        }
        let last_close = candles.last().unwrap().close.value();
        let equity = eur.value() + xbt.value() * last_close;
        let actual_return = (equity / start.value() - Decimal::ONE).to_f64().unwrap();
        let actual_fees = (fees / start.value()).to_f64().unwrap();
        assert_eq!(predicted.trades, entries, "{variant}");
        assert!(
            (predicted.total_return - actual_return).abs() < 1e-9,
            "{variant}: predicted {} actual {actual_return}",
            predicted.total_return
        );
        assert!(
            (predicted.fees - actual_fees).abs() < 1e-9,
            "{variant}: predicted fees {} actual {actual_fees}",
            predicted.fees
        );
        // The tracker does not truncate quantities to the market's step (its results are
        // fractions of any capital), which moves a result by about 1e-8 per trade.
        let t = &tracked[index];
        assert_eq!(t.trades, entries, "{variant} tracked");
        assert!(
            (t.total_return - actual_return).abs() < 1e-6,
            "{variant}: tracked {} actual {actual_return}",
            t.total_return
        );
        assert!((t.fees - actual_fees).abs() < 1e-6, "{variant}: tracked fees {} actual {actual_fees}", t.fees);
        checked_trades += entries;
    }
    assert!(checked_trades > 100, "the variants trade: {checked_trades} entries");
}
