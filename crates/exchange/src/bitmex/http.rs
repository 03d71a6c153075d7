//! BitMEX REST responses: errors, rate-limit headers, and orders.
//!
//! Errors arrive as `{"error": {"message": "…", "name": "HTTPError" | "ValidationError" | …}}`
//! with a 4xx or 5xx status; 429 means rate limited (back off until the reset time), 503 that
//! the system is overloaded (retry later). Numbers are read exactly from the JSON text, and
//! accepted as strings too.

use crypy_core::{ClientOrderId, Price, Qty, Side};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ExchangeError;

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    name: String,
}

/// The error a non-2xx response means.
pub fn error(status: u16, body: &str) -> ExchangeError {
    let detail = serde_json::from_str::<ErrorBody>(body)
        .map(|b| format!("{}: {}", b.error.name, b.error.message))
        .unwrap_or_else(|_| format!("HTTP {status}"));
    match status {
        429 => ExchangeError::RateLimited { reason: detail },
        500..=599 => ExchangeError::Connectivity(detail),
        _ => ExchangeError::Rejected { reason: detail },
    }
}

/// What the `x-ratelimit-*` headers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u32,
    pub remaining: u32,
    /// UNIX seconds at which the window resets.
    pub reset: u64,
}

/// Reads the rate-limit headers from `(name, value)` pairs (names in any case).
pub fn rate_limit<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<RateLimit> {
    let (mut limit, mut remaining, mut reset) = (None, None, None);
    for (name, value) in headers {
        match name.to_ascii_lowercase().as_str() {
            "x-ratelimit-limit" => limit = value.trim().parse().ok(),
            "x-ratelimit-remaining" => remaining = value.trim().parse().ok(),
            "x-ratelimit-reset" => reset = value.trim().parse().ok(),
            _ => {}
        }
    }
    Some(RateLimit { limit: limit?, remaining: remaining?, reset: reset? })
}

/// An order as `/api/v1/order` returns it (the fields crypy reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BitmexOrder<'a> {
    #[serde(rename = "orderID")]
    pub order_id: String,
    #[serde(rename = "clOrdID", default)]
    pub cl_ord_id: String,
    pub symbol: String,
    pub side: String,
    #[serde(borrow)]
    pub order_qty: Option<&'a RawValue>,
    #[serde(borrow)]
    pub price: Option<&'a RawValue>,
    pub ord_type: String,
    pub ord_status: String,
    #[serde(borrow)]
    pub leaves_qty: Option<&'a RawValue>,
    #[serde(borrow)]
    pub cum_qty: Option<&'a RawValue>,
    #[serde(borrow)]
    pub avg_px: Option<&'a RawValue>,
    #[serde(default)]
    pub text: String,
}

/// Where an order stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    New,
    PartiallyFilled,
    Filled,
    Canceled,
    Rejected,
}

/// An order in crypy's terms. Quantities are in the instrument's contract units, as BitMEX
/// reports them (for XBTUSDT, satoshis of XBT); turning them into the base asset takes the
/// instrument's multiplier, which the adapter reads from `/instrument`.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderState {
    pub venue_order_id: String,
    pub client_id: Option<ClientOrderId>,
    pub symbol: String,
    pub side: Side,
    pub status: OrderStatus,
    pub qty: Qty,
    pub filled: Qty,
    pub remaining: Qty,
    pub avg_price: Option<Price>,
}

/// A JSON number or numeric string, as an exact decimal text.
fn number(raw: Option<&RawValue>) -> Option<String> {
    let text = raw?.get();
    let text = text.trim_matches('"');
    (text != "null" && !text.is_empty()).then(|| text.to_string())
}

