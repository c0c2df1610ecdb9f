//! The client protocol's encodings, kept: every message this release's clients and
//! servers send (a hello, a frame of each request, a frame of each response and of
//! errors), encoded once and kept in `tests/fixtures/client-v{N}.txt` as `name hex`
//! lines. A release must keep decoding the encodings of the versions it says it
//! supports (`SUPPORTED_VERSIONS`), so that clients and nodes of the release before it
//! keep working during a rolling upgrade; an encoding that changes by accident fails
//! here. `CHORUS_WRITE_WIRE_FIXTURES=1` writes the file afresh for a deliberate change.

use chorus_protocol::{
    ApiKeyInfo, ClientFrame, Enrichment, ErrorCode, Event, EventCursor, EventKind, EventPosition,
    EventType, EventTypes, ExecutionMetrics, FrameLimit, FunctionRef, FunctionStatus,
    FunctionVersion, Grouping, Hello, Insight, InsightQuery, InsightRow, Item, ItemFacts, ItemId,
    Kind, NodeId, PageToken, Receipt, Request, Response, RingMember, RingSnapshot, Role,
    RoutedRequest, ServerFrame, Status, StoredItem, Tier, UpdateReason, UpdateReasons,
    VersionChange, VersionStats, decode_client_frame, decode_hello, decode_server_frame,
    encode_payload,
};

const CLIENT_V1: &str = include_str!("fixtures/client-v1.txt");

fn item(n: u8) -> Item {
    Item {
        id: ItemId(0x0190_0000_0000_1234_5678_9abc_def0_1200 + u128::from(n)),
        user_id: format!("user-{n}"),
        kind: Kind::Rating,
        rating: Some(4),
        text: "kept".into(),
        tags: vec!["a".into(), "b".into()],
        tier: Tier::Priority,
        function: Some(FunctionRef {
            name: "search".into(),
            version: "1.2.0".into(),
        }),
        metrics: Some(ExecutionMetrics {
            success_rate: 0.5,
            avg_duration_ms: 12.25,
            error_rate: 0.5,
        }),
        client_ts: 1_765_000_000_000,
    }
}

fn receipt(n: u8) -> Receipt {
    Receipt {
        id: item(n).id,
        status: Status::Flagged {
            reasons: vec!["spam".into()],
        },
        alignment_score: Some(0.75),
        owner: NodeId("node-1".into()),
        replicas: vec![NodeId("node-1".into()), NodeId("node-2".into())],
        stored_at: 1_765_000_000_123,
        enrichment: Enrichment::Skipped {
            reason: "shed".into(),
        },
    }
}

fn key_info() -> ApiKeyInfo {
    ApiKeyInfo {
        id: "0123456789abcdef".into(),
        role: Role::Read,
        name: "reader".into(),
        created_at: 1_765_000_000_000,
        revoked_at: Some(1_765_000_000_999),
    }
}

