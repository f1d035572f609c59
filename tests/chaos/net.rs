//! The chaos suite's hosts: each node, etcd and the proxy get a network namespace of their own,
//! with their own address on a private bridge, so that a partition is a packet filter rule inside
//! one host, exactly as a firewall or a broken switch port would behave.
//!
//! Layout: a bridge in the test's own namespace holds `10.77.<n>.1` (the test itself: workload,
//! probes and observers talk to every host through it); host `i` is `10.77.<n>.<10 + i>` inside
//! namespace `rampart-chaos-<pid>-<n>-<i>`, linked to the bridge by a veth pair. `<n>` is picked
//! so that no address of this machine is in the subnet; nothing is ever routed beyond it.
//!
//! Partitions are `iptables` DROP rules inside the cut host's namespace, naming peer addresses:
//! packets vanish (connections hang until the rule goes, as with a real partition), and the test's
//! own address is never named, so the suite keeps observing every side.
//!
//! Where namespaces cannot be made (not root, no `ip`), every host is 127.0.0.1 and partitions
//! are unavailable; [`Net::partitions`] says so and the schedule leaves those faults out.
//!
//! Everything created is recorded in `<dir>/.harness-netns` before it is created, so that
//! `scripts/reap-test-procs.sh` can remove what a killed run left; [`Net`]'s drop removes it.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One host: its address and, with namespaces, the namespace its processes run in.
#[derive(Clone, Debug)]
pub struct Host {
    pub label: String,
    pub addr: Ipv4Addr,
    /// `/var/run/netns/<name>`; `None` on loopback.
    pub netns: Option<PathBuf>,
    netns_name: Option<String>,
}

/// Which packets a cut drops, seen from the cut host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Both,
    /// Packets the host sends to the peer are dropped (it can still hear the peer).
    Outgoing,
    /// Packets from the peer are dropped (it can still talk, unheard of any answer).
    Incoming,
}

/// The hosts of one chaos run.
#[derive(Debug)]
pub struct Net {
    hosts: Vec<Host>,
    bridge: Option<String>,
    /// `10.77.<n>.0/24`, or `127.0.0.1/32` on loopback.
    pub cidr: String,
    /// Why namespaces are not used, on loopback.
    pub fallback_reason: Option<String>,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new("ip").args(args))
}

impl Net {
    /// One namespace per label, or loopback addresses when namespaces cannot be made.
    pub fn create(dir: &Path, labels: &[&str]) -> Net {
        if !nix::unistd::geteuid().is_root() {
            return Net::loopback(labels, "not running as root".into());
        }
        match Net::namespaces(dir, labels) {
            Ok(net) => net,
            Err(e) => Net::loopback(labels, e),
        }
    }

    fn loopback(labels: &[&str], why: String) -> Net {
        let hosts = labels
            .iter()
            .map(|l| Host { label: l.to_string(), addr: Ipv4Addr::LOCALHOST, netns: None, netns_name: None })
            .collect();
        Net { hosts, bridge: None, cidr: "127.0.0.1/32".into(), fallback_reason: Some(why) }
    }

    fn namespaces(dir: &Path, labels: &[&str]) -> Result<Net, String> {
        let used = String::from_utf8_lossy(
            &Command::new("ip").args(["-4", "-o", "addr"]).output().map_err(|e| format!("ip: {e}"))?.stdout,
        )
        .into_owned();
        let pid = std::process::id();
        let n = (0..200)
            .map(|k| 16 + ((pid as u64 + k + crate::support::random_u64() % 7) % 230) as u8)
            .find(|n| !used.contains(&format!("10.77.{n}.")) && !Path::new(&format!("/sys/class/net/rcb{n}")).exists())
            .ok_or("no free 10.77.x.0/24 subnet")?;
        let bridge = format!("rcb{n}");
        let record = dir.join(".harness-netns");
        let note = |line: String| {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&record).expect("netns record");
            let _ = writeln!(f, "{line}");
        };
        let mut net = Net { hosts: Vec::new(), bridge: None, cidr: format!("10.77.{n}.0/24"), fallback_reason: None };
        note(format!("link {bridge}"));
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        net.bridge = Some(bridge.clone());
        ip(&["addr", "add", &format!("10.77.{n}.1/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for (i, label) in labels.iter().enumerate() {
            let name = format!("rampart-chaos-{pid}-{n}-{i}");
            let addr = Ipv4Addr::new(10, 77, n, 10 + i as u8);
            let veth = format!("rcv{n}h{i}");
            note(format!("netns {name}"));
            ip(&["netns", "add", &name])?;
            net.hosts.push(Host {
                label: label.to_string(),
                addr,
                netns: Some(PathBuf::from(format!("/var/run/netns/{name}"))),
                netns_name: Some(name.clone()),
            });
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &name])?;
            ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            ip(&["-n", &name, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(&["-n", &name, "link", "set", "eth0", "up"])?;
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            net.iptables(&net.hosts[i], &["-F"])?;
        }
        Ok(net)
    }

    pub fn host(&self, label: &str) -> &Host {
        self.hosts.iter().find(|h| h.label == label).unwrap_or_else(|| panic!("no host {label}"))
    }

    /// Whether partitions can be made (namespaces are in use).
    pub fn partitions(&self) -> bool {
        self.bridge.is_some()
    }

    fn iptables(&self, host: &Host, args: &[&str]) -> Result<(), String> {
        let ns = host.netns_name.as_deref().ok_or("partitions need network namespaces")?;
        run(Command::new("ip").args(["netns", "exec", ns, "iptables", "-w"]).args(args))
    }

    /// Drops packets between `host` and each of `peers` in `dir` (from `host`'s point of view).
    pub fn cut(&self, host: &Host, peers: &[Ipv4Addr], dir: Direction) {
        for peer in peers {
            let p = peer.to_string();
            if dir != Direction::Outgoing {
                self.iptables(host, &["-A", "INPUT", "-s", &p, "-j", "DROP"]).expect("iptables INPUT rule");
            }
            if dir != Direction::Incoming {
                self.iptables(host, &["-A", "OUTPUT", "-d", &p, "-j", "DROP"]).expect("iptables OUTPUT rule");
            }
        }
    }

    /// Removes every rule of `host`.
    pub fn heal(&self, host: &Host) {
        if self.partitions() {
            self.iptables(host, &["-F"]).expect("iptables -F");
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            if let Some(name) = &h.netns_name {
                if let Err(e) = ip(&["netns", "del", name]) {
                    eprintln!("[chaos] {e}");
                }
            }
        }
        if let Some(b) = &self.bridge {
            if let Err(e) = ip(&["link", "del", b]) {
                eprintln!("[chaos] {e}");
            }
        }
    }
}
