//! Tests with several hosts: each node, etcd, a proxy and a client get a network namespace of
//! their own, with their own address on a private bridge, so that a partition is a packet filter
//! rule inside one host (exactly as a firewall or a broken switch port would behave), a pulled
//! plug is a host's link going down, and a virtual IP moves between hosts as on a real LAN.
//! Used by the chaos suite (tests/chaos) and by [`super::Cluster`] in namespaces.
//!
//! Layout: a bridge in the test's own namespace holds `10.77.<n>.1` (the test itself: workload,
//! probes and observers talk to every host through it); host `i` is `10.77.<n>.<10 + i>` on
//! [`INTERFACE`] inside namespace `rampart-net-<pid>-<n>-<i>`, linked to the bridge by a veth
//! pair. `<n>` is picked so that no address of this machine is in the subnet; nothing is ever
//! routed beyond it. [`Net::spare_addr`] (`10.77.<n>.100`) is in the subnet but no host's: the
//! place for a virtual IP.
//!
//! Partitions are `iptables` DROP rules inside the cut host's namespace, naming peer addresses:
//! packets vanish (connections hang until the rule goes, as with a real partition), and the test's
//! own address is never named, so the test keeps observing every side.
//!
//! Where namespaces cannot be made (not root, no `ip`), [`Net::create`] makes every host
//! 127.0.0.1 and partitions are unavailable; [`Net::partitions`] says so and the chaos schedule
//! leaves those faults out. [`Net::require`] panics instead, for tests that mean nothing without.
//!
//! Everything created is recorded in `<dir>/.harness-netns` before it is created, so that
//! `scripts/reap-test-procs.sh` can remove what a killed run left; [`Net`]'s drop removes it.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The interface every host has its address on (the other end is a port of the bridge).
pub const INTERFACE: &str = "eth0";

/// Prefix length of the hosts' subnet.
pub const PREFIX_LEN: u8 = 24;

/// Last octet of [`Net::spare_addr`]: above every host's (`10 + i`).
const SPARE_OCTET: u8 = 100;

/// One host: its address and, with namespaces, the namespace its processes run in.
#[derive(Clone, Debug)]
pub struct Host {
    pub label: String,
    pub addr: Ipv4Addr,
    /// `/var/run/netns/<name>`; `None` on loopback.
    pub netns: Option<PathBuf>,
    netns_name: Option<String>,
}

impl Host {
    /// Runs `f` on a thread of its own inside this host's namespace (in the test's own on
    /// loopback) and returns what it returned. A socket belongs to the namespace it was made in
    /// for good, so one made here can be used from any thread afterwards.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let netns = self.netns.clone();
        std::thread::spawn(move || {
            if let Some(ns) = netns {
                let file = std::fs::File::open(&ns)
                    .unwrap_or_else(|e| panic!("opening network namespace {}: {e}", ns.display()));
                // setns moves the calling thread only: the test's other threads stay where they are.
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("entering network namespace {}: {e}", ns.display()));
            }
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// A TCP connection to `to` made from this host, as a client machine on the LAN would.
    pub fn tcp_connect(&self, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
        self.run_in(move || TcpStream::connect_timeout(&to, timeout))
    }

    /// The IPv4 addresses on any of this host's interfaces (`ip -n <ns> -o -4 addr`).
    fn addresses(&self) -> Result<Vec<Ipv4Addr>, String> {
        let ns = self.netns_name.as_deref().ok_or("addresses of a loopback host")?;
        let mut cmd = Command::new("ip");
        cmd.args(["-n", ns, "-o", "-4", "addr"]);
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        // `2: eth0    inet 10.77.16.10/24 brd 10.77.16.255 scope global eth0 ...`
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace().skip_while(|w| *w != "inet");
                words.nth(1)?.split('/').next()?.parse().ok()
            })
            .collect())
    }
}

fn holders(hosts: &[Host], addr: Ipv4Addr) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for h in hosts {
        if h.addresses()?.contains(&addr) {
            out.push(h.label.clone());
        }
    }
    Ok(out)
}

/// How often a [`Sampler`] looks.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Who held the address at one moment.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When the sample was begun. Its hosts are read one after another, within a few
    /// milliseconds: an address moving from one host to the next within those could show on
    /// both, never on neither.
    pub at: Instant,
    /// Labels of the hosts that had the address, in host order.
    pub holders: Vec<String>,
}

