//! The open loop of one tier following a time-varying rate: each request is sent when
//! it falls due whatever is in flight, and its latency runs from the due time, so a
//! node that stalls shows its queueing instead of hiding it (no coordinated omission).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_client::{Client, ClientError, ErrorCode, Tier};
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::load::{Shape, error_kind, send};
use super::profile::Schedule;
use super::timeline::{Outcome, Timeline};

/// One tier's application: its due times, its connections and its bound on requests in
/// flight.
pub struct TierLoad {
    /// The tier it sends.
    pub tier: Tier,
    /// When its requests fall due, from the start of the load.
    pub schedule: Schedule,
    /// Most requests in flight; one more waits for a slot, and the wait counts.
    pub in_flight: usize,
    /// Its own connections, used in turn.
    pub clients: Vec<Client>,
}

/// Running totals for the progress line.
#[derive(Debug, Default)]
pub struct Live {
    /// Requests that fell due.
    pub offered: AtomicU64,
    /// Answered successfully.
    pub ok: AtomicU64,
    /// Refused with `Overloaded`, or locally by the SDK's throttle.
    pub refused: AtomicU64,
    /// Other failures.
    pub failed: AtomicU64,
}

/// What an SDK result counts as.
pub fn outcome_of(result: &Result<(), ClientError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok,
        Err(ClientError::Server(ErrorCode::Overloaded { .. }) | ClientError::Throttled) => {
            Outcome::Refused
        }
        Err(e) => Outcome::Error(error_kind(e)),
    }
}

/// Sends `load`'s requests as they fall due from `start` until its schedule ends or
/// `stop` fires, then waits for every answer.
pub async fn run_tier(
    load: TierLoad,
    shape: Arc<Shape>,
    start: Instant,
    timeline: Arc<Mutex<Timeline>>,
    stop: CancellationToken,
    live: Arc<Live>,
) {
    let TierLoad {
        tier,
        schedule,
        in_flight,
        clients,
    } = load;
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    let mut requests = tokio::task::JoinSet::new();
    for (k, due) in schedule.enumerate() {
        tokio::select! {
            () = tokio::time::sleep_until((start + due).into()) => {}
            () = stop.cancelled() => break,
        }
        lock(&timeline).offered(tier, due, start.elapsed());
        live.offered.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let client = clients[k % clients.len()].clone();
        let (shape, timeline, live) = (shape.clone(), timeline.clone(), live.clone());
        let mut request_rng = rand::rngs::SmallRng::seed_from_u64(rng.random());
        requests.spawn(async move {
            let result = send(&client, &shape, tier, &mut request_rng).await;
            let answered = start.elapsed();
            drop(slot);
            let outcome = outcome_of(&result);
            let counter = match outcome {
                Outcome::Ok => &live.ok,
                Outcome::Refused => &live.refused,
                Outcome::Error(_) => &live.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            lock(&timeline).answered(tier, due, answered, &outcome);
        });
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
}

/// The timeline, even if a request task panicked while holding it (its counts are
/// still the best there are).
pub fn lock(timeline: &Mutex<Timeline>) -> std::sync::MutexGuard<'_, Timeline> {
    timeline.lock().unwrap_or_else(|p| p.into_inner())
}

/// The progress line, once a second until `stop` fires: what fell due and what came
/// back in the last second.
pub async fn report_progress(live: Arc<Live>, start: Instant, stop: CancellationToken) {
    let mut ticker = tokio::time::interval_at(
        (start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    let mut last = [0u64; 4];
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        let now = [&live.offered, &live.ok, &live.refused, &live.failed]
            .map(|c| c.load(Ordering::Relaxed));
        eprintln!(
            "[{:>4.0}s] offered {:>7}/s  ok {:>7}/s  refused {:>7}/s  errors {:>5}/s",
            start.elapsed().as_secs_f64(),
            now[0] - last[0],
            now[1] - last[1],
            now[2] - last[2],
            now[3] - last[3],
        );
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_by_the_node_or_by_the_sdks_throttle_counts_as_refused() {
        let overloaded = ErrorCode::Overloaded {
            tier: Tier::Batch,
            retry_after_ms: 5,
        };
        assert!(matches!(
            outcome_of(&Err(ClientError::Server(overloaded))),
            Outcome::Refused
        ));
        assert!(matches!(
            outcome_of(&Err(ClientError::Throttled)),
            Outcome::Refused
        ));
        assert!(matches!(
            outcome_of(&Err(ClientError::Timeout)),
            Outcome::Error(kind) if kind == "client_timeout"
        ));
        assert!(matches!(outcome_of(&Ok(())), Outcome::Ok));
    }
}
