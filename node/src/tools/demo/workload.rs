//! The demo's workload: closed-loop workers on the SDK, one tier each (split by weight),
//! many users, single submits and batches; every acknowledged item is remembered so
//! that it can be read back at the end.
//!
//! Errors are counted by kind and never stop a worker: while a member is down some
//! requests fail (unavailable, timeouts) and that is what the demo shows.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_client::{Client, ClientError, Item, ItemId, Kind, Tier};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

/// The tier mix: realtime 10 %, priority 20 %, standard 40 %, batch 30 % of the workers.
pub const TIER_WEIGHTS: [(Tier, u32); 4] = [
    (Tier::Realtime, 10),
    (Tier::Priority, 20),
    (Tier::Standard, 40),
    (Tier::Batch, 30),
];

/// Items per request of a batch-tier worker (the other tiers submit one at a time).
pub const BATCH_SIZE: usize = 10;

/// Pause after a failed request, so that a worker facing a dead owner does not spin.
const ERROR_PAUSE: Duration = Duration::from_millis(20);

/// Attempts to read one acknowledged item back before it counts as lost.
const READ_ATTEMPTS: u32 = 5;

/// Pause between two attempts to read an item back.
const READ_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Reads in flight while reading back.
const READ_CONCURRENCY: usize = 32;

/// What the items look like.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Distinct users the items come from.
    pub users: u32,
}

/// An item the cluster acknowledged, as it was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acked {
    /// Its id.
    pub id: ItemId,
    /// Its user.
    pub user: String,
    /// Its text.
    pub text: String,
}

/// What one tier's workers measured.
#[derive(Clone, Debug)]
pub struct TierStats {
    /// Latency of successful requests, microseconds.
    pub histogram: Histogram<u64>,
    /// Successful requests.
    pub requests_ok: u64,
    /// Items acknowledged.
    pub items_acked: u64,
    /// Failed requests (or items of a batch), by error kind.
    pub errors: BTreeMap<String, u64>,
    /// The same failures by phase, then by kind.
    pub errors_by_phase: BTreeMap<String, BTreeMap<String, u64>>,
}

impl TierStats {
    fn new() -> Self {
        TierStats {
            // 1 µs .. 10 min at 3 significant digits.
            histogram: Histogram::new_with_bounds(1, 600_000_000, 3)
                .expect("valid histogram bounds"),
            requests_ok: 0,
            items_acked: 0,
            errors: BTreeMap::new(),
            errors_by_phase: BTreeMap::new(),
        }
    }

    fn add(&mut self, other: &TierStats) {
        self.histogram
            .add(&other.histogram)
            .expect("same histogram bounds");
        self.requests_ok += other.requests_ok;
        self.items_acked += other.items_acked;
        add_counts(&mut self.errors, &other.errors);
        for (phase, errors) in &other.errors_by_phase {
            add_counts(
                self.errors_by_phase.entry(phase.clone()).or_default(),
                errors,
            );
        }
    }

    fn error(&mut self, error: &ClientError, progress: &Progress) {
        let kind = error_kind(error);
        let phase = progress.phase();
        *self
            .errors_by_phase
            .entry(phase)
            .or_default()
            .entry(kind.clone())
            .or_insert(0) += 1;
        *self.errors.entry(kind).or_insert(0) += 1;
        progress.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Adds the counts of `from` to `into`, kind by kind.
pub fn add_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (kind, n) in from {
        *into.entry(kind.clone()).or_insert(0) += n;
    }
}

/// What the workload measured, once stopped.
#[derive(Debug)]
pub struct WorkloadReport {
    /// Per tier, in the order of [`TIER_WEIGHTS`].
    pub tiers: Vec<(Tier, TierStats)>,
    /// Every acknowledged item.
    pub acked: Vec<Acked>,
    /// How long it ran.
    pub elapsed: Duration,
}

impl WorkloadReport {
    /// Errors of every tier, by kind.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for (_, stats) in &self.tiers {
            add_counts(&mut all, &stats.errors);
        }
        all
    }

    /// Errors of every tier, by phase, then by kind.
    pub fn errors_by_phase(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut all: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (_, stats) in &self.tiers {
            for (phase, errors) in &stats.errors_by_phase {
                add_counts(all.entry(phase.clone()).or_default(), errors);
            }
        }
        all
    }
}

/// Live counters, read by the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Items acknowledged so far.
    pub acked: AtomicU64,
    /// Failed requests so far.
    pub errors: AtomicU64,
    /// The phase shown on the progress line.
    pub phase: Mutex<String>,
}

