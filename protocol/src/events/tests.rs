use super::*;
use crate::codec::{decode_value, encode_payload};

fn event(origin: &str, seq: u64) -> Event {
    Event {
        origin: NodeId(origin.into()),
        seq,
        at_ms: 1_000 + seq,
        kind: EventKind::VersionDeprecated {
            function: FunctionRef {
                name: "search".into(),
                version: "1.2".into(),
            },
            by: "ab12".into(),
        },
    }
}

#[test]
fn an_event_round_trips() {
    let event = event("a", 3);
    let back: Event = decode_value(&encode_payload(&event)).unwrap();
    assert_eq!(back, event);
    assert_eq!(back.event_type(), EventType::VersionDeprecated);
}

#[test]
fn every_type_has_a_name_that_parses_back() {
    for t in EventType::ALL {
        assert_eq!(t.as_str().parse::<EventType>().unwrap(), t);
    }
    let error = "flagged".parse::<EventType>().unwrap_err();
    assert!(error.to_string().contains("item_flagged"), "{error}");
}

#[test]
fn a_type_set_holds_what_it_was_made_of() {
    let set: EventTypes = [EventType::ItemFlagged, EventType::UserDeleted]
        .into_iter()
        .collect();
    assert!(set.contains(EventType::ItemFlagged));
    assert!(!set.contains(EventType::RequiresUpdate));
    set.validate().unwrap();
    assert!(EventTypes::all().contains(EventType::UserExported));
    assert!(EventTypes(0).validate().is_err());
    assert!(EventTypes(1 << 20).validate().is_err());
}

#[test]
fn a_cursor_moves_forward_only_and_stays_sorted() {
    let mut cursor = EventCursor::default();
    cursor.advance(&NodeId("b".into()), 4);
    cursor.advance(&NodeId("a".into()), 2);
    cursor.advance(&NodeId("b".into()), 3);
    assert_eq!(cursor.seen(&NodeId("b".into())), 4);
    assert_eq!(cursor.seen(&NodeId("a".into())), 2);
    assert_eq!(cursor.seen(&NodeId("c".into())), 0);
    cursor.validate().unwrap();
    let unsorted = EventCursor(vec![(NodeId("b".into()), 1), (NodeId("a".into()), 1)]);
    assert!(unsorted.validate().is_err());
}

#[test]
fn a_cursor_over_its_bound_is_refused_while_decoding() {
    let long = EventCursor(
        (0..=MAX_EVENT_ORIGINS)
            .map(|i| (NodeId(format!("{i:05}")), 1))
            .collect(),
    );
    assert!(decode_value::<EventCursor>(&encode_payload(&long)).is_err());
}

#[test]
fn a_page_over_its_bound_is_refused_while_decoding() {
    let response = crate::Response::Events {
        events: (1..=u64::from(MAX_EVENTS_PAGE) + 1)
            .map(|seq| event("a", seq))
            .collect(),
        next: None,
    };
    assert!(decode_value::<crate::Response>(&encode_payload(&response)).is_err());
}

#[test]
fn event_fields_are_checked_against_their_bounds() {
    let too_long = EventKind::UserDeleted {
        user_id: "u".repeat(crate::MAX_USER_ID_BYTES + 1),
        items: 1,
        by: "k".into(),
    };
    assert!(too_long.validate().is_err());
    let reasons = EventKind::ItemFlagged {
        item: ItemId::generate(),
        user_id: "u".into(),
        reasons: vec!["r".into(); MAX_EVENT_REASONS + 1],
    };
    assert!(reasons.validate().is_err());
    assert!(event("a", 1).kind.validate().is_ok());
}

#[test]
fn a_cursor_token_reads_back_and_garbage_is_refused() {
    let mut cursor = EventCursor::default();
    cursor.advance(&NodeId("node-1".into()), 12);
    cursor.advance(&NodeId("node-2".into()), 3);
    assert_eq!(EventCursor::from_token(&cursor.to_token()).unwrap(), cursor);
    assert_eq!(
        EventCursor::from_token(&EventCursor::default().to_token()).unwrap(),
        EventCursor::default()
    );
    for bad in ["0", "zz", "ff", "é1"] {
        assert!(EventCursor::from_token(bad).is_err(), "{bad}");
    }
}
