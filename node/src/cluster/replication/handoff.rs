//! Streams of partitions to followers that are behind (a new replica, one back after a
//! long absence, one repaired by anti-entropy), as the leader sees them: how far each
//! follower is behind, how fast it catches up, and the bandwidth cap those streams
//! share so that serving continues (`chorus ctl handoff`).
//!
//! A shipment counts as catch-up when it leaves its follower short of the leader's last
//! record in some partition: shipments that complete a follower (what keeps writes
//! committing) are never held back.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Catch-up bytes shipped to followers.
pub const HANDOFF_BYTES: &str = "chorus_handoff_bytes_total";
/// Times a catch-up shipment waited for the bandwidth cap.
pub const HANDOFF_THROTTLED: &str = "chorus_handoff_throttled_total";

/// Records the followers of the partitions this node leads lack (gauge).
pub const HANDOFF_RECORDS_BEHIND: &str = "chorus_replication_records_behind";
/// (partition, follower) copies behind their leader here (gauge).
pub const HANDOFF_COPIES_BEHIND: &str = "chorus_replication_copies_behind";
/// How often the two gauges are computed.
pub const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// The window the catch-up rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// A token bucket of bytes per second, holding at most one second's worth.
#[derive(Debug)]
pub struct Bandwidth {
    per_sec: u64,
    tokens: f64,
    at: Instant,
}

impl Bandwidth {
    /// A cap of `per_sec` bytes per second, full at `now`.
    pub fn new(per_sec: u64, now: Instant) -> Self {
        Bandwidth {
            per_sec,
            tokens: per_sec as f64,
            at: now,
        }
    }

    /// Takes `bytes` at `now`; returns how long the sender must wait before sending
    /// them (zero when the bucket held enough). A debt is carried: the next sender waits
    /// for it too.
    pub fn take(&mut self, bytes: u64, now: Instant) -> Duration {
        let rate = self.per_sec.max(1) as f64;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now.max(self.at);
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate)
        }
    }
}

/// Catch-up shipped recently, for the rate.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// (when, bytes) of each catch-up shipment within the window.
    recent: VecDeque<(Instant, u64)>,
    /// Catch-up bytes and records since start.
    pub(super) bytes: u64,
    pub(super) records: u64,
    /// Times a shipment waited for the cap.
    pub(super) throttled: u64,
    /// Bytes and records of every shipment, catch-up or not (for the mean size).
    all_bytes: u64,
    all_records: u64,
}

impl Progress {
    /// A catch-up shipment of `bytes` in `records` went out at `now`.
    pub(super) fn shipped(&mut self, bytes: u64, records: u64, now: Instant) {
        self.bytes += bytes;
        self.records += records;
        self.recent.push_back((now, bytes));
        self.trim(now);
    }

    /// A shipment of `bytes` in `records`, catch-up or not, went out.
    pub(super) fn observe(&mut self, bytes: u64, records: u64) {
        self.all_bytes += bytes;
        self.all_records += records;
    }

    /// The mean record size shipped (0 before any).
    pub(super) fn mean_record_bytes(&self) -> f64 {
        if self.all_records == 0 {
            0.0
        } else {
            self.all_bytes as f64 / self.all_records as f64
        }
    }

    /// Catch-up bytes per second over the last [`RATE_WINDOW`].
    pub(super) fn rate(&mut self, now: Instant) -> f64 {
        self.trim(now);
        let bytes: u64 = self.recent.iter().map(|&(_, b)| b).sum();
        bytes as f64 / RATE_WINDOW.as_secs_f64()
    }

    fn trim(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|&(at, _)| now.saturating_duration_since(at) > RATE_WINDOW)
        {
            self.recent.pop_front();
        }
    }
}

/// One follower's distance behind this leader.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerLag {
    /// The follower.
    pub follower: String,
    /// Partitions this node leads with the follower in their replica set.
    pub partitions: u32,
    /// Of those, the partitions it has not caught up on (or not answered yet).
    pub behind: u32,
    /// Records it lacks, over the partitions it answered for.
    pub records_behind: u64,
}

/// What `chorus ctl handoff` shows: the streams from this leader to its followers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffReport {
    /// Each follower's lag.
    pub followers: Vec<FollowerLag>,
    /// (partition, follower) pairs in step with this leader.
    pub pairs_done: u32,
    /// (partition, follower) pairs behind.
    pub pairs_left: u32,
    /// Records the followers lack in all.
    pub records_left: u64,
    /// About how many bytes that is (records × the mean record shipped).
    pub bytes_left: u64,
    /// Catch-up bytes shipped since start.
    pub bytes_done: u64,
    /// Catch-up bytes per second over the last ten seconds.
    pub rate_bytes_per_sec: u64,
    /// Seconds until the followers are caught up at that rate (absent when idle).
    pub eta_secs: Option<u64>,
    /// The cap catch-up shares, bytes per second (absent: no cap).
    pub limit_bytes_per_sec: Option<u64>,
    /// Times a catch-up shipment waited for the cap.
    pub throttled: u64,
    /// This node's drain, if one was started (`chorus ctl drain`).
    #[serde(default)]
    pub drain: Option<crate::cluster::drain::DrainProgress>,
}

/// `bytes_left` and `eta_secs` from the records left, the mean record size seen and
/// the rate.
pub fn estimate(records_left: u64, mean_record_bytes: f64, rate: f64) -> (u64, Option<u64>) {
    let bytes_left = (records_left as f64 * mean_record_bytes).round() as u64;
    let eta = (bytes_left > 0 && rate > 0.0).then(|| (bytes_left as f64 / rate).ceil() as u64);
    (bytes_left, eta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_a_second_through_then_makes_senders_wait() {
        let start = Instant::now();
        let mut cap = Bandwidth::new(1000, start);
        assert_eq!(cap.take(600, start), Duration::ZERO);
        assert_eq!(cap.take(400, start), Duration::ZERO);
        assert_eq!(cap.take(500, start), Duration::from_millis(500));
        // Half a second later the debt is paid; the next 250 bytes wait 250 ms.
        let later = start + Duration::from_millis(500);
        assert_eq!(cap.take(250, later), Duration::from_millis(250));
        // Idle for long: at most one second's worth is saved up.
        let much_later = later + Duration::from_secs(60);
        assert_eq!(cap.take(1000, much_later), Duration::ZERO);
        assert!(cap.take(1, much_later) > Duration::ZERO);
    }

    #[test]
    fn the_rate_covers_the_last_ten_seconds() {
        let start = Instant::now();
        let mut progress = Progress::default();
        progress.shipped(5_000, 5, start);
        progress.shipped(5_000, 5, start + Duration::from_secs(5));
        assert_eq!(progress.rate(start + Duration::from_secs(6)), 1_000.0);
        assert_eq!(progress.rate(start + Duration::from_secs(12)), 500.0);
        assert_eq!((progress.bytes, progress.records), (10_000, 10));
    }

    #[test]
    fn estimates_need_a_rate_for_an_eta() {
        assert_eq!(estimate(100, 250.0, 1_000.0), (25_000, Some(25)));
        assert_eq!(estimate(100, 250.0, 0.0), (25_000, None));
        assert_eq!(estimate(0, 250.0, 1_000.0), (0, None));
    }
}
