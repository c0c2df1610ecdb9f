//! The optional enrichment call: after validation and before the store
//! write, a validator worker POSTs each (redacted, not rejected) item as JSON to the
//! configured URL. Any 2xx is success; anything else, a timeout or a connection error
//! is a failure. The call is a side call: its outcome is recorded in the receipt
//! ([`Enrichment`]) and never fails a submit.
//!
//! ```text
//! worker ─► level admits optional work? ─no─► Skipped "shed: <level>"
//!             │ yes
//!             ▼
//!           EnrichmentGate (one per node, shared by every worker; a Mutex held only
//!           for the O(1) policy calls, never across an await)
//!             breaker.try_acquire ─rejected─► Skipped "circuit open"
//!             bulkhead.try_enter  ─full─────► Skipped "bulkhead full"
//!             │ run (or queued, then handed a slot by a leaving call)
//!             ▼
//!           HTTP POST (per-call timeout) ─► Done | Skipped "failed: ..."
//!             outcome ─► breaker (published like the store's), bulkhead slot freed
//! ```
//!
//! With no URL configured (the default) there is no gate and no client: each write
//! gets [`Enrichment::NotConfigured`] at no cost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chorus_protocol::{Enrichment, Item, Status};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tracing::debug;

use crate::policy::breaker::{
    Admission, BreakerCommand, BreakerConfig, BreakerConfigError, BreakerState, Permit,
};
use crate::policy::bulkhead::{Bulkhead, BulkheadConfig, BulkheadConfigError, Entry};
use crate::policy::degradation::Level;
use crate::published_breaker::{BreakerBoard, PublishedBreaker, new_board};
use crate::store::Write;
use crate::telemetry::{BULKHEAD_QUEUED, BULKHEAD_RUNNING, ENRICHMENT_CALLS};

/// The default per-call timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The dependency name of the enrichment breaker (logs, metrics).
pub const DEPENDENCY: &str = "enrichment";

/// Settings of the enrichment call; `Default` is off (no URL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrichmentConfig {
    /// Where items are POSTed (`http://…`); `None` turns enrichment off.
    pub url: Option<String>,
    /// Longest one call may take, connection included (default 2 s).
    pub timeout: Duration,
    /// The enrichment service's breaker (default: open 60 s after 5 failures).
    pub breaker: BreakerConfig,
    /// Calls in flight and waiting at once (default 10 concurrent, 100 waiting).
    pub bulkhead: BulkheadConfig,
}

impl Default for EnrichmentConfig {
    fn default() -> Self {
        EnrichmentConfig {
            url: None,
            timeout: DEFAULT_TIMEOUT,
            breaker: BreakerConfig::enrichment(),
            bulkhead: BulkheadConfig::external_calls(),
        }
    }
}

/// Why an [`EnrichmentConfig`] is invalid; the message names the field.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnrichmentConfigError {
    /// The URL does not parse or is not plain `http`.
    #[error("url: {0}")]
    Url(String),
    /// The timeout is zero.
    #[error("timeout must be greater than zero")]
    Timeout,
    /// The breaker settings are invalid.
    #[error("breaker: {0}")]
    Breaker(#[from] BreakerConfigError),
    /// The bulkhead settings are invalid.
    #[error("bulkhead: {0}")]
    Bulkhead(#[from] BulkheadConfigError),
}

impl EnrichmentConfig {
    /// Checks every setting; the error names the offending one.
    pub fn validate(&self) -> Result<(), EnrichmentConfigError> {
        if let Some(url) = &self.url {
            parse_url(url)?;
        }
        if self.timeout.is_zero() {
            return Err(EnrichmentConfigError::Timeout);
        }
        self.breaker.validate()?;
        self.bulkhead.validate()?;
        Ok(())
    }
}

fn parse_url(url: &str) -> Result<reqwest::Url, EnrichmentConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| EnrichmentConfigError::Url(format!("{url:?} is not a URL: {e}")))?;
    if parsed.scheme() != "http" {
        return Err(EnrichmentConfigError::Url(format!(
            "{url:?} must be an http:// URL (this build has no TLS client)"
        )));
    }
    if parsed.host_str().is_none() {
        return Err(EnrichmentConfigError::Url(format!("{url:?} has no host")));
    }
    Ok(parsed)
}

/// The breaker and bulkhead of the enrichment service, shared by every worker.
struct Gate {
    breaker: PublishedBreaker,
    bulkhead: Bulkhead<u64>,
    /// Queued tickets' wake-ups, handed a run slot by a leaving call.
    waiters: HashMap<u64, oneshot::Sender<()>>,
    next_ticket: u64,
}

impl Gate {
    /// A running call ends: its slot goes to the next waiter that still waits.
    fn leave(&mut self, now: Instant) {
        while let Some(next) = self.bulkhead.leave(now) {
            // A waiter that gave up between being queued and woken leaves the slot it
            // was handed free again: pass it on.
            if self
                .waiters
                .remove(&next)
                .is_some_and(|wake| wake.send(()).is_ok())
            {
                break;
            }
        }
        self.publish_occupancy();
    }

