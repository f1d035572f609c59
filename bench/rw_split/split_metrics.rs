//! What a splitting `rampart proxy` says about its own work, from its admin port's `/metrics`
//! (crates/proxy/src/admin_metrics.rs): the statements its splitter sent to a replica or to the
//! primary, the reads kept on the primary for read-your-writes, and its classifier's cache (hits,
//! misses, the time spent parsing and classifying the misses, entries). Read before and after
//! each run; the bench prints the differences.

use crate::support;

/// The splitter's counters at one moment, or their change over runs ([`Figures::since`]).
#[derive(Clone, Copy, Default)]
pub struct Figures {
    pub to_replica: f64,
    pub to_primary: f64,
    pub kept_on_primary: f64,
    pub hits: f64,
    pub misses: f64,
    pub parse_secs: f64,
    /// A gauge: the value at the end, not a change.
    pub entries: f64,
}

impl Figures {
    /// The counters' change from `before` to `self` (`entries` as it is now).
    pub fn since(&self, before: &Figures) -> Figures {
        Figures {
            to_replica: self.to_replica - before.to_replica,
            to_primary: self.to_primary - before.to_primary,
            kept_on_primary: self.kept_on_primary - before.kept_on_primary,
            hits: self.hits - before.hits,
            misses: self.misses - before.misses,
            parse_secs: self.parse_secs - before.parse_secs,
            entries: self.entries,
        }
    }

    /// Adds the changes of another run (`entries` is the later one's).
    pub fn add(&mut self, other: &Figures) {
        self.to_replica += other.to_replica;
        self.to_primary += other.to_primary;
        self.kept_on_primary += other.kept_on_primary;
        self.hits += other.hits;
        self.misses += other.misses;
        self.parse_secs += other.parse_secs;
        self.entries = other.entries;
    }

    pub fn statements(&self) -> f64 {
        self.to_replica + self.to_primary
    }
}

/// The value of the sample `series` (name and labels, as printed) in the text `metrics`.
fn sample(metrics: &str, series: &str) -> Result<f64, String> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .ok_or_else(|| format!("no {series} in /metrics"))
}

/// Scrapes `/metrics` on the admin port `admin_port`.
pub fn scrape(admin_port: u16) -> Result<Figures, String> {
    let resp = support::client::http_request(admin_port, "GET", "/metrics", None)
        .map_err(|e| format!("GET /metrics on {admin_port}: {e}"))?;
    if resp.status != 200 {
        return Err(format!("GET /metrics on {admin_port}: HTTP {}", resp.status));
    }
    let m = resp.body.as_str();
    let role = |r: &str| sample(m, &format!("rampart_proxy_split_statements_by_role_total{{role=\"{r}\"}}"));
    Ok(Figures {
        to_replica: role("replica")?,
        to_primary: role("primary")?,
        kept_on_primary: sample(m, "rampart_proxy_split_reads_kept_on_primary_total")?,
        hits: sample(m, "rampart_proxy_split_cache_hits_total")?,
        misses: sample(m, "rampart_proxy_split_cache_misses_total")?,
        parse_secs: sample(m, "rampart_proxy_split_parse_seconds_total")?,
        entries: sample(m, "rampart_proxy_split_cache_entries")?,
    })
}
