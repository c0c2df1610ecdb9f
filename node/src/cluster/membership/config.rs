//! `[cluster.gossip]`: the SWIM timings and the extensions Chorus adds around foca.

use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::envelope;
use super::seal::SEAL_OVERHEAD;

/// Bytes every datagram spends outside foca's payload: the seal and the envelope header.
pub const PACKET_OVERHEAD: usize = SEAL_OVERHEAD + envelope::HEADER_LEN;

/// The smallest datagram limit accepted: below it a header with two long names and a
/// few updates no longer fits.
pub const MIN_PACKET_SIZE: u32 = 512;

/// The largest datagram limit accepted (a UDP payload over IPv4).
pub const MAX_PACKET_SIZE: u32 = 65_507;

/// Retransmissions of each update per order of magnitude of the cluster size
/// (memberlist's `RetransmitMult`).
pub const RETRANSMIT_MULTIPLIER: f64 = 4.0;

/// The highest local-health multiplier accepted: beyond it a probe period of a second
/// would stretch past half a minute and failure detection would effectively stop.
pub const MAX_LHM: u8 = 32;

/// How this node gossips, from `[cluster.gossip]`. Every field has a default; the
/// defaults follow memberlist's LAN profile (as foca's `Config::new_lan` does) for a
/// cluster of [`expected_cluster_size`](Self::expected_cluster_size).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipSettings {
    /// How many members the cluster is expected to have. Scales how often an update is
    /// retransmitted (4·⌈log10(N+1)⌉) and the default suspicion timeout. Default 16.
    pub expected_cluster_size: u32,
    /// Milliseconds between two probes of a random member. Default 1,000: one probe a
    /// second keeps per-node traffic constant and detects a crash in a few seconds.
    #[serde(deserialize_with = "crate::config::units::millis")]
    pub probe_period_ms: u64,
    /// Milliseconds to wait for a direct ack before asking others to probe indirectly;
    /// must be below `probe_period_ms`. Default 500, far above a LAN round trip, so
    /// that only a lost packet or a stalled peer triggers the indirect cycle.
    #[serde(deserialize_with = "crate::config::units::millis")]
    pub probe_rtt_ms: u64,
    /// Milliseconds a suspect has to refute the suspicion before it is declared down.
    /// Default: 4 × max(1, log10 N) probe periods (memberlist's LAN value): long enough
    /// for the suspicion to reach the suspect and its refutation to spread back. With
    /// Lifeguard on this is the *shortest* timeout, reached with enough independent
    /// confirmations.
    #[serde(default, deserialize_with = "crate::config::units::opt_millis")]
    pub suspect_to_down_ms: Option<u64>,
    /// How many members are asked to probe a member that missed its direct ack.
    /// Default 3: enough to route around one bad path without flooding.
    pub num_indirect_probes: u32,
    /// The largest datagram this node sends or accepts, in bytes, tag and envelope
    /// included. Default 1,400: under a 1,500-byte Ethernet MTU with room for IP/UDP
    /// headers and tunnels, so gossip is never fragmented.
    pub max_packet_size: u32,
    /// Milliseconds a down member is remembered before it is forgotten. Default 24 h:
    /// identities are keyed by name, so memory stays bounded by the number of names,
    /// and a long memory keeps stale gossip from resurrecting a dead run.
    #[serde(deserialize_with = "crate::config::units::millis")]
    pub remove_down_after_ms: u64,
    /// Milliseconds between two periodic gossip rounds (updates to
    /// `gossip_fanout` random members besides the probe piggyback). Default 200.
    #[serde(deserialize_with = "crate::config::units::millis")]
    pub periodic_gossip_ms: u64,
    /// Members each periodic gossip round goes to. Default 3.
    pub gossip_fanout: u32,
    /// Milliseconds between two announces to a random member, which discover members
    /// this node missed (and, with roster sync, pull that member's whole table).
    /// Default 30,000.
    #[serde(deserialize_with = "crate::config::units::millis")]
    pub periodic_announce_ms: u64,
    /// Milliseconds between two announces to a random member believed down. Default
    /// 5,000: after a partition heals this is what first crosses the cut (answered with
    /// a down notice, after which one side renews and is taken back), and a member that
    /// missed a renewal learns the new run from it, so it bounds how long views take to
    /// converge. It costs one datagram per member per interval while any member is
    /// held down (a crashed one, for `remove_down_after_ms`).
    #[serde(deserialize_with = "crate::config::units::millis")]
    pub periodic_announce_down_ms: u64,
    /// Lifeguard: scale probing by local health and shorten suspicion with independent
    /// confirmations. Default on: it cuts false positives from a slow or overloaded node.
    pub lifeguard: bool,
    /// Lifeguard: the highest local-health multiplier; probe period and probe timeout
    /// stretch up to (max+1)×. Default 8 (memberlist's value).
    pub lhm_max: u8,
    /// Lifeguard: the longest suspicion, as a multiple of `suspect_to_down_ms`, used when
    /// nobody else confirms it. Default 6 (memberlist's `SuspicionMaxTimeoutMult`).
    pub suspicion_max_multiplier: u32,
    /// Lifeguard: independent confirmations after which a suspicion runs only the
    /// shortest timeout. Default 2 (memberlist's `SuspicionMult` − 2).
    pub suspicion_confirmations: u32,
    /// Send a member that announces itself our whole membership table, so it sees the
    /// full roster at once instead of over many gossip rounds. Default on.
    pub roster_sync: bool,
    /// Milliseconds before the same member is sent another roster sync. Default 5,000.
    #[serde(deserialize_with = "crate::config::units::millis")]
    pub roster_sync_interval_ms: u64,
    /// Most roster syncs this node sends per `roster_sync_interval_ms`, to all joiners
    /// together. Default 16: a seed facing a mass join serves the first joiners in full
    /// and leaves the rest to gossip instead of flooding the network.
    pub roster_sync_max_per_interval: u32,
    /// Most roster packets sent in one burst: to a joiner when it announces itself, and
    /// in answer to each of its pulls; as a joiner, the window it asks for (at most the
    /// replay guard's 128). A larger table is not cut short: the joiner asks for the key
    /// ranges it is missing a window at a time, the next once the last has arrived, which
    /// paces the transfer by its round trips and recovers lost packets. Default 64.
    pub roster_sync_max_packets: u32,
}

