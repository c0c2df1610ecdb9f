//! The public handle: typed calls, routing to owners, the shared (re)connections, and
//! retries.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chorus_protocol::{
    ApiKeyInfo, ErrorCode, FrameError, FunctionRef, FunctionVersion, Item, ItemId, Kind, NodeId,
    PageToken, Receipt, Request, Response, RingMember, RingSnapshot, Role, RoutedRequest,
    StoredItem, Welcome, check_batch_len, encode_value, partition_of,
};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::config::{ClientConfig, Credentials};
use crate::error::ClientError;
use crate::link::{Connector, Link};
use crate::load_guard::LoadGuard;
use crate::retry::{self, Decision, RetryPolicy};
use crate::routing::{self, Fetch, RoutePlan, Step, Target};
use crate::session::Session;
use crate::tls;

/// How long [`Client::close`] waits for the close to reach the servers.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A page of a user's items.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The items, oldest first.
    pub items: Vec<StoredItem>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageToken>,
}

/// A page of what the feedback about each function version adds up to.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionsPage {
    /// The versions, in name and version order.
    pub versions: Vec<FunctionVersion>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<FunctionRef>,
    /// How many partitions the counts cover, of how many (fewer while a partition
    /// changes leader or its leader cannot be reached).
    pub covered: (u32, u32),
}

/// A connection to a Chorus cluster, shared by every task that clones it.
///
/// Requests from all clones are pipelined over long-lived QUIC connections. If a
/// connection drops, the next request re-establishes it (one reconnect at a time, shared
/// by all callers), trying the addresses in order, each 250 ms after the one before
/// while that one has not answered, so a silent address does not hold up the rest.
///
/// With routing on (the default, [`ClientConfig::routing`]), the client keeps a snapshot
/// of the ring and sends each submit and listing straight to the node that owns its
/// user, over a connection of its own to that node (opened on first use); a node that
/// no longer owns it answers `NotOwner` without executing it, and the client fetches the
/// ring again and resends. When the owner cannot be reached, the request goes unrouted
/// through any connection and that node forwards it. Reads by id go through any
/// connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// How often routing took each path since the client connected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoutingStats {
    /// Requests answered by the owner they were sent to.
    pub routed: u64,
    /// `NotOwner` answers, each followed by a fresh snapshot and a resend.
    pub redirected: u64,
    /// Requests that fell back to the unrouted path because the owner was out of reach
    /// (or refused twice).
    pub fallbacks: u64,
}

#[derive(Default)]
struct Counters {
    routed: AtomicU64,
    redirected: AtomicU64,
    fallbacks: AtomicU64,
}

/// The client's copy of the ring.
#[derive(Default)]
struct RingState {
    current: Mutex<Option<Arc<RingSnapshot>>>,
    /// Held while a snapshot is fetched, so that concurrent askers share one fetch;
    /// holds the last fetch, for the rate limit.
    fetching: tokio::sync::Mutex<Option<Fetch>>,
}

struct Inner {
    connector: Connector,
    /// The same, with the shorter connect timeout of a routed request's leader (a
    /// failure falls back to the seed connection).
    owner_connector: Connector,
    /// The addresses given to [`Client::connect`].
    seed: Link,
    retry: RetryPolicy,
    /// The retry budget and adaptive throttle, when on.
    guard: Option<Mutex<LoadGuard>>,
    ring: RingState,
    /// One link per ring member requests were routed to, by node name.
    members: Mutex<HashMap<NodeId, Arc<Link>>>,
    counters: Counters,
    /// The task that fetches the ring periodically; aborted on close and on drop.
    refresher: Mutex<Option<JoinHandle<()>>>,
    next_request_id: AtomicU64,
    closed: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.refresher).take() {
            task.abort();
        }
    }
}

