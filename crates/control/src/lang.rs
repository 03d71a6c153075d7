//! The command language of the agents' terminals.
//!
//! A line is words separated by spaces; a word with spaces is quoted, `"like this"` (with `\"`
//! and `\\` escapes) or `'like this'` (taken literally). Each level has its commands:
//!
//! | level  | prompt          | commands |
//! |--------|-----------------|----------|
//! | desk   | `sim:main>`     | `status`, `watch`, `balances`, `orders`, `holders`, `limits`, `kill`, `resume`, `template`, `invest` |
//! | invest | `EUR>`          | `status`, `traders`, `proposals`, `criteria`, `accept`, `refuse`, `template`, `trade`, `back` |
//! | trade  | `XBT/EUR>`      | `status`, `strategies`, `position`, `enter`, `adjust`, `exit`, `template`, `back` |
//!
//! and every level has `help [COMMAND]` and `quit`. Help is generated from the definitions
//! below, so it cannot drift from what parses. An unknown command or a bad argument is an
//! error that says what was expected, with the nearest command name when one is close.

use std::fmt::{self, Write as _};

use crypy_core::{Asset, EventKind, Pair, Price};
use thiserror::Error;

/// Where a terminal session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Desk,
    Invest(Asset),
    Trade(Pair),
}

/// A template setting: `key value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: String,
}

/// What `watch` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watch {
    Off,
    On { pairs: Vec<Pair>, kinds: Vec<EventKind> },
}

/// Which side of a position `adjust` moves (the agents' own type: no translation).
pub use crypy_agents::steer::Bound;

/// A parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help(Option<String>),
    Quit,
    Back,
    Status,
    // desk
    Watch(Watch),
    Balances,
    Orders,
    Holders,
    Limits(Option<Setting>),
    Kill,
    Resume,
    Invest(Asset),
    // invest
    Traders,
    Proposals,
    Criteria(Option<Setting>),
    Accept(u64),
    Refuse { proposal: u64, reason: Option<String> },
    Trade(Pair),
    // trade
    Strategies,
    Position,
    Chart,
    Scoreboard,
    Enter,
    Adjust { which: Bound, price: Price },
    Exit,
    // every agent level
    TemplateShow,
    TemplateSet(Setting),
}

/// Why a line is not a command.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LangError {
    #[error("unterminated quote")]
    UnterminatedQuote,
    #[error("unknown command {got:?}{}; type `help` for the commands of this level", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    Unknown { got: String, suggestion: Option<String> },
    #[error("{command}: {message}; usage: {usage}")]
    Usage { command: &'static str, message: String, usage: &'static str },
}

/// One command's definition: its name, the levels it exists at, its usage and help.
#[derive(Debug)]
pub struct Definition {
    pub name: &'static str,
    pub levels: &'static [LevelKind],
    pub usage: &'static str,
    pub help: &'static str,
    /// Lines that must parse (checked by the tests).
    pub examples: &'static [&'static str],
}

/// Levels without their subject, for definitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LevelKind {
    Desk,
    Invest,
    Trade,
}

impl Level {
    pub fn kind(&self) -> LevelKind {
        match self {
            Level::Desk => LevelKind::Desk,
            Level::Invest(_) => LevelKind::Invest,
            Level::Trade(_) => LevelKind::Trade,
        }
    }
}

use LevelKind::{Desk as D, Invest as I, Trade as T};

