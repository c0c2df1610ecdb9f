//! The review queue across the cluster: every member pages the flagged items of the
//! partitions the ring names it the leader of, the node a reviewer asked merges their
//! pages in the queue's order (as function pages are merged), and a decision goes to
//! the item's leader, which rewrites the verdict and answers once a write quorum holds
//! it. The node asked records the decision as an `item_reviewed` event.
//!
//! A page is cut the same way on every member (queue order, after the token, at most
//! the limit), so the first `limit` items of the merge are whole: an item among them is
//! within its member's own first `limit`.

use std::time::Duration;

use chorus_actors::store::review::queue_key;
use chorus_actors::{Caller, NodeHandle};
use chorus_protocol::{
    ErrorCode, EventKind, ItemId, MAX_EVENTS_PAGE, MAX_PAGE_LIMIT, PageToken, PartitionId,
    Response, StoredItem,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::cluster::routing::{Forward, ForwardReply, Route, route_user};
use crate::cluster::state::ClusterState;
use crate::server::Backend;
use crate::server::fan_out::ask_live_members;

/// The partitions the ring names this node the leader of, ascending.
fn led(cluster: &ClusterState) -> Vec<PartitionId> {
    let ring = cluster.ring();
    (0..ring.ring.partitions())
        .filter(|&p| ring.leader(p) == cluster.node())
        .collect()
}

/// This member's page: the queue over the partitions it leads.
pub async fn report(
    node: &NodeHandle,
    cluster: &ClusterState,
    after: Option<PageToken>,
    limit: u32,
) -> Result<(Vec<StoredItem>, Option<PageToken>), ErrorCode> {
    let limit = limit.clamp(1, MAX_PAGE_LIMIT) as usize;
    node.review_page(led(cluster), after, limit).await
}

/// Merges the members' pages into the reviewer's: queue order, at most `limit`, and
/// the token after the last item when any member may hold more.
pub fn merge(
    pages: Vec<(Vec<StoredItem>, Option<PageToken>)>,
    limit: u32,
    partitions: u16,
) -> Response {
    let limit = limit.clamp(1, MAX_PAGE_LIMIT) as usize;
    let more = pages.iter().any(|(_, next)| next.is_some());
    let mut items: Vec<(Vec<u8>, StoredItem)> = pages
        .into_iter()
        .flat_map(|(items, _)| items)
        .map(|stored| (queue_key(&stored, partitions), stored))
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let cut = items.len() > limit;
    items.truncate(limit);
    let next = (more || cut)
        .then(|| items.last().map(|(key, _)| PageToken(key.clone())))
        .flatten();
    Response::Page {
        items: items.into_iter().map(|(_, stored)| stored).collect(),
        next,
    }
}

/// Answers `Request::ReviewQueue`: this member's page and every other live member's,
/// asked at once, merged. A member that cannot answer is left out (its items show on a
/// later page once it answers, or once another member leads its partitions).
pub async fn page(
    backend: &Backend,
    after: Option<PageToken>,
    limit: u32,
) -> Result<Response, ErrorCode> {
    let cluster = &backend.cluster;
    let ring = cluster.ring();
    let mut pages = vec![report(&backend.node, cluster, after.clone(), limit).await?];
    pages.extend(
        ask_live_members(
            backend,
            Forward::ReviewPage { after, limit },
            |reply| match reply {
                ForwardReply::List(items, next) => Some((items, next)),
                _ => None,
            },
        )
        .await,
    );
    Ok(merge(pages, limit, ring.ring.partitions()))
}

/// Answers `Request::Review`: the decision made by the item's leader (here or over a
/// link), then recorded as an event and pushed to the peers.
pub async fn decide(
    backend: &Backend,
    caller: &Caller,
    user_id: String,
    id: ItemId,
    approve: bool,
) -> Result<Response, ErrorCode> {
    let view = backend.cluster.ring();
    let stored = match route_user(&view, backend.cluster.node(), &user_id, false) {
        Route::Local => {
            backend
                .node
                .decide_review(&user_id, id, approve, &caller.key_id)
                .await?
        }
        Route::Forward(owner) | Route::NotOwner(owner) => {
            let Some(peers) = &backend.peers else {
                return Err(ErrorCode::Unavailable {
                    reason: format!("{owner} leads the item and this node has no links"),
                });
            };
            let forward = Forward::Review {
                caller: caller.clone(),
                user_id: user_id.clone(),
                id,
                approve,
            };
            match peers.forward(&owner, forward).await? {
                ForwardReply::Get(Some(stored)) => *stored,
                other => {
                    debug!(%owner, reply = ?other, "unexpected answer to a review");
                    return Err(ErrorCode::Unavailable {
                        reason: format!("{owner} answered a review with something else"),
                    });
                }
            }
        }
    };
    let event = EventKind::ItemReviewed {
        item: id,
        user_id,
        approved: approve,
        by: caller.key_id.to_string(),
    };
    crate::events::record(&backend.node, backend.peers.as_deref(), vec![event]).await?;
    Ok(Response::Item(Some(Box::new(stored))))
}

/// How often the items this node flagged as a leader are recorded as events.
pub const FLAGGED_INTERVAL: Duration = Duration::from_secs(1);

/// Records the items this node flagged as `item_flagged` events, a page at a time,
/// every [`FLAGGED_INTERVAL`] until `shutdown` (and once more then, so a clean stop
/// loses none). A page that cannot be recorded is put back in no queue: the review
/// queue itself still lists its items.
pub async fn record_flagged(backend: Backend, shutdown: CancellationToken) {
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(FLAGGED_INTERVAL) => false,
        };
        loop {
            let kinds = backend.node.take_flagged(MAX_EVENTS_PAGE as usize);
            if kinds.is_empty() {
                break;
            }
            let peers = backend.peers.as_deref();
            if let Err(error) = crate::events::record(&backend.node, peers, kinds).await {
                warn!(%error, "item_flagged events not recorded");
                break;
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use chorus_protocol::{Item, Kind, NodeId, Receipt, Status};

    use super::*;

    fn stored(user: &str) -> StoredItem {
        let item = Item::new(user, Kind::Text);
        StoredItem {
            receipt: Receipt {
                id: item.id,
                status: Status::Flagged {
                    reasons: vec!["pii".into()],
                },
                alignment_score: None,
                owner: NodeId("a".into()),
                replicas: vec![],
                stored_at: 1,
                enrichment: chorus_protocol::Enrichment::NotConfigured,
            },
            item,
        }
    }

    #[test]
    fn merged_pages_keep_the_queue_order_and_cut_at_the_limit() {
        let users: Vec<String> = (0..6).map(|i| format!("user-{i}")).collect();
        let all: Vec<StoredItem> = users.iter().map(|u| stored(u)).collect();
        let mut ordered = all.clone();
        ordered.sort_by_key(|s| queue_key(s, 16));
        let (a, b): (Vec<_>, Vec<_>) = all.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let a = a.into_iter().map(|(_, s)| s).collect();
        let b = b.into_iter().map(|(_, s)| s).collect();
        let Response::Page { items, next } = merge(vec![(a, None), (b, None)], 4, 16) else {
            unreachable!()
        };
        assert_eq!(items, ordered[..4]);
        assert_eq!(next, Some(PageToken(queue_key(&ordered[3], 16))));
        let Response::Page { items, next } = merge(vec![(ordered.clone(), None)], 10, 16) else {
            unreachable!()
        };
        assert_eq!(items.len(), 6);
        assert_eq!(next, None);
    }
}
