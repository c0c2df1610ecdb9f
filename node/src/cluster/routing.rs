//! Where a request is served: here, at its owner through a link, or nowhere (the client
//! asked for the owner and this node is not it). Pure decisions on a [`RingView`]; the
//! server acts on them.

use std::future::Future;
use std::pin::Pin;

use chorus_actors::store::{Promise, RepairOutcome, ReplicaRecord, ShipBatch, ShipOutcome};
use chorus_actors::{Caller, KeySet};
use chorus_protocol::{
    ErrorCode, Event, EventCursor, Item, ItemId, NodeId, PageToken, PartitionId, Receipt, Role,
    StoredItem,
};

use super::replication::digest::PartitionDigest;
use super::standing::Standings;
use super::state::RingView;
use crate::functions::{FunctionQuery, FunctionReport};

/// A request handed to its owner over a link. The owner serves it itself and never
/// forwards it again.
#[derive(Clone, Debug)]
pub enum Forward {
    /// Store items of the owner's users (one submission).
    Submit {
        /// Who submits (the owner applies this key's limits).
        caller: Caller,
        /// The items, in the caller's order.
        items: Vec<Item>,
    },
    /// Read one item if the owner has it.
    Get {
        /// Its id.
        id: ItemId,
    },
    /// The role of the API key whose SHA-256 is `key_hash`, if the peer knows it (asked
    /// only about a key not yet replicated to the asker).
    Authenticate {
        /// SHA-256 of the key (the key itself never crosses a link).
        key_hash: [u8; 32],
    },
    /// A page of one of the owner's users.
    ListByUser {
        /// Whose items.
        user_id: String,
        /// Where the previous page ended.
        after: Option<PageToken>,
        /// Most items to return.
        limit: u32,
    },
    /// The digest of the peer's API keys and revocations: anti-entropy exchanges whole
    /// sets only with a peer whose digest differs.
    KeyDigest,
    /// API keys and revocations for the peer to merge.
    SyncKeys {
        /// The keys and revocations.
        set: KeySet,
        /// `true`: the sender's whole set, and the peer answers with what it holds that
        /// the set lacks (one round trip leaves both with the union); `false`: a push of
        /// a change, answered with an empty set.
        complete: bool,
    },
    /// A leader's records for the peer to append as a follower (fenced by epoch).
    Ship {
        /// One batch per partition.
        batches: Vec<ShipBatch>,
    },
    /// A would-be leader asks the peer to promise each `(partition, epoch)`.
    Promise {
        /// The partitions and the epochs proposed.
        partitions: Vec<(PartitionId, u64)>,
    },
    /// A new leader catching up reads partitions' records by sequence.
    Fetch {
        /// Each partition, and the sequence its records are wanted after.
        partitions: Vec<(PartitionId, u64)>,
        /// About how many record bytes to return in all.
        max_bytes: u32,
    },
    /// A leader's anti-entropy check: the digests of ranges of a partition, if the
    /// peer's copy ends at `expect_last`.
    Digests {
        /// The partition.
        partition: PartitionId,
        /// The last sequence both copies must end at for the digests to compare.
        expect_last: u64,
        /// Ranges `(after, up_to]` of sequences, ascending.
        ranges: Vec<(u64, u64)>,
    },
    /// A leader's anti-entropy repair: the peer drops its records of a partition after
    /// `after` (they differ from the leader's), for the leader to ship them again.
    Repair {
        /// The partition.
        partition: PartitionId,
        /// The leader's epoch (a peer that promised a higher one refuses).
        epoch: u64,
        /// The last sequence the digests were compared at.
        expect_last: u64,
        /// The last sequence both copies agree up to.
        after: u64,
    },
    /// The sender's whole map of members' standings (anti-entropy) or its own changed
    /// one (a push); answered with the entries the receiver holds newer.
    Standings {
        /// The standings.
        set: Standings,
    },
    /// The last sequence the peer holds of each partition (a member warming up
    /// measures itself against its replicas).
    Tips {
        /// The partitions.
        partitions: Vec<PartitionId>,
    },
    /// What the feedback about each function version adds up to over the partitions
    /// the peer leads: one page of it.
    FunctionStats {
        /// Which versions.
        query: FunctionQuery,
    },
    /// The peer's contiguous head of each origin's events.
    EventHeads,
    /// The events the peer holds past `cursor` (the asker's heads), at most one page.
    EventsAfter {
        /// What the asker holds.
        cursor: EventCursor,
    },
    /// Events just recorded by the sender, for the peer to merge.
    PushEvents {
        /// The events.
        events: Vec<Event>,
    },
    /// A page of the review queue over the partitions the peer leads.
    ReviewPage {
        /// Where the page starts.
        after: Option<PageToken>,
        /// Most items in the page.
        limit: u32,
    },
    /// A reviewer's decision on a flagged item the peer leads.
    Review {
        /// Who decides (a review or admin key).
        caller: Caller,
        /// The item's user.
        user_id: String,
        /// The item.
        id: ItemId,
        /// Approve, or reject.
        approve: bool,
    },
    /// Delete one part of a user's items the peer leads (see
    /// `NodeHandle::delete_user_part`).
    DeleteUser {
        /// Who asks (an admin key).
        caller: Caller,
        /// The user.
        user_id: String,
        /// The last id of the previous part; `None` for the first.
        after: Option<ItemId>,
    },
    /// Each facet's items and ratings over the partitions the peer leads.
    FacetStats {
        /// Only these days (inclusive), if set.
        days: Option<(u32, u32)>,
    },
    /// Charge a key's privacy budget at the peer, the keeper of its ledger.
    ChargePrivacy {
        /// The key's id.
        key_id: String,
        /// The ε to charge.
        epsilon: f64,
        /// The key's lifetime budget, as the asking node is configured.
        budget: f64,
    },
}

