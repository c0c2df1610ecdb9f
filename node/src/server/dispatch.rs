//! Maps one authorised request to where it is served — this node's actors, or its
//! owner over a link — and back to a response.

use chorus_actors::BatchOutcome;
use chorus_actors::Caller;
use chorus_protocol::{
    ErrorCode, GroupOutcome, Item, Receipt, Request, Response, Role, SubmitHead, check_batch_len,
    merge_outcomes, split_by,
};
use futures_util::future::join_all;
use tracing::debug;

use super::Backend;
use super::fan_out::{FanOut, ask_members, list};
use crate::cluster::key_sync;
use crate::cluster::routing::{Forward, ForwardReply, Route, route_user};

/// Answers one request made by `caller`.
pub async fn dispatch(
    backend: &Backend,
    caller: &Caller,
    request: Request,
) -> Result<Response, ErrorCode> {
    if let Some(role) = request.required_role()
        && !caller.role.allows(role)
    {
        return Err(ErrorCode::Forbidden);
    }
    let node = &backend.node;
    // Every request's own limits (batch sizes, page limits, name lengths), before it
    // goes anywhere: a forwarded one is checked again by its owner.
    request.validate_shape()?;
    match request {
        Request::Routed { request, .. } => {
            serve(backend, caller, Request::from(request), true).await
        }
        Request::RingSnapshot => Ok(Response::Ring(backend.cluster.ring().snapshot())),
        Request::Get(id) => get(backend, id).await,
        Request::CreateApiKey { role, name } => {
            let key = node.create_api_key(role, name).await?;
            push_key(backend, chorus_actors::store::key_hash(&key)).await;
            Ok(Response::ApiKeyCreated { key, role })
        }
        Request::ListApiKeys => node
            .list_api_keys()
            .await
            .map(|keys| Response::ApiKeys(keys.iter().map(|entry| entry.info()).collect())),
        Request::RevokeApiKey { id } => {
            let entry = node.revoke_api_key(id).await?;
            push_key(backend, entry.hash).await;
            Ok(Response::ApiKeyRevoked(entry.info()))
        }
        Request::Functions { name, after, limit } => {
            let query = crate::functions::FunctionQuery { name, after, limit };
            backend.functions.page(backend, query).await
        }
        Request::Events {
            types,
            since_ms,
            until_ms,
            after,
            limit,
        } => crate::events::page(node, types, since_ms, until_ms, after, limit).await,
        Request::FollowEvents {
            types,
            cursor,
            limit,
            wait_ms,
        } => {
            let wait = std::time::Duration::from_millis(u64::from(wait_ms));
            crate::events::follow(node, types, cursor, limit, wait).await
        }
        Request::ChangeVersion { function, change } => {
            let peers = backend.peers.as_deref();
            crate::events::change_version(node, peers, caller, function, change).await
        }
        Request::ReviewQueue { after, limit } => crate::review::page(backend, after, limit).await,
        Request::DeleteUser { user_id } => crate::users::delete(backend, caller, user_id).await,
        Request::Insights(query) => backend.insights.answer(backend, caller, query).await,
        Request::ExportUser {
            user_id,
            after,
            limit,
        } => crate::users::export_page(backend, caller, user_id, after, limit).await,
        Request::Review {
            user_id,
            id,
            approve,
        } => crate::review::decide(backend, caller, user_id, id, approve).await,
        Request::FunctionStatus { names } => node
            .function_status(names)
            .await
            .map(Response::FunctionStatus),
        request => serve(backend, caller, request, false).await,
    }
}

/// Sends a key just created or revoked here to every linked peer, waiting a moment
/// for them (see [`key_sync::push`]); the change is durable here already, and a peer
/// that misses the push learns it by anti-entropy, so nothing here can fail the request.
async fn push_key(backend: &Backend, hash: chorus_actors::KeyHash) {
    let Some(peers) = &backend.peers else {
        return;
    };
    match backend.node.api_key_delta(hash).await {
        Ok(delta) => {
            key_sync::push(peers.as_ref(), delta).await;
        }
        Err(error) => {
            tracing::warn!(%error, "reading a key to push failed; anti-entropy will carry it")
        }
    }
}

