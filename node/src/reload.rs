//! Live reconfiguration: `chorus ctl reload` and SIGHUP read the config file the node
//! started with (and the environment) again and apply what may change while it runs —
//! submit limits, the log filter, the tier queues, the degradation thresholds, the
//! circuit breakers and the node's TLS certificate — all of it or nothing. A change to
//! any other key is refused, naming it. Every reload, applied or refused, is audited.
//!
//! [`plan`] decides, with no IO; [`Reloader`] reads, audits and applies.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chorus_actors::{NodeHandle, PipelineConfigError};
use tracing::{info, warn};

use crate::config::{ConfigError, LimitsSection, LogFormat, NodeConfig};
use crate::logging::{LogControl, LogLevelError};
use crate::secrets::{SecretFileError, check_key_files};
use crate::tls::{NodeCert, TlsError};

/// Keys that may change while the node runs: a key is live when it is one of these or
/// lies under one (`limits` covers `limits.per_user_burst`).
pub const LIVE_KEYS: &[&str] = &[
    "limits",
    "log.level",
    "tiers",
    "degradation",
    "breakers",
    "tls.cert",
    "tls.key",
];

/// The key a reload lists when the certificate files changed under unchanged paths.
pub const ROTATED_CERT_KEY: &str = "tls.cert";

/// The audit actor of a reload asked for with SIGHUP.
pub const SIGHUP_ACTOR: &str = "agent SIGHUP";

/// Where a node's config comes from, to be read again on reload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigSource {
    /// The config file the node started with, if any.
    pub file: Option<PathBuf>,
    /// The `--log-format` flag, which wins over the file and the environment.
    pub log_format: Option<LogFormat>,
}

