//! Admission of new QUIC connections before any cryptography is spent on them: caps on
//! connections in total and per source address, on handshakes in progress and on
//! handshakes started per second.
//!
//! A plain state machine: the endpoint loop calls [`Admission::handle_incoming`] with
//! the time and the source address of each `quinn::Incoming` and refuses or ignores it
//! on a [`Refusal`]; the connection's task reports the end of its handshake and its
//! close. No IO, no clock of its own, so every rule is unit-tested below.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The caps the endpoint applies before a handshake starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Connections open (handshaking or established) from everyone.
    pub max_connections: usize,
    /// Connections open from one source address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// Handshakes in progress at once.
    pub max_handshakes_in_progress: usize,
    /// Handshakes begun per second, sustained; also the burst.
    pub max_handshakes_per_second: u32,
}

/// Why a new connection is turned away; the state did not change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// [`AdmissionLimits::max_connections`] connections are open.
    #[error("too many connections")]
    TooManyConnections,
    /// The source address has [`AdmissionLimits::max_connections_per_address`] open.
    #[error("too many connections from this address")]
    TooManyFromAddress,
    /// [`AdmissionLimits::max_handshakes_in_progress`] handshakes are running.
    #[error("too many handshakes in progress")]
    TooManyHandshakes,
    /// More than [`AdmissionLimits::max_handshakes_per_second`] handshakes began lately.
    #[error("handshake rate exceeded")]
    HandshakeRate,
}

impl Refusal {
    /// Every refusal, so each one's counter can be exported before it first happens.
    pub const ALL: [Refusal; 4] = [
        Refusal::TooManyConnections,
        Refusal::TooManyFromAddress,
        Refusal::TooManyHandshakes,
        Refusal::HandshakeRate,
    ];

    /// Whether to drop the packet silently rather than answer it: under a rate or
    /// handshake flood, answering costs as much as the attacker's packet, so nothing is
    /// sent; a per-address or total cap is answered so an honest client fails fast.
    pub fn is_silent(self) -> bool {
        matches!(self, Refusal::HandshakeRate | Refusal::TooManyHandshakes)
    }

    /// A short stable name for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TooManyConnections => "connections",
            Refusal::TooManyFromAddress => "per_address",
            Refusal::TooManyHandshakes => "handshakes",
            Refusal::HandshakeRate => "handshake_rate",
        }
    }
}

/// The source a per-address cap counts: the IPv4 address, or the /64 of an IPv6 one
/// (one host usually holds a whole /64, so counting single v6 addresses caps nothing).
pub fn source_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// Counts of open connections and handshakes, and the handshake token bucket.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    per_source: HashMap<IpAddr, usize>,
    open: usize,
    handshaking: usize,
    /// Handshake tokens, in millionths of a token (integer arithmetic, no drift).
    tokens_micros: u64,
    refilled_at: Option<Instant>,
}

const MICROS: u64 = 1_000_000;

impl Admission {
    /// No connection open yet, a full handshake bucket.
    pub fn new(limits: AdmissionLimits) -> Self {
        Admission {
            limits,
            per_source: HashMap::new(),
            open: 0,
            handshaking: 0,
            tokens_micros: u64::from(limits.max_handshakes_per_second) * MICROS,
            refilled_at: None,
        }
    }

    /// A connection attempt from `addr` at `now`: on `Ok` it is counted as open and
    /// handshaking until [`Admission::handle_handshake_done`] and
    /// [`Admission::handle_closed`]; on `Err` nothing changed but the bucket's refill.
    pub fn handle_incoming(&mut self, now: Instant, addr: IpAddr) -> Result<(), Refusal> {
        self.refill(now);
        let source = source_key(addr);
        if self.open >= self.limits.max_connections {
            return Err(Refusal::TooManyConnections);
        }
        if self.per_source.get(&source).copied().unwrap_or(0)
            >= self.limits.max_connections_per_address
        {
            return Err(Refusal::TooManyFromAddress);
        }
        if self.handshaking >= self.limits.max_handshakes_in_progress {
            return Err(Refusal::TooManyHandshakes);
        }
        if self.tokens_micros < MICROS {
            return Err(Refusal::HandshakeRate);
        }
        self.tokens_micros -= MICROS;
        self.open += 1;
        self.handshaking += 1;
        *self.per_source.entry(source).or_insert(0) += 1;
        Ok(())
    }

    /// The handshake of an admitted connection ended (completed or failed).
    pub fn handle_handshake_done(&mut self) {
        self.handshaking = self.handshaking.saturating_sub(1);
    }

