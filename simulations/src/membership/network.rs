//! The simulated network: latency, loss, a partition and a slow node.
//!
//! A packet's fate is decided when it is sent: lost, or delivered after a latency drawn
//! from the seeded RNG (plus the slow node's extra delay when it is the sender). A
//! partition cuts a set of nodes off from the rest both ways; the nodes on each side
//! still reach each other. Crashed receivers are checked at delivery, not here.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::events::{MS, Micros};

/// Index of a node in the simulation (also its node id).
pub type NodeIx = u32;

/// The shape of the simulated network.
#[derive(Clone, Debug)]
pub struct NetworkModel {
    /// One-way latency, uniform in `[min, max]` microseconds.
    pub latency: (Micros, Micros),
    /// Fraction of packets lost, 0.0..=1.0.
    pub loss: f64,
    /// Extra delay on every packet the slow node sends, uniform in `[min, max]` µs.
    pub slow_delay: (Micros, Micros),
}

impl NetworkModel {
    /// A LAN: 0.5–5 ms one way, the given loss, a slow node 300–800 ms behind.
    pub fn lan(loss: f64) -> Self {
        Self {
            latency: (MS / 2, 5 * MS),
            loss,
            slow_delay: (300 * MS, 800 * MS),
        }
    }
}

/// Packets and bytes that went through the network.
#[derive(Clone, Copy, Debug, Default)]
pub struct Traffic {
    /// Packets sent (lost ones included).
    pub packets: u64,
    /// Bytes sent (lost ones included).
    pub bytes: u64,
    /// Packets lost at random.
    pub lost: u64,
    /// Packets dropped by the partition.
    pub cut: u64,
}

/// The network's state: the model, which side of a partition each node is on, the slow
/// node, and the traffic so far.
pub struct Network {
    model: NetworkModel,
    rng: ChaCha8Rng,
    /// `true` for the nodes cut off by the partition, when one is in force.
    cut_off: Vec<bool>,
    partitioned: bool,
    slow: Option<NodeIx>,
    traffic: Traffic,
}

impl Network {
    /// A network of `nodes` nodes, no partition and no slow node.
    pub fn new(model: NetworkModel, nodes: usize, rng: ChaCha8Rng) -> Self {
        Self {
            model,
            rng,
            cut_off: vec![false; nodes],
            partitioned: false,
            slow: None,
            traffic: Traffic::default(),
        }
    }

    /// Cuts `nodes` off from everyone else, both ways.
    pub fn partition(&mut self, nodes: &[NodeIx]) {
        for &node in nodes {
            self.cut_off[node as usize] = true;
        }
        self.partitioned = true;
    }

    /// Ends the partition.
    pub fn heal(&mut self) {
        self.cut_off.fill(false);
        self.partitioned = false;
    }

    /// Makes `node` slow: everything it sends is delayed by the model's slow delay.
    pub fn set_slow(&mut self, node: Option<NodeIx>) {
        self.slow = node;
    }

    /// Whether `a` and `b` are on the same side of the partition (always, without one).
    pub fn connected(&self, a: NodeIx, b: NodeIx) -> bool {
        !self.partitioned || self.cut_off[a as usize] == self.cut_off[b as usize]
    }

    /// Accounts a packet of `len` bytes from `from` to `to` and decides its fate:
    /// `Some(latency)` if it arrives, `None` if it is lost or cut.
    pub fn send(&mut self, from: NodeIx, to: NodeIx, len: usize) -> Option<Micros> {
        self.traffic.packets += 1;
        self.traffic.bytes += len as u64;
        if !self.connected(from, to) {
            self.traffic.cut += 1;
            return None;
        }
        if self.model.loss > 0.0 && self.rng.random::<f64>() < self.model.loss {
            self.traffic.lost += 1;
            return None;
        }
        let (min, max) = self.model.latency;
        let mut latency = self.rng.random_range(min..=max);
        if self.slow == Some(from) {
            let (min, max) = self.model.slow_delay;
            latency += self.rng.random_range(min..=max);
        }
        Some(latency)
    }

    /// Traffic so far.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn network(loss: f64) -> Network {
        Network::new(NetworkModel::lan(loss), 4, ChaCha8Rng::seed_from_u64(7))
    }

    #[test]
    fn latency_stays_within_the_model() {
        let mut net = network(0.0);
        for _ in 0..1_000 {
            let latency = net.send(0, 1, 100).expect("no loss");
            assert!((MS / 2..=5 * MS).contains(&latency));
        }
        assert_eq!(net.traffic().bytes, 100_000);
    }

    #[test]
    fn loss_is_close_to_the_configured_fraction() {
        let mut net = network(0.05);
        let lost = (0..100_000).filter(|_| net.send(0, 1, 1).is_none()).count();
        assert!((4_000..6_000).contains(&lost), "lost {lost}");
    }

    #[test]
    fn a_partition_cuts_both_ways_until_healed() {
        let mut net = network(0.0);
        net.partition(&[2, 3]);
        assert!(net.send(0, 2, 1).is_none());
        assert!(net.send(3, 1, 1).is_none());
        assert!(net.send(2, 3, 1).is_some());
        assert!(net.send(0, 1, 1).is_some());
        net.heal();
        assert!(net.send(0, 2, 1).is_some());
    }

    #[test]
    fn the_slow_node_sends_late() {
        let mut net = network(0.0);
        net.set_slow(Some(1));
        assert!(net.send(1, 0, 1).unwrap() >= 300 * MS);
        assert!(net.send(0, 1, 1).unwrap() <= 5 * MS);
    }
}
