//! What the desk does when a venue call fails in a way worth another try (unreachable, timed
//! out, rate limited), so that no fault of the wire loses an event or duplicates an order.
//!
//! - A placement whose answer was lost may have reached the venue: the desk looks the order
//!   up by client id before anything else, and sends it again only when the venue has not
//!   got it. The client id is the same on every attempt, so the venue refuses a second copy.
//! - After the last attempt, an order the venue may still hold is canceled there; one whose
//!   fate the venue cannot tell stays open in the desk's books, for its reports or the next
//!   start to settle.
//! - Every failed attempt is recorded (`venue_error`) with what the desk did next.
//!
//! Calls that write nothing (a cancellation while stopping, the kill switch) retry the same
//! way without recording.

use std::time::Duration;

use crypy_core::event::{OrderAcknowledged, OrderCanceled, OrderFailed, VenueError};
use crypy_core::{ClientOrderId, Event, OrderRequest};
use crypy_exchange::{ExchangeError, OrderAck};

use crate::sim::DeskVenue;

/// How many times a call is tried, and how long to pause between tries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retry {
    /// Tries of one request (placement, look-up, cancellation, account query).
    pub attempts: u32,
    /// Consecutive failures of the report stream before the desk gives up on the venue.
    pub reconnects: u32,
    /// The first pause, doubled on each try up to [`MAX_PAUSE`]; `None` for the simulator,
    /// whose time does not pass while the desk waits.
    pub pause: Option<Duration>,
}

const MAX_PAUSE: Duration = Duration::from_secs(5);

impl Retry {
    pub(crate) fn new(live_venue: bool) -> Self {
        Retry { attempts: 5, reconnects: 20, pause: live_venue.then_some(Duration::from_millis(250)) }
    }

    /// Pauses after failed try number `attempt` (from 1).
    pub(crate) fn wait(&self, attempt: u32) {
        if let Some(first) = self.pause {
            std::thread::sleep(first.saturating_mul(1 << attempt.saturating_sub(1).min(8)).min(MAX_PAUSE));
        }
    }
}

pub(crate) fn venue_error(call: String, error: &ExchangeError, attempt: u32, then: &str) -> Event {
    Event::VenueError(VenueError { call, error: error.to_string(), attempt, then: then.to_owned() })
}

fn acknowledged(id: &ClientOrderId, ack: OrderAck) -> Event {
    Event::OrderAcknowledged(OrderAcknowledged { client_id: id.clone(), venue_order_id: ack.venue_order_id })
}

/// Places `request`. Returns what to record, in order: the failed attempts, then the outcome
/// (acknowledgement, failure, or the cancellation of an order that may have reached the venue
/// while it was unreachable); no outcome when the venue could not say (see the module doc).
pub(crate) fn place(
    venue: &mut dyn DeskVenue,
    runtime: &tokio::runtime::Runtime,
    retry: Retry,
    request: &OrderRequest,
) -> Vec<Event> {
    let id = &request.client_id;
    let mut said = Vec::new();
    // Whether an earlier attempt may have reached the venue.
    let mut uncertain = false;
    let mut last_error = None;
    for attempt in 1..=retry.attempts {
        let error = match venue.place(runtime, request) {
            Ok(ack) => {
                said.push(acknowledged(id, ack));
                return said;
            }
            Err(e) if !e.is_retryable() => {
                // Refused after an attempt whose answer was lost: perhaps as a copy of an
                // order the venue already has.
                if uncertain {
                    if let Some(Some(ack)) = lookup(venue, runtime, retry, id, &mut said) {
                        said.push(acknowledged(id, ack));
                        return said;
                    }
                }
                said.push(Event::OrderFailed(OrderFailed {
                    client_id: id.clone(),
                    error: e.to_string(),
                    retryable: false,
                }));
                return said;
            }
            Err(e) => e,
        };
        uncertain |= matches!(error, ExchangeError::Connectivity(_));
        let then = match (uncertain, attempt == retry.attempts) {
            (true, _) => "look up",
            (false, true) => "give up",
            (false, false) => "retry",
        };
        said.push(venue_error(format!("place {id}"), &error, attempt, then));
        last_error = Some(error);
        if uncertain {
            if let Some(Some(ack)) = lookup(venue, runtime, retry, id, &mut said) {
                said.push(acknowledged(id, ack));
                return said;
            }
        }
        if attempt < retry.attempts {
            retry.wait(attempt);
        }
    }
    let error = last_error.map_or_else(String::new, |e| e.to_string());
    if !uncertain {
        said.push(Event::OrderFailed(OrderFailed {
            client_id: id.clone(),
            error: format!("{error} (after {} attempts)", retry.attempts),
            retryable: true,
        }));
        return said;
    }
    // The venue may hold it: make sure it does not trade behind the desk's back.
    match cancel(venue, runtime, retry, id) {
        Ok(()) => said.push(Event::OrderCanceled(OrderCanceled {
            client_id: id.clone(),
            reason: format!("placed while the venue was unreachable ({error}); canceled"),
        })),
        Err(ExchangeError::UnknownOrder(_)) => said.push(Event::OrderFailed(OrderFailed {
            client_id: id.clone(),
            error: format!("{error} (after {} attempts; the venue holds no such open order)", retry.attempts),
            retryable: true,
        })),
        Err(e) => said.push(venue_error(
            format!("cancel {id}"),
            &e,
            retry.attempts,
            "give up: the order may be open at the venue; its reports or the next start settle it",
        )),
    }
    said
}

/// Asks the venue for the order sent under `id`: `None` when it could not say.
fn lookup(
    venue: &mut dyn DeskVenue,
    runtime: &tokio::runtime::Runtime,
    retry: Retry,
    id: &ClientOrderId,
    said: &mut Vec<Event>,
) -> Option<Option<OrderAck>> {
    for attempt in 1..=retry.attempts {
        match venue.lookup(runtime, id) {
            Ok(found) => return Some(found),
            Err(e) => {
                let last = attempt == retry.attempts || !e.is_retryable();
                said.push(venue_error(format!("lookup {id}"), &e, attempt, if last { "give up" } else { "retry" }));
                if last {
                    return None;
                }
                retry.wait(attempt);
            }
        }
    }
    None
}

/// Cancels `id`, trying again while the venue is unreachable or busy.
///
/// # Errors
/// What the venue said last.
pub(crate) fn cancel(
    venue: &mut dyn DeskVenue,
    runtime: &tokio::runtime::Runtime,
    retry: Retry,
    id: &ClientOrderId,
) -> Result<(), ExchangeError> {
    let mut attempt = 1;
    loop {
        match venue.cancel(runtime, id) {
            Err(e) if e.is_retryable() && attempt < retry.attempts => {
                retry.wait(attempt);
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// An account query (capabilities, markets, balances), tried again while the venue is
/// unreachable or busy; the failures are recorded by the caller.
pub(crate) fn query<T>(
    retry: Retry,
    what: &str,
    said: &mut Vec<Event>,
    mut call: impl FnMut() -> Result<T, ExchangeError>,
) -> Result<T, ExchangeError> {
    let mut attempt = 1;
    loop {
        match call() {
            Err(e) if e.is_retryable() && attempt < retry.attempts => {
                said.push(venue_error(what.to_owned(), &e, attempt, "retry"));
                retry.wait(attempt);
                attempt += 1;
            }
            done => return done,
        }
    }
}