fn requests() -> Vec<(&'static str, Request)> {
    vec![
        ("submit", Request::Submit(item(1))),
        ("submit_batch", Request::SubmitBatch(vec![item(1), item(2)])),
        ("get", Request::Get(item(1).id)),
        (
            "list_by_user",
            Request::ListByUser {
                user_id: "user-1".into(),
                after: Some(PageToken(vec![1, 2, 3])),
                limit: 50,
            },
        ),
        (
            "create_api_key",
            Request::CreateApiKey {
                role: Role::Submit,
                name: "app".into(),
            },
        ),
        ("ring_snapshot", Request::RingSnapshot),
        (
            "routed_submit",
            Request::Routed {
                epoch: 77,
                request: RoutedRequest::Submit(item(3)),
            },
        ),
        (
            "routed_list",
            Request::Routed {
                epoch: 78,
                request: RoutedRequest::ListByUser {
                    user_id: "user-3".into(),
                    after: None,
                    limit: 10,
                },
            },
        ),
        ("list_api_keys", Request::ListApiKeys),
        (
            "revoke_api_key",
            Request::RevokeApiKey {
                id: "0123abcd".into(),
            },
        ),
        (
            "functions",
            Request::Functions {
                name: Some("search".into()),
                after: Some(FunctionRef {
                    name: "search".into(),
                    version: "1.0.0".into(),
                }),
                limit: 50,
            },
        ),
        (
            "events",
            Request::Events {
                types: [EventType::RequiresUpdate, EventType::UserDeleted]
                    .into_iter()
                    .collect(),
                since_ms: Some(1_765_000_000_000),
                until_ms: None,
                after: Some(EventPosition {
                    at_ms: 1_765_000_000_500,
                    origin: NodeId("node-1".into()),
                    seq: 7,
                }),
                limit: 100,
            },
        ),
        (
            "follow_events",
            Request::FollowEvents {
                types: [EventType::RequiresUpdate, EventType::ItemFlagged]
                    .into_iter()
                    .collect::<EventTypes>(),
                cursor: EventCursor(vec![(NodeId("node-1".into()), 7)]),
                limit: 100,
                wait_ms: 20_000,
            },
        ),
        (
            "change_version",
            Request::ChangeVersion {
                function: FunctionRef {
                    name: "search".into(),
                    version: "1.2.0".into(),
                },
                change: VersionChange::Deprecate,
            },
        ),
        (
            "function_status",
            Request::FunctionStatus {
                names: vec!["search".into()],
            },
        ),
        (
            "review_queue",
            Request::ReviewQueue {
                after: Some(PageToken(vec![4, 5])),
                limit: 20,
            },
        ),
        (
            "review",
            Request::Review {
                user_id: "user-1".into(),
                id: item(1).id,
                approve: false,
            },
        ),
        (
            "delete_user",
            Request::DeleteUser {
                user_id: "user-1".into(),
            },
        ),
        (
            "export_user",
            Request::ExportUser {
                user_id: "user-1".into(),
                after: Some(PageToken(vec![7])),
                limit: 1000,
            },
        ),
        (
            "insights",
            Request::Insights(InsightQuery {
                function: None,
                group: Grouping {
                    kind: true,
                    day: true,
                    ..Grouping::default()
                },
                days: Some((20_400, 20_430)),
                epsilon: Some(0.5),
            }),
        ),
    ]
}

fn event() -> Event {
    Event {
        origin: NodeId("node-1".into()),
        seq: 8,
        at_ms: 1_765_000_000_600,
        kind: EventKind::RequiresUpdate {
            function: FunctionRef {
                name: "search".into(),
                version: "1.2.0".into(),
            },
            reasons: UpdateReasons(vec![UpdateReason::LowRating {
                mean: 2.0,
                over: 60,
            }]),
        },
    }
}

