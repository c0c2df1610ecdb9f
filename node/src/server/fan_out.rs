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

/// `names` as `a, b, c` for an error's reason.
pub fn list(names: &[NodeId]) -> String {
    names
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
