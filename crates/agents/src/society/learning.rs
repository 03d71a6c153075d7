//! What a pair's traders learn across generations: a scoreboard of the positions the pair
//! closed, turned into the variants the next generation may propose (`focus`) and those it
//! must not (`drop`). Pure: the same evidence and seed give the same answer on every replay.

use std::collections::{BTreeMap, BTreeSet};

use crate::strategy::Variant;
use crate::template::TraderLearning;

/// One position a pair closed: the variant it followed (index in the grid) and its realized
/// P&L in the quote asset, fees included.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Closed {
    pub time: i64,
    pub variant: usize,
    pub pnl: f64,
}

/// What the next generation may propose, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Learned {
    /// Variant names, in grid order; empty: the whole grid.
    pub focus: Vec<String>,
    /// Variant names, in grid order.
    pub drop: Vec<String>,
    pub reason: String,
}

#[derive(Default)]
struct Tally {
    wins: u32,
    losses: u32,
    pnl: f64,
}

/// The next generation's focus from `closed` (the evidence window's positions), or `None`
/// when there is too little evidence. `seed` draws the variants kept for exploration.
pub fn learn_focus(grid: &[Variant], closed: &[Closed], learning: &TraderLearning, seed: u64) -> Option<Learned> {
    if learning.min_positions == 0 || closed.len() < learning.min_positions as usize {
        return None;
    }
    let mut tallies: BTreeMap<usize, Tally> = BTreeMap::new();
    for c in closed.iter().filter(|c| c.variant < grid.len()) {
        let t = tallies.entry(c.variant).or_default();
        t.pnl += c.pnl;
        if c.pnl > 0.0 {
            t.wins += 1;
        } else {
            t.losses += 1;
        }
    }
    let winners: Vec<usize> = tallies.iter().filter(|(_, t)| t.pnl > 0.0).map(|(v, _)| *v).collect();
    let dropped: BTreeSet<usize> = tallies
        .iter()
        .filter(|(_, t)| learning.drop_after_losses > 0 && t.wins == 0 && t.losses >= learning.drop_after_losses)
        .map(|(v, _)| *v)
        .collect();
    let steps = grid_steps(grid);
    let near = |a: &Variant, b: &Variant| {
        a.family == b.family
            && a.params.len() == b.params.len()
            && a.params.iter().zip(&b.params).enumerate().all(|(k, (x, y))| {
                let index = |v: u32| steps.get(&(a.family, k)).and_then(|s| s.iter().position(|p| *p == v));
                match (index(*x), index(*y)) {
                    (Some(i), Some(j)) => i.abs_diff(j) <= learning.neighbourhood as usize,
                    _ => x == y,
                }
            })
    };
    let neighbourhood: BTreeSet<usize> = (0..grid.len())
        .filter(|v| !dropped.contains(v) && winners.iter().any(|w| near(&grid[*w], &grid[*v])))
        .collect();
    let mut explored = Vec::new();
    if !winners.is_empty() {
        let mut rest: Vec<usize> =
            (0..grid.len()).filter(|v| !neighbourhood.contains(v) && !dropped.contains(v)).collect();
        let keep = (learning.explore * rest.len() as f64).round() as usize;
        rest.sort_by_key(|v| (mix(seed ^ fnv(&grid[*v].to_string())), *v));
        explored = rest.into_iter().take(keep).collect();
    }
    let focus: Vec<String> = if winners.is_empty() {
        Vec::new()
    } else {
        (0..grid.len())
            .filter(|v| neighbourhood.contains(v) || explored.contains(v))
            .map(|v| grid[v].to_string())
            .collect()
    };
    let drop: Vec<String> = dropped.iter().map(|v| grid[*v].to_string()).collect();

    let describe = |v: &usize| {
        let t = &tallies[v];
        format!("{} ({:+.2}, {} won, {} lost)", grid[*v], t.pnl, t.wins, t.losses)
    };
    let mut best = winners.clone();
    best.sort_by(|a, b| tallies[b].pnl.total_cmp(&tallies[a].pnl).then(a.cmp(b)));
    let mut reason = format!("{} positions closed", closed.len());
    if best.is_empty() {
        reason.push_str("; none made money: the whole grid stays open");
    } else {
        let shown: Vec<String> = best.iter().take(5).map(describe).collect();
        let more = if best.len() > 5 { format!(" and {} more", best.len() - 5) } else { String::new() };
        reason.push_str(&format!(
            "; made money: {}{more}; focus on {} variants within {} grid step(s) of them, exploring {} of the rest",
            shown.join(", "),
            neighbourhood.len(),
            learning.neighbourhood,
            explored.len()
        ));
    }
    if !dropped.is_empty() {
        let shown: Vec<String> = dropped.iter().take(5).map(describe).collect();
        reason.push_str(&format!(
            "; dropped for losing {} times or more: {}",
            learning.drop_after_losses,
            shown.join(", ")
        ));
        if dropped.len() > 5 {
            reason.push_str(&format!(" and {} more", dropped.len() - 5));
        }
    }
    Some(Learned { focus, drop, reason })
}

