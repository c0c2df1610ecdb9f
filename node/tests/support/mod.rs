//! Shared test support: a real node in this process on a loopback port, a real node as a
//! child process, and a raw QUIC client for sending bytes the SDK never would; clusters
//! of agent processes ([`cluster`]), a network of namespaces to cut them apart in
//! ([`netns`]) and the writers and checks of the history tests ([`history`]).

#![allow(dead_code)]

pub mod cluster;
pub mod history;
pub mod netns;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_actors::{Durability, NodeHandle, PipelineConfig, Store, StoreConfig};
use chorus_client::{Client, ClientConfig, Credentials};
use chorus_node::cluster::state::ClusterState;
use chorus_node::metrics::{MetricsServer, Readiness};
use chorus_node::server::{Backend, EdgeSettings, ServerSettings, serve_with_edge};
use chorus_node::tls::{self, TlsPaths};
use chorus_protocol::{FrameLimit, NodeId, encode_value};
use tokio_util::sync::CancellationToken;

/// A node served from this test process.
pub struct TestNode {
    pub addr: SocketAddr,
    pub ca_pem: Vec<u8>,
    pub admin_key: String,
    pub node: NodeHandle,
    pub shutdown: CancellationToken,
    pub server: tokio::task::JoinHandle<()>,
    pub dir: tempfile::TempDir,
    /// The metrics and health endpoint, if started with [`TestNode::start_with_metrics`].
    pub metrics: Option<TestMetrics>,
}

/// A node's metrics and health endpoint on a loopback port.
pub struct TestMetrics {
    pub addr: SocketAddr,
    pub readiness: Readiness,
    stop: CancellationToken,
    server: MetricsServer,
}

impl TestNode {
    /// Starts a node on 127.0.0.1 with an ephemeral port and a fresh data dir.
    pub async fn start() -> TestNode {
        Self::start_inner(false, PipelineConfig::default(), EdgeSettings::default()).await
    }

    /// Starts a node as [`TestNode::start`] does, with the given edge limits.
    pub async fn start_with_edge(edge: EdgeSettings) -> TestNode {
        Self::start_inner(false, PipelineConfig::default(), edge).await
    }

    /// Starts a node as [`TestNode::start`] does, with its write path set up by
    /// `pipeline`.
    pub async fn start_with_pipeline(pipeline: PipelineConfig) -> TestNode {
        Self::start_inner(false, pipeline, EdgeSettings::default()).await
    }

    /// Starts a node as [`TestNode::start`] does, plus its metrics and health endpoint
    /// on an ephemeral loopback port.
    pub async fn start_with_metrics() -> TestNode {
        Self::start_inner(true, PipelineConfig::default(), EdgeSettings::default()).await
    }

    async fn start_inner(
        with_metrics: bool,
        pipeline: PipelineConfig,
        edge: EdgeSettings,
    ) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let paths = TlsPaths::dev(dir.path());
        tls::ensure_dev_certificates(&paths, &TlsPaths::dev_ca_key(dir.path()), "test-node", &[])
            .unwrap();
        let server_config = tls::client_protocol_server_config(
            tls::NodeCert::load(&paths).unwrap(),
            &tls::TransportLimits::default(),
        )
        .unwrap();
        let store = StoreConfig {
            path: dir.path().join("store"),
            node: NodeId("test-node".into()),
            partitions: 64,
            durability: Durability::Flush,
            log: chorus_actors::store::LogConfig::default(),
        };
        let node = NodeHandle::start_with(store, pipeline).await.unwrap();
        let admin_key = node
            .ensure_admin_key()
            .await
            .unwrap()
            .expect("a fresh store has no key");
        let endpoint =
            quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let cluster = ClusterState::new(NodeId("test-node".into()), addr, 64).unwrap();
        let server = tokio::spawn(serve_with_edge(
            endpoint,
            Backend::single(node.clone(), cluster),
            ServerSettings {
                frame_limit: FrameLimit::default(),
                max_in_flight_per_stream: 256,
                hello_timeout: Duration::from_secs(5),
                shutdown_grace: Duration::from_secs(5),
            },
            edge,
            None,
            shutdown.clone(),
        ));
        let metrics = if with_metrics {
            let readiness = Readiness::new();
            readiness.set_store_available(true);
            let stop = CancellationToken::new();
            let server = MetricsServer::start(
                "127.0.0.1:0".parse().unwrap(),
                readiness.clone(),
                stop.clone(),
            )
            .await
            .unwrap();
            Some(TestMetrics {
                addr: server.local_addr(),
                readiness,
                stop,
                server,
            })
        } else {
            None
        };
        TestNode {
            metrics,
            addr,
            ca_pem: std::fs::read(&paths.ca_cert).unwrap(),
            admin_key,
            node,
            shutdown,
            server,
            dir,
        }
    }

    /// An SDK client with the given key.
    pub async fn client_with(&self, key: &str) -> Result<Client, chorus_client::ClientError> {
        Client::connect(
            &[self.addr],
            Credentials::new(self.ca_pem.clone(), key),
            ClientConfig::default(),
        )
        .await
    }

    /// An SDK client with the admin key.
    pub async fn client(&self) -> Client {
        self.client_with(&self.admin_key.clone()).await.unwrap()
    }

    /// Stops serving and flushes.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap();
        self.node.shutdown().await.unwrap();
        if let Some(metrics) = self.metrics {
            metrics.stop.cancel();
            metrics.server.join().await;
        }
    }
}

