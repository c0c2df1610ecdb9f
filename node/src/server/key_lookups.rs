//! What keeps an unknown API key from making this node ask every member on every hello:
//! a negative cache of key hashes no member knew, and a per-source-address budget of
//! lookups at the other members.
//!
//! A plain state machine (inputs carry `now`); the hello calls [`KeyLookups::handle_unknown`]
//! before asking the members and [`KeyLookups::handle_refused`] when none knew the key.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::admission::source_key;

/// Limits of the unknown-key defences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyLookupLimits {
    /// How long a key no member knew is refused without asking again.
    pub negative_ttl: Duration,
    /// Key hashes the negative cache holds at most (the oldest is forgotten first).
    pub negative_capacity: usize,
    /// Lookups at the other members one source address may cause per minute (also the
    /// burst).
    pub lookups_per_address_per_minute: u32,
    /// Source addresses whose budget is tracked at most; beyond it the budgets of the
    /// longest-idle addresses are forgotten (they start again full).
    pub tracked_addresses: usize,
}

/// What the hello does with a key this node does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Ask the other members.
    Ask,
    /// No member knew it moments ago: answer `Unauthorized` without asking.
    KnownUnknown,
    /// The source address used its budget: answer `RateLimited` after this long.
    Throttled {
        /// When a lookup becomes possible again.
        retry_after: Duration,
    },
}

/// The negative cache and the per-address lookup budgets.
#[derive(Debug)]
pub struct KeyLookups {
    limits: KeyLookupLimits,
    unknown: HashMap<[u8; 32], Instant>,
    /// Insertion order of `unknown`, for eviction (entries may be stale: checked on pop).
    unknown_order: VecDeque<([u8; 32], Instant)>,
    budgets: HashMap<IpAddr, Budget>,
}

#[derive(Clone, Copy, Debug)]
struct Budget {
    /// Lookups left, in millionths.
    tokens_micros: u64,
    refilled_at: Instant,
}

const MICROS: u64 = 1_000_000;

impl KeyLookups {
    /// An empty cache, every address with a full budget.
    pub fn new(limits: KeyLookupLimits) -> Self {
        KeyLookups {
            limits,
            unknown: HashMap::new(),
            unknown_order: VecDeque::new(),
            budgets: HashMap::new(),
        }
    }

    /// A hello from `addr` carries a key whose hash is `key_hash` and which this node
    /// does not hold. On [`Lookup::Ask`] one lookup was taken from the address's budget.
    pub fn handle_unknown(&mut self, now: Instant, addr: IpAddr, key_hash: [u8; 32]) -> Lookup {
        if let Some(&until) = self.unknown.get(&key_hash) {
            if now < until {
                return Lookup::KnownUnknown;
            }
            self.unknown.remove(&key_hash);
        }
        let rate = u64::from(self.limits.lookups_per_address_per_minute);
        let capacity = rate * MICROS;
        let source = source_key(addr);
        if !self.budgets.contains_key(&source)
            && self.budgets.len() >= self.limits.tracked_addresses
        {
            self.forget_idle_budgets(now);
        }
        let budget = self.budgets.entry(source).or_insert(Budget {
            tokens_micros: capacity,
            refilled_at: now,
        });
        let elapsed = now
            .saturating_duration_since(budget.refilled_at)
            .min(Duration::from_secs(60));
        // rate per minute × elapsed µs / 60 s in micro-tokens.
        let credit = rate * elapsed.as_micros() as u64 / 60;
        budget.tokens_micros = (budget.tokens_micros + credit).min(capacity);
        budget.refilled_at = now;
        if budget.tokens_micros >= MICROS {
            budget.tokens_micros -= MICROS;
            return Lookup::Ask;
        }
        let missing = MICROS - budget.tokens_micros;
        // µs until `missing` micro-tokens accrue at `rate` per minute.
        let retry_after = Duration::from_micros((missing * 60).div_ceil(rate.max(1)));
        Lookup::Throttled { retry_after }
    }

