//! The `vip` section: one address that always reaches the writable primary (or
//! the proxies' holder), keepalived's and vip-manager's job. vip-manager's names where they fit
//! (`ip`, `netmask`, `interface`), `arp_count` for the gratuitous ARP announcements, and seed
//! 001's Pgpool-II watchdog names for the commands that take and give up an address a cloud
//! manages (`if_up_cmd`, `if_down_cmd`, with `cmd_timeout`).
//!
//! Invariants kept here: a section either names an interface (the agent adds the address
//! itself, then runs `if_up_cmd` if there is one) or has both commands (the address lives
//! elsewhere, say an Elastic IP or a DNS record): an address that could be taken but never given
//! up is refused before anything runs. The netmask fits the address family.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value as Json;

use crate::check::Checker;
use crate::error::Problem;

/// Gratuitous ARP announcements sent when the address is taken (keepalived sends 5 by default,
/// one per second; three at 100 ms apart reach every neighbour in practice and end fast).
pub const DEFAULT_ARP_COUNT: u32 = 3;
/// How long `if_up_cmd` and `if_down_cmd` may run (a leader's down command also stops when its
/// lease ends, whichever comes first).
pub const DEFAULT_CMD_TIMEOUT: Duration = Duration::from_secs(5);

/// A virtual address and how it is taken and given up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vip {
    /// The address.
    pub ip: IpAddr,
    /// Its prefix length on the interface (`netmask: 24` or `netmask: 255.255.255.0`).
    pub netmask: u8,
    /// The interface the agent adds it to; `None`: only the commands move it.
    pub interface: Option<String>,
    /// Gratuitous ARP announcements after taking an IPv4 address on an interface (0: none).
    pub arp_count: u32,
    /// Run after the address was taken (`$_IP_$` is replaced by the address, as in Pgpool-II).
    pub if_up_cmd: Option<String>,
    /// Run to give the address up, before it is removed from the interface.
    pub if_down_cmd: Option<String>,
    /// Limit for each command.
    pub cmd_timeout: Duration,
}

impl Vip {
    /// `ip/netmask`, as `ip addr` takes it.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.netmask)
    }

    /// The section at `path` (`["vip"]`); `None` when absent.
    pub(crate) fn build(raw: Option<Json>, path: &[&str], c: &mut Checker<'_>) -> Result<Option<Vip>, Problem> {
        let Some(raw) = raw.filter(|r| !r.is_null()) else { return Ok(None) };
        let Json::Object(map) = raw else {
            return Err(c.problem(path, "expected a mapping (ip, netmask, interface, ...)"));
        };
        let text = |key: &str, c: &Checker<'_>| -> Result<Option<String>, Problem> {
            match map.get(key) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
                Some(other) => Err(key_problem(c, path, key, format!("expected text, got {other}"))),
            }
        };
        let ip_text = text("ip", c)?.ok_or_else(|| c.problem(path, "ip: missing (the virtual address)"))?;
        let ip: IpAddr = ip_text.parse().map_err(|_| {
            key_problem(c, path, "ip", format!("{ip_text:?} is not an IP address (the netmask goes in netmask)"))
        })?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let netmask = match map.get("netmask") {
            None | Some(Json::Null) => max,
            Some(v) => prefix_length(v, ip).ok_or_else(|| {
                key_problem(c, path, "netmask", format!("expected a prefix length 1-{max} or a dotted mask, got {v}"))
            })?,
        };
        let interface = text("interface", c)?;
        if let Some(name) = &interface {
            // Linux interface names: at most 15 bytes, no '/', no whitespace.
            if name.len() > 15 || name.contains('/') || name.contains(char::is_whitespace) {
                return Err(key_problem(c, path, "interface", format!("{name:?} is not a network interface name")));
            }
        }
        let arp_count = match map.get("arp_count") {
            None | Some(Json::Null) => DEFAULT_ARP_COUNT,
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= 100)
                .ok_or_else(|| key_problem(c, path, "arp_count", format!("expected a count 0-100, got {v}")))?
                as u32,
        };
        let cmd_timeout = match map.get("cmd_timeout") {
            None | Some(Json::Null) => DEFAULT_CMD_TIMEOUT,
            Some(v) => Duration::from_secs(v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                key_problem(c, path, "cmd_timeout", format!("expected seconds (at least 1), got {v}"))
            })?),
        };
        let (if_up_cmd, if_down_cmd) = (text("if_up_cmd", c)?, text("if_down_cmd", c)?);
        if interface.is_none() && (if_up_cmd.is_none() || if_down_cmd.is_none()) {
            return Err(c.problem(
                path,
                "needs an interface to add the address to, or both if_up_cmd and if_down_cmd to move it elsewhere",
            ));
        }
        if interface.is_some() && if_up_cmd.is_some() != if_down_cmd.is_some() {
            let (set, unset) =
                if if_up_cmd.is_some() { ("if_up_cmd", "if_down_cmd") } else { ("if_down_cmd", "if_up_cmd") };
            key_warn(c, path, set, format!("set without {unset}: what it does is never undone"));
        }
        for key in map.keys() {
            if !["ip", "netmask", "interface", "arp_count", "if_up_cmd", "if_down_cmd", "cmd_timeout"]
                .contains(&key.as_str())
            {
                key_warn(c, path, key, "unknown key (ignored)");
            }
        }
        Ok(Some(Vip { ip, netmask, interface, arp_count, if_up_cmd, if_down_cmd, cmd_timeout }))
    }
}

