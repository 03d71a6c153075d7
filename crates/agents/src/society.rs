//! The agents of one desk — the desk, its holders and their traders — as one deterministic
//! state machine: [`Society::handle`] takes one input event and returns every event the
//! agents derive from it, in the order they decide them.
//!
//! An event an agent emits is at once routed to the agents it concerns (a trader's proposal
//! to its holder, the holder's allocation back to the trader and to the desk's gate, …), in
//! first-in first-out order, until nothing new is said. Each output names its parent: the
//! input, or an earlier output of the same call, so the log can record its exact cause.
//!
//! Lifecycles (the seed's semantics):
//! - **desk**: on balances, spawns a holder for every asset with a free balance that some
//!   market is quoted in (unless the desk template diverts it), one generation at a time;
//!   gates every order ([`crate::desk`]).
//! - **holder** `<ASSET>`: spawns a trader for every pair quoted in its asset (filtered by its
//!   template); accepts a proposal that meets its criteria with a signed allocation of
//!   `max_fraction` of its free capital, refusing others with the failed criterion; when one of
//!   its traders buys, its capital is committed: it retires and its other traders with it.
//! - **trader** `<PAIR>#<gen>`: on the pair's evaluation bars (every
//!   `evaluate_every_minutes` of market time, once the window is at least half full; scores from the pair's
//!   [`Tracker`](crate::track::Tracker)), reports the best variant (one `strategy_evaluated`:
//!   the best by return among those meeting its template, with how many did) and proposes it; with an allocation, enters when the variant says long
//!   (`entry_decided`, then a market buy sized by [`all_in_qty`]) or retires when the
//!   allocation expires first (`entry_skipped`); in a position, sells when the variant says
//!   flat or the close crosses the stop-loss or take-profit; retires when the position is
//!   closed. When a trader retires for any reason but its holder's retirement, its holder
//!   spawns the pair's next generation.
//! - When a closed position returns the capital and its holder has retired, the desk spawns
//!   the asset's next holder generation.
//!
//! Client order ids are `<run>-<input seq>-<n>`: unique across restarts, because runs are.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use crypy_core::event::{
    AgentRetired, AgentSpawned, Allocation, CommandIssued, EntryDecision, EntrySkipped, Metrics, ProposalAccepted,
    ProposalRefused, RetireReason, Signature, StrategyEvaluated, StrategyProposed, TemplateChanged, TemplateScope,
};
use crypy_core::{
    AgentId, Asset, Capabilities, Envelope, Event, Fill, Market, Money, OrderKind, OrderRequest, Pair, Price, Qty, Side,
};
use rust_decimal::prelude::FromPrimitive;
use rust_decimal::Decimal;

use crate::auth::HolderKey;
use crate::desk::DeskGate;
use crate::evaluate::{all_in_qty, Score};
use crate::steer::{Bound, Steer};
use crate::strategy::{Registry, Variant};
use crate::template::{set_field, set_learned, DeskTemplate, FieldChange, HolderTemplate, Templates, TraderTemplate};
use crate::track::{wants_bit, BarView, Watch, DEFAULT_TAKER_FEE};

/// Where an output came from: the input event, or an earlier output of the same call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parent {
    Input,
    Output(usize),
}

/// An event an agent emitted.
#[derive(Clone, Debug, PartialEq)]
pub struct Out {
    pub source: AgentId,
    pub event: Event,
    pub parent: Parent,
}

struct Holder {
    generation: u32,
    key: HolderKey,
    traders: Vec<AgentId>,
    /// The allocation outstanding, if any: one at a time.
    outstanding: Option<u64>,
}

#[derive(Debug, Clone)]
/// `variant` is an index into the grid ([`Society::variants`]).
enum Phase {
    Evaluating,
    Proposed {
        proposal: u64,
        variant: usize,
    },
    Allocated {
        allocation: Allocation,
        variant: usize,
    },
    Entering {
        allocation: Allocation,
        variant: usize,
        filled: Qty,
        cost: Money,
    },
    InPosition {
        allocation: Allocation,
        variant: usize,
        qty: Qty,
        entry: f64,
    },
    /// `proceeds`: what the sells brought so far, fees off (learning evidence, so f64).
    Exiting {
        allocation: Allocation,
        variant: usize,
        qty: Qty,
        entry: f64,
        sold: Qty,
        proceeds: f64,
    },
}

struct Trader {
    holder: Asset,
    pair: Pair,
    phase: Phase,
    /// The latest proposal it made.
    last_proposal: Option<u64>,
    /// Exit prices a human set, instead of the template's fractions of the entry.
    stop: Option<Price>,
    target: Option<Price>,
}

/// What became of a proposal.
#[derive(Clone, Debug, PartialEq)]
pub enum ProposalStatus {
    /// Made, not judged yet.
    Waiting,
    Refused(String),
    Accepted {
        allocation: Option<u64>,
    },
}

/// A proposal as the holder's terminal shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProposalRecord {
    pub proposal: u64,
    pub trader: AgentId,
    pub pair: Pair,
    pub strategy: String,
    pub metrics: Metrics,
    pub status: ProposalStatus,
    variant: usize,
}

/// Proposals the society remembers for the terminals, newest last.
const PROPOSALS_KEPT: usize = 1000;

