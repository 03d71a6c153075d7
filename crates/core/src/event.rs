//! The language between agents.
//!
//! Every input (market data, account reports, fills, human commands, template changes) and
//! every decision (spawns, evaluations, proposals, allocations, order requests, the desk's
//! verdicts) is an [`Event`]. The log wraps each in an [`Envelope`] that says when, by whom
//! and because of what.
//!
//! Facts are in the past tense (`OrderFilled`, `ProposalRefused`), requests are nouns
//! (`OrderRequested` carries an [`OrderRequest`]). Rare, large payloads (allocations, fills)
//! are boxed so that the common events stay small to move.
//!
//! **Binary compatibility.** The log stores the variant's position, so new variants go at
//! the end of [`Event`] and payload fields never change in place: a change of shape is a new
//! log format version (see `crypy-eventstore`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::money::Money;
use crate::{
    AgentId, Asset, Balance, Candle, Capabilities, ClientOrderId, Fill, Market, OrderRequest, Pair, ParseError, Quote,
    Trade,
};

/// The pair an event is about, if any: lets `crypy log show --pair` and the dataflow's
/// partitioning find it without knowing every payload.
pub trait Subject {
    fn pair(&self) -> Option<&Pair> {
        None
    }
}

macro_rules! events {
    ($( $(#[$doc:meta])* $variant:ident($payload:ty) = $name:literal in $group:ident, )*) => {
        /// One fact or decision. See the module doc for the rules on changing it.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Event {
            $( $(#[$doc])* $variant($payload), )*
        }

        /// The name of an [`Event`]'s variant, without its payload. Its text form is the
        /// snake_case name used by `crypy log show --kind` and in JSON output.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum EventKind {
            $( $variant, )*
        }

        impl EventKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [EventKind] = &[$( EventKind::$variant, )*];

            pub fn name(self) -> &'static str {
                match self { $( EventKind::$variant => $name, )* }
            }

            pub fn group(self) -> EventGroup {
                match self { $( EventKind::$variant => EventGroup::$group, )* }
            }
        }

        impl Event {
            pub fn kind(&self) -> EventKind {
                match self { $( Event::$variant(_) => EventKind::$variant, )* }
            }

            /// The payload alone, serializable (the `data` field of `crypy log show --json`),
            /// with its fields in declaration order.
            pub fn data(&self) -> EventData<'_> {
                EventData(self)
            }

            pub fn pair(&self) -> Option<&Pair> {
                match self { $( Event::$variant(p) => Subject::pair(p), )* }
            }
        }

        impl Serialize for EventData<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self.0 { $( Event::$variant(p) => p.serialize(s), )* }
            }
        }
    };
}

/// The flows of the design, for display and filtering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventGroup {
    Market,
    Account,
    Lifecycle,
    Decision,
    Order,
    Control,
    Template,
}

events! {
    // Market data.
    /// A closed OHLCV bar. The envelope's `time` is the bar's close time.
    Candle(Candle) = "candle" in Market,
    Trade(Trade) = "trade" in Market,
    /// Best bid and ask.
    Quote(Quote) = "quote" in Market,
    // Account.
    Balances(Balances) = "balances" in Account,
    Capabilities(Capabilities) = "capabilities" in Account,
    Markets(Markets) = "markets" in Account,
    // Lifecycle.
    AgentSpawned(AgentSpawned) = "agent_spawned" in Lifecycle,
    AgentRetired(AgentRetired) = "agent_retired" in Lifecycle,
    // Decisions.
    StrategyEvaluated(StrategyEvaluated) = "strategy_evaluated" in Decision,
    StrategyProposed(StrategyProposed) = "strategy_proposed" in Decision,
    ProposalAccepted(ProposalAccepted) = "proposal_accepted" in Decision,
    ProposalRefused(ProposalRefused) = "proposal_refused" in Decision,
    AllocationGranted(Box<Allocation>) = "allocation_granted" in Decision,
    /// A trader with an allocation decided to enter now.
    EntryDecided(EntryDecision) = "entry_decided" in Decision,
    /// A trader with an allocation let the chance go (and retires).
    EntrySkipped(EntrySkipped) = "entry_skipped" in Decision,
    // Orders.
    OrderRequested(OrderRequest) = "order_requested" in Order,
    OrderApproved(OrderApproved) = "order_approved" in Order,
    OrderRefused(OrderRefused) = "order_refused" in Order,
    OrderSent(OrderSent) = "order_sent" in Order,
    OrderAcknowledged(OrderAcknowledged) = "order_acknowledged" in Order,
    /// The order is completely filled by this execution.
    OrderFilled(Box<Fill>) = "order_filled" in Order,
    /// Part of the order filled; `remaining` says what is still open.
    OrderPartiallyFilled(Box<Fill>) = "order_partially_filled" in Order,
    OrderCanceled(OrderCanceled) = "order_canceled" in Order,
    OrderFailed(OrderFailed) = "order_failed" in Order,
    // Control.
    CommandIssued(CommandIssued) = "command_issued" in Control,
    KillSwitchEngaged(KillSwitchEngaged) = "kill_switch_engaged" in Control,
    KillSwitchReleased(KillSwitchReleased) = "kill_switch_released" in Control,
    // Templates.
    TemplateChanged(TemplateChanged) = "template_changed" in Template,
    // Account (declared last: a variant's place is its code in the log).
    /// A venue call failed in a way worth another try (unreachable, timed out, rate limited);
    /// what the desk did about it follows.
    VenueError(VenueError) = "venue_error" in Account,
    /// The simulator's whole configuration for the run (its TOML), recorded at the start so
    /// that the run can be re-run exactly (`crypy replay --into`).
    VenueSettings(VenueSettings) = "venue_settings" in Account,
}