fn responses() -> Vec<(&'static str, Result<Response, ErrorCode>)> {
    let stored = StoredItem {
        item: item(1),
        receipt: receipt(1),
    };
    vec![
        ("receipt", Ok(Response::Receipt(receipt(1)))),
        (
            "batch",
            Ok(Response::Batch(vec![
                Ok(receipt(1)),
                Err(ErrorCode::RateLimited {
                    retry_after_ms: 250,
                }),
            ])),
        ),
        ("item", Ok(Response::Item(Some(Box::new(stored.clone()))))),
        ("no_item", Ok(Response::Item(None))),
        (
            "page",
            Ok(Response::Page {
                items: vec![stored],
                next: Some(PageToken(vec![9])),
            }),
        ),
        (
            "api_key_created",
            Ok(Response::ApiKeyCreated {
                key: "chorus_secret".into(),
                role: Role::Admin,
            }),
        ),
        (
            "ring",
            Ok(Response::Ring(RingSnapshot {
                epoch: 5,
                partitions: 4,
                members: vec![
                    RingMember {
                        node: NodeId("node-1".into()),
                        addr: "127.0.0.1:7400".into(),
                    },
                    RingMember {
                        node: NodeId("node-2".into()),
                        addr: "127.0.0.2:7400".into(),
                    },
                ],
                owners: vec![0, 1, 1, 0],
            })),
        ),
        ("api_keys", Ok(Response::ApiKeys(vec![key_info()]))),
        ("api_key_revoked", Ok(Response::ApiKeyRevoked(key_info()))),
        (
            "functions",
            Ok(Response::Functions {
                versions: vec![FunctionVersion {
                    function: FunctionRef {
                        name: "search".into(),
                        version: "1.2.0".into(),
                    },
                    stats: {
                        let mut stats = VersionStats::default();
                        stats.add(&ItemFacts {
                            rating: Some(2),
                            metrics: Some((500_000, 12_250)),
                        });
                        stats
                    },
                    requires_update: UpdateReasons(vec![UpdateReason::LowRating {
                        mean: 2.0,
                        over: 60,
                    }]),
                }],
                next: None,
                covered: (1024, 1024),
            }),
        ),
        (
            "events",
            Ok(Response::Events {
                events: vec![event()],
                next: Some(event().position()),
            }),
        ),
        (
            "followed",
            Ok(Response::Followed {
                events: vec![event()],
                cursor: EventCursor(vec![(NodeId("node-1".into()), 8)]),
            }),
        ),
        ("event", Ok(Response::Event(event()))),
        (
            "function_status",
            Ok(Response::FunctionStatus(vec![FunctionStatus {
                name: "search".into(),
                current: Some("1.3.0".into()),
                deprecated: vec!["1.0.0".into()],
                requires_update: vec!["1.2.0".into()],
            }])),
        ),
        ("user_deleted", Ok(Response::UserDeleted { items: 10_000 })),
        (
            "insights",
            Ok(Response::Insights(Insight {
                rows: vec![InsightRow {
                    function: Some("search".into()),
                    version: Some("1.2.0".into()),
                    kind: None,
                    tier: None,
                    day: None,
                    items: 60,
                    ratings: [10, 20, 30, 0, 0],
                }],
                covered: (1024, 1024),
                epsilon: Some(0.5),
                budget_remaining: Some(9.5),
            })),
        ),
        (
            "deleted_item",
            Ok(Response::Item(Some(Box::new(StoredItem {
                item: item(2),
                receipt: Receipt {
                    status: Status::Deleted,
                    ..receipt(2)
                },
            })))),
        ),
        (
            "error_invalid",
            Err(ErrorCode::invalid("rating", "9 is outside 1..=5")),
        ),
        (
            "error_unavailable",
            Err(ErrorCode::Unavailable {
                reason: "no quorum".into(),
            }),
        ),
        (
            "error_not_owner",
            Err(ErrorCode::NotOwner {
                owner: NodeId("node-2".into()),
            }),
        ),
    ]
}

fn hello() -> Hello {
    Hello {
        version: 1,
        api_key: "chorus_key".into(),
        client: "chorus-client/1".into(),
    }
}

fn lines() -> Vec<String> {
    let mut out = vec![format!("hello {}", hex::encode(encode_payload(&hello())))];
    for (name, request) in requests() {
        let frame = ClientFrame {
            request_id: 42,
            request,
        };
        out.push(format!(
            "request.{name} {}",
            hex::encode(encode_payload(&frame))
        ));
    }
    for (name, result) in responses() {
        let frame = ServerFrame {
            request_id: 42,
            result,
        };
        out.push(format!(
            "response.{name} {}",
            hex::encode(encode_payload(&frame))
        ));
    }
    out
}

#[test]
fn every_kept_encoding_still_decodes_to_the_same_message() {
    let now = lines();
    if std::env::var_os("CHORUS_WRITE_WIRE_FIXTURES").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/client-v1.txt");
        std::fs::write(path, now.join("\n") + "\n").unwrap();
        return;
    }
    let limit = FrameLimit::default();
    let requests = requests();
    let responses = responses();
    for line in CLIENT_V1.lines() {
        let (name, text) = line.split_once(' ').unwrap();
        let bytes = hex::decode(text).unwrap();
        if name == "hello" {
            assert_eq!(decode_hello(&bytes).unwrap(), hello());
        } else if let Some(name) = name.strip_prefix("request.") {
            let (_, want) = requests.iter().find(|(n, _)| *n == name).unwrap();
            let frame = decode_client_frame(&bytes, limit).unwrap();
            assert_eq!(&frame.request, want, "{name}");
        } else {
            let name = name.strip_prefix("response.").unwrap();
            let (_, want) = responses.iter().find(|(n, _)| *n == name).unwrap();
            let frame = decode_server_frame(&bytes, limit).unwrap();
            // Floats: compare encodings, which are exact.
            assert_eq!(
                encode_payload(&frame.result),
                encode_payload(want),
                "{name}"
            );
        }
    }
    let kept: Vec<&str> = CLIENT_V1.lines().collect();
    assert_eq!(
        kept, now,
        "an encoding changed: a client or node of this version would not read it"
    );
}
