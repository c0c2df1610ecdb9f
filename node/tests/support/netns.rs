//! A network of Linux network namespaces for tests that cut links between real
//! `chorus agent` processes.
//!
//! Each host is a namespace with one veth into a bridge that lives in a hub namespace
//! of its own, so the host's own network is never touched. Two ways to break links:
//!
//! - [`Lab::cut`] moves a host's port to a second bridge: frames between it and every
//!   host left on the first are dropped silently in both directions while both ends keep
//!   their carrier, as when the link to a rack fails; hosts cut off together still reach
//!   each other.
//! - [`Lab::sever`] marks a host's port isolated (the bridge's port isolation): no frame
//!   passes between two severed hosts, while each still reaches every host that is not
//!   severed. Severing exactly two hosts breaks the one link between them.
//!
//! A host can straddle a cut ([`Lab::straddle`]): it gets a second port, into the second
//! bridge, with the same MAC and address as its first, so that hosts on either side
//! reach it without learning anything new. The second port passes frames only while
//! [`Lab::reach_across`] says so; traffic to a cut-off host goes through it.
//!
//! A test process reaches the hosts by joining one of them ([`Lab::enter`]): a thread
//! that has entered a host's namespace creates every socket there, and so does every
//! thread it starts afterwards (a new thread inherits its creator's namespace). A test
//! that keeps a host for its clients, and never cuts or severs it, reaches the nodes
//! through the lab's bridges without an address or route in the host's own namespace. Control sockets are paths in the shared filesystem, so
//! `chorus ctl` reaches every node from anywhere.
//!
//! Needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2. Where namespaces cannot
//! be made, [`Lab::create_or_skip`] says why and the test passes without running,
//! unless `CHORUS_REQUIRE_NETNS=1` is set, which turns that skip into a failure.

use std::io::Read;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Set to `1` to fail instead of skipping when namespaces cannot be made.
pub const REQUIRE_ENV: &str = "CHORUS_REQUIRE_NETNS";

/// Every namespace a lab makes starts with this, followed by the test process's pid.
const NETNS_PREFIX: &str = "chorus-net-";

/// The bridge's /24 is `10.SUBNET_SECOND_OCTET.<pid-derived>.0`. It exists only inside
/// the lab's namespaces, so it cannot clash with the host's routes; an unusual octet
/// keeps `ip addr` listings easy to tell apart all the same.
const SUBNET_SECOND_OCTET: u8 = 213;

/// The longest one `ip` command may take.
const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// The test's network: a bridge in its own namespace and one namespace per host, each
/// joined to the bridge by a veth pair. Dropping it deletes every namespace it made,
/// which deletes the links inside them; drop the processes running in them first.
pub struct Lab {
    hub: String,
    hosts: Vec<Host>,
    /// Namespaces made so far, deleted in reverse on drop.
    made: Vec<String>,
    /// Hosts with a port into the second bridge ([`Lab::straddle`]).
    straddlers: Vec<usize>,
}

/// One host of a [`Lab`].
pub struct Host {
    /// The host's namespace, as `ip netns` names it.
    pub netns: String,
    /// The host's address on the bridge.
    pub ip: Ipv4Addr,
    /// The host's veth end inside the hub namespace (its bridge port).
    port: String,
    /// The MAC address of the host's end (`eth0`), fixed so that a second port can share
    /// it.
    mac: String,
    /// The hub end of the host's second port, if it straddles ([`Lab::straddle`]).
    far_port: String,
}

