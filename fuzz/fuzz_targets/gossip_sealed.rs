//! Gossip packets before authentication: whatever arrives on the gossip port. Opening
//! must refuse every input not sealed under the keyring (a forgery would be a finding),
//! and a member fed the bytes must drop them without changing anything.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use chorus_node::cluster::membership::{
    ClusterKey, GossipSettings, Keyring, MemberIdentity, Membership, seal,
};
use chorus_protocol::NodeId;
use libfuzzer_sys::fuzz_target;

const KEY: ClusterKey = ClusterKey([7; 32]);

fn keyring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(|| Keyring::from_cluster_key(&KEY))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(opened) = seal::open(keyring(), data) {
        panic!("random bytes opened: {opened:?}");
    }
    let identity = MemberIdentity::new(
        NodeId("fuzz".into()),
        "127.0.0.1:7946".parse().unwrap(),
        "127.0.0.1:7000".parse().unwrap(),
        1,
    );
    let mut member = Membership::new(identity, GossipSettings::default(), &KEY, 1);
    assert!(member.handle_packet(data, Duration::from_secs(1)).is_err());
    assert_eq!(member.drain_outputs().count(), 0, "an unopened packet caused output");
});
