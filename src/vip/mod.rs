//! The virtual address on this host, for the agent (`vip`) and the proxies (`proxy.vip`): taking
//! it (added to the interface, announced by gratuitous ARP, then `if_up_cmd`) and giving it up
//! (`if_down_cmd`, then removed from the interface), and what the host has now.
//!
//! Who may hold it is decided elsewhere (the core's [`rampart_core::address::may_hold`] for the
//! agent, the proxies' lease election): this only carries it out.
//!
//! Invariant: giving up never outlasts its limit (the end of the lease): the down command is
//! killed at the limit, and the address is removed from the interface whatever the command did.
//!
//! Adding and removing an address needs CAP_NET_ADMIN, announcing it CAP_NET_RAW: the agent runs
//! as `postgres` with both as ambient capabilities (`AmbientCapabilities=` in the systemd unit),
//! never as root.

pub mod garp;
pub mod keeper;

use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use rampart_config::Vip;
use tokio::process::Command;

/// Gap between two gratuitous ARP announcements.
const ARP_GAP: Duration = Duration::from_millis(100);

/// The address and what was done with it on this host.
#[derive(Debug)]
pub struct HostAddress {
    vip: Vip,
    /// With commands only (no interface), whether the last command run took the address.
    taken_by_commands: bool,
}

impl HostAddress {
    pub fn new(vip: Vip) -> Self {
        HostAddress { vip, taken_by_commands: false }
    }

    /// Whether this host has the address now: on the interface, or, with commands only, as the
    /// last command left it.
    pub fn held(&self) -> Result<bool, String> {
        let Some(interface) = &self.vip.interface else { return Ok(self.taken_by_commands) };
        let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("listing interfaces: {e}"))?;
        let ip = self.vip.ip;
        Ok(addrs.filter(|a| &a.interface_name == interface).any(|a| {
            a.address.is_some_and(|s| match ip {
                IpAddr::V4(v4) => s.as_sockaddr_in().is_some_and(|x| x.ip() == v4),
                IpAddr::V6(v6) => s.as_sockaddr_in6().is_some_and(|x| x.ip() == v6),
            })
        }))
    }

    /// Adds the address to the interface (unless it is there), announces it, runs `if_up_cmd`.
    pub async fn take(&mut self) -> Result<(), String> {
        if let Some(interface) = self.vip.interface.clone() {
            if !self.held()? {
                ip(&["addr", "add", &self.vip.cidr(), "dev", &interface], self.vip.cmd_timeout).await?;
            }
            if let IpAddr::V4(v4) = self.vip.ip {
                let count = self.vip.arp_count;
                tokio::task::spawn_blocking(move || garp::announce(&interface, v4, count, ARP_GAP))
                    .await
                    .map_err(|e| format!("gratuitous ARP: {e}"))??;
            }
        }
        if let Some(cmd) = &self.vip.if_up_cmd {
            shell(cmd, self.vip.ip, self.vip.cmd_timeout).await.map_err(|e| format!("if_up_cmd: {e}"))?;
            self.taken_by_commands = true;
        }
        Ok(())
    }

    /// Runs `if_down_cmd`, then removes the address from the interface, all within `limit`.
    /// The address is removed even when the command failed: it must not outlive the lease.
    pub async fn give_up(&mut self, limit: Duration) -> Result<(), String> {
        let started = tokio::time::Instant::now();
        let mut result = Ok(());
        if let Some(cmd) = &self.vip.if_down_cmd {
            result =
                shell(cmd, self.vip.ip, self.vip.cmd_timeout.min(limit)).await.map_err(|e| format!("if_down_cmd: {e}"));
            self.taken_by_commands = false;
        }
        if let Some(interface) = &self.vip.interface {
            if self.held()? {
                let left = limit.saturating_sub(started.elapsed()).max(Duration::from_millis(500));
                ip(&["addr", "del", &self.vip.cidr(), "dev", interface], left).await?;
            }
        }
        result
    }
}

/// Runs `ip` (iproute2) with `args`, killed after `limit`.
async fn ip(args: &[&str], limit: Duration) -> Result<(), String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run(cmd, limit).await.map_err(|e| format!("ip {}: {e}", args.join(" ")))
}

/// Runs `command` through the shell with Pgpool-II's `$_IP_$` replaced by the address (also in
/// `RAMPART_VIP`), killed after `limit`.
async fn shell(command: &str, ip: IpAddr, limit: Duration) -> Result<(), String> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(command.replace("$_IP_$", &ip.to_string())).env("RAMPART_VIP", ip.to_string());
    run(cmd, limit).await
}

async fn run(mut cmd: Command, limit: Duration) -> Result<(), String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("could not start: {e}"))?;
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Err(_) => Err(format!("still running after {} ms: killed", limit.as_millis())),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let said = String::from_utf8_lossy(&out.stderr);
            let said = said.trim();
            Err(format!("{}{}{said}", out.status, if said.is_empty() { "" } else { ": " }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands_only(up: &str, down: &str) -> HostAddress {
        HostAddress::new(Vip {
            ip: "203.0.113.7".parse().unwrap(),
            netmask: 32,
            interface: None,
            arp_count: 0,
            if_up_cmd: Some(up.into()),
            if_down_cmd: Some(down.into()),
            cmd_timeout: Duration::from_secs(5),
        })
    }

    #[tokio::test]
    async fn commands_move_an_address_the_host_does_not_carry() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let up = format!("echo \"up $_IP_$ $RAMPART_VIP\" >> {}", log.display());
        let down = format!("echo down >> {}", log.display());
        let mut a = commands_only(&up, &down);
        assert!(!a.held().unwrap());
        a.take().await.unwrap();
        assert!(a.held().unwrap());
        a.give_up(Duration::from_secs(5)).await.unwrap();
        assert!(!a.held().unwrap());
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "up 203.0.113.7 203.0.113.7\ndown\n");
    }

    #[tokio::test]
    async fn a_command_that_fails_or_hangs_is_reported_and_giving_up_still_ends_in_time() {
        let mut a = commands_only("echo no cloud >&2; exit 3", "sleep 30");
        let e = a.take().await.unwrap_err();
        assert!(e.contains("if_up_cmd: exit status: 3: no cloud"), "{e}");
        let e = a.give_up(Duration::from_millis(300)).await.unwrap_err();
        assert!(e.contains("if_down_cmd: still running after 300 ms: killed"), "{e}");
        assert!(!a.held().unwrap(), "given up as far as this host can tell");
    }
}
