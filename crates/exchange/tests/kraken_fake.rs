//! KrakenExchange against the fake Kraken: markets, balances, orders and their fills,
//! reconnections, faults that must not double an order, authentication errors, secrets.

use std::time::Duration;

use crypy_core::{Candle, ClientOrderId, Event, Fill, Interval, OrderKind, OrderRequest, Pair, Price, Qty, Side};
use crypy_exchange::kraken::{cl_ord_id, KrakenConfig, KrakenCredential, KrakenExchange, Tier};
use crypy_exchange::loopback::kraken::{FakeKraken, FakeKrakenOptions, Fault};
use crypy_exchange::{Exchange, ExchangeError, RawMessage, Unfinished, VenueEvent};

/// The secret of Kraken's authentication guide (no real account behind it).
const SECRET: &str = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";
const KEY: &str = "FAKEKEY-4f1c2a9e";

fn xbteur() -> Pair {
    "XBT/EUR".parse().unwrap()
}

fn xbtusd() -> Pair {
    "XBT/USD".parse().unwrap()
}

fn candles(n: usize) -> Vec<Candle> {
    let minute: Interval = "1m".parse().unwrap();
    (0..n)
        .map(|i| {
            let base = 9000 + i as i64 * 10;
            let d = |x: i64| rust_decimal::Decimal::new(x * 10 + 5, 1);
            Candle {
                pair: xbteur(),
                interval: minute,
                open_time: 1_700_000_000_000 + i as i64 * 60_000,
                open: Price::new(d(base)),
                high: Price::new(d(base + 20)),
                low: Price::new(d(base - 20)),
                close: Price::new(d(base + 5)),
                volume: Qty::new(rust_decimal::Decimal::new(125, 2)),
                trades: Some(7),
            }
        })
        .collect()
}

fn fake(opts: impl FnOnce(&mut FakeKrakenOptions)) -> FakeKraken {
    let mut o = FakeKrakenOptions::new(KEY, SECRET);
    o.candles = candles(10);
    o.balances = FakeKrakenOptions::balance_body(&[("ZEUR", "100000.0000"), ("XXBT", "1.0000000000"), ("ADA", "55.0")]);
    o.late_by = Duration::from_millis(1500);
    opts(&mut o);
    FakeKraken::start(o).unwrap()
}

fn config(fake: &FakeKraken, pairs: Vec<Pair>) -> KrakenConfig {
    let mut c = KrakenConfig::new("test");
    c.rest_url = fake.rest_url();
    c.ws_url = fake.ws_url();
    c.ws_auth_url = fake.ws_auth_url();
    c.credential = Some(KrakenCredential::new(KEY, SECRET).unwrap());
    c.pairs = pairs;
    c.interval = "1m".parse().unwrap();
    c.timeout = Duration::from_millis(400);
    c.tier = Tier::Pro;
    c
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn next_event(ex: &mut KrakenExchange) -> VenueEvent {
    tokio::time::timeout(Duration::from_secs(5), ex.next_event()).await.expect("an event in time").unwrap().unwrap()
}

async fn no_event(ex: &mut KrakenExchange) {
    if let Ok(e) = tokio::time::timeout(Duration::from_millis(300), ex.next_event()).await {
        panic!("unexpected event {e:?}");
    }
}

fn order(id: &str, side: Side, kind: OrderKind, qty: &str) -> OrderRequest {
    OrderRequest {
        client_id: id.parse().unwrap(),
        pair: xbteur(),
        side,
        kind,
        qty: qty.parse().unwrap(),
        allocation: None,
    }
}

fn limit(price: &str) -> OrderKind {
    OrderKind::Limit { price: price.parse().unwrap() }
}

/// Connected, with both streams subscribed.
/// The next fill of the order sent as `client_id`, as the private stream reports it.
async fn next_fill(ex: &mut KrakenExchange, client_id: &str) -> Fill {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), ex.next_event()).await.expect("a fill in time");
        match e.unwrap().expect("the stream goes on").event {
            Event::OrderFilled(f) | Event::OrderPartiallyFilled(f) if f.client_id.as_str() == client_id => return *f,
            _ => {}
        }
    }
}

