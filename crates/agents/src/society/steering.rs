//! What the terminals read of the society, and what human commands do to it.
//!
//! A command is checked ([`Society::check`], [`Society::check_setting`]) before the runtime
//! records it; once recorded, as a `command_issued` or `template_changed` input, it takes
//! effect through [`Society::handle`] like any other input, so a replay steers alike.

use super::*;

impl Society {
    // --- reading ------------------------------------------------------------------------

    /// The live holders, by asset.
    pub fn holders(&self) -> Vec<HolderState> {
        self.holders
            .iter()
            .map(|(asset, h)| HolderState {
                asset: *asset,
                generation: h.generation,
                free: self.free(*asset),
                traders: h.traders.clone(),
                outstanding: h.outstanding,
            })
            .collect()
    }

    /// The free balance of `asset` as the agents book it.
    pub fn free(&self, asset: Asset) -> Money {
        self.free.get(&asset).copied().unwrap_or_default()
    }

    /// Assets the desk has or had a holder of.
    pub fn holder_assets(&self) -> impl Iterator<Item = &Asset> {
        self.holder_generations.keys()
    }

    /// Markets the venue offers.
    pub fn markets(&self) -> impl Iterator<Item = &Market> {
        self.markets.values()
    }

    /// The live traders, by id.
    pub fn traders(&self) -> Vec<TraderState> {
        self.traders.keys().filter_map(|id| self.trader_state(id)).collect()
    }

    /// The live trader of `pair`, if any.
    pub fn trader(&self, pair: Pair) -> Option<TraderState> {
        self.traders.iter().find(|(_, t)| t.pair == pair).and_then(|(id, _)| self.trader_state(id))
    }

    fn trader_state(&self, id: &AgentId) -> Option<TraderState> {
        let t = self.traders.get(id)?;
        let strategy = |v: &usize| Some(self.variants[*v].to_string());
        let (phase, strategy, proposal, allocation, position) = match &t.phase {
            Phase::Evaluating => ("evaluating", None, t.last_proposal, None, None),
            Phase::Proposed { proposal, variant } => ("proposed", strategy(variant), Some(*proposal), None, None),
            Phase::Allocated { allocation, variant } => {
                ("allocated", strategy(variant), Some(allocation.proposal), Some(allocation.clone()), None)
            }
            Phase::Entering { allocation, variant, .. } => {
                ("entering", strategy(variant), Some(allocation.proposal), Some(allocation.clone()), None)
            }
            Phase::InPosition { allocation, variant, qty, entry }
            | Phase::Exiting { allocation, variant, qty, entry, .. } => {
                let (stop, target) = self.exit_prices(t, *entry);
                let position = PositionState {
                    qty: *qty,
                    entry: *entry,
                    stop,
                    target,
                    adjusted: t.stop.is_some() || t.target.is_some(),
                };
                let phase = if matches!(t.phase, Phase::Exiting { .. }) { "exiting" } else { "in position" };
                (phase, strategy(variant), Some(allocation.proposal), Some(allocation.clone()), Some(position))
            }
        };
        Some(TraderState { id: *id, holder: t.holder, pair: t.pair, phase, strategy, proposal, allocation, position })
    }

    /// The proposals remembered (the latest [`PROPOSALS_KEPT`]), oldest first.
    pub fn proposals(&self) -> impl Iterator<Item = &ProposalRecord> {
        self.proposals.values()
    }

    /// The pair's latest evaluation: the window's length in bars, and every variant with its
    /// score, best return first.
    pub fn strategies(&self, pair: Pair) -> Option<(u32, Vec<(String, Score)>)> {
        let (bars, scores) = self.last_scores.get(&pair)?;
        let mut ranked: Vec<(String, Score)> =
            scores.iter().enumerate().map(|(i, s)| (self.variants[i].to_string(), s.clone())).collect();
        ranked.sort_by(|a, b| b.1.total_return.total_cmp(&a.1.total_return).then_with(|| a.0.cmp(&b.0)));
        Some((*bars, ranked))
    }

