//! The `[cluster]` section: gossip address, seeds, the cluster key and
//! `[cluster.gossip]`. Without it a node runs alone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::cluster::membership::{ClusterKey, GossipSettings, KEY_LEN};
use crate::cluster::replication::ReplicationSettings;

/// How this node takes part in a cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// The UDP address gossip listens on (e.g. `10.0.0.1:7401`).
    pub gossip_listen: SocketAddr,
    /// The gossip address other members send to, if not `gossip_listen` (NAT, a
    /// wildcard listen address).
    #[serde(default)]
    pub gossip_advertise: Option<SocketAddr>,
    /// The QUIC address other members and clients reach this node at, if not `listen`.
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// Gossip addresses of members to join through; empty on a cluster's first node.
    /// Any reachable one suffices.
    #[serde(default)]
    pub seeds: Vec<SocketAddr>,
    /// The cluster key (64 hex digits; `chorus certs init` writes one): every gossip
    /// packet is authenticated with it.
    pub key_file: PathBuf,
    /// Longest a request forwarded to its owner may take, in milliseconds (default 2000).
    #[serde(
        default = "default_forward_timeout_ms",
        deserialize_with = "super::units::millis"
    )]
    pub forward_timeout_ms: u64,
    /// Replicas of each partition, the leader included (default 3; at most 7).
    #[serde(default = "default_replication_factor")]
    pub replication_factor: u8,
    /// Replicas that hold a write before it is acknowledged (default: a majority of
    /// `replication_factor`). Below a majority, two leaders could both acknowledge.
    #[serde(default)]
    pub write_quorum: Option<u8>,
    /// Longest a write waits for its quorum before `Unavailable`, in milliseconds
    /// (default 5000).
    #[serde(
        default = "default_commit_timeout_ms",
        deserialize_with = "super::units::millis"
    )]
    pub commit_timeout_ms: u64,
    /// How long a member declared down keeps its place in its partitions' replica sets,
    /// in milliseconds (default 300000: five minutes). Its partitions are led by their
    /// next replica at once, but their data moves to other members only after this,
    /// so a restart or a false verdict costs no stream of partitions. A copy of a
    /// partition a member no longer replicates is likewise kept this long, unchanged,
    /// before it is shed.
    #[serde(
        default = "default_down_grace_ms",
        deserialize_with = "super::units::millis"
    )]
    pub down_grace_ms: u64,
    /// Time between two anti-entropy checks of a partition replica against its leader,
    /// in milliseconds (default 200; 0 turns anti-entropy off). A check compares the
    /// digests of a partition at rest on both and repairs the follower where they
    /// differ.
    #[serde(
        default = "default_anti_entropy_interval_ms",
        deserialize_with = "super::units::millis"
    )]
    pub anti_entropy_interval_ms: u64,
    /// Bytes per second that streams to followers catching up share on this node, as
    /// their leader (default 67108864: 64 MiB/s; 0: no cap). Shipments that bring a
    /// follower up to date are never held back, so writes keep committing.
    #[serde(
        default = "default_handoff_bytes_per_sec",
        deserialize_with = "super::units::bytes"
    )]
    pub handoff_bytes_per_sec: u64,
    /// Shipments a leader keeps in flight to each follower, each carrying what was
    /// written after the one before (default 4; 1: one at a time, at most 64).
    #[serde(default = "default_shipments_in_flight")]
    pub shipments_in_flight: u8,
    /// How this node gossips (`[cluster.gossip]`).
    #[serde(default)]
    pub gossip: GossipSettings,
}

fn default_forward_timeout_ms() -> u64 {
    2_000
}

fn default_replication_factor() -> u8 {
    3
}

fn default_commit_timeout_ms() -> u64 {
    5_000
}

fn default_down_grace_ms() -> u64 {
    300_000
}

fn default_anti_entropy_interval_ms() -> u64 {
    ReplicationSettings::majority(3)
        .anti_entropy_interval
        .map_or(0, |interval| interval.as_millis() as u64)
}

fn default_shipments_in_flight() -> u8 {
    ReplicationSettings::majority(3).shipments_in_flight as u8
}

fn default_handoff_bytes_per_sec() -> u64 {
    ReplicationSettings::majority(3)
        .handoff_bytes_per_sec
        .unwrap_or(0)
}

