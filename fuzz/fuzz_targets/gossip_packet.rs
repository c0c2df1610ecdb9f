//! Gossip packets after authentication: a body sealed under the cluster's key, as a
//! member holding the key (or a bug in one) could send. The envelope decoder, the roster
//! sync, the join handshake, down notices, foca's own decoding and Lifeguard's
//! inspection all see it; none may panic or allocate beyond the packet's bounds.
#![no_main]

use std::time::Duration;

use chorus_node::cluster::membership::{
    ClusterKey, GossipSettings, Keyring, MemberIdentity, Membership, Sealer, codec::BincodeCodec,
    envelope,
};
use chorus_protocol::NodeId;
use libfuzzer_sys::fuzz_target;

const KEY: ClusterKey = ClusterKey([7; 32]);

fuzz_target!(|data: &[u8]| {
    let _ = envelope::decode(data, &BincodeCodec::new());
    let identity = MemberIdentity::new(
        NodeId("fuzz".into()),
        "127.0.0.1:7946".parse().unwrap(),
        "127.0.0.1:7000".parse().unwrap(),
        1,
    );
    let settings = GossipSettings::default();
    if data.len() + chorus_node::cluster::membership::SEAL_OVERHEAD > settings.max_packet_size as usize {
        return;
    }
    let mut member = Membership::new(identity, settings, &KEY, 1);
    let now = Duration::from_secs(1);
    let packet = Sealer::new(99).seal(
        &Keyring::from_cluster_key(&KEY),
        now.as_millis() as u64,
        &[data],
    );
    let _ = member.handle_packet(&packet, now);
    let _ = member.drain_outputs().count();
});
