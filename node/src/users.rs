//! Users' rights across the cluster: a user's export, served a page at a time by the
//! user's leader, and a user's deletion, made by the leader (a tombstone per item,
//! answered once a write quorum holds them all). The node the client asked records
//! each as an event (`user_exported` once the last page is served, `user_deleted`).
//!
//! An export's page token is this node's own: the items served so far (u64 BE), then
//! the leader's listing token, so the last page knows how many the export held without
//! counting the user's items again.

use chorus_actors::Caller;
use chorus_protocol::{ErrorCode, EventKind, ItemId, PageToken, Response};
use tracing::debug;

use crate::cluster::routing::{Forward, ForwardReply, Route, route_user};
use crate::server::Backend;

/// Splits an export token into the items served so far and the listing token.
fn split_token(token: Option<PageToken>) -> Result<(u64, Option<PageToken>), ErrorCode> {
    let Some(PageToken(bytes)) = token else {
        return Ok((0, None));
    };
    let Some((served, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(ErrorCode::invalid(
            "after",
            "not a token of this export".to_string(),
        ));
    };
    Ok((u64::from_be_bytes(*served), Some(PageToken(rest.to_vec()))))
}

/// An export token after `served` items, where the listing goes on from `next`.
fn join_token(served: u64, next: PageToken) -> PageToken {
    let mut bytes = served.to_be_bytes().to_vec();
    bytes.extend_from_slice(&next.0);
    PageToken(bytes)
}

/// Answers `Request::ExportUser`: a page of the user's items from their leader.
pub async fn export_page(
    backend: &Backend,
    caller: &Caller,
    user_id: String,
    after: Option<PageToken>,
    limit: u32,
) -> Result<Response, ErrorCode> {
    let (served, after) = split_token(after)?;
    let view = backend.cluster.ring();
    let (items, next) = match route_user(&view, backend.cluster.node(), &user_id, false) {
        Route::Local => {
            backend
                .node
                .list_by_user(user_id.clone(), after, limit)
                .await?
        }
        Route::Forward(owner) | Route::NotOwner(owner) => {
            let forward = Forward::ListByUser {
                user_id: user_id.clone(),
                after,
                limit,
            };
            match forward_to(backend, &owner, forward).await? {
                ForwardReply::List(items, next) => (items, next),
                other => return Err(unexpected(&owner, &other)),
            }
        }
    };
    let served = served + items.len() as u64;
    let next = match next {
        Some(next) => Some(join_token(served, next)),
        None => {
            let event = EventKind::UserExported {
                user_id,
                items: served,
                by: caller.key_id.to_string(),
            };
            crate::events::record(&backend.node, backend.peers.as_deref(), vec![event]).await?;
            None
        }
    };
    Ok(Response::Page { items, next })
}

/// Answers `Request::DeleteUser`: the deletion made by the user's leader a part at a
/// time (each part its own call, here or over a link, well inside a forward's timeout),
/// then recorded as an event. A second pass takes what was written meanwhile; it starts
/// below every id, which is not a first part, so it is not audited again.
pub async fn delete(
    backend: &Backend,
    caller: &Caller,
    user_id: String,
) -> Result<Response, ErrorCode> {
    let mut items = 0;
    for pass in 0..2 {
        let mut after = (pass > 0).then_some(ItemId(0));
        loop {
            let (count, next) = delete_part(backend, caller, &user_id, after).await?;
            items += count;
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    let event = EventKind::UserDeleted {
        user_id,
        items,
        by: caller.key_id.to_string(),
    };
    crate::events::record(&backend.node, backend.peers.as_deref(), vec![event]).await?;
    Ok(Response::UserDeleted { items })
}

/// One part of a deletion at the user's leader (see `NodeHandle::delete_user_part`).
async fn delete_part(
    backend: &Backend,
    caller: &Caller,
    user_id: &str,
    after: Option<ItemId>,
) -> Result<(u64, Option<ItemId>), ErrorCode> {
    let view = backend.cluster.ring();
    match route_user(&view, backend.cluster.node(), user_id, false) {
        Route::Local => {
            backend
                .node
                .delete_user_part(user_id.to_string(), after, &caller.key_id)
                .await
        }
        Route::Forward(owner) | Route::NotOwner(owner) => {
            let forward = Forward::DeleteUser {
                caller: caller.clone(),
                user_id: user_id.to_string(),
                after,
            };
            match forward_to(backend, &owner, forward).await? {
                ForwardReply::Deleted(count, next) => Ok((count, next)),
                other => Err(unexpected(&owner, &other)),
            }
        }
    }
}

async fn forward_to(
    backend: &Backend,
    owner: &chorus_protocol::NodeId,
    forward: Forward,
) -> Result<ForwardReply, ErrorCode> {
    match &backend.peers {
        Some(peers) => peers.forward(owner, forward).await,
        None => Err(ErrorCode::Unavailable {
            reason: format!("{owner} leads the user and this node has no links"),
        }),
    }
}

fn unexpected(owner: &chorus_protocol::NodeId, reply: &ForwardReply) -> ErrorCode {
    debug!(%owner, ?reply, "unexpected answer");
    ErrorCode::Unavailable {
        reason: format!("{owner} answered with something else"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_token_carries_the_count_and_the_listing_token() {
        let token = join_token(1_500, PageToken(vec![1, 2, 3]));
        assert_eq!(
            split_token(Some(token)).unwrap(),
            (1_500, Some(PageToken(vec![1, 2, 3])))
        );
        assert_eq!(split_token(None).unwrap(), (0, None));
        assert!(split_token(Some(PageToken(vec![1, 2]))).is_err());
    }
}
