//! Command-line definitions. Help text is part of the product: every option says what it
//! does and what its default is.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use crypy_core::{AgentId, EventKind, Interval, Pair};
use crypy_eventstore::import::CandleFormat;

#[derive(Debug, Parser)]
#[command(name = "crypy", version, about = "A crypto trading desk of agents over an append-only event log.", long_about = None)]
#[command(
    after_help = "Every input and decision of a run is an event in the data dir's log; `crypy log` inspects it.\nExamples:\n  crypy log import-candles --pair XBT/EUR --interval 15m replays/kraken_XBTEUR_15m_2023Q4.csv\n  crypy log stats\n  crypy log show --kind candle --from 100 --to 110"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trade market data through the exchange simulator: one desk, a holder per asset, a
    /// trader per pair, every input and decision recorded in the data dir's log.
    ///
    /// With no options it trades the bundled Kraken XBT/EUR 15-minute candles of 2023 Q4
    /// with the default templates and simulator configuration.
    Sim(SimArgs),
    /// Trade on Kraken spot: a live account (key needed) or, with --paper, its live data with
    /// local fills. Runs until Ctrl-C, `quit`, or --candles.
    Kraken(KrakenArgs),
    /// Trade on BitMEX (--testnet for its play-money venue), or paper trade on its live data.
    Bitmex(BitmexArgs),
    /// Feed a recorded log's external events through fresh agents.
    Replay(ReplayArgs),
    /// Open the terminal of a running crypy's control port (the same REPL as `crypy sim`'s).
    Attach(AttachArgs),
    /// Inspect and feed a data dir's event log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Market data out of a data dir, in a format other tools read.
    #[command(subcommand)]
    Data(DataCommand),
    /// One self-contained HTML file (no network needed to open it) with a run's prices with
    /// entries and exits, equity, drawdown, strategy scoreboard and template changes.
    Report(ReportArgs),
    /// Walk-forward learning over recorded runs or market files: learn on a window, test on
    /// the next, never look ahead; writes the learned templates, the lessons with their
    /// evidence, and a report of in-sample against out-of-sample results per fold.
    Learn(LearnArgs),
    /// What two runs did, side by side: return, drawdown, trades, fees, each strategy's
    /// results (e.g. a run and its what-if replay with other templates).
    Compare(CompareArgs),
    /// Compare templates, and see how a data dir's templates changed over its runs.
    #[command(subcommand)]
    Templates(TemplatesCommand),
    /// Measure crypy on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Field-by-field differences between two template directories (missing files are the defaults).
    Diff {
        #[arg(value_name = "A")]
        a: PathBuf,
        #[arg(value_name = "B")]
        b: PathBuf,
    },
    /// Every template change recorded in a data dir's log, field by field, with its reason.
    History {
        #[command(flatten)]
        dir: DataDir,
        /// One JSON object per changed field.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct SimArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// Candle files to trade, in any format `crypy log import-candles` reads (repeatable).
    /// Default: the bundled Kraken XBT/EUR 15m 2023 Q4.
    #[arg(long = "market", value_name = "FILE")]
    pub markets: Vec<PathBuf>,
    /// Trade the candles imported into the data dir's log (`crypy log import-candles`)
    /// instead of files.
    #[arg(long, conflicts_with = "markets")]
    pub from_log: bool,
    /// Trade the candles a recorded run of the data dir saw (a session on a real venue,
    /// replayed through the simulator).
    #[arg(long, value_name = "RUN", conflicts_with_all = ["markets", "from_log"])]
    pub from_run: Option<u32>,
    /// The pair of the --market files.
    #[arg(long, default_value = "XBT/EUR", value_name = "PAIR")]
    pub pair: Pair,
    /// The interval of the --market files.
    #[arg(long, default_value = "15m", value_name = "INTERVAL")]
    pub interval: Interval,
    /// A directory with desk.toml, holder.toml and/or trader.toml (defaults for missing ones).
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// The simulator's configuration (TOML). Default: EUR 10,000, XBT/EUR on Kraken terms.
    #[arg(long, value_name = "SIM.toml")]
    pub config: Option<PathBuf>,
    /// Pace market time at N times the wall clock (e.g. 900x: a 15-minute candle a second),
    /// so a human can follow; default: as fast as the machine goes.
    #[arg(long, value_name = "Nx", value_parser = parse_speed)]
    pub speed: Option<f64>,
    #[command(flatten)]
    pub ui: DeskUi,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Keep the desk and its control port up after the data ends, until Ctrl-C (a REPL, when
    /// one is open, keeps it up until `quit` anyway).
    #[arg(long)]
    pub stay: bool,
}

/// How a running desk is watched and steered: output, terminals, workers.
#[derive(Debug, Args)]
pub struct DeskUi {
    /// Print only the summary, as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Print only the summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Dataflow worker threads; traders' trackers are spread over them by pair.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// Run a terminal command after the start, print its answer, and end once every one is
    /// answered (repeatable, in order; e.g. --exec status --exec "invest EUR"). No REPL opens.
    #[arg(long = "exec", value_name = "COMMAND")]
    pub exec: Vec<String>,
    /// With --exec: run the commands once this many candles are done (default: at the start).
    #[arg(long, value_name = "CANDLES", requires = "exec", default_value_t = 0)]
    pub after: u64,
    #[command(flatten)]
    pub control: ControlArgs,
    /// Fault injection for tests: the log fails after N appends, as on a full disk.
    #[arg(long, value_name = "N", hide = true)]
    pub fault_log_fails_after: Option<u64>,
}

#[derive(Debug, Args)]
pub struct KrakenArgs {
    #[command(flatten)]
    pub venue: VenueArgs,
    /// Kraken's private WebSocket endpoint (default wss://ws-auth.kraken.com/v2; with only
    /// --ws-url given, that one serves both).
    #[arg(long, value_name = "URL")]
    pub ws_auth_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct BitmexArgs {
    #[command(flatten)]
    pub venue: VenueArgs,
    /// Use BitMEX's testnet (testnet.bitmex.com): real matching, play money, its own keys.
    #[arg(long)]
    pub testnet: bool,
}

/// What every real venue takes.
#[derive(Debug, Args)]
pub struct VenueArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// Paper trading: the venue's live public data, orders filled locally by the simulator's
    /// rules against it (the account from --config). Needs no key; nothing is sent to the venue.
    #[arg(long)]
    pub paper: bool,
    /// The account's name: the desk is `<exchange>:<account>` (default: main, or paper with --paper).
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
    /// Pairs to trade, BASE/QUOTE in crypy's names (repeatable; default: XBT/EUR on Kraken,
    /// XBT/USD on BitMEX).
    #[arg(long = "pair", value_name = "PAIR")]
    pub pairs: Vec<Pair>,
    /// The candle interval the desk trades on.
    #[arg(long, default_value = "1m", value_name = "INTERVAL")]
    pub interval: Interval,
    /// A directory with desk.toml, holder.toml and/or trader.toml (defaults for missing ones).
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// With --paper: the paper account (balances, latency, slippage, seed) as a simulator
    /// configuration; its markets and fees are replaced by the venue's. Default: EUR 10,000
    /// on Kraken, the same in USD on BitMEX.
    #[arg(long, value_name = "SIM.toml", requires = "paper")]
    pub config: Option<PathBuf>,
    /// The API key and secret, in a file only its owner may read (lines `key = …` and
    /// `secret = …`). Otherwise from CRYPY_<EXCHANGE>_KEY and CRYPY_<EXCHANGE>_SECRET.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The venue's REST endpoint, instead of its own (a proxy, a loopback test server).
    #[arg(long, value_name = "URL")]
    pub rest_url: Option<String>,
    /// The venue's WebSocket endpoint, instead of its own.
    #[arg(long, value_name = "URL")]
    pub ws_url: Option<String>,
    /// Keep every message the venue sends, as received, in <data dir>/recordings/ beside the
    /// events, so the session can be replayed and made into tests.
    #[arg(long)]
    pub record: bool,
    /// End after this many candles (default: run until Ctrl-C or `quit`).
    #[arg(long, value_name = "N")]
    pub candles: Option<u64>,
    /// Seconds a venue request may take before it is retried (never an order twice).
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub timeout: u64,
    #[command(flatten)]
    pub ui: DeskUi,
}

/// The telnet control port.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// Serve every agent's terminal over telnet at ADDR for the whole run (`--control` alone:
    /// 127.0.0.1:7878). Any address but loopback needs --control-token.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:7878")]
    pub control: Option<std::net::SocketAddr>,
    /// The token a client must give before any command (required off loopback).
    #[arg(long, value_name = "TOKEN", env = "CRYPY_CONTROL_TOKEN", hide_env_values = true)]
    pub control_token: Option<String>,
}