/// A live holder, for the terminals.
#[derive(Clone, Debug, PartialEq)]
pub struct HolderState {
    pub asset: Asset,
    pub generation: u32,
    /// Its free capital.
    pub free: Money,
    pub traders: Vec<AgentId>,
    /// The allocation it granted and that is not used or given back yet.
    pub outstanding: Option<u64>,
}

/// A live trader, for the terminals.
#[derive(Clone, Debug, PartialEq)]
pub struct TraderState {
    pub id: AgentId,
    pub holder: Asset,
    pub pair: Pair,
    /// `evaluating`, `proposed`, `allocated`, `entering`, `in position`, `exiting`.
    pub phase: &'static str,
    /// The variant it proposed or trades.
    pub strategy: Option<String>,
    pub proposal: Option<u64>,
    pub allocation: Option<Allocation>,
    /// In a position: quantity, entry price (fees included), stop and target prices.
    pub position: Option<PositionState>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PositionState {
    pub qty: Qty,
    pub entry: f64,
    pub stop: f64,
    pub target: f64,
    /// Whether a human set the stop or the target.
    pub adjusted: bool,
}

/// What a pair's traders know of its last bar (a new generation starts informed).
#[derive(Default)]
struct History {
    last_close: Option<Price>,
    /// Every variant's signal after the last bar (see [`BarView::wants`]).
    wants: Vec<u64>,
}

/// A holder's learning evidence: strategy family → pair → (time, P&L) of the latest position
/// it closed there at a loss.
type Losses = BTreeMap<String, BTreeMap<Pair, (i64, f64)>>;

/// See the module documentation.
pub struct Society {
    desk: AgentId,
    templates: Templates,
    /// The grid, in the order trackers score it.
    variants: Vec<Variant>,
    /// Their names (`sma_cross:10:40`), as templates and events spell them.
    variant_names: Vec<String>,
    /// The trackers, unless the host runs them elsewhere ([`Society::take_watch`]).
    watch: Option<Watch>,
    /// The view of the bar being handled.
    view: Option<BarView>,
    /// The room of the last view and of the scores it displaced, for the trackers to reuse
    /// ([`Society::take_spare_view`]).
    spare_view: Option<BarView>,
    /// Derives holder keys; never logged, never shown.
    secret: Vec<u8>,
    gate: DeskGate,
    markets: BTreeMap<Pair, Market>,
    capabilities: Option<Capabilities>,
    free: BTreeMap<Asset, Money>,
    holders: BTreeMap<Asset, Holder>,
    holder_generations: BTreeMap<Asset, u32>,
    /// Allocation nonces per holder name, continued across generations: never reused.
    holder_nonces: BTreeMap<Asset, u64>,
    traders: BTreeMap<AgentId, Trader>,
    trader_generations: BTreeMap<Pair, u32>,
    history: BTreeMap<Pair, History>,
    /// Each pair's latest evaluation: window length and every variant's score.
    last_scores: BTreeMap<Pair, (u32, Vec<Score>)>,
    proposals: BTreeMap<u64, ProposalRecord>,
    /// Templates a human changed for one holder or one pair: the text and what it parses to.
    holder_templates: BTreeMap<Asset, (String, HolderTemplate)>,
    trader_templates: BTreeMap<Pair, (String, TraderTemplate)>,
    /// Which trader each order belongs to.
    orders: BTreeMap<crypy_core::ClientOrderId, AgentId>,
    /// Learning evidence per holder: strategy family → pair → (time, P&L) of its latest
    /// position closed at a loss.
    losses: BTreeMap<Asset, Losses>,
    /// Learning evidence per pair: every position it closed this lifetime.
    closed: BTreeMap<Pair, Vec<Closed>>,
    /// How many of each pair's closed positions its traders last learned from.
    learned_from: BTreeMap<Pair, usize>,
    /// The current input's time.
    time: i64,
    next_proposal: u64,
    next_allocation: u64,
    /// Current input: for client order ids.
    run: u32,
    seq: u64,
    orders_this_input: u32,
    /// The traders of a candle's pair, gathered anew at each candle into this one buffer.
    bar_traders: Vec<AgentId>,
    /// The events an input sets off, in this one buffer from input to input (it was an
    /// allocation at every input that set anything off).
    queue: Queue,
}

impl fmt::Debug for Society {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Society")
            .field("desk", &self.desk)
            .field("holders", &self.holders.keys().collect::<Vec<_>>())
            .field("traders", &self.traders.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

type Queue = VecDeque<(usize, AgentId, Event)>;

mod learning;
mod steering;

pub use learning::{learn_divert, learn_focus, Closed, Learned, Lifetime};

impl Society {
    /// # Errors
    /// When the trader template names strategies the registry cannot build.
    pub fn new(
        desk: AgentId,
        templates: Templates,
        registry: &Registry,
        secret: Vec<u8>,
    ) -> Result<Self, crate::template::TemplateError> {
        let strategies: std::sync::Arc<[_]> = templates.trader.build_strategies(registry, "trader template")?.into();
        let variants: Vec<Variant> = strategies.iter().flat_map(|s| s.variants().iter().cloned()).collect();
        let variant_names = variants.iter().map(Variant::to_string).collect();
        let watch =
            Watch::new(strategies, templates.trader.look_back_bars as usize, templates.trader.evaluate_every_minutes);
        Ok(Society {
            gate: DeskGate::new(templates.desk.limits.clone()),
            desk,
            templates,
            variants,
            variant_names,
            watch: Some(watch),
            view: None,
            spare_view: None,
            secret,
            markets: BTreeMap::new(),
            capabilities: None,
            free: BTreeMap::new(),
            holders: BTreeMap::new(),
            holder_generations: BTreeMap::new(),
            holder_nonces: BTreeMap::new(),
            traders: BTreeMap::new(),
            trader_generations: BTreeMap::new(),
            history: BTreeMap::new(),
            last_scores: BTreeMap::new(),
            proposals: BTreeMap::new(),
            holder_templates: BTreeMap::new(),
            trader_templates: BTreeMap::new(),
            orders: BTreeMap::new(),
            losses: BTreeMap::new(),
            closed: BTreeMap::new(),
            learned_from: BTreeMap::new(),
            time: 0,
            next_proposal: 1,
            next_allocation: 1,
            run: 0,
            seq: 0,
            orders_this_input: 0,
            bar_traders: Vec::new(),
            queue: Queue::new(),
        })
    }

    /// Hands the trackers to the caller, who must then pass each input's view to
    /// [`handle_viewed`](Self::handle_viewed): a host runs them partitioned by pair.
    pub fn take_watch(&mut self) -> Option<Watch> {
        self.watch.take()
    }

    /// The grid the traders score, in order.
    pub fn variants(&self) -> &[Variant] {
        &self.variants
    }

    pub fn live_traders(&self) -> impl Iterator<Item = &AgentId> {
        self.traders.keys()
    }

    pub fn live_holders(&self) -> impl Iterator<Item = &Asset> {
        self.holders.keys()
    }

    /// Everything the agents derive from `input`, in order. Events the agents themselves
    /// derived earlier are not inputs: feed only external events (market data, account
    /// reports, order outcomes, commands, template changes).
    pub fn handle(&mut self, input: &Envelope) -> Vec<Out> {
        let view = self.watch.as_mut().and_then(|w| w.see(&input.event));
        let out = self.handle_viewed(input, view);
        if let (Some(watch), Some(spare)) = (self.watch.as_mut(), self.spare_view.take()) {
            watch.recycle(spare);
        }
        out
    }

    /// The room of the last input's view, for the [`Watch`] that made it
    /// ([`Watch::recycle`]): a host running the trackers itself hands it back.
    pub fn take_spare_view(&mut self) -> Option<BarView> {
        self.spare_view.take()
    }

    /// [`handle`](Self::handle) with the input's view computed elsewhere: what the pair's
    /// [`Watch`] returned for this input (`None` for anything but a candle).
    pub fn handle_viewed(&mut self, input: &Envelope, view: Option<BarView>) -> Vec<Out> {
        self.view = view;
        self.run = input.run;
        self.seq = input.seq;
        self.time = input.time;
        self.orders_this_input = 0;
        let mut out: Vec<Out> = Vec::new();
        let mut queue = std::mem::take(&mut self.queue);
        self.route(input.time, &input.source, &input.event, usize::MAX, &mut queue);
        while let Some((parent, source, event)) = queue.pop_front() {
            let index = out.len();
            out.push(Out {
                source,
                event,
                parent: if parent == usize::MAX { Parent::Input } else { Parent::Output(parent) },
            });
            self.route(input.time, &source, &out[index].event, index, &mut queue);
        }
        self.queue = queue;
        if let Some(BarView { pair, wants, scores }) = self.view.take() {
            let displaced = scores.and_then(|scores| match self.last_scores.get_mut(&pair) {
                Some(last) => Some(std::mem::replace(last, scores)),
                None => self.last_scores.insert(pair, scores),
            });
            self.spare_view = Some(BarView { pair, wants, scores: displaced });
        }
        out
    }

    /// Lets every agent concerned react to one event.
    fn route(&mut self, time: i64, source: &AgentId, event: &Event, index: usize, queue: &mut Queue) {
        let desk = self.desk;
        if let Some(verdict) = self.gate.handle(time, source, event) {
            queue.push_back((index, desk, verdict));
        }
        match event {
            Event::Markets(m) => self.markets = m.markets.iter().map(|m| (m.pair, m.clone())).collect(),
            Event::Capabilities(c) => self.capabilities = Some(c.clone()),
            Event::Balances(b) => {
                self.free = b.balances.iter().map(|b| (b.asset, b.free)).collect();
                self.spawn_holders(index, queue);
            }
            Event::AgentSpawned(s) => match s.agent {
                AgentId::Holder(asset) if s.parent == Some(desk) => self.holder_started(asset, time, index, queue),
                _ => {}
            },
            Event::AgentRetired(r) => self.retired(r, index, queue),
            Event::Candle(c) => {
                let h = self.history.entry(c.pair).or_default();
                h.last_close = Some(c.close);
                if let Some(view) = self.view.as_ref().filter(|v| v.pair == c.pair) {
                    h.wants.clone_from(&view.wants);
                }
                let mut ids = std::mem::take(&mut self.bar_traders);
                ids.clear();
                ids.extend(self.traders.iter().filter(|(_, t)| t.pair == c.pair).map(|(id, _)| *id));
                for id in &ids {
                    self.trader_bar(*id, time, index, queue);
                }
                self.bar_traders = ids;
            }
            Event::StrategyProposed(p) => {
                if let Some(t) = self.traders.get(source) {
                    if let Phase::Proposed { variant, .. } = t.phase {
                        self.proposals.insert(
                            p.proposal,
                            ProposalRecord {
                                proposal: p.proposal,
                                trader: *source,
                                pair: p.pair,
                                strategy: p.strategy.clone(),
                                metrics: p.metrics.clone(),
                                status: ProposalStatus::Waiting,
                                variant,
                            },
                        );
                        while self.proposals.len() > PROPOSALS_KEPT {
                            self.proposals.pop_first();
                        }
                    }
                }
                self.holder_judges(*source, p, time, index, queue)
            }
            Event::ProposalRefused(r) => {
                if let Some(p) = self.proposals.get_mut(&r.proposal) {
                    p.status = ProposalStatus::Refused(r.reason.clone());
                }
                let Some(t) = self.traders.get_mut(&r.trader) else { return };
                match &t.phase {
                    Phase::Proposed { proposal, .. } if *proposal == r.proposal => t.phase = Phase::Evaluating,
                    Phase::Allocated { allocation, .. } if allocation.proposal == r.proposal => {
                        let allocation = allocation.clone();
                        let reason = format!("allocation {} taken back: {}", allocation.id, r.reason);
                        self.trader_gives_up(r.trader, &allocation, reason, RetireReason::Human, index, queue);
                    }
                    _ => {}
                }
            }
            Event::ProposalAccepted(a) => {
                if let Some(p) = self.proposals.get_mut(&a.proposal) {
                    p.status = ProposalStatus::Accepted { allocation: None };
                }
            }
            Event::CommandIssued(c) => self.steered(c, time, index, queue),
            Event::TemplateChanged(t) => self.template_changed(t),
            Event::AllocationGranted(a) => {
                if let Some(p) = self.proposals.get_mut(&a.proposal) {
                    p.status = ProposalStatus::Accepted { allocation: Some(a.id) };
                }
                let Some(t) = self.traders.get_mut(&a.trader) else { return };
                if let Phase::Proposed { proposal, variant } = &t.phase {
                    if *proposal == a.proposal {
                        t.phase = Phase::Allocated { allocation: (**a).clone(), variant: *variant };
                        self.trader_check(a.trader, time, index, queue);
                    }
                }
            }
            // An order's last event is the last time its trader needs to be found by it.
            Event::OrderRefused(r) => {
                self.order_refused(&r.client_id, index, queue);
                self.orders.remove(&r.client_id);
            }
            Event::OrderFilled(f) | Event::OrderPartiallyFilled(f) => {
                self.book_fill(f);
                let complete = matches!(event, Event::OrderFilled(_));
                self.trader_fill(f, complete, time, index, queue);
                if complete {
                    self.orders.remove(&f.client_id);
                }
            }
            Event::OrderCanceled(c) => {
                self.order_ended(&c.client_id, index, queue);
                self.orders.remove(&c.client_id);
            }
            Event::OrderFailed(f) => {
                self.order_ended(&f.client_id, index, queue);
                self.orders.remove(&f.client_id);
            }
            _ => {}
        }
    }

    // --- desk ------------------------------------------------------------------------

    fn spawn_holders(&mut self, index: usize, queue: &mut Queue) {
        let candidates: Vec<Asset> = self
            .free
            .iter()
            .filter(|(asset, free)| {
                **free > Money::ZERO
                    && !self.holders.contains_key(*asset)
                    && !self.templates.desk.divert.contains(*asset)
                    && self.markets.keys().any(|p| p.quote == **asset)
            })
            .map(|(asset, _)| *asset)
            .collect();
        for asset in candidates {
            let generation = {
                let g = self.holder_generations.entry(asset).or_insert(0);
                *g += 1;
                *g
            };
            let agent = AgentId::Holder(asset);
            let scope = self.holder_template(asset).authorization.key;
            let key = HolderKey::derive(&self.secret, &agent, generation, scope);
            let public_key = Some(key.public());
            self.holders.insert(asset, Holder { generation, key, traders: Vec::new(), outstanding: None });
            queue.push_back((
                index,
                self.desk,
                Event::AgentSpawned(AgentSpawned { agent, parent: Some(self.desk), generation, public_key }),
            ));
        }
    }

    fn book_fill(&mut self, f: &Fill) {
        let value = f.price * f.qty;
        match f.side {
            Side::Buy => {
                *self.free.entry(f.pair.quote).or_default() -= value + f.fee;
                *self.free.entry(f.pair.base).or_default() += Money::new(f.qty.value());
            }
            Side::Sell => {
                *self.free.entry(f.pair.base).or_default() -= Money::new(f.qty.value());
                *self.free.entry(f.pair.quote).or_default() += value - f.fee;
            }
        }
    }

    fn retired(&mut self, r: &AgentRetired, index: usize, queue: &mut Queue) {
        match r.agent {
            AgentId::Holder(asset) => {
                self.holders.remove(&asset);
            }
            AgentId::Trader { pair, .. } => {
                let Some(trader) = self.traders.remove(&r.agent) else { return };
                let holder_alive = match self.holders.get_mut(&trader.holder) {
                    Some(h) => {
                        h.traders.retain(|t| *t != r.agent);
                        true
                    }
                    None => false,
                };
                match r.reason {
                    RetireReason::Superseded => {}
                    _ if holder_alive => self.spawn_trader(pair, trader.holder, index, queue),
                    // The capital came back to an asset whose holder retired: next generation.
                    _ => self.spawn_holders(index, queue),
                }
            }
            _ => {}
        }
    }

    // --- holders ---------------------------------------------------------------------

    fn holder_started(&mut self, asset: Asset, time: i64, index: usize, queue: &mut Queue) {
        self.holder_learns(asset, time, index, queue);
        let wanted = &self.holder_template(asset).pairs;
        let pairs: Vec<Pair> = self
            .markets
            .keys()
            .filter(|p| p.quote == asset && (wanted.is_empty() || wanted.contains(p)))
            .copied()
            .collect();
        for pair in pairs {
            self.spawn_trader(pair, asset, index, queue);
        }
    }

    /// A new lifetime of `asset`'s holder avoids the strategy families that closed positions at
    /// a loss on `avoid_after_losing_pairs` of its pairs within the evidence window, until that
    /// evidence expires, and stops avoiding those whose evidence has expired: its template's
    /// `avoid_until` changes, with a `template_changed` that names the evidence.
    fn holder_learns(&mut self, asset: Asset, time: i64, index: usize, queue: &mut Queue) {
        if self.holder_template(asset).learning.avoid_after_losing_pairs == 0 {
            return;
        }
        let template = self.holder_template(asset).clone();
        let learning = &template.learning;
        let window = i64::from(learning.evidence_days) * 86_400_000;
        let since = time.saturating_sub(window);
        let mut until: BTreeMap<String, i64> =
            template.avoidances().into_iter().filter(|(family, _)| !template.avoid.contains(family)).collect();
        let mut reasons = Vec::new();
        let expired: Vec<String> = until.iter().filter(|(_, t)| **t <= time).map(|(f, _)| f.clone()).collect();
        for family in &expired {
            until.remove(family);
            reasons.push(format!("{family}: its evidence expired"));
        }
        for (family, pairs) in self.losses.get(&asset).into_iter().flatten() {
            let recent: Vec<(&Pair, &(i64, f64))> = pairs.iter().filter(|(_, (t, _))| *t >= since).collect();
            if recent.len() < learning.avoid_after_losing_pairs as usize || template.avoid.contains(family) {
                continue;
            }
            let expires = recent.iter().map(|(_, (t, _))| *t).max().unwrap_or(time).saturating_add(window);
            if until.get(family).is_some_and(|t| *t >= expires) {
                continue;
            }
            until.insert(family.clone(), expires);
            let evidence: Vec<String> = recent
                .iter()
                .map(|(pair, (t, pnl))| {
                    format!("{pair} ({pnl:.2} {asset}, closed {})", crypy_core::time::format_utc(*t))
                })
                .collect();
            reasons.push(format!("{family} lost on {} pairs: {}", evidence.len(), evidence.join(", ")));
        }
        if reasons.is_empty() {
            return;
        }
        let entries: Vec<String> =
            until.iter().map(|(family, t)| format!("{family} until {}", crypy_core::time::format_utc(*t))).collect();
        let value = crate::template::toml_list(&entries);
        let scope = TemplateScope::Holder(asset);
        let Ok((change, text)) = set_learned(self.template_text(&scope), "avoid_until", &value) else { return };
        let Ok(parsed) = HolderTemplate::parse("learned", &text) else { return };
        self.holder_templates.insert(asset, (text, parsed));
        queue.push_back((
            index,
            AgentId::Holder(asset),
            Event::TemplateChanged(TemplateChanged {
                scope,
                key: "avoid_until".into(),
                old: change.old,
                new: change.new,
                reason: format!("learned at generation start: {}", reasons.join("; ")),
            }),
        ));
    }

    /// The strategy families and variants `asset`'s traders do not propose now.
    fn avoided(&self, asset: Asset) -> Vec<String> {
        let template = self.holder_template(asset);
        let mut all = template.avoid.clone();
        for (family, until) in template.avoidances() {
            if self.time < until && !all.contains(&family) {
                all.push(family);
            }
        }
        all
    }

    fn spawn_trader(&mut self, pair: Pair, holder: Asset, index: usize, queue: &mut Queue) {
        let Some(h) = self.holders.get_mut(&holder) else { return };
        let generation = {
            let g = self.trader_generations.entry(pair).or_insert(0);
            *g += 1;
            *g
        };
        let agent = AgentId::Trader { pair, generation };
        h.traders.push(agent);
        self.traders.insert(
            agent,
            Trader { holder, pair, phase: Phase::Evaluating, last_proposal: None, stop: None, target: None },
        );
        let parent = AgentId::Holder(holder);
        queue.push_back((
            index,
            parent,
            Event::AgentSpawned(AgentSpawned { agent, parent: Some(parent), generation, public_key: None }),
        ));
        if generation > 1 {
            self.trader_learns(pair, generation, index, queue);
        }
    }

    fn holder_judges(&mut self, trader: AgentId, p: &StrategyProposed, time: i64, index: usize, queue: &mut Queue) {
        let Some(t) = self.traders.get(&trader) else { return };
        let asset = t.holder;
        let Some(holder) = self.holders.get(&asset) else { return };
        let source = AgentId::Holder(asset);
        let c = &self.holder_template(asset).criteria;
        let m = &p.metrics;
        let refusal = if let Some(a) = holder.outstanding {
            Some(format!("capital already allocated (allocation {a})"))
        } else if m.total_return < c.min_return {
            Some(format!("return {:.4} below min_return {}", m.total_return, c.min_return))
        } else if m.sharpe < c.min_sharpe {
            Some(format!("sharpe {:.3} below min_sharpe {}", m.sharpe, c.min_sharpe))
        } else if m.max_drawdown > c.max_drawdown {
            Some(format!("max drawdown {:.4} above max_drawdown {}", m.max_drawdown, c.max_drawdown))
        } else if m.trades < c.min_trades {
            Some(format!("{} trades, fewer than min_trades {}", m.trades, c.min_trades))
        } else {
            None
        };
        let amount = self.allocatable(asset);
        let refusal = refusal.or_else(|| (amount <= Money::ZERO).then(|| format!("no free {asset} to allocate")));
        if let Some(reason) = refusal {
            queue.push_back((
                index,
                source,
                Event::ProposalRefused(ProposalRefused { proposal: p.proposal, trader, reason }),
            ));
            return;
        }
        self.grant(asset, trader, p.proposal, p.pair, time, index, queue);
    }

    /// What an allocation of `asset`'s holder would be now: `max_fraction` of its free capital.
    fn allocatable(&self, asset: Asset) -> Money {
        let free = self.free.get(&asset).copied().unwrap_or_default();
        let fraction = Decimal::from_f64(self.holder_template(asset).criteria.max_fraction).unwrap_or(Decimal::ONE);
        Money::new((free.value() * fraction).round_dp_with_strategy(8, rust_decimal::RoundingStrategy::ToZero))
    }

    /// The holder of `asset` accepts `proposal` with a signed allocation.
    #[allow(clippy::too_many_arguments)]
    fn grant(
        &mut self,
        asset: Asset,
        trader: AgentId,
        proposal: u64,
        pair: Pair,
        time: i64,
        index: usize,
        queue: &mut Queue,
    ) {
        let amount = self.allocatable(asset);
        let ttl = self.holder_template(asset).criteria.allocation_ttl_minutes;
        let source = AgentId::Holder(asset);
        let Some(holder) = self.holders.get_mut(&asset) else { return };
        let nonce = {
            let n = self.holder_nonces.entry(asset).or_insert(0);
            *n += 1;
            *n
        };
        let mut allocation = Allocation {
            id: self.next_allocation,
            proposal,
            holder: source,
            trader,
            pair,
            asset,
            amount,
            expires_at: time + i64::from(ttl) * 60_000,
            nonce,
            signature: Signature([0; 64]),
        };
        self.next_allocation += 1;
        holder.key.sign(&mut allocation);
        holder.outstanding = Some(allocation.id);
        queue.push_back((index, source, Event::ProposalAccepted(ProposalAccepted { proposal, trader })));
        queue.push_back((index, source, Event::AllocationGranted(Box::new(allocation))));
    }

    /// A trader of `asset` bought: the holder's capital is committed. It retires, and its
    /// other traders with it.
    fn holder_commits(&mut self, asset: Asset, buyer: AgentId, index: usize, queue: &mut Queue) {
        let Some(holder) = self.holders.get(&asset) else { return };
        let source = AgentId::Holder(asset);
        for t in holder.traders.iter().filter(|t| **t != buyer) {
            let detail = format!("holder {asset} committed its capital with {buyer}");
            queue.push_back((
                index,
                source,
                Event::AgentRetired(AgentRetired { agent: *t, reason: RetireReason::Superseded, detail }),
            ));
        }
        let detail = format!("capital committed by {buyer} (generation {})", holder.generation);
        queue.push_back((
            index,
            source,
            Event::AgentRetired(AgentRetired { agent: source, reason: RetireReason::CapitalCommitted, detail }),
        ));
    }

    // --- traders ---------------------------------------------------------------------

    /// The taker fee and quantity precision an order on `pair` is sized with.
    fn sizing(&self, pair: Pair) -> (Decimal, u32) {
        let taker = self.capabilities.as_ref().map_or(DEFAULT_TAKER_FEE, |c| c.taker_fee);
        (taker, self.markets.get(&pair).map_or(8, |m| m.qty_precision))
    }

    fn trader_bar(&mut self, id: AgentId, time: i64, index: usize, queue: &mut Queue) {
        let Some(t) = self.traders.get(&id) else { return };
        match t.phase {
            Phase::Evaluating => self.trader_evaluates(id, index, queue),
            Phase::Allocated { .. } | Phase::InPosition { .. } => self.trader_check(id, time, index, queue),
            _ => {}
        }
    }

    /// On the pair's evaluation bars: reports the best variant and proposes it if it passes.
    fn trader_evaluates(&mut self, id: AgentId, index: usize, queue: &mut Queue) {
        let t = &self.traders[&id];
        let (pair, holder) = (t.pair, t.holder);
        let Some((bars, scores)) = self.view.as_ref().filter(|v| v.pair == pair).and_then(|v| v.scores.as_ref()) else {
            return;
        };
        let capital = self.free.get(&holder).copied().unwrap_or_default();
        let capital_money = Money::new(capital.value().round_dp(8));
        let tt = self.trader_template(pair);
        let avoided = self.avoided(holder);
        let (variants, names) = (&self.variants, &self.variant_names);
        fn set(list: &[String]) -> std::collections::HashSet<&str> {
            list.iter().map(String::as_str).collect()
        }
        let (avoid, mut focus, drop) = (set(&avoided), set(&tt.focus), set(&tt.drop));
        // A focus learned on another grid (the trader template's strategies changed since)
        // names nothing this grid scores: it no longer narrows anything.
        if !focus.is_empty() && !names.iter().any(|n| focus.contains(n.as_str())) {
            focus.clear();
        }
        let allowed = |i: usize| {
            let name = names[i].as_str();
            !avoid.contains(variants[i].family)
                && !avoid.contains(name)
                && (focus.is_empty() || focus.contains(name))
                && !drop.contains(name)
        };
        let passes = |i: &usize| {
            scores[*i].total_return >= tt.propose_min_return
                && scores[*i].trades >= tt.propose_min_trades
                && allowed(*i)
        };
        let by_return =
            |a: &usize, b: &usize| scores[*a].total_return.total_cmp(&scores[*b].total_return).then(b.cmp(a));
        let passing = (0..scores.len()).filter(passes).count();
        let best_passing = (0..scores.len()).filter(passes).max_by(by_return);
        let Some(best) = best_passing.or_else(|| (0..scores.len()).max_by(by_return)) else { return };
        let metrics: Metrics = scores[best].metrics(capital_money);
        let strategy = self.variants[best].to_string();
        queue.push_back((
            index,
            id,
            Event::StrategyEvaluated(StrategyEvaluated {
                pair,
                strategy: strategy.clone(),
                bars: *bars,
                variants: scores.len() as u32,
                passing: passing as u32,
                metrics: metrics.clone(),
            }),
        ));
        if best_passing.is_some() {
            let proposal = self.next_proposal;
            self.next_proposal += 1;
            if let Some(t) = self.traders.get_mut(&id) {
                t.phase = Phase::Proposed { proposal, variant: best };
                t.last_proposal = Some(proposal);
            }
            queue.push_back((
                index,
                id,
                Event::StrategyProposed(StrategyProposed { proposal, pair, strategy, metrics }),
            ));
        }
    }

    /// A market order of `trader` under `allocation`, with a fresh client id.
    fn market_order(&mut self, trader: AgentId, pair: Pair, side: Side, qty: Qty, allocation: u64) -> Event {
        let client_id = self.next_client_id(trader);
        Event::OrderRequested(OrderRequest {
            client_id,
            pair,
            side,
            kind: OrderKind::Market,
            qty,
            allocation: Some(allocation),
        })
    }

    fn next_client_id(&mut self, trader: AgentId) -> crypy_core::ClientOrderId {
        self.orders_this_input += 1;
        let id: crypy_core::ClientOrderId = format!("{}-{}-{}", self.run, self.seq, self.orders_this_input)
            .parse()
            .expect("digits and dashes make a valid id");
        self.orders.insert(id.clone(), trader);
        id
    }

    /// With an allocation: enter or let it expire. In a position: exit on the variant's
    /// signal, the stop-loss or the take-profit.
    fn trader_check(&mut self, id: AgentId, time: i64, index: usize, queue: &mut Queue) {
        // Called at every candle for a waiting or holding trader: one look-up of each, and
        // the phase is cloned only when it changes.
        let Some(t) = self.traders.get(&id) else { return };
        let pair = t.pair;
        let Some(history) = self.history.get(&pair) else { return };
        let Some(close) = history.last_close else { return };
        match &t.phase {
            Phase::Allocated { allocation, variant } => {
                let variant = *variant;
                if time > allocation.expires_at {
                    let allocation = allocation.clone();
                    let reason =
                        format!("allocation {} expired before {} said long", allocation.id, self.variants[variant]);
                    self.trader_gives_up(id, &allocation, reason, RetireReason::AllocationExpired, index, queue);
                } else if wants_bit(&history.wants, variant) {
                    let allocation = allocation.clone();
                    let reason = format!("{} says long at {close}", self.variants[variant]);
                    self.trader_enters(id, allocation, variant, close, reason, index, queue);
                }
            }
            Phase::InPosition { allocation, variant, qty, entry } => {
                let c = close.to_f64();
                let (stop, target) = self.exit_prices(t, *entry);
                let exit = !wants_bit(&history.wants, *variant) || c <= stop || c >= target;
                if exit {
                    let (allocation, variant, qty, entry) = (allocation.clone(), *variant, *qty, *entry);
                    let order = self.market_order(id, pair, Side::Sell, qty, allocation.id);
                    queue.push_back((index, id, order));
                    if let Some(t) = self.traders.get_mut(&id) {
                        t.phase = Phase::Exiting { allocation, variant, qty, entry, sold: Qty::ZERO, proceeds: 0.0 };
                    }
                }
            }
            _ => {}
        }
    }

    /// A market buy of everything `allocation` allows at `close`, or giving up when that is
    /// below the market's minimum.
    #[allow(clippy::too_many_arguments)]
    fn trader_enters(
        &mut self,
        id: AgentId,
        allocation: Allocation,
        variant: usize,
        close: Price,
        reason: String,
        index: usize,
        queue: &mut Queue,
    ) {
        let pair = allocation.pair;
        let qty = self.entry_qty(&allocation, close);
        let min = self.markets.get(&pair).map_or(Qty::ZERO, |m| m.min_qty);
        if qty.is_zero() || qty < min {
            let reason = format!("allocation {} buys {qty}, below the minimum {min}", allocation.amount);
            self.trader_gives_up(id, &allocation, reason, RetireReason::ChanceGone, index, queue);
            return;
        }
        queue.push_back((index, id, Event::EntryDecided(EntryDecision { allocation: allocation.id, pair, reason })));
        let order = self.market_order(id, pair, Side::Buy, qty, allocation.id);
        queue.push_back((index, id, order));
        if let Some(t) = self.traders.get_mut(&id) {
            t.phase = Phase::Entering { allocation, variant, filled: Qty::ZERO, cost: Money::ZERO };
        }
    }

    fn entry_qty(&self, allocation: &Allocation, close: Price) -> Qty {
        let (taker, precision) = self.sizing(allocation.pair);
        let all_in = all_in_qty(allocation.amount, close, taker, Decimal::ZERO, precision);
        let fixed = self.trader_template(allocation.pair).order_qty;
        if fixed > Decimal::ZERO {
            all_in.min(Qty::new(fixed).truncate_to(precision))
        } else {
            all_in
        }
    }

    /// The prices at or beyond which a position entered at `entry` is left.
    fn exit_prices(&self, t: &Trader, entry: f64) -> (f64, f64) {
        let tt = self.trader_template(t.pair);
        (
            t.stop.map_or(entry * (1.0 - tt.stop_loss), |p| p.to_f64()),
            t.target.map_or(entry * (1.0 + tt.take_profit), |p| p.to_f64()),
        )
    }

    fn trader_gives_up(
        &mut self,
        id: AgentId,
        allocation: &Allocation,
        reason: String,
        why: RetireReason,
        index: usize,
        queue: &mut Queue,
    ) {
        let pair = allocation.pair;
        if let Some(h) = self.holders.get_mut(&allocation.asset) {
            if h.outstanding == Some(allocation.id) {
                h.outstanding = None;
            }
        }
        queue.push_back((
            index,
            id,
            Event::EntrySkipped(EntrySkipped { allocation: allocation.id, pair, reason: reason.clone() }),
        ));
        queue.push_back((index, id, Event::AgentRetired(AgentRetired { agent: id, reason: why, detail: reason })));
    }

    fn order_refused(&mut self, client_id: &crypy_core::ClientOrderId, index: usize, queue: &mut Queue) {
        let Some(&id) = self.orders.get(client_id) else { return };
        let Some(t) = self.traders.get_mut(&id) else { return };
        match t.phase.clone() {
            Phase::Entering { allocation, filled, .. } if filled.is_zero() => {
                self.trader_gives_up(
                    id,
                    &allocation,
                    format!("the desk refused order {client_id}"),
                    RetireReason::ChanceGone,
                    index,
                    queue,
                );
            }
            // Try again at the next bar.
            Phase::Exiting { allocation, variant, qty, entry, sold, .. } => {
                t.phase = Phase::InPosition { allocation, variant, qty: qty - sold, entry };
            }
            _ => {}
        }
    }

    fn order_ended(&mut self, client_id: &crypy_core::ClientOrderId, index: usize, queue: &mut Queue) {
        let Some(&id) = self.orders.get(client_id) else { return };
        let Some(t) = self.traders.get_mut(&id) else { return };
        match t.phase.clone() {
            Phase::Entering { allocation, variant, filled, cost } => {
                if filled.is_zero() {
                    let reason = format!("order {client_id} ended unfilled");
                    self.trader_gives_up(id, &allocation, reason, RetireReason::ChanceGone, index, queue);
                } else {
                    let entry = cost.to_f64() / filled.to_f64();
                    t.phase = Phase::InPosition { allocation, variant, qty: filled, entry };
                }
            }
            Phase::Exiting { allocation, variant, qty, entry, sold, .. } => {
                t.phase = Phase::InPosition { allocation, variant, qty: qty - sold, entry };
            }
            _ => {}
        }
    }

    fn trader_fill(&mut self, f: &Fill, complete: bool, time: i64, index: usize, queue: &mut Queue) {
        let Some(&id) = self.orders.get(&f.client_id) else { return };
        let Some(t) = self.traders.get_mut(&id) else { return };
        let holder = t.holder;
        match t.phase.clone() {
            Phase::Entering { allocation, variant, filled, cost } => {
                let first = filled.is_zero();
                let filled = filled + f.qty;
                let cost = cost + f.price * f.qty + f.fee;
                t.phase = if complete {
                    Phase::InPosition { allocation, variant, qty: filled, entry: cost.to_f64() / filled.to_f64() }
                } else {
                    Phase::Entering { allocation, variant, filled, cost }
                };
                if first {
                    self.holder_commits(holder, id, index, queue);
                }
            }
            Phase::Exiting { allocation, variant, qty, entry, sold, proceeds } => {
                let sold = sold + f.qty;
                let proceeds = proceeds + (f.price * f.qty - f.fee).to_f64();
                if complete || sold >= qty {
                    let pnl = proceeds - entry * sold.to_f64();
                    self.closed.entry(f.pair).or_default().push(Closed { time, variant, pnl });
                    if pnl < 0.0 {
                        let family = self.variants[variant].family.to_string();
                        let evidence = self.losses.entry(holder).or_default().entry(family).or_default();
                        evidence.insert(f.pair, (time, pnl));
                    }
                    let detail = format!("position in {} closed by {}", f.pair, f.client_id);
                    queue.push_back((
                        index,
                        id,
                        Event::AgentRetired(AgentRetired { agent: id, reason: RetireReason::PositionClosed, detail }),
                    ));
                } else if let Some(t) = self.traders.get_mut(&id) {
                    t.phase = Phase::Exiting { allocation, variant, qty, entry, sold, proceeds };
                }
            }
            _ => {}
        }
    }
}
