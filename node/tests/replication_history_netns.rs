//! A history test in the spirit of Jepsen with network faults: three `chorus agent`
//! processes with the cluster defaults (three replicas, write quorum 2), each in its own
//! network namespace ([`support::netns::Lab`]), and writers that submit items with ids
//! they keep, retrying the same id through any node ([`support::history`]). A nemesis
//! takes turns among six faults, each repaired before the next:
//!
//! - SIGKILL a node, then restart it;
//! - cut a node off from its two peers while the clients still reach both sides: the
//!   cut-off node keeps taking writes it cannot replicate while the two others take
//!   over its partitions and acknowledge writes of their own;
//! - the same, and the cut-off node is SIGKILLed and restarts before the heal, still cut
//!   off, with whatever it wrote alone;
//! - cut a node off from everyone, clients included (the two others keep the quorum);
//! - sever a node from one peer only: both still reach the third node and the clients;
//! - sever every node from the others while the clients still reach all three: no
//!   node reaches a quorum, so nothing may be acknowledged until the heal.
//!
//! After each repair the three nodes must form one cluster again. At the end every
//! acknowledged id is read back by `get` and listed once in its user's listing, an id
//! never acknowledged is listed at most once, and every replica of every partition
//! holds the same records (`chorus ctl replicas --digest` agrees on all three nodes).
//!
//! The writers live in a fourth namespace on the same bridge, which no fault severs and
//! which straddles every cut (it has a port on both bridges, opened for the cuts that
//! leave the clients both sides): the test's thread enters it before it builds the
//! tokio runtime, so every client socket, on every worker thread, is made there. A
//! client therefore reaches exactly the nodes the network lets it reach, as a client in
//! another rack would, and the host's own network needs no address or route into the
//! test's bridge.
//!
//! `CHORUS_HISTORY_EVENTS` sets the nemesis events (a fault and its repair are one
//! each; 12 by default, one fault of each kind); `CHORUS_HISTORY_SEED` replays a run's
//! choice of faults. The long mode, run by cargo's own harness because nextest would
//! stop it after four minutes:
//! `CHORUS_HISTORY_EVENTS=100 cargo test -p chorus-node --test replication_history_netns
//! -- --nocapture`.
//!
//! Needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2; where namespaces cannot
//! be made the test prints why and passes without running, unless
//! `CHORUS_REQUIRE_NETNS=1` is set.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;
use support::cluster::{Node, cluster_in, formed, try_plain_client, until};
use support::history::{Writers, events, nemesis_rng};
use support::netns::{Host, Lab};

/// The namespaces: one per node, then the clients'.
const HOSTS: [&str; 4] = ["a", "b", "c", "clients"];
/// How many of [`HOSTS`] run a node.
const NODES: usize = 3;
/// The clients' host, in [`HOSTS`].
const CLIENTS: usize = 3;
/// The kinds of [`Fault`] the nemesis takes turns among.
const FAULT_KINDS: usize = 6;
/// Nemesis events when `CHORUS_HISTORY_EVENTS` is unset: one fault of each kind.
const SHORT_EVENTS: usize = 2 * FAULT_KINDS;
/// How long after a cut the nodes may take to suspect the other side: the suspicion
/// starts within a few probe periods (300 ms); Lifeguard's local-health slowdown on the
/// isolated side and a loaded machine account for the rest.
const DETECT_WITHIN: Duration = Duration::from_secs(15);
/// How long a client's handshake may take with a node it can reach.
const HANDSHAKE_WITHIN: Duration = Duration::from_secs(2);

#[test]
fn every_acknowledged_item_survives_kills_cuts_and_heals_and_replicas_agree() {
    let Some(mut lab) = Lab::create_or_skip(&HOSTS, "the network history test") else {
        return;
    };
    lab.straddle(CLIENTS).unwrap();
    lab.enter(CLIENTS).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(history(&lab));
}