impl Forward {
    /// What the forward asks for, as its span and logs name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Forward::Submit { .. } => "submit",
            Forward::Get { .. } => "get",
            Forward::Authenticate { .. } => "authenticate",
            Forward::ListByUser { .. } => "list_by_user",
            Forward::KeyDigest => "key_digest",
            Forward::SyncKeys { .. } => "sync_keys",
            Forward::Ship { .. } => "ship",
            Forward::Promise { .. } => "promise",
            Forward::Fetch { .. } => "fetch",
            Forward::Digests { .. } => "digests",
            Forward::Repair { .. } => "repair",
            Forward::Standings { .. } => "standings",
            Forward::Tips { .. } => "tips",
            Forward::FunctionStats { .. } => "function_stats",
            Forward::EventHeads => "event_heads",
            Forward::EventsAfter { .. } => "events_after",
            Forward::PushEvents { .. } => "push_events",
            Forward::ReviewPage { .. } => "review_page",
            Forward::Review { .. } => "review",
            Forward::DeleteUser { .. } => "delete_user",
            Forward::ChargePrivacy { .. } => "charge_privacy",
            Forward::FacetStats { .. } => "facet_stats",
        }
    }
}

/// The owner's answer to a [`Forward`].
#[derive(Clone, Debug, PartialEq)]
pub enum ForwardReply {
    /// One outcome per submitted item.
    Submit(Vec<Result<Receipt, ErrorCode>>),
    /// The item, if the owner has it.
    Get(Option<Box<StoredItem>>),
    /// A page and where the next starts.
    List(Vec<StoredItem>, Option<PageToken>),
    /// The key's role, if the peer knows the key (and it is not revoked).
    Role(Option<Role>),
    /// The peer's digest of its API keys and revocations.
    KeyDigest(u64),
    /// The keys and revocations the asker lacks.
    Keys(KeySet),
    /// The peer knows the key asked about as revoked: the hello is refused.
    Revoked,
    /// One outcome per shipped batch.
    Shipped(Vec<ShipOutcome>),
    /// One promise per partition asked.
    Promised(Vec<Promise>),
    /// The records fetched, each partition's in sequence order.
    Records(Vec<ReplicaRecord>),
    /// One digest per range asked, or `None`: the peer's copy does not end at the
    /// sequence expected.
    Digests(Option<Vec<PartitionDigest>>),
    /// The outcome of a repair.
    Repaired(RepairOutcome),
    /// The standings the asker lacks.
    Standings(Standings),
    /// The last sequence held of each partition asked, in the order asked.
    Tips(Vec<u64>),
    /// The peer's page of function stats and the partitions it counted.
    FunctionStats(FunctionReport),
    /// The peer's contiguous head of each origin's events.
    EventHeads(EventCursor),
    /// Events the asker lacked, each origin's in order.
    Events(Vec<Event>),
    /// How many pushed events were new to the peer.
    EventsTaken(u32),
    /// How many items a part of a deletion made tombstones of, and the id to go on
    /// after while more follow.
    Deleted(u64, Option<ItemId>),
    /// A privacy charge taken: what is left of the budget, and the event recording it.
    Charged(f64, Event),
    /// The peer's facets and the partitions it counted.
    FacetStats(crate::insights::FacetReport),
}

/// A boxed future of a forwarded request's answer.
pub type ForwardFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ForwardReply, ErrorCode>> + Send + 'a>>;

/// Sends requests to their owners (the cluster links).
pub trait Forwarder: Send + Sync + 'static {
    /// Serves `request` at `to`; fails fast with `Unavailable` when `to` cannot be
    /// reached (no link, its breaker open, too slow).
    fn forward<'a>(&'a self, to: &'a NodeId, request: Forward) -> ForwardFuture<'a>;

    /// The peers a fan-out read asks (every linked member but this node).
    fn peers(&self) -> Vec<NodeId>;
}

/// Where one user's request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// This node owns the user's partition.
    Local,
    /// Another node does: forward it there.
    Forward(NodeId),
    /// Another node does and the client asked for the owner: tell it which.
    NotOwner(NodeId),
}

/// The route of a request about `user_id`; `routed` is a client's claim that this node
/// is the owner (so it is not forwarded when wrong).
pub fn route_user(view: &RingView, me: &NodeId, user_id: &str, routed: bool) -> Route {
    let (_, owner) = view.leader_of_user(user_id);
    if owner == me {
        Route::Local
    } else if routed {
        Route::NotOwner(owner.clone())
    } else {
        Route::Forward(owner.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use super::*;
    use crate::cluster::ring::Ring;

    fn view() -> RingView {
        let nodes = ["a", "b", "c"].map(|n| NodeId(n.into()));
        RingView::new(
            Ring::place(nodes.clone(), 64).unwrap(),
            1,
            nodes.iter().cloned().collect(),
            nodes
                .iter()
                .map(|n| (n.clone(), SocketAddr::from(([127, 0, 0, 1], 7400))))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    #[test]
    fn the_owner_serves_others_forward_or_name_it() {
        let view = view();
        let (_, owner) = view.leader_of_user("alice");
        let owner = owner.clone();
        let other = view
            .ring
            .members()
            .iter()
            .find(|n| **n != owner)
            .unwrap()
            .clone();
        assert_eq!(route_user(&view, &owner, "alice", true), Route::Local);
        assert_eq!(
            route_user(&view, &other, "alice", false),
            Route::Forward(owner.clone())
        );
        assert_eq!(
            route_user(&view, &other, "alice", true),
            Route::NotOwner(owner)
        );
    }
}
