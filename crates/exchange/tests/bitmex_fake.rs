//! The BitMEX adapter against the fake BitMEX: markets and balances, orders and their fills,
//! a dropped WebSocket, faults on `POST /order` (never a duplicate order), authentication
//! errors, and no secret anywhere.

use std::time::Duration;

use crypy_core::{Candle, ClientOrderId, Event, OrderKind, OrderRequest, Pair, Qty, Side};
use crypy_exchange::bitmex::{BitmexConfig, BitmexCredential, BitmexExchange};
use crypy_exchange::loopback::bitmex::{recorded_candles, FakeBitmex, FakeBitmexOptions, Fault};
use crypy_exchange::{Exchange, ExchangeError, RawMessage, Unfinished, VenueEvent};

const KEY: &str = "fakeKeyQ7w9Zr2LmN4p";
const SECRET: &str = "fakeSecret_x8Vt3Kp0Qa7Yd2Lm5Nz9Wc4Rb6Hj1Fg";

fn xbtusd() -> Pair {
    "XBT/USD".parse().unwrap()
}

fn fake(opts: impl FnOnce(&mut FakeBitmexOptions)) -> FakeBitmex {
    let mut o = FakeBitmexOptions::new(KEY, SECRET);
    opts(&mut o);
    FakeBitmex::start(o).unwrap()
}

fn config(fake: &FakeBitmex) -> BitmexConfig {
    let mut cfg = BitmexConfig::new("test");
    cfg.rest_url = fake.rest_url();
    cfg.ws_url = fake.ws_url();
    cfg.credential = Some(BitmexCredential::new(KEY, SECRET));
    cfg.pairs = vec![xbtusd()];
    cfg.timeout = Duration::from_millis(500);
    cfg
}

fn order(id: &str, side: Side, kind: OrderKind, qty: &str) -> OrderRequest {
    OrderRequest {
        client_id: id.parse().unwrap(),
        pair: xbtusd(),
        side,
        kind,
        qty: qty.parse().unwrap(),
        allocation: None,
    }
}

fn limit(price: &str) -> OrderKind {
    OrderKind::Limit { price: price.parse().unwrap() }
}

/// The next event that `pick` accepts, within 5 s.
async fn until(ex: &mut BitmexExchange, pick: impl Fn(&Event) -> bool) -> VenueEvent {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let e = ex.next_event().await.unwrap().unwrap();
            if pick(&e.event) {
                return e;
            }
        }
    })
    .await
    .expect("the event in time")
}

/// Every event within `window`.
async fn drain(ex: &mut BitmexExchange, window: Duration) -> Vec<VenueEvent> {
    let mut out = Vec::new();
    while let Ok(Ok(Some(e))) = tokio::time::timeout(window, ex.next_event()).await {
        out.push(e);
    }
    out
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen in 5 s");
}

fn one_order_per_cl_ord_id(fake: &FakeBitmex) {
    let orders = fake.orders();
    let mut ids: Vec<&str> = orders.iter().map(|o| o.cl_ord_id.as_str()).collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "a duplicate order: {orders:?}");
}

#[tokio::test]
async fn connect_loads_markets_balances_and_the_book() {
    let fake = fake(|_| {});
    let mut ex = BitmexExchange::connect(config(&fake)).await.unwrap();
    assert_eq!(ex.desk().to_string(), "bitmex:test");
    let markets = ex.markets().await.unwrap();
    let m = markets.iter().find(|m| m.pair == xbtusd()).unwrap();
    assert_eq!((m.venue_symbol.as_str(), m.min_qty.to_string(), m.price_precision), ("XBTUSD", "100".into(), 1));
    let balances = ex.balances().await.unwrap();
    assert_eq!(balances.len(), 1);
    assert_eq!((balances[0].asset.as_str(), balances[0].free.to_string()), ("XBT", "1".into()));
    assert_eq!(ex.balances_now(), balances);
    let caps = ex.capabilities().await.unwrap();
    assert_eq!((caps.maker_fee.to_string(), caps.taker_fee.to_string()), ("-0.00025".into(), "0.00075".into()));
    assert!(caps.margin && caps.websocket && caps.client_order_ids && caps.order_types.len() == 4);
    assert_eq!(caps.rate_limit_per_s, Some(10));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!((ex.now() - now).abs() < 5_000);
    // The recorded partial and the 40 messages after it.
    eventually("the book", || ex.book_levels(&xbtusd()) == 56).await;
    let q = ex.quote(&xbtusd()).unwrap();
    assert_eq!((q.bid.to_string(), q.ask.to_string()), ("32180".into(), "32180.5".into()));
    assert_eq!((q.bid_qty.to_string(), q.ask_qty.to_string()), ("1259000".into(), "28100".into()));
    // History from /trade/bucketed.
    let history = ex.trade_bucketed(&xbtusd(), "1m".parse().unwrap(), None, 10).await.unwrap();
    assert_eq!(history.len(), 10);
    assert_eq!(history.last().unwrap(), recorded_candles().last().unwrap());
    let start = recorded_candles()[5].open_time;
    let from = ex.trade_bucketed(&xbtusd(), "1m".parse().unwrap(), Some(start), 3).await.unwrap();
    assert_eq!(from, recorded_candles()[5..8].to_vec());
    assert_eq!(ex.instruments().await.unwrap().len(), 5);
}