impl Progress {
    /// Names the phase the progress line shows.
    pub fn set_phase(&self, phase: &str) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase.to_string();
    }

    /// The phase now.
    pub fn phase(&self) -> String {
        self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A running workload.
pub struct Workload {
    stop: CancellationToken,
    workers: tokio::task::JoinSet<Vec<(Tier, TierStats, Vec<Acked>)>>,
    reporter: tokio::task::JoinHandle<()>,
    started: Instant,
    /// Live counters.
    pub progress: Arc<Progress>,
}

/// The tier of worker `w` of `workers`: workers are split between tiers by weight.
pub fn tier_of_worker(w: usize, workers: usize) -> Tier {
    let total: u32 = TIER_WEIGHTS.iter().map(|(_, weight)| weight).sum();
    let mut pick = (w as u64 * u64::from(total) / workers.max(1) as u64) as u32;
    for (tier, weight) in TIER_WEIGHTS {
        if pick < weight {
            return tier;
        }
        pick -= weight;
    }
    TIER_WEIGHTS[0].0
}

impl Workload {
    /// Starts `concurrency` workers on `client` and the progress line on stderr.
    pub fn start(client: &Client, shape: Shape, concurrency: usize) -> Workload {
        let stop = CancellationToken::new();
        let progress = Arc::new(Progress::default());
        let mut workers = tokio::task::JoinSet::new();
        for w in 0..concurrency.max(1) {
            workers.spawn(worker(
                tier_of_worker(w, concurrency),
                client.clone(),
                shape.clone(),
                stop.clone(),
                progress.clone(),
            ));
        }
        let started = Instant::now();
        let reporter = tokio::spawn(report_progress(progress.clone(), started, stop.clone()));
        Workload {
            stop,
            workers,
            reporter,
            started,
            progress,
        }
    }

    /// Stops the workers, waits for their requests in flight and gathers what they
    /// measured.
    pub async fn stop(mut self) -> WorkloadReport {
        self.stop.cancel();
        let mut tiers: Vec<(Tier, TierStats)> = TIER_WEIGHTS
            .iter()
            .map(|(tier, _)| (*tier, TierStats::new()))
            .collect();
        let mut acked = Vec::new();
        while let Some(result) = self.workers.join_next().await {
            // A worker that panicked has lost its ledger: nothing to read back from it.
            let Ok(parts) = result else { continue };
            for (tier, stats, items) in parts {
                if let Some((_, total)) = tiers.iter_mut().find(|(t, _)| *t == tier) {
                    total.add(&stats);
                }
                acked.extend(items);
            }
        }
        let _ = (&mut self.reporter).await;
        progress_done();
        WorkloadReport {
            tiers,
            acked,
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for Workload {
    /// A workload dropped without [`Workload::stop`] (an interrupted demo) stops its
    /// workers and its progress line at once.
    fn drop(&mut self) {
        self.stop.cancel();
        self.reporter.abort();
    }
}

/// One closed-loop worker: one request in flight until stopped.
async fn worker(
    tier: Tier,
    client: Client,
    shape: Shape,
    stop: CancellationToken,
    progress: Arc<Progress>,
) -> Vec<(Tier, TierStats, Vec<Acked>)> {
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    let mut stats = TierStats::new();
    let mut acked = Vec::new();
    while !stop.is_cancelled() {
        let size = if tier == Tier::Batch { BATCH_SIZE } else { 1 };
        let items: Vec<Item> = (0..size).map(|_| item(&shape, tier, &mut rng)).collect();
        let sent = Instant::now();
        let failed = if size == 1 {
            let item = items.into_iter().next().expect("one item");
            match client.submit(item.clone()).await {
                Ok(_) => {
                    ok(&mut stats, &mut acked, &progress, sent, [item]);
                    false
                }
                Err(e) => {
                    stats.error(&e, &progress);
                    true
                }
            }
        } else {
            match client.submit_batch(items.clone()).await {
                Ok(outcomes) => {
                    let mut stored = Vec::with_capacity(items.len());
                    for (item, outcome) in items.into_iter().zip(outcomes) {
                        match outcome {
                            Ok(_) => stored.push(item),
                            Err(code) => stats.error(&ClientError::Server(code), &progress),
                        }
                    }
                    let any_failed = stored.len() < size;
                    ok(&mut stats, &mut acked, &progress, sent, stored);
                    any_failed
                }
                Err(e) => {
                    stats.error(&e, &progress);
                    true
                }
            }
        };
        if failed {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(ERROR_PAUSE) => {}
            }
        }
    }
    vec![(tier, stats, acked)]
}

/// Counts a successful request and remembers its items.
fn ok(
    stats: &mut TierStats,
    acked: &mut Vec<Acked>,
    progress: &Progress,
    sent: Instant,
    items: impl IntoIterator<Item = Item>,
) {
    stats.requests_ok += 1;
    stats
        .histogram
        .saturating_record((sent.elapsed().as_micros() as u64).max(1));
    for item in items {
        stats.items_acked += 1;
        progress.acked.fetch_add(1, Ordering::Relaxed);
        acked.push(Acked {
            id: item.id,
            user: item.user_id,
            text: item.text,
        });
    }
}

/// A plausible feedback item of `tier` from a random user.
fn item(shape: &Shape, tier: Tier, rng: &mut impl Rng) -> Item {
    const TEXTS: [&str; 4] = [
        "The export finished quickly and the file looked right",
        "Search results load slowly on the second page",
        "Please add a dark theme to the settings screen",
        "The upload button does nothing on a slow connection",
    ];
    let user = format!("demo-user-{:05}", rng.random_range(0..shape.users.max(1)));
    let n: u32 = rng.random();
    let (kind, text) = match n % 4 {
        0 => (Kind::Rating, String::new()),
        1 => (Kind::Feature, TEXTS[2].to_string()),
        2 => (Kind::Bug, format!("{} (#{n})", TEXTS[(n as usize / 4) % 4])),
        _ => (Kind::Text, format!("{} (#{n})", TEXTS[0])),
    };
    let mut item = Item::new(user, kind);
    item.rating = Some(rng.random_range(1..=5));
    item.text = text;
    item.tier = tier;
    item
}

/// A short stable name for an error, for the summary.
pub fn error_kind(error: &ClientError) -> String {
    match error {
        ClientError::Server(code) => code.kind().to_string(),
        ClientError::Timeout => "client_timeout".into(),
        ClientError::ConnectionLost { .. } => "connection_lost".into(),
        ClientError::StreamReset { .. } => "stream_reset".into(),
        ClientError::Connect { .. } => "connect".into(),
        ClientError::NoServerReachable { .. } => "no_server_reachable".into(),
        ClientError::Tls(_) => "tls".into(),
        ClientError::FrameTooLarge { .. } => "frame_too_large".into(),
        ClientError::Protocol(_) => "protocol".into(),
        ClientError::Closed => "closed".into(),
        _ => "client_other".into(),
    }
}

/// The outcome of reading every acknowledged item back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBack {
    /// Items found with the id, user and text they were acknowledged with.
    pub matched: u64,
    /// Items not found (or not readable) after every attempt.
    pub lost: u64,
    /// Items found with another user or text than acknowledged.
    pub mismatched: u64,
    /// A few ids of lost or mismatched items, for the report.
    pub examples: Vec<String>,
}

/// The outcome of listing every user that has acknowledged items.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListBack {
    /// Users listed.
    pub users: u64,
    /// Acknowledged items missing from their user's listing.
    pub unlisted: u64,
    /// Items that appeared more than once in a listing.
    pub duplicated: u64,
    /// Users whose listing was refused on every attempt.
    pub refused: u64,
}

/// Lists every user of `acked` (every page) and checks that each acknowledged item is
/// there, once: a failover must not leave an item readable by id but missing from its
/// user's listing.
pub async fn list_back(client: &Client, acked: &[Acked]) -> ListBack {
    let mut by_user: BTreeMap<&str, Vec<ItemId>> = BTreeMap::new();
    for item in acked {
        by_user.entry(&item.user).or_default().push(item.id);
    }
    let mut outcome = ListBack {
        users: by_user.len() as u64,
        ..ListBack::default()
    };
    let mut lists = futures_util::stream::iter(by_user)
        .map(|(user, ids)| async move { (ids, list_user(client, user).await) })
        .buffer_unordered(READ_CONCURRENCY);
    while let Some((ids, listed)) = lists.next().await {
        let Some(listed) = listed else {
            outcome.refused += 1;
            outcome.unlisted += ids.len() as u64;
            continue;
        };
        let unique: std::collections::BTreeSet<ItemId> = listed.iter().copied().collect();
        outcome.duplicated += (listed.len() - unique.len()) as u64;
        outcome.unlisted += ids.iter().filter(|id| !unique.contains(id)).count() as u64;
    }
    outcome
}

/// Every id in `user`'s listing, page after page; `None` if a page was refused on every
/// attempt.
async fn list_user(client: &Client, user: &str) -> Option<Vec<ItemId>> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let mut page = None;
        for attempt in 0..READ_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(READ_RETRY_PAUSE).await;
            }
            if let Ok(got) = client
                .list_by_user(user, after.clone(), chorus_protocol::MAX_PAGE_LIMIT)
                .await
            {
                page = Some(got);
                break;
            }
        }
        let page = page?;
        ids.extend(page.items.iter().map(|s| s.item.id));
        match page.next {
            Some(next) => after = Some(next),
            None => return Some(ids),
        }
    }
}