impl Lab {
    /// Makes one host per suffix (`"a"` gives the namespace `chorus-net-<pid>-a`); where
    /// namespaces cannot be made, prints why `test` is skipped and returns `None`, or
    /// panics if [`REQUIRE_ENV`] is `1`.
    pub fn create_or_skip(suffixes: &[&str], test: &str) -> Option<Lab> {
        match Lab::create(suffixes) {
            Ok(lab) => Some(lab),
            Err(reason) => {
                if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
                    panic!("network namespaces are required ({REQUIRE_ENV}=1): {reason}");
                }
                eprintln!("skipping {test}: {reason}");
                None
            }
        }
    }

    /// Makes the namespaces, the bridges and the veths, one host per suffix; or says
    /// why it cannot.
    pub fn create(suffixes: &[&str]) -> Result<Lab, String> {
        match Command::new("ip").arg("-V").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => return Err(format!("`ip -V` failed: {out:?}")),
            Err(e) => return Err(format!("iproute2's `ip` is not available: {e}")),
        }
        remove_leftovers();
        let pid = std::process::id();
        let prefix = format!("{NETNS_PREFIX}{pid}-");
        let subnet = [10, SUBNET_SECOND_OCTET, (pid % 250) as u8 + 1];
        let mut lab = Lab {
            hub: format!("{prefix}hub"),
            hosts: suffixes
                .iter()
                .zip(1u8..)
                .map(|(suffix, n)| Host {
                    netns: format!("{prefix}{suffix}"),
                    port: format!("pt-{suffix}"),
                    ip: Ipv4Addr::new(subnet[0], subnet[1], subnet[2], n),
                    // Locally administered, unique on the lab's bridges.
                    mac: format!("02:cb:00:00:00:{n:02x}"),
                    far_port: format!("px-{suffix}"),
                })
                .collect(),
            made: Vec::new(),
            straddlers: Vec::new(),
        };
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<(), String> {
        let hub = self.hub.clone();
        ip(&["netns", "add", &hub])?;
        self.made.push(hub.clone());
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        ip(&["-n", &hub, "link", "add", "br1", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br1", "up"])?;
        for i in 0..self.hosts.len() {
            let host = &self.hosts[i];
            let (netns, port, mac) = (host.netns.clone(), host.port.clone(), host.mac.clone());
            let cidr = format!("{}/24", host.ip);
            ip(&["netns", "add", &netns])?;
            self.made.push(netns.clone());
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "address", &mac, "netns", &netns,
            ])?;
            ip(&["-n", &netns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
        }
        Ok(())
    }

    /// The hosts, in the order of the suffixes they were made from.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Moves host `i`'s port to the second bridge: nothing passes between it and the
    /// hosts left on the first, both ends of its veth stay up, and hosts cut off
    /// together still reach each other. Straddling hosts send to it through their
    /// second port from now on.
    pub fn cut(&self, i: usize) {
        self.hub_link(&self.hosts[i].port, &["master", "br1"]);
        self.route_from_straddlers(i, "eth1");
    }

    /// Attaches host `i`'s port to the first bridge again.
    pub fn heal(&self, i: usize) {
        self.hub_link(&self.hosts[i].port, &["master", "br0"]);
        self.route_from_straddlers(i, "eth0");
    }

    /// Sends what straddling hosts address to host `i` out of their `dev`.
    fn route_from_straddlers(&self, i: usize, dev: &str) {
        let to = format!("{}/32", self.hosts[i].ip);
        for &s in &self.straddlers {
            let netns = &self.hosts[s].netns;
            ip(&["-n", netns, "route", "replace", &to, "dev", dev]).unwrap();
        }
    }

    /// Gives host `s` a second port (`eth1`), into the second bridge, with the MAC and
    /// address of its first: hosts cut off see the same host as those left behind. The
    /// port passes nothing until [`Lab::reach_across`] opens it.
    pub fn straddle(&mut self, s: usize) -> Result<(), String> {
        let Host {
            netns,
            ip: addr,
            mac,
            far_port,
            ..
        } = &self.hosts[s];
        let hub = &self.hub;
        ip(&[
            "-n", hub, "link", "add", far_port, "type", "veth", "peer", "name", "eth1", "address",
            mac, "netns", netns,
        ])?;
        // A /32: the host keeps its one route to the subnet, through `eth0`.
        let address = format!("{addr}/32");
        ip(&["-n", netns, "addr", "add", &address, "dev", "eth1"])?;
        ip(&["-n", netns, "link", "set", "eth1", "up"])?;
        ip(&["-n", hub, "link", "set", far_port, "master", "br1", "down"])?;
        self.straddlers.push(s);
        Ok(())
    }

    /// Opens (or closes) straddling host `s`'s second port: while open, it reaches the
    /// hosts that are cut off as well as those that are not; while closed, frames to and
    /// from the cut-off hosts are dropped silently.
    pub fn reach_across(&self, s: usize, open: bool) {
        let state = if open { "up" } else { "down" };
        self.hub_link(&self.hosts[s].far_port, &[state]);
    }

    /// Isolates host `i`'s port: no frame passes between it and another severed host,
    /// while it still reaches every host that is not severed.
    pub fn sever(&self, i: usize) {
        self.hub_link(
            &self.hosts[i].port,
            &["type", "bridge_slave", "isolated", "on"],
        );
    }

    /// Lifts [`Lab::sever`] from host `i`'s port.
    pub fn mend(&self, i: usize) {
        self.hub_link(
            &self.hosts[i].port,
            &["type", "bridge_slave", "isolated", "off"],
        );
    }

    /// `ip -n <hub> link set PORT SETTINGS`, which must succeed.
    fn hub_link(&self, port: &str, settings: &[&str]) {
        let mut args = vec!["-n", &self.hub, "link", "set", port];
        args.extend_from_slice(settings);
        ip(&args).unwrap();
    }

    /// Moves the calling thread into host `i`'s namespace: every socket it creates from
    /// now on lives there, as does every thread it starts (a tokio runtime built
    /// afterwards runs all its workers there). Other threads of the process stay put.
    pub fn enter(&self, i: usize) -> Result<(), String> {
        let path = Path::new("/var/run/netns").join(&self.hosts[i].netns);
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: `setns` only reads the descriptor, which `file` keeps open for the call,
        // and changes the namespace of the calling thread alone; no memory is shared.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc == 0 {
            Ok(())
        } else {
            Err(format!(
                "setns {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ))
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for netns in self.made.iter().rev() {
            if let Err(e) = ip(&["netns", "delete", netns]) {
                eprintln!("could not delete namespace {netns}: {e}");
            }
        }
    }
}

/// `ip netns exec NETNS PROGRAM`: runs `program` inside the namespace. `ip netns exec`
/// execs the program in place, so the child is the program itself and a signal to the
/// child reaches it.
pub fn command_in(netns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns]).arg(program);
    command
}

/// Deletes namespaces of earlier runs that were killed before they could clean up (their
/// pid no longer exists), after killing the processes those runs left in them.
fn remove_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(netns) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = netns.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if pid.parse::<u32>().is_err() || Path::new("/proc").join(pid).exists() {
            continue;
        }
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", netns]).output() {
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = ip(&["netns", "delete", netns]);
    }
}

/// Runs `ip ARGS`; an error carries its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let mut command = Command::new("ip");
    command.args(args);
    let out =
        run_bounded(command, IP_TIMEOUT).map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `command` with its output captured, killing it after `limit`. The commands run
/// this way print a few kilobytes at most, well within a pipe's buffer, so reading after
/// exit cannot deadlock.
pub fn run_bounded(mut command: Command, limit: Duration) -> Result<Output, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no answer within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}