/// Every command, in the order help lists them.
pub const DEFINITIONS: &[Definition] = &[
    Definition {
        name: "status",
        levels: &[D, I, T],
        usage: "status",
        help: "what this agent is doing now",
        examples: &["status"],
    },
    Definition {
        name: "watch",
        levels: &[D],
        usage: "watch [PAIR…|off] [--kinds KIND,…]",
        help: "print what the desk sees as it happens, filtered by pair and event kind; `watch off` stops",
        examples: &["watch", "watch XBT/EUR", "watch off", "watch XBT/EUR --kinds candle,order_filled"],
    },
    Definition {
        name: "balances",
        levels: &[D],
        usage: "balances",
        help: "the account's balances",
        examples: &["balances"],
    },
    Definition { name: "orders", levels: &[D], usage: "orders", help: "open orders", examples: &["orders"] },
    Definition {
        name: "holders",
        levels: &[D],
        usage: "holders",
        help: "live holders and their capital",
        examples: &["holders"],
    },
    Definition {
        name: "limits",
        levels: &[D],
        usage: "limits [set KEY VALUE]",
        help: "the desk's risk limits; `set` changes one (logged as a template change)",
        examples: &["limits", "limits set max_open_orders 5"],
    },
    Definition {
        name: "kill",
        levels: &[D],
        usage: "kill",
        help: "kill switch: cancel every open order and refuse new ones",
        examples: &["kill"],
    },
    Definition {
        name: "resume",
        levels: &[D],
        usage: "resume",
        help: "release the kill switch",
        examples: &["resume"],
    },
    Definition {
        name: "invest",
        levels: &[D],
        usage: "invest ASSET",
        help: "enter the terminal of the holder of ASSET",
        examples: &["invest EUR"],
    },
    Definition {
        name: "traders",
        levels: &[I],
        usage: "traders",
        help: "this holder's traders",
        examples: &["traders"],
    },
    Definition {
        name: "proposals",
        levels: &[I],
        usage: "proposals",
        help: "proposals and what became of them",
        examples: &["proposals"],
    },
    Definition {
        name: "criteria",
        levels: &[I],
        usage: "criteria [set KEY VALUE]",
        help: "what this holder requires of a proposal; `set` changes one",
        examples: &["criteria", "criteria set min_sharpe 1.5"],
    },
    Definition {
        name: "accept",
        levels: &[I],
        usage: "accept PROPOSAL",
        help: "accept a proposal by number",
        examples: &["accept 12"],
    },
    Definition {
        name: "refuse",
        levels: &[I],
        usage: "refuse PROPOSAL [REASON]",
        help: "refuse a proposal by number, with an optional reason",
        examples: &["refuse 12", "refuse 12 \"too risky today\""],
    },
    Definition {
        name: "trade",
        levels: &[I],
        usage: "trade PAIR",
        help: "enter the terminal of the trader of PAIR",
        examples: &["trade XBT/EUR"],
    },
    Definition {
        name: "strategies",
        levels: &[T],
        usage: "strategies",
        help: "ranked evaluations with their metrics",
        examples: &["strategies"],
    },
    Definition {
        name: "position",
        levels: &[T],
        usage: "position",
        help: "this trader's position",
        examples: &["position"],
    },
    Definition {
        name: "chart",
        levels: &[T],
        usage: "chart",
        help: "a small chart of this pair's price and the desk's equity, as this terminal saw them",
        examples: &["chart"],
    },
    Definition {
        name: "scoreboard",
        levels: &[T],
        usage: "scoreboard",
        help: "every variant this pair's traders proposed this run: accepted, positions, won, lost, realized P&L \
               and its drawdown, with what the pair's template now focuses on and drops",
        examples: &["scoreboard"],
    },
    Definition {
        name: "enter",
        levels: &[T],
        usage: "enter",
        help: "enter a position now, under the allocation",
        examples: &["enter"],
    },
    Definition {
        name: "adjust",
        levels: &[T],
        usage: "adjust stop|target PRICE",
        help: "move the stop-loss or the take-profit",
        examples: &["adjust stop 25000", "adjust target 31000.5"],
    },
    Definition { name: "exit", levels: &[T], usage: "exit", help: "leave the position now", examples: &["exit"] },
    Definition {
        name: "template",
        levels: &[D, I, T],
        usage: "template show | template set KEY VALUE",
        help: "this agent's template; `set` changes a field for its next lifetime",
        examples: &["template show", "template set criteria.min_sharpe 0.8"],
    },
    Definition { name: "back", levels: &[I, T], usage: "back", help: "return to the level above", examples: &["back"] },
    Definition {
        name: "help",
        levels: &[D, I, T],
        usage: "help [COMMAND]",
        help: "the commands of this level, or one in detail",
        examples: &["help", "help watch"],
    },
    Definition {
        name: "quit",
        levels: &[D, I, T],
        usage: "quit",
        help: "close this terminal session",
        examples: &["quit"],
    },
];

/// Splits a line into words, honouring quotes.
pub fn words(line: &str) -> Result<Vec<String>, LangError> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { return Ok(out) };
        let mut word = String::new();
        match first {
            '"' => {
                chars.next();
                loop {
                    match chars.next() {
                        None => return Err(LangError::UnterminatedQuote),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => word.push(c),
                            None => return Err(LangError::UnterminatedQuote),
                        },
                        Some(c) => word.push(c),
                    }
                }
            }
            '\'' => {
                chars.next();
                loop {
                    match chars.next() {
                        None => return Err(LangError::UnterminatedQuote),
                        Some('\'') => break,
                        Some(c) => word.push(c),
                    }
                }
            }
            _ => {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
            }
        }
        out.push(word);
    }
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j])).min(row[j] + 1).min(row[j + 1] + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// How much of what was typed an error may quote back, in bytes: a pasted megabyte must not
/// come back as a megabyte of error.
const QUOTED_BYTES: usize = 40;
const MESSAGE_BYTES: usize = 240;

fn excerpt(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
        text.push('…');
    }
    text
}

