//! Which cluster an operator command talks to, and how: the `-c/--config-file`, `--dcs`,
//! `--scope` and `-k/--insecure` options every command shares, resolved into a [`Target`].
//!
//! Precedence follows patronictl: `--dcs etcd3://host:port[/namespace]` replaces the file's
//! `etcd3` section (and its namespace when the URL has a path); `--scope` replaces the file's
//! `scope`. Without `-c`, `PATRONICTL_CONFIG_FILE` or `~/.config/patroni/patronictl.yaml` (when it
//! exists) is read, so a host set up for patronictl works unchanged.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rampart_config::{CtlConfig, Secret};
use rampart_core::keys::ClusterPrefix;
use rampart_dcs::EtcdOptions;

/// The options every cluster command takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TargetArgs {
    /// Configuration file to find the cluster in: its `scope`, `namespace` and `etcd3` section
    /// (and `ctl` or `restapi.authentication` for REST calls). A member's configuration or a
    /// patronictl.yaml both work. Default: $PATRONICTL_CONFIG_FILE, else
    /// ~/.config/patroni/patronictl.yaml when it exists.
    #[arg(short = 'c', long = "config-file", env = "PATRONICTL_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// etcd to use instead of the file's etcd3 section: etcd3://host:port[/namespace]
    /// (also $DCS_URL).
    #[arg(short = 'd', long = "dcs", visible_alias = "dcs-url", env = "DCS_URL", value_name = "URL")]
    pub dcs: Option<String>,
    /// Cluster name, instead of the file's `scope`.
    #[arg(long, value_name = "NAME")]
    pub scope: Option<String>,
    /// Do not verify the TLS certificates of the members' REST APIs (like `ctl.insecure`).
    #[arg(short = 'k', long)]
    pub insecure: bool,
}

impl TargetArgs {
    /// Whether the command line (or environment) named a cluster at all, as opposed to relying
    /// on the default configuration file.
    pub fn is_explicit(&self) -> bool {
        self.config_file.is_some() || self.dcs.is_some() || self.scope.is_some()
    }
}

/// How to reach the members' REST APIs.
#[derive(Clone, Debug, Default)]
pub struct RestSettings {
    /// Basic-auth user and password.
    pub auth: Option<(String, Secret)>,
    /// Skip certificate verification.
    pub insecure: bool,
    /// CA bundle for HTTPS APIs.
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) and its key (PEM; may be in the certificate file).
    pub certfile: Option<PathBuf>,
    /// Key of `certfile`.
    pub keyfile: Option<PathBuf>,
}

/// A resolved target: one cluster in one etcd.
#[derive(Clone, Debug)]
pub struct Target {
    /// Cluster name.
    pub scope: String,
    /// DCS namespace.
    pub namespace: String,
    /// etcd connection settings.
    pub etcd: EtcdOptions,
    /// REST settings.
    pub rest: RestSettings,
}

impl Target {
    /// The cluster's key prefix.
    pub fn prefix(&self) -> ClusterPrefix {
        ClusterPrefix::new(&self.namespace, &self.scope)
    }

    /// etcd endpoints, for messages.
    pub fn endpoints(&self) -> String {
        self.etcd.endpoints.join(",")
    }
}

/// patronictl's default configuration file.
fn default_config_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let p = Path::new(&home).join(".config/patroni/patronictl.yaml");
    p.is_file().then_some(p)
}

/// Reads the configuration named by `args` (or the default one), if any.
fn read_config(args: &TargetArgs) -> Result<(CtlConfig, Option<PathBuf>)> {
    let file = args.config_file.clone().or_else(default_config_file);
    let cfg = match &file {
        Some(path) => rampart_config::load_ctl(path)?.config,
        None => CtlConfig { namespace: rampart_config::config::DEFAULT_NAMESPACE.into(), ..Default::default() },
    };
    Ok((cfg, file))
}

/// For the verbs patronictl spells `VERB CLUSTER_NAME [MEMBER...]` (`reload`, `restart`,
/// `reinit`, `flush`, `version`): resolves the target and returns the member names.
///
/// Rampart also accepts the members alone (`rampart reinit node1`), so the first word is taken
/// as the cluster name when it names the cluster the options point at (`--scope`, else the
/// file's `scope`), or when they name none (as patronictl requires it then).
pub fn resolve_with_members(args: &TargetArgs, words: &[String]) -> Result<(Target, Vec<String>)> {
    let (cfg, file) = read_config(args)?;
    let (cluster, members) = split_cluster_word(args.scope.as_deref().or(cfg.scope.as_deref()), words);
    Ok((resolve_with(&cfg, file.as_deref(), args, cluster)?, members.to_vec()))
}