impl Default for GossipSettings {
    fn default() -> Self {
        GossipSettings {
            expected_cluster_size: 16,
            probe_period_ms: 1_000,
            probe_rtt_ms: 500,
            suspect_to_down_ms: None,
            num_indirect_probes: 3,
            max_packet_size: 1_400,
            remove_down_after_ms: 24 * 60 * 60 * 1_000,
            periodic_gossip_ms: 200,
            gossip_fanout: 3,
            periodic_announce_ms: 30_000,
            periodic_announce_down_ms: 5_000,
            lifeguard: true,
            lhm_max: 8,
            suspicion_max_multiplier: 6,
            suspicion_confirmations: 2,
            roster_sync: true,
            roster_sync_interval_ms: 5_000,
            roster_sync_max_per_interval: 16,
            roster_sync_max_packets: 64,
        }
    }
}

/// A `[cluster.gossip]` value out of range; `field` is the key under `cluster.gossip`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster.gossip.{field}: {reason}")]
pub struct GossipSettingsError {
    /// The offending key.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> GossipSettingsError {
    GossipSettingsError {
        field,
        reason: reason.into(),
    }
}

impl GossipSettings {
    /// Checks every field once, at start.
    pub fn validate(&self) -> Result<(), GossipSettingsError> {
        let positive = [
            (
                "expected_cluster_size",
                u64::from(self.expected_cluster_size),
            ),
            ("probe_period_ms", self.probe_period_ms),
            ("probe_rtt_ms", self.probe_rtt_ms),
            ("num_indirect_probes", u64::from(self.num_indirect_probes)),
            ("remove_down_after_ms", self.remove_down_after_ms),
            ("periodic_gossip_ms", self.periodic_gossip_ms),
            ("gossip_fanout", u64::from(self.gossip_fanout)),
            ("periodic_announce_ms", self.periodic_announce_ms),
            ("periodic_announce_down_ms", self.periodic_announce_down_ms),
            (
                "suspicion_max_multiplier",
                u64::from(self.suspicion_max_multiplier),
            ),
            (
                "suspicion_confirmations",
                u64::from(self.suspicion_confirmations),
            ),
            (
                "roster_sync_max_packets",
                u64::from(self.roster_sync_max_packets),
            ),
            (
                "roster_sync_max_per_interval",
                u64::from(self.roster_sync_max_per_interval),
            ),
            ("roster_sync_interval_ms", self.roster_sync_interval_ms),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if self.probe_rtt_ms >= self.probe_period_ms {
            return Err(invalid(
                "probe_rtt_ms",
                format!("must be below probe_period_ms ({})", self.probe_period_ms),
            ));
        }
        if self.suspect_to_down_ms == Some(0) {
            return Err(invalid("suspect_to_down_ms", "must be at least 1"));
        }
        if !(MIN_PACKET_SIZE..=MAX_PACKET_SIZE).contains(&self.max_packet_size) {
            return Err(invalid(
                "max_packet_size",
                format!("must be in {MIN_PACKET_SIZE}..={MAX_PACKET_SIZE}"),
            ));
        }
        if self.lhm_max > MAX_LHM {
            return Err(invalid("lhm_max", format!("must be at most {MAX_LHM}")));
        }
        Ok(())
    }

    /// How often a random member is probed (before local-health scaling).
    pub fn probe_period(&self) -> Duration {
        Duration::from_millis(self.probe_period_ms)
    }

    /// How long a direct probe waits for its ack (before local-health scaling).
    pub fn probe_rtt(&self) -> Duration {
        Duration::from_millis(self.probe_rtt_ms)
    }

    /// The suspicion timeout without Lifeguard, and its shortest value with it.
    pub fn suspect_to_down(&self) -> Duration {
        match self.suspect_to_down_ms {
            Some(ms) => Duration::from_millis(ms),
            None => {
                // memberlist's LAN suspicion: 4 periods, scaled by log10 of the size.
                let scale = f64::max(1.0, f64::from(self.expected_cluster_size).log10());
                self.probe_period().mul_f64(4.0 * scale)
            }
        }
    }

    /// The longest suspicion with Lifeguard (no confirmations).
    pub fn suspect_to_down_max(&self) -> Duration {
        self.suspect_to_down()
            .saturating_mul(self.suspicion_max_multiplier)
    }

    /// How many times each update is piggybacked: memberlist's 4·⌈log10(N+1)⌉. foca's
    /// `new_lan` rounds 4·log10(N+1) down instead, which leaves a small cluster with two
    /// transmissions: too few for news to reach every member reliably.
    pub fn max_transmissions(&self) -> NonZeroU8 {
        let rounds = f64::from(self.expected_cluster_size.saturating_add(1))
            .log10()
            .ceil()
            .max(1.0);
        let transmissions = (RETRANSMIT_MULTIPLIER * rounds).min(f64::from(u8::MAX));
        NonZeroU8::new(transmissions as u8).unwrap_or(NonZeroU8::MIN)
    }

    /// The bytes foca may put in one packet: the datagram limit less the tag and the
    /// envelope header.
    pub fn foca_packet_size(&self) -> usize {
        (self.max_packet_size as usize).saturating_sub(PACKET_OVERHEAD)
    }

    /// The foca configuration these settings describe, starting from
    /// `Config::new_lan(expected_cluster_size)`.
    ///
    /// `notify_down_members` is always off: with it on, a healthy member whose suspicion
    /// had already been refuted can still be told it is down by a member that missed
    /// the refutation, and is forced to rejoin under a new incarnation.
    ///
    /// With Lifeguard on, foca's own suspicion timer runs the longest timeout; the
    /// membership core declares a suspect down earlier as confirmations arrive.
    ///
    /// Call on validated settings.
    pub fn foca_config(&self) -> foca::Config {
        let size = NonZeroU32::new(self.expected_cluster_size).unwrap_or(NonZeroU32::MIN);
        let mut config = foca::Config::new_lan(size);
        config.max_transmissions = self.max_transmissions();
        config.probe_period = self.probe_period();
        config.probe_rtt = self.probe_rtt();
        config.num_indirect_probes = non_zero(self.num_indirect_probes as usize);
        config.suspect_to_down_after = if self.lifeguard {
            self.suspect_to_down_max()
        } else {
            self.suspect_to_down()
        };
        config.remove_down_after = Some(Duration::from_millis(self.remove_down_after_ms));
        config.max_packet_size = non_zero(self.foca_packet_size());
        config.notify_down_members = false;
        config.periodic_gossip = Some(foca::PeriodicParams {
            frequency: Duration::from_millis(self.periodic_gossip_ms),
            num_members: non_zero(self.gossip_fanout as usize),
        });
        config.periodic_announce = Some(foca::PeriodicParams {
            frequency: Duration::from_millis(self.periodic_announce_ms),
            num_members: NonZeroUsize::MIN,
        });
        // Announcing to members believed down heals partitions: it is the first packet
        // across the cut, answered with a down notice (see `Membership`), after which
        // the smaller side renews its identity and is taken back.
        config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_millis(self.periodic_announce_down_ms),
            num_members: NonZeroUsize::MIN,
        });
        config
    }
}

