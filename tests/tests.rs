//! crypy's workspace integration tests: one binary, one module per topic. Each test runs the
//! real `crypy` executable on a fresh temporary data dir.

/// Shared helpers: running crypy, paths to bundled data.
mod util;

/// `crypy log …`: import, stats, show, tail, verify, export.
mod log_cli;

/// `crypy bench …`: the commands run and report what they measured (never a timing assertion).
mod bench_cli;

/// `crypy sim` and `crypy replay --verify`: determinism, replay, accounting.
mod sim_cli;

/// `crypy sim --exec`, the telnet control port, steering commands in the log.
mod control_cli;

/// `crypy kraken` and `crypy bitmex` against loopback venues: paper and live desks, faults
/// without duplicate orders, recording, keys that never leak.
mod venue_cli;

/// `crypy sim` killed with SIGKILL at seeded moments and restarted: the log stays whole, no
/// order is lost or doubled, the books agree.
mod crash_cli;

/// `crypy sim` on a venue that misbehaves in every way the simulator can inject, for more than
/// a million events: every invariant of the crash test still holds.
mod soak_cli;

/// `--workers`, `--processes/--process/--hosts`: timely's cluster mode gives the same answer at
/// any scale.
mod scale_cli;

/// `crypy replay --into` (what if: a recorded run's market again, maybe with other templates)
/// and `crypy compare`.
mod whatif_cli;

/// `crypy report`: a self-contained HTML file with SVG charts.
mod report_cli;

/// Templates that learn: a holder avoids what kept losing.
mod learning_cli;

/// `crypy learn`: walk-forward learning that never looks ahead, deterministic at any worker
/// count, with its report.
mod learn_cli;
