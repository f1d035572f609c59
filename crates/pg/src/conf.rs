//! Text of the files Rampart manages for PostgreSQL: `postgresql.conf`, `pg_hba.conf`, the libpq
//! password file, and the libpq connection strings inside them. Pure functions, no I/O; the
//! writing lives in [`crate::configure`].
//!
//! Invariants:
//! * every value is quoted for the layer it lands in (libpq conninfo, then `postgresql.conf`), so
//!   no host, user, path or parameter value can break out of its field;
//! * each parameter appears once, so what the file says is what PostgreSQL uses;
//! * `listen_addresses` and `port` always come from [`PgSettings`], never from user parameters,
//!   because the agent and the other members depend on them; `hba_file` is `<data_dir>/pg_hba.conf`
//!   unless a parameter names another file;
//! * recovery settings (`primary_conninfo`, `primary_slot_name`, `recovery_target_timeline`) come
//!   only from the requested role; a replica's `recovery_conf` settings win over parameters of the
//!   same name, and its recovery targets are always empty ([`crate::recovery`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

use rampart_core::{StartRole, Upstream};

use crate::error::{PgError, Result};
use crate::settings::{LocalConnect, PgSettings};

/// First line of a managed `postgresql.conf`, used to tell it from initdb's original.
pub const MANAGED_HEADER: &str =
    "# Managed by Rampart: rewritten at every start and follow. Put your settings in the agent's configuration.";

/// Where initdb's original `postgresql.conf` is kept; the managed file includes it first.
pub const BASE_CONF: &str = "postgresql.base.conf";

/// Parameters set from [`PgSettings`] that user parameters may not override.
const FORCED: &[&str] = &["listen_addresses", "port"];

/// Parameters that only the requested role decides.
const RECOVERY: &[&str] = &["primary_conninfo", "primary_slot_name", "recovery_target_timeline"];

/// Whether PostgreSQL's `pending_restart` flag on parameter `name` means a restart would change
/// something the user configured. Not for the recovery settings: they follow the role the server
/// was started in, and a promoted replica whose file is rewritten as a primary's drops
/// `recovery_target_timeline`, a postmaster-level setting, which PostgreSQL flags as pending
/// although a primary ignores it and the next start as a replica writes it again.
/// The same holds for the other recovery settings (a replica's `recovery_conf`, the targets of a
/// bootstrap's first start).
pub fn restart_would_apply(name: &str) -> bool {
    !RECOVERY.iter().any(|r| r.eq_ignore_ascii_case(name)) && !crate::recovery::is_recovery_parameter(name)
}

