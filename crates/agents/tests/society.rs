//! The desk's agents trading real data through the simulator, in lockstep, as `crypy sim`
//! runs them: external events in, derived events out, approved orders to the venue.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crypy_agents::society::{Out, Parent, Society};
use crypy_agents::strategy::Registry;
use crypy_agents::template::{Templates, TraderTemplate, DEFAULT_TRADER};
use crypy_core::event::{Balances, CommandIssued, Markets, OrderAcknowledged, OrderFailed};
use crypy_core::{AgentId, Envelope, Event, OrderRequest};
use crypy_exchange::sim::{SimConfig, Simulator};

fn templates() -> Templates {
    // A small grid and window, so the test runs quickly in a debug build.
    let trader = DEFAULT_TRADER
        .replace("look_back_bars = 2000", "look_back_bars = 400")
        .replace("evaluate_every_minutes = 60", "evaluate_every_minutes = 120")
        .replace("\"sma_cross fast=5..50/5 slow=20..200/20\",", "\"sma_cross fast=5..20/5 slow=30..90/30\",")
        .replace("\"ema_cross fast=5..50/5 slow=20..200/20\",", "\"ema_cross fast=10 slow=40\",");
    let mut t = Templates { trader: TraderTemplate::parse("trader.toml", &trader).unwrap(), ..Templates::default() };
    t.holder.criteria.min_sharpe = 0.0;
    t
}

/// Runs `bars` candles of the bundled quarter; returns every event in log order.
fn run(bars: usize) -> Vec<(AgentId, Event, Option<usize>)> {
    run_with(templates(), bars, |_| None)
}

/// [`run`] with other templates and a human: before each venue event, `human` may issue a
/// command (agent, text), recorded and handled as an input before the venue event.
fn run_with(
    templates: Templates,
    bars: usize,
    mut human: impl FnMut(&Society) -> Option<(AgentId, String)>,
) -> Vec<(AgentId, Event, Option<usize>)> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../replays/kraken_XBTEUR_15m_2023Q4.csv");
    let mut candles =
        crypy_eventstore::import::read_candles(&file, &"XBT/EUR".parse().unwrap(), "15m".parse().unwrap(), None)
            .unwrap();
    candles.truncate(bars);
    let cfg = SimConfig { latency_ms: 0, jitter_ms: 0, ..SimConfig::default() };
    let mut sim = Simulator::new(cfg.clone(), candles).unwrap();
    let desk: AgentId = "sim:main".parse().unwrap();
    let mut society = Society::new(desk, templates, &Registry::default(), b"test secret".to_vec()).unwrap();

    let mut log: Vec<(AgentId, Event, Option<usize>)> = Vec::new();
    let mut requests: BTreeMap<String, OrderRequest> = BTreeMap::new();
    let mut pending: std::collections::VecDeque<Event> = std::collections::VecDeque::from([
        Event::Capabilities(cfg.capabilities()),
        Event::Markets(Markets { markets: cfg.markets() }),
        Event::Balances(Balances { balances: sim.balances_now() }),
    ]);
    loop {
        let command = if pending.is_empty() { human(&society) } else { None };
        let external = match (pending.pop_front(), command) {
            (Some(e), _) => e,
            (None, Some((agent, command))) => {
                Event::CommandIssued(CommandIssued { agent, command, session: "test".into() })
            }
            (None, None) => match sim.next_now() {
                Some(v) => v.event,
                None => break,
            },
        };
        log.push((desk, external.clone(), None));
        let input_index = log.len() - 1;
        let env = Envelope {
            seq: log.len() as u64,
            run: 1,
            time: sim.now(),
            wall: 0,
            source: desk,
            cause: None,
            event: external,
        };
        let outs: Vec<Out> = society.handle(&env);
        let base = log.len();
        let mut to_venue = Vec::new();
        for o in outs {
            let cause = match o.parent {
                Parent::Input => input_index,
                Parent::Output(i) => base + i,
            };
            if let Event::OrderRequested(r) = &o.event {
                assert!(
                    requests.insert(r.client_id.to_string(), r.clone()).is_none(),
                    "client id reused: {}",
                    r.client_id
                );
            }
            if let Event::OrderApproved(a) = &o.event {
                to_venue.push(requests[a.client_id.as_str()].clone());
            }
            log.push((o.source, o.event, Some(cause)));
        }
        // The executor: approved orders to the venue; what it says back is external.
        for r in to_venue {
            match sim.place_now(&r) {
                Ok(ack) => pending.push_back(Event::OrderAcknowledged(OrderAcknowledged {
                    client_id: r.client_id,
                    venue_order_id: ack.venue_order_id,
                })),
                Err(e) => pending.push_back(Event::OrderFailed(OrderFailed {
                    client_id: r.client_id,
                    error: e.to_string(),
                    retryable: e.is_retryable(),
                })),
            }
        }
    }
    log
}