/// Runs the writers against the nodes in `lab` while the nemesis breaks them, then
/// checks what was acknowledged. The nodes are killed before this returns, so before
/// their namespaces are deleted.
async fn history(lab: &Lab) {
    let events = events(SHORT_EVENTS);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let hosts: Vec<&Host> = lab.hosts()[..NODES].iter().collect();
    let mut nodes = cluster_in(dir.path(), &hosts);
    for node in &mut nodes {
        node.start();
    }
    let whole = formed(&nodes).await;
    let writers = Writers::start(&nodes, dir.path()).await;

    let mut rng = nemesis_rng();
    let first_kind = rng.random_range(0..FAULT_KINDS);
    let mut done = 0;
    while done < events {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2_000))).await;
        let fault = Fault::pick(&mut rng, first_kind + done / 2);
        fault.apply(lab, &mut nodes);
        done += 1;
        eprintln!(
            "nemesis {done}: {} ({:?})",
            fault.describe(&nodes),
            started.elapsed()
        );
        fault.noticed(&nodes).await;
        fault.assert_clients_reach(&nodes, dir.path()).await;
        // Long enough, often, for a suspected node to be declared down and the ring to
        // move without it.
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..4_000))).await;
        fault.meanwhile(&mut nodes, &mut rng).await;
        // Whether the fault moved rings, so the log shows which faults reached a ring
        // change and which stayed within suspicion.
        let moved = nodes
            .iter()
            .filter(|n| n.ring()["epoch"].as_u64().is_some_and(|e| e != whole))
            .count();
        fault.repair(lab, &mut nodes);
        done += 1;
        let repaired = Instant::now();
        let epoch = formed(&nodes).await;
        assert_eq!(
            epoch, whole,
            "the same three members must give the same ring"
        );
        eprintln!(
            "nemesis {done}: repaired ({moved} of {NODES} rings had moved); one cluster \
             again after {:?}",
            repaired.elapsed()
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = writers.finish(&nodes).await;
    eprintln!(
        "{tally:?} after {events} nemesis events in {:?}",
        started.elapsed()
    );
}

/// One fault of the nemesis, by node index.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL the node; the repair restarts it.
    Kill(usize),
    /// Cut the node off from its peers; the clients reach both sides.
    Cut(usize),
    /// [`Fault::Cut`], and SIGKILL the node and restart it before the heal.
    CutAndRestart(usize),
    /// Cut the node off from every other host, clients included.
    Isolate(usize),
    /// Sever the two nodes from each other only.
    Sever(usize, usize),
    /// Sever every node from every other; the clients still reach all.
    SeverAll,
}

impl Fault {
    /// A fault of kind `turn` (modulo [`FAULT_KINDS`]) on nodes chosen by `rng`.
    fn pick(rng: &mut StdRng, turn: usize) -> Fault {
        let node = rng.random_range(0..NODES);
        match turn % FAULT_KINDS {
            0 => Fault::Kill(node),
            1 => Fault::Cut(node),
            2 => Fault::CutAndRestart(node),
            3 => Fault::Isolate(node),
            4 => Fault::Sever(node, (node + rng.random_range(1..NODES)) % NODES),
            _ => Fault::SeverAll,
        }
    }

    /// Breaks what the fault breaks.
    fn apply(self, lab: &Lab, nodes: &mut [Node]) {
        match self {
            Fault::Kill(i) => nodes[i].kill(),
            Fault::Cut(i) | Fault::CutAndRestart(i) => {
                lab.cut(i);
                lab.reach_across(CLIENTS, true);
            }
            Fault::Isolate(i) => lab.cut(i),
            Fault::Sever(i, j) => {
                lab.sever(i);
                lab.sever(j);
            }
            Fault::SeverAll => (0..NODES).for_each(|i| lab.sever(i)),
        }
    }