/// Each family's parameter values, per position, in increasing order: a grid step is one
/// place along such a list.
fn grid_steps(grid: &[Variant]) -> BTreeMap<(&'static str, usize), Vec<u32>> {
    let mut steps: BTreeMap<(&'static str, usize), BTreeSet<u32>> = BTreeMap::new();
    for v in grid {
        for (k, p) in v.params.iter().enumerate() {
            steps.entry((v.family, k)).or_default().insert(*p);
        }
    }
    steps.into_iter().map(|(k, s)| (k, s.into_iter().collect())).collect()
}

/// FNV-1a: a hash that is the same on every machine and every build.
pub(crate) fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// splitmix64's finaliser: spreads a seed's bits.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{Registry, StrategySpec};

    fn grid() -> Vec<Variant> {
        let spec = StrategySpec::parse("sma_cross fast=5..50/5 slow=20..200/20").unwrap();
        Registry::default().build(&spec).unwrap().variants().to_vec()
    }

    fn index(grid: &[Variant], name: &str) -> usize {
        grid.iter().position(|v| v.to_string() == name).unwrap()
    }

    fn closed(grid: &[Variant], list: &[(&str, f64)]) -> Vec<Closed> {
        list.iter()
            .enumerate()
            .map(|(i, (n, pnl))| Closed { time: i as i64, variant: index(grid, n), pnl: *pnl })
            .collect()
    }

    #[test]
    fn the_next_generation_searches_around_what_made_money_and_drops_what_kept_losing() {
        let grid = grid();
        let learning = TraderLearning::default();
        let evidence = closed(
            &grid,
            &[
                ("sma_cross:10:60", 30.0),
                ("sma_cross:10:60", -5.0),
                ("sma_cross:45:200", -3.0),
                ("sma_cross:45:200", -4.0),
            ],
        );
        let learned = learn_focus(&grid, &evidence, &learning, 7).unwrap();
        for near in ["sma_cross:5:40", "sma_cross:10:60", "sma_cross:15:80", "sma_cross:15:40"] {
            assert!(learned.focus.contains(&near.to_string()), "{near} is one step from the winner");
        }
        assert_eq!(learned.drop, vec!["sma_cross:45:200".to_string()]);
        assert!(!learned.focus.contains(&"sma_cross:45:200".to_string()));
        let others = grid.len() - 9 - 1;
        let explored = learned.focus.len() - 9;
        assert_eq!(explored, (0.1 * others as f64).round() as usize, "exploration keeps a tenth of the rest");
        assert!(learned.reason.contains("sma_cross:10:60 (+25.00, 1 won, 1 lost)"), "{}", learned.reason);
        assert_eq!(learn_focus(&grid, &evidence, &learning, 7), Some(learned.clone()), "deterministic");
        let other_draw = learn_focus(&grid, &evidence, &learning, 8).unwrap();
        assert_ne!(other_draw.focus, learned.focus, "each generation explores afresh");
    }

    proptest::proptest! {
        /// Whatever the evidence: the focus and the drop list name variants of the grid, in grid
        /// order, never the same one twice or in both; every variant that made money in all is
        /// in the focus; the same evidence and seed give the same lesson.
        #[test]
        fn lessons_hold_their_rules_on_any_evidence(
            positions in proptest::collection::vec((0usize..95, -100.0f64..100.0), 0..40),
            neighbourhood in 0u32..3,
            explore in 0.0f64..=1.0,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let grid = grid();
            let learning = TraderLearning { neighbourhood, explore, ..TraderLearning::default() };
            let evidence: Vec<Closed> =
                positions.iter().enumerate().map(|(i, (v, pnl))| Closed { time: i as i64, variant: *v, pnl: *pnl }).collect();
            let Some(learned) = learn_focus(&grid, &evidence, &learning, seed) else {
                proptest::prop_assert!(evidence.len() < learning.min_positions as usize);
                return Ok(());
            };
            let names: Vec<String> = grid.iter().map(Variant::to_string).collect();
            for list in [&learned.focus, &learned.drop] {
                let at: Vec<usize> = list.iter().map(|n| names.iter().position(|m| m == n).expect("of the grid")).collect();
                proptest::prop_assert!(at.windows(2).all(|w| w[0] < w[1]), "grid order, no repeats");
            }
            proptest::prop_assert!(learned.focus.iter().all(|f| !learned.drop.contains(f)));
            let mut net: BTreeMap<usize, f64> = BTreeMap::new();
            for c in &evidence {
                *net.entry(c.variant).or_default() += c.pnl;
            }
            for (v, pnl) in net {
                // Evidence of a variant the grid no longer has is ignored.
                if v < names.len() && pnl > 0.0 {
                    proptest::prop_assert!(learned.focus.contains(&names[v]), "{} made money", names[v]);
                }
            }
            proptest::prop_assert_eq!(learn_focus(&grid, &evidence, &learning, seed), Some(learned));
        }
    }

    #[test]
    fn too_little_evidence_or_no_winner_leaves_the_grid_open() {
        let grid = grid();
        let learning = TraderLearning::default();
        assert_eq!(learn_focus(&grid, &closed(&grid, &[("sma_cross:10:60", 3.0)]), &learning, 1), None);
        let losing = closed(&grid, &[("sma_cross:10:60", -3.0), ("sma_cross:10:60", -1.0), ("sma_cross:5:20", -2.0)]);
        let learned = learn_focus(&grid, &losing, &learning, 1).unwrap();
        assert!(learned.focus.is_empty());
        assert_eq!(learned.drop, vec!["sma_cross:10:60".to_string()]);
        let off = TraderLearning { min_positions: 0, ..learning };
        assert_eq!(learn_focus(&grid, &losing, &off, 1), None);
    }
}

