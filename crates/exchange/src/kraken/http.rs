//! Kraken's REST responses: the envelope, its errors, and parsers into crypy's types.
//!
//! Every response is `{"error": [...], "result": {...}}`, usually with HTTP 200 even when it
//! failed: errors are strings `<E|W><Category>:<message>` (`EAPI:Invalid nonce`,
//! `EOrder:Insufficient funds`); `W…` entries are warnings and do not fail a call.
//! Prices and quantities arrive as decimal strings and are parsed exactly.

use std::collections::BTreeMap;

use crypy_core::{Asset, Balance, Candle, Interval, Market, Money, Pair, Price, Qty};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::ExchangeError;

/// One of Kraken's error strings, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KrakenError {
    /// `API`, `Order`, `General`, `Service`, `Query`, `Trade`, `Funding`…
    pub category: String,
    pub message: String,
}

impl KrakenError {
    /// `EAPI:Invalid nonce` → category `API`, message `Invalid nonce`.
    pub fn parse(text: &str) -> KrakenError {
        let body = text.strip_prefix('E').or_else(|| text.strip_prefix('W')).unwrap_or(text);
        match body.split_once(':') {
            Some((category, message)) => KrakenError { category: category.into(), message: message.into() },
            None => KrakenError { category: String::new(), message: text.into() },
        }
    }

    /// What the error means for the caller: retry later, or give up on this request.
    pub fn into_exchange_error(self) -> ExchangeError {
        let text = format!("E{}:{}", self.category, self.message);
        match (self.category.as_str(), self.message.as_str()) {
            (_, "Rate limit exceeded") | ("General", "Temporary lockout") => {
                ExchangeError::RateLimited { reason: text }
            }
            ("Service", _) => ExchangeError::Connectivity(text),
            _ => ExchangeError::Rejected { reason: text },
        }
    }
}

#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(default)]
    error: Vec<String>,
    result: Option<T>,
}

/// The `result` of a response body, or its first error.
///
/// # Errors
/// Kraken's own errors, mapped by [`KrakenError::into_exchange_error`]; a body that is not
/// Kraken's envelope is a rejection naming what was wrong (never echoing the body whole).
pub fn result<T: DeserializeOwned>(body: &str) -> Result<T, ExchangeError> {
    let envelope: Envelope<T> = serde_json::from_str(body)
        .map_err(|e| ExchangeError::Rejected { reason: format!("unreadable Kraken response: {e}") })?;
    if let Some(first) = envelope.error.iter().find(|e| e.starts_with('E')) {
        return Err(KrakenError::parse(first).into_exchange_error());
    }
    envelope.result.ok_or_else(|| ExchangeError::Rejected { reason: "Kraken response without result".into() })
}

/// Kraken's asset code in crypy's naming: the legacy X/Z prefixes of four-letter codes go
/// (`XXBT` → `XBT`, `ZEUR` → `EUR`); others stay (`ADA`, `DOT.S`).
pub fn asset(code: &str) -> Option<Asset> {
    let plain = match code.as_bytes() {
        [b'X' | b'Z', rest @ ..] if code.len() == 4 && rest.iter().all(u8::is_ascii_alphabetic) => &code[1..],
        _ => code,
    };
    plain.parse().ok()
}

/// One entry of `AssetPairs`.
#[derive(Clone, Debug, Deserialize)]
pub struct KrakenAssetPair {
    pub altname: String,
    /// `XBT/EUR`: crypy's pair name, when the pair trades on the WebSocket API.
    pub wsname: Option<String>,
    pub pair_decimals: u32,
    pub lot_decimals: u32,
    pub ordermin: Option<String>,
    pub costmin: Option<String>,
}

/// The markets of an `AssetPairs` result: pairs with a WebSocket name (others, such as the
/// `.d` dark-pool pairs, are not tradable here), precisions and minimum order size.
pub fn parse_markets(result: &BTreeMap<String, KrakenAssetPair>) -> Vec<Market> {
    result
        .iter()
        .filter_map(|(symbol, p)| {
            let pair: Pair = p.wsname.as_deref()?.parse().ok()?;
            Some(Market {
                pair,
                venue_symbol: symbol.clone(),
                price_precision: p.pair_decimals,
                qty_precision: p.lot_decimals,
                min_qty: p.ordermin.as_deref().and_then(|m| m.parse().ok()).unwrap_or(Qty::ZERO),
                min_notional: p.costmin.as_deref().and_then(|m| m.parse().ok()),
            })
        })
        .collect()
}

/// The committed candles of an `OHLC` result for `symbol`. Rows are
/// `[time, open, high, low, close, vwap, volume, count]` with `time` the open in seconds; the
/// last row is the interval still in progress and is left out.
///
/// # Errors
/// A row that is not in that shape, or prices that are not positive decimals.
pub fn parse_ohlc(
    result: &serde_json::Value,
    symbol: &str,
    pair: Pair,
    interval: Interval,
) -> Result<Vec<Candle>, ExchangeError> {
    let bad = |what: String| ExchangeError::Rejected { reason: format!("OHLC {symbol}: {what}") };
    let rows = result.get(symbol).and_then(|r| r.as_array()).ok_or_else(|| bad("no rows".into()))?;
    let committed = rows.len().saturating_sub(1);
    rows[..committed]
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let field = |j: usize| row.get(j).ok_or_else(|| bad(format!("row {i} has no field {j}")));
            let text = |j: usize| -> Result<&str, ExchangeError> {
                field(j)?.as_str().ok_or_else(|| bad(format!("row {i} field {j} is not a string")))
            };
            let price = |j: usize| -> Result<Price, ExchangeError> {
                text(j)?.parse().map_err(|e| bad(format!("row {i}: {e}")))
            };
            let time = field(0)?.as_i64().ok_or_else(|| bad(format!("row {i} time is not an integer")))?;
            let open_time =
                time.checked_mul(1000).ok_or_else(|| bad(format!("row {i} time {time} is out of range")))?;
            let candle = Candle {
                pair,
                interval,
                open_time,
                open: price(1)?,
                high: price(2)?,
                low: price(3)?,
                close: price(4)?,
                volume: text(6)?.parse().map_err(|e| bad(format!("row {i}: {e}")))?,
                trades: field(7)?.as_u64(),
            };
            candle.check().map_err(|e| bad(format!("row {i}: {e}")))?;
            Ok(candle)
        })
        .collect()
}

