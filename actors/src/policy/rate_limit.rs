//! Rate limiting as pure state machines: a token bucket with exact `retry_after`, a
//! rolling-window burst detector, and a keyed limiter that holds one of each per key
//! (user, API key, IP) within a bounded number of keys.
//!
//! A bucket answers "may this request go now, and if not, when?"; the burst detector
//! answers "is this key arriving in a burst?", so a caller can tell a short spike (burst,
//! worth flagging or throttling harder) from a steady overrun (the bucket alone limits
//! it). Neither reads a clock: every call takes `now`.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Per-user limit: 100 requests per minute.
pub const PER_USER_PER_MINUTE: u32 = 100;
/// Per-IP limit for unauthenticated connections: 20 per minute.
pub const UNAUTHENTICATED_PER_IP_PER_MINUTE: u32 = 20;
/// More than this many requests from one key within [`BURST_WINDOW`] is a burst.
pub const BURST_THRESHOLD: u32 = 50;
/// The window over which bursts are counted.
pub const BURST_WINDOW: Duration = Duration::from_secs(10);
/// Slots the burst window is divided into: the window rolls one slot (1 s) at a time.
pub const BURST_SLOTS: u32 = 10;
/// Keys a keyed limiter tracks before it evicts; each costs on the order of 150 bytes.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

const MINUTE: Duration = Duration::from_secs(60);

/// A config field that does not make sense; nothing was built from it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitConfigError {
    /// A count or duration that must be positive is zero.
    #[error("{field} must be greater than zero")]
    Zero {
        /// The offending field, e.g. `refill.per`.
        field: &'static str,
    },
    /// The burst window is too short to split into its slots.
    #[error("burst.window ({window:?}) must be at least burst.slots ({slots}) nanoseconds")]
    WindowShorterThanSlots {
        /// The configured window.
        window: Duration,
        /// The configured number of slots.
        slots: u32,
    },
    /// One of the limiters of a [`RateLimitConfig`] is invalid.
    #[error("{limiter}: {source}")]
    Limiter {
        /// Which limiter: `per_user`, `per_api_key`, `global` or `unauthenticated_per_ip`.
        limiter: &'static str,
        /// What is wrong with it.
        #[source]
        source: Box<RateLimitConfigError>,
    },
}

impl RateLimitConfigError {
    fn within(self, limiter: &'static str) -> Self {
        RateLimitConfigError::Limiter {
            limiter,
            source: Box::new(self),
        }
    }
}

/// A refill rate: `tokens` every `per`, kept as a ratio so that rates like 100 per minute
/// stay exact (no rounding of 1.666… tokens per second).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per `per`; at least 1.
    pub tokens: u32,
    /// The period over which `tokens` are added; nonzero.
    pub per: Duration,
}

impl Rate {
    /// `tokens` per second.
    pub const fn per_second(tokens: u32) -> Self {
        Rate {
            tokens,
            per: Duration::from_secs(1),
        }
    }

    /// `tokens` per minute.
    pub const fn per_minute(tokens: u32) -> Self {
        Rate {
            tokens,
            per: MINUTE,
        }
    }

    fn validate(&self) -> Result<(), RateLimitConfigError> {
        if self.tokens == 0 {
            return Err(RateLimitConfigError::Zero {
                field: "refill.tokens",
            });
        }
        if self.per.is_zero() {
            return Err(RateLimitConfigError::Zero {
                field: "refill.per",
            });
        }
        Ok(())
    }
}

/// Size and refill of one token bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketConfig {
    /// Most tokens the bucket holds (the largest burst admitted at once), in requests.
    pub capacity: u32,
    /// How fast spent tokens come back.
    pub refill: Rate,
}

impl BucketConfig {
    /// `n` per minute, with a full minute's worth available at once.
    pub const fn per_minute(n: u32) -> Self {
        BucketConfig {
            capacity: n,
            refill: Rate::per_minute(n),
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), RateLimitConfigError> {
        if self.capacity == 0 {
            return Err(RateLimitConfigError::Zero { field: "capacity" });
        }
        self.refill.validate()
    }
}

impl Default for BucketConfig {
    /// The per-user limit: 100 per minute, capacity 100.
    fn default() -> Self {
        BucketConfig::per_minute(PER_USER_PER_MINUTE)
    }
}

/// What a bucket says about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The tokens were taken: go ahead.
    Allowed,
    /// Not enough tokens; nothing was taken. Asking again `retry_after` from now, with no
    /// other acquisition in between, is allowed. Never zero.
    Limited {
        /// Exact time until the requested tokens are available.
        retry_after: Duration,
    },
}

