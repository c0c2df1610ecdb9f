//! Asking every member the same question, for what this node cannot know alone (an item
//! by id, a key created elsewhere).

use chorus_protocol::NodeId;
use futures_util::future::join_all;

use super::Backend;
use crate::cluster::routing::{Forward, ForwardReply};

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

/// Asks every member that may know — the linked ones and those known but down (which
/// count as unreachable) — and returns the first answer `pick` accepts.
pub async fn ask_members<T>(
    backend: &Backend,
    request: Forward,
    pick: impl Fn(ForwardReply) -> Option<T>,
) -> FanOut<T> {
    let Some(peers) = &backend.peers else {
        return FanOut::Missing {
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
    let mut unreachable = Vec::new();
    for (peer, answer) in members.into_iter().zip(answers) {
        match answer {
            Ok(reply) => {
                if let Some(found) = pick(reply) {
                    return FanOut::Found(found);
                }
            }
            Err(_) => unreachable.push(peer),
        }
    }
    FanOut::Missing { unreachable }
}

/// `names` as `a, b, c` for an error's reason.
pub fn list(names: &[NodeId]) -> String {
    names
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
