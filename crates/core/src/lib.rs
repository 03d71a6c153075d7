//! # crypy-core
//!
//! The domain language every other crypy crate speaks, and nothing else: no I/O, no clocks,
//! no threads. It owns
//!
//! - exact money: [`Price`], [`Qty`] and [`Money`] are decimals, never `f64`;
//! - identifiers: [`Asset`], [`Pair`], [`AgentId`] (desk `<exchange>:<account>`, holder
//!   `<asset>`, trader `<pair>#<generation>`), [`ClientOrderId`];
//! - market data ([`Candle`], [`Trade`], [`Quote`]), account facts ([`Balance`], [`Market`],
//!   [`Capabilities`]) and the order lifecycle ([`OrderRequest`], [`Fill`], …);
//! - the [`Event`] enum, the only way agents talk to each other, and its [`Envelope`]
//!   (`seq`, `run`, `time`, `wall`, `source`, `cause`).
//!
//! Indicator maths may use `f64` (strategy metrics do); balances, prices sent to an exchange
//! and fills may not.
//!
//! ```
//! use crypy_core::{Pair, Price, Qty};
//! let pair: Pair = "XBT/EUR".parse().unwrap();
//! let notional = "42000.5".parse::<Price>().unwrap() * "0.01".parse::<Qty>().unwrap();
//! assert_eq!(pair.to_string(), "XBT/EUR");
//! assert_eq!(notional.to_string(), "420.005");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

/// Balances, markets and exchange capabilities.
pub mod account;
#[cfg(any(test, feature = "arbitrary"))]
/// Proptest strategies producing every kind of event.
pub mod arbitrary;
/// Typed errors for parsing domain values.
pub mod error;
/// The `Event` enum, its payloads and the envelope the log adds.
pub mod event;
/// Assets, pairs, agent and order identifiers.
pub mod ids;
/// Candles, trades, quotes and candle intervals.
pub mod market;
/// Exact decimal money types.
pub mod money;
/// Orders, fills and positions.
pub mod order;
/// Millisecond timestamps rendered as UTC text.
pub mod time;

pub use account::{Balance, Capabilities, Market};
pub use error::ParseError;
pub use event::{Envelope, Event, EventKind, NewEvent};
pub use ids::{AgentId, Asset, ClientOrderId, Name, Pair};
pub use market::{Candle, Interval, Quote, Trade};
pub use money::{Money, Price, Qty};
pub use order::{Fill, OrderKind, OrderRequest, Position, Side};
