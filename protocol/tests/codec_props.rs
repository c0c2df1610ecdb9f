//! Property tests of the codec: every message round-trips, and no input — random,
//! truncated or oversized — makes a decoder panic or accept garbage silently.

use chorus_protocol::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn limit() -> FrameLimit {
    FrameLimit::new(MAX_FRAME_CEILING).unwrap()
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!(".{{0,{max}}}")).unwrap()
}

fn item() -> impl Strategy<Value = Item> {
    (
        any::<u128>(),
        text(40),
        prop::sample::select(Kind::ALL.to_vec()),
        option::of(any::<u8>()),
        text(300),
        vec(text(10), 0..5),
        prop::sample::select(Tier::ALL.to_vec()),
        option::of((text(10), text(5)).prop_map(|(name, version)| FunctionRef { name, version })),
        option::of(
            (any::<f64>(), any::<f64>(), any::<f64>()).prop_map(|(a, b, c)| ExecutionMetrics {
                success_rate: a,
                avg_duration_ms: b,
                error_rate: c,
            }),
        ),
        any::<u64>(),
    )
        .prop_map(
            |(id, user_id, kind, rating, text, tags, tier, function, metrics, client_ts)| Item {
                id: ItemId(id),
                user_id,
                kind,
                rating,
                text,
                tags,
                tier,
                function,
                metrics,
                client_ts,
            },
        )
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        (text(10), text(20)).prop_map(|(f, r)| ErrorCode::invalid(f, r)),
        Just(ErrorCode::Unauthorized),
        Just(ErrorCode::Forbidden),
        any::<u64>().prop_map(|retry_after_ms| ErrorCode::RateLimited { retry_after_ms }),
        (prop::sample::select(Tier::ALL.to_vec()), any::<u64>()).prop_map(
            |(tier, retry_after_ms)| ErrorCode::Overloaded {
                tier,
                retry_after_ms
            }
        ),
        text(10).prop_map(|dependency| ErrorCode::CircuitOpen { dependency }),
        Just(ErrorCode::Timeout),
        text(10).prop_map(|n| ErrorCode::NotOwner { owner: NodeId(n) }),
        text(10).prop_map(|reason| ErrorCode::Unavailable { reason }),
        vec(any::<u16>(), 0..3).prop_map(|supported| ErrorCode::UnsupportedVersion { supported }),
        any::<u64>().prop_map(|request_id| ErrorCode::Internal { request_id }),
    ]
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Accepted),
        vec(text(10), 0..3).prop_map(|reasons| Status::Flagged { reasons }),
        vec(text(10), 0..3).prop_map(|reasons| Status::Rejected { reasons }),
    ]
}

fn enrichment() -> impl Strategy<Value = Enrichment> {
    prop_oneof![
        Just(Enrichment::NotConfigured),
        Just(Enrichment::Done),
        text(20).prop_map(|reason| Enrichment::Skipped { reason }),
    ]
}

fn receipt() -> impl Strategy<Value = Receipt> {
    (
        any::<u128>(),
        status(),
        option::of(any::<f32>()),
        text(8),
        vec(text(8), 0..3),
        any::<u64>(),
        enrichment(),
    )
        .prop_map(
            |(id, status, alignment_score, owner, replicas, stored_at, enrichment)| Receipt {
                id: ItemId(id),
                status,
                alignment_score,
                owner: NodeId(owner),
                replicas: replicas.into_iter().map(NodeId).collect(),
                stored_at,
                enrichment,
            },
        )
}

fn role() -> impl Strategy<Value = Role> {
    prop::sample::select(vec![Role::Submit, Role::Read, Role::Admin])
}

fn request() -> impl Strategy<Value = Request> {
    let plain = plain_request();
    prop_oneof![
        4 => plain,
        1 => Just(Request::RingSnapshot),
        1 => (any::<u64>(), plain_request().prop_filter_map("routable", |r| {
            RoutedRequest::try_from(r).ok()
        }))
        .prop_map(|(epoch, request)| Request::Routed { epoch, request }),
    ]
}