fn key_problem(c: &Checker<'_>, path: &[&str], key: &str, message: impl Into<String>) -> Problem {
    let mut at = path.to_vec();
    at.push(key);
    c.problem(&at, message)
}

fn key_warn(c: &mut Checker<'_>, path: &[&str], key: &str, message: impl AsRef<str>) {
    let mut at = path.to_vec();
    at.push(key);
    c.warn(&at, message)
}

/// A prefix length from `24` or `"255.255.255.0"` (IPv4 only), within the family's bits.
fn prefix_length(v: &Json, ip: IpAddr) -> Option<u8> {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let n = match v {
        Json::Number(n) => n.as_u64()?,
        Json::String(s) => match s.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                let mask: std::net::Ipv4Addr = s.parse().ok().filter(|_| ip.is_ipv4())?;
                let bits = u32::from(mask);
                // Contiguous ones from the top, as a netmask must be.
                if bits.leading_ones() + bits.trailing_zeros() != 32 {
                    return None;
                }
                u64::from(bits.leading_ones())
            }
        },
        _ => return None,
    };
    (1..=max).contains(&n).then_some(n as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(yaml: &str) -> Result<Option<Vip>, String> {
        let text = format!("{}vip:\n{yaml}", crate::tests::SECTION_BASE);
        crate::parse(&text, "n1.yml", std::iter::empty()).map(|l| l.config.vip).map_err(|e| e.to_string())
    }

    #[test]
    fn an_address_on_an_interface_with_vip_managers_names() {
        let v = build("  ip: 10.0.0.100\n  netmask: 24\n  interface: eth0\n").unwrap().unwrap();
        assert_eq!((v.cidr(), v.interface.as_deref(), v.arp_count), ("10.0.0.100/24".into(), Some("eth0"), 3));
        assert_eq!(v.cmd_timeout, DEFAULT_CMD_TIMEOUT);
        let dotted = build("  ip: 10.0.0.100\n  netmask: 255.255.252.0\n  interface: eth0\n").unwrap().unwrap();
        assert_eq!(dotted.netmask, 22);
        let host = build("  ip: 10.0.0.100\n  interface: eth0\n  arp_count: 0\n").unwrap().unwrap();
        assert_eq!((host.netmask, host.arp_count), (32, 0));
        assert_eq!(build("  ip: fd00::64\n  interface: eth0\n").unwrap().unwrap().netmask, 128);
        assert_eq!(build("").unwrap(), None, "an empty section is no section");
    }

    #[test]
    fn commands_alone_move_an_address_the_cloud_manages() {
        let v = build(
            "  ip: 203.0.113.7\n  if_up_cmd: aws-eip up $_IP_$\n  if_down_cmd: aws-eip down\n  cmd_timeout: 20\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(v.interface, None);
        assert_eq!(v.if_up_cmd.as_deref(), Some("aws-eip up $_IP_$"));
        assert_eq!(v.cmd_timeout, Duration::from_secs(20));
    }

    #[test]
    fn bad_sections_are_refused_naming_the_key() {
        for (yaml, said) in [
            ("  ip: 10.0.0.100/24\n  interface: eth0\n", "vip.ip: \"10.0.0.100/24\" is not an IP address"),
            ("  interface: eth0\n", "vip: ip: missing"),
            ("  ip: 10.0.0.100\n  netmask: 33\n  interface: eth0\n", "vip.netmask: expected a prefix length 1-32"),
            ("  ip: 10.0.0.100\n  netmask: 255.0.255.0\n  interface: eth0\n", "vip.netmask"),
            ("  ip: 10.0.0.100\n  interface: eth0 x\n", "vip.interface: \"eth0 x\" is not a network interface"),
            ("  ip: 10.0.0.100\n  if_up_cmd: up\n", "vip: needs an interface"),
            ("  ip: 10.0.0.100\n  interface: eth0\n  arp_count: -1\n", "vip.arp_count"),
            ("  ip: 10.0.0.100\n  interface: eth0\n  cmd_timeout: 0\n", "vip.cmd_timeout"),
        ] {
            let e = build(yaml).unwrap_err();
            assert!(e.contains(said), "{yaml:?}: {e}");
        }
    }
}
