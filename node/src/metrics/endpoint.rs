//! The HTTP endpoint: `/metrics`, `/health/live` and `/health/ready` on one port.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Readiness, install_recorder};

/// How often histogram samples are drained into their buckets when nobody scrapes
/// (the exporter's own default), which keeps their memory bounded.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// How long a stop waits for scrapes in progress before dropping them.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// The content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What one client of the endpoint may hold: the endpoint has no authentication, so
/// anyone who reaches it gets at most a connection slot for a bounded time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointLimits {
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long one connection may live, however slowly it sends or reads.
    pub connection_timeout: Duration,
}

impl Default for EndpointLimits {
    fn default() -> Self {
        EndpointLimits {
            max_connections: crate::config::DEFAULT_METRICS_MAX_CONNECTIONS as usize,
            connection_timeout: Duration::from_millis(
                crate::config::DEFAULT_METRICS_CONNECTION_TIMEOUT_MS,
            ),
        }
    }
}

/// The endpoint could not start; nothing is listening.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address could not be bound (in use, not local, no permission).
    #[error("binding the metrics endpoint {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Why the bind failed.
        source: io::Error,
    },
}

/// A running metrics and health endpoint: an owned task that serves until its shutdown
/// token is cancelled; [`MetricsServer::join`] waits for it to end.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

#[derive(Clone)]
struct Endpoint {
    handle: PrometheusHandle,
    readiness: Readiness,
}

impl MetricsServer {
    /// Installs the process's recorder if needed, binds `listen` (port 0 picks a free
    /// port) and serves until `shutdown` is cancelled, with the default limits.
    pub async fn start(
        listen: SocketAddr,
        readiness: Readiness,
        shutdown: CancellationToken,
    ) -> Result<MetricsServer, MetricsError> {
        Self::start_with(listen, EndpointLimits::default(), readiness, shutdown).await
    }

    /// [`MetricsServer::start`] with the given connection limits.
    pub async fn start_with(
        listen: SocketAddr,
        limits: EndpointLimits,
        readiness: Readiness,
        shutdown: CancellationToken,
    ) -> Result<MetricsServer, MetricsError> {
        let bind_error = |source| MetricsError::Bind {
            addr: listen,
            source,
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let handle = install_recorder();
        let router = Router::new()
            .route("/metrics", get(render_metrics))
            .route("/health/live", get(live))
            .route("/health/ready", get(ready))
            .with_state(Endpoint {
                handle: handle.clone(),
                readiness,
            });
        let listener = CappedListener {
            inner: listener,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            lifetime: limits.connection_timeout,
        };
        let task = tokio::spawn(serve(listener, router, handle, shutdown));
        Ok(MetricsServer { addr, task })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the endpoint has stopped (after its shutdown token is cancelled).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            warn!(error = %e, "metrics endpoint task failed");
        }
    }
}

/// Serves HTTP and runs the recorder's upkeep until `shutdown`, then lets scrapes in
/// progress finish within [`STOP_GRACE`].
async fn serve(
    listener: CappedListener,
    router: Router,
    handle: PrometheusHandle,
    shutdown: CancellationToken,
) {
    let serving = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    tokio::pin!(serving);
    let stop_deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::pin!(stop_deadline);
    let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            ended = &mut serving => {
                if let Err(e) = ended {
                    warn!(error = %e, "metrics endpoint failed");
                }
                break;
            }
            _ = upkeep.tick() => handle.run_upkeep(),
            _ = &mut stop_deadline => {
                debug!("scrapes still open after the grace period; dropping them");
                break;
            }
        }
    }
}

/// A TCP listener that accepts only while fewer than its cap of connections are open,
/// and hands out streams that fail once their lifetime is over (a slow loris or a
/// client that never reads its response loses its slot).
struct CappedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    lifetime: Duration,
}

impl axum::serve::Listener for CappedListener {
    type Io = DeadlineStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // Waiting for a slot before accepting leaves the rest in the kernel's queue.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let stream = DeadlineStream {
            stream,
            deadline: Box::pin(tokio::time::sleep(self.lifetime)),
            _permit: permit,
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that holds a slot of the endpoint and fails every read and write after
/// its deadline, which makes the HTTP server drop it.
struct DeadlineStream {
    stream: TcpStream,
    deadline: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl DeadlineStream {
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.deadline
            .as_mut()
            .poll(cx)
            .is_ready()
            .then(|| io::Error::new(io::ErrorKind::TimedOut, "connection lifetime over"))
    }
}

impl AsyncRead for DeadlineStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for DeadlineStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

async fn render_metrics(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        endpoint.handle.render(),
    )
}

/// Answering at all is the proof of life.
async fn live() -> &'static str {
    "live\n"
}

async fn ready(State(endpoint): State<Endpoint>) -> (StatusCode, String) {
    match endpoint.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}