impl ConfigSource {
    /// Loads the config as the agent does at start: defaults, the file, `env`, flags.
    pub fn load(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<NodeConfig, ConfigError> {
        let mut config = NodeConfig::load(self.file.as_deref(), env)?;
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        Ok(config)
    }
}

/// Why a reload applied nothing. In every case the settings in force are unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file or the environment does not make a valid config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A key changed that only a restart can change.
    #[error("{key} cannot change without a restart; nothing was applied")]
    NeedsRestart {
        /// The first such key, in key order.
        key: String,
    },
    /// The certificate or key files could not be read, or do not fit each other.
    #[error("tls.cert: {0}")]
    Certificate(#[from] TlsError),
    /// A key file others can read (or one that is not a plain file) is refused, as at
    /// start.
    #[error(transparent)]
    KeyFile(#[from] SecretFileError),
    /// The pipeline refused the new settings.
    #[error("the pipeline refused the settings: {0}")]
    Pipeline(#[from] PipelineConfigError),
    /// The log filter could not be replaced.
    #[error("log.level: {0}")]
    LogLevel(#[from] LogLevelError),
    /// The audit log could not record the reload, so it was not applied.
    #[error("the audit log could not record the reload: {0}")]
    Audit(String),
}

impl ReloadError {
    /// The key at fault, for the caller's error.
    pub fn key(&self) -> String {
        match self {
            ReloadError::Config(e) => e.key.clone(),
            ReloadError::NeedsRestart { key } => key.clone(),
            ReloadError::Certificate(_) => ROTATED_CERT_KEY.into(),
            ReloadError::KeyFile(_) => "tls.key".into(),
            ReloadError::LogLevel(_) => "log.level".into(),
            ReloadError::Pipeline(_) | ReloadError::Audit(_) => "config".into(),
        }
    }
}

/// Whether `key` may change while the node runs.
pub fn is_live(key: &str) -> bool {
    LIVE_KEYS.iter().any(|live| {
        key == *live
            || key
                .strip_prefix(live)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Every leaf key of `config` and its value; arrays are one value.
fn leaves(config: &NodeConfig) -> BTreeMap<String, toml::Value> {
    fn walk(table: &toml::Table, prefix: &str, out: &mut BTreeMap<String, toml::Value>) {
        for (name, value) in table {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match value {
                toml::Value::Table(inner) => walk(inner, &path, out),
                leaf => {
                    out.insert(path, leaf.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    // A config is plain data: it always serializes.
    if let Ok(toml::Value::Table(table)) = toml::Value::try_from(config) {
        walk(&table, "", &mut out);
    }
    out
}

/// The keys whose values differ between `old` and `new` (set in one only counts), in
/// key order.
pub fn changed_keys(old: &NodeConfig, new: &NodeConfig) -> Vec<String> {
    let (old, new) = (leaves(old), leaves(new));
    let mut keys: Vec<String> = old
        .iter()
        .filter(|(key, value)| new.get(*key) != Some(*value))
        .map(|(key, _)| key.clone())
        .chain(new.keys().filter(|key| !old.contains_key(*key)).cloned())
        .collect();
    keys.sort_unstable();
    keys
}

/// What a reload from `old` to `new` applies, given whether the certificate files hold
/// another certificate than the one presented: the keys, in key order, or the first
/// key that needs a restart.
pub fn plan(
    old: &NodeConfig,
    new: &NodeConfig,
    cert_rotated: bool,
) -> Result<Vec<String>, ReloadError> {
    let mut keys = changed_keys(old, new);
    if let Some(key) = keys.iter().find(|key| !is_live(key)) {
        return Err(ReloadError::NeedsRestart { key: key.clone() });
    }
    if cert_rotated && !keys.iter().any(|k| k == ROTATED_CERT_KEY) {
        keys.push(ROTATED_CERT_KEY.into());
        keys.sort_unstable();
    }
    Ok(keys)
}

/// What a reload applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reloaded {
    /// The keys now in force, in key order (empty: nothing changed).
    pub applied: Vec<String>,
    /// The audit entry recording it.
    pub audit_seq: u64,
}

/// A reload read and checked, not yet applied.
struct Prepared {
    /// The config to put in force.
    config: NodeConfig,
    /// The keys that change, in key order.
    keys: Vec<String>,
    /// The certificate to present, if the files hold another one.
    cert: Option<Arc<rustls::sign::CertifiedKey>>,
}

/// Reads the config again and applies it to the running node; one reload at a time.
#[derive(Debug)]
pub struct Reloader {
    source: ConfigSource,
    /// The config in force; held for the whole of a reload.
    current: tokio::sync::Mutex<NodeConfig>,
    node: NodeHandle,
    log: LogControl,
    cert: Arc<NodeCert>,
}

impl Reloader {
    /// A reloader of the node started with `config` from `source`, presenting `cert`.
    pub fn new(
        source: ConfigSource,
        config: NodeConfig,
        node: NodeHandle,
        log: LogControl,
        cert: Arc<NodeCert>,
    ) -> Reloader {
        Reloader {
            source,
            current: tokio::sync::Mutex::new(config),
            node,
            log,
            cert,
        }
    }

    /// The submit limits in force.
    pub async fn limits(&self) -> LimitsSection {
        self.current.lock().await.limits.clone()
    }

    /// Reads the config from the source with `env`, audits the reload as `actor` and
    /// applies it, or audits its refusal and applies nothing.
    pub async fn reload(
        &self,
        actor: &str,
        env: Vec<(String, String)>,
    ) -> Result<Reloaded, ReloadError> {
        let mut current = self.current.lock().await;
        let prepared = self.prepare(&current, env);
        let Prepared {
            config: new,
            keys,
            cert,
        } = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                let detail = format!("key={} reason={:?}", e.key(), e.to_string());
                match self
                    .node
                    .audit_append(actor, "reload-refused", detail)
                    .await
                {
                    Ok(entry) => {
                        warn!(%actor, key = %e.key(), error = %e, audit_seq = entry.seq, "reload refused")
                    }
                    Err(audit) => {
                        warn!(%actor, error = %e, %audit, "reload refused; the audit log could not record it")
                    }
                }
                return Err(e);
            }
        };
        let entry = self
            .node
            .audit_append(actor, "reload", format!("keys={}", keys.join(",")))
            .await
            .map_err(|e| ReloadError::Audit(e.to_string()))?;
        // Audited first: should a step fail now, the log says the reload was attempted.
        let touches = |section: &str| keys.iter().any(|k| k.starts_with(section));
        if ["limits", "tiers", "degradation", "breakers"]
            .iter()
            .any(|s| touches(s))
        {
            self.node.reconfigure(new.pipeline().live())?;
        }
        if touches("log.level") {
            self.log.set(LogControl::parse(&new.log.level)?)?;
        }
        if let Some(cert) = cert {
            self.cert.install(cert);
        }
        info!(%actor, keys = ?keys, audit_seq = entry.seq, "configuration reloaded");
        *current = new;
        Ok(Reloaded {
            applied: keys,
            audit_seq: entry.seq,
        })
    }

    /// Everything a reload needs, read and checked before anything is applied.
    fn prepare(
        &self,
        current: &NodeConfig,
        env: Vec<(String, String)>,
    ) -> Result<Prepared, ReloadError> {
        let new = self.source.load(env)?;
        // Refused before the certificate is read: a moved data dir is named as such.
        let changed = changed_keys(current, &new);
        if let Some(key) = changed.iter().find(|key| !is_live(key)) {
            return Err(ReloadError::NeedsRestart { key: key.clone() });
        }
        check_key_files(&new)?;
        let candidate = NodeCert::read(&new.tls_paths())?;
        let rotated = self.cert.differs(&candidate);
        let keys = plan(current, &new, rotated)?;
        new.pipeline().live().validate()?;
        LogControl::parse(&new.log.level)?;
        Ok(Prepared {
            config: new,
            keys,
            cert: rotated.then_some(candidate),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> NodeConfig {
        NodeConfig::from_file_bytes(text.as_bytes()).unwrap()
    }

    #[test]
    fn live_keys_are_those_under_a_live_prefix() {
        for key in [
            "limits.per_user_burst",
            "log.level",
            "tiers.batch.weight",
            "degradation.dwell_ms",
            "breakers.store.open_timeout_ms",
            "tls.cert",
            "tls.key",
        ] {
            assert!(is_live(key), "{key}");
        }
        for key in [
            "listen",
            "log.format",
            "limitsx",
            "tls.ca_cert",
            "edge.max_connections",
            "validation.mode",
            "partitions",
        ] {
            assert!(!is_live(key), "{key}");
        }
    }

    #[test]
    fn a_reload_of_live_keys_lists_them_in_key_order() {
        let old = config("");
        let new = config(
            "[log]\nlevel = \"debug\"\n[limits]\nper_user_burst = 5\n[tiers.batch]\nweight = 2\n",
        );
        assert_eq!(
            plan(&old, &new, false).unwrap(),
            vec!["limits.per_user_burst", "log.level", "tiers.batch.weight"]
        );
        assert_eq!(plan(&old, &old, false).unwrap(), Vec::<String>::new());
        assert_eq!(plan(&old, &old, true).unwrap(), vec![ROTATED_CERT_KEY]);
    }

    #[test]
    fn a_reload_that_changes_anything_else_names_the_first_such_key() {
        let old = config("");
        let cases: &[(&str, &str)] = &[
            (
                "listen = \"127.0.0.1:7500\"\n[limits]\nper_user_burst = 5",
                "listen",
            ),
            ("[edge]\nmax_connections = 500", "edge.max_connections"),
            ("[log]\nformat = \"json\"", "log.format"),
            ("[validation]\nmode = \"research\"", "validation.mode"),
            (
                "[enrichment]\nurl = \"http://127.0.0.1:9/x\"",
                "enrichment.url",
            ),
        ];
        for (text, key) in cases {
            match plan(&old, &config(text), false) {
                Err(ReloadError::NeedsRestart { key: got }) => assert_eq!(&got, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let err = plan(&old, &config("listen = \"127.0.0.1:7500\""), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "listen cannot change without a restart; nothing was applied"
        );
    }
}
