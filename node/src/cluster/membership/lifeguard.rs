//! Lifeguard around foca: local health awareness and suspicion that shrinks with
//! independent confirmations (Dadgar et al., "Lifeguard: Local Health Awareness for More
//! Accurate Failure Detection", 2018).
//!
//! foca has neither. [`LocalHealth`] counts evidence that *this* node is the slow one
//! (its probes fail, it hears itself suspected) and stretches its probe timers so that it
//! stops accusing healthy peers of its own slowness. [`Suspicions`] lets a suspicion run
//! its longest timeout when one member alone suspects, and shrinks it towards the
//! shortest as distinct members report the same suspicion.
//!
//! Confirmations must be independent: a member that merely relays gossip about a
//! suspicion confirms nothing. foca's updates do not say who first suspected, so each
//! member whose own probe fails also spreads a [`SuspicionReport`] naming itself, as a
//! foca custom broadcast ([`SuspicionReports`] decides which reports are news); the
//! membership core reads the reports from the packets it receives and counts distinct
//! reporters.
//!
//! Both are plain state machines: time is an argument, timers come back as values.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use chorus_protocol::NodeId;
use foca::Incarnation;
use serde::{Deserialize, Serialize};

use super::codec::{BincodeCodec, CodecError};
use super::identity::{MemberIdentity, NameKey};

/// How many reports [`SuspicionReports`] remembers as already seen; older ones are
/// forgotten first (a forgotten report that comes round again is only relayed again).
pub const REMEMBERED_REPORTS: usize = 4_096;

/// The local health multiplier (LHM): 0 when this node looks healthy, up to a maximum as
/// evidence of its own trouble accumulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalHealth {
    score: u8,
    max: u8,
}

impl LocalHealth {
    /// A healthy node whose score may rise to `max`.
    pub fn new(max: u8) -> Self {
        LocalHealth { score: 0, max }
    }

    /// The current score, `0..=max`.
    pub fn score(&self) -> u8 {
        self.score
    }

    /// A probe this node started got no ack, direct or indirect: likely our fault when it
    /// keeps happening.
    pub fn probe_failed(&mut self) {
        self.raise();
    }

    /// Another member suspects this node: it missed our acks.
    pub fn suspected(&mut self) {
        self.raise();
    }

    /// A probe got its direct ack in time.
    pub fn probe_succeeded(&mut self) {
        self.score = self.score.saturating_sub(1);
    }

    /// `base` stretched by the multiplier (score + 1).
    pub fn scale(&self, base: Duration) -> Duration {
        base.saturating_mul(u32::from(self.score) + 1)
    }

    fn raise(&mut self) {
        self.score = self.score.saturating_add(1).min(self.max);
    }
}

/// The bounds of a Lifeguard suspicion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuspicionBounds {
    /// The timeout once `confirmations` independent members agree.
    pub min: Duration,
    /// The timeout when nobody confirms.
    pub max: Duration,
    /// How many independent confirmations bring the timeout down to `min`.
    pub confirmations: u32,
}

impl SuspicionBounds {
    /// The timeout after `confirmed` independent confirmations, expecting `expected`:
    /// `max(min, max − (max − min)·ln(C+1)/ln(K+1))`. With nobody to confirm
    /// (`expected == 0`) the suspicion runs `min`.
    pub fn timeout(&self, confirmed: u32, expected: u32) -> Duration {
        if expected == 0 || confirmed >= expected {
            return self.min;
        }
        let span = self.max.saturating_sub(self.min);
        let fraction = f64::from(confirmed + 1).ln() / f64::from(expected + 1).ln();
        self.max
            .saturating_sub(span.mul_f64(fraction))
            .max(self.min)
    }

    /// The confirmations to expect when the cluster has `live_others` live members
    /// besides this node: the suspect cannot confirm, and neither can we, so a cluster
    /// too small to gather `confirmations` runs the shortest timeout (as memberlist does).
    pub fn expected(&self, live_others: usize) -> u32 {
        let possible = live_others.saturating_sub(1);
        if possible < self.confirmations as usize {
            0
        } else {
            self.confirmations
        }
    }
}

/// A suspicion deadline to schedule: fire [`Suspicions::on_deadline`] with `node` and
/// `token` after `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineTimer {
    /// The suspect.
    pub node: NodeId,
    /// Identifies this deadline; a later confirmation supersedes it.
    pub token: u64,
    /// How long from now.
    pub after: Duration,
}

