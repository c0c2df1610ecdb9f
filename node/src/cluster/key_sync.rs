//! Replicating the cluster's API keys and revocations to every member.
//!
//! The keys are a convergent set (see `chorus_actors::store::api_keys`): any member
//! that merges another's set holds the union, whatever the order. Three paths spread
//! them, each over the cluster links:
//!
//! 1. **Push**: a create or a revoke sends the one changed key to every linked peer at
//!    once and waits up to [`PUSH_WAIT`] before answering the admin; a peer that did
//!    not take it is left to the other two paths.
//! 2. **Link up**: when a link comes up, an anti-entropy round runs at once, so a
//!    member that returns learns what it missed without waiting for the timer.
//! 3. **Anti-entropy**: every [`ANTI_ENTROPY_INTERVAL`] each linked peer's digest is
//!    compared with ours; only a peer whose digest differs exchanges whole sets (one
//!    round trip: ours goes out, what we lack comes back). A round that could not reach
//!    a peer is tried again after [`RETRY_INTERVAL`].
//!
//! So a revocation reaches every member linked at the time before the revoke answers
//! (when its push succeeds) and otherwise within one retry or anti-entropy round of the
//! link working again: under [`ANTI_ENTROPY_INTERVAL`] plus two call timeouts.

use std::sync::Arc;
use std::time::Duration;

use chorus_actors::{KeySet, NodeHandle};
use chorus_protocol::{ErrorCode, NodeId};
use futures_util::future::join_all;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span};

use super::routing::{Forward, ForwardReply, Forwarder};

/// How often each linked peer's key digest is compared with this node's.
pub const ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(5);
/// How soon a round that could not reach every linked peer runs again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// How long a create or revoke waits for its push to reach the peers before it answers.
pub const PUSH_WAIT: Duration = Duration::from_secs(1);

/// API key records and revocations learned from peers (pushes and anti-entropy).
pub const KEYS_SYNCED_TOTAL: &str = "chorus_keys_synced_total";

/// Counts `merged` entries learned from a peer.
pub fn record_keys_synced(merged: usize) {
    metrics::counter!(KEYS_SYNCED_TOTAL).increment(merged as u64);
}

/// Sends `delta` (one key's record and revocation) to every linked peer at once and
/// waits for their answers up to [`PUSH_WAIT`]; returns how many took it. A peer that
/// did not is reached by anti-entropy.
pub async fn push(peers: &dyn Forwarder, delta: KeySet) -> usize {
    if delta.is_empty() {
        return 0;
    }
    let targets = peers.peers();
    let sends = targets.iter().map(|peer| {
        let request = Forward::SyncKeys {
            set: delta.clone(),
            complete: false,
        };
        async move { (peer, peers.forward(peer, request).await) }
    });
    match tokio::time::timeout(PUSH_WAIT, join_all(sends)).await {
        Ok(outcomes) => {
            let mut reached = 0;
            for (peer, outcome) in outcomes {
                match outcome {
                    Ok(_) => reached += 1,
                    Err(error) => {
                        debug!(%peer, %error, "key push not taken; anti-entropy will carry it")
                    }
                }
            }
            reached
        }
        Err(_) => {
            debug!(
                peers = targets.len(),
                "key push not answered in time; anti-entropy will carry it"
            );
            0
        }
    }
}

/// One anti-entropy exchange with `peer`: nothing more when the digests agree, else
/// both whole sets cross once. Returns how many entries this node learned.
pub async fn exchange(
    node: &NodeHandle,
    peers: &dyn Forwarder,
    peer: &NodeId,
) -> Result<usize, ErrorCode> {
    let ours = node.api_key_digest().await?;
    match peers.forward(peer, Forward::KeyDigest).await? {
        ForwardReply::KeyDigest(theirs) if theirs == ours => return Ok(0),
        ForwardReply::KeyDigest(_) => {}
        _ => return Err(unexpected(peer)),
    }
    let set = node.api_key_set().await?;
    let request = Forward::SyncKeys {
        set,
        complete: true,
    };
    match peers.forward(peer, request).await? {
        ForwardReply::Keys(missing) => {
            let merged = node.merge_api_keys(missing).await?;
            record_keys_synced(merged);
            Ok(merged)
        }
        _ => Err(unexpected(peer)),
    }
}

fn unexpected(peer: &NodeId) -> ErrorCode {
    ErrorCode::Unavailable {
        reason: format!("{peer} answered a key exchange with something else"),
    }
}

/// One round: an exchange with every linked peer at once. Returns whether every peer
/// was reached.
async fn round(node: &NodeHandle, peers: &dyn Forwarder) -> bool {
    with_every_peer(peers, "api keys", |peer| async move {
        exchange(node, peers, &peer).await
    })
    .await
}

/// Runs `exchange` with every linked peer at once, logging what each taught this node
/// (entries of `what`); returns whether every peer was reached.
pub async fn with_every_peer<F, R>(peers: &dyn Forwarder, what: &str, exchange: F) -> bool
where
    F: Fn(NodeId) -> R,
    R: std::future::Future<Output = Result<usize, ErrorCode>>,
{
    let targets = peers.peers();
    let outcomes = join_all(targets.iter().cloned().map(&exchange)).await;
    let mut complete = true;
    for (peer, outcome) in targets.iter().zip(outcomes) {
        match outcome {
            Ok(0) => {}
            Ok(learned) => info!(%peer, learned, "{what} learned by anti-entropy"),
            Err(error) => {
                debug!(%peer, %error, "{what} exchange failed; retrying soon");
                complete = false;
            }
        }
    }
    complete
}

/// Waits for the next link to come up; never returns once the links are gone.
async fn next_link_up(link_ups: &mut Option<watch::Receiver<u64>>) {
    match link_ups {
        Some(receiver) => {
            if receiver.changed().await.is_err() {
                *link_ups = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Runs anti-entropy until `shutdown`: a round with every linked peer each `interval`,
/// at once when a link comes up (`link_ups` changes), and after [`RETRY_INTERVAL`] when
/// a round missed a peer. Returns when `shutdown` is cancelled.
pub async fn run(
    node: NodeHandle,
    peers: Arc<dyn Forwarder>,
    link_ups: watch::Receiver<u64>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    rounds(link_ups, interval, shutdown, || {
        round(&node, &*peers).instrument(info_span!("key_sync"))
    })
    .await
}

/// Runs `round` until `shutdown`: every `interval`, at once when a link comes up, and
/// after [`RETRY_INTERVAL`] when the last one reported a peer missed (`false`).
pub async fn rounds<F, R>(
    link_ups: watch::Receiver<u64>,
    interval: Duration,
    shutdown: CancellationToken,
    mut round: F,
) where
    F: FnMut() -> R,
    R: std::future::Future<Output = bool>,
{
    let mut link_ups = Some(link_ups);
    let mut wait = interval;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = next_link_up(&mut link_ups) => {}
            _ = tokio::time::sleep(wait) => {}
        }
        let complete = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            complete = round() => complete,
        };
        wait = if complete {
            interval
        } else {
            RETRY_INTERVAL.min(interval)
        };
    }
}