/// The cluster-name word of [`resolve_with_members`], if there is one, and the member words.
pub fn split_cluster_word<'w>(known_scope: Option<&str>, words: &'w [String]) -> (Option<&'w str>, &'w [String]) {
    match words.split_first() {
        Some((first, rest)) if known_scope.is_none_or(|s| s == first) => (Some(first.as_str()), rest),
        _ => (None, words),
    }
}

/// [`resolve`], with the member name the configuration file gives (`name`), if any.
pub fn resolve_with_name(args: &TargetArgs) -> Result<(Target, Option<String>)> {
    let (cfg, file) = read_config(args)?;
    let target = resolve_with(&cfg, file.as_deref(), args, None)?;
    Ok((target, cfg.name))
}

/// Reads the configuration (if any) and resolves the target. `scope_override` (e.g. the
/// cluster named on `remove`'s command line) wins over everything.
pub fn resolve(args: &TargetArgs, scope_override: Option<&str>) -> Result<Target> {
    let (cfg, file) = read_config(args)?;
    resolve_with(&cfg, file.as_deref(), args, scope_override)
}

/// [`resolve`] on an already read configuration (`file` names it in messages).
pub fn resolve_with(
    cfg: &CtlConfig,
    file: Option<&Path>,
    args: &TargetArgs,
    scope_override: Option<&str>,
) -> Result<Target> {
    let from_url = args.dcs.as_deref().map(parse_dcs_url).transpose()?;
    let scope = scope_override.map(str::to_string).or_else(|| args.scope.clone()).or_else(|| cfg.scope.clone());
    let Some(scope) = scope else {
        bail!(
            "no cluster name: give --scope NAME{}",
            match file {
                Some(f) => format!(" or set `scope` in {}", f.display()),
                None => " (or -c FILE with a `scope`)".to_string(),
            }
        );
    };
    if scope.is_empty() || scope.contains('/') {
        bail!("invalid cluster name {scope:?}: it must be non-empty and without '/'");
    }
    let (etcd, namespace) = match (from_url, &cfg.etcd3) {
        (Some(url), _) => {
            let options = EtcdOptions { endpoints: vec![url.endpoint], op_timeout: OP_TIMEOUT, ..Default::default() };
            (options, url.namespace.unwrap_or_else(|| cfg.namespace.clone()))
        }
        (None, Some(e)) => {
            let options = EtcdOptions {
                endpoints: e.endpoints(),
                username: e.username.clone(),
                password: e.password.as_ref().map(|p| p.expose().to_string()),
                ca_file: e.cacert.clone(),
                cert_file: e.cert.clone(),
                key_file: e.key.clone(),
                op_timeout: OP_TIMEOUT,
            };
            (options, cfg.namespace.clone())
        }
        (None, None) => bail!(
            "no etcd to talk to: give --dcs etcd3://HOST:PORT{}",
            match file {
                Some(f) => format!(" or add an etcd3 section to {}", f.display()),
                None => " or -c FILE with an etcd3 section".to_string(),
            }
        ),
    };
    let rest = RestSettings {
        auth: cfg.rest_credentials().map(|c| (c.username.clone(), c.password.clone().unwrap_or_default())),
        insecure: args.insecure || cfg.ctl.insecure,
        cacert: cfg.rest_cacert().cloned(),
        certfile: cfg.ctl.certfile.clone(),
        keyfile: cfg.ctl.keyfile.clone(),
    };
    Ok(Target { scope, namespace, etcd, rest })
}

/// Upper bound for one etcd request; an operation may try several endpoints within
/// [`OP_DEADLINE`].
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound for one DCS operation of a command.
pub const OP_DEADLINE: Duration = Duration::from_secs(6);

/// A parsed `--dcs` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DcsUrl {
    /// `http://host:port`.
    pub endpoint: String,
    /// `/namespace` when the URL has a path.
    pub namespace: Option<String>,
}

