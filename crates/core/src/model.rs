//! The immutable snapshot of one cluster as read from the DCS, with Patroni's value formats.
//!
//! One consistent read of the cluster prefix becomes one [`Cluster`]; every HA cycle decides on a
//! fresh snapshot, never on state cached from an earlier cycle (the watch only wakes the loop).
//! Parsing is lenient about values written by other tools: a malformed member key is reported and
//! skipped rather than making the whole cluster unreadable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dynamic::DynamicConfig;
use crate::keys::{self, ClusterPrefix};
use crate::lsn::{Lsn, Timeline};
use crate::roles::{PgState, Role};

/// Member tags (`tags:` in the config), with the ones Rampart interprets typed and the rest kept.
///
/// Published in the member key as Patroni publishes them (tags.py `_filter_tags`): in name order
/// (fields are declared alphabetically, the rest follow), a boolean tag only when true, except
/// that `nofailover`/`nosync` are shown whichever their value when `failover_priority`/
/// `sync_priority` is set too, and priorities as written (`1` or `"1"`). The meaning follows
/// Patroni as well: an explicit `nofailover`/`nosync` wins over the priority, a conflict between
/// the two is warned about ([`Tags::conflicts`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tags {
    /// Preferred source for cloning new replicas.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clonefrom: bool,
    /// Preference among equally advanced candidates; `<= 0` means never, unless `nofailover` is
    /// explicitly false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_priority: Option<IntTag>,
    /// Never take the leader lock automatically. `None`: not configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofailover: Option<bool>,
    /// Exclude from read load balancing (`/replica` answers 503).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub noloadbalance: bool,
    /// Never stream WAL: replay only what `restore_command` fetches from the archive (Patroni
    /// 4). No member keeps a replication slot for it, and it gets no logical slot copies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not", deserialize_with = "lenient_tag")]
    pub nostream: bool,
    /// Never a synchronous standby. `None`: not configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nosync: Option<bool>,
    /// Stream from this member instead of the leader (cascading replication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicatefrom: Option<String>,
    /// Preference among synchronous standby candidates (higher first); `<= 0` means never, like
    /// `nosync`, unless `nosync` is explicitly false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_priority: Option<IntTag>,
    /// Any other tag, shown as is.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// An integer tag as configured: a number or a numeric string, published as written. A value
/// that is not an integer counts as absent for decisions (Patroni's `parse_int`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IntTag(pub Value);

impl IntTag {
    /// The integer, if it is one.
    pub fn value(&self) -> Option<i64> {
        match &self.0 {
            Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            Value::String(s) => s.trim().parse::<i64>().ok().or_else(|| s.trim().parse::<f64>().ok().map(|f| f as i64)),
            _ => None,
        }
    }
}

impl From<i64> for IntTag {
    fn from(v: i64) -> Self {
        IntTag(Value::from(v))
    }
}

/// A boolean tag as Patroni's `parse_bool` reads it (`true`, `"true"`, `on`, `1`, ...); anything
/// else is false, as in Patroni.
fn lenient_tag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(crate::sync_mode::lenient_bool(&v).unwrap_or(false))
}

impl Tags {
    /// No tag set (what `tags:` absent means).
    pub fn is_default(&self) -> bool {
        *self == Tags::default()
    }

    /// Patroni's `_bool_tag`: the boolean if configured, else whether the priority is `<= 0`.
    fn bool_tag(flag: Option<bool>, priority: Option<&IntTag>) -> bool {
        flag.unwrap_or_else(|| priority.and_then(IntTag::value).is_some_and(|p| p <= 0))
    }

    /// Patroni's `_priority_tag`: 0 when the boolean is true, else the priority (default 1).
    fn priority_tag(flag: Option<bool>, priority: Option<&IntTag>) -> i64 {
        if flag == Some(true) {
            0
        } else {
            priority.and_then(IntTag::value).unwrap_or(1)
        }
    }

    /// Whether this member may never become leader automatically.
    pub fn nofailover(&self) -> bool {
        Self::bool_tag(self.nofailover, self.failover_priority.as_ref())
    }

    /// Whether this member may ever become leader automatically.
    pub fn can_fail_over(&self) -> bool {
        !self.nofailover()
    }

    /// Priority used to break ties between equally advanced candidates (0 with `nofailover`).
    pub fn priority(&self) -> i64 {
        Self::priority_tag(self.nofailover, self.failover_priority.as_ref())
    }