/// What one read-back found.
enum Found {
    Matched,
    Lost,
    Mismatched,
}

/// Reads every item of `acked` back by id through `client` and compares it.
pub async fn read_back(client: &Client, acked: &[Acked]) -> ReadBack {
    const EXAMPLES: usize = 5;
    let mut outcome = ReadBack::default();
    let mut reads = futures_util::stream::iter(acked)
        .map(|expected| async move { (expected, read_one(client, expected).await) })
        .buffer_unordered(READ_CONCURRENCY);
    while let Some((expected, found)) = reads.next().await {
        let bad = match found {
            Found::Matched => {
                outcome.matched += 1;
                false
            }
            Found::Lost => {
                outcome.lost += 1;
                true
            }
            Found::Mismatched => {
                outcome.mismatched += 1;
                true
            }
        };
        if bad && outcome.examples.len() < EXAMPLES {
            outcome.examples.push(expected.id.to_string());
        }
    }
    outcome
}

async fn read_one(client: &Client, expected: &Acked) -> Found {
    for attempt in 0..READ_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(READ_RETRY_PAUSE).await;
        }
        // Not found, or not reachable now: ask again (a peer may be catching up).
        if let Ok(Some(stored)) = client.get(expected.id).await {
            let item = &stored.item;
            let same = item.id == expected.id
                && item.user_id == expected.user
                && item.text == expected.text;
            return if same {
                Found::Matched
            } else {
                Found::Mismatched
            };
        }
    }
    Found::Lost
}

