//! Replicating the cluster's events to every member.
//!
//! Events are a union of origin-numbered logs (see `chorus_protocol`'s events), so any
//! member that merges another's holds both, in any order. They spread on the same
//! three paths as the API keys ([`key_sync`](super::key_sync)):
//!
//! 1. **Push**: events recorded here go to every linked peer at once; the recording
//!    request waits up to [`key_sync::PUSH_WAIT`](super::key_sync::PUSH_WAIT) for them.
//! 2. **Link up**: a round runs at once when a link comes up.
//! 3. **Anti-entropy**: every [`ANTI_ENTROPY_INTERVAL`] each linked peer's heads are
//!    compared with ours, and what the peer holds past ours is pulled, a page at a
//!    time (each side pulls what it lacks, so a round in both directions leaves both
//!    with the union).
//!
//! An event is durable on its origin before anyone reads it, and on every member
//! linked at the time once its push is taken; otherwise within one round of the link
//! working again.

use std::sync::Arc;
use std::time::Duration;

use chorus_actors::NodeHandle;
use chorus_protocol::{ErrorCode, Event, MAX_EVENTS_PAGE, NodeId};
use futures_util::future::join_all;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

use super::key_sync::{PUSH_WAIT, rounds, with_every_peer};
use super::routing::{Forward, ForwardReply, Forwarder};

/// How often each linked peer's event heads are compared with this node's.
pub const ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(2);
/// Most pages one exchange pulls from one peer before it leaves the rest to the
/// next round (so a member far behind does not hold a round for long).
const MAX_PAGES_PER_EXCHANGE: usize = 64;

/// Events learned from peers (pushes and anti-entropy).
pub const EVENTS_SYNCED_TOTAL: &str = "chorus_events_synced_total";

/// Counts `merged` events learned from a peer.
pub fn record_events_synced(merged: usize) {
    metrics::counter!(EVENTS_SYNCED_TOTAL).increment(merged as u64);
}

/// Sends `events` to every linked peer at once (a page at a time) and waits for their
/// answers up to [`PUSH_WAIT`] in all; returns how many peers took every page. A peer
/// that did not is reached by anti-entropy.
pub async fn push(peers: &dyn Forwarder, events: &[Event]) -> usize {
    if events.is_empty() {
        return 0;
    }
    let targets = peers.peers();
    let sends = targets.iter().map(|peer| send_pages(peers, peer, events));
    match tokio::time::timeout(PUSH_WAIT, join_all(sends)).await {
        Ok(outcomes) => outcomes.iter().filter(|o| o.is_ok()).count(),
        Err(_) => {
            debug!(
                peers = targets.len(),
                "event push not answered in time; anti-entropy will carry it"
            );
            0
        }
    }
}

async fn send_pages(
    peers: &dyn Forwarder,
    peer: &NodeId,
    events: &[Event],
) -> Result<(), ErrorCode> {
    for page in events.chunks(MAX_EVENTS_PAGE as usize) {
        let request = Forward::PushEvents {
            events: page.to_vec(),
        };
        peers.forward(peer, request).await?;
    }
    Ok(())
}

/// Pulls from `peer` the events it holds past this node's heads; returns how many
/// were new here.
pub async fn exchange(
    node: &NodeHandle,
    peers: &dyn Forwarder,
    peer: &NodeId,
) -> Result<usize, ErrorCode> {
    let theirs = match peers.forward(peer, Forward::EventHeads).await? {
        ForwardReply::EventHeads(heads) => heads,
        _ => return Err(unexpected(peer)),
    };
    let mut learned = 0;
    for _ in 0..MAX_PAGES_PER_EXCHANGE {
        let ours = node.event_heads().await?;
        let behind = theirs
            .0
            .iter()
            .any(|(origin, head)| ours.seen(origin) < *head);
        if !behind {
            break;
        }
        let events = match peers
            .forward(peer, Forward::EventsAfter { cursor: ours })
            .await?
        {
            ForwardReply::Events(events) => events,
            _ => return Err(unexpected(peer)),
        };
        let full = events.len() == MAX_EVENTS_PAGE as usize;
        if events.is_empty() {
            break;
        }
        let merged = node.merge_events(events).await?;
        record_events_synced(merged);
        learned += merged;
        if !full || merged == 0 {
            break;
        }
    }
    Ok(learned)
}

fn unexpected(peer: &NodeId) -> ErrorCode {
    ErrorCode::Unavailable {
        reason: format!("{peer} answered an event exchange with something else"),
    }
}

/// Runs anti-entropy until `shutdown`: a round with every linked peer each `interval`,
/// at once when a link comes up, and soon again after a round that missed a peer.
pub async fn run(
    node: NodeHandle,
    peers: Arc<dyn Forwarder>,
    link_ups: watch::Receiver<u64>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    rounds(link_ups, interval, shutdown, || {
        let (node, peers) = (&node, &*peers);
        with_every_peer(peers, "events", move |peer| async move {
            exchange(node, peers, &peer).await
        })
        .instrument(info_span!("event_sync"))
    })
    .await
}
