//! # crypy-exchange
//!
//! Owns the `Exchange` trait, the one interface through which a desk talks to a venue, and
//! its adapters: the deterministic exchange simulator, Kraken and BitMEX, with their signing,
//! rate limits and reconnection.
//!
//! It must not decide anything: no strategy, no risk rule. It reports what the venue says
//! and does what the desk asks; the desk is its only caller. It may depend on `crypy-core`
//! and `crypy-eventstore`, never on the crates above.
//!
//! Nothing is implemented here yet: the simulator arrives with the simulated desk.
#![forbid(unsafe_code)]
