//! Human steering the agents act on: the commands that change a holder's or a trader's
//! course, in the canonical text a `command_issued` event records, so that a replay of the
//! log steers the agents exactly as the human did.
//!
//! Queries (`status`, `strategies`, …) are recorded too, for the audit, but change nothing:
//! their text does not parse here. Template settings are not commands but
//! `template_changed` events ([`crate::template::set_field`]).

use std::fmt;
use std::str::FromStr;

use crypy_core::Price;

/// Which side of a position `adjust` moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    Stop,
    Target,
}

/// A command that changes what an agent does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Steer {
    /// Holder: grant an allocation to a proposal its criteria refused, or that waits.
    Accept(u64),
    /// Holder: refuse a waiting proposal, or take back an allocation not yet used.
    Refuse { proposal: u64, reason: String },
    /// Trader with an allocation: enter now, whatever its variant says.
    Enter,
    /// Trader in a position: sell now.
    Exit,
    /// Trader in a position: move the stop-loss or take-profit to an absolute price.
    Adjust { bound: Bound, price: Price },
}

impl fmt::Display for Steer {
    /// The canonical text; a refusal's reason is the rest of the line, unquoted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Steer::Accept(n) => write!(f, "accept {n}"),
            Steer::Refuse { proposal, reason } if reason.is_empty() => write!(f, "refuse {proposal}"),
            Steer::Refuse { proposal, reason } => write!(f, "refuse {proposal} {reason}"),
            Steer::Enter => f.write_str("enter"),
            Steer::Exit => f.write_str("exit"),
            Steer::Adjust { bound: Bound::Stop, price } => write!(f, "adjust stop {price}"),
            Steer::Adjust { bound: Bound::Target, price } => write!(f, "adjust target {price}"),
        }
    }
}

/// Text that is not a steering command (a query, or anything else).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotSteering;

impl FromStr for Steer {
    type Err = NotSteering;

    fn from_str(s: &str) -> Result<Self, NotSteering> {
        let mut words = s.splitn(3, ' ');
        let number = |w: Option<&str>| w.and_then(|w| w.parse::<u64>().ok()).ok_or(NotSteering);
        match words.next() {
            Some("accept") => {
                let n = number(words.next())?;
                match words.next() {
                    None => Ok(Steer::Accept(n)),
                    Some(_) => Err(NotSteering),
                }
            }
            Some("refuse") => {
                let proposal = number(words.next())?;
                Ok(Steer::Refuse { proposal, reason: words.next().unwrap_or("").to_string() })
            }
            Some("enter") if words.next().is_none() => Ok(Steer::Enter),
            Some("exit") if words.next().is_none() => Ok(Steer::Exit),
            Some("adjust") => {
                let bound = match words.next() {
                    Some("stop") => Bound::Stop,
                    Some("target") => Bound::Target,
                    _ => return Err(NotSteering),
                };
                let price = words.next().and_then(|p| p.parse::<Price>().ok()).ok_or(NotSteering)?;
                Ok(Steer::Adjust { bound, price })
            }
            _ => Err(NotSteering),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_text_round_trips() {
        let cases = [
            Steer::Accept(7),
            Steer::Refuse { proposal: 3, reason: String::new() },
            Steer::Refuse { proposal: 3, reason: "too risky, \"really\"".into() },
            Steer::Enter,
            Steer::Exit,
            Steer::Adjust { bound: Bound::Stop, price: "41000.5".parse().unwrap() },
            Steer::Adjust { bound: Bound::Target, price: "50000".parse().unwrap() },
        ];
        for s in cases {
            assert_eq!(s.to_string().parse::<Steer>(), Ok(s.clone()), "{s}");
        }
        for query in ["status", "strategies", "enter now", "accept x", "adjust stop -1", "template show"] {
            assert_eq!(query.parse::<Steer>(), Err(NotSteering), "{query}");
        }
    }

    proptest! {
        #[test]
        fn no_text_makes_it_panic(s in ".{0,60}") {
            let _ = s.parse::<Steer>();
        }
    }
}
