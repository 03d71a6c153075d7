//! BitMEX's documented signatures, and recorded BitMEX bodies read into crypy's terms, with
//! their values checked. The recordings are slices in `test_data/bitmex/` (see its README).

use std::collections::BTreeMap;

use crypy_core::{ClientOrderId, Interval, OrderKind, OrderRequest, Pair, Side};
use crypy_exchange::bitmex::http::OrderStatus;
use crypy_exchange::bitmex::rest::{self, Execution, ExecutionReport, Markets};
use crypy_exchange::bitmex::BitmexCredential;
use rust_decimal::Decimal;

fn data(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/bitmex").join(name))
        .unwrap()
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn pair(s: &str) -> Pair {
    s.parse().unwrap()
}

fn markets() -> Markets {
    Markets::new(&rest::parse_instruments(&data("instrument_active_2021-07-22.json")).unwrap())
}

/// The examples of BitMEX's API key documentation: GET, GET with a query, POST with a body.
#[test]
fn the_websocket_signature_is_a_get_of_realtime() {
    // The REST examples of BitMEX's documentation are unit tests in `bitmex::credential`.
    let c = BitmexCredential::new("LAqUlngMIQkIUjXMUreyu3qn", "chNOOS4KvNXR_Xq4k4c9qsfoKWvnDecLATCRlcBwyKDYnWgO");
    assert_eq!(c.sign_websocket(1_518_064_236), c.sign("GET", "/realtime", 1_518_064_236, ""));
    let debug = format!("{c:?}");
    assert!(!debug.contains("LAqU") && !debug.contains("chNOOS"), "{debug}");
}

#[test]
fn recorded_instruments_become_markets() {
    let instruments = rest::parse_instruments(&data("instrument_active_2021-07-22.json")).unwrap();
    assert_eq!(instruments.len(), 5);
    let xbtusd = instruments.iter().find(|i| i.symbol == "XBTUSD").unwrap();
    assert_eq!(xbtusd.pair, Some(pair("XBT/USD")));
    assert_eq!((xbtusd.lot_size, xbtusd.tick_size), (d("100"), d("0.5")));
    assert_eq!((xbtusd.maker_fee, xbtusd.taker_fee), (d("-0.00025"), d("0.00075")));
    assert_eq!(xbtusd.multiplier, Some(d("-100000000")));
    assert!(xbtusd.is_inverse && !xbtusd.is_quanto);
    assert_eq!(xbtusd.settl_currency, "XBt");
    assert_eq!(xbtusd.last_price.unwrap().to_string(), "32175");
    assert_eq!(xbtusd.max_order_qty, Some(d("10000000")));

    let m = markets();
    // The dated future XBTU21 would collide with the perpetual on XBT/USD: not a market.
    let symbols: Vec<&str> = m.by_symbol.keys().map(String::as_str).collect();
    assert_eq!(symbols, ["ETHUSD", "SOLUSDT", "XBTEUR", "XBTUSD"]);
    let list = m.list();
    let by_pair: BTreeMap<String, _> = list.iter().map(|m| (m.pair.to_string(), m)).collect();
    let x = by_pair["XBT/USD"];
    assert_eq!((x.venue_symbol.as_str(), x.price_precision, x.qty_precision), ("XBTUSD", 1, 0));
    assert_eq!(x.min_qty.to_string(), "100");
    let sol = by_pair["SOL/USDT"];
    assert_eq!((sol.venue_symbol.as_str(), sol.price_precision, sol.qty_precision), ("SOLUSDT", 3, 0));
    assert_eq!(by_pair["ETH/USD"].price_precision, 2);
    assert!(m.instrument(&pair("DOGE/USD")).is_err());

    // A spot pair (shape of BitMEX's spot listing, hand-written): `XBT_USDT` is XBT/USDT.
    let spot = r#"[{"symbol":"XBT_USDT","typ":"IFXXXP","state":"Open","underlying":"XBT","quoteCurrency":"USDT",
                    "settlCurrency":"USDt","lotSize":1000,"tickSize":0.5,"multiplier":1,"makerFee":0.001,"takerFee":0.001}]"#;
    let spot = Markets::new(&rest::parse_instruments(spot).unwrap());
    let s = &spot.list()[0];
    assert_eq!((s.pair, s.venue_symbol.as_str(), s.min_qty.to_string()), (pair("XBT/USDT"), "XBT_USDT", "1000".into()));
    assert_eq!(spot.by_pair[&pair("XBT/USDT")].settlement(), (Some("USDT".parse().unwrap()), 6));
    // An index has no lot or tick size: not an instrument crypy can trade.
    let index = r#"[{"symbol":".BXBT","typ":"MRCXXX","state":"Unlisted","underlying":"XBT","quoteCurrency":"USD","lotSize":null,"tickSize":0.01}]"#;
    assert!(rest::parse_instruments(index).unwrap().is_empty());
    assert!(rest::parse_instruments("{}").is_err());
}