    /// Whether this member may never be listed in `synchronous_standby_names`.
    pub fn nosync(&self) -> bool {
        Self::bool_tag(self.nosync, self.sync_priority.as_ref())
    }

    /// Whether this member may be listed in `synchronous_standby_names`.
    pub fn can_be_sync(&self) -> bool {
        !self.nosync()
    }

    /// Preference among synchronous standby candidates (default 1, higher first).
    pub fn sync_priority(&self) -> i64 {
        Self::priority_tag(self.nosync, self.sync_priority.as_ref())
    }

    /// The tags as Patroni publishes them: a false `nofailover`/`nosync` only beside its priority.
    pub fn normalized(mut self) -> Self {
        if self.nofailover == Some(false) && self.failover_priority.is_none() {
            self.nofailover = None;
        }
        if self.nosync == Some(false) && self.sync_priority.is_none() {
            self.nosync = None;
        }
        self
    }

    /// Contradictions between a boolean tag and its priority, in Patroni's words (config.py
    /// `_validate_failover_tags`); the boolean wins.
    pub fn conflicts(&self) -> Vec<String> {
        let py = |b: bool| if b { "True" } else { "False" };
        let mut out = Vec::new();
        for (flag_name, flag, prio_name, prio) in [
            ("nofailover", self.nofailover, "failover_priority", self.failover_priority.as_ref()),
            ("nosync", self.nosync, "sync_priority", self.sync_priority.as_ref()),
        ] {
            let (Some(flag), Some(p)) = (flag, prio.and_then(IntTag::value)) else { continue };
            if (flag && p > 0) || (!flag && p <= 0) {
                out.push(format!(
                    "Conflicting configuration between {flag_name}: {} and {prio_name}: {p}. Defaulting to {flag_name}: {}",
                    py(flag),
                    py(flag)
                ));
            }
        }
        out
    }
}

/// The JSON value of a `members/<name>` key, as Patroni writes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberData {
    /// `postgres://host:port/postgres`.
    #[serde(default)]
    pub conn_url: String,
    /// `http://host:port/patroni`.
    #[serde(default)]
    pub api_url: String,
    /// PostgreSQL state (`running`, `stopped`, `starting`, `crashed`, `creating replica`, ...).
    #[serde(default)]
    pub state: PgState,
    /// `primary` (`master` read too), `replica`, `standby_leader`, or `uninitialized`.
    #[serde(default)]
    pub role: Role,
    /// Version of the key format's producer (Patroni's version number that we are compatible with).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Primary: flush position; replica: the furthest of received and replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xlog_location: Option<u64>,
    /// Receive position of a replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_lsn: Option<u64>,
    /// Replay position of a replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lsn: Option<u64>,
    /// Current timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
    /// `streaming` or `in archive recovery` for replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<String>,
    /// Member tags; left out when none is set, as Patroni leaves them out (patronictl shows a
    /// published empty mapping as `{}`).
    #[serde(default, skip_serializing_if = "Tags::is_default")]
    pub tags: Tags,
    /// Set when a parameter change waits for a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_restart: Option<bool>,
    /// Rampart's own version, so mixed clusters can be told apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rampart: Option<String>,
    /// Fields we do not interpret.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl MemberData {
    /// The `(host, port)` of `conn_url`, if it parses.
    pub fn conn_host_port(&self) -> Option<(String, u16)> {
        parse_url_host_port(&self.conn_url, 5432)
    }

    /// The furthest WAL position this member reported.
    pub fn wal_position(&self) -> Lsn {
        let v = [self.xlog_location, self.receive_lsn, self.replay_lsn].into_iter().flatten().max().unwrap_or(0);
        Lsn(v)
    }
}

/// Extracts host and port from `scheme://[user@]host[:port][/...]`.
pub fn parse_url_host_port(url: &str, default_port: u16) -> Option<(String, u16)> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?']).next()?;
    let authority = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    if authority.is_empty() {
        return None;
    }
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').map(|p| p.parse().ok()).unwrap_or(Some(default_port))?;
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), default_port)),
    }
}

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// Member name (the last path segment of its key).
    pub name: String,
    /// Its published data.
    pub data: MemberData,
    /// etcd lease the key is attached to (0 when none).
    pub lease: i64,
}

