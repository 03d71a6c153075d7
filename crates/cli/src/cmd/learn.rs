//! `crypy learn`: walk-forward learning. The market data is cut into `folds + 1` windows of
//! equal market time. The templates of window `i` are those learned from the run on window
//! `i - 1` (starting from the given templates on window 0): each run is a whole simulated
//! desk whose traders, holders and desk learn by their own rules, and what they learned
//! (their `template_changed` events, and the desk's lesson from the lifetimes so far) is
//! written into the next window's templates. Fold `i` tests window `i`'s templates on window
//! `i` (out of sample: nothing of window `i` was seen when they were learned), and also runs
//! them on window `i - 1` (in sample) and the given templates on window `i` (the baseline).
//! The templates learned from the last window are the output. Nothing here looks ahead: a
//! window's templates depend only on the windows before it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{mpsc, Arc, Mutex};

use anyhow::{bail, Context};
use crypy_agents::society::{learn_divert, Lifetime};
use crypy_agents::template::{read_scoped, read_texts, scope_file, set_learned, Templates, FILES};
use crypy_core::event::TemplateScope;
use crypy_core::{AgentId, Asset, Candle, Event, Pair};
use crypy_dataflow::sim::{DeskOptions, Unsteered};
use crypy_dataflow::summary::{summarize, Lifetimes, RunSummary};
use crypy_eventstore::LogReader;
use crypy_exchange::sim::{SimConfig, Simulator};
use serde_json::json;

use crate::args::LearnArgs;
use crate::out;

/// A full set of templates as texts: the three shared files and any holder's or pair's own.
#[derive(Clone, Debug, PartialEq)]
struct TemplateSet {
    texts: [String; 3],
    scoped: BTreeMap<TemplateScope, String>,
}

