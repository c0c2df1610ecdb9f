//! The node's configuration: defaults < TOML file < `CHORUS_*` environment < flags,
//! validated once at start so that a bad value is refused before any port is bound.

mod breakers;
mod bulkheads;
mod cluster;
mod degradation;
pub mod edge;
mod enrichment;
pub mod env;
mod functions;
mod insights;
mod limits;
mod retention;
mod store_log;
mod tiers;
pub mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chorus_actors::validation::{ValidationConfig, ValidationConfigError};
use chorus_protocol::FrameLimit;
use serde::{Deserialize, Serialize};

pub use breakers::{BreakerSection, BreakersSection};
pub use bulkheads::StoreWritesSection;
pub use cluster::{ClusterSection, read_key};
pub use degradation::DegradationSection;
pub use edge::EdgeSection;
pub use enrichment::EnrichmentSection;
pub use env::env_name;
pub use functions::FunctionsSection;
pub use insights::InsightsSection;
pub use limits::LimitsSection;
pub use retention::RetentionSection;
pub use store_log::StoreLogSection;
pub use tiers::{TierSection, TiersSection};

use crate::tls::TlsPaths;

/// A configuration that cannot be used: `key` names the setting, `reason` says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    /// The setting (a TOML key path, an environment variable or a file).
    pub key: String,
    /// Why it was refused.
    pub reason: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// How durable an acknowledged write is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// sled's flush, then an fdatasync: survives power loss.
    #[default]
    Full,
    /// sled's flush only (sync_file_range): survives a process crash, not a power loss.
    Flush,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Certificate files; all three or none (none: the development certificates in the data dir).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// The cluster CA certificate (PEM).
    pub ca_cert: Option<PathBuf>,
    /// This node's certificate (PEM), signed by the CA.
    pub cert: Option<PathBuf>,
    /// This node's private key (PEM).
    pub key: Option<PathBuf>,
}

/// Logging settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `chorus_node=debug,info`.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// The HTTP endpoint of `/metrics` (Prometheus text) and `/health/live`, `/health/ready`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Whether to serve the endpoint (and record metrics at all).
    pub enabled: bool,
    /// TCP address of the endpoint; loopback by default, as it has no authentication.
    pub listen: SocketAddr,
    /// HTTP connections served at once (1..=10,000; default 32); more wait unaccepted.
    pub max_connections: u32,
    /// Milliseconds one HTTP connection may live, slow request and response included
    /// (100..=600,000; default 10,000); a slower client is disconnected.
    #[serde(deserialize_with = "units::millis")]
    pub connection_timeout_ms: u64,
}

/// Default HTTP connections the metrics endpoint serves at once.
pub const DEFAULT_METRICS_MAX_CONNECTIONS: u32 = 32;
/// Default lifetime of one metrics endpoint connection, in milliseconds.
pub const DEFAULT_METRICS_CONNECTION_TIMEOUT_MS: u64 = 10_000;

/// The TCP port of the metrics and health endpoint by default.
pub const DEFAULT_METRICS_PORT: u16 = 9400;

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_METRICS_PORT)),
            max_connections: DEFAULT_METRICS_MAX_CONNECTIONS,
            connection_timeout_ms: DEFAULT_METRICS_CONNECTION_TIMEOUT_MS,
        }
    }
}

/// The local control socket (`chorus ctl`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSection {
    /// Path of the Unix socket (mode 0600); default `<data_dir>/chorus.sock`. At most
    /// [`MAX_SOCKET_PATH_BYTES`] bytes, the limit of a Unix socket address.
    pub socket: Option<PathBuf>,
}

/// The socket's file name in the data dir when none is configured.
pub const CONTROL_SOCKET_FILE: &str = "chorus.sock";
/// Longest control socket path: `sun_path` holds 108 bytes including the final NUL.
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// Where the control socket of a node with this data dir is by default.
pub fn default_control_socket(data_dir: &Path) -> PathBuf {
    data_dir.join(CONTROL_SOCKET_FILE)
}

