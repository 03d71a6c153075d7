//! `crypy kraken` and `crypy bitmex`: a desk on a real venue, live or paper.
//!
//! Keys come only from the environment or from a key file only its owner can read; they go to
//! the venue adapter and nowhere else (not the log, not a message, not `--json`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use crypy_agents::template::{read_texts, Templates};
use crypy_core::{Money, Pair};
use crypy_dataflow::sim::DeskOptions;
use crypy_exchange::paper::Paper;
use crypy_exchange::sim::SimConfig;
use crypy_exchange::{Exchange, RawMessage, RawTap};

use crate::args::VenueArgs;

/// An API key pair, as read; never printed.
pub struct ApiKey {
    pub key: String,
    pub secret: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(…)")
    }
}

/// The key for `exchange` (`KRAKEN`, `BITMEX`) from `key_file` or the environment; `None`
/// when neither has one.
///
/// # Errors
/// A key file others can read, one that cannot be read or lacks a field, or only one of the
/// two environment variables set. No message ever contains what the file or variables hold.
pub fn load_key(exchange: &str, key_file: Option<&Path>) -> anyhow::Result<Option<ApiKey>> {
    if let Some(path) = key_file {
        return read_key_file(path).map(Some);
    }
    let key_var = format!("CRYPY_{exchange}_KEY");
    let secret_var = format!("CRYPY_{exchange}_SECRET");
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match (get(&key_var), get(&secret_var)) {
        (Some(key), Some(secret)) => Ok(Some(ApiKey { key: key.trim().into(), secret: secret.trim().into() })),
        (None, None) => Ok(None),
        (Some(_), None) => bail!("{key_var} is set but {secret_var} is not: set both, or neither"),
        (None, Some(_)) => bail!("{secret_var} is set but {key_var} is not: set both, or neither"),
    }
}

fn read_key_file(path: &Path) -> anyhow::Result<ApiKey> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read the key file {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "the key file {} can be read by others (mode {mode:03o}): refusing it; `chmod 600 {}` first",
                path.display(),
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the key file {}", path.display()))?;
    let (mut key, mut secret) = (None, None);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            // The line may be a secret: say where, never what.
            bail!("{} line {}: expected `key = …` or `secret = …`", path.display(), n + 1);
        };
        let value = value.trim().trim_matches('"').to_string();
        match name.trim() {
            "key" => key = Some(value),
            "secret" => secret = Some(value),
            other => bail!("{} line {}: unknown field {other:?} (expected key or secret)", path.display(), n + 1),
        }
    }
    match (key, secret) {
        (Some(key), Some(secret)) if !key.is_empty() && !secret.is_empty() => Ok(ApiKey { key, secret }),
        _ => bail!("{} must hold both `key = …` and `secret = …`", path.display()),
    }
}

/// Writes what the venue sends to `<data dir>/recordings/<exchange>-<account>-<time>.jsonl`,
/// one JSON object a line (`received`, `channel`, `text`), on a thread of its own.
pub struct Recording {
    pub path: PathBuf,
    tap: Option<RawTap>,
    writer: Option<std::thread::JoinHandle<std::io::Result<u64>>>,
}

impl Recording {
    pub fn start(data_dir: &Path, exchange: &str, account: &str) -> anyhow::Result<Recording> {
        let dir = data_dir.join("recordings");
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let stamp = crypy_core::time::format_utc(wall_ms()).replace([':', ' '], "").replace('-', "");
        let path = dir.join(format!("{exchange}-{account}-{stamp}.jsonl"));
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let (tap, mut messages) = tokio::sync::mpsc::unbounded_channel::<RawMessage>();
        let writer = std::thread::Builder::new().name("recording".into()).spawn(move || {
            let mut out = std::io::BufWriter::new(file);
            let mut written = 0;
            while let Some(m) = messages.blocking_recv() {
                let line = serde_json::json!({"received": m.received, "channel": m.channel, "text": m.text});
                writeln!(out, "{line}")?;
                written += 1;
                // A crash should cost at most the messages still in the channel.
                if messages.is_empty() {
                    out.flush()?;
                }
            }
            out.flush()?;
            Ok(written)
        })?;
        Ok(Recording { path, tap: Some(tap), writer: Some(writer) })
    }

    pub fn tap(&self) -> Option<RawTap> {
        self.tap.clone()
    }

