//! # crypy-exchange
//!
//! Owns the [`Exchange`] trait, the one interface through which a desk talks to a venue, and
//! its adapters: the deterministic exchange [`sim::Simulator`], Kraken and BitMEX (with their
//! signing, rate limits and reconnection), and paper trading on a venue's live data.
//!
//! It must not decide anything: no strategy, no risk rule. It reports what the venue says
//! and does what the desk asks; the desk is its only caller. What a venue reports is a core
//! [`Event`] (candles, fills, cancellations…) stamped with the venue's time, so the desk can
//! log it as it is. It may depend on `crypy-core`, never on the crates above.
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

use std::future::Future;

use crypy_core::{AgentId, Balance, Capabilities, ClientOrderId, Event, Market, OrderRequest};
use thiserror::Error;

/// BitMEX: REST and realtime WebSocket, mainnet and testnet.
pub mod bitmex;
/// Kraken spot: REST and WebSocket v2.
pub mod kraken;
/// Loopback venue servers for tests (feature `loopback`).
#[cfg(any(test, feature = "loopback"))]
pub mod loopback;
/// HTTP and WebSocket connections over rustls.
pub mod net;
/// Paper trading: live market data, local fills.
pub mod paper;
/// The deterministic exchange simulator.
pub mod sim;

/// Something a venue reported, at the venue's time (ms since the epoch).
#[derive(Clone, Debug, PartialEq)]
pub struct VenueEvent {
    pub time: i64,
    pub event: Event,
}

/// A message as a venue sent it, kept by `--record` beside the events it became, so that a
/// session on a real venue can be replayed and turned into tests. Never holds a secret:
/// adapters tap only what the venue sends, and leave out what carries a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawMessage {
    /// Local wall clock when it arrived (ms since the epoch).
    pub received: i64,
    /// Where it came from: `rest:/0/public/AssetPairs`, `ws:book`, `ws:executions`…
    pub channel: String,
    pub text: String,
}

/// Where an adapter sends the raw messages it receives, when recording.
pub type RawTap = tokio::sync::mpsc::UnboundedSender<RawMessage>;

/// A venue's acceptance of an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderAck {
    pub venue_order_id: String,
    /// Venue time of the acknowledgement.
    pub time: i64,
}

/// Why a venue call failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// The venue refused the request; sending it again unchanged will not help.
    #[error("rejected by the venue: {}", excerpt(reason))]
    Rejected { reason: String },
    /// Too many requests; the venue may accept the same request later.
    #[error("rate limited by the venue: {}", excerpt(reason))]
    RateLimited { reason: String },
    /// No such open order.
    #[error("unknown order {0}")]
    UnknownOrder(ClientOrderId),
    /// The venue could not be reached or did not answer in time; the request may or may not
    /// have been executed (check by client order id before retrying).
    #[error("venue unreachable: {}", excerpt(.0))]
    Connectivity(String),
}

/// Longest reason an error shows: a parse error may quote a whole string a venue sent, and
/// error text ends up in the log (`order_failed`) and on terminals.
const REASON_CHARS: usize = 300;

/// `text`, or its first [`REASON_CHARS`] characters and how long it was.
fn excerpt(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(REASON_CHARS) {
        None => std::borrow::Cow::Borrowed(text),
        Some((cut, _)) => std::borrow::Cow::Owned(format!("{}… ({} bytes in all)", &text[..cut], text.len())),
    }
}

impl ExchangeError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ExchangeError::RateLimited { .. } | ExchangeError::Connectivity(_))
    }
}

