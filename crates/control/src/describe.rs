//! One line of text per event, for people: the narration of `crypy sim` and what `watch`
//! prints.

use crypy_core::time::format_utc;
use crypy_core::{Envelope, Event};

/// The events worth a line as they happen; evaluations and candles are too many to read.
pub fn story(e: &Envelope) -> Option<String> {
    Some(match &e.event {
        Event::AgentSpawned(s) => format!("spawns {} (generation {})", s.agent, s.generation),
        Event::AgentRetired(r) => format!("retires {}: {}", r.agent, r.detail),
        Event::StrategyProposed(p) => format!(
            "proposes {} (#{}): return {:+.2}% sharpe {:.2} drawdown {:.2}% trades {}",
            p.strategy,
            p.proposal,
            p.metrics.total_return * 100.0,
            p.metrics.sharpe,
            p.metrics.max_drawdown * 100.0,
            p.metrics.trades
        ),
        Event::ProposalAccepted(a) => format!("accepts proposal #{} of {}", a.proposal, a.trader),
        Event::ProposalRefused(r) => format!("refuses proposal #{} of {}: {}", r.proposal, r.trader, r.reason),
        Event::AllocationGranted(a) => {
            format!("allocates {} {} to {} until {} (signed)", a.amount, a.asset, a.trader, format_utc(a.expires_at))
        }
        Event::EntryDecided(d) => format!("enters: {}", d.reason),
        Event::EntrySkipped(s) => format!("skips: {}", s.reason),
        Event::OrderRequested(r) => format!("asks to {} {} {} ({})", r.side, r.qty, r.pair, r.client_id),
        Event::OrderApproved(a) => format!("approves {}", a.client_id),
        Event::OrderRefused(r) => format!("refuses {}: {}", r.client_id, r.reason),
        Event::OrderFilled(f) | Event::OrderPartiallyFilled(f) => format!(
            "{} {} {} {} at {} (fee {} {}){}",
            if matches!(e.event, Event::OrderFilled(_)) { "filled" } else { "partly filled" },
            f.client_id,
            f.side,
            f.qty,
            f.price,
            f.fee.normalize(),
            f.fee_asset,
            if f.remaining.is_zero() { String::new() } else { format!(", {} left", f.remaining) }
        ),
        Event::OrderCanceled(c) => format!("canceled {}: {}", c.client_id, c.reason),
        Event::OrderFailed(f) => format!("failed {}: {}", f.client_id, f.error),
        Event::CommandIssued(c) => format!("{} at {}: {}", c.session, c.agent, c.command),
        Event::KillSwitchEngaged(k) => format!("kill switch engaged {}: {} open orders canceled", k.reason, k.canceled),
        Event::KillSwitchReleased(k) => format!("kill switch released {}", k.reason),
        Event::VenueSettings(v) => format!("venue settings ({} lines)", v.text.lines().count()),
        Event::VenueError(v) => format!("venue error on {} (attempt {}): {}; {}", v.call, v.attempt, v.error, v.then),
        Event::TemplateChanged(t) if !t.key.ends_with(".toml") => format!(
            "template {:?} {}: {} → {} ({})",
            t.scope,
            t.key,
            t.old.as_deref().unwrap_or("-"),
            t.new.as_deref().unwrap_or("-"),
            t.reason
        ),
        _ => return None,
    })
}

/// Any event as one line: its time, source and story, or its kind and data.
pub fn line(e: &Envelope) -> String {
    let text = match (story(e), &e.event) {
        (Some(s), _) => s,
        (None, Event::Candle(c)) => format!(
            "candle {} {} o {} h {} l {} c {} v {}",
            c.pair,
            c.interval,
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume.normalize()
        ),
        (None, Event::StrategyEvaluated(s)) => format!(
            "evaluates {}: best {} return {:+.2}% sharpe {:.2} ({} of {} variants pass)",
            s.pair,
            s.strategy,
            s.metrics.total_return * 100.0,
            s.metrics.sharpe,
            s.passing,
            s.variants
        ),
        (None, event) => format!("{} {}", event.kind(), event.data_json()),
    };
    format!("{}  {:<12} {text}", format_utc(e.time), e.source.to_string())
}