fn definition(name: &str, level: LevelKind) -> Option<&'static Definition> {
    DEFINITIONS.iter().find(|d| d.name == name && d.levels.contains(&level))
}

/// Parses one line at `level`. An empty line is `Ok(None)`.
pub fn parse(level: &Level, line: &str) -> Result<Option<Command>, LangError> {
    let words = words(line)?;
    let Some((name, args)) = words.split_first() else { return Ok(None) };
    let name = name.to_ascii_lowercase();
    let Some(def) = definition(&name, level.kind()) else {
        let suggestion = DEFINITIONS
            .iter()
            .filter(|d| d.levels.contains(&level.kind()))
            // The distance is at least the difference in length: this skips the quadratic
            // comparison for a long word (a pasted megabyte took seconds) without changing
            // any suggestion.
            .filter(|d| d.name.chars().count().abs_diff(name.chars().count()) <= 2)
            .map(|d| (distance(&name, d.name), d.name))
            .filter(|(dist, _)| *dist <= 2)
            .min()
            .map(|(_, n)| n.to_string());
        return Err(LangError::Unknown { got: excerpt(name, QUOTED_BYTES), suggestion });
    };
    let usage = |message: String| LangError::Usage {
        command: def.name,
        message: excerpt(message, MESSAGE_BYTES),
        usage: def.usage,
    };
    let none = |cmd: Command| if args.is_empty() { Ok(cmd) } else { Err(usage(format!("unexpected {:?}", args[0]))) };
    let setting = |args: &[String]| -> Result<Option<Setting>, LangError> {
        match args {
            [] => Ok(None),
            [set, key, value] if set == "set" => Ok(Some(Setting { key: key.clone(), value: value.clone() })),
            _ => Err(usage("expected nothing, or `set KEY VALUE`".into())),
        }
    };
    let number = |s: &String| s.parse::<u64>().map_err(|_| usage(format!("{s:?} is not a proposal number")));
    Ok(Some(match def.name {
        "help" => match args {
            [] => Command::Help(None),
            [c] => Command::Help(Some(c.to_ascii_lowercase())),
            _ => return Err(usage("at most one command name".into())),
        },
        "quit" => none(Command::Quit)?,
        "back" => none(Command::Back)?,
        "status" => none(Command::Status)?,
        "balances" => none(Command::Balances)?,
        "orders" => none(Command::Orders)?,
        "holders" => none(Command::Holders)?,
        "kill" => none(Command::Kill)?,
        "resume" => none(Command::Resume)?,
        "traders" => none(Command::Traders)?,
        "proposals" => none(Command::Proposals)?,
        "strategies" => none(Command::Strategies)?,
        "position" => none(Command::Position)?,
        "chart" => none(Command::Chart)?,
        "scoreboard" => none(Command::Scoreboard)?,
        "enter" => none(Command::Enter)?,
        "exit" => none(Command::Exit)?,
        "limits" => Command::Limits(setting(args)?),
        "criteria" => Command::Criteria(setting(args)?),
        "watch" => {
            let mut pairs = Vec::new();
            let mut kinds = Vec::new();
            let mut rest = args.iter();
            let mut off = false;
            while let Some(a) = rest.next() {
                if a == "off" {
                    off = true;
                } else if a == "--kinds" {
                    let list = rest.next().ok_or_else(|| usage("--kinds needs a list".into()))?;
                    for k in list.split(',') {
                        kinds.push(k.parse::<EventKind>().map_err(|e| usage(e.to_string()))?);
                    }
                } else {
                    pairs.push(a.parse::<Pair>().map_err(|e| usage(e.to_string()))?);
                }
            }
            if off {
                if !pairs.is_empty() || !kinds.is_empty() {
                    return Err(usage("`off` takes nothing else".into()));
                }
                Command::Watch(Watch::Off)
            } else {
                Command::Watch(Watch::On { pairs, kinds })
            }
        }
        "invest" => match args {
            [a] => Command::Invest(a.parse().map_err(|e: crypy_core::ParseError| usage(e.to_string()))?),
            _ => return Err(usage("expected one asset".into())),
        },
        "trade" => match args {
            [p] => Command::Trade(p.parse().map_err(|e: crypy_core::ParseError| usage(e.to_string()))?),
            _ => return Err(usage("expected one pair".into())),
        },
        "accept" => match args {
            [n] => Command::Accept(number(n)?),
            _ => return Err(usage("expected one proposal number".into())),
        },
        "refuse" => match args {
            [n] => Command::Refuse { proposal: number(n)?, reason: None },
            [n, reason] => Command::Refuse { proposal: number(n)?, reason: Some(reason.clone()) },
            _ => return Err(usage("expected a proposal number and at most one (quoted) reason".into())),
        },
        "adjust" => match args {
            [which, price] => {
                let which = match which.as_str() {
                    "stop" => Bound::Stop,
                    "target" => Bound::Target,
                    other => return Err(usage(format!("{other:?} is neither `stop` nor `target`"))),
                };
                Command::Adjust {
                    which,
                    price: price.parse().map_err(|e: crypy_core::ParseError| usage(e.to_string()))?,
                }
            }
            _ => return Err(usage("expected `stop` or `target` and a price".into())),
        },
        "template" => match args {
            [show] if show == "show" => Command::TemplateShow,
            [set, key, value] if set == "set" => {
                Command::TemplateSet(Setting { key: key.clone(), value: value.clone() })
            }
            _ => return Err(usage("expected `show` or `set KEY VALUE`".into())),
        },
        other => unreachable!("definition {other} without a parser"),
    }))
}