async fn connected(fake: &FakeKraken, cfg: KrakenConfig) -> KrakenExchange {
    let ex = KrakenExchange::connect(cfg).await.unwrap();
    wait_until("the ohlc subscription", || fake.ohlc_subscribed()).await;
    wait_until("the private stream", || ex.connections().1 >= 1).await;
    // The executions subscription follows the connection closely; let it land.
    tokio::time::sleep(Duration::from_millis(100)).await;
    ex
}

#[tokio::test]
async fn markets_balances_orders_fills_and_candles() {
    let fake = fake(|o| o.fee_percent = ("0.24".parse().unwrap(), "0.14".parse().unwrap()));
    let mut ex = connected(&fake, config(&fake, vec![xbteur()])).await;
    assert_eq!(ex.desk().to_string(), "kraken:test");
    let markets = ex.markets().await.unwrap();
    let m = markets.iter().find(|m| m.pair == xbteur()).unwrap();
    assert_eq!((m.venue_symbol.as_str(), m.price_precision, m.qty_precision), ("XXBTZEUR", 1, 8));
    let balances = ex.balances().await.unwrap();
    let eur = |b: &[crypy_core::Balance]| b.iter().find(|b| b.asset.as_str() == "EUR").unwrap().free.to_string();
    assert_eq!(eur(&balances), "100000.0000");
    let caps = ex.capabilities().await.unwrap();
    assert!(caps.client_order_ids && caps.websocket && !caps.margin);
    assert_eq!(
        (caps.taker_fee.normalize().to_string(), caps.maker_fee.normalize().to_string()),
        ("0.0024".into(), "0.0014".into()),
        "the account's rates"
    );
    assert!(caps.supports(crypy_core::order::OrderType::StopLoss));

    // Candles: each committed when the next one begins.
    assert!(fake.next_candle() && fake.next_candle());
    let e = next_event(&mut ex).await;
    let Event::Candle(c) = &e.event else { panic!("{e:?}") };
    assert_eq!(c, &candles(10)[0]);
    assert_eq!(e.time, c.close_time());

    // A limit order below the market, then canceled.
    let ack = ex.place(&order("lim-1", Side::Buy, limit("8000.19"), "0.0100000099")).await.unwrap();
    let add = fake.requests().into_iter().rfind(|r| r.path == "/0/private/AddOrder").unwrap();
    assert!(add.body.contains("price=8000.1&") || add.body.ends_with("price=8000.1"), "{}", add.body);
    assert!(add.body.contains("volume=0.01000000"), "{}", add.body);
    assert!(add.body.contains("cl_ord_id=lim-1"), "{}", add.body);
    assert_eq!(ex.open_orders().await.unwrap(), vec!["lim-1".parse::<ClientOrderId>().unwrap()]);
    assert_eq!(fake.orders()[0].txid, ack.venue_order_id);
    ex.cancel(&"lim-1".parse().unwrap()).await.unwrap();
    let e = next_event(&mut ex).await;
    let Event::OrderCanceled(c) = &e.event else { panic!("{e:?}") };
    assert_eq!(c.client_id.as_str(), "lim-1");
    assert!(ex.open_orders().await.unwrap().is_empty());
    let again = ex.cancel(&"lim-1".parse().unwrap()).await.unwrap_err();
    assert_eq!(again, ExchangeError::UnknownOrder("lim-1".parse().unwrap()));

    // A market order fills at once, at the current candle's close.
    let ack = ex.place(&order("mkt-1", Side::Buy, OrderKind::Market, "0.01")).await.unwrap();
    let e = next_event(&mut ex).await;
    let Event::OrderFilled(f) = &e.event else { panic!("{e:?}") };
    assert_eq!((f.client_id.as_str(), f.venue_order_id.as_deref()), ("mkt-1", Some(ack.venue_order_id.as_str())));
    assert_eq!((f.qty.to_string(), f.price.to_string()), ("0.01000000".into(), "9015.5".into()));
    assert_eq!((f.fee.to_string(), f.fee_asset.as_str(), f.remaining.is_zero()), ("0.21637".into(), "EUR", true));
    assert!(f.fill_id.starts_with('T'));
    // 0.01 XBT in, 90.155 EUR and the fee out; the balances channel says the same.
    let now = |a: &str| ex.balances_now().into_iter().find(|b| b.asset.as_str() == a).unwrap().free.value().normalize();
    assert_eq!((now("XBT").to_string(), now("EUR").to_string()), ("1.01".into(), "99909.62863".into()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!((now("XBT").to_string(), now("EUR").to_string()), ("1.01".into(), "99909.62863".into()));
    assert_eq!(eur(&ex.balances().await.unwrap()), "99909.628630000", "the venue's own Balance agrees");

    // A limit sell above the market fills when a candle reaches it.
    ex.place(&order("lim-2", Side::Sell, limit("9030.5"), "0.005")).await.unwrap();
    assert!(fake.next_candle());
    let mut filled = None;
    for _ in 0..2 {
        let e = next_event(&mut ex).await;
        if let Event::OrderFilled(f) = e.event {
            filled = Some(f);
        }
    }
    let f = filled.expect("the limit sell filled");
    assert_eq!(
        (f.client_id.as_str(), f.price.to_string(), f.fee.to_string()),
        ("lim-2", "9030.5".into(), "0.06321".into())
    );

    // The typed extras.
    let closed = ex.closed_orders().await.unwrap();
    assert_eq!(closed.len(), 3);
    let ids: Vec<String> = closed.iter().map(|o| o.txid.clone()).collect();
    let queried = ex.query_orders(&ids[..2]).await.unwrap();
    assert_eq!(queried.iter().map(|o| o.txid.clone()).collect::<Vec<_>>(), ids[..2]);
    let market = closed.iter().find(|o| o.cl_ord_id.as_deref() == Some("mkt-1")).unwrap();
    assert_eq!(
        (market.status.as_str(), market.average_price.to_string(), market.price),
        ("closed", "9015.5".into(), None)
    );
    assert_eq!(fake.balance("XXBT").unwrap().normalize().to_string(), "1.005");
    assert!(ex.open_orders_detailed().await.unwrap().is_empty());
    let trades = ex.trades_history().await.unwrap();
    assert_eq!(trades.len(), 2);
    assert_eq!(ex.ticker(&xbteur()).await.unwrap().last.to_string(), "7561.00000");
    assert_eq!(ex.ohlc(&xbteur(), "1h".parse().unwrap()).await.unwrap().len(), 719);
    assert_eq!(ex.depth(&xbteur(), 5).await.unwrap().bids.len(), 5);
    let descr = ex.validate_order(&order("val-1", Side::Buy, limit("1234"), "0.01")).await.unwrap();
    assert_eq!(descr, "buy 0.01000000 XBTEUR @ limit 1234.0");
    assert_eq!(fake.orders().len(), 3, "validate placed nothing");
    assert_eq!(ex.cancel_all().await.unwrap(), 0);
}

#[tokio::test]
async fn the_fake_refuses_what_kraken_refuses() {
    let fake = fake(|_| {});
    let mut ex = connected(&fake, config(&fake, vec![xbteur()])).await;
    let err = ex.place(&order("rich", Side::Buy, limit("8000"), "20")).await.unwrap_err();
    assert_eq!(err, ExchangeError::Rejected { reason: "EOrder:Insufficient funds".into() });
    let err = ex.place(&order("tiny", Side::Buy, limit("8000"), "0.001")).await.unwrap_err();
    assert!(err.to_string().contains("below Kraken's minimum"), "{err}");
    // The same cl_ord_id twice while the first is open.
    ex.place(&order("dup-1", Side::Buy, limit("8000"), "0.01")).await.unwrap();
    let ack = ex.place(&order("dup-1", Side::Buy, limit("8000"), "0.01")).await.unwrap();
    assert_eq!(ack.venue_order_id, fake.orders()[0].txid, "the duplicate is answered with the order that exists");
    assert_eq!(fake.orders().len(), 1);
}

#[tokio::test]
async fn faults_on_add_order_never_double_an_order() {
    let fake = fake(|_| {});
    let mut ex = connected(&fake, config(&fake, vec![xbteur()])).await;
    let cases = [
        ("rl-1", Fault::TooManyRequests, limit("8000")),
        ("5xx-1", Fault::ServerError, limit("8000")),
        ("to-1", Fault::Timeout, limit("8000")),
        ("to-mkt", Fault::Timeout, OrderKind::Market),
        ("hup-1", Fault::HangUp, limit("8000")),
    ];
    for (id, fault, kind) in cases {
        fake.fail_next("/0/private/AddOrder", fault);
        let ack = ex.place(&order(id, Side::Buy, kind, "0.01")).await.unwrap_or_else(|e| panic!("{id}: {e}"));
        let cl = cl_ord_id(&id.parse().unwrap());
        let placed: Vec<_> =
            fake.orders().into_iter().filter(|o| o.cl_ord_id.as_deref() == Some(cl.as_str())).collect();
        assert_eq!(placed.len(), 1, "{id}: exactly one order");
        assert_eq!(placed[0].txid, ack.venue_order_id, "{id}");
    }
    // Two faults in a row, then success.
    fake.fail_next("AddOrder", Fault::TooManyRequests);
    fake.fail_next("AddOrder", Fault::ServerError);
    ex.place(&order("twice", Side::Buy, limit("8000"), "0.01")).await.unwrap();
    let ids: Vec<_> = fake.orders().into_iter().filter_map(|o| o.cl_ord_id).collect();
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (6, 6), "{ids:?}");
    // The market order placed under a timeout still reports its fill once.
    let mut fills = 0;
    while let Ok(Ok(Some(e))) = tokio::time::timeout(Duration::from_millis(300), ex.next_event()).await {
        if matches!(&e.event, Event::OrderFilled(f) if f.client_id.as_str() == "to-mkt") {
            fills += 1;
        }
    }
    assert_eq!(fills, 1);
}

#[tokio::test]
async fn reconnection_resubscribes_and_loses_no_fill() {
    let fake = fake(|_| {});
    let mut ex = connected(&fake, config(&fake, vec![xbteur(), xbtusd()])).await;
    wait_until("the book", || ex.book_status(&xbtusd()).is_some_and(|s| s.verified == 510)).await;
    ex.place(&order("before", Side::Buy, OrderKind::Market, "0.01")).await.unwrap();
    let e = next_event(&mut ex).await;
    assert!(matches!(&e.event, Event::OrderFilled(f) if f.client_id.as_str() == "before"), "{e:?}");

    fake.drop_websockets();
    // Placed while the private stream is down: its fill arrives with the new snapshot.
    tokio::time::sleep(Duration::from_millis(20)).await;
    ex.place(&order("during", Side::Buy, OrderKind::Market, "0.01")).await.unwrap();
    let e = next_event(&mut ex).await;
    assert!(matches!(&e.event, Event::OrderFilled(f) if f.client_id.as_str() == "during"), "{e:?}");
    wait_until("both reconnections", || ex.connections() == (2, 2)).await;
    wait_until("the book again", || ex.book_status(&xbtusd()).is_some_and(|s| s.verified == 1020)).await;
    let book = ex.book_status(&xbtusd()).unwrap();
    assert_eq!((book.snapshots, book.mismatches), (2, 0));

    // Fills after the reconnection arrive; the old ones are not reported again.
    ex.place(&order("after", Side::Buy, OrderKind::Market, "0.01")).await.unwrap();
    let e = next_event(&mut ex).await;
    assert!(matches!(&e.event, Event::OrderFilled(f) if f.client_id.as_str() == "after"), "{e:?}");
    // Candles keep coming on the new public stream.
    assert!(fake.next_candle() && fake.next_candle());
    let e = next_event(&mut ex).await;
    assert!(matches!(&e.event, Event::Candle(c) if c.open_time == candles(10)[0].open_time), "{e:?}");
    no_event(&mut ex).await;
}

#[tokio::test]
async fn the_book_checksum_holds_through_the_recording_and_a_drift_resubscribes() {
    let fake = fake(|o| o.corrupt_book_update = Some(100));
    let ex = connected(&fake, config(&fake, vec![xbtusd()])).await;
    // Snapshot + 100 updates, a drift, then a fresh snapshot and all 509 updates.
    wait_until("the resynced book", || ex.book_status(&xbtusd()).is_some_and(|s| s.verified == 611)).await;
    let s = ex.book_status(&xbtusd()).unwrap();
    assert_eq!((s.snapshots, s.mismatches), (2, 1));
    let (bid, ask) = (s.best_bid.unwrap(), s.best_ask.unwrap());
    assert!(bid.0 < ask.0, "{bid:?} {ask:?}");
}

#[tokio::test]
async fn bad_signatures_stale_nonces_and_no_key_are_typed_errors() {
    let fake = fake(|_| {});
    let mut wrong = config(&fake, vec![]);
    wrong.credential = Some(KrakenCredential::new(KEY, "c2VjcmV0LW5vdC10aGUtcmlnaHQtb25l").unwrap());
    let err = KrakenExchange::connect(wrong).await.unwrap_err();
    assert_eq!(err, ExchangeError::Rejected { reason: "EAPI:Invalid signature".into() });

    // A nonce store far ahead of the clock, then a client counting from the clock.
    let dir = std::env::temp_dir().join(format!("crypy-kraken-nonce-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kraken.nonce");
    std::fs::write(&path, "100000000000000000").unwrap();
    let mut ahead = config(&fake, vec![]);
    ahead.nonce_path = Some(path.clone());
    let mut a = KrakenExchange::connect(ahead).await.unwrap();
    a.balances().await.unwrap();
    let err = KrakenExchange::connect(config(&fake, vec![])).await.unwrap_err();
    assert_eq!(err, ExchangeError::Rejected { reason: "EAPI:Invalid nonce".into() });
    // The store went on from its mark: a new process with it is still accepted.
    drop(a);
    let mut again = config(&fake, vec![]);
    again.nonce_path = Some(path);
    KrakenExchange::connect(again).await.unwrap().balances().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let mut odd = config(&fake, vec![xbteur()]);
    odd.interval = "2m".parse().unwrap();
    let err = KrakenExchange::connect(odd).await.unwrap_err();
    assert!(err.to_string().contains("Kraken has no 2m candles"), "{err}");
    let mut unknown = config(&fake, vec!["ABC/EUR".parse().unwrap()]);
    unknown.credential = None;
    let err = KrakenExchange::connect(unknown).await.unwrap_err();
    assert_eq!(err, ExchangeError::Rejected { reason: "Kraken has no pair ABC/EUR".into() });

    let mut public = config(&fake, vec![xbteur()]);
    public.credential = None;
    let mut p = KrakenExchange::connect(public).await.unwrap();
    assert!(!p.markets().await.unwrap().is_empty());
    let caps = p.capabilities().await.unwrap();
    assert_eq!(
        (caps.taker_fee.to_string(), caps.maker_fee.to_string()),
        ("0.0026".into(), "0.0016".into()),
        "Kraken's base rates"
    );
    let err = p.balances().await.unwrap_err();
    assert!(matches!(&err, ExchangeError::Rejected { reason } if reason.contains("API key")), "{err}");
    let err = p.place(&order("nokey", Side::Buy, OrderKind::Market, "0.01")).await.unwrap_err();
    assert!(matches!(err, ExchangeError::Rejected { .. }));
    // Watching without a key: candles still come.
    wait_until("the ohlc subscription", || fake.ohlc_subscribed()).await;
    assert!(fake.next_candle() && fake.next_candle());
    let e = next_event(&mut p).await;
    assert!(matches!(&e.event, Event::Candle(c) if *c == candles(10)[0]), "{e:?}");
    assert_eq!(p.connections(), (1, 0), "no private stream without a key");
}

#[tokio::test]
async fn secrets_never_show() {
    let fake = fake(|_| {});
    let (tap, mut taps) = tokio::sync::mpsc::unbounded_channel::<RawMessage>();
    let mut cfg = config(&fake, vec![xbteur(), xbtusd()]);
    cfg.raw = Some(tap);
    let mut texts = vec![format!("{cfg:?}")];
    let mut ex = connected(&fake, cfg).await;
    ex.place(&order("s-1", Side::Buy, OrderKind::Market, "0.01")).await.unwrap();
    next_event(&mut ex).await;
    fake.drop_websockets();
    wait_until("reconnections", || ex.connections() == (2, 2)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    texts.push(format!("{ex:?}"));
    fake.fail_next("AddOrder", Fault::HangUp);
    fake.fail_next("OpenOrders", Fault::ServerError);
    fake.fail_next("OpenOrders", Fault::ServerError);
    fake.fail_next("OpenOrders", Fault::ServerError);
    fake.fail_next("OpenOrders", Fault::ServerError);
    fake.fail_next("OpenOrders", Fault::ServerError);
    if let Err(e) = ex.place(&order("s-2", Side::Buy, limit("8000"), "0.01")).await {
        texts.push(format!("{e} {e:?}"));
    }
    let mut wrong = config(&fake, vec![]);
    wrong.credential = Some(KrakenCredential::new(KEY, "c2VjcmV0LW5vdC10aGUtcmlnaHQtb25l").unwrap());
    let e = KrakenExchange::connect(wrong).await.unwrap_err();
    texts.push(format!("{e} {e:?}"));
    drop(ex);
    let mut raw = 0;
    while let Ok(m) = taps.try_recv() {
        raw += 1;
        texts.push(format!("{m:?}"));
    }
    assert!(raw > 500, "the tap saw the streams and the REST bodies ({raw})");
    for t in &texts {
        for secret in [KEY, SECRET, &SECRET[..20], "faketoken"] {
            assert!(!t.contains(secret), "{secret} shows in {}", &t[..t.len().min(300)]);
        }
    }
    assert!(
        texts.iter().any(|t| t.contains("ws:executions"))
            && texts.iter().any(|t| t.contains("rest:/0/public/AssetPairs"))
    );
}

#[tokio::test]
async fn a_large_limit_order_fills_in_parts() {
    let fake = fake(|_| {});
    let mut ex = connected(&fake, config(&fake, vec![xbteur()])).await;
    // Each candle trades 1.25 XBT and reaches 9000.5 (candle 1's low is 8990.5).
    ex.place(&order("big", Side::Buy, limit("9000.5"), "2")).await.unwrap();
    assert!(fake.next_candle());
    let e = next_event(&mut ex).await;
    let Event::OrderPartiallyFilled(f) = &e.event else { panic!("{e:?}") };
    assert_eq!(
        (f.qty.to_string(), f.remaining.to_string(), f.price.to_string()),
        ("1.25".into(), "0.75000000".into(), "9000.5".into())
    );
    assert_eq!(f.fee.to_string(), "18.001", "9000.5 × 1.25 × 0.16 %, to Kraken's 5 decimals");
    assert_eq!(ex.open_orders().await.unwrap().len(), 1);
    assert!(fake.next_candle());
    let mut last = None;
    while let Ok(Ok(Some(e))) = tokio::time::timeout(Duration::from_millis(500), ex.next_event()).await {
        if let Event::OrderFilled(f) = e.event {
            last = Some(f);
            break;
        }
    }
    let f = last.expect("the rest filled");
    assert_eq!((f.qty.to_string(), f.remaining.is_zero()), ("0.75000000".into(), true));
    assert_ne!(f.fill_id, "", "each part has its own execution id");
    assert!(ex.open_orders().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_fake_checks_add_order_fields_as_kraken_does() {
    use crypy_exchange::kraken::rest::Rest;
    let fake = fake(|_| {});
    let rest = Rest::new(
        &fake.rest_url(),
        Some(KrakenCredential::new(KEY, SECRET).unwrap()),
        None,
        Duration::from_secs(2),
        Tier::Pro,
        None,
    )
    .unwrap();
    let add = |fields: &[(&'static str, &str)]| {
        let fields: Vec<(&'static str, String)> = fields.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let rest = &rest;
        async move { rest.private_result::<serde_json::Value>("AddOrder", &fields).await }
    };
    let base = [("ordertype", "limit"), ("type", "buy"), ("pair", "XXBTZEUR")];
    let with = |extra: &[(&'static str, &'static str)]| base.iter().chain(extra).copied().collect::<Vec<_>>();
    let rejected = |r: Result<serde_json::Value, ExchangeError>| match r {
        Err(ExchangeError::Rejected { reason }) => reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        rejected(add(&with(&[("volume", "0.01"), ("price", "8000.12")])).await),
        "EOrder:Invalid price:XBTEUR price can only be specified up to 1 decimals."
    );
    assert_eq!(rejected(add(&with(&[("volume", "0.001"), ("price", "8000")])).await), "EOrder:Order minimum not met");
    assert_eq!(
        rejected(add(&with(&[("volume", "0.010000001"), ("price", "8000")])).await),
        "EGeneral:Invalid arguments:volume"
    );
    assert_eq!(rejected(add(&with(&[("volume", "0.01")])).await), "EGeneral:Invalid arguments:price");
    let unknown = [("ordertype", "limit"), ("type", "buy"), ("pair", "NOPE"), ("volume", "1"), ("price", "1")];
    assert_eq!(rejected(add(&unknown).await), "EQuery:Unknown asset pair");
    assert_eq!(
        rejected(add(&with(&[("volume", "0.01"), ("price", "8000"), ("cl_ord_id", "more-than-eighteen-chars")])).await),
        "EGeneral:Invalid arguments:cl_ord_id"
    );
    // Kraken's altname and the crypy name are accepted too.
    let ok =
        add(&[("ordertype", "limit"), ("type", "sell"), ("pair", "XBTEUR"), ("volume", "0.01"), ("price", "9999.9")]);
    assert_eq!(ok.await.unwrap()["txid"].as_array().unwrap().len(), 1);
    assert!(fake.orders().len() == 1 && fake.orders()[0].symbol == "XXBTZEUR");
    // Unsigned or wrongly keyed requests.
    let stranger = Rest::new(
        &fake.rest_url(),
        Some(KrakenCredential::new("other-key", SECRET).unwrap()),
        None,
        Duration::from_secs(2),
        Tier::Pro,
        None,
    )
    .unwrap();
    let err = stranger.private_result::<serde_json::Value>("Balance", &[]).await.unwrap_err();
    assert_eq!(err, ExchangeError::Rejected { reason: "EAPI:Invalid key".into() });
}

#[tokio::test]
async fn stop_loss_and_take_profit_trigger_on_candles() {
    let fake = fake(|_| {});
    let mut ex = connected(&fake, config(&fake, vec![xbteur()])).await;
    // Candle 0 trades 8980.5 to 9020.5.
    let stop = OrderKind::StopLoss { trigger: "8985.04".parse().unwrap() };
    let take = OrderKind::TakeProfit { trigger: "9050".parse().unwrap() };
    ex.place(&order("stop-1", Side::Sell, stop, "0.1")).await.unwrap();
    ex.place(&order("take-1", Side::Sell, take, "0.1")).await.unwrap();
    let sent: Vec<String> =
        fake.requests().into_iter().filter(|r| r.path.ends_with("AddOrder")).map(|r| r.body).collect();
    assert!(sent[0].contains("ordertype=stop-loss") && sent[0].ends_with("price=8985.0"), "{}", sent[0]);
    assert!(sent[1].contains("ordertype=take-profit") && sent[1].ends_with("price=9050.0"), "{}", sent[1]);
    assert!(fake.next_candle());
    let e = next_event(&mut ex).await;
    let Event::OrderFilled(f) = &e.event else { panic!("{e:?}") };
    assert_eq!((f.client_id.as_str(), f.price.to_string()), ("stop-1", "8985.0".into()));
    no_event(&mut ex).await;
    // Candle 3 reaches 9050.5.
    for _ in 0..3 {
        assert!(fake.next_candle());
    }
    let mut take_filled = false;
    while let Ok(Ok(Some(e))) = tokio::time::timeout(Duration::from_millis(500), ex.next_event()).await {
        take_filled |= matches!(&e.event, Event::OrderFilled(f) if f.client_id.as_str() == "take-1" && f.price.to_string() == "9050.0");
    }
    assert!(take_filled);
}

#[tokio::test]
async fn a_restarted_desk_reconciles_what_an_earlier_run_left_out() {
    let fake = fake(|_| {});
    let resting = order("r1-resting", Side::Buy, limit("8000.0"), "0.01");
    {
        // The earlier run: a limit order rests at Kraken, then the process dies.
        let mut ex = connected(&fake, config(&fake, vec![xbteur()])).await;
        ex.place(&resting).await.unwrap();
    }
    let mut ex = connected(&fake, config(&fake, vec![xbteur()])).await;
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
    assert_eq!(reasons[1], (never_sent, "unknown to Kraken: the request never arrived".to_string()));
    let at_kraken = fake.orders();
    assert_eq!(at_kraken.len(), 1);
    assert_eq!(at_kraken[0].status, "canceled", "the resting order no longer works for a dead run");
}

/// Orders that traded while no desk recorded them: each trade the earlier run did not record
/// comes back as its own fill, with Kraken's price and fee, then the order's end.
#[tokio::test]
async fn a_restarted_desk_imports_the_fills_it_missed_trade_by_trade() {
    let fake = fake(|_| {});
    let filled = order("r2-filled", Side::Buy, OrderKind::Market, "0.01");
    let partly = order("r2-partly", Side::Buy, limit("8000.0"), "0.03");
    let mut recorded = std::collections::BTreeSet::new();
    {
        // The earlier run: both orders out; the limit order's first trade is seen and
        // recorded, then the process dies; the rest trades while no desk records it.
        let mut ex = connected(&fake, config(&fake, vec![xbteur()])).await;
        ex.place(&filled).await.unwrap();
        ex.place(&partly).await.unwrap();
        assert!(fake.fill_partially("r2-partly", "0.01".parse().unwrap(), "7999.5".parse().unwrap()));
        let first = next_fill(&mut ex, "r2-partly").await;
        recorded.insert(first.fill_id.clone());
    }
    assert!(fake.fill_partially("r2-partly", "0.005".parse().unwrap(), "7998.0".parse().unwrap()));
    let mut ex = connected(&fake, config(&fake, vec![xbteur()])).await;
    let unfinished = [
        Unfinished::new(filled.client_id.clone()),
        Unfinished { client_id: partly.client_id.clone(), recorded_fills: recorded },
    ];
    let events: Vec<Event> = ex.reconcile(&unfinished).await.unwrap().into_iter().map(|e| e.event).collect();
    let at_kraken = fake.orders();
    match &events[..] {
        [Event::OrderFilled(market), Event::OrderPartiallyFilled(second), Event::OrderCanceled(rest)] => {
            let qty = |s: &str| Qty::new(s.parse().unwrap());
            assert_eq!((market.client_id.as_str(), market.qty), ("r2-filled", qty("0.01")));
            assert!(market.remaining.is_zero());
            assert_eq!(market.price.value(), at_kraken[0].cost / at_kraken[0].executed);
            assert_eq!(market.fee.value(), at_kraken[0].fee);
            assert_eq!((second.qty, second.price.to_string()), (qty("0.005"), "7998.0".into()));
            assert_eq!(second.remaining, qty("0.015"), "what is left after both trades");
            assert!(rest.reason.starts_with("left open by an earlier run; canceled at restart"), "{}", rest.reason);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(at_kraken[1].status, "canceled");
    // The fills are in the balances Kraken reports; the adapter does not count them twice.
    let eur = ex.balances_now().into_iter().find(|b| b.asset.to_string() == "EUR").unwrap();
    assert_eq!(eur.total().value(), fake.balance("ZEUR").unwrap());

    // An order Kraken says filled but whose trades it does not list stops the start.
    fake.forget_trades();
    let mut again = connected(&fake, config(&fake, vec![xbteur()])).await;
    let err = again.reconcile(&[Unfinished::new(filled.client_id.clone())]).await.unwrap_err().to_string();
    assert!(err.contains("r2-filled") && err.contains("filled 0.01") && err.contains("does not start"), "{err}");
}