    pub fn last_close(&self, pair: Pair) -> Option<Price> {
        self.history.get(&pair).and_then(|h| h.last_close)
    }

    pub fn kill_switch(&self) -> bool {
        self.gate.kill_switch()
    }

    pub fn open_orders(&self) -> usize {
        self.gate.open_orders()
    }

    /// The orders the desk approved that have not filled, been canceled or failed.
    pub fn open_order_ids(&self) -> Vec<crypy_core::ClientOrderId> {
        self.gate.open_order_ids().cloned().collect()
    }

    pub fn desk_template(&self) -> &DeskTemplate {
        &self.templates.desk
    }

    pub fn holder_template(&self, asset: Asset) -> &HolderTemplate {
        self.holder_templates.get(&asset).map_or(&self.templates.holder, |(_, t)| t)
    }

    pub fn trader_template(&self, pair: Pair) -> &TraderTemplate {
        self.trader_templates.get(&pair).map_or(&self.templates.trader, |(_, t)| t)
    }

    /// The template text in force at `scope`.
    pub fn template_text(&self, scope: &TemplateScope) -> &str {
        match scope {
            TemplateScope::Desk => &self.templates.texts[0],
            TemplateScope::Holder(a) => self.holder_templates.get(a).map_or(&self.templates.texts[1], |(t, _)| t),
            TemplateScope::Trader(p) => self.trader_templates.get(p).map_or(&self.templates.texts[2], |(t, _)| t),
        }
    }

    // --- checking -----------------------------------------------------------------------

    /// Whether `agent` can carry out `steer` now; the error says why not.
    ///
    /// # Errors
    /// A text for the human: what is missing, and what to do instead where there is a way.
    pub fn check(&self, agent: &AgentId, steer: &Steer) -> Result<(), String> {
        match (agent, steer) {
            (AgentId::Holder(asset), Steer::Accept(n)) => {
                let (holder, record, trader) = self.holders_proposal(*asset, *n)?;
                if let Some(a) = holder.outstanding {
                    return Err(format!("{asset} has allocation {a} outstanding; refuse its proposal first"));
                }
                match (&record.status, &trader.phase) {
                    (ProposalStatus::Accepted { .. }, _) => Err(format!("proposal #{n} is already accepted")),
                    (_, Phase::Proposed { proposal, .. }) if *proposal == *n => Ok(()),
                    (ProposalStatus::Refused(_), Phase::Evaluating) if trader.last_proposal == Some(*n) => {
                        if self.allocatable(*asset) <= Money::ZERO {
                            Err(format!("no free {asset} to allocate"))
                        } else {
                            Ok(())
                        }
                    }
                    _ => Err(format!(
                        "{} has moved on since proposal #{n} (now {})",
                        record.trader,
                        self.trader_state(&record.trader).map_or("retired", |s| s.phase)
                    )),
                }
            }
            (AgentId::Holder(asset), Steer::Refuse { proposal: n, .. }) => {
                let (_, record, trader) = self.holders_proposal(*asset, *n)?;
                match &trader.phase {
                    Phase::Proposed { proposal, .. } if *proposal == *n => Ok(()),
                    Phase::Allocated { allocation, .. } if allocation.proposal == *n => Ok(()),
                    Phase::Entering { allocation, .. }
                    | Phase::InPosition { allocation, .. }
                    | Phase::Exiting { allocation, .. }
                        if allocation.proposal == *n =>
                    {
                        Err(format!("{} already traded proposal #{n}: `exit` at {}", record.trader, record.pair))
                    }
                    _ => match &record.status {
                        ProposalStatus::Refused(why) => Err(format!("proposal #{n} is already refused: {why}")),
                        _ => Err(format!("{} has moved on since proposal #{n}", record.trader)),
                    },
                }
            }
            (AgentId::Trader { .. }, Steer::Enter) => {
                let t = self.live_trader(agent)?;
                match &t.phase {
                    Phase::Allocated { allocation, .. } => {
                        let close = self
                            .last_close(t.pair)
                            .ok_or_else(|| format!("no price for {} yet: wait for a bar", t.pair))?;
                        let qty = self.entry_qty(allocation, close);
                        let min = self.markets.get(&t.pair).map_or(Qty::ZERO, |m| m.min_qty);
                        if qty.is_zero() || qty < min {
                            return Err(format!(
                                "allocation {} {} buys {qty} at {close}, below the minimum {min}",
                                allocation.amount, allocation.asset
                            ));
                        }
                        Ok(())
                    }
                    Phase::Evaluating | Phase::Proposed { .. } => Err(format!(
                        "{agent} has no allocation: its holder must accept a proposal first (`proposals` at {})",
                        t.holder
                    )),
                    Phase::Entering { .. } | Phase::Exiting { .. } => Err("an order is on its way; wait for it".into()),
                    Phase::InPosition { .. } => Err(format!("{agent} is already in a position")),
                }
            }
            (AgentId::Trader { .. }, Steer::Exit) => {
                let t = self.live_trader(agent)?;
                match &t.phase {
                    Phase::InPosition { .. } => Ok(()),
                    Phase::Entering { .. } | Phase::Exiting { .. } => Err("an order is on its way; wait for it".into()),
                    Phase::Allocated { allocation, .. } => Err(format!(
                        "{agent} holds no position; to give allocation {} back, `refuse {}` at {}",
                        allocation.id, allocation.proposal, t.holder
                    )),
                    _ => Err(format!("{agent} holds no position")),
                }
            }
            (AgentId::Trader { .. }, Steer::Adjust { bound, price }) => {
                let t = self.live_trader(agent)?;
                if !matches!(t.phase, Phase::InPosition { .. }) {
                    return Err(format!("{agent} holds no position to adjust"));
                }
                let Some(close) = self.last_close(t.pair) else { return Ok(()) };
                match bound {
                    Bound::Stop if *price >= close => {
                        Err(format!("a stop at {price} is not below the last price {close}: `exit` to leave now"))
                    }
                    Bound::Target if *price <= close => {
                        Err(format!("a target at {price} is not above the last price {close}: `exit` to leave now"))
                    }
                    _ => Ok(()),
                }
            }
            _ => Err(format!("`{steer}` is not a command for {agent}")),
        }
    }

