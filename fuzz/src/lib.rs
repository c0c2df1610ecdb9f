//! # chorus-fuzz
//!
//! The bodies of the fuzz targets, one function per target: each feeds arbitrary bytes
//! to one decoder exactly as the node or the SDK does, and checks what must hold of
//! whatever it accepts. `fuzz_targets/NAME.rs` hands libFuzzer's input to `NAME`; the
//! stable-Rust smoke test `node/tests/fuzz_smoke.rs` includes this file and replays
//! seeded random and mutated inputs through the same functions, so CI exercises every
//! target without nightly.
//!
//! A body panics only when an invariant breaks (a crash is a finding); a refused input
//! is the expected outcome for almost every input.
//!
//! Depends only on the crates under test; never on libFuzzer, so that it also builds as
//! a module of a stable test.

use chorus_protocol::{
    FRAME_HEADER_LEN, FrameLimit, MAX_FRAME_CEILING, decode_client_frame, decode_hello,
    decode_server_frame, encode_payload, encode_value,
};

/// A target's body: one input, a panic on a finding.
pub type Body = fn(&[u8]);

/// The fuzz targets by name, for the smoke test.
pub const TARGETS: &[(&str, Body)] = &[
    ("client_frame", client_frame),
    ("hello", hello),
    ("server_frame", server_frame),
    ("control_request", control_request),
    ("config_file", config_file),
    ("log_segment", log_segment),
];

/// A client frame's payload as the node's stream reader passes it on (after the
/// length prefix), decoded within the default frame limit. Whatever decodes re-encodes
/// to bytes that decode to the same encoding (compared as bytes: an `f64` NaN is not
/// equal to itself).
pub fn client_frame(data: &[u8]) {
    let limit = FrameLimit::default();
    // The head reader runs on every frame, before the full decoder, as the server does.
    let head = chorus_protocol::peek_submit(data);
    let Ok(frame) = decode_client_frame(data, limit) else {
        return;
    };
    let submitted = match &frame.request {
        chorus_protocol::Request::Submit(item) => Some((false, item)),
        chorus_protocol::Request::Routed {
            request: chorus_protocol::RoutedRequest::Submit(item),
            ..
        } => Some((true, item)),
        _ => None,
    };
    assert_eq!(
        head.map(|h| (h.request_id, h.routed, h.user_id, h.tier)),
        submitted.map(|(routed, item)| (
            frame.request_id,
            routed,
            item.user_id.as_str(),
            item.tier
        )),
        "the head reader and the decoder disagree"
    );
    let _ = frame.request.validate_shape();
    let _ = (frame.request.kind(), frame.request.tier());
    let _ = frame.request.required_role();
    let mut first = Vec::new();
    encode_value(&frame, ceiling(), &mut first).expect("a decoded frame encodes");
    let again = decode_client_frame(&first[FRAME_HEADER_LEN..], limit)
        .expect("the encoding of a decoded frame decodes");
    let mut second = Vec::new();
    encode_value(&again, ceiling(), &mut second).expect("and encodes again");
    assert_eq!(first, second, "client frame round trip");
}

/// A hello's payload, decoded within the hello limit; its `Debug` output does not
/// depend on the key at all (a substring check would be fooled by a client name that
/// contains the key: the first finding of this target, a harness bug).
pub fn hello(data: &[u8]) {
    let Ok(hello) = decode_hello(data) else {
        return;
    };
    let other_key = chorus_protocol::Hello {
        api_key: format!("{}x", hello.api_key),
        ..hello.clone()
    };
    assert_eq!(
        format!("{hello:?}"),
        format!("{other_key:?}"),
        "the key shows in Debug"
    );
    let bytes = encode_payload(&hello);
    let again = decode_hello(&bytes).expect("the encoding of a decoded hello decodes");
    assert_eq!(encode_payload(&again), bytes, "hello round trip");
}

/// A server frame's payload as the SDK decodes it, within the default frame limit.
pub fn server_frame(data: &[u8]) {
    let limit = FrameLimit::default();
    let Ok(frame) = decode_server_frame(data, limit) else {
        return;
    };
    let _ = format!("{frame:?}");
    let bytes = encode_payload(&frame);
    let again =
        decode_server_frame(&bytes, limit).expect("the encoding of a decoded frame decodes");
    assert_eq!(encode_payload(&again), bytes, "server frame round trip");
}

/// One control-socket request line (the listener has already capped its length; the
/// parser caps it again).
pub fn control_request(data: &[u8]) {
    use chorus_node::control::protocol::parse_request;
    let Ok(request) = parse_request(data) else {
        return;
    };
    let line = serde_json::to_vec(&request).expect("a parsed request serialises");
    assert_eq!(
        parse_request(&line).expect("a serialised request parses"),
        request,
        "control request round trip"
    );
}

/// A config file's bytes: size cap, UTF-8, TOML, the schema and `validate()`.
pub fn config_file(data: &[u8]) {
    if let Ok(config) = chorus_node::config::NodeConfig::from_file_bytes(data) {
        config
            .validate()
            .expect("a loaded config is valid, by construction");
        let _ = (config.frame_limit(), config.control_socket());
    }
}

/// A partition-log segment as recovery reads it: every record the scan returns lies
/// within the bytes and re-encodes to exactly them, its body decodes (or is refused) as a
/// stored item within the record limit; the index's fixed-size values are read too.
pub fn log_segment(data: &[u8]) {
    use chorus_actors::store::decode_item;
    use chorus_actors::store::log::record::{encode_record, scan};
    use chorus_actors::store::log::{Locator, LogPosition};
    let (found, _) = scan(data);
    for (offset, record) in found {
        let bytes = data
            .get(offset..offset + record.len)
            .expect("a scanned record lies within the segment");
        let mut again = Vec::new();
        encode_record(record.header, record.body, &mut again);
        assert_eq!(again, bytes, "a scanned record re-encodes to its bytes");
        let _ = decode_item(record.body);
    }
    let _ = (Locator::from_bytes(data), LogPosition::from_bytes(data));
}

fn ceiling() -> FrameLimit {
    FrameLimit::new(MAX_FRAME_CEILING).expect("the ceiling is a valid limit")
}