/// Everything a node needs to start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This node's name, unique in its cluster: 1..=64 characters of `[A-Za-z0-9._-]`.
    pub node_id: String,
    /// Directory of the store, the development certificates and the admin key.
    pub data_dir: PathBuf,
    /// UDP address of the QUIC endpoint.
    pub listen: SocketAddr,
    /// Number of partitions users are hashed into; fixed when the store is created.
    pub partitions: u16,
    /// `full` (fdatasync after each group flush; the default) or `flush`.
    pub durability: DurabilityMode,
    /// Largest frame a peer may send, in bytes (4 KiB..=16 MiB).
    #[serde(deserialize_with = "units::bytes")]
    pub max_frame_bytes: u32,
    /// Bidirectional streams a client may have open at once on one connection.
    pub max_streams_per_connection: u32,
    /// Requests one stream may have in flight before the node stops reading from it.
    pub max_in_flight_per_stream: u32,
    /// Seconds without traffic after which a connection is closed.
    #[serde(deserialize_with = "units::secs")]
    pub idle_timeout_secs: u64,
    /// Seconds a graceful shutdown waits for requests in flight.
    #[serde(deserialize_with = "units::secs")]
    pub shutdown_grace_secs: u64,
    /// Certificate files.
    pub tls: TlsSection,
    /// Logging.
    pub log: LogSection,
    /// The control socket.
    pub control: ControlSection,
    /// The metrics and health endpoint.
    pub metrics: MetricsSection,
    /// Submit rate limits.
    pub limits: LimitsSection,
    /// Limits of the client-facing endpoint (`[edge]`): connections, handshakes,
    /// deadlines, windows, requests in flight, unknown keys.
    pub edge: EdgeSection,
    /// The optional enrichment call (`[enrichment]`; off unless `url` is set).
    pub enrichment: EnrichmentSection,
    /// The store-writes bulkhead (`[store_writes]`: 128 running, 64 waiting).
    pub store_writes: StoreWritesSection,
    /// The partition log's segments and their retirement (`[store_log]`).
    pub store_log: StoreLogSection,
    /// The four tier queues (`[tiers.realtime]` … `[tiers.batch]`).
    pub tiers: TiersSection,
    /// When load sheds work (`[degradation]`).
    pub degradation: DegradationSection,
    /// When a function version's feedback marks it `requires_update` (`[functions]`).
    pub functions: FunctionsSection,
    /// The privacy budget and the cache of insights (`[insights]`).
    pub insights: InsightsSection,
    /// How long items are kept (`[retention]`).
    pub retention: RetentionSection,
    /// The circuit breakers (`[breakers.store]`, `[breakers.enrichment]`).
    pub breakers: BreakersSection,
    /// Membership in a cluster (`[cluster]`); absent: this node runs alone.
    pub cluster: Option<ClusterSection>,
    /// Workers in the validator pool, 1..=64; 0 (the default) is the available
    /// parallelism clamped to 1..=8.
    pub validator_workers: u32,
    /// The content policy (`[validation]`): mode, thresholds, weights, rules.
    pub validation: ValidationConfig,
}

/// The largest config file read, 1 MiB: a config is a few KiB; a bigger file (or
/// `/dev/zero`) is refused before it is read whole.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// Reads at most `cap` bytes of `path`; a longer file is an error, never read whole.
fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > cap {
        return Err(format!("larger than {cap} bytes; not a Chorus config"));
    }
    Ok(bytes)
}

/// Parses a config file's bytes as a TOML table (the size is already capped).
fn parse_table(bytes: &[u8]) -> Result<toml::Table, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    text.parse::<toml::Table>()
        .map_err(|e| format!("not valid TOML: {}", e.message()))
}

/// The QUIC port a node listens on by default.
pub const DEFAULT_PORT: u16 = 7400;
/// The data directory used when none is configured.
pub const DEFAULT_DATA_DIR: &str = "./chorus-data";

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: "node-1".into(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            partitions: 1024,
            durability: DurabilityMode::Full,
            max_frame_bytes: chorus_protocol::DEFAULT_MAX_FRAME,
            max_streams_per_connection: 100,
            max_in_flight_per_stream: 1024,
            idle_timeout_secs: 30,
            shutdown_grace_secs: 10,
            tls: TlsSection::default(),
            log: LogSection::default(),
            control: ControlSection::default(),
            metrics: MetricsSection::default(),
            limits: LimitsSection::default(),
            edge: EdgeSection::default(),
            enrichment: EnrichmentSection::default(),
            store_writes: StoreWritesSection::default(),
            store_log: StoreLogSection::default(),
            tiers: TiersSection::default(),
            degradation: DegradationSection::default(),
            functions: FunctionsSection::default(),
            insights: InsightsSection::default(),
            retention: RetentionSection::default(),
            breakers: BreakersSection::default(),
            cluster: None,
            validator_workers: 0,
            validation: ValidationConfig::default(),
        }
    }
}

