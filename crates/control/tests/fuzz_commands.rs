//! Fuzzes the terminal's command parser (`lang::parse`, and `lang::words` under it) at every
//! level with arbitrary lines: command names with random arguments, control characters,
//! unbalanced and escaped quotes, and very long lines.
//!
//! Promises: never a panic or a hang; an error is one line of printable text, of bounded
//! length however long the line typed; and a line that parses prints (`Display`, what the
//! log records) as text that parses back to the same command.

use crypy_control::lang::{parse, words, Command, LangError, Level, DEFINITIONS};
use proptest::prelude::*;

/// Longest error message allowed, whatever the line: the message names what was wrong and
/// may quote some of it, never all of a long line.
const MAX_ERROR: usize = 512;

fn levels() -> [Level; 3] {
    [Level::Desk, Level::Invest("EUR".parse().unwrap()), Level::Trade("XBT/EUR".parse().unwrap())]
}

fn command_names() -> Vec<&'static str> {
    DEFINITIONS.iter().map(|d| d.name).collect()
}

/// Words a line may be made of: the commands' own words and arguments, odd characters
/// and arbitrary text.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(command_names()).prop_map(str::to_string),
        2 => prop::sample::select(vec![
            "set", "show", "off", "--kinds", "stop", "target", "candle,order_filled", "XBT/EUR", "EUR", "xbt",
            "7", "-5", "0", "25000.5", "1e400", "79228162514264337593543950336", "18446744073709551616", "\"",
            "'", "\\", "\"\"", "''", "\"a b\"", "'a\"b'", "\"a\\\"b\"", "/", ",", "--", "\u{0}", "\u{1b}[31m",
            "\u{7f}", "\r", "\t", "\u{202e}", "\u{feff}", "ÄB", "help",
        ])
        .prop_map(str::to_string),
        2 => "[a-zA-Z0-9/.,_-]{1,12}",
        1 => "[\\x00-\\x1f\\x7f\"'\\\\ ]{1,4}",
        1 => any::<String>(),
    ]
}

fn line() -> impl Strategy<Value = String> {
    let sep = prop::sample::select(vec![" ", " ", " ", "  ", "\t", "\n", "", "\u{a0}"]);
    prop::collection::vec((word(), sep), 0..8).prop_map(|parts| parts.into_iter().map(|(w, s)| w + s).collect())
}

/// Checks what any line must give at `level`; returns the parsed command, if any.
fn check(level: &Level, line: &str) -> Result<Option<Command>, TestCaseError> {
    match parse(level, line) {
        Ok(Some(command)) => {
            let text = command.to_string();
            prop_assert_eq!(
                parse(level, &text),
                Ok(Some(command.clone())),
                "{:?} parsed as {:?}, printed as {:?}",
                line,
                command,
                text
            );
            Ok(Some(command))
        }
        Ok(None) => {
            prop_assert!(line.trim().is_empty(), "{:?} is not empty but parsed to nothing", line);
            Ok(None)
        }
        Err(e) => {
            check_error(&e, line)?;
            Ok(None)
        }
    }
}

fn check_error(e: &LangError, line: &str) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    prop_assert!(!shown.trim().is_empty(), "empty error for {:?}", line);
    prop_assert!(
        !shown.chars().any(char::is_control),
        "error for {:?} carries a raw control character: {:?}",
        line,
        shown
    );
    prop_assert!(
        shown.len() <= MAX_ERROR,
        "an error of {} bytes for a line of {}: {:.120}…",
        shown.len(),
        line.len(),
        shown
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8000, ..ProptestConfig::default() })]

    /// Lines built from the language's words and odd ones, at every level.
    #[test]
    fn command_like_lines_parse_or_are_explained(line in line()) {
        for level in levels() {
            check(&level, &line)?;
        }
    }

    /// Any string at all.
    #[test]
    fn arbitrary_lines_parse_or_are_explained(line in any::<String>()) {
        for level in levels() {
            check(&level, &line)?;
        }
    }

    /// Quotes, as `words` reads them: a line whose quotes do not close is that error, and
    /// nothing else; balanced ones split the line and never lose a character.
    #[test]
    fn quotes_are_balanced_or_reported(line in "[a-z \"'\\\\]{0,40}") {
        match words(&line) {
            Ok(ws) => {
                let kept: usize = ws.iter().map(|w| w.chars().count()).sum();
                prop_assert!(kept <= line.chars().count());
            }
            Err(e) => prop_assert_eq!(e, LangError::UnterminatedQuote),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    /// Long lines: a command with one long argument, or one long unknown word, up to 64 KiB.
    #[test]
    fn long_lines_give_short_errors(
        name in prop::sample::select(command_names()),
        filler in "[a-z\"' \\x00-\\x1f]{1,8}",
        repeat in 1usize..8192,
    ) {
        let long = filler.repeat(repeat);
        for line in [format!("{name} {long}"), format!("{name} set key {long}"), long.clone(), format!("\"{long}")] {
            for level in levels() {
                check(&level, &line)?;
            }
        }
    }
}

/// Megabyte lines finish (no quadratic suggestion search, no hang), and their errors stay
/// short. Only completion is checked, not how long it took.
#[test]
fn megabyte_lines_are_handled() {
    let mb = 1 << 20;
    let lines = [
        "x".repeat(mb),
        format!("stauts{}", "s".repeat(mb)),
        format!("refuse 7 {}", "r".repeat(mb)),
        format!("watch {}", "XBT/EUR ".repeat(mb / 8)),
        format!("watch --kinds {}", "candle,".repeat(mb / 7)),
        format!("template set key \"{}", "v".repeat(mb)),
        "\"".repeat(mb),
        " ".repeat(mb),
        "\u{1b}".repeat(mb),
    ];
    for line in &lines {
        for level in levels() {
            if let Err(e) = parse(&level, line) {
                let shown = e.to_string();
                assert!(shown.len() <= MAX_ERROR, "an error of {} bytes: {:.120}…", shown.len(), shown);
            }
        }
    }
}