#[tokio::test]
async fn a_limit_order_is_placed_amended_and_canceled() {
    let fake = fake(|_| {});
    let mut ex = BitmexExchange::connect(config(&fake)).await.unwrap();
    let id: ClientOrderId = "lim-1".parse().unwrap();
    let ack = ex.place(&order("lim-1", Side::Buy, limit("30000.5"), "300")).await.unwrap();
    let placed = &fake.orders()[0];
    assert_eq!((placed.order_id.as_str(), placed.cl_ord_id.as_str()), (ack.venue_order_id.as_str(), "lim-1"));
    assert_eq!((placed.qty.to_string(), placed.price.unwrap().to_string()), ("300".into(), "30000.5".into()));
    let body = fake.requests().into_iter().find(|r| r.method == "POST").unwrap().body;
    assert_eq!(
        body,
        r#"{"symbol":"XBTUSD","side":"Buy","orderQty":300,"clOrdID":"lim-1","ordType":"Limit","price":30000.5}"#
    );
    assert_eq!(ex.open_orders().await.unwrap(), vec![id.clone()]);
    let amended = ex.amend(&id, Some("200".parse().unwrap()), Some("30001".parse().unwrap())).await.unwrap();
    assert_eq!((amended.qty.to_string(), amended.remaining.to_string()), ("200".into(), "200".into()));
    assert_eq!(ex.order(&id).await.unwrap().unwrap().venue_order_id, ack.venue_order_id);
    ex.cancel(&id).await.unwrap();
    let e = until(&mut ex, |e| matches!(e, Event::OrderCanceled(_))).await;
    let Event::OrderCanceled(c) = e.event else { unreachable!() };
    assert_eq!(c.client_id, id);
    assert!(ex.open_orders().await.unwrap().is_empty());
    let unknown: ClientOrderId = "never-placed".parse().unwrap();
    assert_eq!(ex.cancel(&unknown).await, Err(ExchangeError::UnknownOrder(unknown)));
    // Refused before sending: BitMEX's rules on lots and ticks.
    let err = ex.place(&order("lim-2", Side::Buy, limit("30000.25"), "100")).await.unwrap_err();
    assert!(matches!(&err, ExchangeError::Rejected { reason } if reason.contains("tick")), "{err}");
    // cancel_all cancels what is open.
    ex.place(&order("lim-3", Side::Sell, limit("40000"), "100")).await.unwrap();
    ex.place(&order("lim-4", Side::Sell, limit("40001"), "100")).await.unwrap();
    assert_eq!(ex.cancel_all(Some(&xbtusd())).await.unwrap().len(), 2);
    assert!(ex.open_orders().await.unwrap().is_empty());
    one_order_per_cl_ord_id(&fake);
}