    /// Waits until the nodes on each side of a network fault suspect the other side (or
    /// have declared it down), which proves the fault took effect. A node severed from
    /// one peer only is not suspected by it: the peer probes it through the third node.
    async fn noticed(self, nodes: &[Node]) {
        let pairs: Vec<(usize, usize)> = match self {
            Fault::Kill(_) | Fault::Sever(..) => return,
            Fault::Cut(i) | Fault::CutAndRestart(i) | Fault::Isolate(i) => (0..NODES)
                .filter(|&j| j != i)
                .flat_map(|j| [(i, j), (j, i)])
                .collect(),
            Fault::SeverAll => (0..NODES)
                .flat_map(|i| (0..NODES).filter(move |&j| j != i).map(move |j| (i, j)))
                .collect(),
        };
        until(DETECT_WITHIN, "the network fault to be noticed", || {
            pairs.iter().all(|&(i, j)| {
                nodes[i]
                    .sees(&nodes[j].name)
                    .is_some_and(|(state, _)| state != "alive")
            })
        })
        .await;
    }

    /// Checks that a client in the clients' namespace completes a handshake with every
    /// node the fault leaves in its reach, and with no other: the lab wired what the
    /// fault says. A killed node is not asked.
    async fn assert_clients_reach(self, nodes: &[Node], dir: &Path) {
        for (i, node) in nodes.iter().enumerate() {
            let reach = match self {
                Fault::Kill(_) => continue,
                Fault::Isolate(cut) => i != cut,
                Fault::Cut(_) | Fault::CutAndRestart(_) | Fault::Sever(..) | Fault::SeverAll => {
                    true
                }
            };
            let connected = tokio::time::timeout(HANDSHAKE_WITHIN, try_plain_client(node, dir));
            let reached = match connected.await {
                Ok(Ok(client)) => {
                    client.close().await;
                    true
                }
                Ok(Err(_)) | Err(_) => false,
            };
            assert_eq!(
                reached,
                reach,
                "{}: the clients reach {}: {reached}",
                self.describe(nodes),
                node.name
            );
        }
    }

    /// What happens while the fault holds, once noticed: a node cut off to be restarted
    /// is SIGKILLed and, after a while, started again, still cut off.
    async fn meanwhile(self, nodes: &mut [Node], rng: &mut StdRng) {
        if let Fault::CutAndRestart(i) = self {
            nodes[i].kill();
            tokio::time::sleep(Duration::from_millis(rng.random_range(500..2_000))).await;
            nodes[i].start();
            // Time to come up alone and serve the clients that reach it.
            tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..3_000))).await;
        }
    }

    /// What the fault does, with the nodes' names.
    fn describe(self, nodes: &[Node]) -> String {
        match self {
            Fault::Kill(i) => format!("killed {}", nodes[i].name),
            Fault::Cut(i) => format!("cut {} off from its peers", nodes[i].name),
            Fault::CutAndRestart(i) => format!(
                "cut {} off from its peers, to restart it before the heal",
                nodes[i].name
            ),
            Fault::Isolate(i) => format!("cut {} off from everyone", nodes[i].name),
            Fault::Sever(i, j) => format!("severed {} from {}", nodes[i].name, nodes[j].name),
            Fault::SeverAll => "severed every node from the others".into(),
        }
    }

    /// Undoes [`Fault::apply`]: restarts the killed node, or heals the network.
    fn repair(self, lab: &Lab, nodes: &mut [Node]) {
        match self {
            Fault::Kill(i) => nodes[i].start(),
            Fault::Cut(i) | Fault::CutAndRestart(i) => {
                lab.heal(i);
                lab.reach_across(CLIENTS, false);
            }
            Fault::Isolate(i) => lab.heal(i),
            Fault::Sever(i, j) => {
                lab.mend(i);
                lab.mend(j);
            }
            Fault::SeverAll => (0..NODES).for_each(|i| lab.mend(i)),
        }
    }
}