impl super::Society {
    /// A new generation of `pair`'s trader learns from the positions the pair closed in the
    /// evidence window: a changed `focus` or `drop` is set in the pair's template and said
    /// with a `template_changed` that names the evidence.
    pub(super) fn trader_learns(
        &mut self,
        pair: crypy_core::Pair,
        generation: u32,
        index: usize,
        queue: &mut super::Queue,
    ) {
        // Only a position closed since the last lesson is news: generations that ended
        // without trading (an allocation expired, a proposal refused) teach nothing.
        let positions = self.closed.get(&pair).map_or(0, Vec::len);
        if self.learned_from.insert(pair, positions).unwrap_or(0) == positions {
            return;
        }
        // Learning off (the backtest's fixed strategy, a human's choice): nothing to gather.
        // Checked before the evidence is collected, which grows with every position.
        let min_positions = self.trader_template(pair).learning.min_positions as usize;
        if min_positions == 0 || positions < min_positions {
            return;
        }
        let template = self.trader_template(pair).clone();
        let since = self.time.saturating_sub(i64::from(template.learning.evidence_days) * 86_400_000);
        let evidence: Vec<Closed> =
            self.closed.get(&pair).into_iter().flatten().filter(|c| c.time >= since).copied().collect();
        let seed = mix(fnv(&pair.to_string()) ^ u64::from(generation) ^ (u64::from(self.run) << 32));
        let Some(learned) = learn_focus(&self.variants, &evidence, &template.learning, seed) else { return };
        let scope = crypy_core::event::TemplateScope::Trader(pair);
        for (key, old, new) in [("focus", &template.focus, &learned.focus), ("drop", &template.drop, &learned.drop)] {
            if old == new {
                continue;
            }
            let Ok((change, text)) =
                crate::template::set_learned(self.template_text(&scope), key, &crate::template::toml_list(new))
            else {
                continue;
            };
            let Ok(parsed) = crate::template::TraderTemplate::parse("learned", &text) else { continue };
            self.trader_templates.insert(pair, (text, parsed));
            queue.push_back((
                index,
                crypy_core::AgentId::Trader { pair, generation },
                crypy_core::Event::TemplateChanged(crypy_core::event::TemplateChanged {
                    scope: scope.clone(),
                    key: key.into(),
                    old: change.old,
                    new: change.new,
                    reason: format!("learned at generation {generation} of {pair}: {}", learned.reason),
                }),
            ));
        }
    }
}