/// A request for more tokens than the bucket can ever hold; nothing was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("requested {requested} tokens from a bucket of capacity {capacity}")]
pub struct ExceedsCapacity {
    /// Tokens asked for.
    pub requested: u32,
    /// The bucket's capacity.
    pub capacity: u32,
}

/// A token bucket with exact integer accounting.
///
/// The level is kept in units of `1 / (tokens × per_nanos)` of a token: one nanosecond
/// adds `refill.tokens` units and one token costs `per` (in nanoseconds) units, so refill
/// and `retry_after` are exact to the nanosecond and never drift.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Units per token: the refill period in nanoseconds.
    unit: u128,
    /// Units added per nanosecond: the refill tokens.
    per_nano: u128,
    /// Most units held: `capacity × unit`.
    max: u128,
    capacity: u32,
    level: u128,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket as of `now`.
    pub fn new(config: BucketConfig, now: Instant) -> Result<Self, RateLimitConfigError> {
        config.validate()?;
        let unit = config.refill.per.as_nanos();
        let max = u128::from(config.capacity) * unit;
        Ok(TokenBucket {
            unit,
            per_nano: u128::from(config.refill.tokens),
            max,
            capacity: config.capacity,
            level: max,
            updated: now,
        })
    }

    /// Takes `n` tokens if they are there at `now`, or says exactly when they will be.
    pub fn try_acquire(&mut self, now: Instant, n: u32) -> Result<Decision, ExceedsCapacity> {
        let decision = self.check(now, n)?;
        if decision == Decision::Allowed {
            self.level -= u128::from(n) * self.unit;
        }
        Ok(decision)
    }

    /// What [`try_acquire`](Self::try_acquire) would answer, without taking anything:
    /// lets a caller consult several limiters and spend only if all allow.
    pub fn check(&mut self, now: Instant, n: u32) -> Result<Decision, ExceedsCapacity> {
        if n > self.capacity {
            return Err(ExceedsCapacity {
                requested: n,
                capacity: self.capacity,
            });
        }
        self.refill(now);
        let need = u128::from(n) * self.unit;
        if self.level >= need {
            return Ok(Decision::Allowed);
        }
        // Round up: waiting one nanosecond less would leave the bucket short.
        let nanos = (need - self.level).div_ceil(self.per_nano);
        Ok(Decision::Limited {
            retry_after: nanos_to_duration(nanos),
        })
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Instant) -> u32 {
        self.refill(now);
        // At most `capacity`, so the cast cannot truncate.
        (self.level / self.unit) as u32
    }

    /// When the bucket will be full if nothing more is taken; `now`'s refill applied.
    fn full_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        let nanos = (self.max - self.level).div_ceil(self.per_nano);
        self.updated + nanos_to_duration(nanos)
    }

    fn refill(&mut self, now: Instant) {
        // A clock that steps back (it should not: Instant is monotonic) refills nothing
        // rather than moving `updated` backwards.
        if now <= self.updated {
            return;
        }
        let elapsed = now.duration_since(self.updated).as_nanos();
        self.level = self
            .level
            .saturating_add(elapsed.saturating_mul(self.per_nano))
            .min(self.max);
        self.updated = now;
    }
}

fn nanos_to_duration(nanos: u128) -> Duration {
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// What counts as a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BurstConfig {
    /// More than this many requests within `window` is a burst.
    pub threshold: u32,
    /// The rolling window, e.g. 10 s.
    pub window: Duration,
    /// Slots the window is split into; the window rolls one slot at a time, so the count
    /// covers between the last `window − window/slots` and the last `window`.
    pub slots: u32,
}

impl BurstConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), RateLimitConfigError> {
        if self.threshold == 0 {
            return Err(RateLimitConfigError::Zero {
                field: "burst.threshold",
            });
        }
        if self.slots == 0 {
            return Err(RateLimitConfigError::Zero {
                field: "burst.slots",
            });
        }
        if self.window.as_nanos() < u128::from(self.slots) {
            return Err(RateLimitConfigError::WindowShorterThanSlots {
                window: self.window,
                slots: self.slots,
            });
        }
        Ok(())
    }
}

impl Default for BurstConfig {
    /// More than 50 in 10 s, rolling by 1 s.
    fn default() -> Self {
        BurstConfig {
            threshold: BURST_THRESHOLD,
            window: BURST_WINDOW,
            slots: BURST_SLOTS,
        }
    }
}