    /// Waits for every message to be written; how many were.
    pub fn finish(mut self) -> anyhow::Result<u64> {
        drop(self.tap.take());
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(result)) => Ok(result.with_context(|| format!("cannot write {}", self.path.display()))?),
            _ => bail!("the recording writer of {} stopped", self.path.display()),
        }
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The paper account: `--config`, or the simulator's default with its balance in the first
/// pair's quote asset.
pub fn paper_account(args: &VenueArgs, pairs: &[Pair], account: &str) -> anyhow::Result<SimConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            SimConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => {
            let mut config = SimConfig::default();
            if let Some(pair) = pairs.first() {
                let start: Money = "10000".parse()?;
                config.balances = [(pair.quote, start)].into_iter().collect();
            }
            config
        }
    };
    config.account = account.to_string();
    Ok(config)
}

/// The runtime a live venue's connections run on: one thread besides the desk's, so that
/// they keep reading (and answering pings) while the desk thinks.
pub fn venue_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("venue")
        .enable_all()
        .build()
        .context("cannot start the venue's runtime")
}

/// The templates of `--templates`, or the defaults.
fn templates(args: &VenueArgs) -> anyhow::Result<(Templates, Option<[String; 3]>)> {
    Ok(match &args.templates {
        Some(dir) => {
            let texts = read_texts(dir)?;
            (Templates::parse_texts(&texts, dir)?, Some(texts))
        }
        None => (Templates::default(), None),
    })
}

/// Runs the desk on a connected venue (wrapped in a paper account with `--paper`).
pub fn run_on<E: Exchange>(
    connect: impl std::future::Future<Output = Result<E, crypy_exchange::ExchangeError>>,
    venue_name: &str,
    args: &VenueArgs,
    start: Start,
) -> anyhow::Result<ExitCode> {
    let Start { account, pairs, recording, .. } = start;
    let pairs = &pairs[..];
    // The venue's connections are spawned on this runtime, so they must start inside it.
    let runtime = venue_runtime()?;
    let venue = runtime
        .block_on(connect)
        .with_context(|| format!("cannot connect to {venue_name} as {}:{account}", venue_name.to_lowercase()))?;
    let (templates, texts) = templates(args)?;
    let scoped = match &args.templates {
        Some(dir) => crypy_agents::template::read_scoped(dir)?,
        None => Vec::new(),
    };
    let desk_name = venue.desk().to_string();
    let options = DeskOptions {
        data_dir: args.dir.data_dir.clone(),
        templates,
        template_texts: texts,
        workers: usize::from(args.ui.workers),
        cluster: None,
        speed: None,
        live: true,
        expected_candles: None,
        stop_after_candles: args.candles,
        poll: Some(std::time::Duration::from_millis(50)),
        log_fails_after: args.ui.fault_log_fails_after,
        venue_settings: None,
        scoped_templates: scoped,
        start_settings: Vec::new(),
        batch_candles: false,
    };
    let result = if args.paper {
        let account = venue.desk().to_string();
        let account = account.split_once(':').map_or("paper", |(_, a)| a).to_string();
        let config = paper_account(args, pairs, &account)?;
        let paper = runtime.block_on(Paper::new(venue, config))?;
        super::desk::drive(runtime, paper, options, &desk_name, &args.dir.data_dir, &args.ui, false)
    } else {
        super::desk::drive(runtime, venue, options, &desk_name, &args.dir.data_dir, &args.ui, false)
    };
    if let Some(recording) = recording {
        let path = recording.path.clone();
        let written = recording.finish()?;
        if !args.ui.json {
            eprintln!("recorded {written} venue messages in {}", path.display());
        }
    }
    result
}

/// The account name: `--account`, else `paper` or `main`.
pub fn account(args: &VenueArgs) -> String {
    args.account.clone().unwrap_or_else(|| if args.paper { "paper".into() } else { "main".into() })
}

/// The key a live run needs; paper and public use need none.
pub fn key_for(exchange: &str, args: &VenueArgs) -> anyhow::Result<Option<ApiKey>> {
    let key = load_key(exchange, args.key_file.as_deref())?;
    if key.is_none() && !args.paper {
        let lower = exchange.to_ascii_lowercase();
        bail!(
            "`crypy {lower}` trades a live account and needs its API key: set CRYPY_{exchange}_KEY and \
             CRYPY_{exchange}_SECRET, or give --key-file; or paper trade with `crypy {lower} --paper`"
        );
    }
    // Paper trading never uses a key, even when one is around.
    Ok(if args.paper { None } else { key })
}