/// The refusal a submit gets at once from the head of its frame, before its body is
/// decoded: when the caller may submit, this node owns the user, and the write path
/// refuses the item's tier now. `None` sends the frame down the full path (a submit for
/// another owner is that owner's to refuse).
pub fn refuse_early(
    backend: &Backend,
    caller: &Caller,
    head: &SubmitHead<'_>,
) -> Option<ErrorCode> {
    if !caller.role.allows(Role::Submit) {
        return None;
    }
    // The door first: two atomic reads, so an admitted submit pays no ring lookup here.
    let refusal = backend.node.refusal(head.tier)?;
    let view = backend.cluster.ring();
    match route_user(&view, backend.cluster.node(), head.user_id, head.routed) {
        Route::Local => Some(refusal),
        Route::Forward(_) | Route::NotOwner(_) => None,
    }
}

/// Serves a request about users' items here or at their owners; `routed`: the client
/// sent it to the owner it believes in, so a wrong guess is answered `NotOwner`.
async fn serve(
    backend: &Backend,
    caller: &Caller,
    request: Request,
    routed: bool,
) -> Result<Response, ErrorCode> {
    let me = backend.cluster.node();
    let view = backend.cluster.ring();
    match request {
        Request::Submit(item) => match route_user(&view, me, &item.user_id, routed) {
            Route::Local => backend
                .node
                .submit(caller, item)
                .await
                .map(Response::Receipt),
            Route::NotOwner(owner) => Err(ErrorCode::NotOwner { owner }),
            Route::Forward(owner) => {
                let mut outcomes = submit_at(backend, &owner, caller, vec![item]).await?;
                match (outcomes.pop(), outcomes.is_empty()) {
                    (Some(outcome), true) => outcome.map(Response::Receipt),
                    _ => Err(ErrorCode::Internal { request_id: 0 }),
                }
            }
        },
        Request::SubmitBatch(items) => {
            // The limit is the whole batch's: its parts under it must not let it through.
            check_batch_len(items.len())?;
            let total = items.len();
            let groups = split_by(items, |item| view.leader_of_user(&item.user_id).1.clone());
            if let Some(group) = groups.iter().find(|g| &g.owner != me)
                && routed
            {
                return Err(ErrorCode::NotOwner {
                    owner: group.owner.clone(),
                });
            }
            let parts = join_all(groups.into_iter().map(|group| async move {
                let outcomes = if &group.owner == me {
                    backend.node.submit_batch(caller, group.items).await
                } else {
                    submit_at(backend, &group.owner, caller, group.items).await
                };
                (group.positions, outcomes)
            }))
            .await;
            merge_parts(total, parts).map(Response::Batch)
        }
        Request::ListByUser {
            user_id,
            after,
            limit,
        } => match route_user(&view, me, &user_id, routed) {
            Route::Local => backend
                .node
                .list_by_user(user_id, after, limit)
                .await
                .map(|(items, next)| Response::Page { items, next }),
            Route::NotOwner(owner) => Err(ErrorCode::NotOwner { owner }),
            Route::Forward(owner) => {
                let request = Forward::ListByUser {
                    user_id,
                    after,
                    limit,
                };
                match forward(backend, &owner, request).await? {
                    ForwardReply::List(items, next) => Ok(Response::Page { items, next }),
                    _ => Err(ErrorCode::Internal { request_id: 0 }),
                }
            }
        },
        other => Err(ErrorCode::invalid(
            "request",
            format!("{} cannot be routed", other.kind()),
        )),
    }
}

/// Stores `items` at `owner` through its link.
async fn submit_at(
    backend: &Backend,
    owner: &chorus_protocol::NodeId,
    caller: &Caller,
    items: Vec<Item>,
) -> Result<Vec<Result<Receipt, ErrorCode>>, ErrorCode> {
    let request = Forward::Submit {
        caller: caller.clone(),
        items,
    };
    match forward(backend, owner, request).await? {
        ForwardReply::Submit(outcomes) => Ok(outcomes),
        _ => Err(ErrorCode::Internal { request_id: 0 }),
    }
}

/// Hands `request` to `owner`, or says at once that the owner is out of reach.
async fn forward(
    backend: &Backend,
    owner: &chorus_protocol::NodeId,
    request: Forward,
) -> Result<ForwardReply, ErrorCode> {
    match &backend.peers {
        Some(peers) => {
            debug!(to = %owner, kind = request.kind(), "forwarding");
            peers.forward(owner, request).await
        }
        None => Err(ErrorCode::Unavailable {
            reason: format!("no link to {owner}, the owner"),
        }),
    }
}

