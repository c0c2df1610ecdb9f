//! [`NodeHandle`]: the node's actor tree as the QUIC server sees it.

mod events;
mod review;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chorus_protocol::{
    ErrorCode, FunctionRef, Item, ItemId, NodeId, PageToken, PartitionId, Receipt, Request, Role,
    StoredItem, Tier, VersionStats, partition_of,
};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, MessagingErr, RpcReplyPort};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, warn};

use crate::caller::Caller;
use crate::core::admission::{BatchOutcome, STORE_DEPENDENCY, shed_check, shed_tier};
use crate::core::scheduler::{DegradeCommand, QueueStatus};
use crate::enrichment::{DEPENDENCY as ENRICHMENT_DEPENDENCY, Enricher, EnricherError};
use crate::messages::{Children, IntakeMsg, Page, StoreMsg, TierMsg};
use crate::pipeline::{LivePolicy, PipelineConfig, PipelineConfigError};
use crate::policy::breaker::{BreakerCommand, BreakerState};
use crate::policy::degradation::Level;
use crate::published_bulkhead::{BulkheadBoard, BulkheadOccupancy};
use crate::published_door::DoorBoard;
use crate::replication::ReplicationSlot;
use crate::restart::RestartPolicy;
use crate::store::{
    ApiKeyEntry, AuditEntry, AuditReport, KeyHash, KeySet, KeyStatus, PartitionEpochs, Promise,
    RepairOutcome, ReplicaRecord, ShipBatch, ShipOutcome, Store, StoreConfig, StoreError,
};
use crate::supervisor::{NodeSupervisor, SupervisorArgs, SupervisorMsg};

/// The audit actor for API keys created over the client protocol.
const AUDIT_ACTOR_API: &str = "api";
/// The audit actor for what the agent does on its own (the first admin key).
const AUDIT_ACTOR_AGENT: &str = "agent";

