//! The forward receiver: the actor peers call to run a request on this node. It joins
//! the process group named after this node, which ractor_cluster mirrors to every peer
//! once their session has synchronised; it runs each request on the local
//! `NodeHandle` (never forwarding it again) in a task of its own, at most
//! `max_in_flight` at once.

use std::sync::Arc;

use chorus_actors::{KeySet, KeyStatus, NodeHandle};
use chorus_protocol::{ErrorCode, EventTypes, MAX_EVENTS_PAGE, NodeId};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, error};

use crate::cluster::key_sync::record_keys_synced;
use crate::cluster::replication::digest::range_digests;
use crate::cluster::standing::Standings;
use crate::cluster::state::ClusterState;

use super::wire::{Forward, ForwardMsg, ForwardReply, decode_request, encode_reply, overload_tier};

/// The retry hint of a receiver that is full.
const FULL_RETRY_AFTER_MS: u64 = 100;

/// The process group a node's forward receiver joins.
pub fn group_name(node: &NodeId) -> String {
    format!("chorus.forward.{}", node.0)
}

/// The forward receiver actor.
pub struct ForwardReceiver;

/// What the receiver is started with.
pub struct ReceiverArgs {
    /// This node.
    pub node_id: NodeId,
    /// Where requests run.
    pub node: NodeHandle,
    /// Requests run at once; more are refused with `Overloaded`.
    pub max_in_flight: usize,
    /// The cluster state members' standings merge into (none: standings are refused).
    pub cluster: Option<ClusterState>,
}

/// The receiver's state: the node and the tasks running requests.
pub struct ReceiverState {
    node: NodeHandle,
    cluster: Option<ClusterState>,
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
}