    /// An admitted connection from `addr` is gone.
    pub fn handle_closed(&mut self, addr: IpAddr) {
        self.open = self.open.saturating_sub(1);
        let source = source_key(addr);
        if let Some(count) = self.per_source.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                // Only sources with a connection are kept: the map is bounded by
                // `max_connections`, whatever addresses a flood comes from.
                self.per_source.remove(&source);
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Handshakes in progress now.
    pub fn handshaking(&self) -> usize {
        self.handshaking
    }

    /// Whether half the handshake slots are taken: from then on the endpoint asks an
    /// unvalidated source to prove its address with a stateless retry before it is
    /// counted, so that a flood from spoofed addresses cannot hold slots.
    pub fn under_handshake_load(&self) -> bool {
        self.handshaking * 2 >= self.limits.max_handshakes_in_progress
    }

    fn refill(&mut self, now: Instant) {
        let rate = u64::from(self.limits.max_handshakes_per_second);
        let capacity = rate * MICROS;
        let last = *self.refilled_at.get_or_insert(now);
        let elapsed = now
            .saturating_duration_since(last)
            .min(Duration::from_secs(1));
        // Tokens in micros = rate × elapsed µs (sub-microsecond remainders are dropped;
        // at most a handshake per second per million is lost).
        let credit = rate * elapsed.as_micros() as u64;
        self.tokens_micros = (self.tokens_micros + credit).min(capacity);
        self.refilled_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            max_connections: 4,
            max_connections_per_address: 2,
            max_handshakes_in_progress: 3,
            max_handshakes_per_second: 10,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_third_connection_from_one_address_is_refused_while_another_address_is_served() {
        let mut a = Admission::new(limits());
        let now = Instant::now();
        for _ in 0..2 {
            a.handle_incoming(now, ip("127.0.0.1")).unwrap();
            a.handle_handshake_done();
        }
        assert_eq!(
            a.handle_incoming(now, ip("127.0.0.1")),
            Err(Refusal::TooManyFromAddress)
        );
        a.handle_incoming(now, ip("127.0.0.2")).unwrap();
        a.handle_closed(ip("127.0.0.1"));
        a.handle_incoming(now, ip("127.0.0.1")).unwrap();
    }

    #[test]
    fn the_total_cap_holds_across_addresses_and_frees_on_close() {
        let mut a = Admission::new(limits());
        let now = Instant::now();
        for i in 1..=4 {
            a.handle_incoming(now, ip(&format!("10.0.0.{i}"))).unwrap();
            a.handle_handshake_done();
        }
        assert_eq!(
            a.handle_incoming(now, ip("10.0.0.9")),
            Err(Refusal::TooManyConnections)
        );
        a.handle_closed(ip("10.0.0.1"));
        assert_eq!(a.open(), 3);
        a.handle_incoming(now, ip("10.0.0.9")).unwrap();
    }

    #[test]
    fn handshakes_in_progress_are_capped_until_one_ends() {
        let mut a = Admission::new(AdmissionLimits {
            max_connections: 100,
            max_connections_per_address: 100,
            ..limits()
        });
        let now = Instant::now();
        for i in 1..=3 {
            a.handle_incoming(now, ip(&format!("10.0.0.{i}"))).unwrap();
        }
        let refused = a.handle_incoming(now, ip("10.0.0.4")).unwrap_err();
        assert_eq!(refused, Refusal::TooManyHandshakes);
        assert!(refused.is_silent());
        assert!(a.under_handshake_load());
        a.handle_handshake_done();
        a.handle_incoming(now, ip("10.0.0.4")).unwrap();
        assert_eq!(a.handshaking(), 3);
        for _ in 0..3 {
            a.handle_handshake_done();
        }
        assert!(!a.under_handshake_load());
    }

    #[test]
    fn the_handshake_rate_refills_with_time() {
        let mut a = Admission::new(AdmissionLimits {
            max_connections: 1000,
            max_connections_per_address: 1000,
            max_handshakes_in_progress: 1000,
            max_handshakes_per_second: 10,
        });
        let t0 = Instant::now();
        for _ in 0..10 {
            a.handle_incoming(t0, ip("10.0.0.1")).unwrap();
        }
        assert_eq!(
            a.handle_incoming(t0, ip("10.0.0.1")),
            Err(Refusal::HandshakeRate)
        );
        // A tenth of a second buys one handshake at 10 per second.
        let t1 = t0 + Duration::from_millis(100);
        a.handle_incoming(t1, ip("10.0.0.1")).unwrap();
        assert_eq!(
            a.handle_incoming(t1, ip("10.0.0.1")),
            Err(Refusal::HandshakeRate)
        );
        // A long pause refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..10 {
            a.handle_incoming(t2, ip("10.0.0.2")).unwrap();
        }
        assert!(a.handle_incoming(t2, ip("10.0.0.2")).is_err());
    }

    #[test]
    fn ipv6_sources_are_counted_per_64() {
        assert_eq!(
            source_key(ip("2001:db8:1:2:aaaa::1")),
            source_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            source_key(ip("2001:db8:1:2::1")),
            source_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(source_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        let mut a = Admission::new(limits());
        let now = Instant::now();
        a.handle_incoming(now, ip("2001:db8::1")).unwrap();
        a.handle_incoming(now, ip("2001:db8::2")).unwrap();
        assert_eq!(
            a.handle_incoming(now, ip("2001:db8::3")),
            Err(Refusal::TooManyFromAddress)
        );
    }

    #[test]
    fn closing_forgets_an_address_with_no_connection_left() {
        let mut a = Admission::new(limits());
        let now = Instant::now();
        a.handle_incoming(now, ip("10.0.0.1")).unwrap();
        a.handle_closed(ip("10.0.0.1"));
        assert!(a.per_source.is_empty());
        assert_eq!(a.open(), 0);
    }
}
