//! `crypy replay --verify`: feeds a recorded log's external events through fresh agents,
//! run by run, and compares what they derive with what the log recorded right behind each
//! input: same source, same event, same cause, same time.
//!
//! Each run's templates are read from the `template_changed` events that open it, and
//! holder keys are re-derived from the data dir's secret, so a log verifies on its own.

use std::collections::VecDeque;

use crypy_agents::society::{Parent, Society};
use crypy_agents::strategy::Registry;
use crypy_agents::template::{Templates, FILES};
use crypy_core::event::TemplateScope;
use crypy_core::{AgentId, Envelope, Event};
use thiserror::Error;

use crate::host::{Host, Scale};
use crate::is_input;

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
    /// Of which market data (candles, trades, quotes).
    pub market_events: u64,
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

/// A recorded event as the comparison needs it: an input's place (the input itself went to
/// the workers), or a decision whole.
enum Recorded {
    Input { seq: u64, time: i64, run: u32 },
    Decision(Box<Envelope>),
}

/// A decision the agents derived, as the log should hold it; borrowed from what the workers
/// returned, which go back to them to be freed.
struct Expected<'d> {
    seq: u64,
    source: AgentId,
    event: &'d Event,
    cause: Option<u64>,
    time: i64,
}

fn line(seq: u64, run: u32, time: i64, source: AgentId, cause: Option<u64>, event: Event) -> String {
    Envelope { seq, run, time, wall: 0, source, cause, event }.to_json_line()
}

/// Verifies every run in `events` (in seq order), feeding the agents `epoch` external
/// events per dataflow epoch on the workers of `scale`; stops listing differences after
/// `max_differences`.
pub fn verify(
    events: impl Iterator<Item = Result<Envelope, crypy_eventstore::Error>>,
    secret: &[u8],
    epoch: usize,
    scale: &Scale,
    max_differences: usize,
) -> Result<ReplayReport, ReplayError> {
    let mut v = Verifier {
        secret: secret.to_vec(),
        epoch: epoch.max(1),
        scale: Some(scale.clone()),
        max_differences,
        ahead: crate::ahead::Ahead::start(secret, crate::ahead::Reading::Log),
        ..Verifier::default()
    };
    for e in events {
        v.see(e?)?;
    }
    v.flush();
    v.settle_all();
    Ok(v.report)
}

#[derive(Default)]
struct Verifier {
    secret: Vec<u8>,
    epoch: usize,
    scale: Option<Scale>,
    max_differences: usize,
    report: ReplayReport,
    run: Option<u32>,
    texts: [Option<String>; 3],
    /// One set of workers for every run (a cluster forms once); each run gets its society.
    host: Option<Host>,
    /// Whether the current run's society has started.
    started: bool,
    /// The run's templates, recorded before its society could start: they go to the
    /// workers first (their trackers are built from them), as in the recorded run.
    templates_seen: Vec<Envelope>,
    /// The current batch as recorded: inputs fed to the host, and everything in log order.
    batch: Vec<Recorded>,
    inputs_in_batch: usize,
    /// Batches handed to the workers and not compared yet, with their epoch (`None` when
    /// nothing was fed), oldest first.
    in_flight: VecDeque<(Option<u64>, Vec<Recorded>)>,
    /// The holders' keys and signatures the log says the agents will need, prepared on
    /// another thread while they work on earlier epochs.
    ahead: Option<crate::ahead::Ahead>,
}

/// Epochs the workers may have in hand at once: enough that one worker's trackers run ahead
/// while another's society catches up.
const EPOCHS_IN_FLIGHT: usize = 4;

impl Verifier {
    fn differ(&mut self, d: Difference) {
        if self.report.differences.len() < self.max_differences {
            self.report.differences.push(d);
        }
    }