    fn holders_proposal(&self, asset: Asset, n: u64) -> Result<(&Holder, &ProposalRecord, &Trader), String> {
        let holder = self.holders.get(&asset).ok_or_else(|| format!("{asset} has no live holder"))?;
        let record = self.proposals.get(&n).ok_or_else(|| format!("no proposal #{n} (see `proposals`)"))?;
        let trader =
            self.traders.get(&record.trader).filter(|t| t.holder == asset).ok_or_else(|| {
                format!("proposal #{n}'s trader {} is no longer one of {asset}'s traders", record.trader)
            })?;
        Ok((holder, record, trader))
    }

    fn live_trader(&self, agent: &AgentId) -> Result<&Trader, String> {
        self.traders.get(agent).ok_or_else(|| format!("{agent} has retired"))
    }

    /// The change setting `key` to `value` at `scope` makes, if the template takes it.
    ///
    /// # Errors
    /// An unknown key, a value of the wrong type or out of range, or a key that only a new
    /// run can change.
    pub fn check_setting(&self, scope: &TemplateScope, key: &str, value: &str) -> Result<FieldChange, String> {
        let next_run = |k: &str| format!("{k} takes effect at the next run: edit the template file");
        match scope {
            TemplateScope::Desk if key == "trusted_asset" => return Err(next_run(key)),
            TemplateScope::Trader(_) if matches!(key, "look_back_bars" | "evaluate_every_minutes" | "strategies") => {
                return Err(next_run(key))
            }
            _ => {}
        }
        let (change, text) = set_field(self.template_text(scope), key, value)?;
        let file = "the setting";
        let parsed = match scope {
            TemplateScope::Desk => DeskTemplate::parse(file, &text).map(|_| ()),
            TemplateScope::Holder(_) => HolderTemplate::parse(file, &text).map(|_| ()),
            TemplateScope::Trader(_) => TraderTemplate::parse(file, &text).map(|_| ()),
        };
        parsed.map_err(|e| e.to_string())?;
        Ok(change)
    }

