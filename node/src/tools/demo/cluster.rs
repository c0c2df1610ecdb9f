//! A local cluster of `chorus agent` child processes in a temporary directory: its
//! certificates, its config files, starting, killing and restarting its members, and
//! asking each one over its control socket what it sees.
//!
//! Dropping a [`LocalCluster`] kills every child still running and removes the
//! directory (unless it is kept), so every exit path of the demo cleans up.

use std::fs::{File, OpenOptions};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chorus_client::{Client, ClientConfig, Credentials};

use crate::cluster::certs;
use crate::config::{admin_key_path, default_control_socket};
use crate::control::protocol::{MemberRow, Reply, Request, RingReport};
use crate::tools::ctl::exchange;

/// Partitions of the demo cluster (as in `cluster-config/local-3`).
const PARTITIONS: u16 = 1024;

/// Gossip timings for three nodes on loopback: a probe every 300 ms and a suspect
/// declared down after 1 s (up to 3 s when nobody confirms it), so a crash is detected
/// within a couple of seconds, where a LAN default would take several.
const GOSSIP_SETTINGS: &str = "\
expected_cluster_size = 3
probe_period_ms = 300
probe_rtt_ms = 100
suspect_to_down_ms = 1000
suspicion_max_multiplier = 3
periodic_gossip_ms = 100
";

/// Longest a request forwarded between members may take, in milliseconds: short, so
/// that a request for a dead owner fails fast instead of holding a worker.
const FORWARD_TIMEOUT_MS: u64 = 1_000;

/// Why the local cluster could not be set up or asked.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A file or directory of the cluster could not be made or read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The certificates could not be made.
    #[error(transparent)]
    Certs(#[from] certs::CertsError),
    /// No free port could be found, or `--base-port` leaves no room.
    #[error("no free port: {0}")]
    Ports(String),
    /// A member's process could not be started.
    #[error("starting {node}: {source}")]
    Spawn {
        /// The member.
        node: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A member's control socket did not answer as expected.
    #[error("asking {node}: {reason}")]
    Control {
        /// The member.
        node: String,
        /// What went wrong.
        reason: String,
    },
    /// The SDK could not connect.
    #[error("connecting the client: {0}")]
    Client(#[from] chorus_client::ClientError),
}

/// One member of the local cluster.
#[derive(Debug)]
pub struct Member {
    /// Its node id (`node-1` ...).
    pub name: String,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its gossip address.
    pub gossip: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// Its log file (stdout and stderr of every run).
    pub log: PathBuf,
    /// The running process, if any.
    child: Option<Child>,
}

/// A local cluster of child processes of this executable.
#[derive(Debug)]
pub struct LocalCluster {
    /// The temporary directory holding everything.
    pub dir: PathBuf,
    /// The members, `node-1` first.
    pub members: Vec<Member>,
    /// Whether to leave the directory behind.
    keep: bool,
    /// The executable started as `chorus agent`.
    exe: PathBuf,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A port free on `ip` for UDP when asked (the agent binds it right after).
fn free_udp_port(ip: IpAddr) -> Result<u16, ClusterError> {
    UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| ClusterError::Ports(format!("{ip}: {e}")))
}

/// The QUIC and gossip addresses of member `index` (0-based): `127.0.0.(index+1)`, on
/// `base_port` and `base_port + 1` if given, else on ports free now.
pub fn member_addrs(
    index: usize,
    base_port: Option<u16>,
) -> Result<(SocketAddr, SocketAddr), ClusterError> {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, index as u8 + 1));
    match base_port {
        Some(port) => {
            let gossip = port
                .checked_add(1)
                .ok_or_else(|| ClusterError::Ports(format!("--base-port {port} is too high")))?;
            Ok((SocketAddr::new(ip, port), SocketAddr::new(ip, gossip)))
        }
        None => Ok((
            SocketAddr::new(ip, free_udp_port(ip)?),
            SocketAddr::new(ip, free_udp_port(ip)?),
        )),
    }
}

