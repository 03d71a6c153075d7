//! # crypy-dataflow
//!
//! Hosts the agents: feeds them the log's external events (market data, account reports,
//! order outcomes, commands, template changes) and records what they derive, so that the log
//! holds every input and every decision, and a replay reproduces the decisions exactly.
//!
//! - [`host`]: the timely dataflow, on its own worker threads, that holds a desk's agents:
//!   traders' trackers partitioned by pair, the desk's decisions on worker 0; its input is
//!   external events in epochs, its output what the agents derive, in an order that depends
//!   only on the inputs (not on epochs, scheduling or the number of workers).
//! - [`sim`]: the simulated desk's runtime — the exchange simulator, the log writer and the
//!   desk executor that sends approved orders to the exchange — in lockstep with the dataflow,
//!   so that a run is a pure function of its configuration, data, templates and secret.
//! - [`replay`]: feeds a recorded log's external events through a fresh dataflow and compares
//!   what the agents derive with what was recorded.
//!
//! The agents' logic itself is pure (`crypy-agents`); everything with side effects (files,
//! the exchange, clocks) is here, at the edge, and never inside an operator. Beside the agents,
//! [`aggregates`] keeps balances per asset and realized P&L per strategy with differential
//! dataflow. The runtime hands epochs to the workers and takes their results over channels;
//! only the runtime writes the log.
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

/// Balances per asset and realized P&L per strategy, maintained by differential dataflow.
pub mod aggregates;

mod ahead;
/// The agents hosted in a timely dataflow.
pub mod host;
/// Re-deriving a recorded run's decisions and comparing them with the log.
pub mod replay;
/// The simulated desk's runtime.
mod retry;
/// The data dir's secret, from which holder keys derive.
pub mod secret;
pub mod sim;
/// A run's results, kept live and read back from a log.
pub mod summary;

use crypy_core::{Envelope, EventKind};

/// Whether events of `kind` come from outside the agents (the exchange, a human, the
/// runtime) rather than from an agent's decision. Replays feed the former and re-derive the
/// latter.
pub fn is_external(kind: EventKind) -> bool {
    use EventKind::*;
    matches!(
        kind,
        Candle
            | Trade
            | Quote
            | Balances
            | Capabilities
            | Markets
            | OrderSent
            | OrderAcknowledged
            | OrderFilled
            | OrderPartiallyFilled
            | OrderCanceled
            | OrderFailed
            | CommandIssued
            | KillSwitchEngaged
            | KillSwitchReleased
            | TemplateChanged
            | VenueError
            | VenueSettings
    )
}

/// Whether a recorded event was an input of its run (the replay feeds it to the agents)
/// rather than something they derived (the replay derives it again and compares). A template
/// change is both: an input when the desk recorded it (the run's start, a human's command),
/// derived when a holder or trader learned it.
pub fn is_input(e: &Envelope) -> bool {
    match e.event {
        crypy_core::Event::TemplateChanged(_) => matches!(e.source, crypy_core::AgentId::Desk { .. }),
        _ => is_external(e.kind()),
    }
}
