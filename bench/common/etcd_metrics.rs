//! etcd's own count of what it was sent: `grpc_server_msg_received_total` (every unary request,
//! and every message on a stream: a lease keep-alive, a watch creation, a progress request), by
//! gRPC method, summed over the members. The etcd load benches count with it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support;
use crate::support::etcd::Etcd;

/// Messages etcd received, by gRPC method.
pub type Counts = BTreeMap<String, f64>;

/// The counts summed over `members`, or `None` (with a note printed) if one cannot be read.
pub fn received<'a>(members: impl IntoIterator<Item = &'a Etcd>) -> Option<Counts> {
    let mut sum = Counts::new();
    for member in members {
        let host: std::net::Ipv4Addr = member.host().split(':').next()?.parse().ok()?;
        let got = support::client::http_request_at(
            host,
            member.client_port(),
            "GET",
            "/metrics",
            None,
            Duration::from_secs(5),
        );
        let body = match got {
            Ok(r) if r.status == 200 => r.body,
            Ok(r) => {
                println!("[etcd metrics] {}/metrics answered {}", member.endpoint(), r.status);
                return None;
            }
            Err(e) => {
                println!("[etcd metrics] cannot read {}/metrics: {e}", member.endpoint());
                return None;
            }
        };
        for (method, n) in received_by_method(&body) {
            *sum.entry(method).or_default() += n;
        }
    }
    Some(sum)
}

/// What was received between `before` and `after`, per agent per second over `window`, by
/// method (methods that saw nothing left out).
pub fn rate_per_agent(before: &Counts, after: &Counts, agents: usize, window: Duration) -> Counts {
    after
        .iter()
        .map(|(method, n)| {
            let delta = n - before.get(method).copied().unwrap_or(0.0);
            (method.clone(), delta / window.as_secs_f64() / agents as f64)
        })
        .filter(|(_, rate)| *rate > 0.0)
        .collect()
}

/// Every method any of `counts` names, sorted: the columns of a table.
pub fn methods<'a>(counts: impl IntoIterator<Item = &'a Counts>) -> Vec<String> {
    let all: std::collections::BTreeSet<&String> = counts.into_iter().flat_map(|c| c.keys()).collect();
    all.into_iter().cloned().collect()
}

/// The `grpc_server_msg_received_total` samples of a Prometheus text page, by `grpc_method`.
fn received_by_method(page: &str) -> Counts {
    let mut out = Counts::new();
    for line in page.lines().filter(|l| l.starts_with("grpc_server_msg_received_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let Some(method) = labels.split("grpc_method=\"").nth(1).and_then(|r| r.split('"').next()) else { continue };
        if let Ok(n) = value.trim().parse::<f64>() {
            *out.entry(method.to_string()).or_default() += n;
        }
    }
    out
}
