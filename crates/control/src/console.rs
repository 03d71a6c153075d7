//! The desk's side of the terminals: answers the sessions' commands between two inputs of
//! the run, from what the agents and the venue say, and carries out the ones that steer.
//!
//! Every command that reaches the desk and is accepted is recorded as a `command_issued`
//! event (queries too, for the audit) before it takes effect or is answered; a command the
//! desk refuses (an unknown proposal, an order in flight, a bad setting) is not recorded,
//! and the answer says why.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crypy_agents::steer::Steer;
use crypy_core::event::TemplateScope;
use crypy_core::time::format_utc;
use crypy_core::{AgentId, Asset, Envelope, EventKind, Money, Pair};
use crypy_dataflow::sim::{Desk, Flow, Steering};
use rust_decimal::prelude::ToPrimitive;

use crate::describe;
use crate::lang::{self, Command, Level, Setting, Watch};
use crate::link::{prompt, up, DeskInbox, Outbox, Reply, Request};

/// Commands run once, without a terminal (`--exec`), when the run has done `after` candles.
pub struct Script {
    pub lines: Vec<String>,
    pub after: u64,
    /// Gets the echo of each line and its answer.
    pub write: Box<dyn FnMut(&str)>,
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Script").field("lines", &self.lines).field("after", &self.after).finish_non_exhaustive()
    }
}

struct Watcher {
    outbox: Outbox,
    pairs: Vec<Pair>,
    kinds: Vec<EventKind>,
}