/// What every venue command starts with: the account, the key, the pairs, the data dir and
/// the recording.
pub struct Start {
    account: String,
    key: Option<ApiKey>,
    pairs: Vec<Pair>,
    recording: Option<Recording>,
}

impl Start {
    /// Where the adapter sends what it receives, when recording.
    fn tap(&self) -> Option<RawTap> {
        self.recording.as_ref().and_then(Recording::tap)
    }
}

impl VenueArgs {
    /// `--timeout`, at least a second.
    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout.max(1))
    }
}

fn start(exchange: &str, default_pair: &str, v: &VenueArgs) -> anyhow::Result<Start> {
    let account = account(v);
    let key = key_for(&exchange.to_ascii_uppercase(), v)?;
    let pairs = if v.pairs.is_empty() { vec![default_pair.parse()?] } else { v.pairs.clone() };
    std::fs::create_dir_all(&v.dir.data_dir)
        .with_context(|| format!("cannot create the data dir {}", v.dir.data_dir.display()))?;
    let recording = if v.record { Some(Recording::start(&v.dir.data_dir, exchange, &account)?) } else { None };
    Ok(Start { account, key, pairs, recording })
}

/// `crypy kraken`.
pub fn kraken(args: crate::args::KrakenArgs) -> anyhow::Result<ExitCode> {
    use crypy_exchange::kraken::{KrakenConfig, KrakenCredential, KrakenExchange};
    let v = &args.venue;
    let mut start = start("kraken", "XBT/EUR", v)?;
    let account = start.account.clone();
    let mut config = KrakenConfig::new(&account);
    if let Some(url) = &v.rest_url {
        config.rest_url.clone_from(url);
    }
    if let Some(url) = &v.ws_url {
        config.ws_url.clone_from(url);
        config.ws_auth_url.clone_from(url);
    }
    if let Some(url) = &args.ws_auth_url {
        config.ws_auth_url.clone_from(url);
    }
    config.credential = match start.key.take() {
        // The decoding error says what is wrong with the secret, never the secret.
        Some(k) => Some(KrakenCredential::new(k.key, &k.secret).context("the Kraken API secret")?),
        None => None,
    };
    // Kraken remembers the highest nonce of a key forever: ours must survive restarts.
    config.nonce_path = Some(v.dir.data_dir.join(format!("kraken-{account}.nonce")));
    config.pairs.clone_from(&start.pairs);
    config.interval = v.interval;
    config.timeout = v.timeout();
    config.raw = start.tap();
    run_on(KrakenExchange::connect(config), "Kraken", v, start)
}

/// `crypy bitmex [--testnet]`.
pub fn bitmex(args: crate::args::BitmexArgs) -> anyhow::Result<ExitCode> {
    use crypy_exchange::bitmex::{BitmexConfig, BitmexCredential, BitmexExchange};
    let v = &args.venue;
    let mut start = start("bitmex", "XBT/USD", v)?;
    let account = start.account.clone();
    let mut config = if args.testnet { BitmexConfig::testnet(&account) } else { BitmexConfig::new(&account) };
    if let Some(url) = &v.rest_url {
        config.rest_url.clone_from(url);
    }
    if let Some(url) = &v.ws_url {
        config.ws_url.clone_from(url);
    }
    config.credential = start.key.take().map(|k| BitmexCredential::new(k.key, k.secret));
    config.pairs.clone_from(&start.pairs);
    config.interval = v.interval;
    config.timeout = v.timeout();
    config.raw = start.tap();
    run_on(BitmexExchange::connect(config), "BitMEX", v, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused_and_errors_never_show_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kraken.key");
        std::fs::write(&path, "key = \"K3Y-VALUE\"\nsecret = \"S3CRET-VALUE\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_key("KRAKEN", Some(&path)).unwrap_err().to_string();
        assert!(err.contains("can be read by others (mode 644)"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = load_key("KRAKEN", Some(&path)).unwrap().unwrap();
        assert_eq!((key.key.as_str(), key.secret.as_str()), ("K3Y-VALUE", "S3CRET-VALUE"));
        assert_eq!(format!("{key:?}"), "ApiKey(…)");
        std::fs::write(&path, "S3CRET-VALUE\n").unwrap();
        let err = load_key("KRAKEN", Some(&path)).unwrap_err().to_string();
        assert!(err.contains("line 1") && !err.contains("S3CRET"), "{err}");
    }
}