/// `help` for a level, or for one command.
pub fn help(level: &Level, command: Option<&str>) -> String {
    let kind = level.kind();
    match command {
        Some(name) => match definition(name, kind) {
            Some(d) => format!("{}\n  {}", d.usage, d.help),
            None => format!("no command {name:?} here; `help` lists this level's commands"),
        },
        None => {
            let defs: Vec<&Definition> = DEFINITIONS.iter().filter(|d| d.levels.contains(&kind)).collect();
            let width = defs.iter().map(|d| d.usage.len()).max().unwrap_or(0);
            defs.iter().map(|d| format!("{:<width$}  {}", d.usage, d.help)).collect::<Vec<_>>().join("\n")
        }
    }
}

impl fmt::Display for Command {
    /// The canonical text: what the log records, and parses back to the same command.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = |w: &str| {
            if !w.is_empty() && !w.chars().any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\') {
                w.to_string()
            } else {
                format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
            }
        };
        let setting = |name: &str, s: &Option<Setting>| match s {
            None => name.to_string(),
            Some(s) => format!("{name} set {} {}", q(&s.key), q(&s.value)),
        };
        let text = match self {
            Command::Help(None) => "help".into(),
            Command::Help(Some(c)) => format!("help {}", q(c)),
            Command::Quit => "quit".into(),
            Command::Back => "back".into(),
            Command::Status => "status".into(),
            Command::Watch(Watch::Off) => "watch off".into(),
            Command::Watch(Watch::On { pairs, kinds }) => {
                let mut s = String::from("watch");
                for p in pairs {
                    let _ = write!(s, " {p}");
                }
                if !kinds.is_empty() {
                    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
                    let _ = write!(s, " --kinds {}", names.join(","));
                }
                s
            }
            Command::Balances => "balances".into(),
            Command::Orders => "orders".into(),
            Command::Holders => "holders".into(),
            Command::Limits(s) => setting("limits", s),
            Command::Kill => "kill".into(),
            Command::Resume => "resume".into(),
            Command::Invest(a) => format!("invest {a}"),
            Command::Traders => "traders".into(),
            Command::Proposals => "proposals".into(),
            Command::Criteria(s) => setting("criteria", s),
            Command::Accept(n) => format!("accept {n}"),
            Command::Refuse { proposal, reason: None } => format!("refuse {proposal}"),
            Command::Refuse { proposal, reason: Some(r) } => format!("refuse {proposal} {}", q(r)),
            Command::Trade(p) => format!("trade {p}"),
            Command::Strategies => "strategies".into(),
            Command::Position => "position".into(),
            Command::Chart => "chart".into(),
            Command::Scoreboard => "scoreboard".into(),
            Command::Enter => "enter".into(),
            Command::Adjust { which: Bound::Stop, price } => format!("adjust stop {price}"),
            Command::Adjust { which: Bound::Target, price } => format!("adjust target {price}"),
            Command::Exit => "exit".into(),
            Command::TemplateShow => "template show".into(),
            Command::TemplateSet(s) => format!("template set {} {}", q(&s.key), q(&s.value)),
        };
        f.write_str(&text)
    }
}