/// The leader lock.
#[derive(Clone, Debug, PartialEq)]
pub struct Leader {
    /// Name of the member holding the lock.
    pub name: String,
    /// etcd lease of the lock.
    pub lease: i64,
    /// Modification revision of the key, for compare-and-swap.
    pub mod_revision: i64,
}

impl Leader {
    /// The lock as the `leader` key shows it: the holder's name, the lease it hangs on and the
    /// revision a compare-and-swap must name.
    pub fn from_kv(kv: &RawKv) -> Self {
        Leader { name: kv.value.clone(), lease: kv.lease, mod_revision: kv.mod_revision }
    }
}

/// A requested switchover or failover (the `failover` key).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Failover {
    /// Current leader expected by the requester (switchover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Requested candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// When to act, ISO 8601 with time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
    /// Rampart's addition: promote the candidate even where synchronous replication says it may
    /// lack acknowledged commits (a failover the operator insists on). Patroni ignores the field.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// One running proxy's report (a `proxies/<id>` key, Rampart's own): what the leader waits for
/// before it stops PostgreSQL for a switchover (rule: [`crate::drain`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyReport {
    /// How long (s) this proxy lets transactions on a leader about to hand over run before it
    /// gives up on them; the leader waits at most the largest of these (see
    /// [`crate::drain::bound_ms`]). `None`: the proxy did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<u64>,
    /// The leader member on which this proxy holds no open transaction any more, for the
    /// switchover now due; `None` (written as `null`) when none is due or some still run.
    #[serde(default)]
    pub drained: Option<String>,
}

impl ProxyReport {
    /// Reads a key's value leniently: fields of the wrong type count as absent and unknown fields
    /// are ignored, so a newer proxy's report still counts. Only a value that is not a JSON object
    /// is refused (the snapshot then holds a report with nothing drained).
    pub fn parse(value: &str) -> Result<ProxyReport, String> {
        let v: Value = serde_json::from_str(value).map_err(|e| e.to_string())?;
        let Value::Object(o) = v else { return Err("not a JSON object".into()) };
        let drain_timeout = o.get("drain_timeout").and_then(|t| {
            t.as_u64().or_else(|| t.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f.ceil() as u64))
        });
        let drained = o.get("drained").and_then(Value::as_str).map(str::to_string);
        Ok(ProxyReport { drain_timeout, drained })
    }
}

/// The leader's `status` key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The leader's last known WAL position.
    #[serde(default)]
    pub optime: u64,
    /// Permanent slots and their positions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slots: BTreeMap<String, u64>,
    /// Member slots to keep.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retain_slots: Vec<String>,
}

/// The `sync` key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// Leader that wrote it.
    #[serde(default)]
    pub leader: Option<String>,
    /// Comma-separated synchronous standbys (in quorum mode: the voters).
    #[serde(default)]
    pub sync_standby: Option<String>,
    /// How many voters besides itself a member must see to be sure it has every acknowledged
    /// commit (0 in `synchronous_mode: on`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
}

impl SyncState {
    /// The key a leader writes: sorted voters, `null` when there are none, and always a quorum
    /// (Patroni writes it in both modes).
    pub fn new(leader: &str, voters: &[String], quorum: usize) -> SyncState {
        let mut v: Vec<&str> = voters.iter().map(String::as_str).collect();
        v.sort_unstable();
        v.dedup();
        SyncState {
            leader: Some(leader.to_string()),
            sync_standby: (!v.is_empty()).then(|| v.join(",")),
            quorum: Some(quorum as u32),
        }
    }

    /// The members named in `sync_standby`.
    pub fn voters(&self) -> Vec<String> {
        self.sync_standby
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Whether `name` is named in `sync_standby` (exact, item by item).
    pub fn lists(&self, name: &str) -> bool {
        self.voters().iter().any(|v| v == name)
    }

    /// The `quorum` field (0 when absent).
    pub fn quorum(&self) -> usize {
        self.quorum.unwrap_or(0) as usize
    }

    /// Whether the key was written by (for) the leader `name`.
    pub fn leader_is(&self, name: &str) -> bool {
        self.leader.as_deref() == Some(name)
    }

    /// Whether, in `synchronous_mode: on`, the key vouches that `name` holds every commit its
    /// leader acknowledged: `name` is that leader or one of its synchronous standbys. Any other
    /// member may lack some, so it takes over only when forced.
    pub fn vouches_for(&self, name: &str) -> bool {
        self.lists(name) || self.leader_is(name)
    }
}

/// One line of the `history` key: `[timeline, switch_lsn, reason, timestamp, new_leader]`.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    /// Timeline that ended.
    pub timeline: Timeline,
    /// Where it ended.
    pub lsn: Lsn,
    /// Reason PostgreSQL recorded.
    pub reason: String,
    /// When (ISO 8601), if recorded.
    pub timestamp: Option<String>,
    /// Member that promoted, if recorded.
    pub new_leader: Option<String>,
}