fn plain_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        item().prop_map(Request::Submit),
        vec(item(), 0..4).prop_map(Request::SubmitBatch),
        any::<u128>().prop_map(|id| Request::Get(ItemId(id))),
        (text(20), option::of(vec(any::<u8>(), 0..40)), any::<u32>()).prop_map(
            |(user_id, after, limit)| {
                Request::ListByUser {
                    user_id,
                    after: after.map(PageToken),
                    limit,
                }
            }
        ),
        (role(), text(20)).prop_map(|(role, name)| Request::CreateApiKey { role, name }),
        Just(Request::ListApiKeys),
        "[0-9a-f]{1,64}".prop_map(|id| Request::RevokeApiKey { id }),
    ]
}

fn key_info() -> impl Strategy<Value = ApiKeyInfo> {
    (
        "[0-9a-f]{16}",
        role(),
        text(20),
        any::<u64>(),
        option::of(any::<u64>()),
    )
        .prop_map(|(id, role, name, created_at, revoked_at)| ApiKeyInfo {
            id,
            role,
            name,
            created_at,
            revoked_at,
        })
}

fn response() -> impl Strategy<Value = Result<Response, ErrorCode>> {
    let stored = || (item(), receipt()).prop_map(|(item, receipt)| StoredItem { item, receipt });
    prop_oneof![
        receipt().prop_map(|r| Ok(Response::Receipt(r))),
        vec(
            prop_oneof![receipt().prop_map(Ok), error_code().prop_map(Err)],
            0..4
        )
        .prop_map(|v| Ok(Response::Batch(v))),
        option::of(stored()).prop_map(|s| Ok(Response::Item(s.map(Box::new)))),
        (vec(stored(), 0..3), option::of(vec(any::<u8>(), 0..20))).prop_map(|(items, next)| Ok(
            Response::Page {
                items,
                next: next.map(PageToken),
            }
        )),
        (text(30), role()).prop_map(|(key, role)| Ok(Response::ApiKeyCreated { key, role })),
        vec(key_info(), 0..4).prop_map(|keys| Ok(Response::ApiKeys(keys))),
        key_info().prop_map(|key| Ok(Response::ApiKeyRevoked(key))),
        error_code().prop_map(Err),
    ]
}

/// Encodes as a frame and decodes it back the way a reader does.
fn frame_payload<T: bincode::Encode>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(value, limit(), &mut out).unwrap();
    let len = read_frame_len(out[..4].try_into().unwrap(), limit()).unwrap();
    assert_eq!(len, out.len() - 4);
    out.split_off(4)
}