fn kinds(log: &[(AgentId, Event, Option<usize>)]) -> BTreeMap<&'static str, usize> {
    let mut k = BTreeMap::new();
    for (_, e, _) in log {
        *k.entry(e.kind().name()).or_insert(0) += 1;
    }
    k
}

#[test]
fn the_seeds_initial_configuration_trades_and_keeps_its_lifecycles() {
    let log = run(3000);
    let k = kinds(&log);
    for kind in [
        "agent_spawned",
        "strategy_evaluated",
        "strategy_proposed",
        "proposal_accepted",
        "allocation_granted",
        "entry_decided",
        "order_requested",
        "order_approved",
        "order_filled",
        "agent_retired",
    ] {
        assert!(k.get(kind).copied().unwrap_or(0) > 0, "no {kind} in {k:?}");
    }
    // Spawns: the EUR holder first, then its trader; later generations of both.
    let spawned: Vec<String> = log
        .iter()
        .filter_map(|(_, e, _)| match e {
            Event::AgentSpawned(s) => Some(format!("{}@{}", s.agent, s.generation)),
            _ => None,
        })
        .collect();
    assert_eq!(&spawned[..2], ["EUR@1", "XBT/EUR#1@1"]);
    assert!(spawned.contains(&"EUR@2".to_string()), "a closed position brings a new holder generation: {spawned:?}");
    // A holder retires when its capital is committed, before its trader sells.
    let first_commit =
        log.iter().position(|(_, e, _)| matches!(e, Event::AgentRetired(r) if r.agent.to_string() == "EUR")).unwrap();
    let first_buy_fill = log
        .iter()
        .position(|(_, e, _)| matches!(e, Event::OrderFilled(f) | Event::OrderPartiallyFilled(f) if f.side == crypy_core::Side::Buy))
        .unwrap();
    assert!(first_commit > first_buy_fill);
    // Every derived event names an earlier cause; every approval follows its request.
    for (i, (_, e, cause)) in log.iter().enumerate() {
        if let Some(c) = cause {
            assert!(*c < i, "event {i} ({}) caused by a later one", e.kind());
        }
    }
    let refused: Vec<&str> = log
        .iter()
        .filter_map(|(_, e, _)| if let Event::OrderRefused(r) = e { Some(r.reason.as_str()) } else { None })
        .collect();
    assert!(refused.is_empty(), "the desk refuses none of its own agents' orders here: {refused:?}");
    let approved: BTreeSet<String> = log
        .iter()
        .filter_map(|(_, e, _)| if let Event::OrderApproved(a) = e { Some(a.client_id.to_string()) } else { None })
        .collect();
    let filled: BTreeSet<String> = log
        .iter()
        .filter_map(|(_, e, _)| match e {
            Event::OrderFilled(f) | Event::OrderPartiallyFilled(f) => Some(f.client_id.to_string()),
            _ => None,
        })
        .collect();
    assert!(filled.is_subset(&approved), "only approved orders reach the venue");
}

#[test]
fn the_same_inputs_give_the_same_decisions() {
    assert_eq!(run(1500), run(1500));
}

#[test]
#[ignore]
fn print_a_run() {
    let log = run(3000);
    println!("{:?}", kinds(&log));
    let mut reasons = BTreeMap::new();
    for (_, e, _) in &log {
        if let Event::OrderRefused(r) = e {
            *reasons.entry(r.reason.split(" (").next().unwrap().to_string()).or_insert(0) += 1;
        }
    }
    println!("{reasons:?}");
    for (s, e, _) in
        log.iter().filter(|(_, e, _)| !matches!(e, Event::Candle(_) | Event::StrategyEvaluated(_))).take(40)
    {
        println!(
            "{s} {} {}",
            e.kind().name(),
            serde_json::to_string(&e.data()).unwrap().chars().take(150).collect::<String>()
        );
    }
}

