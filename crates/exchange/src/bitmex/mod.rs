//! BitMEX: <https://www.bitmex.com/api/v1>, testnet <https://testnet.bitmex.com/api/v1>.
//!
//! - [`credential`](crate::bitmex::credential): request signing;
//! - [`http`](crate::bitmex::http): REST errors, rate-limit headers, orders;
//! - [`rest`](crate::bitmex::rest): instruments, buckets, margins, positions, executions and the L2 book in crypy's
//!   terms, and the bodies crypy sends (its module doc says how BitMEX maps onto crypy's
//!   `Market`, `Pair` and `Qty`);
//! - [`client`](crate::bitmex::client): [`BitmexExchange`](crate::bitmex::BitmexExchange), the [`crate::Exchange`] on a BitMEX account: REST calls
//!   with retries that never double an order, and the realtime WebSocket on a task of its own.

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