/// A setting's value in the greatest unit that shows it exactly, as Patroni's
/// `convert_int_from_base_unit` writes a value given in the setting's base `unit`
/// (`pg_settings.unit`, e.g. `8kB`, `kB`, `ms`, `s`): `16384` pages of `8kB` is `128MB`. Anything
/// else (a value with its own unit, a word, a real number, no unit) is returned as it is.
pub fn human_value(value: &str, unit: Option<&str>) -> String {
    const MEMORY: &[(&str, u64)] = &[("B", 1), ("kB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("TB", 1 << 40)];
    const TIME: &[(&str, u64)] = &[("ms", 1), ("s", 1000), ("min", 60_000), ("h", 3_600_000), ("d", 86_400_000)];
    let (Ok(n), Some(unit)) = (value.trim().parse::<u64>(), unit) else { return value.to_string() };
    // `8kB`: a multiple of a unit.
    let digits = unit.find(|c: char| !c.is_ascii_digit()).unwrap_or(unit.len());
    let factor: u64 = if digits == 0 { 1 } else { unit[..digits].parse().unwrap_or(1) };
    let name = &unit[digits..];
    let Some(scale) = [MEMORY, TIME].into_iter().find(|s| s.iter().any(|(u, _)| *u == name)) else {
        return value.to_string();
    };
    let base = scale.iter().find(|(u, _)| *u == name).map_or(1, |(_, m)| *m);
    let Some(total) = n.checked_mul(factor).and_then(|v| v.checked_mul(base)) else { return value.to_string() };
    if total == 0 {
        return format!("0{name}");
    }
    match scale.iter().rev().find(|(_, m)| total % m == 0) {
        Some((u, m)) => format!("{}{u}", total / m),
        None => value.to_string(),
    }
}

/// Include directives are not parameters; accepting them would let a setting re-order the file.
const DIRECTIVES: &[&str] = &["include", "include_if_exists", "include_dir"];

/// The parameters of the managed `postgresql.conf`, in file order, each once.
pub fn effective_parameters(settings: &PgSettings, role: &StartRole) -> Result<Vec<(String, String)>> {
    if !settings.data_dir.is_absolute() {
        return Err(PgError::Settings(format!(
            "data_dir must be an absolute path, got {}",
            settings.data_dir.display()
        )));
    }
    // Parameter names are case-insensitive in PostgreSQL: compare them lower-cased.
    let mut user: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &settings.parameters {
        check_parameter_name(name)?;
        user.insert(name.to_ascii_lowercase(), value.clone());
    }
    convert_wal_keep_segments(&mut user)?;
    let forced = [("listen_addresses", settings.listen_hosts.join(",")), ("port", settings.port.to_string())];
    let mut defaults: Vec<(&str, String)> = vec![
        ("hba_file", settings.data_dir.join("pg_hba.conf").display().to_string()),
        ("wal_level", "replica".into()),
        ("hot_standby", "on".into()),
        ("max_wal_senders", "10".into()),
        ("max_replication_slots", "10".into()),
        ("wal_log_hints", "on".into()),
        ("wal_keep_size", "128MB".into()),
    ];
    if let LocalConnect::Socket(dir) = &settings.local {
        defaults.push(("unix_socket_directories", dir.display().to_string()));
    }

    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in forced {
        out.push((k.to_string(), v));
    }
    for (k, v) in &defaults {
        let v = user.get(*k).cloned().unwrap_or_else(|| v.clone());
        out.push((k.to_string(), v));
    }
    let recovery = match role {
        StartRole::Replica { .. } => crate::recovery::replica_settings(&settings.recovery_conf),
        StartRole::StandbyLeader(sc) => crate::recovery::standby_leader_settings(&settings.recovery_conf, sc),
        StartRole::Primary => Vec::new(),
    };
    let taken = |k: &str| {
        FORCED.contains(&k)
            || RECOVERY.contains(&k)
            || defaults.iter().any(|(d, _)| *d == k)
            || recovery.iter().any(|(r, _)| r == k)
    };
    for (k, v) in &user {
        if !taken(k) {
            out.push((k.clone(), v.clone()));
        }
    }
    if let StartRole::Replica { upstream } = role {
        if let Some(up) = upstream {
            out.push(("primary_conninfo".into(), primary_conninfo(settings, up)));
            if settings.use_slots {
                out.push(("primary_slot_name".into(), slot_name(&settings.name)));
            }
        }
        out.push(("recovery_target_timeline".into(), "latest".into()));
        out.extend(recovery);
    } else if let StartRole::StandbyLeader(sc) = role {
        // The other cluster's primary, through the slot it keeps for this cluster (none unless
        // `primary_slot_name` names one: the other cluster does not know our member names).
        if let Some(host) = &sc.host {
            let up = Upstream { name: String::new(), host: host.clone(), port: sc.port };
            out.push(("primary_conninfo".into(), primary_conninfo(settings, &up)));
            if let (true, Some(slot)) = (settings.use_slots, &sc.primary_slot_name) {
                out.push(("primary_slot_name".into(), slot.clone()));
            }
        }
        out.push(("recovery_target_timeline".into(), "latest".into()));
        out.extend(recovery);
    }
    Ok(out)
}

/// `wal_keep_segments` is gone since PostgreSQL 13 (Rampart's minimum), and a file that sets it
/// does not start. As Patroni does (`patroni/postgresql/config.py`), it becomes
/// `wal_keep_size = <segments × 16>MB` (the usual segment size) unless `wal_keep_size` is set too,
/// and is never written itself.
fn convert_wal_keep_segments(user: &mut BTreeMap<String, String>) -> Result<()> {
    let Some(segments) = user.remove(crate::guc::WAL_KEEP_SEGMENTS) else { return Ok(()) };
    if user.contains_key("wal_keep_size") {
        return Ok(());
    }
    let n = crate::guc::value::parse_int(&segments, None).ok().filter(|n| *n >= 0.0).ok_or_else(|| {
        PgError::Settings(format!("wal_keep_segments: expected a number of WAL segments, got {segments:?}"))
    })?;
    user.insert("wal_keep_size".into(), format!("{}MB", n * 16.0));
    Ok(())
}

/// The managed `postgresql.conf`: includes [`BASE_CONF`], then sets every parameter of
/// [`effective_parameters`] (later lines win in PostgreSQL, so ours override initdb's).
pub fn render_postgresql_conf(settings: &PgSettings, role: &StartRole) -> Result<String> {
    let params = effective_parameters(settings, role)?;
    let mut s = String::new();
    s.push_str(MANAGED_HEADER);
    s.push('\n');
    s.push_str(&format!("include {}\n\n", conf_quote(BASE_CONF)));
    for (k, v) in params {
        s.push_str(&format!("{k} = {}\n", conf_quote(&v)));
    }
    Ok(s)
}

/// A managed `pg_hba.conf` (`postgresql.pg_hba`): the configured lines under a header.
pub fn render_hba(lines: &[String]) -> String {
    let mut s = String::from("# Managed by Rampart from postgresql.pg_hba: rewritten at every start and reload.\n");
    for l in lines {
        s.push_str(l.trim_end());
        s.push('\n');
    }
    s
}

/// The `pg_hba.conf` of a custom bootstrap's first start, as Patroni writes it: the restored
/// cluster's passwords are unknown, so the superuser (and the replication role) may connect the
/// way the agent does without one until the bootstrap has set the configured passwords; then the
/// operator's file comes back.
pub fn bootstrap_trust_hba(settings: &PgSettings) -> Vec<String> {
    let (superuser, replication) = (&settings.superuser.username, &settings.replication.username);
    let mut lines = vec![
        format!("local replication {} trust", hba_name(replication)),
        format!("local all {} trust", hba_name(superuser)),
    ];
    if let LocalConnect::Tcp(host) = &settings.local {
        let net = match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(_)) => format!("{host}/128"),
            Ok(std::net::IpAddr::V4(_)) => format!("{host}/32"),
            // A name: pg_hba.conf takes host names too.
            Err(_) => host.clone(),
        };
        lines.push(format!("host all {} {net} trust", hba_name(superuser)));
    }
    lines
}