/// Prints a line on stderr above the progress line.
pub fn say(line: &str) {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K");
    }
    eprintln!("{line}");
}

/// Ends the progress line.
fn progress_done() {
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}

/// The progress line: phase, elapsed seconds, items acknowledged, rate, errors. Redrawn
/// in place on a terminal; one line every few seconds otherwise (a log stays short).
async fn report_progress(progress: Arc<Progress>, started: Instant, stop: CancellationToken) {
    let terminal = std::io::stderr().is_terminal();
    let period = if terminal {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(2)
    };
    let mut ticker = tokio::time::interval(period);
    ticker.tick().await;
    let (mut last_acked, mut last_at) = (0, Instant::now());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let acked = progress.acked.load(Ordering::Relaxed);
        let rate = (acked - last_acked) as f64 / last_at.elapsed().as_secs_f64().max(1e-3);
        (last_acked, last_at) = (acked, Instant::now());
        let phase = progress.phase();
        let line = format!(
            "[{:>5.1}s] {phase:<10} acked {acked:>8}  {rate:>7.0}/s  errors {}",
            started.elapsed().as_secs_f64(),
            progress.errors.load(Ordering::Relaxed)
        );
        if terminal {
            eprint!("\r\x1b[K{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_split_between_tiers_by_weight() {
        let tiers: Vec<Tier> = (0..20).map(|w| tier_of_worker(w, 20)).collect();
        let count = |t: Tier| tiers.iter().filter(|x| **x == t).count();
        assert_eq!(count(Tier::Realtime), 2);
        assert_eq!(count(Tier::Priority), 4);
        assert_eq!(count(Tier::Standard), 8);
        assert_eq!(count(Tier::Batch), 6);
    }

    #[test]
    fn a_single_worker_still_runs_a_tier() {
        assert_eq!(tier_of_worker(0, 1), Tier::Realtime);
    }

    #[test]
    fn items_are_valid_and_of_their_tier() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let shape = Shape { users: 10 };
        for _ in 0..100 {
            let item = item(&shape, Tier::Priority, &mut rng);
            assert_eq!(item.tier, Tier::Priority);
            assert!(item.validate().is_ok(), "{item:?}");
        }
    }
}