impl HistoryEntry {
    /// Patroni's JSON array form.
    pub fn to_json(&self) -> Value {
        let mut v = vec![Value::from(self.timeline), Value::from(self.lsn.0), Value::from(self.reason.clone())];
        if let Some(ts) = &self.timestamp {
            v.push(Value::from(ts.clone()));
            if let Some(l) = &self.new_leader {
                v.push(Value::from(l.clone()));
            }
        }
        Value::Array(v)
    }

    fn from_json(v: &Value) -> Option<Self> {
        let a = v.as_array()?;
        Some(HistoryEntry {
            timeline: u32::try_from(a.first()?.as_u64()?).ok()?,
            lsn: Lsn(a.get(1)?.as_u64()?),
            reason: a.get(2).and_then(|r| r.as_str()).unwrap_or_default().to_string(),
            timestamp: a.get(3).and_then(|t| t.as_str()).map(str::to_string),
            new_leader: a.get(4).and_then(|t| t.as_str()).map(str::to_string),
        })
    }
}

/// A raw key-value pair as the DCS returned it.
#[derive(Clone, Debug, PartialEq)]
pub struct RawKv {
    /// Full key.
    pub key: String,
    /// Value as text.
    pub value: String,
    /// Lease ID (0 for none).
    pub lease: i64,
    /// Modification revision.
    pub mod_revision: i64,
}

/// An immutable snapshot of one cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cluster {
    /// `initialize`: `None` if absent; `Some("")` while the first bootstrap is in progress;
    /// otherwise the PostgreSQL system identifier.
    pub initialize: Option<String>,
    /// Dynamic configuration, if the key exists and parses.
    pub config: Option<DynamicConfig>,
    /// Modification revision of `config`, for compare-and-swap updates.
    pub config_revision: i64,
    /// Leader lock, if held.
    pub leader: Option<Leader>,
    /// Members with live keys, sorted by name.
    pub members: Vec<Member>,
    /// Pending switchover/failover.
    pub failover: Option<Failover>,
    /// Leader status.
    pub status: Status,
    /// Synchronous replication state.
    pub sync: Option<SyncState>,
    /// Modification revision of `sync` (0 when absent), for compare-and-swap updates.
    pub sync_revision: i64,
    /// Timeline history.
    pub history: Vec<HistoryEntry>,
    /// The `failsafe` topology, if the key exists and is a map of names to URLs.
    pub failsafe: Option<crate::failsafe::Topology>,
    /// The running proxies' reports by proxy id (`proxies/<id>`, each on its proxy's lease, so a
    /// dead proxy's report is gone after its TTL). Only the switchover rule reads them.
    pub proxies: BTreeMap<String, ProxyReport>,
    /// The proxies' virtual addresses and who holds each (`proxy_vip/<address>`: the holder's
    /// proxy id, on its claim lease).
    pub proxy_addresses: BTreeMap<String, String>,
    /// The last backup `rampart backup` ran (the `backup` key).
    pub backup: Option<crate::backup::BackupReport>,
    /// DCS revision of the read.
    pub revision: i64,
    /// Keys that could not be parsed, with the reason (reported, never fatal).
    pub problems: Vec<String>,
}

impl Cluster {
    /// Whether `name` is listed in the `sync` key's `sync_standby`, in a key written by the
    /// current leader (Patroni's `is_sync_standby`: a key left by a former leader vouches for
    /// nobody).
    pub fn listed_in_sync_key(&self, name: &str) -> bool {
        let Some(leader) = self.leader.as_ref() else { return false };
        self.sync.as_ref().is_some_and(|s| s.leader_is(&leader.name) && !name.is_empty() && s.lists(name))
    }