#[derive(Debug, Clone)]
struct Suspicion {
    identity: MemberIdentity,
    incarnation: Incarnation,
    started: Duration,
    /// Who has reported this suspicion; the first (whoever made us suspect) does not
    /// count as a confirmation.
    reporters: Vec<NodeId>,
    expected: u32,
    token: u64,
}

impl Suspicion {
    fn confirmations(&self) -> u32 {
        u32::try_from(self.reporters.len().saturating_sub(1)).unwrap_or(u32::MAX)
    }
}

/// The suspicions this node is timing, one per suspect name.
#[derive(Debug, Clone)]
pub struct Suspicions {
    bounds: SuspicionBounds,
    by_node: BTreeMap<NodeId, Suspicion>,
    next_token: u64,
}

impl Suspicions {
    /// No suspicions yet.
    pub fn new(bounds: SuspicionBounds) -> Self {
        Suspicions {
            bounds,
            by_node: BTreeMap::new(),
            next_token: 0,
        }
    }

    /// How many suspicions are running.
    pub fn len(&self) -> usize {
        self.by_node.len()
    }

    /// Whether no suspicion is running.
    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }

    /// `reporter` says `suspect` (at SWIM incarnation `incarnation`) is suspect. Starts a
    /// suspicion, or counts a confirmation of the running one; returns the deadline to
    /// schedule when it moved. `live_others` is this node's count of live members.
    pub fn report(
        &mut self,
        suspect: &MemberIdentity,
        incarnation: Incarnation,
        reporter: &NodeId,
        live_others: usize,
        now: Duration,
    ) -> Option<DeadlineTimer> {
        if reporter == suspect.node() {
            return None;
        }
        let token = self.next_token;
        let entry = self.by_node.get_mut(suspect.node());
        let suspicion = match entry {
            Some(running) if running.identity == *suspect && running.incarnation == incarnation => {
                if running.reporters.contains(reporter)
                    || running.confirmations() >= running.expected
                {
                    return None;
                }
                running.reporters.push(reporter.clone());
                running.token = token;
                running
            }
            // A newer identity or incarnation is a new suspicion; an older one is stale.
            Some(running)
                if running.identity.incarnation() > suspect.incarnation()
                    || (running.identity == *suspect && running.incarnation > incarnation) =>
            {
                return None;
            }
            _ => {
                let fresh = Suspicion {
                    identity: suspect.clone(),
                    incarnation,
                    started: now,
                    reporters: vec![reporter.clone()],
                    expected: self.bounds.expected(live_others),
                    token,
                };
                self.by_node.insert(suspect.node().clone(), fresh);
                self.by_node.get_mut(suspect.node()).expect("just inserted")
            }
        };
        self.next_token += 1;
        let deadline = suspicion.started
            + self
                .bounds
                .timeout(suspicion.confirmations(), suspicion.expected);
        Some(DeadlineTimer {
            node: suspect.node().clone(),
            token: suspicion.token,
            after: deadline.saturating_sub(now),
        })
    }

    /// The suspect is known alive again at `incarnation` (a refutation) or has a newer
    /// identity: any older suspicion ends.
    pub fn refuted(&mut self, member: &MemberIdentity, incarnation: Incarnation) {
        if let Some(running) = self.by_node.get(member.node()) {
            let newer_identity = running.identity.incarnation() < member.incarnation();
            let refuted = running.identity == *member && incarnation > running.incarnation;
            if newer_identity || refuted {
                self.by_node.remove(member.node());
            }
        }
    }

    /// The member is down or gone: its suspicion ends.
    pub fn forget(&mut self, node: &NodeId) {
        self.by_node.remove(node);
    }

    /// A deadline fired: the suspect to declare down (identity and SWIM incarnation) if
    /// this is the suspicion's current deadline and it has passed.
    pub fn on_deadline(
        &mut self,
        node: &NodeId,
        token: u64,
        now: Duration,
    ) -> Option<(MemberIdentity, Incarnation)> {
        let running = self.by_node.get(node)?;
        let deadline = running.started
            + self
                .bounds
                .timeout(running.confirmations(), running.expected);
        if running.token != token || now < deadline {
            return None;
        }
        let done = self.by_node.remove(node)?;
        Some((done.identity, done.incarnation))
    }
}

/// "`reporter`'s own probe of `suspect` failed": one independent suspicion, spread to
/// the cluster as a foca custom broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspicionReport {
    /// The member suspected.
    pub suspect: MemberIdentity,
    /// The suspect's SWIM incarnation when suspected.
    pub incarnation: Incarnation,
    /// Who suspects it.
    #[serde(with = "super::identity::node_id")]
    pub reporter: NodeId,
}

