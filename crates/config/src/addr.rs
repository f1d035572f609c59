//! Network addresses as the configuration writes them: `host:port` and PostgreSQL's
//! `host[,host]:port`.
//!
//! Invariant kept here: a [`HostPort`] always has a non-empty host and a non-zero port, and prints
//! back in a form that can be put in a URL (IPv6 hosts in brackets).

use std::fmt;

/// A host (name, IPv4 or IPv6 address, without brackets) and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Host name or address, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl HostPort {
    /// Parses `host:port` or `[v6]:port`. A bare IPv6 address followed by a port (`::1:8008`) is
    /// split at its last colon, as Patroni does.
    pub fn parse(text: &str) -> Option<HostPort> {
        let (host, port) = split_port(text.trim())?;
        if host.is_empty() || host.contains([',', '/']) || host.contains(char::is_whitespace) {
            return None;
        }
        Some(HostPort { host: host.to_string(), port })
    }

    /// Parses `host[:port]`, using `default_port` when no port is given.
    pub fn parse_with_default(text: &str, default_port: u16) -> Option<HostPort> {
        let t = text.trim();
        if t.contains(':') {
            return HostPort::parse(t);
        }
        if t.is_empty() || t.contains([',', '/', '[', ']']) || t.contains(char::is_whitespace) {
            return None;
        }
        Some(HostPort { host: t.to_string(), port: default_port })
    }

    /// Whether the host means "every interface" (`0.0.0.0`, `::`, `*`).
    pub fn is_wildcard(&self) -> bool {
        is_wildcard(&self.host)
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// PostgreSQL's `listen`: one or more hosts and one port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenAddresses {
    /// Hosts, without brackets, in the order written.
    pub hosts: Vec<String>,
    /// TCP port.
    pub port: u16,
}

impl ListenAddresses {
    /// Parses `host[,host]:port` (hosts may be bracketed IPv6 addresses).
    pub fn parse(text: &str) -> Option<ListenAddresses> {
        let (hosts, port) = split_port(text.trim())?;
        let hosts: Vec<String> =
            hosts.split(',').map(|h| h.trim().trim_start_matches('[').trim_end_matches(']').to_string()).collect();
        if hosts.iter().any(|h| h.is_empty() || h.contains(char::is_whitespace)) {
            return None;
        }
        Some(ListenAddresses { hosts, port })
    }

    /// The address local clients should use: the first host, with a wildcard replaced by the
    /// matching loopback address.
    pub fn local_host(&self) -> String {
        let first = self.hosts.first().map(String::as_str).unwrap_or("127.0.0.1");
        loopback_if_wildcard(first).to_string()
    }
}

impl fmt::Display for ListenAddresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.hosts.join(","), self.port)
    }
}

/// Whether `host` means "every interface".
pub fn is_wildcard(host: &str) -> bool {
    matches!(host, "0.0.0.0" | "::" | "*")
}

/// `host`, or the loopback address of the same family when `host` is a wildcard.
pub fn loopback_if_wildcard(host: &str) -> &str {
    match host {
        "::" => "::1",
        "0.0.0.0" | "*" => "127.0.0.1",
        other => other,
    }
}

/// Splits off a trailing `:port`, removing brackets around a single IPv6 host.
fn split_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = match host.strip_prefix('[') {
        Some(inner) if !host.contains(',') => inner.strip_suffix(']')?,
        _ => host,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: &str, port: u16) -> Option<HostPort> {
        Some(HostPort { host: host.into(), port })
    }

    #[test]
    fn host_port() {
        assert_eq!(HostPort::parse("127.0.0.1:8008"), hp("127.0.0.1", 8008));
        assert_eq!(HostPort::parse("[::1]:8008"), hp("::1", 8008));
        assert_eq!(HostPort::parse("::1:8008"), hp("::1", 8008));
        assert_eq!(HostPort::parse("db.example.com:5432"), hp("db.example.com", 5432));
        for bad in ["8008", ":8008", "http://h:1", "h:", "h:0", "h:99999", "h:x", "a,b:1", ""] {
            assert_eq!(HostPort::parse(bad), None, "{bad}");
        }
        assert_eq!(HostPort::parse("::1:1").unwrap().to_string(), "[::1]:1");
        assert_eq!(HostPort::parse_with_default("etcd1", 2379), hp("etcd1", 2379));
        assert_eq!(HostPort::parse_with_default("etcd1:2381", 2379), hp("etcd1", 2381));
        assert_eq!(HostPort::parse_with_default("[::1]:2381", 2379), hp("::1", 2381));
        assert_eq!(HostPort::parse_with_default("", 2379), None);
    }

    #[test]
    fn listen_addresses() {
        let l = ListenAddresses::parse("127.0.0.1,192.168.1.5:5432").unwrap();
        assert_eq!(l.hosts, ["127.0.0.1", "192.168.1.5"]);
        assert_eq!(l.port, 5432);
        assert_eq!(l.local_host(), "127.0.0.1");
        assert_eq!(ListenAddresses::parse("*:5433").unwrap().local_host(), "127.0.0.1");
        assert_eq!(ListenAddresses::parse("0.0.0.0:5433").unwrap().local_host(), "127.0.0.1");
        assert_eq!(ListenAddresses::parse("[::]:5433").unwrap().local_host(), "::1");
        assert_eq!(ListenAddresses::parse("::,127.0.0.1:1").unwrap().hosts, ["::", "127.0.0.1"]);
        assert_eq!(ListenAddresses::parse("5432"), None);
        assert_eq!(ListenAddresses::parse("a,,b:1"), None);
    }
}
