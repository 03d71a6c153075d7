//! The fake Kraken from a plain `#[test]` (as the CLI's tests use it, next to the `crypy`
//! binary): it starts without a runtime and streams its candles at its own pace.

use std::time::Duration;

use crypy_core::{Candle, Event, Interval, Price, Qty};
use crypy_exchange::kraken::{KrakenConfig, KrakenCredential, KrakenExchange, Tier};
use crypy_exchange::loopback::kraken::{FakeKraken, FakeKrakenOptions};
use crypy_exchange::Exchange;

const SECRET: &str = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";

#[test]
fn a_paced_fake_streams_candles_to_a_client() {
    let minute: Interval = "1m".parse().unwrap();
    let pair = "XBT/EUR".parse().unwrap();
    let candles: Vec<Candle> = (0..6)
        .map(|i| Candle {
            pair,
            interval: minute,
            open_time: 1_700_000_000_000 + i * 60_000,
            open: Price::new(rust_decimal::Decimal::new(9000 + i, 0)),
            high: Price::new(rust_decimal::Decimal::new(9010 + i, 0)),
            low: Price::new(rust_decimal::Decimal::new(8990 + i, 0)),
            close: Price::new(rust_decimal::Decimal::new(9005 + i, 0)),
            volume: Qty::new(rust_decimal::Decimal::new(2, 0)),
            trades: Some(3),
        })
        .collect();
    let mut opts = FakeKrakenOptions::new("paced-key", SECRET);
    opts.candles = candles.clone();
    opts.candle_pace = Duration::from_millis(20);
    let fake = FakeKraken::start(opts).unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let got = runtime.block_on(async {
        let mut cfg = KrakenConfig::new("paced");
        (cfg.rest_url, cfg.ws_url, cfg.ws_auth_url) = (fake.rest_url(), fake.ws_url(), fake.ws_auth_url());
        cfg.credential = Some(KrakenCredential::new("paced-key", SECRET).unwrap());
        cfg.pairs = vec![pair];
        cfg.tier = Tier::Intermediate;
        let mut ex = KrakenExchange::connect(cfg).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 5 {
            let e = tokio::time::timeout(Duration::from_secs(5), ex.next_event()).await.unwrap().unwrap().unwrap();
            if let Event::Candle(c) = e.event {
                got.push(c);
            }
        }
        got
    });
    // All but the last, which is still open.
    assert_eq!(got, candles[..5]);
    assert_eq!(fake.candles_streamed(), 6);
}