#[tokio::test]
async fn a_market_order_fills_and_the_fill_arrives_as_an_event() {
    let fake = fake(|_| {});
    let mut ex = BitmexExchange::connect(config(&fake)).await.unwrap();
    let ack = ex.place(&order("mkt-1", Side::Buy, OrderKind::Market, "3300")).await.unwrap();
    let e = until(&mut ex, |e| matches!(e, Event::OrderFilled(_))).await;
    let Event::OrderFilled(fill) = e.event else { unreachable!() };
    // At the last recorded close, 35830.5: 3300 USD contracts are 9210031 XBt, the 0.075 %
    // taker fee 6908 XBt.
    assert_eq!(recorded_candles().last().unwrap().close.to_string(), "35830.5");
    assert_eq!((fill.client_id.as_str(), fill.pair, fill.side), ("mkt-1", xbtusd(), Side::Buy));
    assert_eq!((fill.qty.to_string(), fill.price.to_string()), ("3300".into(), "35830.5".into()));
    assert_eq!((fill.fee.to_string(), fill.fee_asset.as_str()), ("0.00006908".into(), "XBT"));
    assert_eq!(
        (fill.remaining.to_string(), fill.venue_order_id.as_deref()),
        ("0".into(), Some(ack.venue_order_id.as_str()))
    );
    assert!(!fill.fill_id.is_empty());
    // The balance follows the fee, then the margin table.
    eventually("the balance", || ex.balances_now()[0].total().to_string() == "0.99993092").await;
    eventually("the position table", || ex.positions_now().first().is_some_and(|p| p.qty.to_string() == "3300")).await;
    let positions = ex.positions().await.unwrap();
    assert_eq!(ex.positions_now(), positions);
    assert_eq!(
        (positions[0].qty.to_string(), positions[0].avg_price.unwrap().to_string()),
        ("3300".into(), "35830.5".into())
    );
    // A limit order fills when a candle crosses it, as maker (a rebate: a negative fee).
    ex.place(&order("lim-9", Side::Sell, limit("35900"), "100")).await.unwrap();
    let mut crossing = recorded_candles().last().unwrap().clone();
    crossing.open_time += 60_000;
    crossing.high = "35950".parse().unwrap();
    fake.push_candle(crossing.clone());
    // The bin first, then what it filled.
    let candle = until(&mut ex, |e| matches!(e, Event::Candle(c) if c.open_time == crossing.open_time)).await;
    assert_eq!(candle.time, crossing.close_time());
    let e = until(&mut ex, |e| matches!(e, Event::OrderFilled(_))).await;
    let Event::OrderFilled(fill) = e.event else { unreachable!() };
    assert_eq!(
        (fill.client_id.as_str(), fill.price.to_string(), fill.fee.is_sign_negative()),
        ("lim-9", "35900".into(), true)
    );
}

#[tokio::test]
async fn a_client_id_too_long_for_bitmex_comes_back_as_itself() {
    let fake = fake(|_| {});
    let mut ex = BitmexExchange::connect(config(&fake)).await.unwrap();
    let long = "XBT/USD#12-allocation-4711-entry-0001-of-a-long-run";
    assert!(long.len() > 36);
    ex.place(&order(long, Side::Sell, OrderKind::Market, "100")).await.unwrap();
    let sent = &fake.orders()[0].cl_ord_id;
    assert_eq!(sent.len(), 36);
    let e = until(&mut ex, |e| matches!(e, Event::OrderFilled(_))).await;
    let Event::OrderFilled(fill) = e.event else { unreachable!() };
    assert_eq!(fill.client_id.as_str(), long);
    // Placing it again finds it (the same clOrdID): no second order.
    ex.place(&order(long, Side::Sell, OrderKind::Market, "100")).await.unwrap();
    assert_eq!(fake.orders().len(), 1);
}

#[tokio::test]
async fn candles_stream_as_events_in_order() {
    let streamed: Vec<Candle> =
        recorded_candles()[..5].iter().map(|c| Candle { open_time: c.open_time + 3_600_000, ..c.clone() }).collect();
    let s = streamed.clone();
    let fake = fake(move |o| {
        o.candles = s;
        o.candle_pace = Duration::from_millis(20);
    });
    let mut ex = BitmexExchange::connect(config(&fake)).await.unwrap();
    let mut candles = Vec::new();
    while candles.len() < 6 {
        let e = until(&mut ex, |e| matches!(e, Event::Candle(_))).await;
        let Event::Candle(c) = e.event else { unreachable!() };
        assert_eq!(e.time, c.close_time());
        candles.push(c);
    }
    // The subscription's partial is the last closed bin; then the stream.
    assert_eq!(&candles[0], recorded_candles().last().unwrap());
    assert_eq!(candles[1..], streamed[..]);
}

