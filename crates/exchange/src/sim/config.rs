//! The simulator's configuration (TOML). `default.toml` beside this file is the seed's
//! initial configuration and documents every field.

use std::collections::BTreeMap;

use crypy_core::money::decimal_serde;
use crypy_core::order::OrderType;
use crypy_core::{Asset, Capabilities, Market, Money, Pair, Qty};
use rust_decimal::Decimal;
use serde::Deserialize;
use thiserror::Error;

/// The embedded default configuration.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    #[serde(default = "default_account")]
    pub account: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "all_order_types")]
    pub order_types: Vec<OrderType>,
    #[serde(with = "decimal_serde")]
    pub maker_fee: Decimal,
    #[serde(with = "decimal_serde")]
    pub taker_fee: Decimal,
    #[serde(with = "decimal_serde", default)]
    pub slippage: Decimal,
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub jitter_ms: u64,
    #[serde(default)]
    pub partial_fill_probability: f64,
    #[serde(with = "decimal_serde", default = "half")]
    pub partial_fill_fraction: Decimal,
    #[serde(default)]
    pub rejection_probability: f64,
    /// Fault injection: chance that a candle is reported twice.
    #[serde(default)]
    pub duplicate_data_probability: f64,
    /// Fault injection: chance that, after a candle, the one before it on its pair is
    /// reported again (stale data arriving out of order).
    #[serde(default)]
    pub stale_data_probability: f64,
    /// Fault injection on the wire, with draws of their own (see `default.toml`).
    #[serde(default)]
    pub disconnect_probability: f64,
    #[serde(default)]
    pub timeout_probability: f64,
    #[serde(default)]
    pub rate_limited_probability: f64,
    #[serde(default)]
    pub server_error_probability: f64,
    #[serde(default)]
    pub reorder_probability: f64,
    #[serde(default)]
    pub clock_skew_ms: u64,
    #[serde(default)]
    pub rate_limit_per_s: Option<u32>,
    /// Required: what the account starts with.
    pub balances: BTreeMap<Asset, Money>,
    /// Required: the pairs it can trade.
    pub markets: Vec<MarketConfig>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketConfig {
    pub pair: Pair,
    #[serde(default)]
    pub venue_symbol: Option<String>,
    pub price_precision: u32,
    pub qty_precision: u32,
    pub min_qty: Qty,
    #[serde(default)]
    pub min_notional: Option<Money>,
}

fn default_account() -> String {
    "main".into()
}

fn all_order_types() -> Vec<OrderType> {
    vec![OrderType::Market, OrderType::Limit, OrderType::StopLoss, OrderType::TakeProfit]
}

fn half() -> Decimal {
    Decimal::new(5, 1)
}

/// A configuration that cannot be used, with what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("simulator configuration: {0}")]
pub struct ConfigError(pub String);

impl SimConfig {
    /// Parses and checks a configuration.
    ///
    /// # Errors
    /// TOML errors (with line and column), unknown fields, and values out of range.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: SimConfig = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError(msg));
        crypy_core::AgentId::desk("sim", &self.account).map_err(|e| ConfigError(format!("account: {e}")))?;
        for (name, fee) in [("maker_fee", self.maker_fee), ("taker_fee", self.taker_fee), ("slippage", self.slippage)] {
            if fee.is_sign_negative() || fee >= Decimal::ONE {
                return bad(format!("{name} {fee} must be in [0, 1)"));
            }
        }
        for (name, p) in [
            ("partial_fill_probability", self.partial_fill_probability),
            ("rejection_probability", self.rejection_probability),
            ("duplicate_data_probability", self.duplicate_data_probability),
            ("stale_data_probability", self.stale_data_probability),
            ("disconnect_probability", self.disconnect_probability),
            ("timeout_probability", self.timeout_probability),
            ("rate_limited_probability", self.rate_limited_probability),
            ("server_error_probability", self.server_error_probability),
            ("reorder_probability", self.reorder_probability),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name} {p} must be in [0, 1]"));
            }
        }
        if self.disconnect_probability >= 1.0 {
            return bad("disconnect_probability 1 would never let a report through".into());
        }
        if self.clock_skew_ms > 3_600_000 {
            return bad(format!("clock_skew_ms {} is more than an hour", self.clock_skew_ms));
        }
        if self.partial_fill_fraction <= Decimal::ZERO || self.partial_fill_fraction >= Decimal::ONE {
            return bad(format!("partial_fill_fraction {} must be in (0, 1)", self.partial_fill_fraction));
        }
        if self.markets.is_empty() {
            return bad("no markets".into());
        }
        for m in &self.markets {
            if m.price_precision > 12 || m.qty_precision > 12 {
                return bad(format!("{}: precisions above 12 decimals", m.pair));
            }
            if m.min_qty.is_sign_negative() {
                return bad(format!("{}: negative min_qty", m.pair));
            }
        }
        for (asset, amount) in &self.balances {
            if amount.is_sign_negative() {
                return bad(format!("balance of {asset} is negative"));
            }
        }
        Ok(())
    }

    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            order_types: self.order_types.clone(),
            maker_fee: self.maker_fee,
            taker_fee: self.taker_fee,
            margin: false,
            websocket: false,
            client_order_ids: true,
            rate_limit_per_s: self.rate_limit_per_s,
        }
    }

    pub fn markets(&self) -> Vec<Market> {
        self.markets
            .iter()
            .map(|m| Market {
                pair: m.pair,
                venue_symbol: m.venue_symbol.clone().unwrap_or_else(|| format!("{}{}", m.pair.base, m.pair.quote)),
                price_precision: m.price_precision,
                qty_precision: m.qty_precision,
                min_qty: m.min_qty,
                min_notional: m.min_notional,
            })
            .collect()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig::from_toml(DEFAULT_TOML).expect("the embedded default configuration is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_seeds_initial_configuration() {
        let cfg = SimConfig::default();
        assert_eq!(cfg.balances.get(&"EUR".parse().unwrap()).unwrap().to_string(), "10000");
        assert_eq!(cfg.markets()[0].pair.to_string(), "XBT/EUR");
        assert_eq!(cfg.capabilities().taker_fee.to_string(), "0.0026");
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("maker_fee = 0.001\ntaker_fee = \"0.002\"\n[balances]\n[[markets]]\npair=\"XBT/EUR\"\nprice_precision=1\nqty_precision=8\nmin_qty=\"0.001\"", "decimal number as a string"),
            ("maker_fee = \"0.001\"\ntaker_fee = \"0.002\"\ncolour = 1\n[balances]\n[[markets]]\npair=\"XBT/EUR\"\nprice_precision=1\nqty_precision=8\nmin_qty=\"0.001\"", "unknown field `colour`"),
            ("maker_fee = \"0.001\"\ntaker_fee = \"1.5\"\n[balances]\n[[markets]]\npair=\"XBT/EUR\"\nprice_precision=1\nqty_precision=8\nmin_qty=\"0.001\"", "taker_fee 1.5"),
            ("maker_fee = \"0.001\"\ntaker_fee = \"0.002\"\nmarkets = []\n[balances]", "no markets"),
            ("maker_fee = \"0.001\"\ntaker_fee = \"0.002\"\n[balances]\n[[markets]]\npair=\"XBTEUR\"\nprice_precision=1\nqty_precision=8\nmin_qty=\"0.001\"", "BASE/QUOTE"),
        ];
        for (text, needle) in cases {
            let err = SimConfig::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
    }
}
