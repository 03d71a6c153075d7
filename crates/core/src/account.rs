//! What an exchange account reports: balances, tradable markets and capabilities.

use serde::{Deserialize, Serialize};

use crate::money::decimal_serde;
use crate::order::OrderType;
use crate::{Asset, Money, Pair, Qty};
use rust_decimal::Decimal;

/// One asset's balance on an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub asset: Asset,
    /// Available for new orders.
    pub free: Money,
    /// Held by open orders.
    pub reserved: Money,
}

impl Balance {
    pub fn total(&self) -> Money {
        self.free + self.reserved
    }
}

/// A tradable pair on a venue, with the rules an order must respect there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Market {
    pub pair: Pair,
    /// The venue's own name for it (`XXBTZEUR`, `XBTUSD`).
    pub venue_symbol: String,
    /// Decimal places allowed in a price.
    pub price_precision: u32,
    /// Decimal places allowed in a quantity.
    pub qty_precision: u32,
    /// Smallest order quantity, in the base asset.
    pub min_qty: Qty,
    /// Smallest order value in the quote asset, when the venue has one.
    pub min_notional: Option<Money>,
}

/// What a venue can do. The desk passes it down; holders and traders switch features on or
/// off from it (a trader never plans a stop-loss order on a venue without one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub order_types: Vec<OrderType>,
    /// Fee rate for orders that add liquidity, e.g. `0.0016` for 0.16 %.
    #[serde(with = "decimal_serde")]
    pub maker_fee: Decimal,
    /// Fee rate for orders that take liquidity.
    #[serde(with = "decimal_serde")]
    pub taker_fee: Decimal,
    pub margin: bool,
    pub websocket: bool,
    /// Whether the venue honours a client order id (idempotent retries).
    pub client_order_ids: bool,
    /// Private requests allowed per second, when the venue states a limit.
    pub rate_limit_per_s: Option<u32>,
}

impl Capabilities {
    pub fn supports(&self, order_type: OrderType) -> bool {
        self.order_types.contains(&order_type)
    }
}
