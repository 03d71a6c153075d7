//! BitMEX: <https://www.bitmex.com/api/v1>, testnet <https://testnet.bitmex.com/api/v1>.
//!
//! - [`credential`]: request signing;
//! - [`http`]: REST errors, rate-limit headers, orders;
//! - [`rest`]: instruments, buckets, margins, positions, executions and the L2 book in crypy's
//!   terms, and the bodies crypy sends (its module doc says how BitMEX maps onto crypy's
//!   `Market`, `Pair` and `Qty`);
//! - [`client`]: [`BitmexExchange`], the [`Exchange`] on a BitMEX account: REST calls with
//!   retries that never double an order, and the realtime WebSocket on a task of its own.
//!
//! [`credential`]: crate::bitmex::credential
//! [`http`]: crate::bitmex::http
//! [`rest`]: crate::bitmex::rest
//! [`client`]: crate::bitmex::client
//! [`BitmexExchange`]: crate::bitmex::BitmexExchange
//! [`Exchange`]: crate::Exchange

/// The BitMEX adapter: configuration, REST calls, the realtime WebSocket.
pub mod client;
/// API keys and the `api-signature` signature.
pub mod credential;
/// REST responses: errors, rate limits, orders.
pub mod http;
/// BitMEX's tables in crypy's terms, and the requests crypy sends.
pub mod rest;

pub use client::{BitmexConfig, BitmexExchange};
pub use credential::BitmexCredential;