    /// No member knew `key_hash`: refuse it without asking until the TTL passes.
    pub fn handle_refused(&mut self, now: Instant, key_hash: [u8; 32]) {
        while self.unknown.len() >= self.limits.negative_capacity {
            match self.unknown_order.pop_front() {
                Some((old, at)) => {
                    if self.unknown.get(&old) == Some(&at) {
                        self.unknown.remove(&old);
                    }
                }
                None => {
                    self.unknown.clear();
                    break;
                }
            }
        }
        let until = now + self.limits.negative_ttl;
        self.unknown.insert(key_hash, until);
        self.unknown_order.push_back((key_hash, until));
        // Stale order entries (re-inserted keys) never outnumber the live ones by much.
        if self.unknown_order.len() > 2 * self.limits.negative_capacity.max(1) {
            let live = &self.unknown;
            self.unknown_order
                .retain(|(hash, at)| live.get(hash) == Some(at));
        }
    }

    /// Key hashes in the negative cache (expired ones included until touched).
    pub fn cached_unknown(&self) -> usize {
        self.unknown.len()
    }

    /// Source addresses with a tracked budget.
    pub fn tracked_addresses(&self) -> usize {
        self.budgets.len()
    }

    /// Drops budgets that are full again; if none is, the half idle the longest.
    fn forget_idle_budgets(&mut self, now: Instant) {
        let full_after = Duration::from_secs(60);
        self.budgets
            .retain(|_, b| now.saturating_duration_since(b.refilled_at) < full_after);
        if self.budgets.len() >= self.limits.tracked_addresses {
            let mut ages: Vec<Instant> = self.budgets.values().map(|b| b.refilled_at).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            self.budgets.retain(|_, b| b.refilled_at > cutoff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> KeyLookupLimits {
        KeyLookupLimits {
            negative_ttl: Duration::from_secs(10),
            negative_capacity: 3,
            lookups_per_address_per_minute: 6,
            tracked_addresses: 4,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_refused_key_is_not_asked_about_again_until_the_ttl_passes() {
        let mut k = KeyLookups::new(limits());
        let t0 = Instant::now();
        assert_eq!(k.handle_unknown(t0, ip("10.0.0.1"), [1; 32]), Lookup::Ask);
        k.handle_refused(t0, [1; 32]);
        // From any address: the cache is about the key.
        assert_eq!(
            k.handle_unknown(t0, ip("10.0.0.2"), [1; 32]),
            Lookup::KnownUnknown
        );
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            k.handle_unknown(later, ip("10.0.0.2"), [1; 32]),
            Lookup::Ask
        );
    }

    #[test]
    fn one_address_cycling_keys_runs_out_of_lookups_and_another_does_not() {
        let mut k = KeyLookups::new(limits());
        let t0 = Instant::now();
        for i in 0..6u8 {
            assert_eq!(k.handle_unknown(t0, ip("10.0.0.1"), [i; 32]), Lookup::Ask);
        }
        match k.handle_unknown(t0, ip("10.0.0.1"), [99; 32]) {
            // 6 a minute: one every 10 s.
            Lookup::Throttled { retry_after } => assert_eq!(retry_after, Duration::from_secs(10)),
            other => panic!("{other:?}"),
        }
        assert_eq!(k.handle_unknown(t0, ip("10.0.0.2"), [99; 32]), Lookup::Ask);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(k.handle_unknown(t1, ip("10.0.0.1"), [99; 32]), Lookup::Ask);
    }

    #[test]
    fn the_negative_cache_is_bounded_and_forgets_the_oldest() {
        let mut k = KeyLookups::new(limits());
        let t0 = Instant::now();
        for i in 0..5u8 {
            k.handle_refused(t0 + Duration::from_millis(i.into()), [i; 32]);
        }
        assert_eq!(k.cached_unknown(), 3);
        assert_eq!(k.handle_unknown(t0, ip("10.0.0.1"), [0; 32]), Lookup::Ask);
        assert_eq!(
            k.handle_unknown(t0, ip("10.0.0.1"), [4; 32]),
            Lookup::KnownUnknown
        );
    }

    #[test]
    fn tracked_addresses_are_bounded() {
        let mut k = KeyLookups::new(limits());
        let t0 = Instant::now();
        for i in 0..50u32 {
            let at = t0 + Duration::from_millis(i.into());
            k.handle_unknown(at, ip(&format!("10.0.{}.{}", i / 200, i % 200)), [7; 32]);
            assert!(k.tracked_addresses() <= 4);
        }
    }
}
