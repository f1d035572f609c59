//! Operators' restarts with filters (Patroni's `restart_matches`), and when a scheduled one is
//! due: one rule for the REST API, which judges `POST /restart` at once, and the agent, which
//! judges a scheduled restart again at its time (the server may have changed in between).
//!
//! Invariant: a filter the server cannot be judged against (it does not run, so neither its
//! role nor its version is known) does not match: a restart "only of replicas" never restarts a
//! server whose role is unknown.

use crate::roles::Role;

/// The filters a restart request may carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestartFilter<'a> {
    /// Only a server in this role (`primary`/`master`/`leader`, `replica`, `standby_leader`;
    /// `any` or none: every role).
    pub role: Option<&'a str>,
    /// Only a server with a parameter change waiting for a restart.
    pub restart_pending: bool,
    /// Only a server older than this version (`server_version_num` form).
    pub postgres_version: Option<u32>,
}

/// What the filters are judged against: the running server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerFacts {
    /// Its role.
    pub role: Role,
    /// Its `server_version_num`.
    pub server_version: u32,
}

/// Whether a server (`None`: not running) with `pending_restart` passes the filters.
pub fn restart_matches(f: &RestartFilter<'_>, server: Option<&ServerFacts>, pending_restart: bool) -> bool {
    let wanted_role = match f.role {
        None | Some("any") => None,
        Some("leader") => Some(Role::Primary),
        Some(r) => Some(Role::parse(r)),
    };
    if let Some(want) = wanted_role {
        if server.is_none_or(|s| s.role != want) {
            return false;
        }
    }
    if let Some(v) = f.postgres_version {
        if server.is_none_or(|s| s.server_version >= v) {
            return false;
        }
    }
    !f.restart_pending || pending_restart
}

/// Whether a restart scheduled at `at_unix_ms` is due at wall-clock time `wall_ms`.
pub fn is_due(at_unix_ms: i64, wall_ms: i64) -> bool {
    at_unix_ms <= wall_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(role: Role, version: u32) -> Option<ServerFacts> {
        Some(ServerFacts { role, server_version: version })
    }

    #[test]
    fn each_filter_narrows_the_restart() {
        let any = RestartFilter::default();
        assert!(restart_matches(&any, server(Role::Replica, 150004).as_ref(), false));
        let replicas = RestartFilter { role: Some("replica"), ..any };
        assert!(restart_matches(&replicas, server(Role::Replica, 150004).as_ref(), false));
        assert!(!restart_matches(&replicas, server(Role::Primary, 150004).as_ref(), false));
        for primary in ["primary", "master", "leader"] {
            let f = RestartFilter { role: Some(primary), ..any };
            assert!(restart_matches(&f, server(Role::Primary, 150004).as_ref(), false), "{primary}");
        }
        let older = RestartFilter { postgres_version: Some(150005), ..any };
        assert!(restart_matches(&older, server(Role::Replica, 150004).as_ref(), false));
        assert!(!restart_matches(&older, server(Role::Replica, 150005).as_ref(), false), "only older servers");
        let pending = RestartFilter { restart_pending: true, ..any };
        assert!(!restart_matches(&pending, server(Role::Replica, 150004).as_ref(), false));
        assert!(restart_matches(&pending, server(Role::Replica, 150004).as_ref(), true));
    }

    #[test]
    fn a_server_that_does_not_run_matches_no_role_or_version_filter() {
        let any = RestartFilter::default();
        assert!(restart_matches(&any, None, false));
        assert!(!restart_matches(&RestartFilter { role: Some("replica"), ..any }, None, false));
        assert!(!restart_matches(&RestartFilter { postgres_version: Some(160000), ..any }, None, false));
        assert!(restart_matches(&RestartFilter { role: Some("any"), ..any }, None, false));
    }

    #[test]
    fn a_scheduled_restart_is_due_from_its_time_on() {
        assert!(!is_due(1000, 999));
        assert!(is_due(1000, 1000));
        assert!(is_due(1000, 5000));
    }
}