impl fmt::Display for Level {
    /// The prompt's name: the desk id is the caller's; holders by asset, traders by pair.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::Desk => f.write_str("desk"),
            Level::Invest(a) => write!(f, "{a}"),
            Level::Trade(p) => write!(f, "{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn levels() -> [Level; 3] {
        [Level::Desk, Level::Invest("EUR".parse().unwrap()), Level::Trade("XBT/EUR".parse().unwrap())]
    }

    #[test]
    fn every_documented_example_parses_at_its_levels() {
        for d in DEFINITIONS {
            for level in levels() {
                if !d.levels.contains(&level.kind()) {
                    continue;
                }
                for ex in d.examples {
                    let parsed = parse(&level, ex);
                    assert!(matches!(parsed, Ok(Some(_))), "{ex:?} at {level}: {parsed:?}");
                }
            }
        }
    }

    #[test]
    fn the_canonical_text_parses_back_to_the_same_command() {
        let mut lines: Vec<String> =
            DEFINITIONS.iter().flat_map(|d| d.examples.iter().map(|e| e.to_string())).collect();
        lines.push(r#"refuse 7 "not \"today\" \\ please""#.into());
        lines.push("template set divert '[\"XBT\"]'".into());
        for level in levels() {
            for line in &lines {
                let Ok(Some(command)) = parse(&level, line) else { continue };
                assert_eq!(parse(&level, &command.to_string()), Ok(Some(command.clone())), "{line:?} → {command}");
            }
        }
    }

    #[test]
    fn commands_and_arguments() {
        let desk = Level::Desk;
        let eur = Level::Invest("EUR".parse().unwrap());
        let xbt = Level::Trade("XBT/EUR".parse().unwrap());
        assert_eq!(parse(&desk, "  ").unwrap(), None);
        assert_eq!(parse(&desk, "invest eur").unwrap(), Some(Command::Invest("EUR".parse().unwrap())));
        assert_eq!(
            parse(&eur, r#"refuse 7 "not \"today\"""#).unwrap(),
            Some(Command::Refuse { proposal: 7, reason: Some("not \"today\"".into()) })
        );
        assert_eq!(
            parse(&xbt, "adjust stop 25000.5").unwrap(),
            Some(Command::Adjust { which: Bound::Stop, price: "25000.5".parse().unwrap() })
        );
        assert_eq!(
            parse(&desk, "watch XBT/EUR --kinds candle,order_filled").unwrap(),
            Some(Command::Watch(Watch::On {
                pairs: vec!["XBT/EUR".parse().unwrap()],
                kinds: vec![EventKind::Candle, EventKind::OrderFilled]
            }))
        );
    }

    #[test]
    fn mistakes_are_explained() {
        let desk = Level::Desk;
        let xbt = Level::Trade("XBT/EUR".parse().unwrap());
        let cases: [(&Level, &str, &str); 8] = [
            (&desk, "stauts", "did you mean `status`"),
            (&desk, "trade XBT/EUR", "unknown command \"trade\""),
            (&xbt, "adjust stp 1", "neither `stop` nor `target`"),
            (&xbt, "adjust stop -5", "price must be positive"),
            (&desk, "kill now", "unexpected \"now\""),
            (&desk, "watch --kinds candel", "candle"),
            (&desk, "invest", "usage: invest ASSET"),
            (&desk, "limits set x", "set KEY VALUE"),
        ];
        for (level, line, needle) in cases {
            let err = parse(level, line).unwrap_err().to_string();
            assert!(err.contains(needle), "{line:?}: {err}");
        }
        assert_eq!(parse(&desk, "status \"open").unwrap_err(), LangError::UnterminatedQuote);
    }

    #[test]
    fn help_lists_only_this_levels_commands() {
        let h = help(&Level::Desk, None);
        assert!(h.contains("kill") && h.contains("invest ASSET") && !h.contains("strategies"));
        assert!(help(&Level::Trade("XBT/EUR".parse().unwrap()), Some("adjust")).contains("adjust stop|target PRICE"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn no_line_makes_the_parser_panic(line in ".{0,80}") {
            for level in levels() {
                let _ = parse(&level, &line);
            }
        }

        #[test]
        fn quoted_words_round_trip(w in "[^\"\\\\]{0,20}") {
            let line = format!("refuse 1 \"{w}\"");
            let parsed = parse(&Level::Invest("EUR".parse().unwrap()), &line).unwrap();
            prop_assert_eq!(parsed, Some(Command::Refuse { proposal: 1, reason: Some(w) }));
        }
    }
}