    /// Sets the bulkhead's occupancy gauges (after every change of it).
    fn publish_occupancy(&self) {
        metrics::gauge!(BULKHEAD_RUNNING, "resource" => DEPENDENCY)
            .set(f64::from(self.bulkhead.running()));
        metrics::gauge!(BULKHEAD_QUEUED, "resource" => DEPENDENCY)
            .set(self.bulkhead.queued() as f64);
    }
}

/// One admitted call's hold on the gate: reports the outcome to the breaker and frees
/// the bulkhead slot exactly once, also when the call's future is dropped.
struct Hold<'a> {
    gate: &'a Mutex<Gate>,
    permit: Option<Permit>,
    running: bool,
}

impl Hold<'_> {
    fn finish(mut self, started: Instant, ok: bool) {
        let now = Instant::now();
        let mut gate = lock(self.gate);
        if let Some(permit) = self.permit.take() {
            if ok {
                gate.breaker.on_success(now, permit, now - started);
            } else {
                gate.breaker.on_failure(now, permit);
            }
        }
        if std::mem::take(&mut self.running) {
            gate.leave(now);
        }
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if self.permit.is_none() && !self.running {
            return;
        }
        let mut gate = lock(self.gate);
        if let Some(permit) = self.permit.take() {
            gate.breaker.on_cancel(permit);
        }
        if self.running {
            gate.leave(Instant::now());
        }
    }
}

fn lock(gate: &Mutex<Gate>) -> MutexGuard<'_, Gate> {
    // The gate's state stays consistent across a panic elsewhere (every update is a
    // single policy call), so a poisoned lock is still usable.
    gate.lock().unwrap_or_else(|e| e.into_inner())
}