/// One desk lifetime (run) of a holder asset: the positions its traders closed and their
/// realized P&L in the asset, fees included.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lifetime {
    pub run: u32,
    /// Market time of the lifetime's last event.
    pub end: i64,
    pub positions: u32,
    pub pnl: f64,
}

/// The desk's lesson at the start of a lifetime: the assets to divert, given each asset's
/// earlier lifetimes and the assets already diverted; `None` when nothing new is learned.
/// Returns the whole new list and the evidence.
pub fn learn_divert(
    lifetimes: &BTreeMap<crypy_core::Asset, Vec<Lifetime>>,
    learning: &crate::template::DeskLearning,
    now: i64,
    diverted: &[crypy_core::Asset],
) -> Option<(Vec<crypy_core::Asset>, String)> {
    if learning.divert_after_losing_lifetimes == 0 {
        return None;
    }
    let since = now.saturating_sub(i64::from(learning.evidence_days) * 86_400_000);
    let mut list = diverted.to_vec();
    let mut reasons = Vec::new();
    for (asset, lives) in lifetimes {
        if diverted.contains(asset) {
            continue;
        }
        let recent: Vec<&Lifetime> = lives.iter().filter(|l| l.end >= since && l.positions > 0).collect();
        let losing: Vec<&&Lifetime> = recent.iter().filter(|l| l.pnl < 0.0).collect();
        let winning = recent.iter().filter(|l| l.pnl > 0.0).count();
        if losing.len() >= learning.divert_after_losing_lifetimes as usize && losing.len() > winning {
            list.push(*asset);
            let shown: Vec<String> = losing
                .iter()
                .map(|l| format!("run {} ({:+.2} {asset} over {} positions)", l.run, l.pnl, l.positions))
                .collect();
            reasons.push(format!(
                "{asset} holders lost in {} of {} lifetimes: {}",
                losing.len(),
                recent.len(),
                shown.join(", ")
            ));
        }
    }
    (!reasons.is_empty()).then(|| (list, reasons.join("; ")))
}

#[cfg(test)]
mod divert_tests {
    use super::*;
    use crate::template::DeskLearning;

    #[test]
    fn an_asset_whose_holders_usually_lose_is_diverted() {
        let eur: crypy_core::Asset = "EUR".parse().unwrap();
        let life = |run, pnl| Lifetime { run, end: i64::from(run) * 86_400_000, positions: 4, pnl };
        let learning = DeskLearning { divert_after_losing_lifetimes: 2, evidence_days: 90 };
        let mostly_losing = BTreeMap::from([(eur, vec![life(1, -10.0), life(2, 5.0), life(3, -1.0)])]);
        let (list, reason) = learn_divert(&mostly_losing, &learning, 4 * 86_400_000, &[]).unwrap();
        assert_eq!(list, vec![eur]);
        assert!(
            reason.contains("EUR holders lost in 2 of 3 lifetimes: run 1 (-10.00 EUR over 4 positions)"),
            "{reason}"
        );
        assert_eq!(learn_divert(&mostly_losing, &learning, 4 * 86_400_000, &[eur]), None, "already diverted");
        let even = BTreeMap::from([(eur, vec![life(1, -10.0), life(2, 5.0), life(3, -1.0), life(4, 2.0)])]);
        assert_eq!(learn_divert(&even, &learning, 5 * 86_400_000, &[]), None, "losing no more often than winning");
        assert_eq!(learn_divert(&mostly_losing, &learning, 200 * 86_400_000, &[]), None, "old evidence expired");
        let off = DeskLearning { divert_after_losing_lifetimes: 0, ..learning };
        assert_eq!(learn_divert(&mostly_losing, &off, 4 * 86_400_000, &[]), None);
    }
}