/// Counts one key's requests over a rolling window of fixed slots.
///
/// A slot ring rather than a log of timestamps keeps the cost per key fixed (one `u32`
/// per slot) whatever the request rate. The count never includes a request older than
/// `window`, so a burst is never reported that did not happen; requests between
/// `window − slot` and `window` old may already have rolled out.
#[derive(Clone, Debug)]
pub struct BurstDetector {
    threshold: u32,
    slot_nanos: u128,
    epoch: Instant,
    /// Absolute index (slots since `epoch`) of the newest slot in `counts`.
    head: u128,
    counts: Box<[u32]>,
}

impl BurstDetector {
    /// An empty window starting at `now`.
    pub fn new(config: BurstConfig, now: Instant) -> Result<Self, RateLimitConfigError> {
        config.validate()?;
        Ok(BurstDetector {
            threshold: config.threshold,
            slot_nanos: config.window.as_nanos() / u128::from(config.slots),
            epoch: now,
            head: 0,
            counts: vec![0; config.slots as usize].into_boxed_slice(),
        })
    }

    /// Counts `n` requests at `now` and says whether the window now holds a burst.
    pub fn record(&mut self, now: Instant, n: u32) -> bool {
        self.roll(now);
        let slot = self.slot_of(self.head);
        self.counts[slot] = self.counts[slot].saturating_add(n);
        self.count() > self.threshold
    }

    /// Requests in the window as of `now`.
    pub fn count_at(&mut self, now: Instant) -> u32 {
        self.roll(now);
        self.count()
    }

    fn count(&self) -> u32 {
        self.counts.iter().fold(0u32, |a, &c| a.saturating_add(c))
    }

    fn slot_of(&self, index: u128) -> usize {
        (index % self.counts.len() as u128) as usize
    }

    fn roll(&mut self, now: Instant) {
        let index = now.saturating_duration_since(self.epoch).as_nanos() / self.slot_nanos;
        if index <= self.head {
            return;
        }
        let stale = (index - self.head).min(self.counts.len() as u128);
        for i in 1..=stale {
            let slot = self.slot_of(self.head + i);
            self.counts[slot] = 0;
        }
        self.head = index;
    }
}

/// One keyed limiter: a bucket and a burst detector per key, at most `max_keys` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyedLimiterConfig {
    /// Each key's bucket.
    pub bucket: BucketConfig,
    /// What counts as a burst for one key.
    pub burst: BurstConfig,
    /// Most keys tracked at once; beyond it the key closest to idle is evicted.
    pub max_keys: usize,
}

impl KeyedLimiterConfig {
    /// Per user: 100 per minute, bursts of more than 50 in 10 s flagged.
    pub fn per_user() -> Self {
        KeyedLimiterConfig {
            bucket: BucketConfig::per_minute(PER_USER_PER_MINUTE),
            burst: BurstConfig::default(),
            max_keys: DEFAULT_MAX_KEYS,
        }
    }

    /// Unauthenticated connections, keyed by IP: 20 per minute.
    pub fn unauthenticated_per_ip() -> Self {
        KeyedLimiterConfig {
            bucket: BucketConfig::per_minute(UNAUTHENTICATED_PER_IP_PER_MINUTE),
            ..KeyedLimiterConfig::per_user()
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), RateLimitConfigError> {
        self.bucket.validate()?;
        self.burst.validate()?;
        if self.max_keys == 0 {
            return Err(RateLimitConfigError::Zero { field: "max_keys" });
        }
        Ok(())
    }
}

impl Default for KeyedLimiterConfig {
    /// The per-user limiter.
    fn default() -> Self {
        KeyedLimiterConfig::per_user()
    }
}

/// Every rate limit of a node. Only the per-user and per-IP limits are on by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Per user (at the user's owner node): 100 per minute.
    pub per_user: KeyedLimiterConfig,
    /// Per API key; off (`None`) by default.
    pub per_api_key: Option<KeyedLimiterConfig>,
    /// One bucket for the whole node; off (`None`) by default.
    pub global: Option<BucketConfig>,
    /// Unauthenticated connections per IP: 20 per minute.
    pub unauthenticated_per_ip: KeyedLimiterConfig,
}