/// The config file of one member: its addresses, certificates, the cluster key, every
/// member as a seed and loopback gossip timings.
pub fn member_config(dir: &Path, member: &Member, seeds: &[SocketAddr]) -> String {
    let certs = dir.join("certs");
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "node_id = \"{name}\"\n\
         data_dir = {data_dir:?}\n\
         listen = \"{addr}\"\n\
         partitions = {PARTITIONS}\n\
         \n\
         [log]\n\
         level = \"info\"\n\
         \n\
         [tls]\n\
         ca_cert = {ca:?}\n\
         cert = {cert:?}\n\
         key = {key:?}\n\
         \n\
         [metrics]\n\
         listen = \"{ip}:0\"\n\
         \n\
         [cluster]\n\
         gossip_listen = \"{gossip}\"\n\
         seeds = [{seeds}]\n\
         key_file = {cluster_key:?}\n\
         forward_timeout_ms = {FORWARD_TIMEOUT_MS}\n\
         \n\
         [cluster.gossip]\n\
         {GOSSIP_SETTINGS}",
        name = member.name,
        data_dir = member.data_dir.display().to_string(),
        addr = member.addr,
        ca = certs.join("ca.pem").display().to_string(),
        cert = certs
            .join(format!("{}.pem", member.name))
            .display()
            .to_string(),
        key = certs
            .join(format!("{}.key", member.name))
            .display()
            .to_string(),
        ip = member.addr.ip(),
        gossip = member.gossip,
        seeds = seeds.join(", "),
        cluster_key = certs.join("cluster.key").display().to_string(),
    )
}

impl LocalCluster {
    /// Makes the directory, the certificates and a config file for each of `nodes`
    /// members; starts nothing.
    pub fn create(
        nodes: usize,
        base_port: Option<u16>,
        keep: bool,
    ) -> Result<LocalCluster, ClusterError> {
        let exe = std::env::current_exe().map_err(io_error(Path::new("current executable")))?;
        let dir = std::env::temp_dir().join(format!(
            "chorus-demo-{}-{}",
            std::process::id(),
            ulid::Ulid::new().to_string().to_lowercase()
        ));
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        // From here on, Drop removes the directory whatever fails.
        let mut cluster = LocalCluster {
            dir,
            members: Vec::with_capacity(nodes),
            keep,
            exe,
        };
        let certs_dir = cluster.dir.join("certs");
        certs::init(&certs_dir)?;
        for index in 0..nodes {
            let name = format!("node-{}", index + 1);
            let (addr, gossip) = member_addrs(index, base_port)?;
            certs::issue_node(&certs_dir, &name, &[addr.ip()], &[])?;
            cluster.members.push(Member {
                data_dir: cluster.dir.join(&name),
                config: cluster.dir.join(format!("{name}.toml")),
                log: cluster.dir.join(format!("{name}.log")),
                name,
                addr,
                gossip,
                child: None,
            });
        }
        let seeds: Vec<SocketAddr> = cluster.members.iter().map(|m| m.gossip).collect();
        for member in &cluster.members {
            let text = member_config(&cluster.dir, member, &seeds);
            std::fs::write(&member.config, text).map_err(io_error(&member.config))?;
        }
        Ok(cluster)
    }