/// A role name as a pg_hba.conf field: double-quoted, so no name can become a keyword or a list
/// (pg_hba.conf has no escape for a double quote inside a name: one is doubled, which keeps the
/// line whole and matches no role).
fn hba_name(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What the bootstrap appends to the `pg_hba.conf` initdb (or a custom bootstrap) left: the
/// `bootstrap.pg_hba` lines after a blank line, as Patroni's `append_pg_hba` writes them.
pub fn appended_hba(lines: &[String]) -> String {
    let mut s = String::from("\n# bootstrap.pg_hba, appended by Rampart after the bootstrap\n");
    for l in lines {
        s.push_str(l.trim_end());
        s.push('\n');
    }
    s
}

/// The libpq password file: one wildcard line per role that has a password (replication first,
/// then superuser, then rewind), since the same roles are used against every member.
pub fn render_pgpass(settings: &PgSettings) -> String {
    let mut s = String::new();
    let roles = [Some(&settings.replication), Some(&settings.superuser), settings.rewind.as_ref()];
    for c in roles.into_iter().flatten() {
        if let Some(p) = &c.password {
            s.push_str(&format!("*:*:*:{}:{}\n", pgpass_escape(&c.username), pgpass_escape(p)));
        }
    }
    s
}

/// Escapes one field of a password file line (`\` and `:` get a backslash).
pub fn pgpass_escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        if c == '\\' || c == ':' {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// `primary_conninfo` for streaming from `up`: the password comes from the password file.
pub fn primary_conninfo(settings: &PgSettings, up: &Upstream) -> String {
    let port = up.port.to_string();
    let passfile = settings.pgpass.display().to_string();
    let mut pairs = vec![
        ("host", up.host.as_str()),
        ("port", &port),
        ("user", &settings.replication.username),
        ("passfile", &passfile),
        ("application_name", &settings.name),
    ];
    pairs.extend(settings.replication.option_pairs());
    conninfo(&pairs)
}

/// The connection string a custom replica creation method gets as `--connstring` to copy from
/// `up`, as Patroni writes it: no password (it is in the password file `PGPASSFILE` names).
pub fn replica_source_conninfo(settings: &PgSettings, up: &Upstream) -> String {
    let port = up.port.to_string();
    let mut pairs = vec![
        ("dbname", "postgres"),
        ("user", settings.replication.username.as_str()),
        ("host", up.host.as_str()),
        ("port", &port),
    ];
    pairs.extend(settings.replication.option_pairs());
    conninfo(&pairs)
}

/// The connection string for the superuser to this member's own server, as the agent reaches it
/// (the Unix socket directory or the local TCP host), without a password (it is in the password
/// file): what `bootstrap.post_bootstrap` is given, as Patroni gives it.
pub fn local_superuser_conninfo(settings: &PgSettings) -> String {
    let port = settings.port.to_string();
    let host = match &settings.local {
        crate::LocalConnect::Tcp(host) => host.clone(),
        crate::LocalConnect::Socket(dir) => dir.display().to_string(),
    };
    let mut pairs = vec![
        ("dbname", "postgres"),
        ("user", settings.superuser.username.as_str()),
        ("host", host.as_str()),
        ("port", &port),
    ];
    if matches!(settings.local, crate::LocalConnect::Tcp(_)) {
        pairs.extend(settings.superuser.option_pairs());
    }
    conninfo(&pairs)
}

/// A libpq `key=value` connection string.
pub fn conninfo(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={}", quote_conninfo_value(v))).collect::<Vec<_>>().join(" ")
}

/// Quotes a conninfo value when libpq needs it: empty, or holding whitespace, `'` or `\`.
/// Inside the quotes, `'` and `\` get a backslash.
pub fn quote_conninfo_value(v: &str) -> Cow<'_, str> {
    let plain = !v.is_empty() && !v.chars().any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if plain {
        return Cow::Borrowed(v);
    }
    let mut s = String::with_capacity(v.len() + 2);
    s.push('\'');
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('\'');
    Cow::Owned(s)
}

/// Parses a libpq `key=value` connection string (the inverse of [`conninfo`]).
pub fn parse_conninfo(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut it = s.chars().peekable();
    loop {
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = it.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.next() != Some('=') {
            return Err(format!("missing \"=\" after {key:?}"));
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if it.next_if_eq(&'\'').is_some() {
            loop {
                match it.next() {
                    None => return Err(format!("unterminated quoted value for {key:?}")),
                    Some('\'') => break,
                    Some('\\') => value.push(it.next().ok_or_else(|| format!("dangling backslash in {key:?}"))?),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = it.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(it.next().ok_or_else(|| format!("dangling backslash in {key:?}"))?);
                } else {
                    value.push(c);
                }
            }
        }
        out.insert(key, value);
    }
}

/// `(host, port)` of a `primary_conninfo`, either `key=value` or URI form; the first host when it
/// lists several. `None` when it names no host (empty, or a Unix socket default).
pub fn conninfo_host_port(s: &str) -> Option<(String, u16)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        return rampart_core::model::parse_url_host_port(s, 5432);
    }
    let map = parse_conninfo(s).ok()?;
    let host = map.get("host").or_else(|| map.get("hostaddr"))?.split(',').next()?.trim().to_string();
    if host.is_empty() {
        return None;
    }
    let port = match map.get("port") {
        Some(p) => p.split(',').next()?.trim().parse().ok()?,
        None => 5432,
    };
    Some((host, port))
}