    /// Builds a snapshot from the keys under `prefix`.
    pub fn from_kvs(prefix: &ClusterPrefix, kvs: &[RawKv], revision: i64) -> Cluster {
        let mut c = Cluster { revision, ..Default::default() };
        for kv in kvs {
            let Some(rel) = prefix.relative(&kv.key) else { continue };
            let mut bad = |what: &str, e: &dyn std::fmt::Display| c.problems.push(format!("{}: {what}: {e}", kv.key));
            match rel {
                keys::INITIALIZE => c.initialize = Some(kv.value.clone()),
                keys::CONFIG => match serde_json::from_str::<DynamicConfig>(&kv.value) {
                    Ok(mut cfg) => {
                        // What every member uses: the timeouts Patroni would adjust, adjusted
                        // (the writers of the key log the warning).
                        cfg.adjust_timeouts();
                        c.config = Some(cfg);
                        c.config_revision = kv.mod_revision;
                    }
                    Err(e) => bad("unreadable config", &e),
                },
                keys::LEADER => c.leader = Some(Leader::from_kv(kv)),
                keys::STATUS => match serde_json::from_str::<Status>(&kv.value) {
                    Ok(s) => c.status = s,
                    Err(e) => bad("unreadable status", &e),
                },
                keys::FAILOVER => {
                    // An empty value or `{}` means "no request" (Patroni clears it that way).
                    if let Some(f) = parse_failover(&kv.value) {
                        c.failover = Some(f);
                    }
                }
                keys::SYNC => {
                    // The revision is kept even for an unreadable value, so the leader can still
                    // replace it with compare-and-swap.
                    c.sync_revision = kv.mod_revision;
                    match serde_json::from_str::<SyncState>(&kv.value) {
                        Ok(s) => c.sync = Some(s),
                        Err(e) => bad("unreadable sync state", &e),
                    }
                }
                keys::FAILSAFE => match crate::failsafe::parse_topology(&kv.value) {
                    Some(t) => c.failsafe = Some(t),
                    None => bad("unreadable failsafe topology", &"not a map of member names to URLs"),
                },
                keys::BACKUP => match serde_json::from_str::<crate::backup::BackupReport>(&kv.value) {
                    Ok(r) => c.backup = Some(r),
                    Err(e) => bad("unreadable backup report", &e),
                },
                keys::HISTORY => match serde_json::from_str::<Value>(&kv.value) {
                    Ok(Value::Array(items)) => c.history = items.iter().filter_map(HistoryEntry::from_json).collect(),
                    Ok(_) => bad("unreadable history", &"not a list"),
                    Err(e) => bad("unreadable history", &e),
                },
                other => {
                    if let Some(name) = other.strip_prefix(keys::MEMBERS) {
                        if name.is_empty() || name.contains('/') {
                            continue;
                        }
                        match serde_json::from_str::<MemberData>(&kv.value) {
                            Ok(data) => c.members.push(Member { name: name.to_string(), data, lease: kv.lease }),
                            Err(e) => bad("unreadable member", &e),
                        }
                    } else if let Some(id) = other.strip_prefix(keys::PROXIES) {
                        if id.is_empty() || id.contains('/') {
                            continue;
                        }
                        // An unreadable report still stands for a live proxy: it counts as not
                        // drained, so the leader waits for it (boundedly) rather than forget it.
                        let report = ProxyReport::parse(&kv.value).unwrap_or_else(|e| {
                            bad("unreadable proxy report", &e);
                            ProxyReport::default()
                        });
                        c.proxies.insert(id.to_string(), report);
                    } else if let Some(address) = other.strip_prefix(keys::PROXY_ADDRESSES) {
                        if !address.is_empty() && !address.contains('/') {
                            c.proxy_addresses.insert(address.to_string(), kv.value.clone());
                        }
                    }
                }
            }
        }
        c.members.sort_by(|a, b| a.name.cmp(&b.name));
        c
    }

    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The leader's member record, if both the lock and the member key exist.
    pub fn leader_member(&self) -> Option<&Member> {
        self.leader.as_ref().and_then(|l| self.member(&l.name))
    }

    /// Whether `name` holds the leader lock.
    pub fn is_leader(&self, name: &str) -> bool {
        self.leader.as_ref().is_some_and(|l| l.name == name)
    }

    /// Where `timeline` ended, according to `history`: a member whose own WAL on that timeline
    /// goes past this point has diverged from every later timeline.
    pub fn fork_point(&self, timeline: Timeline) -> Option<Lsn> {
        self.history.iter().find(|h| h.timeline == timeline).map(|h| h.lsn)
    }

