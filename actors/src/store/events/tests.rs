use chorus_protocol::{EventType, ItemId, UpdateReason, UpdateReasons};

use super::*;

fn open() -> (tempfile::TempDir, Events) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    (dir, Events::open(&db).unwrap())
}

fn node(name: &str) -> NodeId {
    NodeId(name.into())
}

fn search(version: &str) -> FunctionRef {
    FunctionRef {
        name: "search".into(),
        version: version.into(),
    }
}

fn deleted(user: &str) -> EventKind {
    EventKind::UserDeleted {
        user_id: user.into(),
        items: 3,
        by: "key1".into(),
    }
}

fn flagged() -> EventKind {
    EventKind::ItemFlagged {
        item: ItemId::generate(),
        user_id: "u".into(),
        reasons: vec!["pii".into()],
    }
}

#[test]
fn an_origin_numbers_its_events_from_one_without_gaps() {
    let (_dir, events) = open();
    let first = events.record(&node("a"), 100, vec![deleted("u1")]).unwrap();
    let next = events
        .record(&node("a"), 50, vec![deleted("u2"), deleted("u3")])
        .unwrap();
    assert_eq!(first[0].seq, 1);
    assert_eq!(next.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    // A clock that went back does not put a later event before an earlier one.
    assert!(next.iter().all(|e| e.at_ms == 100));
    assert_eq!(events.heads().unwrap(), [(node("a"), 3)]);
}

#[test]
fn merging_is_idempotent_and_a_gap_holds_the_head_back() {
    let (_dir, source) = open();
    let made = source
        .record(
            &node("a"),
            10,
            vec![deleted("1"), deleted("2"), deleted("3")],
        )
        .unwrap();
    let (_dir2, copy) = open();
    assert_eq!(copy.merge(vec![made[2].clone()]).unwrap(), 1);
    assert_eq!(copy.heads().unwrap(), []);
    let (seen, _) = copy
        .follow(&EventCursor::default(), EventTypes::all(), 10)
        .unwrap();
    assert!(seen.is_empty(), "event 3 is not offered before 1 and 2");
    assert_eq!(copy.merge(made.clone()).unwrap(), 2);
    assert_eq!(copy.merge(made.clone()).unwrap(), 0);
    assert_eq!(copy.heads().unwrap(), [(node("a"), 3)]);
}

#[test]
fn a_follower_resumes_from_its_cursor_with_nothing_missed_and_nothing_twice() {
    let (_dir, events) = open();
    let mut all = Vec::new();
    for round in 0..5u64 {
        for origin in ["a", "b", "c"] {
            let kind = if round % 2 == 0 {
                flagged()
            } else {
                deleted(origin)
            };
            all.extend(
                events
                    .record(&node(origin), 1_000 + round, vec![kind])
                    .unwrap(),
            );
        }
    }
    let mut cursor = EventCursor::default();
    let mut read = Vec::new();
    loop {
        let (page, next) = events.follow(&cursor, EventTypes::all(), 4).unwrap();
        if page.is_empty() {
            break;
        }
        read.extend(page);
        cursor = next;
    }
    let key = |e: &Event| (e.origin.clone(), e.seq);
    let mut want: Vec<_> = all.iter().map(key).collect();
    let mut got: Vec<_> = read.iter().map(key).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    // A new event after the end is read once, from the cursor reached.
    let late = events
        .record(&node("b"), 2_000, vec![deleted("x")])
        .unwrap();
    let (page, _) = events.follow(&cursor, EventTypes::all(), 100).unwrap();
    assert_eq!(page, late);
}

#[test]
fn a_filtered_follow_moves_the_cursor_past_what_it_skips() {
    let (_dir, events) = open();
    events
        .record(&node("a"), 1, vec![flagged(), flagged(), deleted("u")])
        .unwrap();
    let only_deleted: EventTypes = [EventType::UserDeleted].into_iter().collect();
    let (page, cursor) = events
        .follow(&EventCursor::default(), only_deleted, 10)
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(cursor.seen(&node("a")), 3);
}

#[test]
fn a_listing_by_time_pages_through_a_range_by_type() {
    let (_dir, events) = open();
    for t in 0..30u64 {
        let kind = if t % 3 == 0 { deleted("u") } else { flagged() };
        events.record(&node("a"), 1_000 + t, vec![kind]).unwrap();
    }
    let only_deleted: EventTypes = [EventType::UserDeleted].into_iter().collect();
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let (page, next) = events
            .page(only_deleted, Some(1_003), Some(1_027), after.as_ref(), 2)
            .unwrap();
        seen.extend(page.iter().map(|e| e.at_ms));
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [1_003, 1_006, 1_009, 1_012, 1_015, 1_018, 1_021, 1_024]
    );
}

