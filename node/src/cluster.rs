//! The cluster layer of a node: SWIM membership (foca, sans-IO core plus a thin UDP
//! task), the partition ring computed from the live member set, and the links to peers.
//! The pure parts here are also what `chorus-simulations` drives in simulated time.

pub mod certs;
pub mod drain;
pub mod event_sync;
pub mod gossip;
pub mod key_sync;
pub mod keyring_file;
pub mod links;
pub mod membership;
pub mod placement;
pub mod replication;
pub mod ring;
pub mod routing;
pub mod runtime;
pub mod standing;
pub mod standing_file;
pub mod standing_sync;
pub mod state;

/// Registers the descriptions of the cluster layer's metrics with the installed recorder.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_counter!(
        key_sync::KEYS_SYNCED_TOTAL,
        Unit::Count,
        "API key records and revocations learned from peers (pushes and anti-entropy)."
    );
    describe_counter!(
        replication::REPLICATION_COMMITS,
        Unit::Count,
        "Writes answered after a write quorum of replicas held them."
    );
    describe_counter!(
        replication::REPLICATION_COMMIT_TIMEOUTS,
        Unit::Count,
        "Writes refused because no write quorum held them within the commit timeout."
    );
    describe_counter!(
        replication::REPLICATION_TAKEOVERS,
        Unit::Count,
        "Partitions this node took the lead of (promises, catch-up, a new epoch)."
    );
    describe_counter!(
        replication::REPLICATION_REQUESTS_HELD,
        Unit::Count,
        "Requests that waited for this node to take the lead of their partition, by outcome (settled, bound)."
    );
    describe_counter!(
        replication::REPLICATION_RECORDS_SHIPPED,
        Unit::Count,
        "Log records shipped to followers."
    );
    describe_counter!(
        replication::shed::REPLICATION_SHED,
        Unit::Count,
        "Copies of partitions this node no longer replicates, dropped once the leader held them."
    );
    describe_counter!(
        replication::anti_entropy::ANTI_ENTROPY_CHECKS,
        Unit::Count,
        "Follower copies of a partition compared with the leader's, by outcome (equal, repaired, busy, failed)."
    );
    describe_counter!(
        replication::anti_entropy::ANTI_ENTROPY_RECORDS_REPAIRED,
        Unit::Count,
        "Live records followers dropped because they differed from the leader's (shipped again)."
    );
    describe_counter!(
        replication::handoff::HANDOFF_BYTES,
        Unit::Bytes,
        "Bytes shipped to followers catching up (streams of partitions)."
    );
    describe_counter!(
        replication::handoff::HANDOFF_THROTTLED,
        Unit::Count,
        "Catch-up shipments that waited for the handoff bandwidth cap."
    );
    describe_gauge!(
        replication::handoff::HANDOFF_RECORDS_BEHIND,
        Unit::Count,
        "Records the followers of the partitions this node leads lack."
    );
    describe_gauge!(
        replication::handoff::HANDOFF_COPIES_BEHIND,
        Unit::Count,
        "Follower copies of partitions this node leads that are behind it."
    );
    describe_gauge!(
        replication::REPLICATION_LEADING,
        Unit::Count,
        "Partitions this node leads now."
    );
    describe_counter!(
        state::RING_CHANGES,
        Unit::Count,
        "Placements of the ring since start (member set changes)."
    );
    describe_counter!(
        state::RING_PARTITIONS_MOVED,
        Unit::Count,
        "Partitions whose owner changed, summed over ring placements."
    );
    describe_gauge!(
        state::CLUSTER_MEMBERS,
        Unit::Count,
        "Live members in this node's view, itself included."
    );
    describe_counter!(
        gossip::GOSSIP_BAD_TAG,
        Unit::Count,
        "Gossip packets dropped: they did not open under any key of the keyring."
    );
    describe_counter!(
        gossip::GOSSIP_REPLAYED,
        Unit::Count,
        "Authentic gossip packets dropped as replays."
    );
    describe_counter!(
        gossip::GOSSIP_STALE,
        Unit::Count,
        "Authentic gossip packets dropped: their send time is outside the window."
    );
    describe_counter!(
        gossip::GOSSIP_DECODE_ERRORS,
        Unit::Count,
        "Gossip packets dropped as oversized or undecodable."
    );
    describe_counter!(
        gossip::GOSSIP_PACKETS_IN,
        Unit::Count,
        "Gossip datagrams received."
    );
    describe_counter!(
        gossip::GOSSIP_PACKETS_OUT,
        Unit::Count,
        "Gossip datagrams sent."
    );
}
