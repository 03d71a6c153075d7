//! Kraken spot: <https://api.kraken.com>, WebSocket v2 <wss://ws.kraken.com/v2>.
//!
//! So far: request signing ([`credential`]). The REST and WebSocket clients come with the
//! venue adapters issue.

/// API keys and the `API-Sign` signature.
pub mod credential;

pub use credential::KrakenCredential;