#[tokio::test]
async fn a_dropped_websocket_reconnects_and_no_fill_is_lost_or_repeated() {
    let fake = fake(|_| {});
    let mut ex = BitmexExchange::connect(config(&fake)).await.unwrap();
    ex.place(&order("before", Side::Buy, OrderKind::Market, "100")).await.unwrap();
    until(&mut ex, |e| matches!(e, Event::OrderFilled(f) if f.client_id.as_str() == "before")).await;
    assert_eq!(ex.ws_sessions(), 1);
    fake.drop_websockets();
    // Filled while the socket is down: it comes with the new session's partial.
    ex.place(&order("during", Side::Sell, OrderKind::Market, "100")).await.unwrap();
    let e = until(&mut ex, |e| matches!(e, Event::OrderFilled(f) if f.client_id.as_str() == "during")).await;
    assert!(matches!(e.event, Event::OrderFilled(_)));
    eventually("a second session", || ex.ws_sessions() == 2).await;
    assert_eq!(fake.authenticated_sockets(), 1, "re-authenticated");
    ex.place(&order("after", Side::Buy, OrderKind::Market, "200")).await.unwrap();
    until(&mut ex, |e| matches!(e, Event::OrderFilled(f) if f.client_id.as_str() == "after")).await;
    // The book resynced from the new partial, and nothing came twice.
    eventually("the book", || ex.book_levels(&xbtusd()) == 56).await;
    fake.drop_websockets();
    eventually("a third session", || ex.ws_sessions() == 3).await;
    let rest = drain(&mut ex, Duration::from_millis(300)).await;
    assert!(rest.iter().all(|e| !matches!(e.event, Event::OrderFilled(_))), "a fill repeated: {rest:?}");
}

async fn place_through(fault: Fault) {
    let fake = fake(|o| o.timeout_delay = Duration::from_secs(3));
    let mut cfg = config(&fake);
    cfg.timeout = Duration::from_millis(300);
    let mut ex = BitmexExchange::connect(cfg).await.unwrap();
    fake.fail_next("POST /api/v1/order", fault);
    let id = format!("fault-{fault:?}");
    let ack =
        ex.place(&order(&id, Side::Buy, limit("30000"), "100")).await.unwrap_or_else(|e| panic!("{fault:?}: {e}"));
    let orders = fake.orders();
    let mine: Vec<_> = orders.iter().filter(|o| o.cl_ord_id == id).collect();
    assert_eq!(mine.len(), 1, "{fault:?}: {orders:?}");
    assert_eq!(mine[0].order_id, ack.venue_order_id, "{fault:?}");
    assert_eq!(orders.len(), 1, "{fault:?}");
    let posts = fake.requests().iter().filter(|r| r.method == "POST").count();
    let expected_posts = if fault == Fault::Timeout { 1 } else { 2 };
    assert_eq!(posts, expected_posts, "{fault:?}: the lookup first, and a resend only when the order is not there");
}

#[tokio::test]
async fn a_429_on_post_order_is_retried_without_a_duplicate() {
    place_through(Fault::TooManyRequests).await;
}

#[tokio::test]
async fn a_503_on_post_order_is_retried_without_a_duplicate() {
    place_through(Fault::ServerError).await;
}

#[tokio::test]
async fn a_timeout_on_post_order_finds_the_order_instead_of_sending_it_again() {
    place_through(Fault::Timeout).await;
}

#[tokio::test]
async fn a_hang_up_on_post_order_is_retried_without_a_duplicate() {
    place_through(Fault::HangUp).await;
}

#[tokio::test]
async fn lasting_overload_ends_in_a_retryable_error_and_no_order() {
    let fake = fake(|_| {});
    let mut ex = BitmexExchange::connect(config(&fake)).await.unwrap();
    for _ in 0..4 {
        fake.fail_next("POST /api/v1/order", Fault::ServerError);
    }
    let err = ex.place(&order("busy", Side::Buy, limit("30000"), "100")).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("overloaded"), "{err}");
    assert!(fake.orders().is_empty());
    // The desk retries with the same id: placed once.
    ex.place(&order("busy", Side::Buy, limit("30000"), "100")).await.unwrap();
    ex.place(&order("busy", Side::Buy, limit("30000"), "100")).await.unwrap();
    assert_eq!(fake.orders().len(), 1, "Duplicate clOrdID answered with the order");
}

