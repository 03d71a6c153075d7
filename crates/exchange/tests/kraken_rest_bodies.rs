//! Recorded Kraken REST bodies (test_data/kraken, see SOURCES in the report) parse into
//! crypy's types with their exact values.

use crypy_core::Side;
use crypy_exchange::kraken::http::{self, KrakenAddOrder};
use crypy_exchange::kraken::rest;
use crypy_exchange::ExchangeError;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/kraken").join(name))
        .unwrap()
}

#[test]
fn open_orders() {
    let orders = rest::parse_open_orders(&fixture("http_open_orders_2019-10-17.json")).unwrap();
    assert_eq!(orders.len(), 1);
    let o = &orders[0];
    assert_eq!((o.txid.as_str(), o.status.as_str(), o.pair.as_str()), ("OQJUIE-TTHJZ-3ULWCE", "open", "XBTEUR"));
    assert_eq!((o.side, o.order_type.as_str()), (Side::Sell, "limit"));
    assert_eq!(o.price.unwrap().to_string(), "10821.4");
    assert_eq!((o.volume.to_string(), o.volume_executed.to_string()), ("0.01000000".into(), "0.00000000".into()));
    assert_eq!(o.open_time_ms, 1_571_296_311_064);
    assert_eq!((o.cl_ord_id.as_deref(), o.userref), (None, Some(0)));
}

#[test]
fn closed_orders() {
    let (orders, count) = rest::parse_closed_orders(&fixture("http_closed_orders_2019-12-19.json")).unwrap();
    assert_eq!((orders.len(), count), (2, 2));
    // Oldest first.
    let (a, b) = (&orders[0], &orders[1]);
    assert_eq!((a.txid.as_str(), a.status.as_str()), ("OEES77-MGNR7-HDQLW7", "canceled"));
    assert_eq!(a.price.unwrap().to_string(), "1.5350");
    assert_eq!(a.reason.as_deref(), Some("User requested"));
    assert_eq!((b.txid.as_str(), b.order_type.as_str(), b.side), ("OSFLKN-U4LLK-RVLQI4", "market", Side::Buy));
    assert_eq!(b.price, None, "a market order has no price");
    assert_eq!((b.volume_executed.to_string(), b.cost.to_string()), ("49.09588111".into(), "774.1894".into()));
    assert_eq!((b.fee.to_string(), b.average_price.to_string()), ("2.0128".into(), "1.5511".into()));
    assert_eq!(b.close_time_ms, Some(1_576_170_284_346));
    assert_eq!(b.trades, ["TWSXUZ-YBBCM-XFU3FG"]);
}

#[test]
fn trades_history() {
    let (trades, count) = rest::parse_trades_history(&fixture("http_trades_history_2020-07-16.json")).unwrap();
    assert_eq!((trades.len(), count), (6, 14));
    assert!(trades.windows(2).all(|w| w[0].time_ms <= w[1].time_ms), "oldest first");
    let t = trades.iter().find(|t| t.trade_id == "T5MQPO-PBBX3-3KFPJQ").unwrap();
    assert_eq!((t.order_txid.as_str(), t.pair.as_str(), t.side), ("OREZPT-2HL3Z-L4EQ23", "XTZEUR", Side::Sell));
    assert_eq!((t.order_type.as_str(), t.price.to_string()), ("stop market", "2.600000".into()));
    assert_eq!(
        (t.volume.to_string(), t.cost.to_string(), t.fee.to_string()),
        ("100.00000000".into(), "259.999999".into(), "0.676000".into())
    );
    assert_eq!(t.time_ms, 1_598_167_578_495);
}

#[test]
fn tickers() {
    let t = rest::parse_ticker(&fixture("http_ticker_xxbtzeur_2019-10-15.json")).unwrap();
    assert_eq!(t.len(), 1);
    let t = &t[0];
    assert_eq!(t.symbol, "XXBTZEUR");
    assert_eq!(
        (t.ask.to_string(), t.bid.to_string(), t.last.to_string()),
        ("7562.50000".into(), "7561.60000".into(), "7561.00000".into())
    );
    assert_eq!(
        (t.volume_today.to_string(), t.volume_24h.to_string()),
        ("1477.50736707".into(), "2788.15566314".into())
    );
    assert_eq!(t.open_today.to_string(), "7576.10000");
    let t = rest::parse_ticker(&fixture("http_ticker_xbtusdt_2025-11.json")).unwrap();
    assert_eq!(
        (t[0].symbol.as_str(), t[0].ask.to_string(), t[0].bid.to_string()),
        ("XBTUSDT", "105944.30000".into(), "105944.20000".into())
    );
}

#[test]
fn depth() {
    let d = rest::parse_depth(&fixture("http_depth_xbtusdt_2025-11.json")).unwrap();
    assert_eq!(d.len(), 1);
    let d = &d[0];
    assert_eq!((d.symbol.as_str(), d.bids.len(), d.asks.len()), ("XBTUSDT", 5, 5));
    assert_eq!((d.bids[0].0.to_string(), d.bids[0].1.to_string()), ("105944.20000".into(), "0.002".into()));
    assert_eq!((d.asks[0].0.to_string(), d.asks[0].1.to_string()), ("105944.30000".into(), "0.136".into()));
    assert!(d.bids.windows(2).all(|w| w[0].0 > w[1].0) && d.asks.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn add_order_validation_and_errors() {
    let r: KrakenAddOrder = http::result(&fixture("http_add_order_validate_buy_limit_2019-10-12.json")).unwrap();
    assert_eq!(r.descr.order, "buy 0.01000000 XBTEUR @ limit 1234.0");
    assert!(r.txid.is_empty(), "validate places nothing");
    let err = rest::parse_open_orders(&fixture("http_error_invalid_key_2019-10-12.json")).unwrap_err();
    assert_eq!(err, ExchangeError::Rejected { reason: "EAPI:Invalid key".into() });
}