/// What a command input led to: the events recorded right behind it.
fn effects_of<'a>(log: &'a [(AgentId, Event, Option<usize>)], command: &str) -> Vec<&'a Event> {
    let at = log
        .iter()
        .position(|(_, e, _)| matches!(e, Event::CommandIssued(c) if c.command == command))
        .unwrap_or_else(|| panic!("{command} never issued"));
    log[at + 1..].iter().take_while(|(_, _, cause)| cause.is_some()).map(|(_, e, _)| e).collect()
}

#[test]
fn a_human_adjusts_and_exits_a_position_and_is_refused_what_cannot_apply() {
    use crypy_agents::steer::Steer;
    let pair: crypy_core::Pair = "XBT/EUR".parse().unwrap();
    let mut step = 0;
    let mut refusals = Vec::new();
    let log = run_with(templates(), 1500, |society| {
        let t = society.trader(pair)?;
        if t.phase != "in position" {
            return None;
        }
        let close = society.last_close(pair)?;
        let id = t.id;
        step += 1;
        match step {
            1 => {
                refusals.push(society.check(&id, &Steer::Enter).unwrap_err());
                let below = close.value() * rust_decimal::Decimal::new(2, 0);
                refusals.push(
                    society
                        .check(
                            &id,
                            &Steer::Adjust {
                                bound: crypy_agents::steer::Bound::Stop,
                                price: below.try_into().unwrap(),
                            },
                        )
                        .unwrap_err(),
                );
                let refuse = Steer::Refuse { proposal: t.proposal.unwrap(), reason: String::new() };
                refusals.push(society.check(&AgentId::Holder(pair.quote), &refuse).unwrap_err());
                let target = close.value() * rust_decimal::Decimal::new(1001, 3);
                Some((id, format!("adjust target {}", target.round_dp(1))))
            }
            2 => Some((id, "exit".to_string())),
            _ => None,
        }
    });
    assert!(refusals[0].contains("already in a position"), "{refusals:?}");
    assert!(refusals[1].contains("not below the last price"), "{refusals:?}");
    assert!(refusals[2].contains("already traded proposal") || refusals[2].contains("no live holder"), "{refusals:?}");
    // An adjustment changes no order by itself; `exit` sells everything at once.
    let adjust = log.iter().find_map(|(_, e, _)| match e {
        Event::CommandIssued(c) if c.command.starts_with("adjust target") => Some(c.command.clone()),
        _ => None,
    });
    assert!(effects_of(&log, &adjust.unwrap()).is_empty());
    let exit = effects_of(&log, "exit");
    assert!(matches!(exit.first(), Some(Event::OrderRequested(r)) if r.side == crypy_core::Side::Sell), "{exit:?}");
    assert!(matches!(exit.get(1), Some(Event::OrderApproved(_))), "{exit:?}");
}

#[test]
fn a_human_accepts_what_the_criteria_refused() {
    let mut t = templates();
    t.holder.criteria.min_sharpe = 1000.0;
    let mut accepted = None;
    let log = run_with(t, 1500, |society| {
        if accepted.is_some() {
            return None;
        }
        let last = society.proposals().last()?;
        let trader = society.trader(last.pair)?;
        let steer = crypy_agents::steer::Steer::Accept(last.proposal);
        society.check(&AgentId::Holder(last.pair.quote), &steer).ok()?;
        assert_eq!(trader.phase, "evaluating");
        accepted = Some(last.proposal);
        Some((AgentId::Holder(last.pair.quote), steer.to_string()))
    });
    let n = accepted.expect("some proposal was refused by the criteria");
    let effects = effects_of(&log, &format!("accept {n}"));
    assert!(matches!(effects.first(), Some(Event::ProposalAccepted(a)) if a.proposal == n), "{effects:?}");
    assert!(matches!(effects.get(1), Some(Event::AllocationGranted(a)) if a.proposal == n), "{effects:?}");
}