fn non_zero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_keep_down_members_unnotified() {
        let settings = GossipSettings::default();
        settings.validate().expect("defaults validate");
        let config = settings.foca_config();
        assert!(!config.notify_down_members);
        assert_eq!(config.probe_period, Duration::from_secs(1));
        assert_eq!(config.max_packet_size.get(), 1_400 - PACKET_OVERHEAD);
    }

    #[test]
    fn lifeguard_hands_foca_the_longest_suspicion() {
        let mut settings = GossipSettings {
            suspect_to_down_ms: Some(4_000),
            ..GossipSettings::default()
        };
        assert_eq!(
            settings.foca_config().suspect_to_down_after,
            Duration::from_secs(24)
        );
        settings.lifeguard = false;
        assert_eq!(
            settings.foca_config().suspect_to_down_after,
            Duration::from_secs(4)
        );
    }

    #[test]
    fn transmissions_follow_memberlist() {
        let of = |n| {
            GossipSettings {
                expected_cluster_size: n,
                ..GossipSettings::default()
            }
            .max_transmissions()
            .get()
        };
        assert_eq!((of(1), of(4), of(16), of(1_000)), (4, 4, 8, 16));
    }

    #[test]
    fn default_suspicion_grows_with_the_cluster() {
        let small = GossipSettings::default().suspect_to_down();
        let large = GossipSettings {
            expected_cluster_size: 1_000,
            ..GossipSettings::default()
        }
        .suspect_to_down();
        assert_eq!(large, Duration::from_secs(12));
        assert!(small < large);
    }

    #[test]
    fn out_of_range_fields_are_named() {
        let cases = [
            (
                GossipSettings {
                    probe_rtt_ms: 1_000,
                    ..GossipSettings::default()
                },
                "probe_rtt_ms",
            ),
            (
                GossipSettings {
                    max_packet_size: 100,
                    ..GossipSettings::default()
                },
                "max_packet_size",
            ),
            (
                GossipSettings {
                    expected_cluster_size: 0,
                    ..GossipSettings::default()
                },
                "expected_cluster_size",
            ),
            (
                GossipSettings {
                    lhm_max: 100,
                    ..GossipSettings::default()
                },
                "lhm_max",
            ),
            (
                GossipSettings {
                    suspect_to_down_ms: Some(0),
                    ..GossipSettings::default()
                },
                "suspect_to_down_ms",
            ),
        ];
        for (settings, field) in cases {
            assert_eq!(settings.validate().expect_err(field).field, field);
        }
    }

    #[test]
    fn toml_fields_override_defaults() {
        let settings: GossipSettings =
            toml::from_str("probe_period_ms = 2000\nlifeguard = false").expect("parse");
        assert_eq!(settings.probe_period_ms, 2_000);
        assert!(!settings.lifeguard);
        assert_eq!(settings.probe_rtt_ms, 500);
        assert!(toml::from_str::<GossipSettings>("bogus = 1").is_err());
    }
}
