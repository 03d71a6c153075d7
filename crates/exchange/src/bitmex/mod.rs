//! BitMEX: <https://www.bitmex.com/api/v1>, testnet <https://testnet.bitmex.com/api/v1>.
//!
//! So far: request signing ([`credential`]) and REST responses ([`http`]: errors, rate-limit
//! headers, orders). The clients themselves come with the venue adapters issue.

/// API keys and the `api-signature` signature.
pub mod credential;
/// REST responses: errors, rate limits, orders.
pub mod http;

pub use credential::BitmexCredential;
