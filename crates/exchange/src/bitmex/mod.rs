//! BitMEX: <https://www.bitmex.com/api/v1>, testnet <https://testnet.bitmex.com/api/v1>.
//!
//! So far: request signing ([`credential`]). The REST and WebSocket clients come with the
//! venue adapters issue.

/// API keys and the `api-signature` signature.
pub mod credential;

pub use credential::BitmexCredential;