    /// The point where the leader's history left `timeline`, when WAL that reached `at` on that
    /// timeline went past it: such WAL was never the leader's, and the member holding it cannot
    /// follow the leader without pg_rewind. `None` on the cluster's own timeline or before the
    /// fork (and when the history does not know `timeline`).
    pub fn passed_fork(&self, timeline: Timeline, at: Lsn) -> Option<Lsn> {
        self.fork_point(timeline).filter(|fork| timeline < self.timeline() && at > *fork)
    }

    /// Whether `history` lacks where the timeline before `timeline` ended: the leader on
    /// `timeline` must publish it, or the replicas cannot tell WAL past its fork from its own.
    pub fn lacks_history_of(&self, timeline: Timeline) -> bool {
        timeline > 1 && !self.history.iter().any(|h| h.timeline + 1 == timeline)
    }

    /// The cluster's timeline: one past the newest ended timeline in `history`, or the
    /// leader's published timeline if that is newer.
    pub fn timeline(&self) -> Timeline {
        let from_history = self.history.iter().map(|h| h.timeline + 1).max().unwrap_or(1);
        let from_leader = self.leader_member().and_then(|m| m.data.timeline).unwrap_or(0);
        from_history.max(from_leader)
    }

    /// The dynamic config in force: the DCS value, or defaults if the key is missing.
    pub fn effective_config(&self, fallback: &DynamicConfig) -> DynamicConfig {
        self.config.clone().unwrap_or_else(|| fallback.clone())
    }
}