/// Parses one order.
///
/// # Errors
/// Unknown side or status, or quantities that are not decimals.
pub fn parse_order(o: &BitmexOrder) -> Result<OrderState, ExchangeError> {
    let bad = |what: String| ExchangeError::Rejected { reason: format!("order {}: {what}", o.order_id) };
    let qty = |raw: Option<&RawValue>, name: &str| -> Result<Qty, ExchangeError> {
        match number(raw) {
            Some(t) => t.parse().map_err(|e| bad(format!("{name}: {e}"))),
            None => Ok(Qty::ZERO),
        }
    };
    let side = match o.side.as_str() {
        "Buy" => Side::Buy,
        "Sell" => Side::Sell,
        other => return Err(bad(format!("unknown side {other:?}"))),
    };
    let status = match o.ord_status.as_str() {
        "New" => OrderStatus::New,
        "PartiallyFilled" => OrderStatus::PartiallyFilled,
        "Filled" => OrderStatus::Filled,
        "Canceled" => OrderStatus::Canceled,
        "Rejected" => OrderStatus::Rejected,
        other => return Err(bad(format!("unknown status {other:?}"))),
    };
    let avg_price = match number(o.avg_px) {
        Some(t) => Some(t.parse().map_err(|e| bad(format!("avgPx: {e}")))?),
        None => None,
    };
    Ok(OrderState {
        venue_order_id: o.order_id.clone(),
        client_id: (!o.cl_ord_id.is_empty()).then(|| o.cl_ord_id.parse().ok()).flatten(),
        symbol: o.symbol.clone(),
        side,
        status,
        qty: qty(o.order_qty, "orderQty")?,
        filled: qty(o.cum_qty, "cumQty")?,
        remaining: qty(o.leaves_qty, "leavesQty")?,
        avg_price,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_testnet_orders_parse() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/bitmex/ccxt_static_responses.json"),
        )
        .unwrap();
        let recording: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut seen = 0;
        for (method, cases) in recording["methods"].as_object().unwrap() {
            for case in cases.as_array().unwrap() {
                let body = serde_json::to_string(&case["httpResponse"]).unwrap();
                let orders: Vec<BitmexOrder> = serde_json::from_str(&body).unwrap();
                for (o, parsed) in orders.iter().zip(
                    case["parsedResponse"]
                        .as_array()
                        .map_or_else(|| vec![&case["parsedResponse"]], |a| a.iter().collect()),
                ) {
                    let state = parse_order(o).unwrap_or_else(|e| panic!("{method}: {e}"));
                    // ccxt's own reading of the same response, as a second opinion.
                    assert_eq!(state.venue_order_id, parsed["id"].as_str().unwrap(), "{method}");
                    assert_eq!(state.side.as_str(), parsed["side"].as_str().unwrap(), "{method}");
                    let ccxt_status = match state.status {
                        OrderStatus::Filled => "closed",
                        OrderStatus::New | OrderStatus::PartiallyFilled => "open",
                        OrderStatus::Canceled => "canceled",
                        OrderStatus::Rejected => "rejected",
                    };
                    assert_eq!(ccxt_status, parsed["status"].as_str().unwrap(), "{method}");
                    assert!(
                        state.filled + state.remaining <= state.qty || state.status == OrderStatus::Canceled,
                        "{method}"
                    );
                    seen += 1;
                }
            }
        }
        assert!(seen >= 3, "{seen} orders");
        let filled: Vec<BitmexOrder> = serde_json::from_str(r#"[{"orderID":"eaf968c6","clOrdID":"1-22-1","symbol":"XBTUSDT","side":"Buy","orderQty":1000,"price":20933,"ordType":"Market","ordStatus":"Filled","leavesQty":0,"cumQty":1000,"avgPx":20933.5,"text":""}]"#).unwrap();
        let s = parse_order(&filled[0]).unwrap();
        assert_eq!(
            (s.status, s.filled.to_string(), s.avg_price.unwrap().to_string()),
            (OrderStatus::Filled, "1000".into(), "20933.5".into())
        );
        assert_eq!(s.client_id.unwrap().as_str(), "1-22-1");
    }

    #[test]
    fn errors_and_rate_limits() {
        let body = r#"{"error":{"message":"Invalid ordQty","name":"ValidationError"}}"#;
        assert_eq!(error(400, body), ExchangeError::Rejected { reason: "ValidationError: Invalid ordQty".into() });
        assert!(error(
            429,
            r#"{"error":{"message":"Rate limit exceeded, retry in 1 seconds.","name":"RateLimitError"}}"#
        )
        .is_retryable());
        assert!(error(503, "<html>overloaded</html>").is_retryable());
        assert_eq!(error(401, "not json").to_string(), "rejected by the venue: HTTP 401");
        let headers =
            [("X-RateLimit-Limit", "120"), ("x-ratelimit-remaining", "119"), ("x-ratelimit-reset", "1518064237")];
        assert_eq!(rate_limit(headers), Some(RateLimit { limit: 120, remaining: 119, reset: 1_518_064_237 }));
        assert_eq!(rate_limit([("x-ratelimit-limit", "120")]), None);
    }
}