fn parse_speed(s: &str) -> Result<f64, String> {
    let number = s.strip_suffix(['x', 'X']).unwrap_or(s);
    match number.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a speed: give a positive factor such as 60x or 900x")),
    }
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The control port of a running crypy (its `--control`).
    #[arg(value_name = "ADDR", default_value = "127.0.0.1:7878")]
    pub addr: String,
    /// The token the control port asks for, if any.
    #[arg(long, value_name = "TOKEN", env = "CRYPY_CONTROL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// Compare the re-derived decisions with the recorded ones; exit 1 on any difference.
    #[arg(long, required_unless_present = "into", conflicts_with = "into")]
    pub verify: bool,
    /// What if: trade a recorded run's market data again, through the simulator with the
    /// run's recorded configuration, into a new data dir (which must hold no log yet); with
    /// --templates, with other templates. `crypy compare` then shows what changed.
    #[arg(long, value_name = "DIR")]
    pub into: Option<PathBuf>,
    /// With --into: the templates to use instead of the run's own.
    #[arg(long, value_name = "DIR", requires = "into")]
    pub templates: Option<PathBuf>,
    /// With --into: the run to re-trade (default: the last one).
    #[arg(long, value_name = "RUN", requires = "into")]
    pub run: Option<u32>,
    /// List at most this many differences.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub max_differences: usize,
    /// External events per dataflow epoch (the result never depends on it).
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub epoch: usize,
    /// Dataflow worker threads (in each process); traders' trackers are spread over them by
    /// pair (the result never depends on it).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Output one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LearnArgs {
    /// The templates to start from (default: the built-in ones).
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// A new (or empty) directory for the learned templates; its learning/ holds every run's
    /// log, each fold's templates, the lessons (changes.jsonl) and report.html. Needed by
    /// process 0 only.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A data dir to learn from: the candles imported into its log, else those its last run
    /// saw, and its recorded simulator configuration (repeatable).
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dirs: Vec<PathBuf>,
    /// A candle file to learn from, in any format `crypy log import-candles` reads;
    /// `PAIR=FILE` names its pair (repeatable).
    #[arg(long = "market", value_name = "[PAIR=]FILE")]
    pub markets: Vec<String>,
    /// The pair of --market files that do not name one.
    #[arg(long, default_value = "XBT/EUR", value_name = "PAIR")]
    pub pair: Pair,
    /// The interval of the --market files.
    #[arg(long, default_value = "15m", value_name = "INTERVAL")]
    pub interval: Interval,
    /// The simulator's configuration (default: the data dir's recorded one, else the built-in).
    #[arg(long, value_name = "SIM.toml")]
    pub config: Option<PathBuf>,
    /// Folds: the data is cut into K+1 windows of equal market time; fold i tests on window
    /// i what was learned on the windows before it.
    #[arg(long, default_value_t = 3, value_name = "K", value_parser = clap::value_parser!(u16).range(1..=100))]
    pub folds: u16,
    /// Runs at once, on their own threads (default: every core). The chain of learning is
    /// sequential; the in-sample and baseline runs go beside it. With --processes, the runs go
    /// one after another instead and this is each process's dataflow threads, as for `sim`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: Option<u16>,
    /// Print the result as one JSON object (no progress).
    #[arg(long)]
    pub json: bool,
    /// With --processes: every run's agents spread over the processes (the other processes
    /// need only --folds, to know how many runs they serve).
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// The run to report (default: the last).
    #[arg(long, value_name = "RUN")]
    pub run: Option<u32>,
    /// The HTML file to write.
    #[arg(long, value_name = "FILE.html", required = true)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The first data dir.
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// The second data dir.
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// The run of A to compare (default: its last).
    #[arg(long, value_name = "RUN")]
    pub run_a: Option<u32>,
    /// The run of B to compare (default: its last).
    #[arg(long, value_name = "RUN")]
    pub run_b: Option<u32>,
    /// Output one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Timely's cluster mode: the same command on several processes, each with --workers