#[test]
fn the_latest_event_sets_a_versions_status_whatever_the_order_they_arrive_in() {
    let (_dir, a) = open();
    let made = a
        .record(
            &node("a"),
            10,
            vec![
                EventKind::VersionDeprecated {
                    function: search("1.0"),
                    by: "k".into(),
                },
                EventKind::CurrentVersion {
                    function: search("1.1"),
                    by: "k".into(),
                },
                EventKind::RequiresUpdate {
                    function: search("1.1"),
                    reasons: UpdateReasons(vec![UpdateReason::LowRating {
                        mean: 2.0,
                        over: 60,
                    }]),
                },
            ],
        )
        .unwrap();
    let later = a
        .record(
            &node("a"),
            20,
            vec![
                EventKind::VersionActivated {
                    function: search("1.0"),
                    by: "k".into(),
                },
                EventKind::CurrentVersion {
                    function: search("1.2"),
                    by: "k".into(),
                },
            ],
        )
        .unwrap();
    let (_dir2, b) = open();
    b.merge(later).unwrap();
    b.merge(made).unwrap();
    for events in [&a, &b] {
        let status = events.function_status(&["search".into()]).unwrap();
        assert_eq!(
            status,
            [FunctionStatus {
                name: "search".into(),
                current: Some("1.2".into()),
                deprecated: vec![],
                requires_update: vec!["1.1".into()],
            }]
        );
        assert!(events.requires_update(&search("1.1")).unwrap());
        assert!(!events.requires_update(&search("1.0")).unwrap());
    }
}

#[test]
fn a_function_whose_name_extends_another_keeps_its_own_status() {
    let (_dir, events) = open();
    let other = FunctionRef {
        name: "search2".into(),
        version: "1".into(),
    };
    events
        .record(
            &node("a"),
            1,
            vec![EventKind::VersionDeprecated {
                function: other,
                by: "k".into(),
            }],
        )
        .unwrap();
    let status = events.function_status(&["search".into()]).unwrap();
    assert!(status[0].deprecated.is_empty());
}

#[test]
fn an_event_over_its_bounds_is_refused_and_one_from_a_peer_is_dropped() {
    let (_dir, events) = open();
    let long = deleted(&"u".repeat(1_000));
    assert!(matches!(
        events.record(&node("a"), 1, vec![long.clone()]),
        Err(StoreError::Invalid { .. })
    ));
    let from_peer = Event {
        origin: node("b"),
        seq: 1,
        at_ms: 1,
        kind: long,
    };
    assert_eq!(events.merge(vec![from_peer]).unwrap(), 0);
}

#[test]
fn adding_events_moves_the_signal() {
    let (_dir, events) = open();
    let signal = events.subscribe();
    events.record(&node("a"), 1, vec![deleted("u")]).unwrap();
    assert!(signal.has_changed().unwrap());
}

#[test]
fn a_keys_privacy_spend_is_the_sum_of_its_events_on_every_member() {
    let (_dir, a) = open();
    let spend = |key: &str, epsilon: f64| EventKind::PrivacySpent {
        key_id: key.into(),
        epsilon,
    };
    let first = a
        .record(&node("a"), 1, vec![spend("k1", 0.5), spend("k2", 1.0)])
        .unwrap();
    let (_dir2, b) = open();
    let second = b.record(&node("b"), 2, vec![spend("k1", 0.25)]).unwrap();
    a.merge(second.clone()).unwrap();
    b.merge(first.clone()).unwrap();
    b.merge(first).unwrap();
    for events in [&a, &b] {
        assert!((events.privacy_spent("k1").unwrap() - 0.75).abs() < 1e-9);
        assert!((events.privacy_spent("k2").unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(events.privacy_spent("k3").unwrap(), 0.0);
    }
}
