//! The environment overlay: every setting has a variable, `CHORUS_` + its key path in
//! upper case with `.` as `_` (`log.level` is `CHORUS_LOG_LEVEL`, `tiers.batch.weight`
//! is `CHORUS_TIERS_BATCH_WEIGHT`). The keys and their types are found by walking the
//! serialized config with every optional key given a value ([`template`]), so a new
//! setting has its variable without anyone listing it. Only arrays of tables
//! (`validation.rules`) have none: a rule is more than one value.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use chorus_actors::validation::{Mode, ValidationConfig};

use super::{
    ClusterSection, ConfigError, ControlSection, DurabilityMode, EnrichmentSection, LogFormat,
    LogSection, MetricsSection, NodeConfig, TlsSection,
};
use crate::cluster::membership::GossipSettings;

/// What a variable's text is read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Taken as it is.
    Str,
    /// A whole number, or a number with a unit (`30s`, `64KiB`) for a key that takes one.
    Int,
    /// A decimal number.
    Float,
    /// `true`/`false` (also `1`/`0`).
    Bool,
    /// Values separated by commas, each of the element kind.
    List(ListOf),
}

/// The kind of a list's elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListOf {
    /// Strings (addresses, words).
    Str,
    /// Whole numbers.
    Int,
}

/// One setting the environment may override.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvKey {
    /// The TOML key path, e.g. `log.level`.
    pub path: String,
    /// The variable, e.g. `CHORUS_LOG_LEVEL`.
    pub name: String,
    /// How the variable's text is read.
    pub kind: Kind,
}