/// Why the node's actor tree could not start. Nothing is running after it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened (IO, corruption, partition count mismatch).
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    /// The blocking task opening the store panicked.
    #[error("opening the store panicked: {0}")]
    OpenPanicked(#[from] tokio::task::JoinError),
    /// An actor failed to start.
    #[error("starting the actors: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    /// The enrichment client could not be built; nothing was started.
    #[error("enrichment: {0}")]
    Enrichment(#[from] EnricherError),
    /// The pipeline's settings are invalid; nothing was started.
    #[error("invalid pipeline settings: {0}")]
    Pipeline(#[from] crate::pipeline::PipelineConfigError),
}

/// A cheap, cloneable handle to the node's actors: submit, read, authenticate, stop.
#[derive(Clone)]
pub struct NodeHandle {
    inner: Arc<Inner>,
}

struct Inner {
    node: NodeId,
    children: watch::Receiver<Children>,
    supervisor: ActorRef<SupervisorMsg>,
    /// The supervisor's task, awaited by `shutdown`.
    join: Mutex<Option<JoinHandle<()>>>,
    /// The store itself, for admin operations (audit) that need no actor hop.
    store: Arc<Store>,
    /// The store's circuit breaker state, as the store actor publishes it.
    store_breaker: watch::Receiver<BreakerState>,
    /// The enrichment client, if configured (its breaker is listed and commanded here).
    enricher: Option<Arc<Enricher>>,
    /// The store-writes bulkhead's occupancy, as the store actor publishes it.
    store_writes: Arc<BulkheadBoard>,
    /// The degradation level, as the tier queues publish it.
    level: watch::Receiver<Level>,
    /// The tier stage's door, as the tier queues publish it.
    door: Arc<DoorBoard>,
    /// Replication, if this node is one of several replicas of each partition.
    replication: Option<ReplicationSlot>,
    /// Where the settings that change while the node runs are published.
    live: watch::Sender<LivePolicy>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// Opens the store and starts the supervised actor tree with the default pipeline.
    pub async fn start(config: StoreConfig) -> Result<NodeHandle, StartError> {
        Self::start_with(config, PipelineConfig::default()).await
    }

    /// Opens the store and starts the supervised actor tree with `pipeline`.
    pub async fn start_with(
        config: StoreConfig,
        pipeline: PipelineConfig,
    ) -> Result<NodeHandle, StartError> {
        pipeline.validate()?;
        let node = config.node.clone();
        let replication = pipeline.replication.clone();
        let store = Arc::new(tokio::task::spawn_blocking(move || Store::open(config)).await??);
        let (tx, rx) = watch::channel(Children::default());
        let args = SupervisorArgs::new(Arc::clone(&store), tx, pipeline, RestartPolicy::default())?;
        let store_breaker = args.store_breaker.subscribe();
        let enricher = args.enricher.clone();
        let store_writes = Arc::clone(&args.store_writes);
        let level = args.level.subscribe();
        let door = Arc::clone(&args.door);
        let live = args.live.clone();
        let (supervisor, join) = Actor::spawn(None, NodeSupervisor, args).await?;
        Ok(NodeHandle {
            inner: Arc::new(Inner {
                node,
                children: rx,
                supervisor,
                join: Mutex::new(Some(join)),
                store,
                store_breaker,
                enricher,
                store_writes,
                level,
                door,
                replication,
                live,
            }),
        })
    }

    /// The store's circuit breaker state, kept current by the store actor (for
    /// readiness, metrics and `chorus ctl breakers`).
    pub fn store_breaker(&self) -> watch::Receiver<BreakerState> {
        self.inner.store_breaker.clone()
    }

    /// Why the store takes no more writes, if it stopped (only a restart clears it).
    pub fn store_failure(&self) -> Option<String> {
        self.inner.store.failure()
    }

    /// Records the store's log size and index lag as metrics.
    pub fn publish_store_metrics(&self) {
        self.inner.store.publish_metrics();
    }

    /// The partition log's disk use and what retirement has reclaimed (for `ctl status`).
    pub fn store_log_usage(&self) -> crate::store::LogUsage {
        self.inner.store.log_usage()
    }

    /// Writes a snapshot of the store into `dir` on the blocking pool (see
    /// [`Store::snapshot`]); writes go on meanwhile. Progress goes to the log.
    pub async fn snapshot(
        &self,
        dir: std::path::PathBuf,
    ) -> Result<crate::store::SnapshotReport, crate::store::SnapshotError> {
        let store = Arc::clone(&self.inner.store);
        tokio::task::spawn_blocking(move || store.snapshot(&dir, &mut |_| {}))
            .await
            .unwrap_or_else(|e| {
                Err(crate::store::SnapshotError::Aborted {
                    reason: e.to_string(),
                })
            })
    }

    /// The store, to inject faults in tests.
    #[cfg(feature = "fault-injection")]
    pub fn store_for_tests(&self) -> Arc<Store> {
        Arc::clone(&self.inner.store)
    }

    /// Every bulkhead of the node: store writes, and enrichment calls if configured.
    pub fn bulkheads(&self) -> Vec<BulkheadOccupancy> {
        let enrichment = self.inner.enricher.iter().map(|e| {
            let (running, queued, max_concurrent, max_queue) = e.bulkhead();
            BulkheadOccupancy {
                resource: ENRICHMENT_DEPENDENCY,
                running,
                queued: u32::try_from(queued).unwrap_or(u32::MAX),
                max_concurrent,
                max_queue,
            }
        });
        std::iter::once(self.inner.store_writes.read())
            .chain(enrichment)
            .collect()
    }

    /// How many users the submit rate limiter tracks now.
    pub async fn tracked_users(&self) -> Result<usize, ErrorCode> {
        let intake = self.child(|c| c.intake.clone(), "intake")?;
        call(&intake, "intake", |reply| IntakeMsg::TrackedUsers { reply }).await
    }

    /// The tier queues' depths, slots in flight and degradation level.
    pub async fn queues(&self) -> Result<QueueStatus, ErrorCode> {
        let tiers = self.child(|c| c.tiers.clone(), "tier queues")?;
        call(&tiers, "tier queues", |reply| TierMsg::Status { reply }).await
    }

    /// Pins the degradation level or hands it back to the load; the level afterwards.
    pub async fn degrade(&self, command: DegradeCommand) -> Result<Level, ErrorCode> {
        let tiers = self.child(|c| c.tiers.clone(), "tier queues")?;
        call(&tiers, "tier queues", |reply| TierMsg::Degrade {
            command,
            reply,
        })
        .await
    }

    /// The settings in force of those that change while the node runs.
    pub fn live_policy(&self) -> LivePolicy {
        *self.inner.live.borrow()
    }

    /// Gives the running pipeline new limits, tier settings, degradation thresholds
    /// and breaker settings. Each stage takes them before its next message (and a
    /// restarted stage starts with them). Invalid settings change nothing.
    pub fn reconfigure(&self, policy: LivePolicy) -> Result<(), PipelineConfigError> {
        policy.validate()?;
        if let Some(enricher) = &self.inner.enricher {
            enricher
                .reconfigure_breaker(policy.enrichment_breaker)
                .map_err(|e| PipelineConfigError::Enrichment(e.into()))?;
        }
        self.inner.live.send_replace(policy);
        Ok(())
    }

    /// Every circuit breaker of the node with its current state.
    pub fn breakers(&self) -> Vec<(&'static str, BreakerState)> {
        let mut breakers = vec![(STORE_DEPENDENCY, *self.inner.store_breaker.borrow())];
        if let Some(enricher) = &self.inner.enricher {
            breakers.push((ENRICHMENT_DEPENDENCY, enricher.breaker_state()));
        }
        breakers
    }

    /// Forces a breaker open or resets it (an operator's action); the new state.
    /// Fails with `Invalid{breaker}` for an unknown name.
    pub async fn breaker_command(
        &self,
        name: &str,
        command: BreakerCommand,
    ) -> Result<BreakerState, ErrorCode> {
        if name == ENRICHMENT_DEPENDENCY
            && let Some(enricher) = &self.inner.enricher
        {
            return Ok(enricher.breaker_command(command));
        }
        if name != STORE_DEPENDENCY {
            let known: Vec<&str> = self.breakers().iter().map(|(n, _)| *n).collect();
            return Err(ErrorCode::invalid(
                "breaker",
                format!("no breaker named {name:?} (known: {})", known.join(", ")),
            ));
        }
        let store = self.store()?;
        call(&store, "store", |reply| StoreMsg::Breaker {
            command,
            reply,
        })
        .await
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.inner.node
    }

    /// Stores one item durably and returns its receipt (the first one, on a retry).
    pub async fn submit(&self, caller: &Caller, item: Item) -> Result<Receipt, ErrorCode> {
        let mut outcomes = self.submit_batch(caller, vec![item]).await?;
        outcomes.pop().unwrap_or_else(|| {
            error!("store answered a single submit with no outcome");
            Err(unavailable("store answered without an outcome"))
        })
    }

    /// Stores up to `MAX_BATCH_ITEMS` items; one outcome per item, in order.
    pub async fn submit_batch(
        &self,
        caller: &Caller,
        items: Vec<Item>,
    ) -> Result<Vec<Result<Receipt, ErrorCode>>, ErrorCode> {
        // What the level sheds is refused here, before the intake actor: under overload
        // a refusal then costs no message, and intake's mailbox holds only work it may
        // take (intake checks again, for a level that moved meanwhile).
        let level = *self.inner.level.borrow();
        let tier = shed_check(level, &items)?;
        self.inner.door.check(tier)?;
        self.settled(items.iter().map(|item| item.user_id.as_str()))
            .await;
        let intake = self.child(|c| c.intake.clone(), "intake")?;
        let caller = caller.clone();
        let arrived = std::time::Instant::now();
        let outcome: BatchOutcome = call(&intake, "intake", |reply| IntakeMsg::Submit {
            caller,
            items,
            reply,
            arrived,
            request: crate::request::current(),
        })
        .await?;
        outcome
    }

    /// The refusal a submission of `tier` would get now from what the write path
    /// publishes (the level's shed, the tier stage's door), read without a message, so
    /// that an overloaded node can answer before it decodes a request's body; `None`
    /// when it would be taken in (the stages still decide for what is sent).
    pub fn refusal(&self, tier: Tier) -> Option<ErrorCode> {
        let level = *self.inner.level.borrow();
        shed_tier(level, tier)
            .and_then(|()| self.inner.door.check(tier))
            .err()
    }

    /// Waits, bounded, while this node takes the lead of a partition of `users` (see
    /// [`crate::Replication::settled`]); at once on a node that does not replicate.
    async fn settled<'a>(&self, users: impl Iterator<Item = &'a str>) {
        let Some(Ok(replication)) = self.inner.replication.as_ref().map(ReplicationSlot::get)
        else {
            return;
        };
        let count = self.inner.store.partitions();
        let mut partitions: Vec<PartitionId> = users.map(|u| partition_of(u, count)).collect();
        partitions.sort_unstable();
        partitions.dedup();
        replication.settled(partitions).await;
    }

    /// Whether this node serves reads of `partition` now (always, if it does not
    /// replicate), once a takeover of it under way has ended.
    async fn serving(&self, partition: PartitionId) -> Result<(), ErrorCode> {
        let Some(slot) = &self.inner.replication else {
            return Ok(());
        };
        let replication = slot.get()?;
        replication.settled(vec![partition]).await;
        replication.admit(partition)
    }

    /// What the feedback about each function version adds up to over the partitions
    /// `wanted` picks, as this node's store counts it: the first `limit` versions
    /// `select` picks (see [`Store::function_stats_page`]).
    pub fn function_stats(
        &self,
        wanted: impl Fn(PartitionId) -> bool,
        select: impl Fn(&FunctionRef) -> bool,
        limit: usize,
    ) -> BTreeMap<FunctionRef, VersionStats> {
        self.inner.store.function_stats_page(wanted, select, limit)
    }

    /// Each facet's items and ratings over the partitions `wanted` picks, on the days
    /// `days` names (see [`Store::facet_stats`]).
    pub fn facet_stats(
        &self,
        wanted: impl Fn(PartitionId) -> bool,
        days: Option<(u32, u32)>,
    ) -> BTreeMap<chorus_protocol::Facet, chorus_protocol::Tally> {
        self.inner.store.facet_stats(wanted, days)
    }

    /// The item with this id, if stored. An id that names its partition is answered
    /// only where that partition is served (its leader, caught up), so that `None`
    /// there means no such item. A deleted item is answered with its tombstone
    /// (status `deleted`), which the server answers to clients as absent.
    pub async fn get(&self, id: ItemId) -> Result<Option<StoredItem>, ErrorCode> {
        if let Some(partition) = id.partition_hint()
            && partition < self.inner.store.partitions()
        {
            self.serving(partition).await?;
        }
        let store = self.store()?;
        call(&store, "store", |reply| StoreMsg::Get { id, reply }).await?
    }

    /// A page of a user's items, oldest first, and the token of the next page.
    pub async fn list_by_user(
        &self,
        user_id: String,
        after: Option<PageToken>,
        limit: u32,
    ) -> Result<(Vec<StoredItem>, Option<PageToken>), ErrorCode> {
        let request = Request::ListByUser {
            user_id,
            after,
            limit,
        };
        request.validate_shape()?;
        let Request::ListByUser {
            user_id,
            after,
            limit,
        } = request
        else {
            unreachable!("built as ListByUser above")
        };
        // A replica that does not lead the partition (or is still catching up) may lack
        // acknowledged items: it refuses rather than answer an incomplete page.
        self.serving(partition_of(&user_id, self.inner.store.partitions()))
            .await?;
        let store = self.store()?;
        let page: Result<Page, ErrorCode> = call(&store, "store", |reply| StoreMsg::List {
            user_id,
            after,
            limit,
            reply,
        })
        .await?;
        page
    }

    /// The role of an API key, or `None` if the key is unknown.
    pub async fn authenticate(&self, api_key: &str) -> Result<Option<Role>, ErrorCode> {
        let store = self.store()?;
        let key = api_key.to_owned();
        call(&store, "store", |reply| StoreMsg::Authenticate {
            key,
            reply,
        })
        .await?
    }

    /// The role of the key whose SHA-256 is `hash`, if this node's store knows it and
    /// it is not revoked.
    pub async fn authenticate_hash(&self, hash: [u8; 32]) -> Result<Option<Role>, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.authenticate_hash(&hash)).await
    }

    /// Whether the key whose SHA-256 is `hash` is valid here, revoked, or unknown here
    /// (a hello asks the peers only about the last).
    pub async fn key_status(&self, hash: KeyHash) -> Result<KeyStatus, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.api_key_status(&hash)).await
    }

    /// Whether the key whose SHA-256 is `hash` is revoked; memory only, for the check an
    /// open connection makes before each request.
    pub fn key_revoked(&self, hash: &KeyHash) -> bool {
        self.inner.store.is_key_revoked(hash)
    }

    /// How many revocations this node knows; it only grows, so a connection that saw
    /// the same count need not look its key up again.
    pub fn key_revocations(&self) -> u64 {
        self.inner.store.key_revocations()
    }

    /// Every API key held here, with its revocation.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyEntry>, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.list_api_keys()).await
    }

    /// Revokes the one key whose id starts with `id` (a hex prefix of its SHA-256).
    /// Audited first, like a creation: if the audit log cannot record it, nothing is
    /// revoked. Revoking a revoked key answers its first revocation.
    pub async fn revoke_api_key(&self, id: String) -> Result<ApiKeyEntry, ErrorCode> {
        let request = Request::RevokeApiKey { id };
        request.validate_shape()?;
        let Request::RevokeApiKey { id } = request else {
            unreachable!("built as RevokeApiKey above")
        };
        let store = Arc::clone(&self.inner.store);
        let hash = blocking(move || store.resolve_api_key(&id)).await?;
        self.audit_append(
            AUDIT_ACTOR_API,
            "api-key.revoke",
            format!("id={}", crate::store::key_id(&hash)),
        )
        .await?;
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.revoke_api_key(&hash)).await
    }

    /// Applies a peer's keys and revocations; returns how many entries were new here.
    pub async fn merge_api_keys(&self, set: KeySet) -> Result<usize, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.merge_api_keys(&set)).await
    }

    /// Every key and revocation held here.
    pub async fn api_key_set(&self) -> Result<KeySet, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.api_key_set()).await
    }

    /// Merges a peer's whole set, then answers what this node holds that the peer
    /// lacks: one round trip leaves both with the union.
    pub async fn exchange_api_keys(&self, theirs: KeySet) -> Result<(usize, KeySet), ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || {
            let merged = store.merge_api_keys(&theirs)?;
            Ok((merged, store.api_keys_missing_from(&theirs)?))
        })
        .await
    }

    /// One key's record and revocation, as a push to the peers carries them.
    pub async fn api_key_delta(&self, hash: KeyHash) -> Result<KeySet, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.api_key_delta(&hash)).await
    }

    /// A digest of every key and revocation held here: equal digests, equal sets.
    pub async fn api_key_digest(&self) -> Result<u64, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.api_key_digest()).await
    }

    /// Creates an API key with `role`; returns the key, which is not stored in clear.
    /// The creation is audited first: if the audit log cannot record it, no key is made.
    pub async fn create_api_key(&self, role: Role, name: String) -> Result<String, ErrorCode> {
        let request = Request::CreateApiKey { role, name };
        request.validate_shape()?;
        let Request::CreateApiKey { role, name } = request else {
            unreachable!("built as CreateApiKey above")
        };
        let store = self.store()?;
        // Fail closed: a key that exists without its audit record is worse than no key.
        self.audit_append(
            AUDIT_ACTOR_API,
            "api-key.create",
            format!("role={role} name={name:?}"),
        )
        .await?;
        call(&store, "store", |reply| StoreMsg::CreateApiKey {
            role,
            name,
            reply,
        })
        .await?
    }

    /// Creates an admin key if the store has no key at all; returns it (shown once).
    /// Audited first, like every key creation; if the audit fails, no key is made.
    pub async fn ensure_admin_key(&self) -> Result<Option<String>, ErrorCode> {
        let store = self.store()?;
        let inner = Arc::clone(&self.inner.store);
        // Only called at start, so "no key yet" does not change before the store's own
        // check; at worst a race records an intent that the store then declines.
        if blocking(move || Ok(inner.api_key_count() == 0)).await? {
            self.audit_append(
                AUDIT_ACTOR_AGENT,
                "api-key.create",
                "role=admin name=\"bootstrap-admin\"".into(),
            )
            .await?;
        }
        call(&store, "store", |reply| StoreMsg::EnsureAdminKey { reply }).await?
    }

    /// Appends an entry to the audit log and flushes it; returns the entry. Runs on the
    /// blocking pool directly on the store: an admin action needs no actor hop.
    pub async fn audit_append(
        &self,
        actor: impl Into<String>,
        action: impl Into<String>,
        detail: String,
    ) -> Result<AuditEntry, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        let (actor, action) = (actor.into(), action.into());
        blocking(move || store.audit_append(&actor, &action, &detail)).await
    }

    /// Walks the audit chain and reports the first entry that does not verify.
    pub async fn audit_verify(&self) -> Result<AuditReport, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.audit().verify()).await
    }

    /// A follower's side of replication: appends a leader's shipped records (fenced by
    /// partition epoch, one group commit for all); see [`Store::accept_shipment`].
    pub async fn accept_shipment(
        &self,
        batches: Vec<ShipBatch>,
    ) -> Result<Vec<ShipOutcome>, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.accept_shipment(batches)).await
    }

    /// Promises each `(partition, epoch)` to a would-be leader if the epoch is the
    /// highest seen; see [`Store::promise`].
    pub async fn promise(
        &self,
        partitions: Vec<(PartitionId, u64)>,
    ) -> Result<Vec<Promise>, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.promise(&partitions)).await
    }

    /// A partition's records after `after`, in sequence order, up to about `max_bytes`,
    /// and its last sequence; see [`Store::read_partition`].
    pub async fn read_partition(
        &self,
        partition: PartitionId,
        after: u64,
        max_bytes: usize,
    ) -> Result<(Vec<ReplicaRecord>, u64), ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.read_partition(partition, after, max_bytes)).await
    }

    /// A leader's anti-entropy repair: truncates `partition` after `after` if no
    /// higher epoch than `epoch` was promised and it still ends at `expect_last`; see
    /// [`Store::repair_after`].
    pub async fn repair_after(
        &self,
        partition: PartitionId,
        epoch: u64,
        expect_last: u64,
        after: u64,
    ) -> Result<RepairOutcome, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.repair_after(partition, epoch, expect_last, after)).await
    }

    /// Starts leading each partition at its epoch if no higher epoch was promised
    /// since, with one durable flush; see [`Store::begin_epochs`].
    pub async fn begin_epochs(
        &self,
        starts: Vec<(PartitionId, u64)>,
    ) -> Result<Vec<bool>, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.begin_epochs(&starts)).await
    }

    /// Drops this replica's copy of `partition` if it still ends at `expect_last`;
    /// see [`Store::shed_partition`].
    pub async fn shed_partition(
        &self,
        partition: PartitionId,
        expect_last: u64,
    ) -> Result<Option<u64>, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.shed_partition(partition, expect_last)).await
    }

    /// A partition's epochs and last sequence on this replica.
    pub fn partition_state(&self, partition: PartitionId) -> (PartitionEpochs, u64) {
        let store = &self.inner.store;
        (
            store.partition_epochs(partition),
            store.last_sequence(partition),
        )
    }

    /// The partition count fixed at the store's creation.
    pub fn partitions(&self) -> u16 {
        self.inner.store.partitions()
    }

    /// Flushes everything acknowledged-or-pending and stops the actor tree.
    pub async fn shutdown(self) -> Result<(), ErrorCode> {
        let result = match self
            .inner
            .supervisor
            .call(|reply| SupervisorMsg::Shutdown { reply }, None)
            .await
        {
            Ok(CallResult::Success(result)) => result,
            Ok(CallResult::Timeout) => Err(ErrorCode::Timeout),
            Ok(CallResult::SenderError) | Err(_) => {
                Err(unavailable("node supervisor already stopped"))
            }
        };
        let join = self
            .inner
            .join
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(join) = join
            && let Err(e) = join.await
        {
            warn!(error = %e, "node supervisor task ended abnormally");
        }
        result
    }

    fn store(&self) -> Result<ActorRef<StoreMsg>, ErrorCode> {
        self.child(|c| c.store.clone(), "store")
    }

    fn child<M>(
        &self,
        pick: impl FnOnce(&Children) -> Option<ActorRef<M>>,
        name: &'static str,
    ) -> Result<ActorRef<M>, ErrorCode> {
        pick(&self.inner.children.borrow()).ok_or_else(|| {
            warn!(child = name, "request while the actor is down");
            unavailable(&format!("{name} restarting or stopped"))
        })
    }
}