#[tokio::test]
async fn bad_keys_and_expired_requests_are_typed_errors_without_secrets() {
    let fake = fake(|_| {});
    let (raw, mut tapped) = tokio::sync::mpsc::unbounded_channel::<RawMessage>();
    let mut cfg = config(&fake);
    cfg.credential = Some(BitmexCredential::new(KEY, "not-the-secret-Wq81"));
    cfg.raw = Some(raw.clone());
    let err = BitmexExchange::connect(cfg).await.unwrap_err();
    assert!(matches!(&err, ExchangeError::Rejected { reason } if reason.contains("Signature not valid.")), "{err}");
    let mut texts = vec![err.to_string(), format!("{err:?}")];

    let mut cfg = config(&fake);
    cfg.credential = Some(BitmexCredential::new("someone-else", SECRET));
    let err = BitmexExchange::connect(cfg).await.unwrap_err();
    assert!(matches!(&err, ExchangeError::Rejected { reason } if reason.contains("Invalid API Key.")), "{err}");
    texts.push(format!("{err} {err:?}"));

    // An expired request, signed correctly: what BitMEX says, as crypy's error.
    let c = BitmexCredential::new(KEY, SECRET);
    let expires = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 5;
    let response = crypy_exchange::net::http_client(Duration::from_secs(2))
        .unwrap()
        .get(format!("{}/position", fake.rest_url()))
        .header("api-key", KEY)
        .header("api-expires", expires.to_string())
        .header("api-signature", c.sign("GET", "/api/v1/position", expires, ""))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let err = crypy_exchange::bitmex::http::error(status, &response.text().await.unwrap());
    assert!(matches!(&err, ExchangeError::Rejected { reason } if reason.contains("This request has expired")), "{err}");

    // A working session, recorded, with errors of its own.
    let mut cfg = config(&fake);
    cfg.raw = Some(raw);
    texts.push(format!("{cfg:?}"));
    let mut ex = BitmexExchange::connect(cfg).await.unwrap();
    ex.place(&order("tap-1", Side::Buy, OrderKind::Market, "100")).await.unwrap();
    until(&mut ex, |e| matches!(e, Event::OrderFilled(_))).await;
    let err = ex.place(&order("tap-2", Side::Buy, limit("30000"), "150")).await.unwrap_err();
    texts.push(format!("{err} {err:?}"));
    fake.fail_next("/api/v1/position", Fault::HangUp);
    fake.fail_next("/api/v1/position", Fault::HangUp);
    fake.fail_next("/api/v1/position", Fault::HangUp);
    fake.fail_next("/api/v1/position", Fault::HangUp);
    let err = ex.positions().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    texts.push(format!("{err} {err:?}"));
    texts.push(format!("{ex:?}"));
    drop(ex);
    let mut recorded = 0;
    while let Ok(m) = tapped.try_recv() {
        assert!(!m.text.contains("authKeyExpires"), "the auth answer echoes the signature: {}", m.text);
        texts.push(format!("{} {}", m.channel, m.text));
        recorded += 1;
    }
    assert!(recorded > 10, "{recorded} raw messages");
    assert!(texts.iter().any(|t| t.starts_with("ws:execution")));
    assert!(texts.iter().any(|t| t.starts_with("rest:/api/v1/instrument/active")));
    for t in &texts {
        assert!(!t.contains(KEY) && !t.contains(SECRET) && !t.contains("Wq81"), "a secret in {t}");
    }
}

#[tokio::test]
async fn without_a_key_only_public_data() {
    let fake = fake(|_| {});
    let mut cfg = config(&fake);
    cfg.credential = None;
    let mut ex = BitmexExchange::connect(cfg).await.unwrap();
    assert!(ex.markets().await.unwrap().iter().any(|m| m.pair == xbtusd()));
    let err = ex.place(&order("pub-1", Side::Buy, OrderKind::Market, "100")).await.unwrap_err();
    assert!(matches!(&err, ExchangeError::Rejected { reason } if reason.contains("no API key")), "{err}");
    assert!(matches!(ex.balances().await, Err(ExchangeError::Rejected { .. })));
    assert_eq!(ex.trade_bucketed(&xbtusd(), "1m".parse().unwrap(), None, 2).await.unwrap().len(), 2);
    assert!(fake.orders().is_empty());
    let mut cfg = config(&fake);
    cfg.pairs = vec!["DOGE/EUR".parse().unwrap()];
    assert!(matches!(BitmexExchange::connect(cfg).await, Err(ExchangeError::Rejected { .. })));
}

