//! The HTTP endpoint: `/metrics`, `/health/live` and `/health/ready` on one port.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;
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
    /// port) and serves until `shutdown` is cancelled.
    pub async fn start(
        listen: SocketAddr,
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
    listener: tokio::net::TcpListener,
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