impl ClusterSection {
    /// Checks the section; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.gossip
            .validate()
            .map_err(|e| ConfigError::new(format!("cluster.gossip.{}", e.field), e.reason))?;
        if self
            .gossip_advertise
            .unwrap_or(self.gossip_listen)
            .ip()
            .is_unspecified()
        {
            return Err(ConfigError::new(
                "cluster.gossip_advertise",
                "gossip listens on a wildcard address: set the address members send to",
            ));
        }
        super::check_range(
            "cluster.forward_timeout_ms",
            self.forward_timeout_ms,
            10,
            60_000,
        )?;
        super::check_range(
            "cluster.replication_factor",
            u64::from(self.replication_factor),
            1,
            7,
        )?;
        if let Some(quorum) = self.write_quorum {
            super::check_range(
                "cluster.write_quorum",
                u64::from(quorum),
                1,
                u64::from(self.replication_factor),
            )?;
        }
        super::check_range(
            "cluster.commit_timeout_ms",
            self.commit_timeout_ms,
            100,
            60_000,
        )?;
        super::check_range(
            "cluster.down_grace_ms",
            self.down_grace_ms,
            0,
            7 * 24 * 3_600_000,
        )?;
        super::check_range(
            "cluster.handoff_bytes_per_sec",
            self.handoff_bytes_per_sec,
            0,
            1 << 40,
        )?;
        super::check_range(
            "cluster.shipments_in_flight",
            u64::from(self.shipments_in_flight),
            1,
            64,
        )?;
        super::check_range(
            "cluster.anti_entropy_interval_ms",
            self.anti_entropy_interval_ms,
            0,
            3_600_000,
        )?;
        Ok(())
    }

    /// How this node replicates: the factor, the write quorum (a majority unless set),
    /// the commit timeout, anti-entropy's pace, the shipping pipeline's depth and how
    /// long copies left behind are kept.
    pub fn replication(&self) -> ReplicationSettings {
        let factor = usize::from(self.replication_factor);
        let mut settings = ReplicationSettings::majority(factor);
        if let Some(quorum) = self.write_quorum {
            settings.write_quorum = usize::from(quorum);
        }
        settings.commit_timeout = std::time::Duration::from_millis(self.commit_timeout_ms);
        settings.anti_entropy_interval = (self.anti_entropy_interval_ms > 0)
            .then(|| std::time::Duration::from_millis(self.anti_entropy_interval_ms));
        settings.handoff_bytes_per_sec =
            (self.handoff_bytes_per_sec > 0).then_some(self.handoff_bytes_per_sec);
        settings.shipments_in_flight = usize::from(self.shipments_in_flight);
        settings.shed_after = std::time::Duration::from_millis(self.down_grace_ms);
        settings.leader_change_hold = std::time::Duration::from_millis(self.forward_timeout_ms / 2);
        settings
    }

    /// The gossip address other members send to.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_advertise.unwrap_or(self.gossip_listen)
    }

    /// Reads the cluster key, naming the key file on failure.
    pub fn load_key(&self) -> Result<ClusterKey, ConfigError> {
        read_key(&self.key_file)
    }
}

/// Reads a cluster key file: 64 hex digits, surrounding whitespace ignored.
pub fn read_key(path: &Path) -> Result<ClusterKey, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            "cluster.key_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let bytes = hex::decode(text.trim()).map_err(|e| {
        ConfigError::new(
            "cluster.key_file",
            format!("{} is not hex: {e}", path.display()),
        )
    })?;
    let key: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
        ConfigError::new(
            "cluster.key_file",
            format!(
                "{} holds {} bytes, must be {KEY_LEN}",
                path.display(),
                b.len()
            ),
        )
    })?;
    Ok(ClusterKey(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_must_hold_32_hex_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.key");
        std::fs::write(&good, format!("{}\n", "ab".repeat(32))).unwrap();
        assert_eq!(read_key(&good).unwrap(), ClusterKey([0xab; 32]));
        let short = dir.path().join("short.key");
        std::fs::write(&short, "abcd").unwrap();
        assert!(read_key(&short).unwrap_err().reason.contains("2 bytes"));
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "zz".repeat(32)).unwrap();
        assert_eq!(read_key(&bad).unwrap_err().key, "cluster.key_file");
        assert!(read_key(&dir.path().join("missing")).is_err());
    }
}
