//! Link messages: what a peer can put in a forward call and its answer (bounded bincode
//! decoders), and the session bytes the name gate reads before a peer has named itself.
#![no_main]

use chorus_node::cluster::links::gate::{Scan, scan};
use chorus_node::cluster::links::{decode_reply, decode_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_request(data);
    let _ = decode_reply(data);
    // The gate never opens for a name its check refuses, whatever the bytes.
    if let Ok(Scan::Open(end)) = scan(data, 0, &|_| false) {
        panic!("the gate opened at {end} without an accepted name");
    }
    let _ = scan(data, 0, &|name| name == "node-a@chorus");
});