impl NodeConfig {
    /// Loads the configuration: defaults, then `file` if given, then the `CHORUS_*`
    /// variables of `env`; then validates it.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<NodeConfig, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let name = || path.display().to_string();
                let bytes = read_capped(path, MAX_CONFIG_FILE_BYTES)
                    .map_err(|reason| ConfigError::new(name(), reason))?;
                parse_table(&bytes).map_err(|reason| ConfigError::new(name(), reason))?
            }
            None => toml::Table::new(),
        };
        let env: std::collections::HashMap<String, String> = env.into_iter().collect();
        env::overlay(&mut table, &env)?;
        Self::from_table(table)
    }

    /// Parses and validates a config file's contents (no environment): what
    /// [`NodeConfig::load`] does with a file, for callers (and the fuzzer) holding bytes.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<NodeConfig, ConfigError> {
        if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
            return Err(ConfigError::new(
                "config",
                format!("larger than {MAX_CONFIG_FILE_BYTES} bytes"),
            ));
        }
        let table = parse_table(bytes).map_err(|reason| ConfigError::new("config", reason))?;
        Self::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<NodeConfig, ConfigError> {
        let config: NodeConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let path = e.path().to_string();
                ConfigError::new(
                    if path == "." { "config".into() } else { path },
                    e.into_inner().to_string(),
                )
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every limit; the first violation names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let id_ok = (1..=64).contains(&self.node_id.len())
            && self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !id_ok {
            return Err(ConfigError::new(
                "node_id",
                "must be 1..=64 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("data_dir", "must not be empty"));
        }
        if self.partitions == 0 {
            return Err(ConfigError::new("partitions", "must be at least 1"));
        }
        self.limits.to_rate_limits()?;
        self.edge.validate()?;
        check_range(
            "metrics.max_connections",
            self.metrics.max_connections.into(),
            1,
            10_000,
        )?;
        check_range(
            "metrics.connection_timeout_ms",
            self.metrics.connection_timeout_ms,
            100,
            600_000,
        )?;
        self.enrichment.to_enrichment()?;
        self.store_writes.to_bulkhead()?;
        self.store_log.to_log_config()?;
        self.tiers.to_tier_queues()?;
        self.degradation.to_degradation()?;
        self.functions.to_rule()?;
        self.insights.validate()?;
        self.retention.validate()?;
        self.breakers.store()?;
        self.breakers.enrichment()?;
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
            if self.tls.ca_cert.is_none() {
                return Err(ConfigError::new(
                    "tls",
                    "a cluster member needs the cluster's certificates: set tls.ca_cert, tls.cert \
                     and tls.key (chorus certs init / chorus certs node)",
                ));
            }
            if self.listen.ip().is_unspecified() && cluster.advertise.is_none() {
                return Err(ConfigError::new(
                    "cluster.advertise",
                    "listen is a wildcard address: set the address members and clients reach",
                ));
            }
        }
        FrameLimit::new(self.max_frame_bytes)
            .map_err(|r| ConfigError::new("max_frame_bytes", r))?;
        check_range(
            "max_streams_per_connection",
            self.max_streams_per_connection.into(),
            1,
            10_000,
        )?;
        check_range(
            "max_in_flight_per_stream",
            self.max_in_flight_per_stream.into(),
            1,
            65_536,
        )?;
        check_range("idle_timeout_secs", self.idle_timeout_secs, 1, 3_600)?;
        check_range("shutdown_grace_secs", self.shutdown_grace_secs, 0, 3_600)?;
        check_range(
            "validator_workers",
            self.validator_workers.into(),
            0,
            chorus_actors::pipeline::MAX_VALIDATOR_WORKERS as u64,
        )?;
        self.validation
            .validate()
            .map_err(|e| validation_error(&self.validation, e))?;
        let tls_set = [&self.tls.ca_cert, &self.tls.cert, &self.tls.key]
            .iter()
            .filter(|p| p.is_some())
            .count();
        if tls_set != 0 && tls_set != 3 {
            return Err(ConfigError::new(
                "tls",
                "set all of ca_cert, cert and key, or none (for development certificates)",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::new("log.level", e.to_string()))?;
        let socket = self.control_socket();
        let socket_len = socket.as_os_str().len();
        if socket_len == 0 || socket_len > MAX_SOCKET_PATH_BYTES {
            return Err(ConfigError::new(
                "control.socket",
                format!(
                    "{} is {socket_len} bytes, must be 1..={MAX_SOCKET_PATH_BYTES}",
                    socket.display()
                ),
            ));
        }
        Ok(())
    }

    /// The partition log's settings (validated at load).
    pub fn store_log(&self) -> chorus_actors::store::LogConfig {
        self.store_log.to_log_config().expect("validated at load")
    }

    /// When a function version requires an update (validated at load).
    pub fn update_rule(&self) -> chorus_protocol::UpdateRule {
        self.functions.to_rule().expect("validated at load")
    }

    /// The write pipeline's settings (validated at load).
    pub fn pipeline(&self) -> chorus_actors::PipelineConfig {
        let mut pipeline = chorus_actors::PipelineConfig {
            limits: self.limits.to_rate_limits().expect("validated at load"),
            validation: self.validation.clone(),
            enrichment: chorus_actors::enrichment::EnrichmentConfig {
                breaker: self.breakers.enrichment().expect("validated at load"),
                ..self.enrichment.to_enrichment().expect("validated at load")
            },
            store_writes: self.store_writes.to_bulkhead().expect("validated at load"),
            store_breaker: self.breakers.store().expect("validated at load"),
            tiers: self.tiers.to_tier_queues().expect("validated at load"),
            degradation: self
                .degradation
                .to_degradation()
                .expect("validated at load"),
            ..Default::default()
        };
        if self.validator_workers > 0 {
            pipeline.validator_workers = self.validator_workers as usize;
        }
        pipeline
    }

    /// The frame limit as a validated value.
    pub fn frame_limit(&self) -> FrameLimit {
        FrameLimit::new(self.max_frame_bytes).expect("validated at load")
    }

    /// Where the certificates are: configured, or the development ones in the data dir.
    pub fn tls_paths(&self) -> TlsPaths {
        match (&self.tls.ca_cert, &self.tls.cert, &self.tls.key) {
            (Some(ca), Some(cert), Some(key)) => TlsPaths {
                ca_cert: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => TlsPaths::dev(&self.data_dir),
        }
    }

    /// The QUIC address members and clients reach this node at.
    pub fn advertised_addr(&self) -> SocketAddr {
        self.cluster
            .as_ref()
            .and_then(|c| c.advertise)
            .unwrap_or(self.listen)
    }

    /// Where the control socket is: configured, or `<data_dir>/chorus.sock`.
    pub fn control_socket(&self) -> PathBuf {
        self.control
            .socket
            .clone()
            .unwrap_or_else(|| default_control_socket(&self.data_dir))
    }

    /// Whether the node uses (and on first start makes) development certificates.
    pub fn uses_dev_certificates(&self) -> bool {
        self.tls.cert.is_none()
    }
}

/// Where the admin key made on first start is kept.
pub fn admin_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.key")
}

/// A `[validation]` error as a [`ConfigError`] whose key is the TOML path of the
/// setting at fault, e.g. `validation.rules[2].pattern` (rules are named in errors; the
/// index is found from the name).
fn validation_error(config: &ValidationConfig, e: ValidationConfigError) -> ConfigError {
    let reason = e.to_string();
    match e {
        ValidationConfigError::Fraction { field, .. } => ConfigError::new(field, reason),
        ValidationConfigError::Thresholds { .. } => {
            ConfigError::new("validation.reject_below", reason)
        }
        ValidationConfigError::Weight { principle, .. } => ConfigError::new(
            format!("validation.weights.{}", principle.as_str().to_lowercase()),
            reason,
        ),
        ValidationConfigError::ZeroWeights => ConfigError::new("validation.weights", reason),
        ValidationConfigError::TooManyRules { .. } => ConfigError::new("validation.rules", reason),
        ValidationConfigError::TooManyRiskWords { .. } | ValidationConfigError::RiskWord { .. } => {
            ConfigError::new("validation.hybrid.risk_words", reason)
        }
        ValidationConfigError::Rule {
            rule,
            field,
            reason: why,
        } => {
            let mut named = config
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.name == rule)
                .map(|(i, _)| i);
            let first = named.next();
            // A duplicate name is reported at its second use; anything else at the
            // first rule of that name.
            let index = if field == "name" && !rule.trim().is_empty() {
                named.next().or(first)
            } else {
                first
            };
            let key = match index {
                Some(i) => format!("validation.rules[{i}].{field}"),
                None => format!("validation.rules.{field}"),
            };
            ConfigError::new(key, format!("rule {rule:?}: {why}"))
        }
    }
}

pub(crate) fn check_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("{value} is outside {min}..={max}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml_text: &str, env: &[(&str, &str)]) -> Result<NodeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chorus.toml");
        std::fs::write(&path, toml_text).unwrap();
        NodeConfig::load(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_are_valid_and_local() {
        let c = NodeConfig::load(None, Vec::new()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7400");
        assert_eq!(c.data_dir, PathBuf::from("./chorus-data"));
        assert_eq!(c.durability, DurabilityMode::Full);
    }

    #[test]
    fn the_enrichment_section_maps_into_the_pipeline() {
        let c = load_str(
            "[enrichment]\nurl = \"http://127.0.0.1:9500/enrich\"\ntimeout_ms = 500",
            &[],
        )
        .unwrap();
        let enrichment = c.pipeline().enrichment;
        assert_eq!(
            enrichment.url.as_deref(),
            Some("http://127.0.0.1:9500/enrich")
        );
        assert_eq!(enrichment.timeout, std::time::Duration::from_millis(500));
        let off = NodeConfig::load(None, Vec::new()).unwrap().pipeline();
        assert!(off.enrichment.url.is_none());
    }

    #[test]
    fn environment_overrides_file() {
        let c = load_str(
            "partitions = 64\n[log]\nlevel = \"debug\"\n",
            &[("CHORUS_PARTITIONS", "128"), ("CHORUS_LOG_FORMAT", "json")],
        )
        .unwrap();
        assert_eq!(c.partitions, 128);
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn bad_values_name_their_key() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let long_socket = format!("/{}", "s".repeat(200));
        let cases: &[Case] = &[
            ("partitions = 0", &[], "partitions"),
            ("partitions = 70000", &[], "partitions"),
            ("listen = \"nowhere\"", &[], "listen"),
            ("max_frame_bytes = 10", &[], "max_frame_bytes"),
            ("durability = \"sometimes\"", &[], "durability"),
            ("node_id = \"has space\"", &[], "node_id"),
            ("[log]\nlevel = \"[[[\"", &[], "log.level"),
            ("[tls]\ncert = \"/x\"", &[], "tls"),
            ("[control]\nsocket = \"\"", &[], "control.socket"),
            (
                "",
                &[("CHORUS_CONTROL_SOCKET", long_socket.as_str())],
                "control.socket",
            ),
            ("", &[("CHORUS_PARTITIONS", "many")], "CHORUS_PARTITIONS"),
            ("[metrics]\nlisten = \"nowhere\"", &[], "metrics.listen"),
            ("[metrics]\nport = 9400", &[], "metrics.port"),
            (
                "[limits]\nper_user_per_minute = 0",
                &[],
                "limits.per_user_per_minute",
            ),
            (
                "",
                &[("CHORUS_LIMITS_PER_USER_BURST", "0")],
                "limits.per_user_burst",
            ),
            ("[enrichment]\nurl = \"nope\"", &[], "enrichment.url"),
            (
                "[store_writes]\nmax_concurrent = 0",
                &[],
                "store_writes.max_concurrent",
            ),
            (
                "",
                &[("CHORUS_ENRICHMENT_TIMEOUT_MS", "0")],
                "enrichment.timeout_ms",
            ),
            (
                "",
                &[("CHORUS_METRICS_ENABLED", "maybe")],
                "CHORUS_METRICS_ENABLED",
            ),
        ];
        for (text, env, key) in cases {
            let err = load_str(text, env).expect_err(text);
            assert_eq!(&err.key, key, "{text}: {err}");
        }
    }

    #[test]
    fn metrics_endpoint_defaults_to_loopback_and_follows_the_environment() {
        let c = NodeConfig::load(None, Vec::new()).unwrap();
        assert!(c.metrics.enabled);
        assert_eq!(c.metrics.listen.to_string(), "127.0.0.1:9400");
        let c = load_str(
            "[metrics]\nlisten = \"0.0.0.0:9500\"\n",
            &[
                ("CHORUS_METRICS_ENABLED", "false"),
                ("CHORUS_METRICS_LISTEN", "127.0.0.1:0"),
            ],
        )
        .unwrap();
        assert!(!c.metrics.enabled);
        assert_eq!(c.metrics.listen.to_string(), "127.0.0.1:0");
    }

    #[test]
    fn the_control_socket_defaults_to_the_data_dir_and_the_environment_moves_it() {
        let c = load_str("data_dir = \"/var/lib/chorus\"", &[]).unwrap();
        assert_eq!(
            c.control_socket(),
            PathBuf::from("/var/lib/chorus/chorus.sock")
        );
        let c = load_str("", &[("CHORUS_CONTROL_SOCKET", "/run/chorus/ctl.sock")]).unwrap();
        assert_eq!(c.control_socket(), PathBuf::from("/run/chorus/ctl.sock"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = load_str("partitons = 8", &[]).unwrap_err();
        assert!(err.reason.contains("partitons"), "{err}");
    }

    #[test]
    fn research_mode_and_rules_come_from_the_validation_section() {
        let c = load_str(
            r#"
validator_workers = 3
[validation]
mode = "research"
accept_at = 0.85
[validation.weights]
harmless = 4.0
[[validation.rules]]
name = "refunds"
principle = "honest"
words = ["refund me"]
penalty = 0.5
reason = "asks for a refund"
"#,
            &[],
        )
        .unwrap();
        let v = &c.validation;
        assert_eq!(v.mode, chorus_actors::validation::Mode::Research);
        assert_eq!(v.accept_at(), 0.85);
        assert_eq!(v.reject_below(), 0.5);
        assert_eq!(v.weights.harmless, 4.0);
        assert_eq!(v.rules.len(), 1);
        let pipeline = c.pipeline();
        assert_eq!(pipeline.validation, c.validation);
        assert_eq!(pipeline.validator_workers, 3);
        // The environment picks the mode.
        let c = load_str("", &[("CHORUS_VALIDATION_MODE", "hybrid")]).unwrap();
        assert_eq!(c.validation.mode, chorus_actors::validation::Mode::Hybrid);
        assert_eq!(
            c.validation.rules.len(),
            ValidationConfig::default().rules.len()
        );
        let err = load_str("", &[("CHORUS_VALIDATION_MODE", "strict")]).unwrap_err();
        assert_eq!(err.key, "validation.mode", "{err}");
    }

    #[test]
    fn a_bad_validation_rule_or_threshold_names_its_key() {
        let rule = |name: &str, body: &str| {
            format!(
                "[[validation.rules]]\nname = \"{name}\"\nprinciple = \"harmless\"\n{body}\npenalty = 0.5\nreason = \"r\"\n"
            )
        };
        let three = format!(
            "{}{}{}",
            rule("a", "words = [\"x\"]"),
            rule("b", "words = [\"y\"]"),
            rule("broken", "pattern = \"(unclosed\""),
        );
        let err = load_str(&three, &[]).unwrap_err();
        assert_eq!(err.key, "validation.rules[2].pattern", "{err}");
        assert!(err.reason.contains("broken"), "{err}");
        let dup = format!(
            "{}{}",
            rule("a", "words = [\"x\"]"),
            rule("a", "words = [\"y\"]")
        );
        assert_eq!(
            load_str(&dup, &[]).unwrap_err().key,
            "validation.rules[1].name"
        );
        let cases: &[(&str, &str)] = &[
            ("[validation]\naccept_at = 1.5", "validation.accept_at"),
            (
                "[validation]\naccept_at = 0.3\nreject_below = 0.6",
                "validation.reject_below",
            ),
            (
                "[validation.weights]\nfair = -1.0",
                "validation.weights.fair",
            ),
            (
                "[validation.hybrid]\nrisk_words = [\"two words\"]",
                "validation.hybrid.risk_words",
            ),
            ("validator_workers = 65", "validator_workers"),
        ];
        for (text, key) in cases {
            let err = load_str(text, &[]).expect_err(text);
            assert_eq!(&err.key, key, "{text}: {err}");
        }
    }

    #[test]
    fn unknown_validation_keys_are_refused() {
        let err = load_str("[validation]\nmodee = \"research\"", &[]).unwrap_err();
        assert!(err.reason.contains("modee"), "{err}");
        assert!(err.key.starts_with("validation"), "{err}");
        let err = load_str(
            "[[validation.rules]]\nname = \"a\"\nprinciple = \"fair\"\nwords = [\"x\"]\npenalty = 0.1\nreason = \"r\"\nweight = 2\n",
            &[],
        )
        .unwrap_err();
        assert!(err.reason.contains("weight"), "{err}");
    }

    #[test]
    fn a_config_file_over_1_mib_is_refused_before_it_is_parsed() {
        let big = format!("# {}\n", "x".repeat(MAX_CONFIG_FILE_BYTES as usize));
        let err = load_str(&big, &[]).unwrap_err();
        assert!(err.key.ends_with("chorus.toml"), "{err}");
        assert!(err.reason.contains("larger than"), "{err}");
        let err = NodeConfig::from_file_bytes(big.as_bytes()).unwrap_err();
        assert!(err.reason.contains("larger than"), "{err}");
        // `/dev/zero` never ends: the cap stops the read.
        let err = NodeConfig::load(Some(Path::new("/dev/zero")), Vec::new()).unwrap_err();
        assert!(err.reason.contains("larger than"), "{err}");
    }

    #[test]
    fn the_edge_section_comes_from_the_file_and_the_environment() {
        let c = load_str(
            "[edge]\nmax_connections = 10\nmax_connections_per_address = 2\n",
            &[("CHORUS_EDGE_FRAME_TIMEOUT_MS", "1500")],
        )
        .unwrap();
        assert_eq!(c.edge.max_connections, 10);
        assert_eq!(c.edge.max_connections_per_address, 2);
        assert_eq!(c.edge.frame_timeout_ms, 1500);
        let err = load_str("[edge]\nmax_connections_per_address = 0\n", &[]).unwrap_err();
        assert_eq!(err.key, "edge.max_connections_per_address");
        let err = load_str("", &[("CHORUS_METRICS_MAX_CONNECTIONS", "0")]).unwrap_err();
        assert_eq!(err.key, "metrics.max_connections");
    }

    #[test]
    fn durations_and_sizes_take_an_integer_in_the_keys_unit_or_a_unit() {
        let plain = load_str(
            "idle_timeout_secs = 45\nmax_frame_bytes = 65536\n[edge]\nhello_timeout_ms = 1500\n\
             [store_log]\nindex_cache_mib = 128\n",
            &[],
        )
        .unwrap();
        let typed = load_str(
            "idle_timeout_secs = \"45s\"\nmax_frame_bytes = \"64KiB\"\n[edge]\n\
             hello_timeout_ms = \"1s 500ms\"\n[store_log]\nindex_cache_mib = \"128MiB\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(plain, typed);
        assert_eq!(typed.idle_timeout_secs, 45);
        assert_eq!(typed.max_frame_bytes, 65_536);
        assert_eq!(typed.edge.hello_timeout_ms, 1_500);
        assert_eq!(typed.store_log.index_cache_mib, 128);
        let env = load_str(
            "",
            &[
                ("CHORUS_IDLE_TIMEOUT_SECS", "2m"),
                ("CHORUS_STORE_LOG_SEGMENT_BYTES", "8MiB"),
                ("CHORUS_TIERS_BATCH_LATENCY_BUDGET_MS", "90s"),
            ],
        )
        .unwrap();
        assert_eq!(env.idle_timeout_secs, 120);
        assert_eq!(env.store_log.segment_bytes, 8 << 20);
        assert_eq!(env.tiers.batch.latency_budget_ms, 90_000);
    }

    #[test]
    fn a_bad_unit_is_refused_naming_its_key() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                "idle_timeout_secs = \"30 parsecs\"",
                &[],
                "idle_timeout_secs",
                "not a duration",
            ),
            (
                "idle_timeout_secs = \"1500ms\"",
                &[],
                "idle_timeout_secs",
                "whole number of seconds",
            ),
            (
                "max_frame_bytes = \"1 furlong\"",
                &[],
                "max_frame_bytes",
                "not a size",
            ),
            (
                "max_frame_bytes = \"8GiB\"",
                &[],
                "max_frame_bytes",
                "too large",
            ),
            (
                "[store_log]\nindex_cache_mib = \"1KiB\"",
                &[],
                "store_log.index_cache_mib",
                "whole number of MiB",
            ),
            (
                "[tiers.batch]\ntimeout_ms = \"soon\"",
                &[],
                "tiers.batch.timeout_ms",
                "not a duration",
            ),
            (
                "[breakers.store]\nopen_timeout_ms = \"30 s s\"",
                &[],
                "breakers.store.open_timeout_ms",
                "not a duration",
            ),
            (
                "",
                &[("CHORUS_EDGE_FRAME_TIMEOUT_MS", "10 lightyears")],
                "edge.frame_timeout_ms",
                "not a duration",
            ),
        ];
        for (text, env, key, reason) in cases {
            let err = load_str(text, env).expect_err(text);
            assert_eq!(&err.key, key, "{text}: {err}");
            assert!(err.reason.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn tiers_degradation_and_breakers_come_from_their_sections() {
        let c = load_str(
            "[tiers.batch]\nweight = 3\ncapacity = 10\n[degradation]\nshed_optional_at = 0.7\n\
             dwell_ms = \"10s\"\n[breakers.store]\nfailure_streak = 9\n\
             [breakers.enrichment]\nopen_timeout_ms = \"2m\"\n",
            &[("CHORUS_TIERS_REALTIME_WEIGHT", "500")],
        )
        .unwrap();
        let pipeline = c.pipeline();
        assert_eq!(pipeline.tiers.batch.weight.get(), 3);
        assert_eq!(pipeline.tiers.batch.capacity.get(), 10);
        assert_eq!(pipeline.tiers.realtime.weight.get(), 500);
        assert_eq!(pipeline.degradation.shed_optional_at, 0.7);
        assert_eq!(
            pipeline.degradation.dwell,
            std::time::Duration::from_secs(10)
        );
        assert_eq!(pipeline.store_breaker.failure_streak, 9);
        assert_eq!(
            pipeline.enrichment.breaker.open_timeout,
            std::time::Duration::from_secs(120)
        );
        let defaults = NodeConfig::default().pipeline();
        let actors = chorus_actors::PipelineConfig::default();
        assert_eq!(defaults.tiers, actors.tiers);
        assert_eq!(defaults.degradation, actors.degradation);
        assert_eq!(defaults.store_breaker, actors.store_breaker);
        assert_eq!(defaults.enrichment, actors.enrichment);
        let cases: &[(&str, &str)] = &[
            ("[tiers.priority]\nweight = 0", "tiers.priority.weight"),
            ("[tiers.standard]\nwieght = 2", "tiers.standard"),
            (
                "[degradation]\ncritical_only_at = 0.5",
                "degradation.critical_only_at",
            ),
            (
                "[breakers.enrichment]\nfailure_rate_percent = 0",
                "breakers.enrichment.failure_rate_percent",
            ),
            ("[breakers.disk]\nfailure_streak = 1", "breakers"),
        ];
        for (text, key) in cases {
            let err = load_str(text, &[]).expect_err(text);
            assert!(err.key.starts_with(key), "{text}: {err}");
        }
    }

    #[test]
    fn broken_toml_names_the_file() {
        let err = load_str("partitions = = 3", &[]).unwrap_err();
        assert!(err.key.ends_with("chorus.toml"), "{err}");
    }
}

#[cfg(test)]
mod shipped_configs {
    use super::*;

    #[test]
    fn the_single_node_config_is_the_default_and_writes_out_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster-config/single-node.toml");
        let config = NodeConfig::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(config, NodeConfig::default());
        let written = parse_table(&std::fs::read(&path).unwrap()).unwrap();
        let defaults = match toml::Value::try_from(NodeConfig::default()).unwrap() {
            toml::Value::Table(table) => table,
            other => panic!("not a table: {other:?}"),
        };
        // Commented out in the file: the built-in rules and risk words, too long to
        // repeat, and the keys that have no value by default.
        let (keys, _) = env::keys();
        for key in keys {
            let path = key.path.as_str();
            if path == "validation.hybrid.risk_words" || env::get_path(&defaults, path).is_none() {
                continue;
            }
            assert!(
                env::get_path(&written, path).is_some(),
                "single-node.toml does not list {path}"
            );
        }
    }

    #[test]
    fn every_shipped_config_loads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster-config");
        let mut dirs = vec![root];
        let mut seen = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "toml") {
                    let config = NodeConfig::load(Some(&path), Vec::new())
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    seen.push((path, config));
                }
            }
        }
        assert!(
            seen.len() >= 5,
            "single node, bare metal, three local nodes"
        );
        let local3: Vec<_> = seen
            .iter()
            .filter(|(p, _)| p.parent().is_some_and(|d| d.ends_with("local-3")))
            .map(|(_, c)| c)
            .collect();
        assert_eq!(local3.len(), 3);
        for config in &local3 {
            assert!(
                config.cluster.is_some(),
                "{} is a cluster member",
                config.node_id
            );
            assert_eq!(config.partitions, local3[0].partitions);
        }
    }
}