/// A `postgresql.conf` string literal: single quotes, `'` doubled, `\` and line breaks escaped.
pub fn conf_quote(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('\'');
    for c in v.chars() {
        match c {
            '\'' => s.push_str("''"),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            c => s.push(c),
        }
    }
    s.push('\'');
    s
}

/// The replication slot name for a member, as Patroni derives it: lower case, every character
/// outside `[a-z0-9_]` replaced by `_`, at most 63 bytes.
pub fn slot_name(member: &str) -> String {
    rampart_core::slots::slot_name_from_member_name(member)
}

/// PostgreSQL's lexer accepts `ID` or `ID.ID`, where an ID is a letter or `_` followed by
/// letters, digits and `_`. Anything else would corrupt the file.
pub(crate) fn check_parameter_name(name: &str) -> Result<()> {
    let id = |p: &str| {
        let mut cs = p.chars();
        matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 || !parts.iter().all(|p| id(p)) {
        return Err(PgError::Settings(format!("{name:?} is not a valid parameter name")));
    }
    if DIRECTIVES.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(PgError::Settings(format!("{name:?} is a directive, not a parameter")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_base_units_are_shown_as_patroni_shows_them() {
        assert_eq!(human_value("16384", Some("8kB")), "128MB");
        assert_eq!(human_value("1025", Some("kB")), "1025kB");
        assert_eq!(human_value("1024", Some("kB")), "1MB");
        assert_eq!(human_value("60000", Some("ms")), "1min");
        assert_eq!(human_value("90", Some("s")), "90s");
        assert_eq!(human_value("0", Some("ms")), "0ms");
        assert_eq!(human_value("256MB", Some("8kB")), "256MB", "already with a unit");
        assert_eq!(human_value("100", None), "100");
        assert_eq!(human_value("on", None), "on");
        assert_eq!(human_value("-1", Some("kB")), "-1", "a negative value means something else");
    }
    use crate::settings::Credentials;

    fn settings() -> PgSettings {
        let mut s = PgSettings::new("Node-1.dc", "/var/lib/pg/n1");
        s.listen_hosts = vec!["127.0.0.1".into(), "10.0.0.1".into()];
        s.port = 5433;
        s.pgpass = "/var/lib/pg/my pass".into();
        s.replication = Credentials::new("repl user", "x");
        s.local = LocalConnect::Socket("/run/pg".into());
        s
    }

    fn up() -> Upstream {
        Upstream { name: "n2".into(), host: "10.0.0.2".into(), port: 5432 }
    }

    #[test]
    fn wal_keep_segments_becomes_wal_keep_size_as_patroni_does() {
        let mut s = PgSettings::new("n1", "/data/n1");
        s.parameters.insert("wal_keep_segments".into(), "8".into());
        let params = effective_parameters(&s, &StartRole::Primary).unwrap();
        assert!(params.iter().all(|(k, _)| k != "wal_keep_segments"), "never written as is");
        assert!(params.contains(&("wal_keep_size".into(), "128MB".into())), "{params:?}");
        s.parameters.insert("wal_keep_size".into(), "1GB".into());
        let params = effective_parameters(&s, &StartRole::Primary).unwrap();
        assert!(params.contains(&("wal_keep_size".into(), "1GB".into())), "an explicit wal_keep_size wins");
        assert!(params.iter().all(|(k, _)| k != "wal_keep_segments"));
        s.parameters.remove("wal_keep_size");
        s.parameters.insert("WAL_KEEP_SEGMENTS".into(), "lots".into());
        s.parameters.remove("wal_keep_segments");
        let e = effective_parameters(&s, &StartRole::Primary).unwrap_err().to_string();
        assert!(e.contains("wal_keep_segments: expected a number of WAL segments"), "{e}");
    }

    #[test]
    fn primary_conf() {
        let mut s = settings();
        s.parameters.insert("port".into(), "1".into());
        s.parameters.insert("Max_WAL_Senders".into(), "20".into());
        s.parameters.insert("shared_buffers".into(), "256MB".into());
        s.parameters.insert("primary_conninfo".into(), "host=evil".into());
        s.parameters.insert("log_line_prefix".into(), "%m [%p] it's".into());
        let text = render_postgresql_conf(&s, &StartRole::Primary).unwrap();
        let expected = format!(
            "{MANAGED_HEADER}\n\
             include 'postgresql.base.conf'\n\
             \n\
             listen_addresses = '127.0.0.1,10.0.0.1'\n\
             port = '5433'\n\
             hba_file = '/var/lib/pg/n1/pg_hba.conf'\n\
             wal_level = 'replica'\n\
             hot_standby = 'on'\n\
             max_wal_senders = '20'\n\
             max_replication_slots = '10'\n\
             wal_log_hints = 'on'\n\
             wal_keep_size = '128MB'\n\
             unix_socket_directories = '/run/pg'\n\
             log_line_prefix = '%m [%p] it''s'\n\
             shared_buffers = '256MB'\n"
        );
        assert_eq!(text, expected);
        // A file of the operator's own, as Patroni's `hba_file`.
        s.parameters.insert("hba_file".into(), "/etc/postgresql/15/main/pg_hba.conf".into());
        let text = render_postgresql_conf(&s, &StartRole::Primary).unwrap();
        assert!(text.contains("\nhba_file = '/etc/postgresql/15/main/pg_hba.conf'\n"), "{text}");
        assert_eq!(text.matches("hba_file").count(), 1, "{text}");
    }

    #[test]
    fn recovery_settings_pending_a_restart_ask_for_none() {
        for name in ["recovery_target_timeline", "primary_conninfo", "Primary_Slot_Name", "recovery_target_time"] {
            assert!(!restart_would_apply(name), "{name}");
        }
        for name in ["shared_buffers", "max_connections", "wal_level", "archive_mode"] {
            assert!(restart_would_apply(name), "{name}");
        }
    }

    #[test]
    fn replica_conf_has_recovery_settings() {
        let s = settings();
        let text = render_postgresql_conf(&s, &StartRole::Replica { upstream: Some(up()) }).unwrap();
        assert!(text.ends_with(
            "primary_conninfo = 'host=10.0.0.2 port=5432 user=''repl user'' passfile=''/var/lib/pg/my pass'' application_name=Node-1.dc'\n\
             primary_slot_name = 'node_1_dc'\n\
             recovery_target_timeline = 'latest'\n\
             recovery_target = ''\n\
             recovery_target_lsn = ''\n\
             recovery_target_name = ''\n\
             recovery_target_time = ''\n\
             recovery_target_xid = ''\n"
        ), "{text}");

        let mut no_slots = settings();
        no_slots.use_slots = false;
        let text = render_postgresql_conf(&no_slots, &StartRole::Replica { upstream: Some(up()) }).unwrap();
        assert!(!text.contains("primary_slot_name"));

        let text = render_postgresql_conf(&s, &StartRole::Replica { upstream: None }).unwrap();
        assert!(!text.contains("primary_conninfo"));
        assert!(text.contains("recovery_target_timeline = 'latest'\n"));
    }

    #[test]
    fn a_standby_leader_recovers_from_the_other_cluster_with_its_slot_and_archive() {
        use rampart_core::standby_cluster::StandbyCluster;
        let mut s = settings();
        s.recovery_conf.insert("restore_command".into(), "cp /own/%f %p".into());
        s.recovery_conf.insert("archive_cleanup_command".into(), "true".into());
        let remote = StandbyCluster {
            host: Some("10.9.0.1,10.9.0.2".into()),
            port: 5433,
            primary_slot_name: Some("dc2".into()),
            restore_command: Some("cp /remote/%f %p".into()),
            ..Default::default()
        };
        let params = effective_parameters(&s, &StartRole::StandbyLeader(remote.clone())).unwrap();
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let info = parse_conninfo(get("primary_conninfo").unwrap()).unwrap();
        assert_eq!((info["host"].as_str(), info["port"].as_str()), ("10.9.0.1,10.9.0.2", "5433"));
        assert_eq!(info["application_name"], "Node-1.dc");
        assert_eq!(get("primary_slot_name"), Some("dc2"), "the slot the other cluster keeps, not our name");
        assert_eq!(get("restore_command"), Some("cp /remote/%f %p"), "the other cluster's archive");
        assert_eq!(get("archive_cleanup_command"), Some("true"), "recovery_conf's where the section says nothing");
        assert_eq!(get("recovery_target_timeline"), Some("latest"));
        assert_eq!(params.iter().filter(|(n, _)| n == "restore_command").count(), 1);
        // No slot unless the section names one; the archive alone when no host is given.
        let no_slot = StandbyCluster { primary_slot_name: None, ..remote.clone() };
        let params = effective_parameters(&s, &StartRole::StandbyLeader(no_slot)).unwrap();
        assert!(params.iter().all(|(n, _)| n != "primary_slot_name"), "{params:?}");
        let archive_only = StandbyCluster { host: None, ..remote };
        let params = effective_parameters(&s, &StartRole::StandbyLeader(archive_only)).unwrap();
        assert!(params.iter().all(|(n, _)| n != "primary_conninfo"), "{params:?}");
        assert!(params.contains(&("restore_command".into(), "cp /remote/%f %p".into())));
    }

    #[test]
    fn recovery_conf_applies_to_replicas_only_and_wins_over_parameters() {
        let mut s = settings();
        s.parameters.insert("restore_command".into(), "cp /old/%f %p".into());
        s.parameters.insert("recovery_target_time".into(), "2026-01-01".into());
        s.recovery_conf.insert("restore_command".into(), "pgbackrest --stanza=main archive-get %f \"%p\"".into());
        s.recovery_conf.insert("archive_cleanup_command".into(), "true".into());
        let params = |role| effective_parameters(&s, &role).unwrap();
        let replica = params(StartRole::Replica { upstream: Some(up()) });
        let get = |ps: &[(String, String)], name: &str| -> Vec<String> {
            ps.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
        };
        assert_eq!(get(&replica, "restore_command"), ["pgbackrest --stanza=main archive-get %f \"%p\""]);
        assert_eq!(get(&replica, "archive_cleanup_command"), ["true"]);
        assert_eq!(get(&replica, "recovery_target_time"), [""], "a replica never has a target");
        let primary = params(StartRole::Primary);
        assert_eq!(get(&primary, "restore_command"), ["cp /old/%f %p"], "the parameter, for pg_rewind");
        assert!(get(&primary, "archive_cleanup_command").is_empty());
        assert_eq!(get(&primary, "recovery_target_time"), ["2026-01-01"]);
        assert!(!restart_would_apply("recovery_target_time") && !restart_would_apply("Restore_Command"));
    }

    #[test]
    fn primary_conninfo_carries_the_replication_roles_tls_settings() {
        let mut s = settings();
        s.replication.options.insert("sslmode".into(), "verify-ca".into());
        s.replication.options.insert("sslcert".into(), "/etc/ssl/my cert.crt".into());
        let info = parse_conninfo(&primary_conninfo(&s, &up())).unwrap();
        assert_eq!(info["sslmode"], "verify-ca");
        assert_eq!(info["sslcert"], "/etc/ssl/my cert.crt");
        assert_eq!(info["user"], "repl user");
    }

    #[test]
    fn tcp_local_target_sets_no_socket_dir_and_user_socket_dir_wins() {
        let mut s = settings();
        s.local = LocalConnect::Tcp("127.0.0.1".into());
        assert!(!render_postgresql_conf(&s, &StartRole::Primary).unwrap().contains("unix_socket_directories"));
        let mut s = settings();
        s.parameters.insert("unix_socket_directories".into(), "/tmp".into());
        assert!(render_postgresql_conf(&s, &StartRole::Primary)
            .unwrap()
            .contains("unix_socket_directories = '/tmp'\n"));
    }

    #[test]
    fn rejects_bad_names_and_relative_dirs() {
        for bad in ["a b", "x=1", "include", "a.b.c", "9lives", "a\nb", ""] {
            let mut s = settings();
            s.parameters.insert(bad.into(), "1".into());
            assert!(render_postgresql_conf(&s, &StartRole::Primary).is_err(), "{bad:?}");
        }
        let mut s = settings();
        s.parameters.insert("pg_stat_statements.track".into(), "all".into());
        assert!(render_postgresql_conf(&s, &StartRole::Primary).is_ok());
        let mut s = settings();
        s.data_dir = "data".into();
        assert!(render_postgresql_conf(&s, &StartRole::Primary).is_err());
    }

    #[test]
    fn conf_quoting() {
        assert_eq!(conf_quote("plain"), "'plain'");
        assert_eq!(conf_quote("it's"), "'it''s'");
        assert_eq!(conf_quote(r"C:\dir"), r"'C:\\dir'");
        assert_eq!(conf_quote("a\nb"), r"'a\nb'");
    }

    #[test]
    fn conninfo_quoting_round_trips() {
        assert_eq!(quote_conninfo_value("host1"), "host1");
        assert_eq!(quote_conninfo_value(""), "''");
        assert_eq!(quote_conninfo_value("a b"), "'a b'");
        assert_eq!(quote_conninfo_value(r"it's\x"), r"'it\'s\\x'");
        let tricky = [("host", "h"), ("user", "o'brien \\ co"), ("application_name", ""), ("passfile", "/a b/c")];
        let text = conninfo(&tricky);
        let parsed = parse_conninfo(&text).unwrap();
        for (k, v) in tricky {
            assert_eq!(parsed[k], v, "{text}");
        }
    }

    #[test]
    fn conninfo_parsing() {
        let m = parse_conninfo("  host = a  port=5 user='x y'  ").unwrap();
        assert_eq!((m["host"].as_str(), m["port"].as_str(), m["user"].as_str()), ("a", "5", "x y"));
        assert!(parse_conninfo("host").is_err());
        assert!(parse_conninfo("host='a").is_err());
        assert_eq!(conninfo_host_port("host=10.0.0.2 port=5433 user=r"), Some(("10.0.0.2".into(), 5433)));
        assert_eq!(conninfo_host_port("host=a,b port=1,2"), Some(("a".into(), 1)));
        assert_eq!(conninfo_host_port("user=r host=h"), Some(("h".into(), 5432)));
        assert_eq!(conninfo_host_port("postgresql://r@h:7/db"), Some(("h".into(), 7)));
        assert_eq!(conninfo_host_port(""), None);
        assert_eq!(conninfo_host_port("user=r"), None);
    }

    #[test]
    fn pgpass_escaping() {
        assert_eq!(pgpass_escape(r"a:b\c"), r"a\:b\\c");
        let mut s = settings();
        s.replication = Credentials::new("repl", "p:w\\d");
        s.superuser = Credentials::new("postgres", "su");
        s.rewind = Some(Credentials::without_password("rewind"));
        assert_eq!(render_pgpass(&s), "*:*:*:repl:p\\:w\\\\d\n*:*:*:postgres:su\n");
    }

    #[test]
    fn slot_names() {
        assert_eq!(slot_name("Node-1.dc"), "node_1_dc");
        assert_eq!(slot_name("pg_ok_9"), "pg_ok_9");
        assert_eq!(slot_name("ünï"), "_n_");
        assert_eq!(slot_name(&"x".repeat(80)).len(), 63);
    }

    #[test]
    fn hba() {
        let managed = render_hba(&["host all all 0.0.0.0/0 md5  ".into(), "local all all peer".into()]);
        assert!(managed.starts_with("# Managed by Rampart"));
        assert!(managed.ends_with("\nhost all all 0.0.0.0/0 md5\nlocal all all peer\n"), "{managed}");
        let mut s = PgSettings::new("n1", "/d");
        s.superuser.username = "ad\"min".into();
        assert_eq!(
            bootstrap_trust_hba(&s),
            ["local replication \"replicator\" trust", "local all \"ad\"\"min\" trust"]
        );
        s.local = LocalConnect::Tcp("127.0.0.1".into());
        assert_eq!(bootstrap_trust_hba(&s)[2], "host all \"ad\"\"min\" 127.0.0.1/32 trust");
        let appended = appended_hba(&["host replication repl 10.0.0.0/8 scram-sha-256".into()]);
        assert!(appended.starts_with("\n#"), "a blank line after initdb's last line: {appended}");
        assert!(appended.ends_with("\nhost replication repl 10.0.0.0/8 scram-sha-256\n"), "{appended}");
    }
}
