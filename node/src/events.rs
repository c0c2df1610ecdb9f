//! Serving the cluster's events to clients: pages by time, follows that wait for the
//! next event (a long poll, as Kafka's fetch waits up to its `max.wait.ms`), and the
//! operator's version changes, which are recorded as events and pushed to the peers.
//!
//! Every member holds every event (see [`event_sync`](crate::cluster::event_sync)), so
//! each of these is answered by the node asked, without a fan-out.

use std::time::Duration;

use chorus_actors::{Caller, NodeHandle};
use chorus_protocol::{
    ErrorCode, Event, EventCursor, EventKind, EventPosition, EventTypes, FunctionRef, Response,
    VersionChange,
};
use tokio::time::Instant;

use crate::cluster::event_sync;
use crate::cluster::routing::Forwarder;

/// A page of events recorded in `[since_ms, until_ms)` after `after`.
pub async fn page(
    node: &NodeHandle,
    types: EventTypes,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    after: Option<EventPosition>,
    limit: u32,
) -> Result<Response, ErrorCode> {
    let (events, next) = node
        .events_page(types, since_ms, until_ms, after, limit as usize)
        .await?;
    Ok(Response::Events { events, next })
}

/// The events past `cursor`, waiting up to `wait` for the first one. The answer's
/// cursor moves past events of other types too, so an idle filter does not make the
/// next follow read them again.
pub async fn follow(
    node: &NodeHandle,
    types: EventTypes,
    mut cursor: EventCursor,
    limit: u32,
    wait: Duration,
) -> Result<Response, ErrorCode> {
    let deadline = Instant::now() + wait;
    // Subscribed before the first read, so an event added between the read and the
    // wait still wakes this follow.
    let mut added = node.subscribe_events();
    loop {
        added.borrow_and_update();
        let (events, next) = node.follow_events(cursor, types, limit as usize).await?;
        cursor = next;
        if !events.is_empty() || Instant::now() >= deadline {
            return Ok(Response::Followed { events, cursor });
        }
        tokio::select! {
            changed = added.changed() => {
                if changed.is_err() {
                    return Ok(Response::Followed { events, cursor });
                }
            }
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Records `kinds` as this node's events and pushes them to the linked peers, waiting
/// a moment for them (a peer that misses the push learns them by anti-entropy).
pub async fn record(
    node: &NodeHandle,
    peers: Option<&dyn Forwarder>,
    kinds: Vec<EventKind>,
) -> Result<Vec<Event>, ErrorCode> {
    let events = node.record_events(kinds).await?;
    if let Some(peers) = peers {
        event_sync::push(peers, &events).await;
    }
    Ok(events)
}

/// Deprecates, reactivates or makes current a version for `caller` (audited and
/// recorded by the node handle), then pushes the event to the peers.
pub async fn change_version(
    node: &NodeHandle,
    peers: Option<&dyn Forwarder>,
    caller: &Caller,
    function: FunctionRef,
    change: VersionChange,
) -> Result<Response, ErrorCode> {
    let event = node
        .change_version(function, change, caller.key_id.to_string())
        .await?;
    if let Some(peers) = peers {
        event_sync::push(peers, std::slice::from_ref(&event)).await;
    }
    Ok(Response::Event(event))
}