impl TemplateSet {
    fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        let Some(dir) = dir else {
            return Ok(TemplateSet { texts: FILES.map(|(_, t)| t.to_string()), scoped: BTreeMap::new() });
        };
        anyhow::ensure!(dir.is_dir(), "--templates {} is not a directory", dir.display());
        let set = TemplateSet { texts: read_texts(dir)?, scoped: read_scoped(dir)?.into_iter().collect() };
        set.templates(dir)?;
        Ok(set)
    }

    fn templates(&self, origin: &Path) -> anyhow::Result<Templates> {
        Ok(Templates::parse_texts(&self.texts, origin)?)
    }

    fn text(&self, scope: &TemplateScope) -> &str {
        match scope {
            TemplateScope::Desk => &self.texts[0],
            TemplateScope::Holder(_) => self.scoped.get(scope).unwrap_or(&self.texts[1]),
            TemplateScope::Trader(_) => self.scoped.get(scope).unwrap_or(&self.texts[2]),
        }
    }

    /// Sets one key of `scope`'s template; `None` when it already holds `value`.
    fn set(&mut self, scope: &TemplateScope, key: &str, value: &str) -> anyhow::Result<Option<String>> {
        let (change, text) =
            set_learned(self.text(scope), key, value).map_err(|e| anyhow::anyhow!("{}: {e}", scope_file(scope)))?;
        if change.old == change.new {
            return Ok(None);
        }
        match scope {
            TemplateScope::Desk => self.texts[0] = text,
            _ => {
                self.scoped.insert(scope.clone(), text);
            }
        }
        Ok(change.old)
    }

    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let files = FILES.iter().map(|(name, _)| name.to_string()).zip(self.texts.iter());
        let scoped = self.scoped.iter().map(|(scope, text)| (scope_file(scope), text));
        for (name, text) in files.chain(scoped) {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

/// One lesson: a template key that a run's agents (or the desk's lifetimes) changed.
#[derive(Clone, Debug)]
struct Lesson {
    scope: TemplateScope,
    key: String,
    old: Option<String>,
    new: String,
    reason: String,
    /// Where the evidence is: the run's data dir and the event's seq (none: the desk's lesson).
    source: Option<(String, u64)>,
}

/// What one simulated run did.
struct RunResult {
    summary: RunSummary,
    /// The last value each learned key took in the run, with its event.
    lessons: Vec<Lesson>,
    /// Each holder asset's realized results in the run.
    lifetimes: BTreeMap<Asset, Vec<Lifetime>>,
    /// Market time of its last candle.
    end: i64,
}

/// Everything a run needs that does not change between runs.
struct Setup {
    config: SimConfig,
    config_text: String,
    work: PathBuf,
    /// The dataflow each run's agents go on: one thread, or a cluster's processes.
    scale: crypy_dataflow::host::Scale,
}

fn simulate(setup: &Setup, name: &str, candles: Vec<Candle>, set: &TemplateSet) -> anyhow::Result<RunResult> {
    let dir = setup.work.join(name);
    let end = candles.iter().map(Candle::close_time).max().unwrap_or(0);
    let desk_name = AgentId::desk("sim", &setup.config.account)?.to_string();
    let expected = candles.len() as u64;
    let sim = Simulator::new(setup.config.clone(), candles)?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let options = DeskOptions {
        template_texts: Some(set.texts.clone()),
        scoped_templates: set.scoped.iter().map(|(s, t)| (s.clone(), t.clone())).collect(),
        workers: setup.scale.workers,
        cluster: setup.scale.cluster.clone(),
        venue_settings: Some(setup.config_text.clone()),
        ..DeskOptions::simulated(dir.clone(), set.templates(Path::new(name))?, expected)
    };
    crypy_dataflow::sim::run_desk(runtime, sim, options, |_| {}, |_, _| {}, &mut Unsteered)
        .with_context(|| format!("the {name} run ({desk_name})"))?;
    let reader = LogReader::open(&dir).with_context(|| format!("cannot read the log in {}", dir.display()))?;
    let mut lifetimes = Lifetimes::default();
    let mut learned: BTreeMap<(TemplateScope, String), Lesson> = BTreeMap::new();
    let mut damaged = None;
    // One pass, nothing kept but what the summary and the lessons need.
    let events = reader.iter_from(1)?.map_while(|e| e.map_err(|err| damaged = Some(err)).ok()).inspect(|e| {
        lifetimes.see(e);
        let (Event::TemplateChanged(t), false) = (&e.event, matches!(e.source, AgentId::Desk { .. })) else { return };
        let Some(new) = &t.new else { return };
        let lesson = learned.entry((t.scope.clone(), t.key.clone())).or_insert_with(|| Lesson {
            scope: t.scope.clone(),
            key: t.key.clone(),
            old: t.old.clone(),
            new: String::new(),
            reason: String::new(),
            source: None,
        });
        lesson.new.clone_from(new);
        lesson.reason.clone_from(&t.reason);
        lesson.source = Some((name.to_string(), e.seq));
    });
    let summary = summarize(1, events);
    if let Some(err) = damaged {
        return Err(err).with_context(|| format!("the log of the {name} run"));
    }
    Ok(RunResult { summary, lessons: learned.into_values().collect(), lifetimes: lifetimes.lifetimes(), end })
}

/// The market data to learn from, in time order, with the simulator configuration.
fn gather(args: &LearnArgs) -> anyhow::Result<(Vec<Candle>, Option<String>)> {
    let mut candles = Vec::new();
    let mut recorded_config = None;
    for dir in &args.data_dirs {
        // The venue of its last run, if it has one, is the venue its data is traded on.
        let run = super::sim::recorded_run(dir, None).ok();
        if let Some(text) = run.as_ref().and_then(|r| r.config_text.clone()) {
            recorded_config.get_or_insert(text);
        }
        match (super::sim::logged_candles(dir, 0), run) {
            (Ok(imported), _) => candles.extend(imported),
            (Err(_), Some(run)) => candles.extend(run.candles),
            (Err(_), None) => bail!("{} has neither imported candles nor a run", dir.display()),
        }
    }
    for market in &args.markets {
        let (pair, file) = match market.split_once('=') {
            Some((pair, file)) if pair.contains('/') => {
                (pair.parse::<Pair>().with_context(|| format!("--market {market}: {pair} is not a pair"))?, file)
            }
            _ => (args.pair, market.as_str()),
        };
        candles.extend(crypy_eventstore::import::read_candles(Path::new(file), &pair, args.interval, None)?);
    }
    candles.sort_by_key(|c| (c.open_time, c.pair));
    candles.dedup_by_key(|c| (c.open_time, c.pair));
    Ok((candles, recorded_config))
}

/// `candles` cut into `count` windows of equal market time.
fn windows(candles: &[Candle], count: usize) -> anyhow::Result<Vec<Vec<Candle>>> {
    let (Some(first), Some(last)) = (candles.first(), candles.last()) else { bail!("no candles to learn from") };
    let (start, span) = (first.open_time, (last.open_time - first.open_time + 1).max(1));
    let mut windows = vec![Vec::new(); count];
    for c in candles {
        let i = (i128::from(c.open_time - start) * count as i128 / i128::from(span)) as usize;
        windows[i.min(count - 1)].push(c.clone());
    }
    if let Some(i) = windows.iter().position(Vec::is_empty) {
        bail!("window {i} of {count} has no candles: the data has a gap; use fewer --folds");
    }
    Ok(windows)
}

/// Where the work of one run goes: it can run on any thread.
struct Job {
    name: String,
    window: usize,
    set: TemplateSet,
}

/// The runs that are not on the chain of learning, run beside it.
type Done = (String, anyhow::Result<RunResult>);

/// Shows how far the job is: a bar on a terminal, a line per run otherwise.
struct Progress {
    done: usize,
    total: usize,
    tty: bool,
    quiet: bool,
}

impl Progress {
    fn finished(&mut self, name: &str, result: Option<&RunSummary>) {
        self.done += 1;
        if self.quiet {
            return;
        }
        let detail =
            result.map_or(String::new(), |s| format!(": {:+.2}%, {} positions", s.total_return() * 100.0, s.positions));
        if self.tty {
            let width = 30;
            let filled = self.done * width / self.total.max(1);
            eprint!(
                "\r[{}{}] {}/{} runs, last {name}{detail}\x1b[K",
                "#".repeat(filled),
                ".".repeat(width - filled),
                self.done,
                self.total
            );
            if self.done == self.total {
                eprintln!();
            }
        } else {
            eprintln!("run {}/{} {name}{detail}", self.done, self.total);
        }
    }
}

/// One fold's results.
struct Fold {
    window: usize,
    from: i64,
    to: i64,
    in_sample: RunSummary,
    out_of_sample: RunSummary,
    baseline: RunSummary,
    lessons: usize,
}

pub fn run(args: LearnArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let folds = usize::from(args.folds);
    let runs = 3 * folds + 1;
    let clustered = args.cluster.processes > 1;
    let scale = super::sim::scale(if clustered { args.workers.unwrap_or(1) } else { 1 }, &args.cluster)?;
    if let Some(cluster) = scale.cluster.as_ref().filter(|c| c.process != 0) {
        // Process 0 runs every run one after another, each on the whole cluster.
        for _ in 0..runs {
            crypy_dataflow::host::serve(&scale).map_err(|e| anyhow::anyhow!("process {}: {e}", cluster.process))?;
        }
        eprintln!("process {}: served {runs} learning runs", cluster.process);
        return Ok(ExitCode::SUCCESS);
    }
    let Some(out) = args.out.clone() else { bail!("--out DIR is needed: where the learned templates go") };
    anyhow::ensure!(
        !args.data_dirs.is_empty() || !args.markets.is_empty(),
        "nothing to learn from: give --data-dir DIR or --market FILE (repeatable)"
    );
    if out.exists() && std::fs::read_dir(&out).is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} is not empty: crypy learn writes its templates into a new directory", out.display());
    }
    let start_set = TemplateSet::load(args.templates.as_deref())?;
    let (candles, recorded_config) = gather(&args)?;
    let (config, config_text) = match (&args.config, recorded_config) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            (SimConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?, text)
        }
        (None, Some(text)) => {
            (SimConfig::from_toml(&text).context("the data dir's recorded simulator configuration")?, text)
        }
        (None, None) => (SimConfig::default(), crypy_exchange::sim::DEFAULT_TOML.to_string()),
    };
    let windows = Arc::new(windows(&candles, folds + 1)?);
    let bounds: Vec<(i64, i64)> =
        windows.iter().map(|w| (w[0].open_time, w.iter().map(Candle::close_time).max().unwrap_or(0))).collect();
    let work = out.join("learning");
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let setup = Arc::new(Setup { config, config_text, work: work.clone(), scale });
    // A cluster serves one run at a time.
    let workers = match args.workers {
        _ if clustered => 1,
        Some(n) => usize::from(n),
        None => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
    };
    let progress =
        Arc::new(Mutex::new(Progress { done: 0, total: runs, tty: std::io::stderr().is_terminal(), quiet: args.json }));

    // Side runs go to helper threads through a queue; the chain of learning stays here.
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let helpers: Vec<std::thread::JoinHandle<()>> = (1..workers.max(1))
        .map(|_| {
            let (jobs, done, setup, windows, progress) =
                (job_rx.clone(), done_tx.clone(), setup.clone(), windows.clone(), progress.clone());
            std::thread::spawn(move || loop {
                let job = match jobs.lock().map(|rx| rx.recv()) {
                    Ok(Ok(job)) => job,
                    _ => return,
                };
                let result = simulate(&setup, &job.name, windows[job.window].clone(), &job.set);
                if let Ok(mut p) = progress.lock() {
                    p.finished(&job.name, result.as_ref().ok().map(|r| &r.summary));
                }
                if done.send((job.name, result)).is_err() {
                    return;
                }
            })
        })
        .collect();
    let mut side_jobs: Vec<Job> = Vec::new();
    let submit = |job: Job, side_jobs: &mut Vec<Job>| {
        if helpers.is_empty() {
            side_jobs.push(job);
        } else {
            // A closed queue means every helper died: their errors come back below.
            let _ = job_tx.send(job);
        }
    };
    for fold in 1..=folds {
        submit(Job { name: format!("fold-{fold}-baseline"), window: fold, set: start_set.clone() }, &mut side_jobs);
    }

    let mut set = start_set.clone();
    let mut chain: Vec<RunResult> = Vec::new();
    let mut history: BTreeMap<Asset, Vec<Lifetime>> = BTreeMap::new();
    let mut lessons_by_window: Vec<Vec<Lesson>> = Vec::new();
    for (window, candles) in windows.iter().enumerate() {
        if window > 0 {
            set.write(&work.join(format!("fold-{window}")).join("templates"))?;
            submit(
                Job { name: format!("fold-{window}-in-sample"), window: window - 1, set: set.clone() },
                &mut side_jobs,
            );
        }
        let name = if window == 0 { "window-0".to_string() } else { format!("fold-{window}-out-of-sample") };
        let result = simulate(&setup, &name, candles.clone(), &set);
        if let Ok(mut p) = progress.lock() {
            p.finished(&name, result.as_ref().ok().map(|r| &r.summary));
        }
        let result = result?;
        // This window is now the past: what its agents learned shapes the next window.
        let mut lessons = Vec::new();
        for lesson in &result.lessons {
            if let Some(old) = set.set(&lesson.scope, &lesson.key, &lesson.new)? {
                lessons.push(Lesson { old: Some(old), ..lesson.clone() });
            }
        }
        for (asset, lives) in &result.lifetimes {
            let numbered = lives.iter().map(|l| Lifetime { run: window as u32 + 1, ..*l });
            history.entry(*asset).or_default().extend(numbered);
        }
        let desk = set.templates(Path::new(""))?.desk;
        if let Some((divert, reason)) = learn_divert(&history, &desk.learning, result.end, &desk.divert) {
            let list = crypy_agents::template::toml_list(&divert);
            if let Some(old) = set.set(&TemplateScope::Desk, "divert", &list)? {
                let reason = format!("learned after window {window}: {reason}");
                lessons.push(Lesson {
                    scope: TemplateScope::Desk,
                    key: "divert".into(),
                    old: Some(old),
                    new: list,
                    reason,
                    source: None,
                });
            }
        }
        lessons_by_window.push(lessons);
        chain.push(result);
    }
    drop(job_tx);
    drop(done_tx);

    let mut side: BTreeMap<String, RunResult> = BTreeMap::new();
    for job in side_jobs {
        let result = simulate(&setup, &job.name, windows[job.window].clone(), &job.set);
        if let Ok(mut p) = progress.lock() {
            p.finished(&job.name, result.as_ref().ok().map(|r| &r.summary));
        }
        side.insert(job.name, result?);
    }
    for (name, result) in done_rx {
        side.insert(name, result?);
    }
    for helper in helpers {
        helper.join().map_err(|_| anyhow::anyhow!("a learning thread panicked"))?;
    }

    let mut folds_out = Vec::new();
    let mut take = |name: String| side.remove(&name).with_context(|| format!("the {name} run did not finish"));
    for fold in 1..=folds {
        folds_out.push(Fold {
            window: fold,
            from: bounds[fold].0,
            to: bounds[fold].1,
            in_sample: take(format!("fold-{fold}-in-sample"))?.summary,
            out_of_sample: chain[fold].summary.clone(),
            baseline: take(format!("fold-{fold}-baseline"))?.summary,
            lessons: lessons_by_window[fold - 1].len(),
        });
    }
    set.write(&out)?;
    let changes = write_changes(&work.join("changes.jsonl"), &lessons_by_window)?;
    let report = work.join("report.html");
    let html = render(&folds_out, &chain, &bounds, &lessons_by_window);
    std::fs::write(&report, html).with_context(|| format!("cannot write {}", report.display()))?;
    print_result(&args, &out, &folds_out, changes, &report, started.elapsed(), workers)?;
    Ok(ExitCode::SUCCESS)
}