fn parse_failover(value: &str) -> Option<Failover> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    match serde_json::from_str::<Failover>(v) {
        Ok(f) if f == Failover::default() => None,
        Ok(f) => Some(f),
        // Legacy `leader:candidate` form.
        Err(_) => {
            let (l, m) = v.split_once(':')?;
            let s = |x: &str| (!x.is_empty()).then(|| x.to_string());
            Some(Failover { leader: s(l), member: s(m), scheduled_at: None, force: false })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> RawKv {
        RawKv { key: key.into(), value: value.into(), lease: 7, mod_revision: 3 }
    }

    #[test]
    fn reads_patroni_written_keys() {
        let p = ClusterPrefix::new("/service", "pg");
        let kvs = vec![
            kv("/service/pg/initialize", "7301234567890123456"),
            kv(
                "/service/pg/config",
                r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"postgresql":{"use_pg_rewind":true}}"#,
            ),
            kv("/service/pg/leader", "n2"),
            kv(
                "/service/pg/members/n2",
                r#"{"conn_url":"postgres://127.0.0.1:5433/postgres","api_url":"http://127.0.0.1:8009/patroni","state":"running","role":"primary","version":"4.1.4","xlog_location":50331968,"timeline":2}"#,
            ),
            kv(
                "/service/pg/members/n1",
                r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"replica","xlog_location":50331000,"timeline":2,"replication_state":"streaming","tags":{"nofailover":true,"zone":"a"}}"#,
            ),
            kv(
                "/service/pg/history",
                r#"[[1,50331808,"no recovery target specified","2024-01-01T00:00:00+00:00","n2"]]"#,
            ),
            kv("/service/pg/status", r#"{"optime":50331968,"slots":{"n1":50331000}}"#),
            kv("/service/pg/failover", "{}"),
            kv("/service/other/leader", "x"),
        ];
        let c = Cluster::from_kvs(&p, &kvs, 42);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(c.initialize.as_deref(), Some("7301234567890123456"));
        assert!(c.config.as_ref().unwrap().postgresql.use_pg_rewind);
        assert!(c.is_leader("n2"));
        assert_eq!(c.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["n1", "n2"]);
        assert!(c.member("n1").unwrap().data.tags.nofailover());
        assert_eq!(c.member("n1").unwrap().data.tags.other["zone"], "a");
        assert_eq!(c.leader_member().unwrap().data.conn_host_port(), Some(("127.0.0.1".into(), 5433)));
        assert_eq!(c.timeline(), 2);
        assert_eq!(c.status.optime, 50331968);
        assert_eq!(c.failover, None);
        assert_eq!(c.history[0].new_leader.as_deref(), Some("n2"));
        assert_eq!(c.revision, 42);
    }

    #[test]
    fn bad_member_is_reported_not_fatal() {
        let p = ClusterPrefix::new("service", "pg");
        let c = Cluster::from_kvs(&p, &[kv("/service/pg/members/x", "not json"), kv("/service/pg/leader", "x")], 1);
        assert_eq!(c.members.len(), 0);
        assert_eq!(c.problems.len(), 1);
        assert!(c.leader.is_some());
    }

    #[test]
    fn proxy_reports_are_read_leniently_and_nothing_else_sees_them() {
        let p = ClusterPrefix::new("service", "pg");
        let base = [kv("/service/pg/leader", "a"), kv("/service/pg/members/a", r#"{"state":"running"}"#)];
        let mut kvs = base.to_vec();
        kvs.extend([
            kv("/service/pg/proxies/h-1", r#"{"drain_timeout":10,"drained":"a"}"#),
            kv("/service/pg/proxies/h-2", r#"{"drain_timeout":null,"drained":null,"future":1}"#),
            kv("/service/pg/proxies/h-3", r#"{"drain_timeout":"7","drained":3}"#),
            kv("/service/pg/proxies/h-4", "not json"),
            kv("/service/pg/proxies/h-5", r#"{"drain_timeout":2.5}"#),
            kv("/service/pg/proxies/", "{}"),
            kv("/service/pg/proxies/x/y", "{}"),
            kv("/service/pg/proxy_vip/10.0.0.5", "h-1"),
            kv("/service/pg/proxy_vip/", "h-2"),
        ]);
        let c = Cluster::from_kvs(&p, &kvs, 1);
        let report = |t: Option<u64>, d: Option<&str>| ProxyReport { drain_timeout: t, drained: d.map(Into::into) };
        assert_eq!(c.proxies["h-1"], report(Some(10), Some("a")));
        assert_eq!(c.proxies["h-2"], report(None, None), "unknown fields ignored");
        assert_eq!(c.proxies["h-3"], report(None, None), "wrong types count as absent");
        assert_eq!(c.proxies["h-4"], report(None, None), "a malformed report still stands for a live proxy");
        assert_eq!(c.proxies["h-5"], report(Some(3), None));
        assert_eq!(c.proxies.len(), 5);
        assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
        assert_eq!(c.proxy_addresses, BTreeMap::from([("10.0.0.5".to_string(), "h-1".to_string())]));
        // Everything else is what the same keys without the proxies give.
        let without = Cluster::from_kvs(&p, &base, 1);
        assert_eq!(
            Cluster { proxies: BTreeMap::new(), proxy_addresses: BTreeMap::new(), problems: vec![], ..c },
            without
        );
        // What a proxy writes: both fields, `null` when nothing is drained.
        assert_eq!(serde_json::to_string(&report(Some(5), None)).unwrap(), r#"{"drain_timeout":5,"drained":null}"#);
    }

    #[test]
    fn failover_forms() {
        assert_eq!(parse_failover(""), None);
        assert_eq!(parse_failover("{}"), None);
        assert_eq!(parse_failover(r#"{"leader":"a","member":"b"}"#).unwrap().member.as_deref(), Some("b"));
        assert_eq!(parse_failover("a:b").unwrap().leader.as_deref(), Some("a"));
    }

    #[test]
    fn url_parsing() {
        assert_eq!(parse_url_host_port("postgres://u:p@h:5/postgres", 1), Some(("h".into(), 5)));
        assert_eq!(parse_url_host_port("http://[::1]:8008/patroni", 1), Some(("::1".into(), 8008)));
        assert_eq!(parse_url_host_port("postgres://h/postgres", 5432), Some(("h".into(), 5432)));
        assert_eq!(parse_url_host_port("", 1), None);
    }

    #[test]
    fn sync_key_round_trip_and_membership() {
        let p = ClusterPrefix::new("service", "pg");
        let c =
            Cluster::from_kvs(&p, &[kv("/service/pg/sync", r#"{"leader":"a","sync_standby":"c,b","quorum":1}"#)], 9);
        let s = c.sync.as_ref().unwrap();
        assert_eq!(c.sync_revision, 3);
        assert_eq!(s.voters(), ["c", "b"]);
        assert!(s.lists("b") && !s.lists("a") && s.leader_is("a"));
        assert_eq!(s.quorum(), 1);
        let w = SyncState::new("a", &["c".into(), "b".into()], 1);
        assert_eq!(serde_json::to_string(&w).unwrap(), r#"{"leader":"a","sync_standby":"b,c","quorum":1}"#);
        let empty = SyncState::new("a", &[], 0);
        assert_eq!(serde_json::to_string(&empty).unwrap(), r#"{"leader":"a","sync_standby":null,"quorum":0}"#);
        assert!(empty.voters().is_empty());
    }

    #[test]
    fn sync_tags() {
        assert!(Tags::default().can_be_sync());
        assert!(!Tags { nosync: Some(true), ..Default::default() }.can_be_sync());
        assert!(!Tags { sync_priority: Some(0.into()), ..Default::default() }.can_be_sync());
        assert_eq!(Tags { sync_priority: Some(5.into()), ..Default::default() }.sync_priority(), 5);
    }

    fn tags(yaml_like_json: &str) -> Tags {
        serde_json::from_str(yaml_like_json).unwrap()
    }

    #[test]
    fn tags_eligibility_follows_patroni() {
        let cases = [
            ("no tags", r#"{}"#, true, 1),
            ("nofailover", r#"{"nofailover": true}"#, false, 0),
            ("priority 0", r#"{"failover_priority": 0}"#, false, 0),
            ("priority as text", r#"{"failover_priority": "2"}"#, true, 2),
            ("priority not a number counts as absent", r#"{"failover_priority": "high"}"#, true, 1),
            (
                "explicit nofailover false beats priority 0",
                r#"{"failover_priority": "0", "nofailover": false}"#,
                true,
                0,
            ),
            ("explicit nofailover true beats priority 1", r#"{"failover_priority": 1, "nofailover": true}"#, false, 0),
        ];
        for (rule, json, eligible, priority) in cases {
            let t = tags(json);
            assert_eq!(t.can_fail_over(), eligible, "{rule}");
            assert_eq!(t.priority(), priority, "{rule}");
        }
        let t = tags(r#"{"nosync": false, "sync_priority": 0}"#);
        assert!(t.can_be_sync(), "explicit nosync false beats sync_priority 0");
    }

    #[test]
    fn tags_are_published_as_patroni_publishes_them() {
        // As written, in name order; a false boolean only beside its priority.
        let t = tags(r#"{"zone": "eu", "nofailover": true, "failover_priority": "1"}"#).normalized();
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"failover_priority":"1","nofailover":true,"zone":"eu"}"#);
        let t = tags(r#"{"nofailover": false, "failover_priority": 0}"#).normalized();
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"failover_priority":0,"nofailover":false}"#);
        let t =
            tags(r#"{"nofailover": false, "nosync": false, "noloadbalance": false, "nostream": false}"#).normalized();
        assert_eq!(serde_json::to_string(&t).unwrap(), "{}");
    }

    #[test]
    fn conflicting_tags_are_named_in_patronis_words() {
        let t = tags(r#"{"nofailover": true, "failover_priority": "1"}"#);
        assert_eq!(
            t.conflicts(),
            ["Conflicting configuration between nofailover: True and failover_priority: 1. Defaulting to nofailover: True"]
        );
        let t = tags(r#"{"nofailover": false, "failover_priority": 0, "nosync": true, "sync_priority": 3}"#);
        assert_eq!(t.conflicts().len(), 2);
        assert!(t.conflicts()[0].ends_with("Defaulting to nofailover: False"), "{:?}", t.conflicts());
        assert!(tags(r#"{"nofailover": true, "failover_priority": 0}"#).conflicts().is_empty());
    }

    #[test]
    fn sync_key_membership_is_exact_per_item_and_only_in_the_current_leaders_key() {
        let mut c = Cluster {
            leader: Some(Leader { name: "p".into(), lease: 1, mod_revision: 1 }),
            sync: Some(SyncState { leader: Some("p".into()), sync_standby: Some("n1, n22 ,".into()), quorum: None }),
            ..Default::default()
        };
        assert!(c.listed_in_sync_key("n1"));
        assert!(c.listed_in_sync_key("n22"));
        assert!(!c.listed_in_sync_key("n2"));
        assert!(!c.listed_in_sync_key(""));
        let key = c.sync.clone().unwrap();
        assert!(key.vouches_for("p") && key.vouches_for("n22") && !key.vouches_for("n2"));
        c.leader.as_mut().unwrap().name = "n1".into();
        assert!(!c.listed_in_sync_key("n22"), "a key written by a former leader vouches for nobody");
        c.leader = None;
        assert!(!c.listed_in_sync_key("n22"));
    }
}