impl Client {
    /// Connects to the first of `addrs` that answers and completes the hello (each
    /// address is tried 250 ms after the one before unless that one has failed already),
    /// then (with routing on) fetches the ring snapshot; a failed fetch only leaves
    /// routing off until the next one.
    ///
    /// Fails with [`ClientError::Server`] (`Unauthorized`, `UnsupportedVersion`) or
    /// [`ClientError::Tls`] at once, since another node of the same cluster would answer
    /// the same; with [`ClientError::Connect`] or [`ClientError::NoServerReachable`] when
    /// no address answers.
    pub async fn connect(
        addrs: &[SocketAddr],
        credentials: Credentials,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        config.validate()?;
        if addrs.is_empty() {
            return Err(ClientError::InvalidConfig("addrs: no address given".into()));
        }
        let quic = tls::quic_client_config(&credentials, &config)?;
        let endpoint = quinn::Endpoint::client(local_bind_addr(addrs))
            .map_err(|e| ClientError::Endpoint(e.to_string()))?;
        let client = Client {
            inner: Arc::new(Inner {
                seed: Link::new(addrs.to_vec(), credentials.server_name.clone()),
                retry: RetryPolicy {
                    max_retries: config.max_retries,
                    initial_backoff: config.initial_backoff,
                    max_backoff: config.max_backoff,
                },
                guard: config.load_guard.map(|c| Mutex::new(LoadGuard::new(c))),
                owner_connector: Connector {
                    endpoint: endpoint.clone(),
                    quic: quic.clone(),
                    credentials: credentials.clone(),
                    config: ClientConfig {
                        connect_timeout: config
                            .routing
                            .as_ref()
                            .map_or(config.connect_timeout, |r| {
                                r.owner_connect_timeout.min(config.connect_timeout)
                            }),
                        ..config.clone()
                    },
                },
                connector: Connector {
                    endpoint,
                    quic,
                    credentials,
                    config,
                },
                ring: RingState::default(),
                members: Mutex::new(HashMap::new()),
                counters: Counters::default(),
                refresher: Mutex::new(None),
                next_request_id: AtomicU64::new(1),
                closed: AtomicBool::new(false),
            }),
        };
        client.any_session().await?;
        if let Some(routing) = &client.inner.connector.config.routing {
            let connect_timeout = client.inner.connector.config.connect_timeout;
            if tokio::time::timeout(connect_timeout, client.refresh_ring())
                .await
                .is_err()
            {
                warn!(
                    ?connect_timeout,
                    "no ring snapshot in time; requests go unrouted"
                );
            }
            let refresher = spawn_refresher(&client.inner, routing.refresh_interval);
            *lock(&client.inner.refresher) = Some(refresher);
        }
        Ok(client)
    }

    /// Stores one item; the receipt comes only once it is durable. Retried on transport
    /// failures: the item id makes a repeat harmless.
    pub async fn submit(&self, item: Item) -> Result<Receipt, ClientError> {
        match self.request(Request::Submit(item)).await? {
            Response::Receipt(receipt) => Ok(receipt),
            other => Err(unexpected("Receipt", &other)),
        }
    }

    /// Stores up to `MAX_BATCH_ITEMS` items; each gets its own outcome, in order.
    ///
    /// With routing on, the batch is split by owner and each part sent to its owner
    /// concurrently; a part that fails as a whole gives its error (as an [`ErrorCode`])
    /// to its own items only. The call fails as a whole only when every part does.
    pub async fn submit_batch(
        &self,
        items: Vec<Item>,
    ) -> Result<Vec<Result<Receipt, ErrorCode>>, ClientError> {
        let count = items.len();
        let Some(ring) = self.routing_ring() else {
            return self.submit_group(items).await;
        };
        // The limit is the whole batch's, as if unsplit: parts under it must not let a
        // batch over it through.
        check_batch_len(count).map_err(ClientError::Server)?;
        let mut groups = ring.split_by_owner(items);
        if groups.len() < 2 {
            let items = groups.pop().map(|g| g.items).unwrap_or_default();
            return self.submit_group(items).await;
        }
        let mut tasks = JoinSet::new();
        for (index, group) in groups.into_iter().enumerate() {
            let client = self.clone();
            tasks.spawn(async move {
                let outcome = client.submit_group(group.items).await;
                (index, group.positions, outcome)
            });
        }
        let mut parts = Vec::with_capacity(tasks.len());
        let mut first_failure: Option<(usize, ClientError)> = None;
        let mut any_succeeded = false;
        while let Some(joined) = tasks.join_next().await {
            let (index, positions, outcome) = match joined {
                Ok(part) => part,
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(error) => return Err(ClientError::Protocol(format!("batch part: {error}"))),
            };
            match outcome {
                Ok(outcomes) => {
                    any_succeeded = true;
                    parts.push((positions, Ok(outcomes)));
                }
                Err(error) => {
                    parts.push((positions, Err(routing::group_error(&error))));
                    if first_failure
                        .as_ref()
                        .is_none_or(|(first, _)| index < *first)
                    {
                        first_failure = Some((index, error));
                    }
                }
            }
        }
        if let (false, Some((_, error))) = (any_succeeded, first_failure) {
            return Err(error);
        }
        chorus_protocol::merge_outcomes(count, parts)
            .ok_or_else(|| ClientError::Protocol("batch outcomes do not cover the batch".into()))
    }

