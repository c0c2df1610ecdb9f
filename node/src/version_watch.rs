//! Watching every function version against the `[functions]` rule, and recording the
//! moment one starts or stops requiring an update as an event (`requires_update`,
//! `update_cleared`) that every member then holds.
//!
//! One member judges at a time: the live member whose id sorts first, so that a
//! crossing is recorded once, not once per member. Two members that briefly both
//! believe they judge (while their views of the ring differ) can each record the same
//! crossing; the status both show is the same, as the latest event sets it. A version
//! is judged only from counts that cover every partition, so a partition between
//! leaders never makes a version look better or worse than it is.

use std::time::Duration;

use chorus_protocol::{
    ErrorCode, EventKind, FunctionVersion, MAX_FUNCTIONS_PAGE, Response, UpdateRule,
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span};

use crate::functions::{FunctionQuery, gather};
use crate::server::Backend;

/// What judging one version against what the events last said of it calls for.
pub fn change_for(version: &FunctionVersion, held: bool) -> Option<EventKind> {
    let needs = !version.requires_update.0.is_empty();
    match (needs, held) {
        (true, false) => Some(EventKind::RequiresUpdate {
            function: version.function.clone(),
            reasons: version.requires_update.clone(),
        }),
        (false, true) => Some(EventKind::UpdateCleared {
            function: version.function.clone(),
        }),
        _ => None,
    }
}

/// Whether this node is the one that judges: the first of the live members by id.
fn judges(backend: &Backend) -> bool {
    let ring = backend.cluster.ring();
    ring.live
        .iter()
        .next()
        .is_none_or(|first| first == backend.cluster.node())
}

/// One pass over every version: the events recorded (0 when the counts did not cover
/// every partition, or this node does not judge).
pub async fn check(backend: &Backend, rule: &UpdateRule) -> Result<usize, ErrorCode> {
    if !judges(backend) {
        return Ok(0);
    }
    let mut after = None;
    let mut recorded = 0;
    loop {
        let query = FunctionQuery {
            name: None,
            after,
            limit: MAX_FUNCTIONS_PAGE,
        };
        let Response::Functions {
            versions,
            next,
            covered: (counted, of),
        } = gather(backend, query, rule).await?
        else {
            return Err(ErrorCode::Internal { request_id: 0 });
        };
        if counted != of {
            debug!(counted, of, "versions not judged: counts miss partitions");
            return Ok(recorded);
        }
        let held = backend
            .node
            .requiring_update(versions.iter().map(|v| v.function.clone()).collect())
            .await?;
        let changes: Vec<EventKind> = versions
            .iter()
            .zip(held)
            .filter_map(|(version, held)| change_for(version, held))
            .collect();
        if !changes.is_empty() {
            let peers = backend.peers.as_deref();
            recorded += crate::events::record(&backend.node, peers, changes)
                .await?
                .len();
        }
        match next {
            Some(next) => after = Some(next),
            None => return Ok(recorded),
        }
    }
}

/// Runs [`check`] every `interval` until `shutdown`.
pub async fn run(
    backend: Backend,
    rule: UpdateRule,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let pass = check(&backend, &rule).instrument(info_span!("version_watch"));
        let outcome = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            outcome = pass => outcome,
        };
        match outcome {
            Ok(0) => {}
            Ok(recorded) => info!(recorded, "function versions changed status"),
            Err(error) => debug!(%error, "judging function versions failed; trying again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use chorus_protocol::{FunctionRef, UpdateReason, UpdateReasons, VersionStats};

    use super::*;

    fn version(reasons: Vec<UpdateReason>) -> FunctionVersion {
        FunctionVersion {
            function: FunctionRef {
                name: "search".into(),
                version: "2".into(),
            },
            stats: VersionStats::default(),
            requires_update: UpdateReasons(reasons),
        }
    }

    #[test]
    fn only_a_crossing_either_way_is_recorded() {
        let low = vec![UpdateReason::LowRating {
            mean: 2.0,
            over: 60,
        }];
        assert!(matches!(
            change_for(&version(low.clone()), false),
            Some(EventKind::RequiresUpdate { .. })
        ));
        assert_eq!(change_for(&version(low), true), None);
        assert!(matches!(
            change_for(&version(vec![]), true),
            Some(EventKind::UpdateCleared { .. })
        ));
        assert_eq!(change_for(&version(vec![]), false), None);
    }
}