#[test]
fn recorded_buckets_become_valid_candles() {
    let interval: Interval = "1m".parse().unwrap();
    let candles =
        rest::parse_buckets(&data("trade_bucketed_1m_XBTUSD_2021-05-19.json"), pair("XBT/USD"), interval).unwrap();
    assert_eq!(candles.len(), 60);
    let first = &candles[0];
    // The bucket stamped 13:00 is the one that ENDS at 13:00.
    assert_eq!(first.open_time, crypy_core::time::parse_iso_utc("2021-05-19T12:59:00.000Z").unwrap());
    assert_eq!(first.close_time(), crypy_core::time::parse_iso_utc("2021-05-19T13:00:00.000Z").unwrap());
    assert_eq!(
        [first.open, first.high, first.low, first.close].map(|p| p.to_string()),
        ["33525", "34157.5", "33326", "33852.5"]
    );
    assert_eq!((first.volume.to_string(), first.trades), ("29239023".into(), Some(2054)));
    // BitMEX's open is the previous close, here outside the bucket's own range.
    let odd = &candles[10];
    assert_eq!([odd.open, odd.low, odd.high].map(|p| p.to_string()), ["30615", "28469.5", "30574.5"]);
    assert!(odd.open > odd.high);
    for c in &candles {
        c.check().unwrap();
    }
    for w in candles.windows(2) {
        assert_eq!(w[1].open_time - w[0].open_time, 60_000);
        assert_eq!(w[1].open, w[0].close);
    }
    // A bucket without trades (nulls) still makes a valid candle at the close.
    let empty = r#"[{"timestamp":"2021-05-19T13:01:00.000Z","symbol":"XBTUSD","open":33852.5,"high":null,"low":null,"close":33852.5,"trades":0,"volume":0}]"#;
    let c = &rest::parse_buckets(empty, pair("XBT/USD"), interval).unwrap()[0];
    assert_eq!((c.high, c.low), (c.close, c.close));
    assert!(rest::bin_size("15m".parse().unwrap()).is_err());
    assert_eq!(rest::bin_size("1h".parse().unwrap()).unwrap(), "1h");
}

#[test]
fn recorded_orders_parse_with_their_values() {
    let recording: serde_json::Value = serde_json::from_str(&data("ccxt_static_responses.json")).unwrap();
    let fetch_order = serde_json::to_string(&recording["methods"]["fetchOrder"][0]["httpResponse"]).unwrap();
    let orders = rest::parse_orders(&fetch_order).unwrap();
    let o = &orders[0];
    assert_eq!(o.venue_order_id, "eaf968c6-906b-4aaa-a32a-ab65d6e06ed7");
    assert_eq!((o.symbol.as_str(), o.side, o.status), ("XBTUSDT", Side::Buy, OrderStatus::Filled));
    assert_eq!(
        (o.qty.to_string(), o.filled.to_string(), o.remaining.to_string()),
        ("1000".into(), "1000".into(), "0".into())
    );
    assert_eq!(o.avg_price.unwrap().to_string(), "20933");
    assert_eq!(o.client_id, None);
    let mut total = 0;
    for (method, cases) in recording["methods"].as_object().unwrap() {
        for case in cases.as_array().unwrap() {
            let body = serde_json::to_string(&case["httpResponse"]).unwrap();
            total += rest::parse_orders(&body).unwrap_or_else(|e| panic!("{method}: {e}")).len();
        }
    }
    assert!(total >= 3);
}