    /// Reads one item by id; `None` if no item has it.
    pub async fn get(&self, id: ItemId) -> Result<Option<StoredItem>, ClientError> {
        match self.request(Request::Get(id)).await? {
            Response::Item(item) => Ok(item.map(|boxed| *boxed)),
            other => Err(unexpected("Item", &other)),
        }
    }

    /// One page of a user's items, oldest first, starting after `after`.
    pub async fn list_by_user(
        &self,
        user_id: impl Into<String>,
        after: Option<PageToken>,
        limit: u32,
    ) -> Result<Page, ClientError> {
        let request = Request::ListByUser {
            user_id: user_id.into(),
            after,
            limit,
        };
        match self.request(request).await? {
            Response::Page { items, next } => Ok(Page { items, next }),
            other => Err(unexpected("Page", &other)),
        }
    }

    /// Every item of a user, fetched `page_size` at a time. Holds them all in memory:
    /// for large histories, page with [`Client::list_by_user`] instead.
    pub async fn list_all_by_user(
        &self,
        user_id: impl Into<String>,
        page_size: u32,
    ) -> Result<Vec<StoredItem>, ClientError> {
        let user_id = user_id.into();
        let mut items = Vec::new();
        let mut after = None;
        loop {
            let page = self.list_by_user(user_id.clone(), after, page_size).await?;
            items.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(items),
            }
        }
    }

    /// Creates an API key with `role` (needs an admin key); returns the secret, shown
    /// only this once. Not retried after it may have been sent: a repeat would create a
    /// second key.
    pub async fn create_api_key(
        &self,
        role: Role,
        name: impl Into<String>,
    ) -> Result<String, ClientError> {
        let request = Request::CreateApiKey {
            role,
            name: name.into(),
        };
        match self.request(request).await? {
            Response::ApiKeyCreated { key, .. } => Ok(key),
            other => Err(unexpected("ApiKeyCreated", &other)),
        }
    }

    /// Every API key of the cluster, revoked ones included, ordered by id (needs an
    /// admin key). Never the keys themselves: an id is the start of a key's SHA-256.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>, ClientError> {
        match self.request(Request::ListApiKeys).await? {
            Response::ApiKeys(keys) => Ok(keys),
            other => Err(unexpected("ApiKeys", &other)),
        }
    }

    /// Revokes the API key whose id starts with `id` (needs an admin key); it never
    /// authenticates again on any member. Revoking a revoked key answers its first
    /// revocation, so a retry is safe.
    pub async fn revoke_api_key(&self, id: impl Into<String>) -> Result<ApiKeyInfo, ClientError> {
        match self
            .request(Request::RevokeApiKey { id: id.into() })
            .await?
        {
            Response::ApiKeyRevoked(key) => Ok(key),
            other => Err(unexpected("ApiKeyRevoked", &other)),
        }
    }

    /// One page of what the feedback about each function version adds up to,
    /// cluster-wide (needs a read key): every function's versions, or those of `name`,
    /// in name and version order after `after`, at most `limit` (1..=1000).
    pub async fn functions(
        &self,
        name: Option<String>,
        after: Option<FunctionRef>,
        limit: u32,
    ) -> Result<FunctionsPage, ClientError> {
        match self
            .request(Request::Functions { name, after, limit })
            .await?
        {
            Response::Functions {
                versions,
                next,
                covered,
            } => Ok(FunctionsPage {
                versions,
                next,
                covered,
            }),
            other => Err(unexpected("Functions", &other)),
        }
    }

    /// Sends any request, with the client's timeout, routing and retry rules, and returns
    /// the untyped response. The typed methods above are built on it.
    pub async fn request(&self, request: Request) -> Result<Response, ClientError> {
        let span = debug_span!("request", kind = request.kind());
        self.route_and_retry(request).instrument(span).await
    }

    /// The body of [`Client::request`]: each attempt goes where the route plan says, and
    /// a failure is followed by a refresh, a fallback or the retry rules.
    async fn route_and_retry(&self, request: Request) -> Result<Response, ClientError> {
        let idempotent = request.is_idempotent();
        let mut plan = RoutePlan::new(self.inner.connector.config.routing.is_some());
        let mut attempt = 0;
        if !self.guarded(|g| g.admit(Instant::now(), retry::jitter())) {
            debug!("refused locally: the cluster is refusing most requests");
            return Err(ClientError::Throttled);
        }
        loop {
            let ring = self.current_ring();
            let target = plan.target(ring.as_deref(), &request);
            let result = match &target {
                Target::Any => self.attempt_any(&request).await,
                Target::Owner { member, epoch } => {
                    debug!(owner = %member.node, epoch, "routed");
                    match RoutedRequest::try_from(request.clone()) {
                        Ok(routed) => {
                            let routed = Request::Routed {
                                epoch: *epoch,
                                request: routed,
                            };
                            self.attempt_at(member, &routed).await
                        }
                        Err(_) => self.attempt_any(&request).await,
                    }
                }
            };
            let refused_for_load = matches!(
                &result,
                Err(ClientError::Server(
                    ErrorCode::Overloaded { .. } | ErrorCode::RateLimited { .. }
                ))
            );
            self.guarded(|g| {
                g.record(Instant::now(), !refused_for_load);
                true
            });
            let error = match result {
                Ok(response) => {
                    if let Target::Owner { .. } = target {
                        self.inner.counters.routed.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(response);
                }
                // A connection the client closed itself (its member left the ring, or
                // went silent) fails the requests on it as closed; only a closed
                // client's requests really are. The others were cut mid-flight.
                Err(ClientError::Closed) if self.check_open().is_ok() => {
                    ClientError::ConnectionLost {
                        reason: "the client closed the connection: its member left the ring \
                                 or went silent"
                            .into(),
                    }
                }
                Err(error) => error,
            };
            match plan.handle_error(&target, &error, idempotent) {
                Step::Refresh => {
                    debug!(%error, "not the owner; refreshing the ring");
                    self.inner
                        .counters
                        .redirected
                        .fetch_add(1, Ordering::Relaxed);
                    self.refresh_ring().await;
                }
                Step::Fallback => {
                    debug!(%error, "owner out of reach; sending unrouted");
                    if let Target::Owner { member, .. } = &target
                        && matches!(
                            error,
                            ClientError::Timeout | ClientError::ConnectionLost { .. }
                        )
                    {
                        // A silent connection (its server died, or restarted and lost
                        // it): the next request to this member connects afresh.
                        self.forget_member(&member.node);
                    }
                    self.inner
                        .counters
                        .fallbacks
                        .fetch_add(1, Ordering::Relaxed);
                }
                Step::Retry => {
                    let decision = retry::decide(
                        &self.inner.retry,
                        idempotent || error.nothing_sent(),
                        &error,
                        attempt,
                        retry::jitter(),
                    );
                    match decision {
                        Decision::RetryAfter(_)
                            if !self.guarded(|g| g.try_retry(Instant::now())) =>
                        {
                            debug!(%error, attempt, "retry budget spent");
                            return Err(error);
                        }
                        Decision::RetryAfter(delay) => {
                            debug!(%error, attempt, ?delay, "retrying request");
                            tokio::time::sleep(delay).await;
                            attempt += 1;
                        }
                        Decision::GiveUp => return Err(error),
                    }
                }
            }
        }
    }

    /// Runs `check` on the load guard; `true` when the guard is off.
    fn guarded(&self, check: impl FnOnce(&mut LoadGuard) -> bool) -> bool {
        match &self.inner.guard {
            Some(guard) => check(&mut lock(guard)),
            None => true,
        }
    }

    /// The server's hello answer on the connection to the addresses given to
    /// [`Client::connect`], if connected.
    pub fn welcome(&self) -> Option<Welcome> {
        self.live_seed().map(|s| s.welcome().clone())
    }

    /// The ring snapshot requests are routed by; `None` before the first fetch succeeded
    /// or with routing off.
    pub fn ring(&self) -> Option<RingSnapshot> {
        self.current_ring().map(|ring| (*ring).clone())
    }

    /// A new item of `user_id`, its id naming the user's partition when the ring is
    /// known (a later `get` then goes to one member instead of every member); a plain
    /// ULID otherwise. Any id works; this one is only cheaper to read back.
    pub fn new_item(&self, user_id: impl Into<String>, kind: Kind) -> Item {
        let mut item = Item::new(user_id, kind);
        if let Some(ring) = self.current_ring() {
            item.id = ItemId::for_partition(partition_of(&item.user_id, ring.partitions));
        }
        item
    }

    /// The epoch of [`Client::ring`].
    pub fn ring_epoch(&self) -> Option<u64> {
        self.current_ring().map(|ring| ring.epoch)
    }

    /// How many requests were routed, redirected and fell back so far.
    pub fn routing_stats(&self) -> RoutingStats {
        let counters = &self.inner.counters;
        RoutingStats {
            routed: counters.routed.load(Ordering::Relaxed),
            redirected: counters.redirected.load(Ordering::Relaxed),
            fallbacks: counters.fallbacks.load(Ordering::Relaxed),
        }
    }

    /// The ring members this client holds a live connection of its own to, by name (the
    /// node of [`Client::welcome`] is served by the first connection and not listed).
    pub fn member_connections(&self) -> Vec<NodeId> {
        let mut names: Vec<NodeId> = lock(&self.inner.members)
            .iter()
            .filter(|(_, link)| link.current().is_some())
            .map(|(name, _)| name.clone())
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        names
    }

    /// Fetches the ring snapshot now, unless another fetch is under way (then waits for
    /// it) or one ended less than the minimum refresh interval ago; returns the epoch in
    /// use afterwards. Does nothing with routing off.
    pub async fn refresh_ring(&self) -> Option<u64> {
        let routing = self.inner.connector.config.routing.as_ref()?;
        let asked_at = Instant::now();
        let mut last = self.inner.ring.fetching.lock().await;
        if routing::refresh_needed(
            *last,
            asked_at,
            Instant::now(),
            routing.min_refresh_interval,
        ) {
            let began = Instant::now();
            let fetched = self.fetch_ring().await;
            *last = Some(Fetch {
                began,
                ended: Instant::now(),
            });
            match fetched {
                Ok(ring) => self.install_ring(ring),
                Err(error) => warn!(%error, "fetching the ring snapshot failed"),
            }
        }
        self.ring_epoch()
    }

    /// Closes every connection; requests in flight and later calls fail with
    /// [`ClientError::Closed`]. Waits briefly for the close to reach the servers.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        if let Some(task) = lock(&self.inner.refresher).take() {
            task.abort();
        }
        self.inner.seed.close();
        let members: Vec<Arc<Link>> = lock(&self.inner.members).drain().map(|(_, l)| l).collect();
        for link in members {
            link.close();
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, self.inner.connector.endpoint.wait_idle()).await;
    }

    /// One attempt through any working connection.
    async fn attempt_any(&self, request: &Request) -> Result<Response, ClientError> {
        let session = self.any_session().await?;
        self.attempt_on(&session, request).await
    }

    /// One attempt at `member`, over its own connection.
    async fn attempt_at(
        &self,
        member: &RingMember,
        request: &Request,
    ) -> Result<Response, ClientError> {
        let session = self.member_session(member).await?;
        self.attempt_on(&session, request).await
    }

    /// One attempt on `session`: a stream, the frame, the response.
    async fn attempt_on(
        &self,
        session: &Session,
        request: &Request,
    ) -> Result<Response, ClientError> {
        let request_id = self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = Vec::new();
        // `(request_id, &request)` encodes exactly as `ClientFrame { request_id, request }`
        // (bincode writes struct fields in order, untagged) without cloning the request,
        // which a retry still needs.
        encode_value(&(request_id, request), session.request_limit(), &mut frame).map_err(|e| {
            match e {
                FrameError::TooLarge { len, limit } => ClientError::FrameTooLarge { len, limit },
                other => ClientError::Protocol(format!("encoding the request: {other}")),
            }
        })?;
        let call = async {
            let pipeline = session.pipeline().await?;
            pipeline.call(request_id, frame).await
        };
        match tokio::time::timeout(self.inner.connector.config.request_timeout, call).await {
            Err(_) => Err(ClientError::Timeout),
            Ok(Err(error)) => Err(error),
            Ok(Ok(Err(code))) => Err(ClientError::Server(code)),
            Ok(Ok(Ok(response))) => Ok(response),
        }
    }

    /// A live session to any node: the first connection if it is up, else one already
    /// open to a ring member, else the first connection re-made.
    async fn any_session(&self) -> Result<Arc<Session>, ClientError> {
        self.check_open()?;
        if let Some(session) = self.inner.seed.current() {
            return Ok(session);
        }
        let member = lock(&self.inner.members)
            .values()
            .find_map(|link| link.current());
        if let Some(session) = member {
            return Ok(session);
        }
        let session = self.inner.seed.session(&self.inner.connector).await?;
        self.check_open_or_close(&session)?;
        Ok(session)
    }

    /// A live session to `member`: the first connection if that is the member, else the
    /// member's own, opened on first use under the member's name as server name.
    /// Closes and forgets the connection to `node`.
    fn forget_member(&self, node: &NodeId) {
        if let Some(link) = lock(&self.inner.members).remove(node) {
            link.close();
        }
    }

    async fn member_session(&self, member: &RingMember) -> Result<Arc<Session>, ClientError> {
        self.check_open()?;
        if let Some(session) = self.live_seed()
            && session.welcome().node == member.node
        {
            return Ok(session);
        }
        let addr: SocketAddr = member
            .addr
            .parse()
            .map_err(|_| ClientError::NoServerReachable {
                tried: 0,
                last_error: format!(
                    "member {} has no usable address {:?}",
                    member.node, member.addr
                ),
            })?;
        let link = {
            let mut members = lock(&self.inner.members);
            let link = members
                .entry(member.node.clone())
                .or_insert_with(|| Arc::new(Link::new(vec![addr], member.node.0.clone())));
            if link.addrs() != [addr] {
                // The member restarted elsewhere: its old connection leads nowhere.
                link.close();
                *link = Arc::new(Link::new(vec![addr], member.node.0.clone()));
            }
            link.clone()
        };
        let session = link.session(&self.inner.owner_connector).await?;
        self.check_open_or_close(&session)?;
        Ok(session)
    }

    /// The snapshot from any connection, checked.
    async fn fetch_ring(&self) -> Result<RingSnapshot, ClientError> {
        match self.attempt_any(&Request::RingSnapshot).await? {
            Response::Ring(ring) => {
                ring.validate()
                    .map_err(|e| ClientError::Protocol(format!("ring snapshot: {e}")))?;
                Ok(ring)
            }
            other => Err(unexpected("Ring", &other)),
        }
    }

    /// Makes `ring` the snapshot requests are routed by, and closes the connections to
    /// nodes that left it.
    fn install_ring(&self, ring: RingSnapshot) {
        let previous = self.ring_epoch();
        if previous != Some(ring.epoch) {
            info!(
                epoch = ring.epoch,
                members = ring.members.len(),
                ?previous,
                "ring snapshot"
            );
        }
        let gone: Vec<Arc<Link>> = {
            let mut members = lock(&self.inner.members);
            let names: Vec<NodeId> = members
                .keys()
                .filter(|name| !ring.members.iter().any(|m| &m.node == *name))
                .cloned()
                .collect();
            names
                .iter()
                .filter_map(|name| members.remove(name))
                .collect()
        };
        for link in gone {
            link.close();
        }
        *lock(&self.inner.ring.current) = Some(Arc::new(ring));
    }

    /// The snapshot, if routing is on and one was fetched.
    fn current_ring(&self) -> Option<Arc<RingSnapshot>> {
        self.inner.connector.config.routing.as_ref()?;
        lock(&self.inner.ring.current).clone()
    }

    /// The snapshot, if there is one with more than one member to route between.
    fn routing_ring(&self) -> Option<Arc<RingSnapshot>> {
        self.current_ring().filter(|ring| ring.members.len() > 1)
    }

    /// Stores one owner's part of a batch (or a whole batch, unsplit).
    async fn submit_group(
        &self,
        items: Vec<Item>,
    ) -> Result<Vec<Result<Receipt, ErrorCode>>, ClientError> {
        let count = items.len();
        match self.request(Request::SubmitBatch(items)).await? {
            Response::Batch(outcomes) if outcomes.len() == count => Ok(outcomes),
            Response::Batch(outcomes) => Err(ClientError::Protocol(format!(
                "{} outcomes for a batch of {count}",
                outcomes.len()
            ))),
            other => Err(unexpected("Batch", &other)),
        }
    }

    /// The first connection, if it is up and the client open.
    fn live_seed(&self) -> Option<Arc<Session>> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return None;
        }
        self.inner.seed.current()
    }

    fn check_open(&self) -> Result<(), ClientError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(ClientError::Closed);
        }
        Ok(())
    }

    /// Fails (closing `session`) if the client was closed while it was being made.
    fn check_open_or_close(&self, session: &Session) -> Result<(), ClientError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            session.close();
            return Err(ClientError::Closed);
        }
        Ok(())
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addrs", &self.inner.seed.addrs())
            .field("connected", &self.live_seed().is_some())
            .field("ring_epoch", &self.ring_epoch())
            .finish_non_exhaustive()
    }
}

