//! Spreading the members' standings, and warming this node up.
//!
//! Standings travel like API keys (see [`super::key_sync`]): a change of this node's
//! own standing is pushed to every linked peer at once, a link that comes up swaps the
//! whole maps at once, and every [`ANTI_ENTROPY_INTERVAL`] each linked peer is sent
//! this node's map and answers with what it holds newer. A map is one small entry per
//! member, so it crosses whole.
//!
//! [`warm_up`] runs while this node is warming: it asks the other replicas of its
//! partitions how far their logs go, and once its own copies reach what they held one
//! check earlier, it declares itself warm and the placement counts it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chorus_actors::NodeHandle;
use chorus_protocol::{ErrorCode, NodeId, PartitionId};
use futures_util::future::join_all;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::key_sync::{PUSH_WAIT, rounds, with_every_peer};
use super::routing::{Forward, ForwardReply, Forwarder};
use super::standing::Standings;
use super::state::ClusterState;

/// How often each linked peer's standings are compared with this node's.
pub const ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(5);
/// How often a warming node measures its copies against its replicas'.
pub const WARM_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// One exchange with `peer`: this node's map goes out, what the peer holds newer comes
/// back and is merged. Returns how many entries this node learned.
pub async fn exchange(
    cluster: &ClusterState,
    peers: &dyn Forwarder,
    peer: &NodeId,
) -> Result<usize, ErrorCode> {
    let set = cluster.standings();
    match peers.forward(peer, Forward::Standings { set }).await? {
        ForwardReply::Standings(newer) => Ok(cluster.merge_standings(newer)),
        _ => Err(ErrorCode::Unavailable {
            reason: format!("{peer} answered a standings exchange with something else"),
        }),
    }
}

/// Sends this node's own standing to every linked peer and waits up to [`PUSH_WAIT`];
/// returns how many took it (the others learn it by anti-entropy).
pub async fn push_own(cluster: &ClusterState, peers: &dyn Forwarder) -> usize {
    let Some(own) = cluster.own_standing() else {
        return 0;
    };
    let set = Standings::from_entries([(cluster.node().clone(), own)]);
    let targets = peers.peers();
    let sends = targets.iter().map(|peer| {
        let request = Forward::Standings { set: set.clone() };
        async move { peers.forward(peer, request).await.is_ok() }
    });
    match tokio::time::timeout(PUSH_WAIT, join_all(sends)).await {
        Ok(reached) => reached.into_iter().filter(|&ok| ok).count(),
        Err(_) => 0,
    }
}

/// Spreads standings until `shutdown`: pushes this node's own at every change, and
/// runs anti-entropy rounds (every `interval`, and when a link comes up).
pub async fn run(
    cluster: ClusterState,
    peers: Arc<dyn Forwarder>,
    link_ups: watch::Receiver<u64>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let pushes = async {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = cluster.own_standing_changed() => {}
            }
            let reached = push_own(&cluster, &*peers).await;
            debug!(reached, "own standing pushed");
        }
    };
    let anti_entropy = rounds(link_ups, interval, shutdown.clone(), || {
        with_every_peer(&*peers, "standings", |peer| {
            let cluster = &cluster;
            let peers = &*peers;
            async move { exchange(cluster, peers, &peer).await }
        })
    });
    tokio::join!(pushes, anti_entropy);
}

/// The partitions this node replicates (voting or learning) in the current ring, and
/// for each other live replica, the partitions to ask it about.
fn replicated(cluster: &ClusterState) -> (Vec<PartitionId>, BTreeMap<NodeId, Vec<PartitionId>>) {
    let view = cluster.ring();
    let me = cluster.node();
    let mut mine = Vec::new();
    let mut asks: BTreeMap<NodeId, Vec<PartitionId>> = BTreeMap::new();
    for p in 0..view.ring.partitions() {
        let replicas: Vec<&NodeId> = view.replicas(p).chain(view.learners(p)).collect();
        if !replicas.contains(&me) {
            continue;
        }
        mine.push(p);
        for other in replicas
            .into_iter()
            .filter(|r| *r != me && view.live.contains(*r))
        {
            asks.entry(other.clone()).or_default().push(p);
        }
    }
    (mine, asks)
}

/// The highest last sequence the replicas asked report per partition; `None` if no
/// replica could be asked although some should have been.
async fn tips(
    peers: &dyn Forwarder,
    asks: BTreeMap<NodeId, Vec<PartitionId>>,
) -> Option<BTreeMap<PartitionId, u64>> {
    if asks.is_empty() {
        return Some(BTreeMap::new());
    }
    let answers = join_all(asks.into_iter().map(|(peer, partitions)| async move {
        let request = Forward::Tips {
            partitions: partitions.clone(),
        };
        match peers.forward(&peer, request).await {
            Ok(ForwardReply::Tips(tips)) if tips.len() == partitions.len() => {
                Some(partitions.into_iter().zip(tips).collect::<Vec<_>>())
            }
            _ => None,
        }
    }))
    .await;
    let mut highest = BTreeMap::new();
    let mut any = false;
    for answer in answers.into_iter().flatten() {
        any = true;
        for (p, tip) in answer {
            let at: &mut u64 = highest.entry(p).or_default();
            *at = (*at).max(tip);
        }
    }
    any.then_some(highest)
}

/// While this node is warming: every [`WARM_CHECK_INTERVAL`], once it sees another
/// member, measures its copies against the other replicas' and declares itself warm
/// once each copy reaches what the replicas held at the previous check. Returns when
/// warm, or at `shutdown`.
pub async fn warm_up(
    cluster: ClusterState,
    node: NodeHandle,
    peers: Arc<dyn Forwarder>,
    shutdown: CancellationToken,
) {
    let mut targets: Option<BTreeMap<PartitionId, u64>> = None;
    while cluster.warming() {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WARM_CHECK_INTERVAL) => {}
        }
        // Alone, a node cannot tell a new cluster from one it has not met yet.
        if cluster.ring().live.len() < 2 {
            continue;
        }
        let (mine, asks) = replicated(&cluster);
        let reached = targets.as_ref().is_some_and(|targets| {
            mine.iter().all(|&p| {
                let target = targets.get(&p).copied().unwrap_or(0);
                node.partition_state(p).1 >= target
            })
        });
        if reached {
            let Some(own) = cluster.own_standing() else {
                return;
            };
            match cluster.set_own_standing(own.changed(|s| s.warming = false)) {
                Ok(()) => {
                    info!(
                        partitions = mine.len(),
                        "warm: this node holds its partitions and now votes"
                    );
                    return;
                }
                Err(error) => warn!(%error, "saving this node's standing failed"),
            }
        }
        targets = tips(&*peers, asks).await;
    }
}