/// The environment variable that overrides a key path.
pub fn env_name(key: &str) -> String {
    format!("CHORUS_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// The default config with every optional setting given a value, so that serializing
/// it shows every key. A new optional field left out here fails a test (which asks
/// serde for every field each table accepts), rather than going without a variable.
pub fn template() -> NodeConfig {
    let path = PathBuf::from("/template");
    let addr = SocketAddr::from(([127, 0, 0, 2], 1));
    NodeConfig {
        node_id: "template".into(),
        data_dir: path.clone(),
        listen: addr,
        durability: DurabilityMode::Flush,
        tls: TlsSection {
            ca_cert: Some(path.clone()),
            cert: Some(path.clone()),
            key: Some(path.clone()),
        },
        log: LogSection {
            format: LogFormat::Json,
            level: "debug".into(),
        },
        control: ControlSection {
            socket: Some(path.clone()),
        },
        metrics: MetricsSection {
            listen: addr,
            ..MetricsSection::default()
        },
        enrichment: EnrichmentSection {
            url: Some("http://template/".into()),
            ..EnrichmentSection::default()
        },
        cluster: Some(ClusterSection {
            gossip_listen: addr,
            gossip_advertise: Some(addr),
            advertise: Some(addr),
            seeds: vec![addr],
            key_file: path,
            forward_timeout_ms: 2_000,
            replication_factor: 3,
            write_quorum: Some(2),
            commit_timeout_ms: 5_000,
            down_grace_ms: 300_000,
            anti_entropy_interval_ms: 200,
            handoff_bytes_per_sec: 0,
            shipments_in_flight: 4,
            gossip: GossipSettings {
                suspect_to_down_ms: Some(4_000),
                ..GossipSettings::default()
            },
        }),
        validation: ValidationConfig {
            mode: Mode::Research,
            accept_at: Some(0.7),
            reject_below: Some(0.3),
            ..ValidationConfig::default()
        },
        ..NodeConfig::default()
    }
}

/// Every setting the environment may override, in key order, and the key paths that
/// have no variable (arrays of tables).
pub fn keys() -> (Vec<EnvKey>, Vec<String>) {
    let mut keys = Vec::new();
    let mut excluded = Vec::new();
    // The template is plain data: it always serializes.
    if let Ok(toml::Value::Table(table)) = toml::Value::try_from(template()) {
        walk(&table, "", &mut keys, &mut excluded);
    }
    (keys, excluded)
}

fn walk(table: &toml::Table, prefix: &str, keys: &mut Vec<EnvKey>, excluded: &mut Vec<String>) {
    for (name, value) in table {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let kind = match value {
            toml::Value::Table(inner) => {
                walk(inner, &path, keys, excluded);
                continue;
            }
            toml::Value::Array(items) if items.iter().any(toml::Value::is_table) => {
                excluded.push(path);
                continue;
            }
            toml::Value::Array(items) => Kind::List(match items.first() {
                Some(toml::Value::Integer(_)) => ListOf::Int,
                _ => ListOf::Str,
            }),
            toml::Value::Integer(_) => Kind::Int,
            toml::Value::Float(_) => Kind::Float,
            toml::Value::Boolean(_) => Kind::Bool,
            toml::Value::String(_) | toml::Value::Datetime(_) => Kind::Str,
        };
        keys.push(EnvKey {
            name: env_name(&path),
            path,
            kind,
        });
    }
}

/// Sets in `table` every key whose variable `env` holds; a value that cannot be read
/// as its key's kind names the variable.
pub fn overlay(table: &mut toml::Table, env: &HashMap<String, String>) -> Result<(), ConfigError> {
    for key in keys().0 {
        if let Some(raw) = env.get(&key.name) {
            let value = read(&key, raw)?;
            set_path(table, &key.path, value);
        }
    }
    Ok(())
}

/// A variable's text as the TOML value of its key.
fn read(key: &EnvKey, raw: &str) -> Result<toml::Value, ConfigError> {
    let refuse = |what: &str| ConfigError::new(&key.name, format!("{raw:?} is not {what}"));
    let int = |text: &str| -> Result<toml::Value, ConfigError> {
        let text = text.trim();
        match text.parse::<i64>() {
            Ok(n) => Ok(toml::Value::Integer(n)),
            // A number with a unit: the key's deserializer converts or refuses it.
            Err(_) if text.starts_with(|c: char| c.is_ascii_digit()) => {
                Ok(toml::Value::String(text.to_string()))
            }
            Err(_) => Err(refuse("an integer")),
        }
    };
    Ok(match key.kind {
        Kind::Str => toml::Value::String(raw.to_string()),
        Kind::Int => int(raw)?,
        Kind::Float => {
            toml::Value::Float(raw.trim().parse().map_err(|_| refuse("a decimal number"))?)
        }
        Kind::Bool => toml::Value::Boolean(parse_bool(raw).ok_or_else(|| refuse("true or false"))?),
        Kind::List(of) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| match of {
                    ListOf::Str => Ok(toml::Value::String(item.to_string())),
                    ListOf::Int => int(item),
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Sets `key` (a dotted path) in `table`, making the tables on the way.
pub(crate) fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        Some((section, rest)) => {
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(inner) = entry {
                set_path(inner, rest, value);
            }
        }
        None => {
            table.insert(key.to_string(), value);
        }
    }
}

/// The value at `key` (a dotted path) in `table`.
#[cfg(test)]
pub(crate) fn get_path<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    match key.split_once('.') {
        Some((section, rest)) => get_path(table.get(section)?.as_table()?, rest),
        None => table.get(key),
    }
}

/// Removes `key` (a dotted path) from `table`.
#[cfg(test)]
fn remove_path(table: &mut toml::Table, key: &str) {
    match key.split_once('.') {
        Some((section, rest)) => {
            if let Some(toml::Value::Table(inner)) = table.get_mut(section) {
                remove_path(inner, rest);
            }
        }
        None => {
            table.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template_table() -> toml::Table {
        match toml::Value::try_from(template()).unwrap() {
            toml::Value::Table(table) => table,
            other => panic!("not a table: {other:?}"),
        }
    }

    /// A value of the same kind as `value` that differs from it, and its text.
    fn changed(kind: Kind, value: &toml::Value) -> (String, toml::Value) {
        match (kind, value) {
            (Kind::Int, toml::Value::Integer(n)) => {
                (format!("{}", n + 1), toml::Value::Integer(n + 1))
            }
            (Kind::Bool, toml::Value::Boolean(b)) => (format!("{}", !b), toml::Value::Boolean(!b)),
            (Kind::Float, toml::Value::Float(x)) => {
                (format!("{}", x + 0.25), toml::Value::Float(x + 0.25))
            }
            (Kind::List(_), toml::Value::Array(items)) => {
                let mut more = items.clone();
                more.extend(items.first().cloned());
                let text = more
                    .iter()
                    .map(|v| match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                (text, toml::Value::Array(more))
            }
            (Kind::Str, toml::Value::String(s)) => (s.clone(), value.clone()),
            other => panic!("a {other:?} leaf"),
        }
    }

    fn same(a: &toml::Value, b: &toml::Value) -> bool {
        match (a, b) {
            (toml::Value::Float(x), toml::Value::Float(y)) => (x - y).abs() < 1e-6,
            _ => a == b,
        }
    }

    #[test]
    fn every_leaf_key_has_a_variable_that_is_honoured() {
        let template = template_table();
        let defaults = match toml::Value::try_from(NodeConfig::default()).unwrap() {
            toml::Value::Table(table) => table,
            other => panic!("not a table: {other:?}"),
        };
        let (keys, excluded) = keys();
        assert!(keys.len() > 120, "{} keys", keys.len());
        assert_eq!(excluded, vec!["validation.rules".to_string()]);
        for key in &keys {
            let value = get_path(&template, &key.path).unwrap();
            let (text, want) = changed(key.kind, value);
            // Without the key in the table the config would hold its default; with the
            // variable set it must hold the variable's value.
            let mut table = template.clone();
            remove_path(&mut table, &key.path);
            let env = HashMap::from([(key.name.clone(), text.clone())]);
            overlay(&mut table, &env).unwrap();
            let config: NodeConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
                .unwrap_or_else(|e| panic!("{} = {text:?}: {e}", key.name));
            let toml::Value::Table(back) = toml::Value::try_from(config).unwrap() else {
                panic!("not a table");
            };
            let got = get_path(&back, &key.path).unwrap();
            assert!(same(got, &want), "{}: {got:?} != {want:?}", key.name);
            if key.kind == Kind::Str
                && let Some(default) = get_path(&defaults, &key.path)
            {
                assert_ne!(default, &want, "{}: the template must differ", key.path);
            }
        }
    }

    /// The table paths of `table`, itself (`""`) included.
    fn table_paths(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        out.push(prefix.to_string());
        for (name, value) in table {
            if let toml::Value::Table(inner) = value {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                table_paths(inner, &path, out);
            }
        }
    }

    #[test]
    fn the_template_gives_every_field_a_value() {
        // Serde names every field a table accepts when it meets one it does not: each
        // must be a key with a variable, a table, or an array of tables.
        let template = template_table();
        let (keys, excluded) = keys();
        let mut tables = Vec::new();
        table_paths(&template, "", &mut tables);
        let known = |path: &str| {
            keys.iter().any(|k| k.path == path)
                || tables.iter().any(|t| t == path)
                || excluded.iter().any(|e| e == path)
        };
        for table in &tables {
            let mut probe = template.clone();
            let bogus = if table.is_empty() {
                "zz_unknown".to_string()
            } else {
                format!("{table}.zz_unknown")
            };
            set_path(&mut probe, &bogus, toml::Value::Integer(1));
            let err = serde_path_to_error::deserialize::<_, NodeConfig>(toml::Value::Table(probe))
                .expect_err(&bogus)
                .into_inner()
                .to_string();
            let (_, fields) = err
                .split_once("expected")
                .unwrap_or_else(|| panic!("{bogus}: {err}"));
            // The first line lists the fields; a second may name the table.
            let fields = fields.lines().next().unwrap_or_default();
            let names: Vec<&str> = fields.split('`').skip(1).step_by(2).collect();
            assert!(!names.is_empty(), "{bogus}: {err}");
            for name in names {
                let path = if table.is_empty() {
                    name.to_string()
                } else {
                    format!("{table}.{name}")
                };
                assert!(known(&path), "{path} has no value in the template: {err}");
            }
        }
    }

    #[test]
    fn every_section_is_covered_and_names_are_unique() {
        let (keys, _) = keys();
        let mut names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "two keys share a variable");
        for sample in [
            "CHORUS_LISTEN",
            "CHORUS_LOG_LEVEL",
            "CHORUS_EDGE_FRAME_TIMEOUT_MS",
            "CHORUS_TIERS_REALTIME_WEIGHT",
            "CHORUS_DEGRADATION_SHED_OPTIONAL_AT",
            "CHORUS_BREAKERS_STORE_OPEN_TIMEOUT_MS",
            "CHORUS_CLUSTER_SEEDS",
            "CHORUS_CLUSTER_GOSSIP_PROBE_PERIOD_MS",
            "CHORUS_VALIDATION_MODE",
            "CHORUS_VALIDATION_WEIGHTS_FAIR",
            "CHORUS_TLS_CA_CERT",
        ] {
            assert!(names.contains(&sample), "{sample}");
        }
    }

    #[test]
    fn a_variable_takes_a_unit_where_its_key_does() {
        let key = |path: &str| keys().0.into_iter().find(|k| k.path == path).unwrap();
        assert_eq!(
            read(&key("idle_timeout_secs"), "5m").unwrap(),
            toml::Value::String("5m".into())
        );
        assert_eq!(
            read(&key("partitions"), " 64 ").unwrap(),
            toml::Value::Integer(64)
        );
        assert_eq!(
            read(&key("partitions"), "many").unwrap_err().key,
            "CHORUS_PARTITIONS"
        );
        assert_eq!(
            read(&key("cluster.seeds"), "10.0.0.1:7401, 10.0.0.2:7401").unwrap(),
            toml::Value::Array(vec![
                toml::Value::String("10.0.0.1:7401".into()),
                toml::Value::String("10.0.0.2:7401".into()),
            ])
        );
    }
}