/// Calls an actor, mapping a dead actor or a dropped reply port to `Unavailable`.
async fn call<M, R>(
    actor: &ActorRef<M>,
    name: &'static str,
    build: impl FnOnce(RpcReplyPort<R>) -> M,
) -> Result<R, ErrorCode>
where
    M: ractor::Message,
    R: Send + 'static,
{
    match actor.call(build, None).await {
        Ok(CallResult::Success(reply)) => Ok(reply),
        Ok(CallResult::Timeout) => Err(ErrorCode::Timeout),
        Ok(CallResult::SenderError) => {
            warn!(actor = name, "reply dropped (actor failed mid-request)");
            Err(unavailable(&format!(
                "{name} failed while handling the request"
            )))
        }
        Err(MessagingErr::SendErr(_)) | Err(MessagingErr::ChannelClosed) => {
            warn!(actor = name, "actor is not running");
            Err(unavailable(&format!("{name} is not running")))
        }
        Err(e) => {
            error!(actor = name, error = %e, "call failed");
            Err(unavailable(&format!("{name}: {e}")))
        }
    }
}

/// Runs a blocking store operation (audit, keys) off the reactor, mapping its errors to
/// `ErrorCode`.
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ErrorCode> {
    match tokio::task::spawn_blocking(op).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) if e.is_refusal() => Err(e.to_error_code()),
        Ok(Err(e)) => {
            error!(error = %e, "store operation failed");
            Err(e.to_error_code())
        }
        Err(e) => {
            error!(error = %e, "store task panicked");
            Err(unavailable("store task failed"))
        }
    }
}

fn unavailable(reason: &str) -> ErrorCode {
    ErrorCode::Unavailable {
        reason: reason.to_owned(),
    }
}
