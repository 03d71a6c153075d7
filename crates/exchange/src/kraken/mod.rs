//! Kraken spot: <https://api.kraken.com>, WebSocket v2 <wss://ws.kraken.com/v2>.
//!
//! [`KrakenExchange`] ([`client`]) is the account behind the `Exchange` trait. Below it:
//! request signing ([`credential`]) with nonces that survive restarts ([`nonce`]), the REST
//! transport and typed results ([`rest`]), REST responses and their errors ([`http`]), the
//! call counter ([`limits`]), the WebSocket v2 streams ([`ws`]) and the order book with its
//! checksum ([`book`]).

/// The WebSocket v2 order book and its CRC32 checksum.
pub mod book;
/// The account: `KrakenConfig`, `KrakenExchange`.
pub mod client;
/// API keys and the `API-Sign` signature.
pub mod credential;
/// REST responses: envelope, errors, parsers.
pub mod http;
/// The REST call counter, kept on our side.
pub mod limits;
/// Nonces that increase across restarts.
pub mod nonce;
/// The REST transport and typed results.
pub mod rest;
/// The WebSocket v2 streams.
pub mod ws;

pub use client::{cl_ord_id, KrakenConfig, KrakenExchange};
pub use limits::Tier;

pub use credential::KrakenCredential;