/// A venue account, as the desk sees it. Async because real venues are network services;
/// the desk is the only caller.
pub trait Exchange: Send {
    /// The desk this account is: `<exchange>:<account>`.
    fn desk(&self) -> AgentId;
    fn capabilities(&mut self) -> impl Future<Output = Result<Capabilities, ExchangeError>> + Send;
    fn markets(&mut self) -> impl Future<Output = Result<Vec<Market>, ExchangeError>> + Send;
    fn balances(&mut self) -> impl Future<Output = Result<Vec<Balance>, ExchangeError>> + Send;
    /// The venue's clock (ms since the epoch): the simulator's market time, a live venue's
    /// wall clock.
    fn now(&self) -> i64;
    /// The balances as last known (the venue's last report, plus fills since), without a call.
    fn balances_now(&self) -> Vec<Balance>;
    /// [`balances_now`](Self::balances_now) into `out`, whose room is reused: a desk values
    /// its equity with them at every candle.
    fn balances_into(&self, out: &mut Vec<Balance>) {
        *out = self.balances_now();
    }
    /// The next thing the venue reports (market data, fills, cancellations), in the venue's
    /// order; `None` once a finite source (the simulator's data) is exhausted.
    ///
    /// Must be cancel-safe: the desk waits for it with a timeout so that humans can steer
    /// while a live market is quiet, and an event must not be lost when the wait ends.
    fn next_event(&mut self) -> impl Future<Output = Result<Option<VenueEvent>, ExchangeError>> + Send;
    /// Places an order; its fills arrive through [`next_event`](Self::next_event).
    fn place(&mut self, order: &OrderRequest) -> impl Future<Output = Result<OrderAck, ExchangeError>> + Send;
    fn cancel(&mut self, client_id: &ClientOrderId) -> impl Future<Output = Result<(), ExchangeError>> + Send;
    /// The venue's acknowledgement of the order sent under `client_id` (open or ended), if it
    /// has one: what the desk asks when a placement's answer was lost, before sending again.
    fn lookup(
        &mut self,
        client_id: &ClientOrderId,
    ) -> impl Future<Output = Result<Option<OrderAck>, ExchangeError>> + Send;
    /// Client ids of the orders still open.
    fn open_orders(&mut self) -> impl Future<Output = Result<Vec<ClientOrderId>, ExchangeError>> + Send;
    /// What became of orders an earlier run of this desk sent and never saw end (it was
    /// killed), from the venue's own account of them, to record before anything else: each
    /// fill the earlier run did not record (one event per venue trade, with its own price and
    /// fee), then the order's end. An order still open is canceled first (the new lifetime
    /// does not own it). Fills reported here are already in the balances the venue reports:
    /// an adapter does not add them to [`balances_now`](Self::balances_now) again.
    ///
    /// # Errors
    /// When the venue cannot say, or cannot say exactly (an order filled without the trades
    /// that filled it): the desk does not start on books that disagree with the venue.
    fn reconcile(
        &mut self,
        unfinished: &[Unfinished],
    ) -> impl Future<Output = Result<Vec<VenueEvent>, ExchangeError>> + Send;
}

/// An order an earlier run of the desk sent and never saw end, with what that run recorded of
/// it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unfinished {
    pub client_id: ClientOrderId,
    /// The venue's ids of its fills already recorded (`Fill::fill_id`): the venue reports
    /// only the others.
    pub recorded_fills: std::collections::BTreeSet<String>,
}

impl Unfinished {
    pub fn new(client_id: ClientOrderId) -> Self {
        Unfinished { client_id, recorded_fills: Default::default() }
    }
}

/// An order of an earlier run that the venue executed while no desk recorded it, and whose
/// trades the venue does not list.
pub fn unrecorded_fill(venue: &str, id: &ClientOrderId, venue_order_id: &str, filled: &str) -> ExchangeError {
    ExchangeError::Rejected {
        reason: format!(
            "order {id} ({venue_order_id}) of an earlier run filled {filled} at {venue} while the desk was down, \
             and {venue} lists no trades for it: crypy cannot record that fill exactly, so it does not start on \
             books that disagree with the venue"
        ),
    }
}

/// A terminal cancellation of `id` with `reason`, now.
pub fn canceled_now(id: &ClientOrderId, time: i64, reason: String) -> VenueEvent {
    VenueEvent { time, event: Event::OrderCanceled(crypy_core::event::OrderCanceled { client_id: id.clone(), reason }) }
}

/// The events that close orders whose venue ended with the process that placed them (the
/// simulator, a paper account): nothing of them survives, so each is canceled.
pub fn reconcile_lost(unfinished: &[Unfinished], time: i64) -> Vec<VenueEvent> {
    unfinished
        .iter()
        .map(|u| canceled_now(&u.client_id, time, "the simulated venue ended with the run that placed it".into()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_shows_at_most_an_excerpt_of_what_the_venue_sent() {
        let huge = format!("invalid type: string \"{}\"", "x".repeat(1 << 20));
        let text = ExchangeError::Rejected { reason: huge.clone() }.to_string();
        assert!(text.len() < 400 && text.ends_with(&format!("… ({} bytes in all)", huge.len())), "{}", text.len());
        let short = ExchangeError::Connectivity("timed out".into()).to_string();
        assert_eq!(short, "venue unreachable: timed out");
        // Cut on a character boundary, whatever the text.
        let wide = ExchangeError::RateLimited { reason: "é".repeat(1000) }.to_string();
        assert!(wide.contains("… (2000 bytes in all)"), "{wide}");
    }
}