/// threads. Process 0 reads the data dir and writes what there is to write; the others only
/// lend their workers and need nothing but the hosts file.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// How many processes run this command together (with --hosts).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub processes: u16,
    /// This process's index, 0 to N−1 (0 has the data dir).
    #[arg(long, default_value_t = 0, value_name = "I")]
    pub process: u16,
    /// A file with each process's host:port, one a line in process order (blank lines and
    /// lines starting with # are skipped).
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DataDir {
    /// The data dir holding the event log.
    #[arg(long, global = true, env = "CRYPY_DATA_DIR", default_value = "./crypy-data", value_name = "DIR")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Append candle events from real data files, all or nothing.
    ///
    /// Formats are recognised from content: CSV with a header naming ts,open,high,low,close,volume
    /// (ts in s or ms, the candle's open time); Kraken's OHLCVT export
    /// (time,open,high,low,close,volume,trades, with or without header); BitMEX /trade/bucketed JSON
    /// (timestamp = end of the bucket; volume from homeNotional). Files may be given in any order.
    /// A malformed row stops the import with its file and line, and nothing is appended.
    ImportCandles {
        #[command(flatten)]
        dir: DataDir,
        /// The pair the candles are for, BASE/QUOTE.
        #[arg(long, value_name = "PAIR")]
        pair: Pair,
        /// The candles' interval: 1m, 5m, 15m, 1h, 4h, 1d…
        #[arg(long, value_name = "INTERVAL")]
        interval: Interval,
        /// Force a format instead of recognising it: csv, kraken or bitmex.
        #[arg(long, value_name = "FORMAT")]
        format: Option<CandleFormat>,
        /// Output the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Candle files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Totals: events, seqs, runs, event-time range, count per kind.
    Stats {
        #[command(flatten)]
        dir: DataDir,
        /// Output one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Events as a readable table, or JSON lines.
    Show {
        #[command(flatten)]
        dir: DataDir,
        #[command(flatten)]
        filter: Filter,
        /// Show at most this many events.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// One JSON object per line: seq, run, time, wall, source, kind, cause, data.
        #[arg(long)]
        json: bool,
    },
    /// The last events; with -f, keep printing new ones as they are appended.
    Tail {
        #[command(flatten)]
        dir: DataDir,
        /// How many of the last events to print first.
        #[arg(short = 'n', long, default_value_t = 10, value_name = "N")]
        lines: u64,
        /// Follow: wait for new events until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check every record; exit 0 if the log is intact, 1 with the first bad seq otherwise.
    Verify {
        #[command(flatten)]
        dir: DataDir,
        /// Output one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write events to a file other tools read.
    Export {
        #[command(flatten)]
        dir: DataDir,
        #[command(flatten)]
        filter: Filter,
        /// Write a Parquet file (one row per event; payload as JSON text in column `data`).
        #[arg(long, value_name = "FILE", required = true)]
        parquet: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write the candles a data dir holds to a Parquet file that pandas, polars and pyarrow
    /// read: one row per candle, oldest first — pair, interval, ts (the open, UTC ms), open,
    /// high, low, close and volume as exact decimals, trades. A candle recorded more than once
    /// (imported, then seen by runs) is written once. `crypy log import-candles` reads the file
    /// back (one pair at a time).
    ExportCandles {
        #[command(flatten)]
        dir: DataDir,
        /// Only this pair.
        #[arg(long, value_name = "PAIR")]
        pair: Option<Pair>,
        /// Only the candles of this run (0: those imported with `crypy log import-candles`).
        #[arg(long, value_name = "RUN")]
        run: Option<u32>,
        /// The Parquet file to write (replaced whole, or left as it was on error).
        #[arg(long, value_name = "FILE", required = true)]
        parquet: PathBuf,
    },
}

#[derive(Debug, Args, Clone)]
pub struct Filter {
    /// Only events of these kinds (repeat or comma-separate), e.g. candle,order_requested.
    #[arg(long, value_delimiter = ',', value_name = "KIND")]
    pub kind: Vec<EventKind>,
    /// Only events about this pair.
    #[arg(long, value_name = "PAIR")]
    pub pair: Option<Pair>,
    /// Only events emitted by this agent (sim:main, EUR, XBT/EUR#1, @import).
    #[arg(long, value_name = "AGENT")]
    pub agent: Option<AgentId>,
    /// First seq to consider.
    #[arg(long, default_value_t = 1, value_name = "SEQ")]
    pub from: u64,
    /// Last seq to consider.
    #[arg(long, default_value_t = u64::MAX, value_name = "SEQ")]
    pub to: u64,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Durable appends per second (batches, fsync per batch) and scanned events per second.
    Log {
        /// How many small events to append.
        #[arg(long, default_value_t = 1_000_000, value_name = "N")]
        events: u64,
        /// Events per append (each append is fsynced).
        #[arg(long, default_value_t = 1_000, value_name = "N")]
        batch: usize,
        /// Where to create the scratch log (a fresh temporary dir inside it, removed after).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Output one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// A trader's evaluation throughput: strategy variants × bars ÷ seconds, with the
    /// simulator's fill rule (next open, fees), indicators computed once per grid.
    Eval {
        /// Candles to evaluate on, in any format `crypy log import-candles` reads.
        /// Default: the bundled Kraken XBT/EUR 15m 2023 Q4.
        #[arg(long, value_name = "FILE")]
        data: Option<PathBuf>,
        /// The candles' interval (sets the Sharpe ratio's annualisation).
        #[arg(long, default_value = "15m", value_name = "INTERVAL")]
        interval: Interval,
        /// A strategy grid; repeat for several.
        #[arg(long = "strategy", value_name = "SPEC", default_value = "sma_cross fast=5..50/5 slow=20..200/20")]
        strategies: Vec<String>,
        /// Fee rate on traded value.
        #[arg(long, default_value_t = 0.0026, value_name = "RATE")]
        fee: f64,
        /// Evaluate the whole grid this many times; the figure covers them all.
        #[arg(long, default_value_t = 200, value_name = "N")]
        repeat: u32,
        /// Evaluators running side by side, as traders on that many dataflow workers
        /// (0: one per core); the repeats are shared among them.
        #[arg(long, default_value_t = 0, value_name = "N")]
        threads: usize,
        /// Output one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// One fixed long-only strategy through the whole desk — simulator, durable log,
    /// dataflow, desk, holder and trader — as the like-for-like of an event-driven backtest
    /// (nautilus_trader, backtesting.py): enter with a fixed quantity when the fast average
    /// is above the slow one and flat, leave when it is below.
    Backtest(BacktestArgs),
    /// A recorded run through the dataflow and the agents again (as `replay --verify`):
    /// market events per second and peak memory.
    Replay(BenchReplayArgs),
    /// Live simulator mode with the log durable: from a market event entering the log to the
    /// order request leaving the desk, p50 / p99 / p99.9 / max, for one fixed strategy, and
    /// the part of it spent deciding before the log is made durable.
    Latency(LatencyArgs),
    /// The SMA-crossover parameter sweep with vectorbt's arithmetic (all-in long-only,
    /// fees, `total_return`): every fast < slow pair over every bar, as the like-for-like of
    /// vectorbt's `from_signals` sweep. Prints the best pair and the bar-steps per second.
    Sweep(SweepArgs),
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Candles, in any format `crypy log import-candles` reads. Default: the bundled Kraken
    /// XBT/EUR 15m 2023 Q4 (then --interval is not used).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// The candles' interval (only checked against their times).
    #[arg(long, default_value = "1m", value_name = "INTERVAL")]
    pub interval: Interval,
    /// Fast windows: FROM:TO:STEP (inclusive; or FROM..TO/STEP), or a comma list.
    #[arg(long, default_value = "5:50:5", value_name = "WINDOWS")]
    pub fast: String,
    /// Slow windows, as --fast; only pairs with fast < slow run.
    #[arg(long, default_value = "20:200:20", value_name = "WINDOWS")]
    pub slow: String,
    /// Fee rate on every order's value.
    #[arg(long, default_value_t = 0.0026, value_name = "RATE")]
    pub fees: f64,
    /// Starting cash of every pair; returns are fractions of it.
    #[arg(long, default_value_t = 100.0, value_name = "AMOUNT")]
    pub cash: f64,
    /// Where a signal fills: `close` (its bar's close, vectorbt's default) or `next-open`.
    #[arg(long, default_value = "close", value_name = "RULE", value_parser = ["close", "next-open"])]
    pub fill: String,
    /// Threads (0: one per core once the sweep is big enough to gain from it).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub threads: usize,
    /// Run the sweep this many times; the median time is reported.
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Output one JSON object, with every pair's result.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchReplayArgs {
    /// The data dir whose log to replay.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Dataflow worker threads.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// External events per dataflow epoch.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub epoch: usize,
    /// Output one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LatencyArgs {
    /// Candles, in any format `crypy log import-candles` reads.
    #[arg(long, value_name = "FILE")]
    pub csv: PathBuf,
    /// Only the first N bars.
    #[arg(long, value_name = "N")]
    pub bars: Option<usize>,
    /// FAMILY:FAST:SLOW with FAMILY sma or ema.
    #[arg(long, default_value = "sma:10:30", value_name = "STRATEGY")]
    pub strategy: String,
    /// The pair the candles are of.
    #[arg(long, default_value = "XBT/USD", value_name = "PAIR")]
    pub pair: Pair,
    /// The candles' interval.
    #[arg(long, default_value = "1m", value_name = "INTERVAL")]
    pub interval: Interval,
    /// Output one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// Candles, in any format `crypy log import-candles` reads (e.g. `ts,open,high,low,close,volume`).
    #[arg(long, value_name = "FILE")]
    pub csv: PathBuf,
    /// FAMILY:FAST:SLOW with FAMILY sma or ema.
    #[arg(long, default_value = "sma:10:30", value_name = "STRATEGY")]
    pub strategy: String,
    /// Base-asset quantity of every entry (exact decimal).
    #[arg(long, default_value = "0.01", value_name = "QTY")]
    pub qty: String,
    /// The pair the candles are of.
    #[arg(long, default_value = "XBT/USD", value_name = "PAIR")]
    pub pair: Pair,
    /// The candles' interval.
    #[arg(long, default_value = "1m", value_name = "INTERVAL")]
    pub interval: Interval,
    /// Fee rate on traded value (exact decimal).
    #[arg(long, default_value = "0.001", value_name = "RATE")]
    pub fee: String,
    /// Starting balance of the quote asset (exact decimal).
    #[arg(long, default_value = "1000000", value_name = "AMOUNT")]
    pub cash: String,
    /// Dataflow worker threads.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// Keep the run's log in this data dir (default: a scratch dir, removed after).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Output one JSON object.
    #[arg(long)]
    pub json: bool,
}