    fn see(&mut self, e: Envelope) -> Result<(), ReplayError> {
        if self.run != Some(e.run) {
            self.flush();
            self.settle_all();
            self.run = Some(e.run);
            self.texts = [None, None, None];
            self.started = false;
            self.templates_seen.clear();
            if e.run > 0 {
                self.report.runs += 1;
            }
        }
        if e.run == 0 {
            // Imported data, outside any desk lifetime: nothing to derive.
            return Ok(());
        }
        if let Some(ahead) = self.ahead.as_mut() {
            ahead.see(&e.event);
        }
        if is_input(&e) {
            if self.inputs_in_batch >= self.epoch {
                self.flush();
            }
            self.report.inputs += 1;
            if e.kind().group() == crypy_core::event::EventGroup::Market {
                self.report.market_events += 1;
            }
            let place = Recorded::Input { seq: e.seq, time: e.time, run: e.run };
            if let (Event::TemplateChanged(t), false) = (&e.event, self.started) {
                if t.scope == TemplateScope::Desk {
                    if let Some(i) = FILES.iter().position(|(name, _)| *name == t.key) {
                        self.texts[i] = t.new.clone();
                    }
                }
                // To the workers once the society starts.
                self.templates_seen.push(e);
                self.batch.push(place);
                return Ok(());
            }
            if !self.started {
                let templates = templates_of(e.run, &self.texts)?;
                let society = Society::new(e.source, templates, &Registry::default(), self.secret.clone())
                    .map_err(|source| ReplayError::Templates { run: e.run, source })?;
                match self.host.as_mut() {
                    Some(host) => host.start_run(society),
                    None => {
                        let scale = self.scale.clone().unwrap_or_else(|| Scale::threads(1));
                        // The workers on threads of their own (even one): this thread
                        // reads and compares while they decide.
                        self.host = Some(Host::beside(society, &scale));
                    }
                }
                self.started = true;
                if let Some(host) = self.host.as_mut() {
                    for t in self.templates_seen.drain(..) {
                        host.push(t);
                        self.inputs_in_batch += 1;
                    }
                }
            }
            if let Some(host) = self.host.as_mut() {
                host.push(e);
                self.inputs_in_batch += 1;
            }
            self.batch.push(place);
        } else {
            self.batch.push(Recorded::Decision(Box::new(e)));
        }
        Ok(())
    }

    /// Closes the epoch and hands it to the workers; compares the oldest epochs in flight.
    fn flush(&mut self) {
        let epoch = match self.host.as_mut() {
            Some(host) if self.inputs_in_batch > 0 => Some(host.submit_epoch()),
            _ => None,
        };
        self.inputs_in_batch = 0;
        let batch = std::mem::take(&mut self.batch);
        self.in_flight.push_back((epoch, batch));
        while self.in_flight.len() > EPOCHS_IN_FLIGHT {
            self.settle_one();
        }
    }

    fn settle_all(&mut self) {
        while !self.in_flight.is_empty() {
            self.settle_one();
        }
    }

    /// Compares what the agents derived in the oldest epoch in flight with what the log holds.
    fn settle_one(&mut self) {
        let Some((epoch, batch)) = self.in_flight.pop_front() else { return };
        let derived = match (epoch, self.host.as_mut()) {
            (Some(epoch), Some(host)) => host.collect(epoch),
            _ => Vec::new(),
        };
        // In seq order, as the batch's inputs are.
        let mut outputs = derived.iter().peekable();
        let mut expected: VecDeque<Expected<'_>> = VecDeque::new();
        for recorded in batch {
            match recorded {
                Recorded::Input { seq, time, run } => {
                    self.missing(&mut expected, run);
                    while outputs.next_if(|(s, _)| *s < seq).is_some() {}
                    let Some((_, outs)) = outputs.next_if(|(s, _)| *s == seq) else { continue };
                    let base = seq + 1;
                    for (i, o) in outs.iter().enumerate() {
                        let cause = Some(match o.parent {
                            Parent::Input => seq,
                            Parent::Output(j) => base + j as u64,
                        });
                        expected.push_back(Expected {
                            seq: base + i as u64,
                            source: o.source,
                            event: &o.event,
                            cause,
                            time,
                        });
                    }
                }
                Recorded::Decision(e) => {
                    self.report.compared += 1;
                    let x = expected.pop_front();
                    let same = x.as_ref().is_some_and(|x| {
                        x.source == e.source
                            && *x.event == e.event
                            && x.cause == e.cause
                            && x.time == e.time
                            && x.seq == e.seq
                    });
                    if !same {
                        let expected = x.map(|x| line(x.seq, e.run, x.time, x.source, x.cause, x.event.clone()));
                        let found = Some(line(e.seq, e.run, e.time, e.source, e.cause, e.event));
                        self.differ(Difference { seq: e.seq, expected, found });
                    }
                }
            }
        }
        self.missing(&mut expected, self.run.unwrap_or(0));
        if let Some(host) = self.host.as_ref() {
            host.discard(derived);
        }
    }

    /// Decisions the agents derive that the log lacks.
    fn missing(&mut self, expected: &mut VecDeque<Expected<'_>>, run: u32) {
        for x in expected.drain(..) {
            let d = Difference {
                seq: x.seq,
                expected: Some(line(x.seq, run, x.time, x.source, x.cause, x.event.clone())),
                found: None,
            };
            self.differ(d);
        }
    }
}

/// The run's templates: what it recorded, the default for what it did not.
fn templates_of(run: u32, texts: &[Option<String>; 3]) -> Result<Templates, ReplayError> {
    let text = |i: usize| texts[i].clone().unwrap_or_else(|| FILES[i].1.to_string());
    Templates::parse_texts(&[text(0), text(1), text(2)], std::path::Path::new(""))
        .map_err(|source| ReplayError::Templates { run, source })
}