/// NaN != NaN, so compare encodings instead of values where floats are involved.
fn same_encoding<T: bincode::Encode>(a: &T, b: &T) -> bool {
    encode_payload(a) == encode_payload(b)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn client_frames_round_trip(request_id in any::<u64>(), request in request()) {
        let frame = ClientFrame { request_id, request };
        let decoded = decode_client_frame(&frame_payload(&frame), FrameLimit::default()).unwrap();
        prop_assert!(same_encoding(&decoded, &frame));
    }

    #[test]
    fn a_submit_head_reads_what_the_full_decoder_reads(request_id in any::<u64>(), request in request()) {
        let payload = frame_payload(&ClientFrame { request_id, request });
        let frame = decode_client_frame(&payload, FrameLimit::default()).unwrap();
        let (routed, submitted) = match &frame.request {
            Request::Submit(item) => (false, Some(item)),
            Request::Routed { request: RoutedRequest::Submit(item), .. } => (true, Some(item)),
            _ => (false, None),
        };
        let head = peek_submit(&payload);
        match submitted {
            Some(item) => prop_assert_eq!(head, Some(SubmitHead {
                request_id,
                routed,
                user_id: item.user_id.as_str(),
                tier: item.tier,
            })),
            None => prop_assert_eq!(head, None),
        }
    }

    #[test]
    fn a_submit_head_of_a_cut_frame_is_a_prefix_of_the_whole(request_id in any::<u64>(), item in item(), cut in any::<prop::sample::Index>()) {
        let payload = frame_payload(&ClientFrame { request_id, request: Request::Submit(item.clone()) });
        let cut = cut.index(payload.len());
        // A cut frame either reads no head or the same head (the tier comes before the cut).
        if let Some(head) = peek_submit(&payload[..cut]) {
            prop_assert_eq!(head.user_id, item.user_id.as_str());
            prop_assert_eq!(head.tier, item.tier);
        }
    }

    #[test]
    fn server_frames_round_trip(request_id in any::<u64>(), result in response()) {
        let frame = ServerFrame { request_id, result };
        let decoded: ServerFrame = decode_value(&frame_payload(&frame)).unwrap();
        prop_assert!(same_encoding(&decoded, &frame));
    }

    #[test]
    fn hellos_round_trip(api_key in text(60), client in text(20)) {
        let hello = Hello { version: PROTOCOL_VERSION, api_key, client };
        prop_assert_eq!(decode_hello(&frame_payload(&hello)).unwrap(), hello);
        let welcome: Result<Welcome, ErrorCode> = Ok(Welcome {
            version: PROTOCOL_VERSION,
            node: NodeId("n".into()),
            role: Role::Admin,
            max_frame: DEFAULT_MAX_FRAME,
        });
        let decoded: Result<Welcome, ErrorCode> = decode_value(&frame_payload(&welcome)).unwrap();
        prop_assert_eq!(decoded, welcome);
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048)) {
        let _ = decode_client_frame(&bytes, FrameLimit::default());
        let _ = peek_submit(&bytes);
        let _ = decode_hello(&bytes);
        let _ = decode_value::<ServerFrame>(&bytes);
        let _ = decode_value::<Result<Welcome, ErrorCode>>(&bytes);
    }

    #[test]
    fn truncated_frames_are_errors(request_id in any::<u64>(), request in request(), cut in any::<prop::sample::Index>()) {
        let payload = frame_payload(&ClientFrame { request_id, request });
        let cut = cut.index(payload.len());
        prop_assert!(decode_client_frame(&payload[..cut], FrameLimit::default()).is_err());
    }

    #[test]
    fn trailing_bytes_are_errors(request_id in any::<u64>(), request in request(), extra in vec(any::<u8>(), 1..8)) {
        let mut payload = frame_payload(&ClientFrame { request_id, request });
        payload.extend(extra);
        let is_request_error = matches!(decode_client_frame(&payload, FrameLimit::default()), Err(ClientFrameError::Request { .. }));
        prop_assert!(is_request_error);
    }

    #[test]
    fn oversized_lengths_are_refused(excess in 1u32..1_000_000) {
        let limit = FrameLimit::default();
        let header = (limit.get() + excess).to_be_bytes();
        let is_too_large = matches!(read_frame_len(header, limit), Err(FrameError::TooLarge { .. }));
        prop_assert!(is_too_large);
    }
}

#[test]
fn an_unsupported_version_is_refused_with_the_supported_list() {
    let hello = Hello {
        version: 99,
        api_key: "k".into(),
        client: "c".into(),
    };
    assert_eq!(
        decode_hello(&frame_payload(&hello)),
        Err(ErrorCode::UnsupportedVersion {
            supported: SUPPORTED_VERSIONS.to_vec()
        })
    );
}

