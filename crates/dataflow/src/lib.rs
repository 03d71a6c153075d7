//! # crypy-dataflow
//!
//! Owns the timely/differential dataflow that hosts the agents' state machines as
//! operators: partitioning by pair and asset across workers, feeding the log's external
//! events in, and handing derived events back in an order that depends only on the inputs.
//! Incremental aggregates (positions, realized P&L, strategy scoreboards) live here.
//!
//! It must stay a pure function of its input events: no wall clock, no I/O inside an
//! operator. The runtime that writes to the log and talks to exchanges lives above it.
//!
//! Nothing is implemented here yet: the dataflow arrives with the simulated desk.
#![forbid(unsafe_code)]