/// A `Balance` result: totals per asset. Kraken's Balance does not say what open orders
/// hold, so everything is reported free here.
pub fn parse_balances(result: &BTreeMap<String, String>) -> Result<Vec<Balance>, ExchangeError> {
    result
        .iter()
        .filter_map(|(code, amount)| asset(code).map(|a| (a, amount)))
        .map(|(asset, amount)| {
            let free: Money =
                amount.parse().map_err(|e| ExchangeError::Rejected { reason: format!("balance of {asset}: {e}") })?;
            Ok(Balance { asset, free, reserved: Money::ZERO })
        })
        .collect()
}

/// An `AddOrder` result.
#[derive(Clone, Debug, Deserialize)]
pub struct KrakenAddOrder {
    pub descr: KrakenOrderDescription,
    /// Empty when `validate` was set.
    #[serde(default)]
    pub txid: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct KrakenOrderDescription {
    pub order: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/kraken").join(name))
            .unwrap()
    }

    #[test]
    fn asset_pairs_become_markets() {
        let pairs: BTreeMap<String, KrakenAssetPair> = result(&fixture("http_asset_pairs_2020-07-14.json")).unwrap();
        let markets = parse_markets(&pairs);
        assert!(markets.len() > 100 && markets.len() <= pairs.len(), "{} of {}", markets.len(), pairs.len());
        let xbteur = markets.iter().find(|m| m.pair.to_string() == "XBT/EUR").unwrap();
        assert_eq!((xbteur.venue_symbol.as_str(), xbteur.price_precision, xbteur.qty_precision), ("XXBTZEUR", 1, 8));
        assert_eq!(xbteur.min_qty.to_string(), "0.002");
    }

    #[test]
    fn ohlc_rows_become_committed_candles() {
        let r: serde_json::Value = result(&fixture("http_ohlc_xxbtzeur_60_2020-07-14.json")).unwrap();
        let candles = parse_ohlc(&r, "XXBTZEUR", "XBT/EUR".parse().unwrap(), "1h".parse().unwrap()).unwrap();
        assert_eq!(candles.len(), 719, "720 rows, the last one still open");
        let first = &candles[0];
        assert_eq!(first.open_time, 1_592_143_200_000);
        assert_eq!((first.open.to_string(), first.close.to_string()), ("8351.8".into(), "8309.0".into()));
        assert_eq!((first.volume.to_string(), first.trades), ("112.38914268".into(), Some(1146)));
        assert!(candles.windows(2).all(|w| w[1].open_time - w[0].open_time == 3_600_000));
    }

    #[test]
    fn balances_use_crypys_asset_names() {
        let r: BTreeMap<String, String> = result(&fixture("http_balance_2020-07-14.json")).unwrap();
        let balances = parse_balances(&r).unwrap();
        let get = |a: &str| balances.iter().find(|b| b.asset.as_str() == a).map(|b| b.free.to_string());
        assert_eq!(get("EUR").as_deref(), Some("83.1177"));
        assert_eq!(get("XBT").as_deref(), Some("0.0251625000"));
        assert_eq!(get("ADA").as_deref(), Some("55.00000000"));
        assert_eq!(get("XTZ").as_deref(), Some("0.00000005"), "three letters keep their X");
    }

    #[test]
    fn add_order_and_errors() {
        let r: KrakenAddOrder = result(&fixture("http_add_order_buy_limit_2019-10-13.json")).unwrap();
        assert_eq!(r.txid, ["O6FH4F-QKEVM-GUZB3I"]);
        assert_eq!(r.descr.order, "buy 0.01000000 XBTEUR @ limit 3792.8");
        let err = result::<serde_json::Value>(&fixture("http_error_invalid_arguments_2019-11-25.json")).unwrap_err();
        assert_eq!(err, ExchangeError::Rejected { reason: "EGeneral:Invalid arguments".into() });
        let cases = [
            (r#"{"error":["EAPI:Rate limit exceeded"]}"#, true),
            (r#"{"error":["EService:Unavailable"]}"#, true),
            (r#"{"error":["EGeneral:Temporary lockout"]}"#, true),
            (r#"{"error":["EOrder:Insufficient funds"]}"#, false),
            (r#"{"error":["EAPI:Invalid signature"]}"#, false),
        ];
        for (body, retryable) in cases {
            assert_eq!(result::<serde_json::Value>(body).unwrap_err().is_retryable(), retryable, "{body}");
        }
        // Warnings do not fail a call; garbage is a clear error.
        let ok: serde_json::Value = result(r#"{"error":["WGeneral:Something"],"result":{"a":1}}"#).unwrap();
        assert_eq!(ok["a"], 1);
        assert!(result::<serde_json::Value>("<html>").unwrap_err().to_string().contains("unreadable Kraken response"));
    }
}