/// Puts each owner's outcomes back at their positions in the caller's batch. An owner
/// that failed as a whole fails its own positions only.
fn merge_parts(total: usize, parts: Vec<GroupOutcome>) -> BatchOutcome {
    // A batch served in one place keeps its whole-batch error (e.g. CircuitOpen).
    if parts.len() == 1 {
        let (_, outcomes) = parts.into_iter().next().expect("one part");
        return outcomes;
    }
    merge_outcomes(total, parts).ok_or(ErrorCode::Internal { request_id: 0 })
}

/// Reads an item by id. An id that names its partition (as the SDK's and the CLI's
/// do) is read at that partition's leader alone: every stored item with a hint is in
/// the partition it names (the store refuses any other), so the leader's `None` is the
/// answer. Any other id may be in any partition, so every member is asked (counted in
/// `chorus_get_fan_outs_total`); a miss everywhere is `None` only if every member answered (an
/// unreachable one might hold it, so the answer is then `Unavailable`, never a wrong
/// `None`).
async fn get(backend: &Backend, id: chorus_protocol::ItemId) -> Result<Response, ErrorCode> {
    let me = backend.cluster.node();
    let view = backend.cluster.ring();
    if let Some(partition) = id.partition_hint().filter(|&p| p < view.ring.partitions()) {
        let leader = view.leader(partition).clone();
        return at_leader(backend, &leader, id).await.map(visible);
    }
    metrics::counter!(crate::metrics::catalog::GET_FAN_OUTS_TOTAL).increment(1);
    let found = match backend.node.get(id).await? {
        Some(found) => Box::new(found),
        None => match ask_members(backend, Forward::Get { id }, |reply| match reply {
            ForwardReply::Get(found) => found,
            _ => None,
        })
        .await
        {
            FanOut::Found(found) => found,
            FanOut::Missing { unreachable } if unreachable.is_empty() => {
                return Ok(Response::Item(None));
            }
            FanOut::Missing { unreachable } => {
                return Err(ErrorCode::Unavailable {
                    reason: format!(
                        "not found on the reachable nodes; {} could not be asked",
                        list(&unreachable)
                    ),
                });
            }
        },
    };
    // A replica that answered may lag its leader (a deletion not applied yet): the
    // leader of the item's partition has the last word when it can be asked.
    let (_, leader) = view.leader_of_user(&found.item.user_id);
    if leader == me || found.receipt.status == chorus_protocol::Status::Deleted {
        return Ok(visible(Some(found)));
    }
    match at_leader(backend, leader, id).await {
        Ok(latest) => Ok(visible(latest)),
        Err(error) => {
            debug!(%leader, %error, "the item's leader could not confirm it; answering a replica's copy");
            Ok(visible(Some(found)))
        }
    }
}

/// The item as `leader` holds it (this node's store if it is the leader).
async fn at_leader(
    backend: &Backend,
    leader: &chorus_protocol::NodeId,
    id: chorus_protocol::ItemId,
) -> Result<Option<Box<chorus_protocol::StoredItem>>, ErrorCode> {
    if leader == backend.cluster.node() {
        return Ok(backend.node.get(id).await?.map(Box::new));
    }
    match forward(backend, leader, Forward::Get { id }).await? {
        ForwardReply::Get(found) => Ok(found),
        _ => Err(ErrorCode::Internal { request_id: 0 }),
    }
}

/// What a client is answered for an item found: a tombstone is a deleted item, absent.
fn visible(found: Option<Box<chorus_protocol::StoredItem>>) -> Response {
    Response::Item(found.filter(|stored| stored.receipt.status != chorus_protocol::Status::Deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_owner_fills_its_own_positions() {
        let bad = ErrorCode::Unavailable {
            reason: "down".into(),
        };
        let merged = merge_parts(
            3,
            vec![
                (
                    vec![0, 2],
                    Ok(vec![Err(ErrorCode::Timeout), Err(ErrorCode::Timeout)]),
                ),
                (vec![1], Err(bad.clone())),
            ],
        )
        .unwrap();
        assert_eq!(
            merged,
            vec![Err(ErrorCode::Timeout), Err(bad), Err(ErrorCode::Timeout)]
        );
    }
}
