//! Kraken's WebSocket v1 book (`book-10`) uses the same checksum as v2, sent as the string
//! `"c"` of an update: every recorded checksum must match the book rebuilt from the recorded
//! snapshot and updates (python-kraken-sdk's recording, Apache-2.0).

use crypy_exchange::kraken::book::Book;
use rust_decimal::Decimal;

fn levels(v: Option<&serde_json::Value>) -> Vec<(Decimal, Decimal)> {
    v.and_then(|l| l.as_array())
        .map(|rows| {
            rows.iter()
                .map(|r| (r[0].as_str().unwrap().parse().unwrap(), r[1].as_str().unwrap().parse().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_recorded_v1_checksum_matches_the_rebuilt_book() {
    let text = include_str!("../test_data/kraken/ws_v1_book10_xbtusd_2023-08-30.json");
    let recording: serde_json::Value = serde_json::from_str(text).unwrap();
    let mut book = Book::new(10);
    let snapshot = recording["init"].as_array().unwrap().iter().find(|m| m.is_array()).expect("a snapshot");
    book.snapshot(&levels(snapshot[1].get("bs")), &levels(snapshot[1].get("as")));
    assert_eq!(book.best_bid().unwrap().0.to_string(), "27119.90000");
    let mut checked = 0;
    for message in recording["updates"].as_array().unwrap() {
        // Heartbeats and other events are objects; book updates are arrays whose middle
        // elements are `{"a": …}` and/or `{"b": …, "c": checksum}`.
        let Some(parts) = message.as_array() else { continue };
        let (mut bids, mut asks, mut checksum) = (Vec::new(), Vec::new(), None);
        for part in &parts[1..] {
            if !part.is_object() {
                continue;
            }
            asks.extend(levels(part.get("a")));
            bids.extend(levels(part.get("b")));
            if let Some(c) = part.get("c").and_then(|c| c.as_str()) {
                checksum = Some(c.parse::<u32>().unwrap());
            }
        }
        book.update(&bids, &asks);
        let expected = checksum.expect("every v1 update carries its checksum");
        assert_eq!(book.checksum(5, 8), expected, "after update {checked}: {message}");
        checked += 1;
    }
    assert_eq!(checked, 979, "every recorded update is checked");
}