    // --- acting -------------------------------------------------------------------------

    /// A recorded human command takes effect (queries and anything unchecked do nothing).
    pub(super) fn steered(&mut self, c: &CommandIssued, time: i64, index: usize, queue: &mut Queue) {
        let Ok(steer) = c.command.parse::<Steer>() else { return };
        if self.check(&c.agent, &steer).is_err() {
            return;
        }
        let id = c.agent;
        match steer {
            Steer::Accept(n) => {
                let (AgentId::Holder(asset), Some(record)) = (id, self.proposals.get(&n).cloned()) else { return };
                if let Some(t) = self.traders.get_mut(&record.trader) {
                    t.phase = Phase::Proposed { proposal: n, variant: record.variant };
                }
                self.grant(asset, record.trader, n, record.pair, time, index, queue);
            }
            Steer::Refuse { proposal, reason } => {
                let (AgentId::Holder(asset), Some(record)) = (id, self.proposals.get(&proposal)) else { return };
                let why = if reason.is_empty() { "no reason given".to_string() } else { reason };
                let reason = format!("refused by {}: {why}", c.session);
                queue.push_back((
                    index,
                    AgentId::Holder(asset),
                    Event::ProposalRefused(ProposalRefused { proposal, trader: record.trader, reason }),
                ));
            }
            Steer::Enter => {
                let t = &self.traders[&id];
                let (Phase::Allocated { allocation, variant }, Some(close)) =
                    (t.phase.clone(), self.last_close(t.pair))
                else {
                    return;
                };
                let reason = format!("entered by {} at {close}", c.session);
                self.trader_enters(id, allocation, variant, close, reason, index, queue);
            }
            Steer::Exit => {
                let t = &self.traders[&id];
                if let Phase::InPosition { allocation, variant, qty, entry } = t.phase.clone() {
                    let order = self.market_order(id, allocation.pair, Side::Sell, qty, allocation.id);
                    queue.push_back((index, id, order));
                    if let Some(t) = self.traders.get_mut(&id) {
                        t.phase = Phase::Exiting { allocation, variant, qty, entry, sold: Qty::ZERO, proceeds: 0.0 };
                    }
                }
            }
            Steer::Adjust { bound, price } => {
                if let Some(t) = self.traders.get_mut(&id) {
                    match bound {
                        Bound::Stop => t.stop = Some(price),
                        Bound::Target => t.target = Some(price),
                    }
                }
            }
        }
    }

    /// A recorded template setting takes effect: the shared files at a run's start were read
    /// before the society was made; a whole template of one holder or one pair (its file in
    /// the templates directory) or one key set later applies from now on.
    pub(super) fn template_changed(&mut self, t: &TemplateChanged) {
        let Some(value) = &t.new else { return };
        let text = if t.key.ends_with(".toml") {
            if t.scope == TemplateScope::Desk {
                return;
            }
            value.clone()
        } else {
            let text = self.template_text(&t.scope);
            let set = set_field(text, &t.key, value).or_else(|_| crate::template::set_learned(text, &t.key, value));
            let Ok((_, text)) = set else { return };
            text
        };
        let file = "template_changed";
        match &t.scope {
            TemplateScope::Desk => {
                if let Ok(desk) = DeskTemplate::parse(file, &text) {
                    self.gate.set_limits(desk.limits.clone());
                    self.templates.desk = desk;
                    self.templates.texts[0] = text;
                }
            }
            TemplateScope::Holder(asset) => {
                if let Ok(holder) = HolderTemplate::parse(file, &text) {
                    self.holder_templates.insert(*asset, (text, holder));
                }
            }
            TemplateScope::Trader(pair) => {
                if let Ok(trader) = TraderTemplate::parse(file, &text) {
                    self.trader_templates.insert(*pair, (text, trader));
                }
            }
        }
    }
}