impl RateLimitConfig {
    /// Checks every limiter; the error names the limiter and its bad field.
    pub fn validate(&self) -> Result<(), RateLimitConfigError> {
        self.per_user.validate().map_err(|e| e.within("per_user"))?;
        if let Some(c) = &self.per_api_key {
            c.validate().map_err(|e| e.within("per_api_key"))?;
        }
        if let Some(c) = &self.global {
            c.validate().map_err(|e| e.within("global"))?;
        }
        self.unauthenticated_per_ip
            .validate()
            .map_err(|e| e.within("unauthenticated_per_ip"))
    }
}

impl Default for RateLimitConfig {
    /// 100/min per user, 20/min per unauthenticated IP, no per-key or global limit.
    fn default() -> Self {
        RateLimitConfig {
            per_user: KeyedLimiterConfig::per_user(),
            per_api_key: None,
            global: None,
            unauthenticated_per_ip: KeyedLimiterConfig::unauthenticated_per_ip(),
        }
    }
}

/// A keyed limiter's answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request may go, from the key's bucket.
    pub decision: Decision,
    /// The key's arrivals (allowed or not) exceed the burst threshold: a spike rather
    /// than a steady overrun.
    pub burst: bool,
}

struct KeyState {
    bucket: TokenBucket,
    burst: BurstDetector,
    /// When the newest arrival leaves the burst window.
    quiet_at: Instant,
    /// Its position in `idle`: when it was last known to become idle, and a tie-breaker.
    indexed: (Instant, u64),
}

impl KeyState {
    /// When this key becomes indistinguishable from a new one (full bucket, empty burst
    /// window), as of `now`. It only moves later as requests arrive, so the time `idle`
    /// holds is never after it.
    fn idle_at(&mut self, now: Instant) -> Instant {
        self.bucket.full_at(now).max(self.quiet_at)
    }
}

/// Token buckets and burst detectors per key, for a bounded number of keys.
///
/// When a new key arrives and the limiter is full, the key that becomes idle soonest is
/// evicted. A key is idle once its bucket is full again and its burst window is empty:
/// it is then exactly what a new key would be, so evicting it loses nothing. Only when
/// no key is idle does eviction forget state (the evicted key, if it comes back, starts
/// with a full bucket); [`lossy_evictions`](Self::lossy_evictions) counts those.
pub struct KeyedLimiter<K> {
    config: KeyedLimiterConfig,
    keys: HashMap<K, KeyState>,
    /// Keys ordered by when they become idle; the tie-breaker makes entries unique.
    idle: BTreeMap<(Instant, u64), K>,
    next_seq: u64,
    lossy_evictions: u64,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// An empty limiter.
    pub fn new(config: KeyedLimiterConfig) -> Result<Self, RateLimitConfigError> {
        config.validate()?;
        Ok(KeyedLimiter {
            config,
            keys: HashMap::new(),
            idle: BTreeMap::new(),
            next_seq: 0,
            lossy_evictions: 0,
        })
    }