/// Parses `[etcd3://]host[:port][/namespace]`. Other DCS schemes are refused by name: Rampart
/// keeps its state in etcd's v3 API only.
pub fn parse_dcs_url(url: &str) -> Result<DcsUrl> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s, r),
        None => ("etcd3", url.trim_start_matches("//")),
    };
    match scheme {
        "etcd3" => {}
        "etcd" => bail!("--dcs {url}: the etcd v2 API is not supported; use etcd3://HOST:PORT"),
        "consul" | "zookeeper" | "exhibitor" | "kubernetes" | "raft" => {
            bail!("--dcs {url}: {scheme} is not supported; Rampart keeps the cluster state in etcd (etcd3://HOST:PORT)")
        }
        other => bail!("--dcs {url}: unknown scheme {other:?}; expected etcd3://HOST:PORT[/NAMESPACE]"),
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let hp = if authority.is_empty() || authority.starts_with(':') {
        rampart_config::HostPort::parse_with_default(&format!("localhost{authority}"), 2379)
    } else {
        rampart_config::HostPort::parse_with_default(authority, 2379)
    }
    .with_context(|| format!("--dcs {url}: expected etcd3://HOST:PORT[/NAMESPACE]"))?;
    let namespace = match path.trim() {
        "" | "/" => None,
        p => Some(p.to_string()),
    };
    Ok(DcsUrl { endpoint: format!("http://{hp}"), namespace })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcs_urls() {
        let u = parse_dcs_url("etcd3://10.0.0.1:2399/db").unwrap();
        assert_eq!(u, DcsUrl { endpoint: "http://10.0.0.1:2399".into(), namespace: Some("/db".into()) });
        assert_eq!(parse_dcs_url("etcd3://h").unwrap().endpoint, "http://h:2379");
        assert_eq!(parse_dcs_url("etcd3://:2400").unwrap().endpoint, "http://localhost:2400");
        assert_eq!(parse_dcs_url("h:1/").unwrap(), DcsUrl { endpoint: "http://h:1".into(), namespace: None });
        for bad in ["etcd://h:2379", "consul://h", "gopher://h", "etcd3://h:notaport"] {
            let e = parse_dcs_url(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--dcs {bad}: ")), "{e}");
        }
    }

    fn cfg(text: &str) -> CtlConfig {
        rampart_config::parse_ctl(text, "ctl.yml", std::iter::empty()).unwrap().config
    }

    #[test]
    fn command_line_wins_over_the_file() {
        let c = cfg("scope: pg\nnamespace: /db/\netcd3: {host: '10.0.0.1:2379'}\nrestapi: {listen: ':8008', authentication: {username: u, password: p}}\n");
        let t = resolve_with(&c, None, &TargetArgs::default(), None).unwrap();
        assert_eq!(
            (t.scope.as_str(), t.prefix().as_str(), t.endpoints()),
            ("pg", "/db/pg/", "http://10.0.0.1:2379".into())
        );
        assert_eq!(t.rest.auth.as_ref().map(|(u, p)| (u.as_str(), p.expose())), Some(("u", "p")));
        assert!(!t.rest.insecure);

        let args = TargetArgs {
            dcs: Some("etcd3://e:1/other".into()),
            scope: Some("x".into()),
            insecure: true,
            ..Default::default()
        };
        let t = resolve_with(&c, None, &args, None).unwrap();
        assert_eq!((t.scope.as_str(), t.prefix().as_str(), t.endpoints()), ("x", "/other/x/", "http://e:1".into()));
        assert!(t.rest.insecure);
        let t = resolve_with(&c, None, &args, Some("removed")).unwrap();
        assert_eq!(t.scope, "removed");
        // A URL without a path keeps the file's namespace.
        let args = TargetArgs { dcs: Some("e:1".into()), ..Default::default() };
        assert_eq!(resolve_with(&c, None, &args, None).unwrap().prefix().as_str(), "/db/pg/");
    }

    #[test]
    fn a_leading_cluster_name_is_recognised() {
        let w = |words: &[&str]| words.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let words = w(&["pg", "node1"]);
        assert_eq!(split_cluster_word(Some("pg"), &words), (Some("pg"), &words[1..]), "patronictl's form");
        let words = w(&["node1", "node2"]);
        assert_eq!(split_cluster_word(Some("pg"), &words), (None, &words[..]), "members alone");
        let words = w(&["other", "node1"]);
        assert_eq!(split_cluster_word(None, &words), (Some("other"), &words[1..]), "no scope known: a cluster first");
        assert_eq!(split_cluster_word(Some("pg"), &[]), (None, &[][..]));
    }

    #[test]
    fn missing_pieces_say_what_to_add() {
        let e = resolve_with(&cfg("etcd3: {host: h}\n"), Some(Path::new("ctl.yml")), &TargetArgs::default(), None)
            .unwrap_err();
        assert_eq!(e.to_string(), "no cluster name: give --scope NAME or set `scope` in ctl.yml");
        let e =
            resolve_with(&cfg("scope: pg\n"), Some(Path::new("ctl.yml")), &TargetArgs::default(), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no etcd to talk to: give --dcs etcd3://HOST:PORT or add an etcd3 section to ctl.yml"
        );
        let args = TargetArgs { dcs: Some("etcd3://h:1".into()), ..Default::default() };
        let e = resolve_with(&CtlConfig::default(), None, &args, None).unwrap_err();
        assert!(e.to_string().starts_with("no cluster name: give --scope NAME"), "{e}");
    }
}