/// See [`Event::data`].
#[derive(Clone, Copy, Debug)]
pub struct EventData<'a>(&'a Event);

impl Event {
    /// The payload as a JSON value (keys sorted); for printing prefer [`Event::data`].
    pub fn data_json(&self) -> serde_json::Value {
        serde_json::to_value(self.data()).expect("event payloads always serialize to JSON")
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EventKind {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        EventKind::ALL.iter().copied().find(|k| k.name() == s).ok_or_else(|| ParseError::Unknown {
            what: "event kind",
            got: s.to_owned(),
            expected: EventKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "),
        })
    }
}

// --- payloads ---------------------------------------------------------------------------

macro_rules! subject_none {
    ($($t:ty),*) => { $( impl Subject for $t {} )* };
}
macro_rules! subject_pair {
    ($($t:ty),*) => { $( impl Subject for $t { fn pair(&self) -> Option<&Pair> { Some(&self.pair) } } )* };
}
/// Payloads used by exactly one variant convert into [`Event`]; a [`Fill`] is either a full
/// or a partial fill, so it must name its variant.
macro_rules! into_event {
    ($($variant:ident),*) => { $( impl From<$variant> for Event { fn from(p: $variant) -> Event { Event::$variant(p) } } )* };
}

subject_pair!(
    Candle,
    Trade,
    Quote,
    StrategyEvaluated,
    StrategyProposed,
    Allocation,
    EntryDecision,
    EntrySkipped,
    OrderRequest,
    Fill
);

// Rare, large payloads are boxed so that every event stays small to move.
impl<T: Subject> Subject for Box<T> {
    fn pair(&self) -> Option<&Pair> {
        (**self).pair()
    }
}
subject_none!(
    Balances,
    Capabilities,
    Markets,
    OrderApproved,
    OrderRefused,
    OrderSent,
    OrderAcknowledged,
    OrderCanceled,
    OrderFailed,
    CommandIssued,
    KillSwitchEngaged,
    KillSwitchReleased,
    VenueError,
    VenueSettings
);
into_event!(
    Candle,
    Trade,
    Quote,
    Balances,
    Capabilities,
    Markets,
    AgentSpawned,
    AgentRetired,
    StrategyEvaluated,
    StrategyProposed,
    ProposalAccepted,
    ProposalRefused,
    OrderApproved,
    OrderRefused,
    OrderSent,
    OrderAcknowledged,
    OrderCanceled,
    OrderFailed,
    CommandIssued,
    KillSwitchEngaged,
    KillSwitchReleased,
    TemplateChanged,
    VenueError,
    VenueSettings
);

impl From<Allocation> for Event {
    fn from(p: Allocation) -> Event {
        Event::AllocationGranted(Box::new(p))
    }
}
impl From<OrderRequest> for Event {
    fn from(p: OrderRequest) -> Event {
        Event::OrderRequested(p)
    }
}

impl Subject for AgentSpawned {
    fn pair(&self) -> Option<&Pair> {
        self.agent.pair()
    }
}
impl Subject for AgentRetired {
    fn pair(&self) -> Option<&Pair> {
        self.agent.pair()
    }
}
impl Subject for ProposalAccepted {
    fn pair(&self) -> Option<&Pair> {
        self.trader.pair()
    }
}
impl Subject for ProposalRefused {
    fn pair(&self) -> Option<&Pair> {
        self.trader.pair()
    }
}
impl Subject for TemplateChanged {
    fn pair(&self) -> Option<&Pair> {
        match &self.scope {
            TemplateScope::Trader(pair) => Some(pair),
            _ => None,
        }
    }
}

/// Every balance the account reported at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances {
    pub balances: Vec<Balance>,
}

