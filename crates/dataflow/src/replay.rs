//! `crypy replay --verify`: feeds a recorded log's external events through fresh agents,
//! run by run, and compares what they derive with what the log recorded right behind each
//! input: same source, same event, same cause, same time.
//!
//! Each run's templates are read from the `template_changed` events that open it, and
//! holder keys are re-derived from the data dir's secret, so a log verifies on its own.

use std::collections::VecDeque;

use crypy_agents::society::{Parent, Society};
use crypy_agents::strategy::Registry;
use crypy_agents::template::{DeskTemplate, HolderTemplate, Templates, TraderTemplate};
use crypy_core::event::TemplateScope;
use crypy_core::{AgentId, Envelope, Event};
use thiserror::Error;

use crate::is_external;

/// One mismatch between what the agents derive and what the log holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub seq: u64,
    /// What the agents derive now (a JSON line), or `None` when they derive nothing here.
    pub expected: Option<String>,
    /// What the log holds (a JSON line), or `None` when the log lacks it.
    pub found: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayReport {
    pub runs: u32,
    /// External events fed to the agents.
    pub inputs: u64,
    /// Derived events compared.
    pub compared: u64,
    pub differences: Vec<Difference>,
}

impl ReplayReport {
    pub fn is_ok(&self) -> bool {
        self.differences.is_empty()
    }
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error(transparent)]
    Log(#[from] crypy_eventstore::Error),
    #[error("run {run}: {source}")]
    Templates { run: u32, source: crypy_agents::template::TemplateError },
}

struct Expected {
    seq: u64,
    source: AgentId,
    event: Event,
    cause: Option<u64>,
    time: i64,
}

fn line(seq: u64, run: u32, time: i64, source: AgentId, cause: Option<u64>, event: Event) -> String {
    Envelope { seq, run, time, wall: 0, source, cause, event }.to_json_line()
}

/// Verifies every run in `events` (in seq order); stops listing after `max_differences`.
pub fn verify(
    events: impl Iterator<Item = Result<Envelope, crypy_eventstore::Error>>,
    secret: &[u8],
    max_differences: usize,
) -> Result<ReplayReport, ReplayError> {
    let registry = Registry::default();
    let mut report = ReplayReport::default();
    let mut run: Option<u32> = None;
    let mut texts: [Option<String>; 3] = [None, None, None];
    let mut society: Option<Society> = None;
    let mut expected: VecDeque<Expected> = VecDeque::new();
    let differ = |report: &mut ReplayReport, d: Difference| {
        if report.differences.len() < max_differences {
            report.differences.push(d);
        }
    };

    for e in events {
        let e = e?;
        if run != Some(e.run) {
            for x in expected.drain(..) {
                let found = None;
                differ(
                    &mut report,
                    Difference {
                        seq: x.seq,
                        expected: Some(line(x.seq, run.unwrap_or(0), x.time, x.source, x.cause, x.event)),
                        found,
                    },
                );
            }
            run = Some(e.run);
            texts = [None, None, None];
            society = None;
            if e.run > 0 {
                report.runs += 1;
            }
        }
        if e.run == 0 {
            // Imported data, outside any desk lifetime: nothing to derive.
            continue;
        }
        if is_external(e.kind()) {
            for x in expected.drain(..) {
                differ(
                    &mut report,
                    Difference {
                        seq: x.seq,
                        expected: Some(line(x.seq, e.run, x.time, x.source, x.cause, x.event)),
                        found: None,
                    },
                );
            }
            report.inputs += 1;
            if let (Event::TemplateChanged(t), None) = (&e.event, &society) {
                if t.scope == TemplateScope::Desk {
                    let slot = ["desk.toml", "holder.toml", "trader.toml"].iter().position(|k| *k == t.key);
                    if let Some(i) = slot {
                        texts[i] = t.new.clone();
                    }
                }
            }
            if society.is_none() && !matches!(e.event, Event::TemplateChanged(_)) {
                let templates = templates_of(e.run, &texts)?;
                let desk = e.source;
                society = Some(
                    Society::new(desk, templates, &registry, secret.to_vec())
                        .map_err(|source| ReplayError::Templates { run: e.run, source })?,
                );
            }
            let Some(s) = society.as_mut() else { continue };
            let base = e.seq + 1;
            for (i, o) in s.handle(&e).into_iter().enumerate() {
                let cause = Some(match o.parent {
                    Parent::Input => e.seq,
                    Parent::Output(j) => base + j as u64,
                });
                expected.push_back(Expected {
                    seq: base + i as u64,
                    source: o.source,
                    event: o.event,
                    cause,
                    time: e.time,
                });
            }
        } else {
            report.compared += 1;
            let found = Some(line(e.seq, e.run, e.time, e.source, e.cause, e.event.clone()));
            match expected.pop_front() {
                Some(x) => {
                    let same = x.source == e.source
                        && x.event == e.event
                        && x.cause == e.cause
                        && x.time == e.time
                        && x.seq == e.seq;
                    if !same {
                        differ(
                            &mut report,
                            Difference {
                                seq: e.seq,
                                expected: Some(line(x.seq, e.run, x.time, x.source, x.cause, x.event)),
                                found,
                            },
                        );
                    }
                }
                None => differ(&mut report, Difference { seq: e.seq, expected: None, found }),
            }
        }
    }
    for x in expected.drain(..) {
        differ(
            &mut report,
            Difference {
                seq: x.seq,
                expected: Some(line(x.seq, run.unwrap_or(0), x.time, x.source, x.cause, x.event)),
                found: None,
            },
        );
    }
    Ok(report)
}

fn templates_of(run: u32, texts: &[Option<String>; 3]) -> Result<Templates, ReplayError> {
    let err = |source| ReplayError::Templates { run, source };
    let defaults = Templates::default();
    Ok(Templates {
        desk: match &texts[0] {
            Some(t) => DeskTemplate::parse("desk.toml", t).map_err(err)?,
            None => defaults.desk,
        },
        holder: match &texts[1] {
            Some(t) => HolderTemplate::parse("holder.toml", t).map_err(err)?,
            None => defaults.holder,
        },
        trader: match &texts[2] {
            Some(t) => TraderTemplate::parse("trader.toml", t).map_err(err)?,
            None => defaults.trader,
        },
    })
}