impl SuspicionReport {
    /// The report as broadcast bytes.
    pub fn encode(&self, codec: &mut BincodeCodec) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        codec.encode(self, &mut out)?;
        Ok(out)
    }

    /// A report from broadcast bytes (exactly one, nothing after it).
    pub fn decode(mut data: &[u8]) -> Result<Self, ReportError> {
        let report = BincodeCodec::decode(&mut data)?;
        if !data.is_empty() {
            return Err(ReportError::Trailing(data.len()));
        }
        Ok(report)
    }

    fn key(&self) -> ReportKey {
        ReportKey {
            suspect_key: self.suspect.key(),
            reporter_key: NameKey::of(&self.reporter),
            suspect: self.suspect.node().clone(),
            run: self.suspect.incarnation(),
            incarnation: self.incarnation,
            reporter: self.reporter.clone(),
        }
    }
}

/// A custom broadcast that is not a valid [`SuspicionReport`]; foca refuses the rest of
/// the packet's broadcasts (the updates before them were applied).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Not a report.
    #[error("suspicion report: {0}")]
    Decode(#[from] CodecError),
    /// Bytes after the report.
    #[error("{0} bytes after a suspicion report")]
    Trailing(usize),
}

/// What makes two reports the same news. Every member checks every report it receives
/// against the thousands it remembers, so the names' keys come first: two reports are
/// told apart by comparing integers, and names are compared only when the keys match.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReportKey {
    suspect_key: NameKey,
    reporter_key: NameKey,
    run: u64,
    incarnation: Incarnation,
    suspect: NodeId,
    reporter: NodeId,
}

impl foca::Invalidates for ReportKey {
    fn invalidates(&self, other: &Self) -> bool {
        self == other
    }
}

/// foca's broadcast handler for suspicion reports: a report is disseminated the first
/// time it is seen and dropped after. With Lifeguard off, reports from peers are read
/// (the core ignores them) but not passed on.
#[derive(Debug, Clone)]
pub struct SuspicionReports {
    relay: bool,
    seen: BTreeSet<ReportKey>,
    order: VecDeque<ReportKey>,
}

impl SuspicionReports {
    /// A handler that relays new reports when `relay` is set.
    pub fn new(relay: bool) -> Self {
        SuspicionReports {
            relay,
            seen: BTreeSet::new(),
            order: VecDeque::new(),
        }
    }
}