/// Every market the venue offers to this account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Markets {
    pub markets: Vec<Market>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSpawned {
    pub agent: AgentId,
    /// Who spawned it: the desk for holders, a holder for traders, none for the desk.
    pub parent: Option<AgentId>,
    /// Lifetime number of this agent name, from 1.
    pub generation: u32,
    /// A holder's ed25519 key for this lifetime: the desk checks allocations against it.
    pub public_key: Option<PublicKey>,
}

/// Why an agent's lifetime ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetireReason {
    /// A holder whose capital went into a position.
    CapitalCommitted,
    /// A trader whose holder retired, or that another trader displaced.
    Superseded,
    /// A trader that decided the chance was gone.
    ChanceGone,
    /// A trader whose position closed.
    PositionClosed,
    /// An allocation expired unused.
    AllocationExpired,
    /// Retired by a human command.
    Human,
    /// The desk stopped.
    Shutdown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRetired {
    pub agent: AgentId,
    pub reason: RetireReason,
    /// Free text for humans (what happened, in numbers).
    pub detail: String,
}

/// How a strategy variant did on a window of past bars. Ratios are fractions (`0.05` is
/// 5 %); this is indicator maths, hence `f64`, except the fees, which are money.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub total_return: f64,
    pub sharpe: f64,
    pub max_drawdown: f64,
    pub win_rate: f64,
    pub trades: u32,
    pub fees: Money,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StrategyEvaluated {
    pub pair: Pair,
    /// The best variant of the grid, e.g. `sma_cross:10:30`: the best by return among those
    /// that pass the trader's threshold, or among all when none does.
    pub strategy: String,
    /// Bars in the look-back window.
    pub bars: u32,
    /// How many variants were scored, and how many passed the threshold.
    pub variants: u32,
    pub passing: u32,
    pub metrics: Metrics,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StrategyProposed {
    /// Unique within the data dir; accept/refuse/allocation refer to it.
    pub proposal: u64,
    pub pair: Pair,
    pub strategy: String,
    pub metrics: Metrics,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalAccepted {
    pub proposal: u64,
    pub trader: AgentId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalRefused {
    pub proposal: u64,
    pub trader: AgentId,
    pub reason: String,
}

/// Fixed-size byte strings: hex in text, raw bytes in the log.
macro_rules! byte_string {
    ($(#[$doc:meta])* $name:ident, $len:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub [u8; $len]);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), hex(&self.0))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex(&self.0))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&hex(&self.0))
                } else {
                    s.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::Error;
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        write!(f, "{} bytes ({} hex digits)", $len, 2 * $len)
                    }
                    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<$name, E> {
                        v.try_into().map($name).map_err(|_| E::invalid_length(v.len(), &self))
                    }
                    fn visit_str<E: Error>(self, v: &str) -> Result<$name, E> {
                        if v.len() != 2 * $len || !v.is_ascii() {
                            return Err(E::invalid_value(serde::de::Unexpected::Str(v), &self));
                        }
                        let mut out = [0u8; $len];
                        for (i, byte) in out.iter_mut().enumerate() {
                            *byte = u8::from_str_radix(&v[2 * i..2 * i + 2], 16)
                                .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))?;
                        }
                        Ok($name(out))
                    }
                }
                if d.is_human_readable() {
                    d.deserialize_str(V)
                } else {
                    d.deserialize_bytes(V)
                }
            }
        }
    };
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

byte_string!(
    /// An ed25519 signature.
    Signature,
    64
);
byte_string!(
    /// An ed25519 public key.
    PublicKey,
    32
);