/// See the module doc.
pub struct Console {
    desk_name: String,
    inbox: DeskInbox,
    script: Option<Script>,
    watchers: Vec<Watcher>,
    /// Keep the desk up after its data (a terminal is open, or `--stay`).
    hold: bool,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("desk", &self.desk_name)
            .field("watchers", &self.watchers.len())
            .field("hold", &self.hold)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// A console answering what arrives on `inbox`; `hold` keeps the desk up after its data
    /// until [`stopper`](Self::stopper) is set.
    pub fn new(desk_name: impl Into<String>, inbox: DeskInbox, hold: bool) -> Self {
        Console {
            desk_name: desk_name.into(),
            inbox,
            script: None,
            watchers: Vec::new(),
            hold,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Runs `script` once, then ends the run.
    pub fn with_script(mut self, script: Script) -> Self {
        self.script = Some(script);
        self
    }

    /// Set it to end the run at the next chance (the local REPL's `quit`, a signal).
    pub fn stopper(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    fn run_script(&mut self, desk: &mut Desk<'_, '_, '_>) {
        let Some(mut script) = self.script.take() else { return };
        let mut level = Level::Desk;
        let (outbox, _ignored) = Outbox::new(1);
        for line in &script.lines {
            (script.write)(&format!("{}{line}", prompt(&self.desk_name, &level)));
            let answer = match lang::parse(&level, line) {
                Err(e) => format!("error: {e}"),
                Ok(None) => String::new(),
                Ok(Some(Command::Help(topic))) => lang::help(&level, topic.as_deref()),
                Ok(Some(Command::Quit)) => break,
                Ok(Some(Command::Back)) => match up(&level) {
                    Some(l) => {
                        level = l;
                        String::new()
                    }
                    None => "error: already at the desk".into(),
                },
                Ok(Some(command)) => {
                    let reply = self.answer(desk, "exec", &level, command, &outbox);
                    level = reply.level;
                    reply.text
                }
            };
            if !answer.is_empty() {
                (script.write)(&answer);
            }
        }
    }

    /// The answer to one command at `level`, carrying it out if it is accepted.
    fn answer(
        &mut self,
        desk: &mut Desk<'_, '_, '_>,
        session: &str,
        level: &Level,
        command: Command,
        outbox: &Outbox,
    ) -> Reply {
        let text = self.carry_out(desk, session, level, &command, outbox);
        match text {
            Ok((text, level)) => Reply { text, level },
            Err(e) => Reply { text: format!("error: {e}"), level: *level },
        }
    }

    fn carry_out(
        &mut self,
        desk: &mut Desk<'_, '_, '_>,
        session: &str,
        level: &Level,
        command: &Command,
        outbox: &Outbox,
    ) -> Result<(String, Level), String> {
        let line = command.to_string();
        let agent = agent_of(desk, level);
        let stay = |text: String| Ok((text, *level));
        match (level, command) {
            (_, Command::Help(_) | Command::Quit | Command::Back) => stay("(handled by the terminal)".into()),
            // Steering: checked by the agents, recorded, then it takes effect.
            (Level::Invest(asset), Command::Accept(n)) => {
                steer_agent(desk, session, AgentId::Holder(*asset), Steer::Accept(*n)).map(|t| (t, *level))
            }
            (Level::Invest(asset), Command::Refuse { proposal, reason }) => {
                let steer = Steer::Refuse { proposal: *proposal, reason: reason.clone().unwrap_or_default() };
                steer_agent(desk, session, AgentId::Holder(*asset), steer).map(|t| (t, *level))
            }
            (Level::Trade(pair), Command::Enter | Command::Exit | Command::Adjust { .. }) => {
                let trader = desk.society().trader(*pair).map(|t| t.id).ok_or_else(|| no_trader(*pair))?;
                let steer = match command {
                    Command::Enter => Steer::Enter,
                    Command::Exit => Steer::Exit,
                    Command::Adjust { which, price } => Steer::Adjust { bound: *which, price: *price },
                    _ => unreachable!("matched above"),
                };
                steer_agent(desk, session, trader, steer).map(|t| (t, *level))
            }
            (Level::Desk, Command::Kill) => {
                if desk.society().kill_switch() {
                    return Err("the kill switch is already engaged; `resume` releases it".into());
                }
                let (canceled, _) = desk.kill(&line, session)?;
                stay(format!(
                    "kill switch engaged: {canceled} open order{} canceled; every new order is refused until `resume`",
                    plural(canceled as usize)
                ))
            }
            (Level::Desk, Command::Resume) => {
                if !desk.society().kill_switch() {
                    return Err("the kill switch is not engaged".into());
                }
                desk.resume(&line, session)?;
                stay("kill switch released: orders are judged by the limits again".into())
            }
            (Level::Desk, Command::Limits(Some(s))) => {
                let key = if s.key.starts_with("limits.") { s.key.clone() } else { format!("limits.{}", s.key) };
                set_template(desk, session, &line, agent, TemplateScope::Desk, &Setting { key, value: s.value.clone() })
                    .map(|t| (t, *level))
            }
            (Level::Invest(asset), Command::Criteria(Some(s))) => {
                let key = if s.key.starts_with("criteria.") { s.key.clone() } else { format!("criteria.{}", s.key) };
                let setting = Setting { key, value: s.value.clone() };
                set_template(desk, session, &line, agent, TemplateScope::Holder(*asset), &setting).map(|t| (t, *level))
            }
            (_, Command::TemplateSet(s)) => {
                set_template(desk, session, &line, agent, scope_of(level), s).map(|t| (t, *level))
            }
            // Moving between levels.
            (Level::Desk, Command::Invest(asset)) => {
                let known = desk.society().holder_assets().any(|a| a == asset);
                if !known {
                    let assets: Vec<String> = desk.society().holder_assets().map(|a| a.to_string()).collect();
                    return Err(format!("the desk has no holder of {asset} (holders: {})", list(&assets)));
                }
                desk.command(agent, &line, session)?;
                let next = Level::Invest(*asset);
                Ok((holder_status(desk, *asset), next))
            }
            (Level::Invest(asset), Command::Trade(pair)) => {
                let offered = desk.society().markets().any(|m| m.pair == *pair);
                if !offered || pair.quote != *asset {
                    let pairs: Vec<String> = desk
                        .society()
                        .markets()
                        .filter(|m| m.pair.quote == *asset)
                        .map(|m| m.pair.to_string())
                        .collect();
                    return Err(format!("{asset}'s traders trade {}; not {pair}", list(&pairs)));
                }
                desk.command(agent, &line, session)?;
                let next = Level::Trade(*pair);
                Ok((trader_status(desk, *pair), next))
            }
            // Watching: which session wants what.
            (Level::Desk, Command::Watch(w)) => {
                desk.command(agent, &line, session)?;
                self.watchers.retain(|x| !x.outbox.same_session(outbox) && !x.outbox.is_closed());
                match w {
                    Watch::Off => stay("stopped watching".into()),
                    Watch::On { pairs, kinds } => {
                        self.watchers.push(Watcher {
                            outbox: outbox.clone(),
                            pairs: pairs.clone(),
                            kinds: kinds.clone(),
                        });
                        let what =
                            |v: Vec<String>, all: &str| if v.is_empty() { all.to_string() } else { v.join(", ") };
                        stay(format!(
                            "watching {} ({}); `watch off` stops",
                            what(pairs.iter().map(|p| p.to_string()).collect(), "every pair"),
                            what(kinds.iter().map(|k| k.to_string()).collect(), "every kind"),
                        ))
                    }
                }
            }
            (Level::Trade(pair), Command::Chart) => {
                // Recorded first: the command's append makes the whole run readable.
                desk.command(agent, &line, session)?;
                stay(crate::chart::chart(&desk.run_summary()?, *pair))
            }
            (Level::Trade(pair), Command::Scoreboard) => {
                desk.command(agent, &line, session)?;
                let summary = desk.run_summary()?;
                let rows: Vec<Vec<String>> = summary
                    .scoreboard
                    .iter()
                    .filter(|((p, _), _)| p == pair)
                    .map(|((_, variant), v)| {
                        vec![
                            variant.clone(),
                            v.proposed.to_string(),
                            v.accepted.to_string(),
                            v.positions.to_string(),
                            v.wins.to_string(),
                            v.losses.to_string(),
                            format!("{:.2}", v.pnl),
                            format!("{:.2}", v.drawdown),
                        ]
                    })
                    .collect();
                let society = desk.society();
                let template = society.trader_template(*pair);
                let list = |l: &[String]| if l.is_empty() { "(any)".to_string() } else { l.join(", ") };
                let mut text = if rows.is_empty() {
                    format!("no variant of {pair} proposed yet this run")
                } else {
                    table(
                        &[
                            "variant",
                            "proposed",
                            "accepted",
                            "positions",
                            "won",
                            "lost",
                            &format!("P&L {}", pair.quote),
                            "drawdown",
                        ],
                        "<>>>>>>>",
                        &rows,
                    )
                };
                text.push_str(&format!(
                    "\nfocus: {}\ndrop: {}",
                    list(&template.focus),
                    if template.drop.is_empty() { "(none)".into() } else { template.drop.join(", ") }
                ));
                stay(text)
            }
            // Queries: recorded for the audit, then answered.
            (level, query) => {
                let text = query_text(desk, level, query)?;
                desk.command(agent, &line, session)?;
                stay(text)
            }
        }
    }
}

impl Steering for Console {
    fn observe(&mut self, e: &Envelope) {
        if self.watchers.is_empty() {
            return;
        }
        let mut text: Option<String> = None;
        let mut gone = false;
        for w in &self.watchers {
            let pair_ok = w.pairs.is_empty() || e.event.pair().is_some_and(|p| w.pairs.contains(p));
            if pair_ok && (w.kinds.is_empty() || w.kinds.contains(&e.kind())) {
                let line = text.get_or_insert_with(|| describe::line(e));
                gone |= !w.outbox.send(line.clone());
            }
        }
        if gone {
            self.watchers.retain(|w| !w.outbox.is_closed());
        }
    }

    fn steer(&mut self, desk: &mut Desk<'_, '_, '_>) -> Flow {
        if self.script.as_ref().is_some_and(|s| desk.ended() || desk.progress().0 >= s.after) {
            self.run_script(desk);
            return Flow::Stop;
        }
        while let Ok(request) = self.inbox.try_recv() {
            let Request { session, level, command, reply, outbox } = request;
            let answer = self.answer(desk, &session, &level, command, &outbox);
            // A session that went away meanwhile does not need its answer.
            let _ = reply.send(answer);
        }
        let done = desk.ended() && !self.hold && self.script.is_none();
        if done || self.stop.load(Ordering::Relaxed) {
            Flow::Stop
        } else {
            Flow::Go
        }
    }
}

/// Checks a steering command with the agents, records it, and says what it led to.
fn steer_agent(desk: &mut Desk<'_, '_, '_>, session: &str, agent: AgentId, steer: Steer) -> Result<String, String> {
    desk.society().check(&agent, &steer)?;
    // The logged text is the canonical one the agents parse.
    let recorded = desk.command(agent, &steer.to_string(), session)?;
    let effects: Vec<String> = recorded.iter().skip(1).map(describe::line).collect();
    Ok(if effects.is_empty() { format!("done: {steer}") } else { format!("done: {steer}\n{}", effects.join("\n")) })
}

/// Checks a template setting, records it with its command, and says what changed.
fn set_template(
    desk: &mut Desk<'_, '_, '_>,
    session: &str,
    line: &str,
    agent: AgentId,
    scope: TemplateScope,
    setting: &Setting,
) -> Result<String, String> {
    let change = desk.society().check_setting(&scope, &setting.key, &setting.value)?;
    let text = format!(
        "{} {}: {} → {}",
        scope_name(&scope),
        change.key,
        change.old.as_deref().unwrap_or("-"),
        change.new.as_deref().unwrap_or("-")
    );
    desk.set_template(agent, scope, change, line, session)?;
    Ok(text)
}

/// The agent a level's commands are logged under.
fn agent_of(desk: &Desk<'_, '_, '_>, level: &Level) -> AgentId {
    match level {
        Level::Desk => desk.id(),
        Level::Invest(asset) => AgentId::Holder(*asset),
        Level::Trade(pair) => {
            desk.society().trader(*pair).map(|t| t.id).unwrap_or(AgentId::Trader { pair: *pair, generation: 0 })
        }
    }
}

fn scope_of(level: &Level) -> TemplateScope {
    match level {
        Level::Desk => TemplateScope::Desk,
        Level::Invest(a) => TemplateScope::Holder(*a),
        Level::Trade(p) => TemplateScope::Trader(*p),
    }
}

fn scope_name(scope: &TemplateScope) -> String {
    match scope {
        TemplateScope::Desk => "desk template".into(),
        TemplateScope::Holder(a) => format!("holder {a} template"),
        TemplateScope::Trader(p) => format!("trader {p} template"),
    }
}

fn no_trader(pair: Pair) -> String {
    format!("{pair} has no live trader right now (its next generation comes with the next bar)")
}

// --- answers to queries ---------------------------------------------------------------------

fn query_text(desk: &Desk<'_, '_, '_>, level: &Level, query: &Command) -> Result<String, String> {
    Ok(match (level, query) {
        (Level::Desk, Command::Status) => desk_status(desk),
        (Level::Desk, Command::Balances) => balances(desk),
        (Level::Desk, Command::Orders) => orders(desk),
        (Level::Desk, Command::Holders) => holders(desk),
        (Level::Desk, Command::Limits(None)) => limits(desk),
        (Level::Invest(a), Command::Status) => holder_status(desk, *a),
        (Level::Invest(a), Command::Traders) => traders(desk, *a),
        (Level::Invest(a), Command::Proposals) => proposals(desk, *a),
        (Level::Invest(a), Command::Criteria(None)) => criteria(desk, *a),
        (Level::Trade(p), Command::Status) => trader_status(desk, *p),
        (Level::Trade(p), Command::Strategies) => strategies(desk, *p),
        (Level::Trade(p), Command::Position) => position(desk, *p),
        (level, Command::TemplateShow) => desk.society().template_text(&scope_of(level)).trim_end().to_string(),
        (level, other) => return Err(format!("`{}` is not answered at {level}", other)),
    })
}

/// Aligned columns; `align` has one `<` or `>` per column.
fn table(headers: &[&str], align: &str, rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let aligns: Vec<char> = align.chars().collect();
    let render = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (i, cell) in cells.enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            if i > 0 {
                line.push_str("  ");
            }
            if aligns.get(i) == Some(&'>') {
                let _ = write!(line, "{cell:>width$}");
            } else {
                let _ = write!(line, "{cell:<width$}");
            }
        }
        line.trim_end().to_string()
    };
    let mut out = vec![render(&mut headers.iter().copied())];
    for row in rows {
        out.push(render(&mut row.iter().map(String::as_str)));
    }
    out.join("\n")
}

fn kv(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs.iter().map(|(k, v)| format!("{k:<width$}  {v}")).collect::<Vec<_>>().join("\n")
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn money(m: Money) -> String {
    m.value().round_dp(2).to_string()
}

fn pct(x: f64) -> String {
    format!("{:+.2}%", x * 100.0)
}

fn desk_status(desk: &Desk<'_, '_, '_>) -> String {
    let f = desk.figures();
    let (done, total) = desk.progress();
    let society = desk.society();
    let a = f.trusted;
    let equity = match f.start_equity {
        Some(start) if !start.is_zero() => {
            let r = (f.equity.value() / start.value()).to_f64().unwrap_or(1.0) - 1.0;
            format!("{} {a} → {} {a} ({})", money(start), money(f.equity), pct(r))
        }
        _ => format!("{} {a}", money(f.equity)),
    };
    let rows = [
        ("desk", format!("{} (run {})", desk.id(), desk.run())),
        ("market time", format_utc(desk.market_time())),
        (
            "data",
            if total == 0 {
                // A live venue: no end is known.
                format!("{done} candles so far (live)")
            } else {
                format!(
                    "{done} of {total} candles{}",
                    if desk.ended() { " (ended: the desk stays up for its terminals)" } else { "" }
                )
            },
        ),
        (
            "kill switch",
            if society.kill_switch() { "ENGAGED: every new order is refused".into() } else { "off".into() },
        ),
        ("equity", equity),
        ("max drawdown", format!("{:.2}%", f.max_drawdown * 100.0)),
        (
            "trading",
            format!(
                "{} orders, {} fills, {} positions closed, fees {} {a}",
                f.orders,
                f.fills,
                f.positions,
                money(f.fees)
            ),
        ),
        ("open orders", society.open_orders().to_string()),
        ("holders", list(&society.holders().iter().map(|h| h.asset.to_string()).collect::<Vec<_>>())),
        ("traders", list(&society.traders().iter().map(|t| format!("{} ({})", t.id, t.phase)).collect::<Vec<_>>())),
    ];
    kv(&rows)
}

fn balances(desk: &Desk<'_, '_, '_>) -> String {
    let rows: Vec<Vec<String>> = desk
        .balances()
        .iter()
        .map(|b| {
            vec![
                b.asset.to_string(),
                b.free.normalize().to_string(),
                b.reserved.normalize().to_string(),
                b.total().normalize().to_string(),
            ]
        })
        .collect();
    table(&["ASSET", "FREE", "RESERVED", "TOTAL"], "<>>>", &rows)
}

fn orders(desk: &Desk<'_, '_, '_>) -> String {
    let open = desk.open_orders();
    if open.is_empty() {
        return "no open orders".into();
    }
    let rows: Vec<Vec<String>> = open
        .iter()
        .map(|o| {
            vec![
                o.client_id.to_string(),
                o.pair.to_string(),
                o.side.to_string(),
                o.qty.to_string(),
                format!("{:?}", o.kind).to_lowercase(),
                o.allocation.map_or("-".into(), |a| a.to_string()),
            ]
        })
        .collect();
    table(&["CLIENT ID", "PAIR", "SIDE", "QTY", "KIND", "ALLOCATION"], "<<<><>", &rows)
}

fn holders(desk: &Desk<'_, '_, '_>) -> String {
    let society = desk.society();
    let hs = society.holders();
    if hs.is_empty() {
        return "no live holders (a holder retires when its capital is committed; the next generation comes when it returns)"
            .into();
    }
    let rows: Vec<Vec<String>> = hs
        .iter()
        .map(|h| {
            vec![
                h.asset.to_string(),
                h.generation.to_string(),
                h.free.value().round_dp(8).normalize().to_string(),
                h.traders.len().to_string(),
                h.outstanding.map_or("-".into(), |a| a.to_string()),
            ]
        })
        .collect();
    table(&["HOLDER", "GENERATION", "FREE", "TRADERS", "ALLOCATION"], "<>>><", &rows)
}

fn limits(desk: &Desk<'_, '_, '_>) -> String {
    let society = desk.society();
    let l = &society.desk_template().limits;
    let pairs: Vec<String> = l.allowed_pairs.iter().map(|p| p.to_string()).collect();
    kv(&[
        ("allowed_pairs", if pairs.is_empty() { "every market".into() } else { pairs.join(", ") }),
        ("max_order_notional", l.max_order_notional.normalize().to_string()),
        ("max_open_orders", l.max_open_orders.to_string()),
        ("kill_switch", if society.kill_switch() { "engaged".into() } else { "off".into() }),
    ])
}

fn holder_status(desk: &Desk<'_, '_, '_>, asset: Asset) -> String {
    let society = desk.society();
    let traders: Vec<_> = society.traders().into_iter().filter(|t| t.holder == asset).collect();
    let unused: Money = traders
        .iter()
        .filter(|t| matches!(t.phase, "allocated" | "entering"))
        .filter_map(|t| t.allocation.as_ref().map(|a| a.amount))
        .sum();
    let committed: Money = traders.iter().filter_map(|t| t.allocation.as_ref().map(|a| a.amount)).sum();
    let free = society.free(asset) - unused;
    let holder = society.holders().into_iter().find(|h| h.asset == asset);
    let who = match &holder {
        Some(h) => format!("holder {asset}, generation {}", h.generation),
        None => {
            format!("no live holder of {asset} (its capital is committed; the next generation comes when it returns)")
        }
    };
    kv(&[
        ("holder", who),
        ("capital", format!("{} {asset}", money(free + committed))),
        ("committed", format!("{} {asset} (allocations in use or granted)", money(committed))),
        ("free", format!("{} {asset}", money(free))),
        ("traders", list(&traders.iter().map(|t| format!("{} ({})", t.id, t.phase)).collect::<Vec<_>>())),
    ])
}

fn traders(desk: &Desk<'_, '_, '_>, asset: Asset) -> String {
    let society = desk.society();
    let rows: Vec<Vec<String>> = society
        .traders()
        .into_iter()
        .filter(|t| t.holder == asset)
        .map(|t| {
            vec![
                t.id.to_string(),
                t.phase.to_string(),
                t.strategy.unwrap_or_else(|| "-".into()),
                t.proposal.map_or("-".into(), |p| format!("#{p}")),
                t.allocation.map_or("-".into(), |a| format!("{} {}", a.amount, a.asset)),
            ]
        })
        .collect();
    if rows.is_empty() {
        return format!("{asset} has no live traders");
    }
    table(&["TRADER", "PHASE", "STRATEGY", "PROPOSAL", "ALLOCATION"], "<<<<>", &rows)
}

fn proposals(desk: &Desk<'_, '_, '_>, asset: Asset) -> String {
    let society = desk.society();
    let mine: Vec<_> = society.proposals().filter(|p| p.pair.quote == asset).collect();
    if mine.is_empty() {
        return format!("no proposals to {asset} yet");
    }
    let shown = &mine[mine.len().saturating_sub(20)..];
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|p| {
            let status = match &p.status {
                crypy_agents::society::ProposalStatus::Waiting => "waiting".to_string(),
                crypy_agents::society::ProposalStatus::Refused(why) => format!("refused: {why}"),
                crypy_agents::society::ProposalStatus::Accepted { allocation: Some(a) } => {
                    format!("accepted: allocation {a}")
                }
                crypy_agents::society::ProposalStatus::Accepted { allocation: None } => "accepted".into(),
            };
            vec![
                format!("#{}", p.proposal),
                p.trader.to_string(),
                p.strategy.clone(),
                pct(p.metrics.total_return),
                format!("{:.2}", p.metrics.sharpe),
                format!("{:.2}%", p.metrics.max_drawdown * 100.0),
                p.metrics.trades.to_string(),
                status,
            ]
        })
        .collect();
    let header = format!("the last {} of {} proposals to {asset}\n", shown.len(), mine.len());
    header + &table(&["#", "TRADER", "STRATEGY", "RETURN", "SHARPE", "DRAWDOWN", "TRADES", "STATUS"], "><<>>>><", &rows)
}

fn criteria(desk: &Desk<'_, '_, '_>, asset: Asset) -> String {
    let society = desk.society();
    let c = &society.holder_template(asset).criteria;
    kv(&[
        ("min_return", c.min_return.to_string()),
        ("min_sharpe", c.min_sharpe.to_string()),
        ("max_drawdown", c.max_drawdown.to_string()),
        ("min_trades", c.min_trades.to_string()),
        ("max_fraction", c.max_fraction.to_string()),
        ("allocation_ttl_minutes", c.allocation_ttl_minutes.to_string()),
    ])
}

fn trader_status(desk: &Desk<'_, '_, '_>, pair: Pair) -> String {
    let society = desk.society();
    let last = society.last_close(pair).map_or("-".into(), |p| p.to_string());
    let Some(t) = society.trader(pair) else {
        return kv(&[("trader", no_trader(pair)), ("last price", last)]);
    };
    let mut rows = vec![
        ("trader", format!("{} of holder {}", t.id, t.holder)),
        ("phase", t.phase.to_string()),
        ("strategy", t.strategy.clone().unwrap_or_else(|| "- (evaluating)".into())),
        ("last price", last),
    ];
    if let Some(a) = &t.allocation {
        rows.push((
            "allocation",
            format!("{} {} {} (proposal #{}), until {}", a.id, a.amount, a.asset, a.proposal, format_utc(a.expires_at)),
        ));
    }
    if let Some(p) = &t.position {
        rows.push(("position", format!("{} {} entered at {:.2}", p.qty, pair.base, p.entry)));
    }
    if let Some((bars, ranked)) = society.strategies(pair) {
        if let Some((best, score)) = ranked.first() {
            rows.push(("best now", format!("{best}: return {} over {bars} bars", pct(score.total_return))));
        }
    }
    kv(&rows)
}

fn strategies(desk: &Desk<'_, '_, '_>, pair: Pair) -> String {
    let society = desk.society();
    let Some((bars, ranked)) = society.strategies(pair) else {
        return format!("{pair} has not been evaluated yet (the first evaluation comes once its window is half full)");
    };
    let tt = society.trader_template(pair);
    let passing = ranked
        .iter()
        .filter(|(_, s)| s.total_return >= tt.propose_min_return && s.trades >= tt.propose_min_trades)
        .count();
    let shown = ranked.len().min(15);
    let rows: Vec<Vec<String>> = ranked
        .iter()
        .take(shown)
        .enumerate()
        .map(|(i, (name, s))| {
            vec![
                (i + 1).to_string(),
                name.clone(),
                pct(s.total_return),
                format!("{:.2}", s.sharpe),
                format!("{:.2}%", s.max_drawdown * 100.0),
                format!("{:.0}%", s.win_rate * 100.0),
                s.trades.to_string(),
            ]
        })
        .collect();
    format!(
        "latest evaluation over {bars} bars: {passing} of {} variants pass (the best {shown} by return)\n{}",
        ranked.len(),
        table(&["RANK", "STRATEGY", "RETURN", "SHARPE", "DRAWDOWN", "WIN", "TRADES"], "><>>>>>", &rows)
    )
}

fn position(desk: &Desk<'_, '_, '_>, pair: Pair) -> String {
    let society = desk.society();
    let Some(t) = society.trader(pair) else { return no_trader(pair) };
    let Some(p) = &t.position else { return format!("{} holds no position ({})", t.id, t.phase) };
    let last = society.last_close(pair);
    let unrealized = last.map_or("-".into(), |c| pct(c.to_f64() / p.entry - 1.0));
    kv(&[
        ("trader", t.id.to_string()),
        ("quantity", format!("{} {}", p.qty, pair.base)),
        ("entry", format!("{:.2} {} (fees included)", p.entry, pair.quote)),
        ("last", last.map_or("-".into(), |c| c.to_string())),
        ("unrealized", unrealized),
        ("stop", format!("{:.2}", p.stop)),
        ("target", format!("{:.2}", p.target)),
        ("exit prices", if p.adjusted { "set by a human".into() } else { "from the trader template".into() }),
    ])
}
