//! What a reload of `rampart proxy`'s configuration file (SIGHUP) changes: the keys whose new
//! value takes effect at once, and the keys that only a restart applies.
//!
//! Invariant kept here: every key of [`ProxyConfig`] is classified, so a changed key is always
//! either applied or named in the log as needing a restart, never silently ignored (the exhaustive
//! destructuring below stops compiling when a key is added without a decision).
//!
//! Live: `proxy.hold_timeout`, `fallback_to_primary`, `ro_policy`, `certfile`/`keyfile` (for new
//! connections), `shutdown_timeout`, the `log` section, `access_log` (reopened on every reload, changed or not, so
//! that logrotate can move the file away). Restart: the listen addresses and the admin port (the
//! sockets are bound once), `workers` (the threads are started once), `max_lag` and
//! `bootstrap.dcs` (the follower's policy), and the cluster it follows: `scope`, `namespace`,
//! `etcd3`.

use crate::proxy::Proxy;
use crate::proxy_config::ProxyConfig;

/// The keys that differ between the configuration in force and the file just read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Changed keys applied at once.
    pub live: Vec<&'static str>,
    /// Changed keys that keep their old value until the proxy restarts.
    pub restart: Vec<&'static str>,
}

impl ReloadPlan {
    /// Compares the configuration in force with the one just read.
    pub fn new(old: &ProxyConfig, new: &ProxyConfig) -> ReloadPlan {
        let mut plan = ReloadPlan::default();
        let ProxyConfig { scope, namespace, etcd3, dcs, proxy, log } = old;
        plan.restart_if(scope != &new.scope, "scope");
        plan.restart_if(namespace != &new.namespace, "namespace");
        plan.restart_if(etcd3 != &new.etcd3, "etcd3");
        plan.restart_if(dcs != &new.dcs, "bootstrap.dcs");
        plan.live_if(log != &new.log, "log");
        let Proxy {
            listen,
            listen_ro,
            hold_timeout,
            max_lag,
            fallback_to_primary,
            listen_admin,
            certfile,
            keyfile,
            ro_policy,
            workers,
            shutdown_timeout,
            access_log,
        } = proxy;
        let p = &new.proxy;
        plan.restart_if(listen != &p.listen, "proxy.listen");
        plan.restart_if(listen_ro != &p.listen_ro, "proxy.listen_ro");
        plan.restart_if(listen_admin != &p.listen_admin, "proxy.listen_admin");
        plan.restart_if(workers != &p.workers, "proxy.workers");
        plan.restart_if(max_lag != &p.max_lag, "proxy.max_lag");
        plan.live_if(hold_timeout != &p.hold_timeout, "proxy.hold_timeout");
        plan.live_if(fallback_to_primary != &p.fallback_to_primary, "proxy.fallback_to_primary");
        plan.live_if(ro_policy != &p.ro_policy, "proxy.ro_policy");
        plan.live_if(certfile != &p.certfile, "proxy.certfile");
        plan.live_if(keyfile != &p.keyfile, "proxy.keyfile");
        plan.live_if(shutdown_timeout != &p.shutdown_timeout, "proxy.shutdown_timeout");
        plan.live_if(access_log != &p.access_log, "proxy.access_log");
        plan
    }

    fn live_if(&mut self, changed: bool, key: &'static str) {
        if changed {
            self.live.push(key);
        }
    }

    fn restart_if(&mut self, changed: bool, key: &'static str) {
        if changed {
            self.restart.push(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReloadPlan;
    use crate::parse_proxy;

    fn config(extra: &str) -> crate::ProxyConfig {
        let text = format!("scope: pg\netcd3: {{host: 127.0.0.1:2379}}\nproxy:\n  listen: 127.0.0.1:6432\n{extra}");
        parse_proxy(&text, "p.yml", Vec::new()).unwrap().config
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        assert_eq!(ReloadPlan::new(&config(""), &config("")), ReloadPlan::default());
    }

    #[test]
    fn live_keys_and_restart_keys_are_told_apart() {
        let old = config("  ro_policy: round_robin\n  workers: 2\n");
        let new = config(
            "  ro_policy: least_connections\n  workers: 4\n  hold_timeout: 5\n  listen_ro: 127.0.0.1:6433\n  access_log: /tmp/a.json\n  shutdown_timeout: 2\n",
        );
        let plan = ReloadPlan::new(&old, &new);
        assert_eq!(plan.live, ["proxy.hold_timeout", "proxy.ro_policy", "proxy.shutdown_timeout", "proxy.access_log"]);
        assert_eq!(plan.restart, ["proxy.listen_ro", "proxy.workers"]);
        let moved = parse_proxy(
            "scope: other\netcd3: {host: 10.0.0.1:2379}\nproxy:\n  listen: 127.0.0.1:6432\n",
            "p.yml",
            Vec::new(),
        )
        .unwrap()
        .config;
        assert_eq!(ReloadPlan::new(&config(""), &moved).restart, ["scope", "etcd3"]);
    }
}