/// The enrichment client of a node: HTTP client, URL, timeout and the shared gate.
pub struct Enricher {
    client: reqwest::Client,
    url: reqwest::Url,
    timeout: Duration,
    gate: Mutex<Gate>,
    board: BreakerBoard,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why an [`Enricher`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EnricherError {
    /// The settings are invalid.
    #[error("enrichment: {0}")]
    Config(#[from] EnrichmentConfigError),
    /// The HTTP client could not be built.
    #[error("enrichment: HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl Enricher {
    /// The enricher for `config`, or `None` when no URL is configured.
    pub fn from_config(config: &EnrichmentConfig) -> Result<Option<Arc<Enricher>>, EnricherError> {
        config.validate()?;
        let Some(url) = &config.url else {
            return Ok(None);
        };
        let url = parse_url(url)?;
        let client = reqwest::Client::builder().timeout(config.timeout).build()?;
        let board = new_board();
        let breaker =
            PublishedBreaker::new(DEPENDENCY, config.breaker, board.clone(), Instant::now())
                .map_err(EnrichmentConfigError::from)?;
        let gate = Gate {
            breaker,
            bulkhead: Bulkhead::new(config.bulkhead).map_err(EnrichmentConfigError::from)?,
            waiters: HashMap::new(),
            next_ticket: 0,
        };
        Ok(Some(Arc::new(Enricher {
            client,
            url,
            timeout: config.timeout,
            gate: Mutex::new(gate),
            board,
        })))
    }

    /// The breaker's published state.
    pub fn breaker(&self) -> watch::Receiver<BreakerState> {
        self.board.subscribe()
    }

    /// The breaker's state now (a timed change that is due is applied first, so an open
    /// breaker whose timeout passed shows half-open even before the next call).
    pub fn breaker_state(&self) -> BreakerState {
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        gate.breaker.tick(Instant::now());
        gate.breaker.state()
    }

    /// The bulkhead's occupancy: `(running, queued, max_concurrent, max_queue)`.
    pub fn bulkhead(&self) -> (u32, usize, u32, u32) {
        let gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        let config = gate.bulkhead.config();
        (
            gate.bulkhead.running(),
            gate.bulkhead.queued(),
            config.max_concurrent,
            config.max_queue,
        )
    }

    /// Gives the breaker `config` from now on, keeping its state; an invalid `config`
    /// changes nothing.
    pub fn reconfigure_breaker(&self, config: BreakerConfig) -> Result<(), BreakerConfigError> {
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        gate.breaker.reconfigure(config, Instant::now())
    }

    /// An operator's command to the breaker; the state afterwards.
    pub fn breaker_command(&self, command: BreakerCommand) -> BreakerState {
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        match command {
            BreakerCommand::ForceOpen => gate.breaker.force_open(),
            BreakerCommand::Reset => gate.breaker.reset(),
        }
        gate.breaker.state()
    }

    /// Enriches one item: admission through the breaker and the bulkhead, then the call.
    pub async fn enrich(&self, item: &Item) -> Enrichment {
        let outcome = self.admit_and_call(item).await;
        let label = match &outcome {
            Enrichment::Done => "done",
            Enrichment::NotConfigured => "not_configured",
            Enrichment::Skipped { reason } if reason.starts_with("circuit") => "circuit_open",
            Enrichment::Skipped { reason } if reason.starts_with("bulkhead") => "bulkhead_full",
            Enrichment::Skipped { .. } => "failed",
        };
        metrics::counter!(ENRICHMENT_CALLS, "outcome" => label).increment(1);
        outcome
    }

    async fn admit_and_call(&self, item: &Item) -> Enrichment {
        let (hold, queued) = {
            let mut gate = lock(&self.gate);
            let now = Instant::now();
            let permit = match gate.breaker.try_acquire(now) {
                Admission::Allowed(permit) => permit,
                Admission::Rejected { .. } => return skipped("circuit open"),
            };
            let ticket = gate.next_ticket;
            gate.next_ticket += 1;
            let entry = gate.bulkhead.try_enter(now, ticket);
            gate.publish_occupancy();
            match entry {
                Entry::Run => (
                    Hold {
                        gate: &self.gate,
                        permit: Some(permit),
                        running: true,
                    },
                    None,
                ),
                Entry::Queued { .. } => {
                    let (tx, rx) = oneshot::channel();
                    gate.waiters.insert(ticket, tx);
                    (
                        Hold {
                            gate: &self.gate,
                            permit: Some(permit),
                            running: false,
                        },
                        Some((ticket, rx)),
                    )
                }
                Entry::Full => {
                    gate.breaker.on_cancel(permit);
                    return skipped("bulkhead full");
                }
            }
        };
        let mut hold = hold;
        if let Some((ticket, mut rx)) = queued {
            // `rx` stays alive until the gate is locked below, so a slot handed to this
            // ticket is never lost: either it arrived, or the ticket is still queued.
            let woken = tokio::time::timeout(self.timeout, &mut rx).await;
            if !matches!(woken, Ok(Ok(()))) {
                let mut gate = lock(&self.gate);
                if gate.waiters.remove(&ticket).is_some() {
                    gate.bulkhead.cancel(&ticket);
                    gate.publish_occupancy();
                } else {
                    // Handed a slot just as the wait ended: `hold` frees it on drop.
                    hold.running = true;
                }
                drop(gate);
                return skipped("bulkhead full (no slot within the timeout)");
            }
            hold.running = true;
        }
        let started = Instant::now();
        let result = self.call(item).await;
        hold.finish(started, result.is_ok());
        match result {
            Ok(()) => Enrichment::Done,
            Err(reason) => {
                debug!(item = %item.id, %reason, "enrichment call failed");
                Enrichment::Skipped {
                    reason: format!("failed: {reason}"),
                }
            }
        }
    }

    /// The HTTP call itself; any 2xx is success, the body is ignored.
    async fn call(&self, item: &Item) -> Result<(), String> {
        let body = serde_json::json!({
            "id": item.id.to_string(),
            "user_id": item.user_id,
            "kind": item.kind.as_str(),
            "text": item.text,
            "tags": item.tags,
            "tier": item.tier.as_str(),
        });
        let response = self
            .client
            .post(self.url.clone())
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    format!("timed out after {:?}", self.timeout)
                } else if e.is_connect() {
                    format!("cannot connect: {e}")
                } else {
                    e.to_string()
                }
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }
}

fn skipped(reason: &str) -> Enrichment {
    Enrichment::Skipped {
        reason: reason.to_string(),
    }
}

/// Sets the `enrichment` of every write: `NotConfigured` without an enricher; skipped
/// for rejected items and when `level` sheds optional work; otherwise the calls of the
/// job's items run concurrently.
pub async fn enrich_writes(enricher: Option<&Arc<Enricher>>, level: Level, writes: &mut [Write]) {
    let Some(enricher) = enricher else {
        return;
    };
    let mut calls = JoinSet::new();
    for (at, write) in writes.iter_mut().enumerate() {
        if matches!(write.status, Status::Rejected { .. }) {
            write.enrichment = skipped("rejected by the content policy");
            continue;
        }
        if !level.admits_optional_work() {
            write.enrichment = Enrichment::Skipped {
                reason: format!("shed: {}", level.as_str()),
            };
            metrics::counter!(ENRICHMENT_CALLS, "outcome" => "shed").increment(1);
            continue;
        }
        // Marked in case the call's task is lost (panic); overwritten by its outcome.
        write.enrichment = skipped("failed: internal error");
        let enricher = Arc::clone(enricher);
        let item = write.item.clone();
        calls.spawn(async move { (at, enricher.enrich(&item).await) });
    }
    while let Some(done) = calls.join_next().await {
        if let Ok((at, outcome)) = done {
            writes[at].enrichment = outcome;
        }
    }
}
