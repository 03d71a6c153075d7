//! Orders, fills and positions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Asset, ClientOrderId, Money, Pair, ParseError, Price, Qty};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn opposite(self) -> Self {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Side {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s.to_ascii_lowercase().as_str() {
            "buy" | "b" => Ok(Side::Buy),
            "sell" | "s" => Ok(Side::Sell),
            _ => Err(ParseError::Unknown { what: "side", got: s.into(), expected: "buy, sell".into() }),
        }
    }
}

/// What kind of order, with the prices that kind needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
// Externally tagged (serde's default): the binary log cannot decode internally tagged enums.
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    /// Fills at whatever the book offers.
    Market,
    /// Fills at `price` or better.
    Limit { price: Price },
    /// Becomes a market order once the price trades through `trigger` against the position.
    StopLoss { trigger: Price },
    /// Becomes a market order once the price reaches `trigger` in the position's favour.
    TakeProfit { trigger: Price },
}

/// The order types a venue may support; see [`crate::Capabilities`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    Market,
    Limit,
    StopLoss,
    TakeProfit,
}

impl OrderKind {
    pub fn order_type(&self) -> OrderType {
        match self {
            OrderKind::Market => OrderType::Market,
            OrderKind::Limit { .. } => OrderType::Limit,
            OrderKind::StopLoss { .. } => OrderType::StopLoss,
            OrderKind::TakeProfit { .. } => OrderType::TakeProfit,
        }
    }
}

/// A trader's request to the desk. `client_id` is the idempotency key (never reused).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRequest {
    pub client_id: ClientOrderId,
    pub pair: Pair,
    pub side: Side,
    pub kind: OrderKind,
    /// In the base asset; strictly positive.
    pub qty: Qty,
    /// The id of the allocation that authorizes this order (see `AllocationGranted`).
    pub allocation: Option<u64>,
}

/// An execution: some or all of an order filled at one price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    pub client_id: ClientOrderId,
    /// The venue's order id, when it has assigned one.
    pub venue_order_id: Option<String>,
    /// The venue's execution id: the same execution reported twice is the same fill.
    pub fill_id: String,
    pub pair: Pair,
    pub side: Side,
    pub qty: Qty,
    pub price: Price,
    pub fee: Money,
    pub fee_asset: Asset,
    /// What of the order is still open after this fill.
    pub remaining: Qty,
}

impl Fill {
    /// What the fill does to an account, exactly: the base asset, the quote asset (value at
    /// the fill's price) and the fee's asset.
    pub fn balance_changes(&self) -> [(Asset, Money); 3] {
        let (qty, value) = (Money::new(self.qty.value()), self.price * self.qty);
        let (base, quote) = match self.side {
            Side::Buy => (qty, -value),
            Side::Sell => (-qty, value),
        };
        [(self.pair.base, base), (self.pair.quote, quote), (self.fee_asset, -self.fee)]
    }
}

/// What an agent holds on a pair: signed quantity (negative is short), average entry price
/// and the P&L already realized by reducing it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub pair: Pair,
    pub qty: Qty,
    pub avg_price: Option<Price>,
    pub realized_pnl: Money,
}