/// The lessons as `template_changed` records, one JSON object a line, in the order learned.
fn write_changes(path: &Path, lessons: &[Vec<Lesson>]) -> anyhow::Result<usize> {
    let mut text = String::new();
    let mut count = 0;
    for (window, list) in lessons.iter().enumerate() {
        for l in list {
            count += 1;
            let scope = serde_json::to_value(&l.scope)?;
            let line = json!({
                "learned_from_window": window,
                "applies_from_window": window + 1,
                "file": scope_file(&l.scope),
                "kind": "template_changed",
                "data": {"scope": scope, "key": l.key, "old": l.old, "new": l.new, "reason": l.reason},
                "evidence": l.source.as_ref().map(|(run, seq)| json!({"run_dir": run, "seq": seq})),
            });
            writeln!(text, "{line}")?;
        }
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(count)
}

fn fold_json(f: &Fold) -> serde_json::Value {
    let side = |s: &RunSummary| json!({"return": s.total_return(), "max_drawdown": s.max_drawdown, "positions": s.positions, "fees": s.fees.to_string()});
    json!({
        "fold": f.window,
        "from": crypy_core::time::format_utc(f.from),
        "to": crypy_core::time::format_utc(f.to),
        "in_sample": side(&f.in_sample),
        "out_of_sample": side(&f.out_of_sample),
        "baseline": side(&f.baseline),
        "lessons": f.lessons,
    })
}

fn print_result(
    args: &LearnArgs,
    out: &Path,
    folds: &[Fold],
    changes: usize,
    report: &Path,
    elapsed: std::time::Duration,
    workers: usize,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut o = out::stdout();
    if args.json {
        let value = json!({
            "templates": out.display().to_string(),
            "report": report.display().to_string(),
            "changes": changes,
            "seconds": elapsed.as_secs_f64(),
            "workers": workers,
            "folds": folds.iter().map(fold_json).collect::<Vec<_>>(),
        });
        writeln!(o, "{value}")?;
    } else {
        writeln!(o, "FOLD  TEST WINDOW                              IN-SAMPLE  OUT-OF-SAMPLE  BASELINE  LESSONS")?;
        for f in folds {
            writeln!(
                o,
                "{:<5} {} → {}  {:>+8.2}%  {:>+12.2}%  {:>+7.2}%  {:>7}",
                f.window,
                crypy_core::time::format_utc(f.from),
                crypy_core::time::format_utc(f.to),
                f.in_sample.total_return() * 100.0,
                f.out_of_sample.total_return() * 100.0,
                f.baseline.total_return() * 100.0,
                f.lessons
            )?;
        }
        writeln!(
            o,
            "\n{} template changes learned; templates in {}, lessons in {}, report {} ({:.1} s on {workers} worker(s))",
            changes,
            out.display(),
            report.with_file_name("changes.jsonl").display(),
            report.display(),
            elapsed.as_secs_f64()
        )?;
    }
    out::flush(&mut o)?;
    Ok(())
}

/// The learning report: the folds' results side by side, the out-of-sample equity against the
/// baseline's, and every lesson on a timeline.
fn render(folds: &[Fold], chain: &[RunResult], bounds: &[(i64, i64)], lessons: &[Vec<Lesson>]) -> String {
    use super::report::{escape, line_chart, page_head};
    let fmt = crypy_core::time::format_utc;
    let mut html = page_head("crypy learn: walk-forward report");
    let _ = write!(
        html,
        "<p>{} windows of equal market time; each fold's templates were learned from the windows before it only. \
         In sample: the learned templates on the window they were learned from. Out of sample: the same templates \
         on the next window, never seen when learning. Baseline: the given templates on that window.</p>",
        bounds.len()
    );
    html.push_str(
        "<h2>Folds</h2><table><tr><th>fold</th><th>test window (UTC)</th><th>in-sample return</th>\
         <th>out-of-sample return</th><th>baseline return</th><th>out-of-sample drawdown</th>\
         <th>out-of-sample positions</th><th>lessons</th></tr>",
    );
    for f in folds {
        let _ = write!(
            html,
            r#"<tr class="fold"><td>{}</td><td>{} → {}</td><td>{:+.2}%</td><td>{:+.2}%</td><td>{:+.2}%</td><td>{:.2}%</td><td>{}</td><td>{}</td></tr>"#,
            f.window,
            fmt(f.from),
            fmt(f.to),
            f.in_sample.total_return() * 100.0,
            f.out_of_sample.total_return() * 100.0,
            f.baseline.total_return() * 100.0,
            f.out_of_sample.max_drawdown * 100.0,
            f.out_of_sample.positions,
            f.lessons
        );
    }
    html.push_str("</table>");
    html.push_str(&fold_bars(folds));
    // Out-of-sample windows one after another, compounded: what trading the learned
    // templates would have made, next to the given templates on the same windows.
    let stitch = |runs: Vec<&RunSummary>| {
        let mut level = 100.0;
        let mut series = Vec::new();
        for s in runs {
            let Some(&(_, first)) = s.series.equity.first() else { continue };
            let start = level;
            for (t, e) in &s.series.equity {
                level = if first > 0.0 { start * e / first } else { start };
                series.push((*t, level));
            }
        }
        series
    };
    let learned = stitch(chain.iter().skip(1).map(|r| &r.summary).collect());
    let baseline = stitch(folds.iter().map(|f| &f.baseline).collect());
    html.push_str("<h2>Out-of-sample equity (start = 100)</h2>");
    html.push_str(&line_chart("learned templates, window after window", "equity", &learned, &[], ""));
    html.push_str(&line_chart("given templates on the same windows", "baseline", &baseline, &[], ""));
    html.push_str("<h2>Lessons</h2><table><tr><th>learned from window</th><th>file</th><th>key</th><th>old</th><th>new</th><th>why</th></tr>");
    for (window, list) in lessons.iter().enumerate() {
        for l in list {
            let _ = write!(
                html,
                r#"<tr class="lesson"><td>{window} ({} → {})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="why">{}</td></tr>"#,
                fmt(bounds[window].0),
                fmt(bounds[window].1),
                escape(&scope_file(&l.scope)),
                escape(&l.key),
                escape(l.old.as_deref().unwrap_or("(none)")),
                escape(&l.new),
                escape(&l.reason)
            );
        }
    }
    html.push_str("</table></body></html>\n");
    html
}

/// Each fold's in-sample, out-of-sample and baseline returns as bars around a zero line.
fn fold_bars(folds: &[Fold]) -> String {
    let (width, height, pad) = (960.0_f64, 240.0_f64, 40.0_f64);
    let values: Vec<[f64; 3]> = folds
        .iter()
        .map(|f| {
            [f.in_sample.total_return(), f.out_of_sample.total_return(), f.baseline.total_return()].map(|r| r * 100.0)
        })
        .collect();
    let top = values.iter().flatten().fold(1.0_f64, |m, v| m.max(v.abs()));
    let zero = height / 2.0;
    let scale = (height / 2.0 - pad) / top;
    let slot = (width - 2.0 * pad) / folds.len().max(1) as f64;
    let bar = slot / 4.0;
    let mut svg = format!(
        r#"<h3>returns per fold: <svg width="12" height="12"><rect class="bar-in" width="12" height="12"/></svg> in sample, <svg width="12" height="12"><rect class="bar-out" width="12" height="12"/></svg> out of sample, <svg width="12" height="12"><rect class="bar-base" width="12" height="12"/></svg> baseline</h3><svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">"#
    );
    let _ = write!(svg, r#"<line class="axisline" x1="{pad}" y1="{zero}" x2="{}" y2="{zero}"/>"#, width - pad);
    for (i, (f, v)) in folds.iter().zip(&values).enumerate() {
        let x0 = pad + i as f64 * slot + bar / 2.0;
        for (k, (class, label)) in
            [("bar-in", "in sample"), ("bar-out", "out of sample"), ("bar-base", "baseline")].iter().enumerate()
        {
            let h = (v[k] * scale).abs().max(0.5);
            let y = if v[k] >= 0.0 { zero - h } else { zero };
            let _ = write!(
                svg,
                r#"<rect class="{class}" x="{:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}"><title>fold {} {label}: {:+.2}%</title></rect>"#,
                x0 + k as f64 * bar,
                f.window,
                v[k]
            );
        }
        let _ = write!(
            svg,
            r#"<text class="axis" x="{:.1}" y="{}" text-anchor="middle">fold {}</text>"#,
            x0 + 1.5 * bar,
            height - 8.0,
            f.window
        );
    }
    svg.push_str("</svg>");
    svg
}