impl Actor for ForwardReceiver {
    type Msg = ForwardMsg;
    type State = ReceiverState;
    type Arguments = ReceiverArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ReceiverArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(group_name(&args.node_id), vec![myself.get_cell()]);
        Ok(ReceiverState {
            node: args.node,
            cluster: args.cluster,
            slots: Arc::new(Semaphore::new(args.max_in_flight)),
            tasks: TaskTracker::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.tasks.close();
        state.tasks.wait().await;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let ForwardMsg::Forward(payload, reply) = message;
        let (requests, request) = match decode_request(&payload) {
            Ok(decoded) => decoded,
            Err(e) => {
                debug!(error = %e, "malformed forward");
                let _ = reply.send(encode_reply(Err(e)));
                return Ok(());
            }
        };
        let Ok(slot) = state.slots.clone().try_acquire_owned() else {
            let _ = reply.send(encode_reply(Err(ErrorCode::Overloaded {
                tier: overload_tier(&request),
                retry_after_ms: FULL_RETRY_AFTER_MS,
            })));
            return Ok(());
        };
        let node = state.node.clone();
        let cluster = state.cluster.clone();
        // A forward of a client's request runs under that request's id (sent by a
        // `chorus-link/2` peer; an older peer's gets one minted here), on a span of its
        // own, so that every node a request touches logs it under the same id. A forward
        // for several requests at once (a shipment of the records they wrote) gets an id
        // of its own and names theirs on its span.
        let id = match requests[..] {
            [id] => id,
            _ => crate::request_id::mint(),
        };
        let span = debug_span!(
            "forward",
            request_id = id,
            kind = request.kind(),
            request_ids = tracing::field::Empty
        );
        if requests.len() > 1 {
            span.record("request_ids", tracing::field::debug(&requests));
        }
        state.tasks.spawn(
            async move {
                let mut outcome = match request {
                    Forward::Standings { set } => standings(cluster.as_ref(), set),
                    Forward::FunctionStats { query } => {
                        function_stats(&node, cluster.as_ref(), query).await
                    }
                    Forward::ReviewPage { after, limit } => {
                        review_page(&node, cluster.as_ref(), after, limit).await
                    }
                    Forward::FacetStats { days } => match cluster.as_ref() {
                        Some(cluster) => crate::insights::facet_report(&node, cluster, days)
                            .await
                            .map(ForwardReply::FacetStats),
                        None => Err(ErrorCode::Unavailable {
                            reason: "this node keeps no ring".into(),
                        }),
                    },
                    request => crate::request_id::serve(id, execute(&node, request)).await,
                };
                if stamp(&mut outcome, id) {
                    error!(request_id = id, "internal error answered to a peer");
                }
                debug!(ok = outcome.is_ok(), "forward answered");
                let _ = reply.send(encode_reply(outcome));
                drop(slot);
            }
            .instrument(span),
        );
        Ok(())
    }
}

/// Most record bytes one fetch returns, whatever the asker wants: well inside a link
/// frame.
const MAX_FETCH_BYTES: usize = 4 << 20;

/// Refuses partitions this node's store does not have (a peer of another layout).
fn check_partitions(
    node: &NodeHandle,
    partitions: impl IntoIterator<Item = chorus_protocol::PartitionId>,
) -> Result<(), ErrorCode> {
    let count = node.partitions();
    match partitions.into_iter().find(|&p| p >= count) {
        Some(p) => Err(ErrorCode::invalid(
            "partition",
            format!("{p} is not below this store's {count} partitions"),
        )),
        None => Ok(()),
    }
}

/// This member's page of function stats, over the partitions the ring names it the
/// leader of.
async fn function_stats(
    node: &NodeHandle,
    cluster: Option<&ClusterState>,
    query: crate::functions::FunctionQuery,
) -> Result<ForwardReply, ErrorCode> {
    let Some(cluster) = cluster else {
        return Err(ErrorCode::Unavailable {
            reason: "this node keeps no ring".into(),
        });
    };
    crate::functions::report_blocking(node.clone(), cluster.clone(), query)
        .await
        .map(ForwardReply::FunctionStats)
}

/// This member's page of the review queue, over the partitions it leads.
async fn review_page(
    node: &NodeHandle,
    cluster: Option<&ClusterState>,
    after: Option<chorus_protocol::PageToken>,
    limit: u32,
) -> Result<ForwardReply, ErrorCode> {
    let Some(cluster) = cluster else {
        return Err(ErrorCode::Unavailable {
            reason: "this node keeps no ring".into(),
        });
    };
    let (items, next) = crate::review::report(node, cluster, after, limit).await?;
    Ok(ForwardReply::List(items, next))
}

/// Merges a peer's standings; answers with those this node holds newer.
fn standings(cluster: Option<&ClusterState>, set: Standings) -> Result<ForwardReply, ErrorCode> {
    let Some(cluster) = cluster else {
        return Err(ErrorCode::Unavailable {
            reason: "this node keeps no members' standings".into(),
        });
    };
    let newer = cluster.standings().newer_than(&set);
    cluster.merge_standings(set);
    Ok(ForwardReply::Standings(newer))
}

/// Runs a forwarded request on this node.
pub async fn execute(node: &NodeHandle, request: Forward) -> Result<ForwardReply, ErrorCode> {
    match request {
        Forward::Submit { caller, items } => node
            .submit_batch(&caller, items)
            .await
            .map(ForwardReply::Submit),
        Forward::Get { id } => node
            .get(id)
            .await
            .map(|item| ForwardReply::Get(item.map(Box::new))),
        Forward::Authenticate { key_hash } => match node.key_status(key_hash).await? {
            KeyStatus::Active(role) => Ok(ForwardReply::Role(Some(role))),
            KeyStatus::Unknown => Ok(ForwardReply::Role(None)),
            KeyStatus::Revoked => Ok(ForwardReply::Revoked),
        },
        Forward::KeyDigest => node.api_key_digest().await.map(ForwardReply::KeyDigest),
        Forward::SyncKeys { set, complete } => {
            if complete {
                let (merged, missing) = node.exchange_api_keys(set).await?;
                record_keys_synced(merged);
                Ok(ForwardReply::Keys(missing))
            } else {
                record_keys_synced(node.merge_api_keys(set).await?);
                Ok(ForwardReply::Keys(KeySet::default()))
            }
        }
        Forward::Ship { batches } => {
            check_partitions(node, batches.iter().map(|b| b.partition))?;
            node.accept_shipment(batches)
                .await
                .map(ForwardReply::Shipped)
        }
        Forward::Promise { partitions } => {
            check_partitions(node, partitions.iter().map(|&(p, _)| p))?;
            node.promise(partitions).await.map(ForwardReply::Promised)
        }
        Forward::Fetch {
            partitions,
            max_bytes,
        } => {
            check_partitions(node, partitions.iter().map(|&(p, _)| p))?;
            let mut budget = (max_bytes as usize).min(MAX_FETCH_BYTES);
            let mut records = Vec::new();
            for (partition, after) in partitions {
                if budget == 0 {
                    break;
                }
                let (page, _) = node.read_partition(partition, after, budget).await?;
                budget = budget.saturating_sub(page.iter().map(|r| r.body.len()).sum());
                records.extend(page);
            }
            Ok(ForwardReply::Records(records))
        }
        Forward::Digests {
            partition,
            expect_last,
            ranges,
        } => {
            check_partitions(node, [partition])?;
            range_digests(node, partition, expect_last, &ranges)
                .await
                .map(ForwardReply::Digests)
        }
        Forward::Repair {
            partition,
            epoch,
            expect_last,
            after,
        } => {
            check_partitions(node, [partition])?;
            node.repair_after(partition, epoch, expect_last, after)
                .await
                .map(ForwardReply::Repaired)
        }
        Forward::Tips { partitions } => {
            check_partitions(node, partitions.iter().copied())?;
            let tips = partitions
                .into_iter()
                .map(|p| node.partition_state(p).1)
                .collect();
            Ok(ForwardReply::Tips(tips))
        }
        Forward::Standings { .. } => Err(ErrorCode::Unavailable {
            reason: "members' standings are merged by the receiver".into(),
        }),
        Forward::FunctionStats { .. } => Err(ErrorCode::Unavailable {
            reason: "function stats are counted by the receiver, which knows the ring".into(),
        }),
        Forward::FacetStats { .. } => Err(ErrorCode::Unavailable {
            reason: "facets are counted by the receiver, which knows the ring".into(),
        }),
        Forward::ReviewPage { .. } => Err(ErrorCode::Unavailable {
            reason: "a review page is read by the receiver, which knows the ring".into(),
        }),
        Forward::Review {
            caller,
            user_id,
            id,
            approve,
        } => {
            if !caller.role.allows(chorus_protocol::Role::Review) {
                return Err(ErrorCode::Forbidden);
            }
            node.decide_review(&user_id, id, approve, &caller.key_id)
                .await
                .map(|stored| ForwardReply::Get(Some(Box::new(stored))))
        }
        Forward::DeleteUser {
            caller,
            user_id,
            after,
        } => {
            if !caller.role.allows(chorus_protocol::Role::Admin) {
                return Err(ErrorCode::Forbidden);
            }
            node.delete_user_part(user_id, after, &caller.key_id)
                .await
                .map(|(items, next)| ForwardReply::Deleted(items, next))
        }
        Forward::ChargePrivacy {
            key_id,
            epsilon,
            budget,
        } => {
            use chorus_actors::policy::privacy::Epsilon;
            let valid = |value: f64, field: &'static str| {
                Epsilon::new(value).map_err(|e| ErrorCode::invalid(field, e.to_string()))
            };
            let (epsilon, budget) = (valid(epsilon, "epsilon")?, valid(budget, "budget")?);
            crate::insights::charge_locally(node, &key_id, epsilon, budget)
                .await
                .map(|(remaining, event)| ForwardReply::Charged(remaining, event))
        }
        Forward::EventHeads => node.event_heads().await.map(ForwardReply::EventHeads),
        Forward::EventsAfter { cursor } => {
            cursor.validate()?;
            let (events, _) = node
                .follow_events(cursor, EventTypes::all(), MAX_EVENTS_PAGE as usize)
                .await?;
            Ok(ForwardReply::Events(events))
        }
        Forward::PushEvents { events } => {
            let taken = node.merge_events(events).await?;
            crate::cluster::event_sync::record_events_synced(taken);
            Ok(ForwardReply::EventsTaken(taken as u32))
        }
        Forward::ListByUser {
            user_id,
            after,
            limit,
        } => node
            .list_by_user(user_id, after, limit)
            .await
            .map(|(items, next)| ForwardReply::List(items, next)),
    }
}

/// Puts `id` into every unstamped `Internal` error of a forward's `outcome`, whole or
/// per submitted item; whether there was one.
fn stamp(outcome: &mut Result<ForwardReply, ErrorCode>, id: u64) -> bool {
    use crate::request_id::stamp_error;
    match outcome {
        Err(error) => stamp_error(error, id),
        Ok(ForwardReply::Submit(outcomes)) => outcomes
            .iter_mut()
            .filter_map(|o| o.as_mut().err())
            .fold(false, |stamped, error| stamp_error(error, id) | stamped),
        Ok(_) => false,
    }
}
