//! # crypy-agents
//!
//! Owns the logic of crypy's agents — the desk, holders and traders — as pure state
//! machines (events in, events out), their templates, the criteria they judge by, and the
//! plugins they think with: [`indicator::Indicator`]s, [`strategy::Strategy`]s and their
//! [`strategy::Registry`], and the [`evaluate`] engine with which a trader scores every
//! variant of every strategy on its recent bars under the simulator's own fill rules.
//!
//! It must not perform I/O, read a clock or draw unseeded randomness: time comes from the
//! events, so that a replay reproduces every decision byte for byte. It knows nothing of
//! timely, tokio or the exchange adapters. Indicator and evaluation maths are `f64`;
//! anything sent to an exchange is exact decimal.
//!
//! ```
//! use crypy_agents::evaluate::{Bars, EvalConfig, evaluate_grid};
//! use crypy_agents::strategy::{Registry, StrategySpec};
//!
//! let closes: Vec<f64> = (0..500).map(|i| 100.0 + (i as f64 / 20.0).sin() * 5.0).collect();
//! let bars = Bars::new(closes.clone(), closes).unwrap();
//! let registry = Registry::default();
//! let strategy = registry.build(&StrategySpec::parse("sma_cross fast=5..20/5 slow=30..60/10").unwrap()).unwrap();
//! let results = evaluate_grid(&bars, &[strategy], &EvalConfig::default());
//! assert_eq!(results.len(), 4 * 4);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

/// Holder authorizations: ed25519 keys, signing and verification of allocations.
pub mod auth;
/// The desk's gate: approving or refusing order requests.
pub mod desk;
/// Scoring strategy variants on bars with the simulator's fill rules.
pub mod evaluate;
/// Indicators (SMA, EMA, RSI) and the per-evaluation cache that computes each once.
pub mod indicator;
/// The agents of one desk as one deterministic state machine.
pub mod society;
/// Human steering commands the agents act on, in their logged form.
pub mod steer;
/// Strategies, their parameter grids and the registry.
pub mod strategy;
/// The SMA-crossover parameter sweep, vectorbt's arithmetic reproduced bit for bit.
pub mod sweep;
/// Desk, holder and trader templates (TOML), defaults embedded from `templates/`.
pub mod template;
/// Following a pair bar by bar: the whole grid scored on a sliding window incrementally.
pub mod track;