impl foca::BroadcastHandler<MemberIdentity> for SuspicionReports {
    type Key = ReportKey;
    type Error = ReportError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&MemberIdentity>,
    ) -> Result<Option<ReportKey>, ReportError> {
        let key = SuspicionReport::decode(data)?.key();
        if !self.relay || !self.seen.insert(key.clone()) {
            return Ok(None);
        }
        self.order.push_back(key.clone());
        if self.order.len() > REMEMBERED_REPORTS
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use foca::BroadcastHandler;

    use super::*;

    const BOUNDS: SuspicionBounds = SuspicionBounds {
        min: Duration::from_secs(4),
        max: Duration::from_secs(24),
        confirmations: 3,
    };

    fn node(name: &str) -> NodeId {
        NodeId(name.into())
    }

    fn member(name: &str, incarnation: u64) -> MemberIdentity {
        MemberIdentity::new(
            node(name),
            SocketAddr::from(([127, 0, 0, 1], 1)),
            SocketAddr::from(([127, 0, 0, 1], 2)),
            incarnation,
        )
    }

    #[test]
    fn local_health_rises_on_trouble_falls_on_success_and_is_capped() {
        let mut health = LocalHealth::new(3);
        assert_eq!(health.scale(Duration::from_secs(1)), Duration::from_secs(1));
        for _ in 0..5 {
            health.probe_failed();
        }
        assert_eq!(health.score(), 3);
        assert_eq!(health.scale(Duration::from_secs(1)), Duration::from_secs(4));
        health.probe_succeeded();
        health.suspected();
        health.probe_succeeded();
        assert_eq!(health.score(), 2);
        for _ in 0..5 {
            health.probe_succeeded();
        }
        assert_eq!(health.score(), 0);
    }

    #[test]
    fn timeout_shrinks_from_max_to_min_with_confirmations() {
        let table = [(0, 24_000), (1, 14_000), (2, 8_150), (3, 4_000), (9, 4_000)];
        for (confirmed, ms) in table {
            let got = BOUNDS.timeout(confirmed, 3).as_millis();
            assert!(
                got.abs_diff(ms) <= 10,
                "C={confirmed}: {got} ms, want ~{ms}"
            );
        }
        assert_eq!(BOUNDS.timeout(0, 0), BOUNDS.min);
    }

    #[test]
    fn a_small_cluster_expects_no_confirmations() {
        assert_eq!(BOUNDS.expected(3), 0);
        assert_eq!(BOUNDS.expected(4), 3);
    }

    #[test]
    fn distinct_reporters_bring_the_deadline_forward_and_repeats_do_not() {
        let mut s = Suspicions::new(BOUNDS);
        let x = member("x", 1);
        let t0 = Duration::from_secs(100);
        let first = s.report(&x, 0, &node("a"), 10, t0).expect("starts");
        assert_eq!(first.after, BOUNDS.max);
        assert!(
            s.report(&x, 0, &node("a"), 10, t0).is_none(),
            "same reporter"
        );
        assert!(
            s.report(&x, 0, &node("x"), 10, t0).is_none(),
            "the suspect itself"
        );
        let later = t0 + Duration::from_secs(1);
        let second = s
            .report(&x, 0, &node("b"), 10, later)
            .expect("confirmation");
        assert_eq!(second.after, Duration::from_secs(13));
        // The superseded deadline does nothing, the current one declares the suspect.
        let fire = t0 + Duration::from_secs(14);
        assert_eq!(s.on_deadline(x.node(), first.token, fire), None);
        assert_eq!(s.on_deadline(x.node(), second.token, fire), Some((x, 0)));
        assert!(s.is_empty());
    }

    #[test]
    fn a_deadline_before_its_time_does_nothing() {
        let mut s = Suspicions::new(BOUNDS);
        let x = member("x", 1);
        let timer = s
            .report(&x, 0, &node("a"), 10, Duration::ZERO)
            .expect("starts");
        assert_eq!(
            s.on_deadline(x.node(), timer.token, Duration::from_secs(5)),
            None
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn refutation_and_renewal_end_a_suspicion_but_stale_news_does_not() {
        let mut s = Suspicions::new(BOUNDS);
        let x = member("x", 1);
        let timer = s
            .report(&x, 2, &node("a"), 10, Duration::ZERO)
            .expect("starts");
        s.refuted(&x, 2);
        assert_eq!(s.len(), 1, "same incarnation is no refutation");
        assert!(
            s.report(&x, 1, &node("b"), 10, Duration::ZERO).is_none(),
            "stale"
        );
        s.refuted(&x, 3);
        assert!(s.is_empty());
        assert_eq!(s.on_deadline(x.node(), timer.token, BOUNDS.max), None);

        s.report(&x, 0, &node("a"), 10, Duration::ZERO)
            .expect("starts");
        s.refuted(&member("x", 2), 0);
        assert!(s.is_empty(), "a restarted member is not the suspect");
    }

    #[test]
    fn a_report_is_news_once() {
        let report = SuspicionReport {
            suspect: member("x", 1),
            incarnation: 2,
            reporter: node("a"),
        };
        let bytes = report.encode(&mut BincodeCodec::new()).expect("encode");
        assert_eq!(SuspicionReport::decode(&bytes).expect("decode"), report);
        let mut handler = SuspicionReports::new(true);
        assert!(handler.receive_item(&bytes, None).expect("valid").is_some());
        assert!(handler.receive_item(&bytes, None).expect("valid").is_none());
        let mut quiet = SuspicionReports::new(false);
        assert!(quiet.receive_item(&bytes, None).expect("valid").is_none());
        assert!(handler.receive_item(&bytes[1..], None).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            handler.receive_item(&trailing, None),
            Err(ReportError::Trailing(1))
        ));
    }

    #[test]
    fn remembered_reports_are_bounded() {
        let mut handler = SuspicionReports::new(true);
        let mut codec = BincodeCodec::new();
        for i in 0..REMEMBERED_REPORTS + 10 {
            let report = SuspicionReport {
                suspect: member("x", i as u64),
                incarnation: 0,
                reporter: node("a"),
            };
            let bytes = report.encode(&mut codec).expect("encode");
            assert!(handler.receive_item(&bytes, None).expect("valid").is_some());
        }
        assert_eq!(handler.seen.len(), REMEMBERED_REPORTS);
        assert_eq!(handler.order.len(), REMEMBERED_REPORTS);
    }
}