#[tokio::test]
async fn bins_closed_while_the_socket_was_down_are_fetched_in_order() {
    let fake = fake(|_| {});
    let mut ex = BitmexExchange::connect(config(&fake)).await.unwrap();
    let last = recorded_candles().last().unwrap().clone();
    let next = |n: i64| {
        let mut c = last.clone();
        c.open_time += 60_000 * n;
        c
    };
    // The subscription's partial, then a streamed bin.
    until(&mut ex, |e| matches!(e, Event::Candle(c) if *c == last)).await;
    fake.push_candle(next(1));
    until(&mut ex, |e| matches!(e, Event::Candle(c) if c.open_time == next(1).open_time)).await;
    fake.drop_websockets();
    for n in 2..=4 {
        fake.push_candle(next(n));
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let e = until(&mut ex, |e| matches!(e, Event::Candle(_))).await;
        let Event::Candle(c) = e.event else { unreachable!() };
        seen.push(c);
    }
    assert_eq!(seen, vec![next(2), next(3), next(4)]);
    assert!(fake.requests().iter().any(|r| r.target.starts_with("/api/v1/trade/bucketed")));
    let rest = drain(&mut ex, Duration::from_millis(200)).await;
    assert!(rest.iter().all(|e| !matches!(e.event, Event::Candle(_))), "a bin repeated: {rest:?}");
}

#[tokio::test]
async fn orders_keep_to_ten_a_second() {
    let fake = fake(|_| {});
    let mut ex = BitmexExchange::connect(config(&fake)).await.unwrap();
    for n in 0..13 {
        ex.place(&order(&format!("burst-{n}"), Side::Buy, limit("30000"), "100")).await.unwrap();
    }
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(fake.orders().len(), 13);
    // Whenever x-ratelimit-remaining-1s reached 0, the next order waited for the next second:
    // no 429 above, and every order placed once.
    one_order_per_cl_ord_id(&fake);
}

/// The desk drives the adapter from a multi-threaded runtime: every future must be `Send`.
#[allow(dead_code)]
fn futures_are_send(ex: &mut BitmexExchange, cfg: BitmexConfig, id: &ClientOrderId) {
    fn send<T: Send>(_: T) {}
    send(BitmexExchange::connect(cfg));
    send(ex.trade_bucketed(&xbtusd(), "1m".parse().unwrap(), None, 1));
    send(ex.positions());
    send(ex.order(id));
    send(ex.amend(id, None, None));
    send(ex.cancel_all(None));
    send(ex.instruments());
    send(ex.next_event());
}

#[tokio::test]
async fn partial_fills_then_a_cancel_and_a_triggered_stop() {
    let fake = fake(|_| {});
    let mut ex = BitmexExchange::connect(config(&fake)).await.unwrap();
    ex.place(&order("part-1", Side::Buy, limit("35000"), "500")).await.unwrap();
    assert!(fake.fill_partially("part-1", "200".parse().unwrap(), "35000".parse().unwrap()));
    let e = until(&mut ex, |e| matches!(e, Event::OrderPartiallyFilled(_))).await;
    let Event::OrderPartiallyFilled(fill) = e.event else { unreachable!() };
    assert_eq!((fill.qty.to_string(), fill.remaining.to_string()), ("200".into(), "300".into()));
    let id: ClientOrderId = "part-1".parse().unwrap();
    assert_eq!(ex.open_orders().await.unwrap(), vec![id.clone()]);
    ex.cancel(&id).await.unwrap();
    let e = until(&mut ex, |e| matches!(e, Event::OrderCanceled(_))).await;
    assert!(matches!(e.event, Event::OrderCanceled(c) if c.client_id == id));

    // A stop-loss sell triggers when a bin trades through it, and fills as taker.
    let stop = OrderKind::StopLoss { trigger: "35000".parse().unwrap() };
    ex.place(&order("stop-1", Side::Sell, stop, "200")).await.unwrap();
    let mut falling = recorded_candles().last().unwrap().clone();
    falling.open_time += 60_000;
    falling.low = "34900".parse().unwrap();
    falling.close = "34950".parse().unwrap();
    fake.push_candle(falling);
    let e = until(&mut ex, |e| matches!(e, Event::OrderFilled(_))).await;
    let Event::OrderFilled(fill) = e.event else { unreachable!() };
    assert_eq!((fill.client_id.as_str(), fill.side, fill.price.to_string()), ("stop-1", Side::Sell, "35000".into()));
    assert!(!fill.fee.is_sign_negative() && !fill.fee.is_zero());
    let sent = fake.orders().into_iter().find(|o| o.cl_ord_id == "stop-1").unwrap();
    assert_eq!((sent.ord_type.as_str(), sent.stop_px.unwrap().to_string()), ("Stop", "35000".into()));
}