/// A holder's grant of capital to a trader: the "validation stamp" the desk verifies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// Unique within the data dir; orders name it.
    pub id: u64,
    pub proposal: u64,
    pub holder: AgentId,
    pub trader: AgentId,
    pub pair: Pair,
    pub asset: Asset,
    /// The most the trader may commit, in `asset`.
    pub amount: Money,
    /// Event time (ms) after which the desk refuses orders under this allocation.
    pub expires_at: i64,
    /// Never reused by a holder: a replayed authorization is refused.
    pub nonce: u64,
    /// The holder's ed25519 signature over the fields above.
    pub signature: Signature,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryDecision {
    pub allocation: u64,
    pub pair: Pair,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrySkipped {
    pub allocation: u64,
    pub pair: Pair,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderApproved {
    pub client_id: ClientOrderId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRefused {
    pub client_id: ClientOrderId,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSent {
    pub client_id: ClientOrderId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderAcknowledged {
    pub client_id: ClientOrderId,
    pub venue_order_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCanceled {
    pub client_id: ClientOrderId,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFailed {
    pub client_id: ClientOrderId,
    pub error: String,
    /// Whether the same request (same client id) may be sent again.
    pub retryable: bool,
}

/// A failed venue call the desk tries again (or gives up on, saying so in `then`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VenueError {
    /// Which call: `next_event`, `place <client id>`, `lookup <client id>`, `cancel <client id>`.
    pub call: String,
    pub error: String,
    /// 1 for the first failure of this call in a row.
    pub attempt: u32,
    /// What the desk does next: `retry`, `look up`, `give up`…
    pub then: String,
}

/// A venue's settings as text (the simulator's TOML configuration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VenueSettings {
    pub text: String,
}

/// A human command accepted by an agent's terminal, logged before it takes effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandIssued {
    pub agent: AgentId,
    pub command: String,
    /// Which terminal session it came from (peer address or `local`).
    pub session: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitchEngaged {
    pub reason: String,
    /// How many open orders were canceled because of it.
    pub canceled: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitchReleased {
    pub reason: String,
}

/// Which template a change applies to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateScope {
    Desk,
    Holder(Asset),
    Trader(Pair),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateChanged {
    pub scope: TemplateScope,
    /// Dotted path of the field, e.g. `criteria.min_sharpe`.
    pub key: String,
    /// TOML text of the old value; `None` when the key is new.
    pub old: Option<String>,
    /// TOML text of the new value; `None` when the key is removed.
    pub new: Option<String>,
    /// The evidence: who or what changed it and why.
    pub reason: String,
}

// --- envelope ---------------------------------------------------------------------------

/// An event on its way into the log: everything but the `seq`, which only the log assigns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// The desk lifetime that produced it: 1, 2, … per data dir; 0 for data imported
    /// outside any desk lifetime.
    pub run: u32,
    /// Event time: exchange or simulator time, ms since the Unix epoch.
    pub time: i64,
    /// Wall-clock time at ingest, ms since the Unix epoch. The only field that differs
    /// between two runs on the same inputs.
    pub wall: i64,
    pub source: AgentId,
    /// The seq of the event that caused this one.
    pub cause: Option<u64>,
    pub event: Event,
}

/// An event as the log holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Assigned by the log: contiguous from 1.
    pub seq: u64,
    pub run: u32,
    pub time: i64,
    pub wall: i64,
    pub source: AgentId,
    pub cause: Option<u64>,
    pub event: Event,
}

impl Envelope {
    pub fn new(seq: u64, e: NewEvent) -> Self {
        Envelope { seq, run: e.run, time: e.time, wall: e.wall, source: e.source, cause: e.cause, event: e.event }
    }

    pub fn kind(&self) -> EventKind {
        self.event.kind()
    }

    /// One line of `crypy log show --json`: an object with `seq, run, time, wall, source,
    /// kind, cause, data`, in that order.
    pub fn to_json_line(&self) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            seq: u64,
            run: u32,
            time: i64,
            wall: i64,
            source: AgentId,
            kind: &'static str,
            cause: Option<u64>,
            data: EventData<'a>,
        }
        let line = Line {
            seq: self.seq,
            run: self.run,
            time: self.time,
            wall: self.wall,
            source: self.source,
            kind: self.kind().name(),
            cause: self.cause,
            data: self.event.data(),
        };
        serde_json::to_string(&line).expect("events always serialize to JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_unique_snake_case_names() {
        let mut names: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
        assert!(names.iter().all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), EventKind::ALL.len());
        assert_eq!("order_requested".parse::<EventKind>().unwrap(), EventKind::OrderRequested);
        let err = "ordr_requested".parse::<EventKind>().unwrap_err().to_string();
        assert!(err.contains("order_requested"), "{err}");
    }

    #[test]
    fn serde_names_match_kind_names() {
        // The JSON key of each variant must be its kind name, or `--kind` and `data` drift.
        let sig = Signature([7; 64]);
        let json = serde_json::to_value(Event::KillSwitchReleased(KillSwitchReleased { reason: "x".into() })).unwrap();
        assert!(json.get("kill_switch_released").is_some(), "{json}");
        let text = serde_json::to_string(&sig).unwrap();
        assert_eq!(serde_json::from_str::<Signature>(&text).unwrap(), sig);
    }
}
