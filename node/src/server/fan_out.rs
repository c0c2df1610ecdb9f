//! Asking every member the same question, for what this node cannot know alone (an item
//! by id, a key created elsewhere), and every other live member for its report on the
//! partitions it leads (function stats, facets, the review queue).

use chorus_protocol::{NodeId, PartitionId};
use futures_util::future::join_all;
use tracing::debug;

use super::Backend;
use crate::cluster::routing::{Forward, ForwardReply};
use crate::cluster::standing::PartitionSet;

/// What the members said: the first answer `pick` accepts, or the members that could
/// not be asked (each of them might have had the answer).
pub enum FanOut<T> {
    /// A member answered with what was sought.
    Found(T),
    /// Nobody had it; these members could not be asked (empty: nobody has it).
    Missing {
        /// The unreachable members.
        unreachable: Vec<NodeId>,
    },
}

/// Every member's answer to one question, and the members that could not be asked.
pub struct Answers {
    /// The answers, in no particular order.
    pub replies: Vec<ForwardReply>,
    /// The members that could not be asked (each of them might have answered).
    pub unreachable: Vec<NodeId>,
}

/// Asks every member that may know — the linked ones and those known but down (which
/// count as unreachable) — and gathers every answer.
pub async fn ask_every_member(backend: &Backend, request: Forward) -> Answers {
    let Some(peers) = &backend.peers else {
        return Answers {
            replies: Vec::new(),
            unreachable: Vec::new(),
        };
    };
    let mut members = backend.cluster.known_peers();
    for linked in peers.peers() {
        if !members.contains(&linked) {
            members.push(linked);
        }
    }
    let answers = join_all(
        members
            .iter()
            .map(|peer| peers.forward(peer, request.clone())),
    )
    .await;
    let mut out = Answers {
        replies: Vec::new(),
        unreachable: Vec::new(),
    };
    for (peer, answer) in members.into_iter().zip(answers) {
        match answer {
            Ok(reply) => out.replies.push(reply),
            Err(_) => out.unreachable.push(peer),
        }
    }
    out
}

/// Asks every member as [`ask_every_member`] does and returns the first answer `pick`
/// accepts.
pub async fn ask_members<T>(
    backend: &Backend,
    request: Forward,
    pick: impl Fn(ForwardReply) -> Option<T>,
) -> FanOut<T> {
    let answers = ask_every_member(backend, request).await;
    match answers.replies.into_iter().find_map(pick) {
        Some(found) => FanOut::Found(found),
        None => FanOut::Missing {
            unreachable: answers.unreachable,
        },
    }
}

/// Asks every live member but this node `request` at once and keeps the answers `pick`
/// takes. A member that cannot answer, or answers with something else, is left out
/// (logged): the partitions it leads go uncovered.
pub async fn ask_live_members<T>(
    backend: &Backend,
    request: Forward,
    pick: impl Fn(ForwardReply) -> Option<T>,
) -> Vec<T> {
    let Some(peers) = &backend.peers else {
        return Vec::new();
    };
    let me = backend.cluster.node();
    let others: Vec<NodeId> = (backend.cluster.ring().live.iter())
        .filter(|member| *member != me)
        .cloned()
        .collect();
    let kind = request.kind();
    let asked = others
        .iter()
        .map(|member| peers.forward(member, request.clone()));
    let mut picked = Vec::new();
    for (member, answer) in others.iter().zip(join_all(asked).await) {
        match answer.map(&pick) {
            Ok(Some(report)) => picked.push(report),
            Ok(None) => debug!(%member, kind, "unexpected answer to a report"),
            Err(error) => debug!(%member, kind, %error, "report not gathered"),
        }
    }
    picked
}

/// How many of `partitions` the reports' partition sets cover, of how many.
pub fn coverage<'a>(
    sets: impl IntoIterator<Item = &'a PartitionSet>,
    partitions: PartitionId,
) -> (u32, u32) {
    let mut covered = vec![false; usize::from(partitions)];
    for set in sets {
        for p in (0..partitions).filter(|&p| set.contains(p)) {
            let slot = &mut covered[usize::from(p)];
            if *slot {
                debug!(partition = p, "two members counted one partition");
            }
            *slot = true;
        }
    }
    let counted = covered.iter().filter(|&&c| c).count() as u32;
    (counted, u32::from(partitions))
}

/// `names` as `a, b, c` for an error's reason.
pub fn list(names: &[NodeId]) -> String {
    names
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