/// Starts the task that fetches the ring every `interval`. It holds the client weakly,
/// so it never keeps a dropped client alive; the client aborts it on close and on drop.
fn spawn_refresher(inner: &Arc<Inner>, interval: Duration) -> JoinHandle<()> {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate, and the connect has just fetched.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            if inner.closed.load(Ordering::SeqCst) {
                return;
            }
            Client { inner }.refresh_ring().await;
        }
    })
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every critical
/// section is a single assignment or collection operation).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The local address to bind: IPv4 when every server is IPv4, else dual-stack IPv6.
fn local_bind_addr(addrs: &[SocketAddr]) -> SocketAddr {
    if addrs.iter().all(SocketAddr::is_ipv4) {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

/// The error for a response of the wrong kind.
pub(crate) fn unexpected(expected: &str, got: &Response) -> ClientError {
    let got = match got {
        Response::Receipt(_) => "Receipt",
        Response::Batch(_) => "Batch",
        Response::Item(_) => "Item",
        Response::Page { .. } => "Page",
        Response::ApiKeyCreated { .. } => "ApiKeyCreated",
        Response::Ring(_) => "Ring",
        Response::ApiKeys(_) => "ApiKeys",
        Response::ApiKeyRevoked(_) => "ApiKeyRevoked",
        Response::Functions { .. } => "Functions",
        Response::Events { .. } => "Events",
        Response::Followed { .. } => "Followed",
        Response::Event(_) => "Event",
        Response::FunctionStatus(_) => "FunctionStatus",
        Response::UserDeleted { .. } => "UserDeleted",
        Response::Insights(_) => "Insights",
    };
    ClientError::Protocol(format!("expected a {expected} response, got {got}"))
}

#[cfg(test)]
mod tests {
    use chorus_protocol::{ClientFrame, FrameLimit, Kind, decode_client_frame};

    use super::*;

    #[test]
    fn the_borrowed_request_encoding_is_a_client_frame() {
        let request = Request::Submit(Item::new("user-1", Kind::Text));
        let mut borrowed = Vec::new();
        encode_value(&(42u64, &request), FrameLimit::default(), &mut borrowed).unwrap();
        let mut owned = Vec::new();
        let frame = ClientFrame {
            request_id: 42,
            request,
        };
        encode_value(&frame, FrameLimit::default(), &mut owned).unwrap();
        assert_eq!(borrowed, owned);
        assert_eq!(
            decode_client_frame(&borrowed[4..], FrameLimit::default()),
            Ok(frame)
        );
    }

    #[test]
    fn the_local_socket_matches_the_servers_family() {
        let v4: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let v6: SocketAddr = "[::1]:7000".parse().unwrap();
        assert!(local_bind_addr(&[v4]).is_ipv4());
        assert!(local_bind_addr(&[v4, v6]).is_ipv6());
    }
}