/// A thread recording, every [`SAMPLE_EVERY`], which hosts hold one address ([`Net::sample`]),
/// so that a test can say what was true at every moment, not only when it looked. Stopped on
/// drop; drop it before the [`Net`].
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    /// Why a sample could not be taken (the thread stops then).
    error: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(hosts: Vec<Host>, addr: Ipv4Addr) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let error = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, error, stop) = (samples.clone(), error.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    match holders(&hosts, addr) {
                        Ok(holders) => samples.lock().unwrap().push(Sample { at, holders }),
                        Err(e) => {
                            *error.lock().unwrap() = Some(e);
                            return;
                        }
                    }
                    std::thread::sleep(SAMPLE_EVERY.saturating_sub(at.elapsed()));
                }
            })
        };
        Sampler { samples, error, stop, thread: Some(thread) }
    }

    /// Every sample so far, oldest first. Panics if sampling failed.
    pub fn samples(&self) -> Vec<Sample> {
        if let Some(e) = self.error.lock().unwrap().as_ref() {
            panic!("sampling the holders of an address failed: {e}");
        }
        self.samples.lock().unwrap().clone()
    }

    /// The samples in which more than one host held the address.
    pub fn double_holdings(&self) -> Vec<Sample> {
        self.samples().into_iter().filter(|s| s.holders.len() > 1).collect()
    }

    /// When `label` began holding the address alone without a break up to the latest sample;
    /// `None` when it does not hold it alone in the latest sample.
    pub fn held_alone_since(&self, label: &str) -> Option<Instant> {
        let alone = |s: &Sample| s.holders.len() == 1 && s.holders[0] == label;
        self.samples().iter().rev().take_while(|s| alone(s)).last().map(|s| s.at)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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

/// The hosts of one test.
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
            .map(|k| 16 + ((pid as u64 + k + super::random_u64() % 7) % 230) as u8)
            // A subnet whose links are all gone: a namespace an earlier test of this process
            // deleted takes its veth end with it, but the kernel does that a moment later.
            .find(|n| {
                !used.contains(&format!("10.77.{n}."))
                    && !Path::new(&format!("/sys/class/net/rcb{n}")).exists()
                    && (0..labels.len()).all(|i| !Path::new(&format!("/sys/class/net/rcv{n}h{i}")).exists())
            })
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
            let name = format!("rampart-net-{pid}-{n}-{i}");
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
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", INTERFACE, "netns", &name])?;
            ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            ip(&["-n", &name, "addr", "add", &format!("{addr}/{PREFIX_LEN}"), "dev", INTERFACE])?;
            ip(&["-n", &name, "link", "set", INTERFACE, "up"])?;
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            net.iptables(&net.hosts[i], &["-F"])?;
        }
        Ok(net)
    }

    /// [`Net::create`], panicking when namespaces cannot be made.
    pub fn require(dir: &Path, labels: &[&str]) -> Net {
        let net = Net::create(dir, labels);
        if let Some(why) = &net.fallback_reason {
            panic!("this test needs network namespaces: {why}");
        }
        net
    }

    pub fn host(&self, label: &str) -> &Host {
        self.hosts.iter().find(|h| h.label == label).unwrap_or_else(|| panic!("no host {label}"))
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// An address in the hosts' subnet that no host has (`10.77.<n>.100`): for a virtual IP.
    /// Panics on loopback.
    pub fn spare_addr(&self) -> Ipv4Addr {
        assert!(self.bridge.is_some(), "no spare address on loopback");
        let [a, b, c, _] = self.hosts[0].addr.octets();
        Ipv4Addr::new(a, b, c, SPARE_OCTET)
    }

    /// Labels of the hosts that have `addr` on any interface (up or down) right now, in host order.
    pub fn holders(&self, addr: Ipv4Addr) -> Vec<String> {
        holders(&self.hosts, addr).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Pulls `host`'s plug: its [`INTERFACE`] goes down (its addresses stay, as on a real machine).
    pub fn link_down(&self, host: &Host) {
        self.set_link(host, "down");
    }

    /// Plugs `host` back in.
    pub fn link_up(&self, host: &Host) {
        self.set_link(host, "up");
    }

    fn set_link(&self, host: &Host, state: &str) {
        let ns = host.netns_name.as_deref().expect("pulling a plug needs network namespaces");
        ip(&["-n", ns, "link", "set", INTERFACE, state]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts asking every [`SAMPLE_EVERY`] which hosts hold `addr`; see [`Sampler`].
    pub fn sample(&self, addr: Ipv4Addr) -> Sampler {
        Sampler::start(self.hosts.clone(), addr)
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

    /// Drops the TCP packets between `host` and each of `peers` in `dir` that have one of
    /// `ports` at either end (a service's listening ports: its requests and its answers both
    /// go), leaving every other exchange between them alone.
    pub fn cut_ports(&self, host: &Host, peers: &[Ipv4Addr], ports: &[u16], dir: Direction) {
        self.port_rules(host, peers, ports, dir, "DROP");
    }

    /// Drops the packets between `host` and each of `peers` in `dir`, except TCP packets with
    /// one of `ports` at either end (a service that stays reachable across the cut: rules are
    /// matched in order, so its ACCEPT rules go first).
    pub fn cut_except_ports(&self, host: &Host, peers: &[Ipv4Addr], ports: &[u16], dir: Direction) {
        self.port_rules(host, peers, ports, dir, "ACCEPT");
        self.cut(host, peers, dir);
    }

    /// Appends rules sending to `target` the TCP packets between `host` and `peers` in `dir`
    /// with one of `ports` at either end.
    fn port_rules(&self, host: &Host, peers: &[Ipv4Addr], ports: &[u16], dir: Direction, target: &str) {
        for peer in peers {
            let p = peer.to_string();
            for port in ports {
                let port = port.to_string();
                for end in ["--dport", "--sport"] {
                    if dir != Direction::Outgoing {
                        self.iptables(host, &["-A", "INPUT", "-s", &p, "-p", "tcp", end, &port, "-j", target])
                            .expect("iptables INPUT rule");
                    }
                    if dir != Direction::Incoming {
                        self.iptables(host, &["-A", "OUTPUT", "-d", &p, "-p", "tcp", end, &port, "-j", target])
                            .expect("iptables OUTPUT rule");
                    }
                }
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
                    eprintln!("[netns] {e}");
                }
            }
        }
        if let Some(b) = &self.bridge {
            if let Err(e) = ip(&["link", "del", b]) {
                eprintln!("[netns] {e}");
            }
        }
    }
}