/// A raw QUIC connection speaking the client ALPN, verified against `ca_pem`.
pub async fn raw_connection(addr: SocketAddr, ca_pem: &[u8]) -> quinn::Connection {
    raw_endpoint("127.0.0.1:0".parse().unwrap(), ca_pem)
        .connect(addr, "localhost")
        .unwrap()
        .await
        .unwrap()
}

/// A client endpoint bound to `local` whose connections speak the client ALPN, verified
/// against `ca_pem`.
pub fn raw_endpoint(local: SocketAddr, ca_pem: &[u8]) -> quinn::Endpoint {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut crypto = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    crypto.alpn_protocols = vec![chorus_protocol::ALPN_CLIENT.to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap(),
    ));
    let mut endpoint = quinn::Endpoint::client(local).unwrap();
    endpoint.set_default_client_config(config);
    endpoint
}

/// Says hello on `connection` with `api_key`; the server's answer.
pub async fn raw_hello(
    connection: &quinn::Connection,
    api_key: &str,
) -> Result<chorus_protocol::Welcome, chorus_protocol::ErrorCode> {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let hello = chorus_protocol::Hello {
        version: chorus_protocol::PROTOCOL_VERSION,
        api_key: api_key.to_string(),
        client: "raw-test".into(),
    };
    send.write_all(&frame(&hello)).await.unwrap();
    send.finish().unwrap();
    let payload = read_payload(&mut recv).await.unwrap();
    chorus_protocol::decode_value(&payload).unwrap()
}

/// The resident set (`VmRSS`) and its peak (`VmHWM`) of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One frame's bytes.
pub fn frame<T: bincode::Encode>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(
        value,
        FrameLimit::new(chorus_protocol::MAX_FRAME_CEILING).unwrap(),
        &mut out,
    )
    .unwrap();
    out
}

/// Reads one whole frame's payload from a stream.
pub async fn read_payload(recv: &mut quinn::RecvStream) -> Result<Vec<u8>, quinn::ReadExactError> {
    let mut header = [0u8; 4];
    recv.read_exact(&mut header).await?;
    let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
    recv.read_exact(&mut payload).await?;
    Ok(payload)
}

/// The `chorus` binary built for these tests.
pub fn chorus_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_chorus"))
}

/// `chorus ctl --json --config CONFIG ARGS…`, its answer parsed (`Null` if it is not
/// JSON, e.g. while the agent is not up).
pub fn ctl_json(config: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(chorus_bin())
        .args(["ctl", "--json", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// A free UDP port on 127.0.0.1 (free when asked; the agent binds it right after).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `chorus agent` as a child process on `port` with data in `data_dir`.
pub struct AgentProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl AgentProcess {
    /// Starts the agent and waits until it accepts a client.
    pub async fn start(data_dir: &Path, port: u16) -> AgentProcess {
        Self::start_with_env(data_dir, port, &[]).await
    }

    /// Starts the agent as [`AgentProcess::start`] does, with extra environment variables.
    pub async fn start_with_env(data_dir: &Path, port: u16, env: &[(&str, &str)]) -> AgentProcess {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut command = Command::new(chorus_bin());
        command
            .arg("agent")
            .env("CHORUS_DATA_DIR", data_dir)
            .env("CHORUS_LISTEN", addr.to_string())
            // Port 0: agents of parallel tests must not race for the default metrics port.
            .env("CHORUS_METRICS_LISTEN", "127.0.0.1:0")
            .env("CHORUS_LOG_LEVEL", "warn")
            .envs(env.iter().copied());
        Self::launch(command, addr, data_dir).await
    }

    /// Starts `chorus agent --config CONFIG` with no `CHORUS_*` variable of its own, so
    /// that the file alone decides (`data_dir` and `listen` included).
    pub async fn start_with_config(config: &Path, data_dir: &Path, port: u16) -> AgentProcess {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut command = Command::new(chorus_bin());
        command.arg("agent").arg("--config").arg(config);
        Self::launch(command, addr, data_dir).await
    }

    /// Spawns `command` (an agent serving at `addr`) and waits until it is ready.
    async fn launch(mut command: Command, addr: SocketAddr, data_dir: &Path) -> AgentProcess {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let agent = AgentProcess {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
        };
        agent.wait_ready().await;
        agent
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.data_dir.join("admin.key").exists() && self.client().await.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "agent did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An SDK client using the agent's dev CA and admin key.
    pub async fn client(&self) -> Result<Client, chorus_client::ClientError> {
        let key = std::fs::read_to_string(self.data_dir.join("admin.key")).unwrap_or_default();
        let credentials = Credentials::from_ca_file(self.data_dir.join("tls/ca.pem"), key.trim())?;
        Client::connect(&[self.addr], credentials, ClientConfig::default()).await
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) to the agent with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Stops the agent with SIGTERM and waits (up to 30 s) for it to exit.
    pub async fn stop(mut self) {
        self.signal("TERM");
        for _ in 0..300 {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("agent did not stop on SIGTERM");
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens the store of a stopped agent of `node` in `data_dir`, to read or alter what it
/// left on disk.
pub fn open_stopped_store(data_dir: &Path, node: &str, partitions: u16) -> Store {
    Store::open(StoreConfig {
        path: data_dir.join("store"),
        node: NodeId(node.into()),
        partitions,
        durability: Durability::Flush,
        log: chorus_actors::store::LogConfig::default(),
    })
    .unwrap()
}