    /// Asks `key`'s bucket for `n` tokens at `now` and counts the attempt toward its
    /// burst window (a rejected attempt still counts: bursts describe arrivals).
    pub fn try_acquire<Q>(
        &mut self,
        now: Instant,
        key: &Q,
        n: u32,
    ) -> Result<Verdict, ExceedsCapacity>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if n > self.config.bucket.capacity {
            return Err(ExceedsCapacity {
                requested: n,
                capacity: self.config.bucket.capacity,
            });
        }
        if !self.keys.contains_key(key) {
            // The only allocation per key: lookups borrow.
            self.insert(now, key.to_owned());
        }
        let state = self.keys.get_mut(key).expect("inserted above");
        let decision = state.bucket.try_acquire(now, n)?;
        let burst = state.burst.record(now, n);
        // The idle index is brought up to date only when it is read (purge, eviction):
        // moving the key in it here cost two tree operations per request.
        state.quiet_at = now + self.config.burst.window;
        Ok(Verdict { decision, burst })
    }

    /// What `try_acquire` would decide for `key` at `now`, without taking tokens or
    /// counting an arrival: lets a caller check several limits and spend from them only
    /// when all allow.
    pub fn check<Q>(&mut self, now: Instant, key: &Q, n: u32) -> Result<Decision, ExceedsCapacity>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if n > self.config.bucket.capacity {
            return Err(ExceedsCapacity {
                requested: n,
                capacity: self.config.bucket.capacity,
            });
        }
        match self.keys.get_mut(key) {
            Some(state) => state.bucket.check(now, n),
            // An unknown key has a full bucket.
            None => Ok(Decision::Allowed),
        }
    }

    /// Counts an arrival toward `key`'s burst window without taking tokens (for an
    /// attempt refused by another limit); returns whether the key is bursting.
    pub fn record_arrival<Q>(&mut self, now: Instant, key: &Q, n: u32) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(state) = self.keys.get_mut(key) else {
            // Refused elsewhere before this key was ever seen: nothing to burst yet.
            return false;
        };
        let burst = state.burst.record(now, n);
        state.quiet_at = now + self.config.burst.window;
        burst
    }

    /// Forgets every key idle at `now` (full bucket, empty burst window); returns how many.
    /// Losing nothing, it can run on any timer to give memory back.
    pub fn purge_idle(&mut self, now: Instant) -> usize {
        let mut purged = 0;
        while let Some(entry) = self.idle.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let seq = entry.key().1;
            let key = entry.remove();
            let state = self
                .keys
                .get_mut(&key)
                .expect("every indexed key is tracked");
            let idle_at = state.idle_at(now);
            if idle_at <= now {
                self.keys.remove(&key);
                purged += 1;
            } else {
                // Requests came since it was indexed: file it under its real time, which
                // is after `now`, so the loop ends.
                state.indexed = (idle_at, seq);
                self.idle.insert(state.indexed, key);
            }
        }
        purged
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Evictions that forgot a key that was not yet idle.
    pub fn lossy_evictions(&self) -> u64 {
        self.lossy_evictions
    }

    /// Forgets the key that becomes idle soonest. Index entries may be early (see
    /// `try_acquire`); one whose key has moved on is refiled and the search goes on, so
    /// the key evicted is one whose entry is exact, and no other key can be earlier.
    fn evict_one(&mut self, now: Instant) {
        loop {
            // max_keys >= 1, so a full limiter has a key to evict.
            let ((indexed, seq), victim) = self.idle.pop_first().expect("a full limiter has keys");
            let state = self
                .keys
                .get_mut(&victim)
                .expect("every indexed key is tracked");
            let idle_at = state.idle_at(now);
            if idle_at > now && idle_at > indexed {
                state.indexed = (idle_at, seq);
                self.idle.insert(state.indexed, victim);
                continue;
            }
            if idle_at > now {
                self.lossy_evictions += 1;
            }
            self.keys.remove(&victim);
            return;
        }
    }

    fn insert(&mut self, now: Instant, key: K) {
        if self.keys.len() >= self.config.max_keys {
            self.evict_one(now);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let state = KeyState {
            bucket: TokenBucket::new(self.config.bucket, now).expect("validated in new"),
            burst: BurstDetector::new(self.config.burst, now).expect("validated in new"),
            quiet_at: now,
            indexed: (now, seq),
        };
        self.idle.insert(state.indexed, key.clone());
        self.keys.insert(key, state);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn bucket(capacity: u32, tokens: u32, per: Duration, now: Instant) -> TokenBucket {
        TokenBucket::new(
            BucketConfig {
                capacity,
                refill: Rate { tokens, per },
            },
            now,
        )
        .unwrap()
    }

    #[test]
    fn defaults_match_the_design() {
        let c = RateLimitConfig::default();
        assert_eq!(c.per_user.bucket.capacity, 100);
        assert_eq!(c.per_user.bucket.refill, Rate::per_minute(100));
        assert_eq!(
            (c.per_user.burst.threshold, c.per_user.burst.window),
            (50, Duration::from_secs(10))
        );
        assert_eq!(c.unauthenticated_per_ip.bucket.refill, Rate::per_minute(20));
        assert_eq!((c.per_api_key, c.global), (None, None));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn validate_names_the_bad_field() {
        let c = RateLimitConfig {
            global: Some(BucketConfig {
                capacity: 0,
                ..BucketConfig::default()
            }),
            ..RateLimitConfig::default()
        };
        let err = c.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "global: capacity must be greater than zero"
        );

        let cases: [(KeyedLimiterConfig, &str); 5] = [
            (
                KeyedLimiterConfig {
                    max_keys: 0,
                    ..KeyedLimiterConfig::default()
                },
                "max_keys must be greater than zero",
            ),
            (
                KeyedLimiterConfig {
                    bucket: BucketConfig {
                        capacity: 1,
                        refill: Rate::per_second(0),
                    },
                    ..KeyedLimiterConfig::default()
                },
                "refill.tokens must be greater than zero",
            ),
            (
                KeyedLimiterConfig {
                    bucket: BucketConfig {
                        capacity: 1,
                        refill: Rate {
                            tokens: 1,
                            per: Duration::ZERO,
                        },
                    },
                    ..KeyedLimiterConfig::default()
                },
                "refill.per must be greater than zero",
            ),
            (
                KeyedLimiterConfig {
                    burst: BurstConfig {
                        slots: 0,
                        ..BurstConfig::default()
                    },
                    ..KeyedLimiterConfig::default()
                },
                "burst.slots must be greater than zero",
            ),
            (
                KeyedLimiterConfig {
                    burst: BurstConfig {
                        window: Duration::from_nanos(3),
                        ..BurstConfig::default()
                    },
                    ..KeyedLimiterConfig::default()
                },
                "burst.window (3ns) must be at least burst.slots (10) nanoseconds",
            ),
        ];
        for (config, message) in cases {
            assert_eq!(config.validate().unwrap_err().to_string(), message);
            assert!(KeyedLimiter::<u32>::new(config).is_err());
        }
    }

    #[test]
    fn a_full_bucket_admits_its_capacity_then_limits_exactly() {
        let t0 = Instant::now();
        // 100 per minute: one token every 600 ms.
        let mut b = TokenBucket::new(BucketConfig::default(), t0).unwrap();
        for _ in 0..100 {
            assert_eq!(b.try_acquire(t0, 1), Ok(Decision::Allowed));
        }
        let table = [
            (0, 1, 600),
            (0, 2, 1200),
            (100, 1, 500),
            (599, 1, 1),
            (600, 1, 0),
        ];
        for (at, n, wait) in table {
            let expected = if wait == 0 {
                Decision::Allowed
            } else {
                Decision::Limited {
                    retry_after: ms(wait),
                }
            };
            assert_eq!(
                b.clone().try_acquire(t0 + ms(at), n),
                Ok(expected),
                "{n} tokens at +{at} ms"
            );
        }
    }

    #[test]
    fn retry_after_rounds_up_to_the_nanosecond() {
        let t0 = Instant::now();
        // 3 tokens per 10 ns: one token every 3.33 ns.
        let mut b = bucket(1, 3, Duration::from_nanos(10), t0);
        assert_eq!(b.try_acquire(t0, 1), Ok(Decision::Allowed));
        let wait = Duration::from_nanos(4);
        assert_eq!(
            b.try_acquire(t0, 1),
            Ok(Decision::Limited { retry_after: wait })
        );
        assert_eq!(
            b.clone().try_acquire(t0 + Duration::from_nanos(3), 1),
            Ok(Decision::Limited {
                retry_after: Duration::from_nanos(1)
            })
        );
        assert_eq!(b.try_acquire(t0 + wait, 1), Ok(Decision::Allowed));
    }

    #[test]
    fn a_limited_request_takes_nothing_and_oversized_requests_are_errors() {
        let t0 = Instant::now();
        let mut b = bucket(5, 1, Duration::from_secs(1), t0);
        assert_eq!(b.try_acquire(t0, 3), Ok(Decision::Allowed));
        assert!(matches!(b.try_acquire(t0, 3), Ok(Decision::Limited { .. })));
        assert_eq!(b.available(t0), 2, "the limited request took nothing");
        assert_eq!(
            b.try_acquire(t0, 6),
            Err(ExceedsCapacity {
                requested: 6,
                capacity: 5
            })
        );
        assert_eq!(b.try_acquire(t0, 0), Ok(Decision::Allowed));
        assert_eq!(b.available(t0 + Duration::from_secs(60)), 5, "refill caps");
    }

    #[test]
    fn burst_is_more_than_fifty_in_ten_seconds() {
        let t0 = Instant::now();
        let mut d = BurstDetector::new(BurstConfig::default(), t0).unwrap();
        for i in 0..50 {
            assert!(!d.record(t0 + ms(i * 100), 1), "request {i}");
        }
        assert!(d.record(t0 + ms(5_000), 1), "the 51st within 10 s");
        // By t0 + 10.1 s the first second's 10 requests have rolled out: 41 remain.
        assert_eq!(d.count_at(t0 + ms(10_100)), 41);
        assert!(!d.record(t0 + ms(10_100), 1));
        assert_eq!(d.count_at(t0 + ms(60_000)), 0);
    }

    #[test]
    fn a_steady_overrun_is_limited_without_being_a_burst() {
        let t0 = Instant::now();
        let mut l = KeyedLimiter::new(KeyedLimiterConfig::per_user()).unwrap();
        // 4 per second (240/min, over 100/min) for 3 minutes: never 51 in 10 s.
        let verdicts: Vec<_> = (0..720)
            .map(|i| l.try_acquire(t0 + ms(i * 250), &"alice", 1).unwrap())
            .collect();
        assert!(verdicts.iter().all(|v| !v.burst));
        assert!(
            verdicts
                .iter()
                .any(|v| matches!(v.decision, Decision::Limited { .. }))
        );
        // The same 60 requests in 3 s are allowed (capacity 100) but flagged as a burst.
        let v: Vec<_> = (0..60)
            .map(|i| l.try_acquire(t0 + ms(i * 50), &"bob", 1).unwrap())
            .collect();
        assert!(v.iter().all(|v| v.decision == Decision::Allowed));
        assert_eq!(v.iter().position(|v| v.burst), Some(50));
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let t0 = Instant::now();
        let config = KeyedLimiterConfig {
            bucket: BucketConfig::per_minute(1),
            ..KeyedLimiterConfig::default()
        };
        let mut l = KeyedLimiter::new(config).unwrap();
        assert_eq!(
            l.try_acquire(t0, &1, 1).unwrap().decision,
            Decision::Allowed
        );
        assert_eq!(
            l.try_acquire(t0, &2, 1).unwrap().decision,
            Decision::Allowed
        );
        assert_eq!(
            l.try_acquire(t0, &1, 1).unwrap().decision,
            Decision::Limited {
                retry_after: Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn eviction_takes_an_idle_key_before_a_busy_one() {
        let t0 = Instant::now();
        let config = KeyedLimiterConfig {
            bucket: BucketConfig::per_minute(10),
            max_keys: 2,
            ..KeyedLimiterConfig::default()
        };
        let mut l = KeyedLimiter::new(config).unwrap();
        for _ in 0..10 {
            l.try_acquire(t0, &"busy", 1).unwrap();
        }
        l.try_acquire(t0 + Duration::from_secs(1), &"idle", 1)
            .unwrap();
        // At +20 s "idle" is full and quiet again; "busy" still owes 10 tokens.
        let now = t0 + Duration::from_secs(20);
        l.try_acquire(now, &"new", 1).unwrap();
        assert_eq!((l.len(), l.lossy_evictions()), (2, 0));
        assert!(
            matches!(
                l.try_acquire(now, &"busy", 5).unwrap().decision,
                Decision::Limited { .. }
            ),
            "busy kept its drained bucket: 3.3 tokens refilled, not 10"
        );
        // Now "busy" and "new" are both mid-refill: a third key forgets one of them.
        l.try_acquire(now, &"third", 1).unwrap();
        assert_eq!((l.len(), l.lossy_evictions()), (2, 1));
    }

    proptest! {
        /// The idle index is refreshed lazily; eviction must still take the key that
        /// becomes idle soonest, as if the index were exact at every request.
        #[test]
        fn eviction_takes_the_key_idle_soonest(
            ops in proptest::collection::vec((0u8..6, 0u64..4_000, 1u32..4), 1..300),
        ) {
            let config = KeyedLimiterConfig {
                bucket: BucketConfig::per_minute(20),
                max_keys: 3,
                ..KeyedLimiterConfig::default()
            };
            let mut l = KeyedLimiter::new(config).unwrap();
            let mut now = Instant::now();
            for (key, gap_ms, n) in ops {
                now += Duration::from_millis(gap_ms);
                let before: Vec<(u8, Instant)> =
                    l.keys.iter_mut().map(|(k, s)| (*k, s.idle_at(now))).collect();
                let _ = l.try_acquire(now, &key, n);
                prop_assert!(l.len() <= 3);
                prop_assert_eq!(l.idle.len(), l.len());
                if let Some((_, gone_at)) = before.iter().find(|(k, _)| !l.keys.contains_key(k)) {
                    for (_, at) in &before {
                        prop_assert!(gone_at <= at, "evicted a key idle later than another");
                    }
                }
            }
        }
    }

    #[test]
    fn purge_idle_forgets_only_keys_equal_to_new_ones() {
        let t0 = Instant::now();
        let mut l = KeyedLimiter::new(KeyedLimiterConfig::per_user()).unwrap();
        l.try_acquire(t0, &"a", 1).unwrap();
        l.try_acquire(t0 + Duration::from_secs(5), &"b", 30)
            .unwrap();
        // "a" refills its token in 600 ms but its burst window lasts 10 s.
        assert_eq!(l.purge_idle(t0 + Duration::from_secs(9)), 0);
        assert_eq!(l.purge_idle(t0 + Duration::from_secs(10)), 1);
        // "b" owes 30 tokens: 18 s to refill.
        assert_eq!(l.purge_idle(t0 + Duration::from_secs(22)), 0);
        assert_eq!(l.purge_idle(t0 + Duration::from_secs(23)), 1);
        assert!(l.is_empty());
    }

    proptest! {
        #[test]
        fn never_admits_more_than_capacity_plus_refill_in_any_window(
            capacity in 1u32..20,
            tokens in 1u32..10,
            per_ms in 1u64..2_000,
            steps in proptest::collection::vec((0u64..500, 1u32..20), 1..150),
        ) {
            let t0 = Instant::now();
            let per = ms(per_ms);
            let mut b = bucket(capacity, tokens, per, t0);
            let mut now = t0;
            let mut admitted: Vec<(Instant, u32)> = Vec::new();
            for (dt, n) in steps {
                now += ms(dt);
                if let Ok(Decision::Allowed) = b.try_acquire(now, n) {
                    admitted.push((now, n));
                }
            }
            // Compare in the bucket's units (token × period nanos) to stay exact.
            let unit = per.as_nanos();
            for i in 0..admitted.len() {
                let mut sum = 0u128;
                for j in i..admitted.len() {
                    sum += u128::from(admitted[j].1);
                    let elapsed = (admitted[j].0 - admitted[i].0).as_nanos();
                    prop_assert!(
                        sum * unit <= u128::from(capacity) * unit + elapsed * u128::from(tokens),
                        "{} tokens admitted in {:?}", sum, admitted[j].0 - admitted[i].0
                    );
                }
            }
        }

        #[test]
        fn retry_after_is_positive_and_exactly_enough(
            capacity in 1u32..20,
            tokens in 1u32..10,
            per_nanos in 1u64..5_000_000_000,
            steps in proptest::collection::vec((0u64..5_000_000_000, 1u32..20), 1..100),
        ) {
            let t0 = Instant::now();
            let mut b = bucket(capacity, tokens, Duration::from_nanos(per_nanos), t0);
            let mut now = t0;
            for (dt, n) in steps {
                now += Duration::from_nanos(dt);
                let n = n.min(capacity);
                if let Decision::Limited { retry_after } = b.try_acquire(now, n).unwrap() {
                    prop_assert!(!retry_after.is_zero());
                    let early = Duration::from_nanos(retry_after.as_nanos() as u64 - 1);
                    prop_assert!(
                        matches!(b.clone().check(now + early, n), Ok(Decision::Limited { .. })),
                        "retry_after is not the shortest wait"
                    );
                    now += retry_after;
                    prop_assert_eq!(b.try_acquire(now, n), Ok(Decision::Allowed));
                }
            }
        }

        #[test]
        fn a_burst_is_flagged_only_when_real_and_always_when_recent(
            gaps in proptest::collection::vec(0u64..2_000, 1..300),
        ) {
            let config = BurstConfig::default();
            let t0 = Instant::now();
            let mut d = BurstDetector::new(config, t0).unwrap();
            let slot = config.window / config.slots;
            let mut now = t0;
            let mut seen: Vec<Instant> = Vec::new();
            for gap in gaps {
                now += ms(gap);
                seen.push(now);
                let flagged = d.record(now, 1);
                let within = |span: Duration| {
                    seen.iter().filter(|&&t| now - t < span).count() as u32
                };
                if flagged {
                    prop_assert!(within(config.window) > config.threshold);
                }
                if within(config.window - slot) > config.threshold {
                    prop_assert!(flagged);
                }
            }
        }

        #[test]
        fn the_keyed_limiter_stays_within_max_keys(
            max_keys in 1usize..8,
            steps in proptest::collection::vec((0u64..3_000, 0u8..20), 1..200),
        ) {
            let config = KeyedLimiterConfig {
                bucket: BucketConfig::per_minute(5),
                max_keys,
                ..KeyedLimiterConfig::default()
            };
            let t0 = Instant::now();
            let mut l = KeyedLimiter::new(config).unwrap();
            let mut now = t0;
            for (dt, key) in steps {
                now += ms(dt);
                l.try_acquire(now, &key, 1).unwrap();
                prop_assert!(l.len() <= max_keys);
                prop_assert_eq!(l.len(), l.idle.len());
            }
        }
    }
}
