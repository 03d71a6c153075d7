//! # crypy-agents
//!
//! Owns the logic of crypy's agents — the desk, holders and traders — as pure state
//! machines (events in, events out), their templates, the criteria they judge by, and the
//! `Indicator`/`Strategy` plugin traits with their registry.
//!
//! It must not perform I/O, read a clock or draw unseeded randomness: time comes from the
//! events, so that a replay reproduces every decision byte for byte. It knows nothing of
//! timely, tokio or the exchange adapters.
//!
//! Nothing is implemented here yet: the agents arrive with the simulated desk.
#![forbid(unsafe_code)]
