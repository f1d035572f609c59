//! What a reload of `rampart proxy`'s configuration file (SIGHUP) changes: the keys whose new
//! value takes effect at once, and the keys that only a restart applies.
//!
//! Invariant kept here: every key of [`ProxyConfig`] is classified, so a changed key is always
//! either applied or named in the log as needing a restart, never silently ignored (the exhaustive
//! destructuring below stops compiling when a key is added without a decision).
//!
//! Live: `proxy.hold_timeout`, `fallback_to_primary`, `ro_policy`, `certfile`/`keyfile` (for new
//! connections), `shutdown_timeout`, the `log` section, `access_log` (reopened on every reload, changed or not, so
//! that logrotate can move the file away), and every pooling key of [`crate::proxy_pool`], each
//! named on its own (`pool_mode`, the pool sizes and timeouts, `server_reset_query`, `databases`,
//! the `auth_*` keys, `admin_users`, `stats_users`, `switchover_drain_timeout`): they apply to new
//! clients and to pools as they next open or release a server connection, never to a transaction
//! under way. Restart: the listen addresses and the admin port (the
//! sockets are bound once), `workers` (the threads are started once), `max_lag` and
//! `bootstrap.dcs` (the follower's policy), and the cluster it follows: `scope`, `namespace`,
//! `etcd3`.

use crate::proxy::Proxy;
use crate::proxy_config::ProxyConfig;
use crate::proxy_pool::Pooling;

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
            workers: _,
            workers_set,
            shutdown_timeout,
            access_log,
            pooling,
            load_balance,
            vip,
        } = proxy;
        let p = &new.proxy;
        plan.restart_if(listen != &p.listen, "proxy.listen");
        plan.restart_if(listen_ro != &p.listen_ro, "proxy.listen_ro");
        plan.restart_if(listen_admin != &p.listen_admin, "proxy.listen_admin");
        plan.restart_if(workers_set != &p.workers_set, "proxy.workers");
        plan.restart_if(max_lag != &p.max_lag, "proxy.max_lag");
        plan.live_if(hold_timeout != &p.hold_timeout, "proxy.hold_timeout");
        plan.live_if(fallback_to_primary != &p.fallback_to_primary, "proxy.fallback_to_primary");
        plan.live_if(ro_policy != &p.ro_policy, "proxy.ro_policy");
        plan.live_if(certfile != &p.certfile, "proxy.certfile");
        plan.live_if(keyfile != &p.keyfile, "proxy.keyfile");
        plan.live_if(shutdown_timeout != &p.shutdown_timeout, "proxy.shutdown_timeout");
        plan.live_if(access_log != &p.access_log, "proxy.access_log");
        plan.pooling(pooling, &p.pooling);
        // The sessions' routers and the position reader are made at start.
        plan.restart_if(load_balance != &p.load_balance, "proxy.load_balance (and its keys)");
        // The claim and the address are the running proxy's until it stops.
        plan.restart_if(vip != &p.vip, "proxy.vip");
        plan
    }

    /// The pooling keys: all live, each named.
    fn pooling(&mut self, old: &Pooling, new: &Pooling) {
        let Pooling {
            pool_mode,
            default_pool_size,
            min_pool_size,
            reserve_pool_size,
            reserve_pool_timeout,
            max_client_conn,
            max_db_connections,
            server_idle_timeout,
            server_lifetime,
            query_wait_timeout,
            idle_transaction_timeout,
            server_reset_query,
            databases,
            auth_type,
            auth_hba_file,
            auth_file,
            auth_user,
            auth_query,
            admin_users,
            stats_users,
            switchover_drain_timeout,
        } = old;
        self.live_if(pool_mode != &new.pool_mode, "proxy.pool_mode");
        self.live_if(default_pool_size != &new.default_pool_size, "proxy.default_pool_size");
        self.live_if(min_pool_size != &new.min_pool_size, "proxy.min_pool_size");
        self.live_if(reserve_pool_size != &new.reserve_pool_size, "proxy.reserve_pool_size");
        self.live_if(reserve_pool_timeout != &new.reserve_pool_timeout, "proxy.reserve_pool_timeout");
        self.live_if(max_client_conn != &new.max_client_conn, "proxy.max_client_conn");
        self.live_if(max_db_connections != &new.max_db_connections, "proxy.max_db_connections");
        self.live_if(server_idle_timeout != &new.server_idle_timeout, "proxy.server_idle_timeout");
        self.live_if(server_lifetime != &new.server_lifetime, "proxy.server_lifetime");
        self.live_if(query_wait_timeout != &new.query_wait_timeout, "proxy.query_wait_timeout");
        self.live_if(idle_transaction_timeout != &new.idle_transaction_timeout, "proxy.idle_transaction_timeout");
        self.live_if(server_reset_query != &new.server_reset_query, "proxy.server_reset_query");
        self.live_if(databases != &new.databases, "proxy.databases");
        self.live_if(auth_type != &new.auth_type, "proxy.auth_type");
        self.live_if(auth_hba_file != &new.auth_hba_file, "proxy.auth_hba_file");
        self.live_if(auth_file != &new.auth_file, "proxy.auth_file");
        self.live_if(auth_user != &new.auth_user, "proxy.auth_user");
        self.live_if(auth_query != &new.auth_query, "proxy.auth_query");
        self.live_if(admin_users != &new.admin_users, "proxy.admin_users");
        self.live_if(stats_users != &new.stats_users, "proxy.stats_users");
        self.live_if(switchover_drain_timeout != &new.switchover_drain_timeout, "proxy.switchover_drain_timeout");
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

    #[test]
    fn every_changed_pooling_key_is_named_as_live() {
        let old = config("  auth_file: /etc/rampart/userlist.txt\n");
        let new = config(
            "  pool_mode: transaction
  default_pool_size: 30
  min_pool_size: 1
  reserve_pool_size: 2
  reserve_pool_timeout: 3
  max_client_conn: 500
  max_db_connections: 60
  server_idle_timeout: 0
  server_lifetime: 60
  query_wait_timeout: 10
  idle_transaction_timeout: 30
  server_reset_query: ''
  databases: {app: {pool_size: 5}}
  auth_type: hba
  auth_hba_file: /etc/rampart/hba.conf
  auth_file: /etc/rampart/users.txt
  auth_user: pgbouncer
  auth_query: SELECT u, p FROM lookup($1)
  admin_users: alice
  stats_users: bob
  switchover_drain_timeout: 10
",
        );
        let plan = ReloadPlan::new(&old, &new);
        assert_eq!(
            plan.live,
            [
                "proxy.pool_mode",
                "proxy.default_pool_size",
                "proxy.min_pool_size",
                "proxy.reserve_pool_size",
                "proxy.reserve_pool_timeout",
                "proxy.max_client_conn",
                "proxy.max_db_connections",
                "proxy.server_idle_timeout",
                "proxy.server_lifetime",
                "proxy.query_wait_timeout",
                "proxy.idle_transaction_timeout",
                "proxy.server_reset_query",
                "proxy.databases",
                "proxy.auth_type",
                "proxy.auth_hba_file",
                "proxy.auth_file",
                "proxy.auth_user",
                "proxy.auth_query",
                "proxy.admin_users",
                "proxy.stats_users",
                "proxy.switchover_drain_timeout",
            ]
        );
        assert!(plan.restart.is_empty(), "{:?}", plan.restart);
        let one = config("  auth_file: /etc/rampart/userlist.txt\n  databases: {app: {pool_mode: transaction}}\n");
        assert_eq!(ReloadPlan::new(&old, &one).live, ["proxy.databases"]);
    }
}
