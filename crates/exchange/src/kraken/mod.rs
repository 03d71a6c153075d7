//! Kraken spot: <https://api.kraken.com>, WebSocket v2 <wss://ws.kraken.com/v2>.
//!
//! So far: request signing ([`credential`]) with nonces that survive restarts ([`nonce`]),
//! REST responses and their errors ([`http`]), and the WebSocket v2 order book with its
//! checksum ([`book`]). The clients themselves come
//! with the venue adapters issue.

/// The WebSocket v2 order book and its CRC32 checksum.
pub mod book;
/// API keys and the `API-Sign` signature.
pub mod credential;
/// REST responses: envelope, errors, parsers.
pub mod http;
/// The REST call counter, kept on our side.
pub mod limits;
/// Nonces that increase across restarts.
pub mod nonce;

pub use credential::KrakenCredential;
