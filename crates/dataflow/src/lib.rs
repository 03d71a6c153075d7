//! # crypy-dataflow
//!
//! Hosts the agents: feeds them the log's external events (market data, account reports,
//! order outcomes, commands, template changes) and records what they derive, so that the log
//! holds every input and every decision, and a replay reproduces the decisions exactly.
//!
//! - [`sim`]: the simulated desk's runtime — the exchange simulator, the log writer and the
//!   desk executor that sends approved orders to the exchange — in lockstep, so that a run is
//!   a pure function of its configuration, data and templates.
//! - [`replay`]: feeds a recorded log's external events through fresh agents and compares
//!   what they derive with what was recorded.
//!
//! The agents' logic itself is pure (`crypy-agents`); everything with side effects (files,
//! the exchange, clocks) is here, at the edge, and never inside the agents. Hosting the
//! agents in a timely dataflow, partitioned across workers, is the next step of this crate;
//! today one deterministic loop hosts them.
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

/// Re-deriving a recorded run's decisions and comparing them with the log.
pub mod replay;
/// The data dir's secret, from which holder keys derive.
pub mod secret;
/// The simulated desk's runtime.
pub mod sim;

use crypy_core::EventKind;

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
    )
}