#[test]
fn an_unknown_request_tag_is_an_invalid_request() {
    // request id 7, then variant tag 200 (varint: 0xfb escape is not needed below 251).
    let payload = [7u8, 200];
    match decode_client_frame(&payload, FrameLimit::default()) {
        Err(ClientFrameError::Request {
            request_id: 7,
            error: ErrorCode::Invalid { field, reason },
        }) => {
            assert_eq!(field, "request");
            assert!(reason.contains("200"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_utf8_names_the_field() {
    let item = Item::new("ABC", Kind::Text);
    let mut payload = frame_payload(&ClientFrame {
        request_id: 1,
        request: Request::Submit(item),
    });
    let at = payload.windows(3).position(|w| w == b"ABC").unwrap();
    payload[at] = 0xff;
    match decode_client_frame(&payload, FrameLimit::default()) {
        Err(ClientFrameError::Request {
            error: ErrorCode::Invalid { field, .. },
            ..
        }) => assert_eq!(field, "user_id"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_frame_over_the_limit_is_not_encoded() {
    let mut item = Item::new("u", Kind::Text);
    item.text = "x".repeat(10_000);
    let mut out = vec![1, 2, 3];
    let small = FrameLimit::new(4096).unwrap();
    assert!(matches!(
        encode_value(&item, small, &mut out),
        Err(FrameError::TooLarge { .. })
    ));
    assert_eq!(out, vec![1, 2, 3]);
}

/// The frame that once overflowed a worker's stack: a `Routed` nested 60,000 deep.
fn nested_routed_payload(depth: usize) -> Vec<u8> {
    let mut payload = vec![7u8]; // request id 7
    for _ in 0..depth {
        payload.extend([6u8, 0]); // Routed, epoch 0
    }
    payload.push(5); // RingSnapshot
    payload
}

#[test]
fn a_routed_request_cannot_nest_another() {
    for depth in [2, 60_000] {
        match decode_client_frame(&nested_routed_payload(depth), FrameLimit::default()) {
            Err(ClientFrameError::Request {
                request_id: 7,
                error: ErrorCode::Invalid { field, reason },
            }) => {
                assert_eq!(field, "request");
                assert_eq!(reason, "routed cannot be routed");
            }
            other => panic!("depth {depth}: {other:?}"),
        }
    }
}

#[test]
fn only_submits_batches_and_listings_can_be_routed() {
    let get = [7u8, 6, 0, 2];
    match decode_client_frame(&get, FrameLimit::default()) {
        Err(ClientFrameError::Request {
            error: ErrorCode::Invalid { reason, .. },
            ..
        }) => assert_eq!(reason, "get cannot be routed"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_routed_request_is_encoded_as_when_it_wrapped_a_whole_request() {
    // Before the flat form, `Routed` held a `Box<Request>`: tag 6, the epoch, then the
    // inner request with its own `Request` tag (Submit 0, SubmitBatch 1, ListByUser 3).
    let item = Item::new("alice", Kind::Text);
    let routed = Request::Routed {
        epoch: 42,
        request: RoutedRequest::Submit(item.clone()),
    };
    assert_eq!(
        encode_payload(&routed),
        encode_payload(&(6u32, 42u64, 0u32, item.clone()))
    );
    let batch = Request::Routed {
        epoch: 9,
        request: RoutedRequest::SubmitBatch(vec![item.clone()]),
    };
    assert_eq!(
        encode_payload(&batch),
        encode_payload(&(6u32, 9u64, 1u32, vec![item]))
    );
    let list = Request::Routed {
        epoch: 1,
        request: RoutedRequest::ListByUser {
            user_id: "bob".into(),
            after: Some(PageToken(vec![1, 2])),
            limit: 10,
        },
    };
    assert_eq!(
        encode_payload(&list),
        encode_payload(&(6u32, 1u64, 3u32, "bob", Some(vec![1u8, 2]), 10u32))
    );
}

#[test]
fn counts_are_refused_before_their_elements_are_decoded() {
    // A batch that declares 1,001 items and carries none.
    let mut batch = vec![7u8, 1];
    batch.extend(encode_payload(&1001u64));
    match decode_client_frame(&batch, FrameLimit::default()) {
        Err(ClientFrameError::Request {
            error: ErrorCode::Invalid { field, reason },
            ..
        }) => {
            assert_eq!(field, "items");
            assert!(reason.contains("1001"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // A listing whose page token declares 2^40 bytes.
    let mut list = vec![7u8, 3];
    list.extend(encode_payload(&"bob"));
    list.push(1); // Some
    list.extend(encode_payload(&(1u64 << 40)));
    match decode_client_frame(&list, FrameLimit::default()) {
        Err(ClientFrameError::Request {
            error: ErrorCode::Invalid { field, .. },
            ..
        }) => assert_eq!(field, "after"),
        other => panic!("{other:?}"),
    }
}
