//! Decoders allocate within the frame limit of what they decode, not the 16 MiB ceiling,
//! and bound response counts while decoding: what a hostile peer can declare in a few
//! bytes is refused before it is allocated.

use bincode::config;
use chorus_protocol::*;

/// bincode's standard varint encoding of `values`, as the wire has it.
fn wire<T: bincode::Encode>(values: T) -> Vec<u8> {
    bincode::encode_to_vec(values, config::standard()).unwrap()
}

#[test]
fn a_client_frame_declaring_a_string_beyond_the_frame_limit_is_refused_unallocated() {
    // Request id 7, CreateApiKey (tag 4), role, then a name declared 8 MiB long.
    let mut payload = wire((7u64, 4u32));
    payload.extend(encode_payload(&Role::Submit));
    payload.extend(wire(8u64 << 20));
    payload.extend(b"short");
    let limit = FrameLimit::new(1 << 20).unwrap();
    match decode_client_frame(&payload, limit) {
        Err(ClientFrameError::Request {
            request_id: 7,
            error: ErrorCode::Invalid { reason, .. },
        }) => assert!(reason.contains("more data than a frame"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Within the limit the same declaration is only a truncated payload.
    let mut small = wire((7u64, 4u32));
    small.extend(encode_payload(&Role::Submit));
    small.extend(wire(1000u64));
    small.extend(b"short");
    match decode_client_frame(&small, limit) {
        Err(ClientFrameError::Request {
            error: ErrorCode::Invalid { reason, .. },
            ..
        }) => assert!(reason.contains("truncated"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_hello_is_decoded_within_4_kib() {
    // Version 1, then an API key declared 1 MiB long.
    let mut payload = wire(PROTOCOL_VERSION);
    payload.extend(wire(1u64 << 20));
    payload.extend(b"k");
    match decode_hello(&payload) {
        Err(ErrorCode::Invalid { reason, .. }) => {
            assert!(reason.contains("more data than a frame"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let ok = Hello {
        version: PROTOCOL_VERSION,
        api_key: "k".repeat(1000),
        client: "c".into(),
    };
    assert_eq!(decode_hello(&encode_payload(&ok)).unwrap(), ok);
    assert_eq!(FrameLimit::HELLO.get(), HELLO_MAX_BYTES);
}

/// A server frame: request id 1, `Ok`, then the response's tag and `rest`.
fn response_payload(tag: u32, rest: Vec<u8>) -> Vec<u8> {
    let mut payload = wire((1u64, 0u32, tag));
    payload.extend(rest);
    payload
}

#[test]
fn response_counts_are_bounded_while_decoding() {
    let limit = FrameLimit::default();
    // A batch of 1,001 outcomes (the most is 1,000).
    let batch = response_payload(1, wire((MAX_BATCH_ITEMS as u64) + 1));
    let err = decode_server_frame(&batch, limit).unwrap_err().to_string();
    assert!(err.contains("outcomes"), "{err}");
    // A page of 1,001 items.
    let page = response_payload(3, wire(u64::from(MAX_PAGE_LIMIT) + 1));
    let err = decode_server_frame(&page, limit).unwrap_err().to_string();
    assert!(err.contains("items"), "{err}");
    // A ring of 65,537 members.
    let ring = response_payload(5, wire((9u64, 16u16, (MAX_RING_MEMBERS as u64) + 1)));
    let err = decode_server_frame(&ring, limit).unwrap_err().to_string();
    assert!(err.contains("members"), "{err}");
    // A key listing of 10,001 keys (the most a cluster holds is 10,000).
    let keys = response_payload(6, wire((MAX_API_KEYS as u64) + 1));
    let err = decode_server_frame(&keys, limit).unwrap_err().to_string();
    assert!(err.contains("keys"), "{err}");
    // A revoked key whose name is declared longer than a key name may be.
    let mut revoked = wire((1u64, 0u32, 7u32, 1u64, b'a', 0u32));
    revoked.extend(wire((MAX_API_KEY_NAME_BYTES as u64) + 1));
    let err = decode_server_frame(&revoked, limit)
        .unwrap_err()
        .to_string();
    assert!(err.contains("name"), "{err}");
    // An unknown response tag.
    assert!(decode_server_frame(&response_payload(9, vec![]), limit).is_err());
}

#[test]
fn a_server_frame_larger_than_the_announced_limit_cannot_make_the_sdk_allocate_it() {
    // Ok(ApiKeyCreated { key: <declared 8 MiB> }) in a few bytes.
    let payload = response_payload(4, wire(8u64 << 20));
    let err = decode_server_frame(&payload, FrameLimit::default()).unwrap_err();
    assert!(
        matches!(err, bincode::error::DecodeError::LimitExceeded),
        "{err:?}"
    );
}

#[test]
fn responses_still_round_trip_through_the_hand_written_decoders() {
    let ring = RingSnapshot {
        epoch: 3,
        partitions: 2,
        members: vec![RingMember {
            node: NodeId("n1".into()),
            addr: "127.0.0.1:7400".into(),
        }],
        owners: vec![0, 0],
    };
    for response in [
        Response::Ring(ring),
        Response::Batch(vec![Err(ErrorCode::Forbidden)]),
        Response::Page {
            items: vec![],
            next: Some(PageToken(vec![1, 2])),
        },
        Response::ApiKeyCreated {
            key: "k".into(),
            role: Role::Read,
        },
        Response::Item(None),
        Response::ApiKeys(vec![ApiKeyInfo {
            id: "0123456789abcdef".into(),
            role: Role::Submit,
            name: "ingest".into(),
            created_at: 1,
            revoked_at: Some(2),
        }]),
    ] {
        let frame = ServerFrame {
            request_id: 5,
            result: Ok(response),
        };
        let payload = encode_payload(&frame);
        assert_eq!(
            decode_server_frame(&payload, FrameLimit::default()).unwrap(),
            frame
        );
    }
}

#[test]
fn a_functions_page_outside_its_bounds_is_refused_naming_the_field() {
    let field = |result: Result<(), ErrorCode>| match result {
        Err(ErrorCode::Invalid { field, .. }) => field,
        other => panic!("expected Invalid, got {other:?}"),
    };
    assert!(check_functions_page(Some("resize"), MAX_FUNCTIONS_PAGE).is_ok());
    assert!(check_functions_page(None, 1).is_ok());
    assert_eq!(field(check_functions_page(None, 0)), "limit");
    assert_eq!(
        field(check_functions_page(None, MAX_FUNCTIONS_PAGE + 1)),
        "limit"
    );
    assert_eq!(field(check_functions_page(Some(""), 10)), "name");
    let long = "n".repeat(MAX_FUNCTION_NAME_BYTES + 1);
    assert_eq!(field(check_functions_page(Some(&long), 10)), "name");
}