#[test]
fn margins_and_positions_scale_exactly() {
    // Shapes of BitMEX's /user/margin and /position documentation (not recorded: no real
    // account's private bodies were found).
    let margin = r#"[{"account":1,"currency":"XBt","walletBalance":123456789,"marginBalance":123456789,"availableMargin":100000001},
                     {"account":1,"currency":"USDt","walletBalance":2500000,"availableMargin":2500000}]"#;
    let balances = rest::parse_margins(margin).unwrap();
    assert_eq!(balances[0].asset.as_str(), "XBT");
    assert_eq!(
        (balances[0].free.to_string(), balances[0].reserved.to_string(), balances[0].total().to_string()),
        ("1.00000001".into(), "0.23456788".into(), "1.23456789".into())
    );
    assert_eq!((balances[1].asset.as_str(), balances[1].total().to_string()), ("USDT", "2.5".into()));
    let one = rest::parse_margins(r#"{"currency":"XBt","walletBalance":1,"availableMargin":1}"#).unwrap();
    assert_eq!(one[0].free.to_string(), "0.00000001");

    let positions = r#"[{"account":1,"symbol":"XBTUSD","currency":"XBt","currentQty":-300,"avgEntryPrice":32180.5,"realisedPnl":-2331},
                        {"account":1,"symbol":"XBTU21","currency":"XBt","currentQty":100,"avgEntryPrice":32000}]"#;
    let p = rest::parse_positions(positions, &markets()).unwrap();
    assert_eq!(p.len(), 1, "XBTU21 is not a market");
    assert_eq!((p[0].pair, p[0].qty.to_string()), (pair("XBT/USD"), "-300".into()));
    assert_eq!(p[0].avg_price.unwrap().to_string(), "32180.5");
    assert_eq!(p[0].realized_pnl.to_string(), "-0.00002331");

    // A table update carries only what changed; a null clears (a flat position has no entry price).
    let mut row = rest::parse_position_rows(positions).unwrap().remove(0);
    row.merge(&rest::parse_position_rows(r#"[{"symbol":"XBTUSD","currentQty":-100}]"#).unwrap()[0]);
    let p = row.position(&markets()).unwrap();
    assert_eq!((p.qty.to_string(), p.avg_price.unwrap().to_string()), ("-100".into(), "32180.5".into()));
    row.merge(&rest::parse_position_rows(r#"[{"symbol":"XBTUSD","currentQty":0,"avgEntryPrice":null}]"#).unwrap()[0]);
    let p = row.position(&markets()).unwrap();
    assert_eq!((p.qty.to_string(), p.avg_price, p.realized_pnl.to_string()), ("0".into(), None, "-0.00002331".into()));
}

#[test]
fn executions_become_fills_and_cancellations() {
    let m = markets();
    let rows = r#"[{"execID":"e1","orderID":"o1","clOrdID":"t-1","symbol":"XBTUSD","side":"Buy","lastQty":100,"lastPx":32180.5,
                    "execType":"Trade","ordStatus":"PartiallyFilled","leavesQty":200,"commission":0.00075,"execComm":233,
                    "settlCurrency":"XBt","transactTime":"2021-07-22T22:36:07.865Z"},
                   {"execID":"e2","orderID":"o1","clOrdID":"t-1","symbol":"XBTUSD","side":"Buy","lastQty":null,"lastPx":null,
                    "execType":"Canceled","ordStatus":"Canceled","leavesQty":0,"text":"Canceled: Cancel from www.bitmex.com"},
                   {"execID":"e3","orderID":"o2","clOrdID":"","symbol":"XBTUSD","execType":"New"}]"#;
    let rows: Vec<Execution> = serde_json::from_str(rows).unwrap();
    let id = |c: &str| c.parse::<ClientOrderId>().ok();
    let Some(ExecutionReport::Fill(f)) = rows[0].report(&m, id).unwrap() else { panic!("not a fill") };
    assert_eq!((f.fill_id.as_str(), f.client_id.as_str(), f.side), ("e1", "t-1", Side::Buy));
    assert_eq!(
        (f.qty.to_string(), f.price.to_string(), f.remaining.to_string()),
        ("100".into(), "32180.5".into(), "200".into())
    );
    assert_eq!((f.fee.to_string(), f.fee_asset.as_str()), ("0.00000233".into(), "XBT"));
    assert_eq!(f.venue_order_id.as_deref(), Some("o1"));
    assert_eq!(rows[0].time(), crypy_core::time::parse_iso_utc("2021-07-22T22:36:07.865Z"));
    let Some(ExecutionReport::Canceled { client_id, reason }) = rows[1].report(&m, id).unwrap() else { panic!() };
    assert_eq!((client_id.as_str(), reason.as_str()), ("t-1", "Canceled: Cancel from www.bitmex.com"));
    assert_eq!(rows[2].report(&m, id).unwrap(), None);
}

#[test]
fn the_recorded_book_applies() {
    let mut books = BTreeMap::new();
    let text = data("ws_orderBookL2_XBTUSD_2021-07-22.jsonl");
    for line in text.lines() {
        let msg: serde_json::Value = serde_json::from_str(line).unwrap();
        let rows = serde_json::to_string(&msg["data"]).unwrap();
        rest::apply_book(&mut books, msg["action"].as_str().unwrap(), &rows).unwrap();
        if msg["action"] == "partial" {
            assert_eq!(books["XBTUSD"].len(), 50);
        }
    }
    let book = &books["XBTUSD"];
    assert_eq!(book.len(), 56);
    let (bid, ask) = book.best();
    assert_eq!(bid, Some((d("32180"), d("1259000"))));
    assert_eq!(ask, Some((d("32180.5"), d("28100"))));
    // A new partial replaces the book: how a reconnect resyncs.
    let first = text.lines().next().unwrap();
    let msg: serde_json::Value = serde_json::from_str(first).unwrap();
    rest::apply_book(&mut books, "partial", &serde_json::to_string(&msg["data"]).unwrap()).unwrap();
    assert_eq!(books["XBTUSD"].len(), 50);
}

#[test]
fn what_crypy_sends_is_exact() {
    let m = markets();
    let xbtusd = m.instrument(&pair("XBT/USD")).unwrap();
    let order = |kind, qty: &str| OrderRequest {
        client_id: "t-7".parse().unwrap(),
        pair: pair("XBT/USD"),
        side: Side::Sell,
        kind,
        qty: qty.parse().unwrap(),
        allocation: None,
    };
    let limit = order(OrderKind::Limit { price: "32180.50".parse().unwrap() }, "200");
    assert_eq!(
        rest::order_body(&limit, "XBTUSD"),
        r#"{"symbol":"XBTUSD","side":"Sell","orderQty":200,"clOrdID":"t-7","ordType":"Limit","price":32180.5}"#
    );
    rest::check_order(&limit, xbtusd).unwrap();
    let stop = order(OrderKind::StopLoss { trigger: "30000".parse().unwrap() }, "100");
    assert!(rest::order_body(&stop, "XBTUSD").ends_with(r#""ordType":"Stop","stopPx":30000}"#));
    let tp = order(OrderKind::TakeProfit { trigger: "35000".parse().unwrap() }, "100");
    assert!(rest::order_body(&tp, "XBTUSD").ends_with(r#""ordType":"MarketIfTouched","stopPx":35000}"#));
    assert!(rest::order_body(&order(OrderKind::Market, "100"), "XBTUSD").ends_with(r#""ordType":"Market"}"#));
    assert!(rest::check_order(&order(OrderKind::Market, "150"), xbtusd).unwrap_err().to_string().contains("lot size"));
    let off_tick = order(OrderKind::Limit { price: "32180.25".parse().unwrap() }, "100");
    assert!(rest::check_order(&off_tick, xbtusd).unwrap_err().to_string().contains("tick size"));

    let short: ClientOrderId = "XBT/USD#3-17".parse().unwrap();
    assert_eq!(rest::cl_ord_id(&short), "XBT/USD#3-17");
    let long: ClientOrderId = "a-very-long-client-order-id-that-does-not-fit-in-36".parse().unwrap();
    let mapped = rest::cl_ord_id(&long);
    assert_eq!(mapped.len(), 36);
    assert_eq!(mapped, rest::cl_ord_id(&long), "deterministic");
    assert!(mapped.starts_with('h'));

    assert_eq!(rest::encode(r#"{"clOrdID":"a b/1"}"#), "%7B%22clOrdID%22%3A%22a%20b%2F1%22%7D");
    assert_eq!(rest::iso(1_621_429_200_123), "2021-05-19T13:00:00.123Z");
    assert_eq!(rest::scaled(d("100000000"), 8).to_string(), "1");
    assert_eq!(rest::parse_number("1e-05").unwrap(), Some(d("0.00001")));
    assert_eq!(rest::parse_number("\"20933.5\"").unwrap(), Some(d("20933.5")));
    assert_eq!(rest::parse_number("null").unwrap(), None);
}