#[tokio::test]
async fn a_restarted_desk_reconciles_what_an_earlier_run_left_out() {
    let fake = fake(|_| {});
    let resting = order("r1-resting", Side::Buy, limit("30000.5"), "300");
    {
        // The earlier run: a limit order rests at BitMEX, then the process dies.
        let mut ex = BitmexExchange::connect(config(&fake)).await.unwrap();
        ex.place(&resting).await.unwrap();
    }
    let mut ex = BitmexExchange::connect(config(&fake)).await.unwrap();
    let never_sent: ClientOrderId = "r1-lost".parse().unwrap();
    let closing =
        ex.reconcile(&[Unfinished::new(resting.client_id.clone()), Unfinished::new(never_sent.clone())]).await.unwrap();
    let reasons: Vec<(ClientOrderId, String)> = closing
        .into_iter()
        .map(|e| match e.event {
            Event::OrderCanceled(c) => (c.client_id, c.reason),
            other => panic!("not a cancellation: {other:?}"),
        })
        .collect();
    assert_eq!(reasons[0].0, resting.client_id);
    assert!(reasons[0].1.starts_with("left open by an earlier run; canceled at restart"), "{}", reasons[0].1);
    assert_eq!(reasons[1], (never_sent, "unknown to BitMEX: the request never arrived".to_string()));
    assert!(ex.open_orders().await.unwrap().is_empty(), "the resting order no longer works for a dead run");
    one_order_per_cl_ord_id(&fake);
}

/// Orders that traded while no desk recorded them: each execution the earlier run did not
/// record comes back as its own fill, with BitMEX's price and fee, then the order's end.
#[tokio::test]
async fn a_restarted_desk_imports_the_fills_it_missed_trade_by_trade() {
    let fake = fake(|_| {});
    let filled = order("r2-filled", Side::Buy, OrderKind::Market, "3300");
    let partly = order("r2-partly", Side::Buy, limit("30000.5"), "300");
    let mut recorded = std::collections::BTreeSet::new();
    {
        // The earlier run: the limit order's first trade is seen and recorded, then the
        // process dies; the rest trades while no desk records it.
        let mut ex = BitmexExchange::connect(config(&fake)).await.unwrap();
        ex.place(&partly).await.unwrap();
        assert!(fake.fill_partially("r2-partly", "100".parse().unwrap(), "30000.5".parse().unwrap()));
        let first = until(&mut ex, |e| matches!(e, Event::OrderPartiallyFilled(_))).await;
        let Event::OrderPartiallyFilled(f) = first.event else { unreachable!() };
        recorded.insert(f.fill_id.clone());
        ex.place(&filled).await.unwrap();
    }
    assert!(fake.fill_partially("r2-partly", "100".parse().unwrap(), "30000.0".parse().unwrap()));
    let mut ex = BitmexExchange::connect(config(&fake)).await.unwrap();
    let unfinished = [
        Unfinished { client_id: partly.client_id.clone(), recorded_fills: recorded },
        Unfinished::new(filled.client_id.clone()),
    ];
    let events: Vec<Event> = ex.reconcile(&unfinished).await.unwrap().into_iter().map(|e| e.event).collect();
    let qty = |s: &str| Qty::new(s.parse().unwrap());
    match &events[..] {
        [Event::OrderPartiallyFilled(second), Event::OrderCanceled(rest), Event::OrderFilled(market)] => {
            assert_eq!((second.qty, second.price.to_string()), (qty("100"), "30000".into()));
            assert_eq!(second.remaining, qty("100"), "what is left after both trades");
            assert!(rest.reason.starts_with("left open by an earlier run; canceled at restart"), "{}", rest.reason);
            assert_eq!((market.client_id.as_str(), market.qty), ("r2-filled", qty("3300")));
            assert!(market.remaining.is_zero());
        }
        other => panic!("{other:?}"),
    }
    assert!(ex.open_orders().await.unwrap().is_empty());
    one_order_per_cl_ord_id(&fake);

    // An order BitMEX says filled but whose trades it does not list stops the start.
    fake.forget_trades();
    let mut again = BitmexExchange::connect(config(&fake)).await.unwrap();
    let err = again.reconcile(&[Unfinished::new(filled.client_id.clone())]).await.unwrap_err().to_string();
    assert!(err.contains("r2-filled") && err.contains("filled 3300") && err.contains("does not start"), "{err}");
}