    /// Starts member `index` as `chorus agent --config ...`, its output appended to its
    /// log file.
    pub fn start(&mut self, index: usize) -> Result<(), ClusterError> {
        let exe = self.exe.clone();
        let member = &mut self.members[index];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .map_err(io_error(&member.log))?;
        let err_log: File = log.try_clone().map_err(io_error(&member.log))?;
        let child = Command::new(exe)
            .arg("agent")
            .arg("--config")
            .arg(&member.config)
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| !k.starts_with("CHORUS_")))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|source| ClusterError::Spawn {
                node: member.name.clone(),
                source,
            })?;
        member.child = Some(child);
        Ok(())
    }

    /// SIGKILLs member `index` and reaps it.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether member `index` exited on its own; `Some(status)` if so.
    pub fn exited(&mut self, index: usize) -> Option<std::process::ExitStatus> {
        self.members[index]
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The members whose processes are running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some())
            .collect()
    }

    /// What member `index` sees of the cluster's membership.
    pub async fn members_seen_by(&self, index: usize) -> Result<Vec<MemberRow>, ClusterError> {
        match self.ask(index, &Request::Members).await? {
            Reply::Members { members } => Ok(members),
            other => Err(self.unexpected(index, &other)),
        }
    }

    /// What member `index` sees of the ring.
    pub async fn ring_seen_by(&self, index: usize) -> Result<RingReport, ClusterError> {
        match self.ask(index, &Request::Ring { user: None }).await? {
            Reply::Ring(ring) => Ok(ring),
            other => Err(self.unexpected(index, &other)),
        }
    }

    async fn ask(&self, index: usize, request: &Request) -> Result<Reply, ClusterError> {
        let member = &self.members[index];
        let control = |reason: String| ClusterError::Control {
            node: member.name.clone(),
            reason,
        };
        let socket = default_control_socket(&member.data_dir);
        let response = exchange(&socket, request)
            .await
            .map_err(|e| control(e.to_string()))?;
        response.into_result().map_err(|e| control(e.to_string()))
    }

    fn unexpected(&self, index: usize, reply: &Reply) -> ClusterError {
        ClusterError::Control {
            node: self.members[index].name.clone(),
            reason: format!("unexpected reply {reply:?}"),
        }
    }

    /// The admin key member `index` made on its first start, once it has written it.
    pub fn admin_key(&self, index: usize) -> Option<String> {
        let key = std::fs::read_to_string(admin_key_path(&self.members[index].data_dir)).ok()?;
        let key = key.trim();
        (!key.is_empty()).then(|| key.to_string())
    }

    /// An SDK client connected to member `index` with `api_key`, checking its
    /// certificate under the member's name.
    pub async fn client(
        &self,
        index: usize,
        api_key: &str,
        config: ClientConfig,
    ) -> Result<Client, ClusterError> {
        let member = &self.members[index];
        let credentials = Credentials::from_ca_file(self.dir.join("certs/ca.pem"), api_key)?
            .with_server_name(member.name.clone());
        Ok(Client::connect(&[member.addr], credentials, config).await?)
    }

    /// The last `lines` lines of member `index`'s log, for an error report.
    pub fn log_tail(&self, index: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.members[index].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills every member and removes the directory (unless kept); returns the kept
    /// directory.
    pub fn shut_down(mut self) -> Option<PathBuf> {
        self.kill_all();
        if self.keep {
            return Some(self.dir.clone());
        }
        None
    }

    fn kill_all(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.kill_all();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// How often readiness and membership are polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_config_is_a_valid_node_config() {
        let dir = Path::new("/tmp/demo");
        let (addr, gossip) = member_addrs(1, Some(17_400)).unwrap();
        let member = Member {
            name: "node-2".into(),
            addr,
            gossip,
            data_dir: dir.join("node-2"),
            config: dir.join("node-2.toml"),
            log: dir.join("node-2.log"),
            child: None,
        };
        let text = member_config(dir, &member, &[gossip]);
        let file = std::env::temp_dir().join(format!("chorus-demo-config-{}", ulid::Ulid::new()));
        std::fs::write(&file, text).unwrap();
        let config = crate::config::NodeConfig::load(Some(&file), std::iter::empty());
        std::fs::remove_file(&file).unwrap();
        let config = config.unwrap();
        assert_eq!(config.node_id, "node-2");
        assert_eq!(config.listen, "127.0.0.2:17400".parse().unwrap());
        let cluster = config.cluster.unwrap();
        assert_eq!(cluster.gossip_listen, "127.0.0.2:17401".parse().unwrap());
        assert_eq!(cluster.seeds, vec![gossip]);
        assert_eq!(cluster.gossip.probe_period_ms, 300);
    }

    #[test]
    fn a_base_port_at_the_top_of_the_range_is_refused() {
        assert!(member_addrs(0, Some(u16::MAX)).is_err());
    }
}
