//! Owns the simulated cluster network: a bridge in a "switch" namespace and one namespace per host
//! (pod, Service, client), each with its own address and an `/etc/netns/<ns>/hosts` that maps the
//! DNS names the rendered objects use; and partitions of one host with nftables.
//! Must not touch the machine's own (root) namespace: veth ends are created directly inside the
//! namespaces, and addresses come from TEST-NET-2 (198.51.100.0/24) with no default route.
//! Invariant: `Drop` deletes every namespace and hosts file this value created.
//! See `pod` for what runs inside a host namespace.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// Runs a command and fails with its output when it does not succeed.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("spawn {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args))
}

/// One host on the simulated network.
#[derive(Clone, Debug)]
pub struct Host {
    /// Network namespace name (also the `/etc/netns` folder).
    pub netns: String,
    /// The host's interface inside its namespace.
    pub iface: String,
    pub addr: Ipv4Addr,
}

impl Host {
    /// A command run inside this host's namespace (with its `/etc/hosts`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, program]);
        c
    }
}

/// A bridge and the hosts attached to it.
pub struct Network {
    prefix: String,
    switch: String,
    hosts: Vec<Host>,
    names: BTreeMap<String, Ipv4Addr>,
}

impl Network {
    /// Creates the switch namespace and its bridge. `prefix` keeps parallel runs apart; it must be
    /// short (interface names are limited to 15 bytes).
    pub fn create(prefix: &str) -> Result<Network> {
        if !nix_is_root() {
            bail!("the pod simulation needs root (network namespaces, bind mounts)");
        }
        let switch = format!("{prefix}sw");
        // A namespace left by a killed earlier run with the same prefix would make `add` fail.
        let _ = ip(&["netns", "del", &switch]);
        ip(&["netns", "add", &switch])?;
        let net = Network {
            prefix: prefix.to_string(),
            switch: switch.clone(),
            hosts: Vec::new(),
            names: BTreeMap::new(),
        };
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        Ok(net)
    }

    /// Adds a host namespace named `<prefix><short>` with address 198.51.100.`octet`.
    pub fn add_host(&mut self, short: &str, octet: u8) -> Result<Host> {
        let netns = format!("{}{short}", self.prefix);
        let _ = ip(&["netns", "del", &netns]);
        let _ = std::fs::remove_dir_all(hosts_dir(&netns));
        ip(&["netns", "add", &netns])?;
        let iface = format!("{}{short}h", self.prefix);
        let port = format!("{}{short}s", self.prefix);
        let host = Host {
            netns: netns.clone(),
            iface: iface.clone(),
            addr: Ipv4Addr::new(198, 51, 100, octet),
        };
        self.hosts.push(host.clone());
        // Both veth ends are born inside their namespaces: the root namespace never sees them.
        ip(&[
            "link",
            "add",
            "name",
            &iface,
            "netns",
            &netns,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.switch,
        ])?;
        ip(&["-n", &self.switch, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &self.switch, "link", "set", &port, "up"])?;
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{}/24", host.addr),
            "dev",
            &iface,
        ])?;
        ip(&["-n", &netns, "link", "set", &iface, "up"])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// Maps `name` to `addr` in every host's `/etc/hosts` (call `write_hosts` after changes).
    pub fn map_name(&mut self, name: &str, addr: Ipv4Addr) {
        self.names.insert(name.to_string(), addr);
    }

    /// Writes `/etc/netns/<ns>/hosts` for every host: localhost plus every mapped name.
    pub fn write_hosts(&self) -> Result<()> {
        let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
        for (name, addr) in &self.names {
            text.push_str(&format!("{addr}\t{name}\n"));
        }
        for h in &self.hosts {
            let dir = hosts_dir(&h.netns);
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            std::fs::write(dir.join("hosts"), &text)?;
        }
        Ok(())
    }

    /// Cuts `host` off the network in both directions (its loopback keeps working).
    pub fn partition(&self, host: &Host) -> Result<()> {
        let rules = format!(
            "table inet hae2e {{\n chain in {{ type filter hook input priority 0; iifname \"{0}\" drop; }}\n chain out {{ type filter hook output priority 0; oifname \"{0}\" drop; }}\n}}\n",
            host.iface
        );
        let mut child = host
            .command("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .context("spawn nft")?;
        use std::io::Write as _;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(rules.as_bytes())?;
        let status = child.wait()?;
        if !status.success() {
            bail!("nft partition of {} failed: {status}", host.netns);
        }
        Ok(())
    }

    /// Undoes `partition`.
    pub fn heal(&self, host: &Host) -> Result<()> {
        run(host
            .command("nft")
            .args(["delete", "table", "inet", "hae2e"]))?;
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.netns]);
            let _ = std::fs::remove_dir_all(hosts_dir(&h.netns));
        }
        let _ = ip(&["netns", "del", &self.switch]);
    }
}

fn hosts_dir(netns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(netns)
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
