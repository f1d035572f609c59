//! Endpoint tests of the write side through the whole router (tower `oneshot`): status codes,
//! bodies and the exact calls made to the backend, for every write endpoint, plus access control
//! and `/metrics`.

use std::time::Instant;

use rampart_core::model::Failover;
use serde_json::{json, Value};

use crate::access::{AccessPolicy, BasicAuth, PeerInfo};
use crate::backend::{LocalRequest, RestartRequest};
use crate::health::tests::{primary, replica};
use crate::security::Security;
use crate::test_support::*;

fn config() -> Value {
    json!({"ttl": 30, "loop_wait": 10, "retry_timeout": 10})
}

fn three() -> rampart_core::Cluster {
    cluster(Some("p"), &["p", "r1", "r2"], config())
}

fn harness(states: Vec<rampart_core::Cluster>, probe: std::sync::Arc<FakeProbe>) -> WriteHarness {
    WriteHarness::new(primary(Instant::now()), FakeBackend::new(states), probe, Security::open())
}

fn healthy_r1_r2() -> std::sync::Arc<FakeProbe> {
    FakeProbe::with(&[("r1", healthy_replica()), ("r2", healthy_replica())])
}

fn failover(leader: Option<&str>, member: Option<&str>) -> Call {
    Call::SetFailover(Failover {
        leader: leader.map(Into::into),
        member: member.map(Into::into),
        scheduled_at: None,
        force: false,
    })
}

// ---------------------------------------------------------------- switchover / failover

#[tokio::test]
async fn switchover_succeeds_when_the_leader_changes() {
    let h = harness(
        vec![three(), with_failover(three(), Some("p"), Some("r1"), None), led_by(three(), "r1")],
        healthy_r1_r2(),
    );
    let a = h.send("POST", "/switchover", Some(r#"{"leader":"p","candidate":"r1"}"#)).await;
    assert_eq!((a.status, a.text.as_str()), (200, "Successfully switched over to \"r1\""));
    assert_eq!(h.backend.writes(), vec![failover(Some("p"), Some("r1"))]);
    assert_eq!(h.backend.reads(), 3, "one validation read, then polls until the leader changed");
}

#[tokio::test]
async fn switchover_to_anyone_and_to_someone_else() {
    // No candidate: r1 does not answer, r2 is healthy, so it is possible; r2 wins.
    let probe = FakeProbe::with(&[("r2", healthy_replica())]);
    let h = harness(vec![three(), led_by(three(), "r2")], probe);
    let a = h.send("POST", "/switchover", Some(r#"{"leader":"p"}"#)).await;
    assert_eq!((a.status, a.text.as_str()), (200, "Successfully switched over to \"r2\""));
    assert_eq!(h.backend.writes(), vec![failover(Some("p"), None)]);

    // "member" is an alias of "candidate"; another member won the race.
    let h = harness(vec![three(), led_by(three(), "r2")], healthy_r1_r2());
    let a = h.send("POST", "/switchover", Some(r#"{"leader":"p","member":"r1"}"#)).await;
    assert_eq!((a.status, a.text.as_str()), (200, "Switched over to \"r2\" instead of \"r1\""));
}

#[tokio::test]
async fn switchover_reports_who_really_leads_after_a_failed_promotion() {
    // r1 takes the lock but never runs as primary, lets go, and r2 takes over.
    let states = vec![
        three(),
        with_failover(three(), Some("p"), Some("r1"), None),
        locked_by(three(), "r1"),
        cluster(None, &["p", "r1", "r2"], config()),
        led_by(three(), "r2"),
    ];
    let h = harness(states, healthy_r1_r2());
    let a = h.send("POST", "/switchover", Some(r#"{"leader":"p","candidate":"r1"}"#)).await;
    assert_eq!((a.status, a.text.as_str()), (200, "Switched over to \"r2\" instead of \"r1\""));
}

#[tokio::test]
async fn switchover_failed_or_unknown() {
    // The members dropped the request (key gone) and the leader stayed.
    let h = harness(vec![three(), with_failover(three(), Some("p"), Some("r1"), None), three()], healthy_r1_r2());
    let a = h.send("POST", "/switchover", Some(r#"{"leader":"p","candidate":"r1"}"#)).await;
    assert_eq!((a.status, a.text.as_str()), (503, "Switchover failed"));

    // Nothing happens: 2 * max(10, loop_wait) polls, then 503.
    let h = harness(vec![three(), with_failover(three(), Some("p"), Some("r1"), None)], healthy_r1_r2());
    let a = h.send("POST", "/switchover", Some(r#"{"leader":"p","candidate":"r1"}"#)).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.text, "Switchover status unknown after 20 seconds; operation may still be in progress");
    assert_eq!(h.backend.reads(), 1 + 20);

    // A longer loop_wait stretches the wait.
    let slow = cluster(Some("p"), &["p", "r1"], json!({"ttl": 60, "loop_wait": 15, "retry_timeout": 10}));
    let h = harness(vec![slow.clone(), with_failover(slow, Some("p"), Some("r1"), None)], healthy_r1_r2());
    let a = h.send("POST", "/switchover", Some(r#"{"leader":"p","candidate":"r1"}"#)).await;
    assert!(a.text.contains("after 30 seconds"), "{}", a.text);

    // So do proxies the leader may wait for (rampart_core::drain): by the longest they may take.
    let mut drained = three();
    let report = rampart_core::ProxyReport { drain_timeout: Some(7), drained: None };
    drained.proxies.insert("app-1".into(), report);
    let h = harness(vec![drained.clone(), with_failover(drained, Some("p"), Some("r1"), None)], healthy_r1_r2());
    let a = h.send("POST", "/switchover", Some(r#"{"leader":"p","candidate":"r1"}"#)).await;
    assert!(a.text.contains("after 27 seconds"), "{}", a.text);

    // The failover key cannot be written.
    let h = harness(vec![three()], healthy_r1_r2());
    *h.backend.set_failover_result.lock().unwrap() = Err("etcd down".into());
    let a = h.send("POST", "/switchover", Some(r#"{"leader":"p","candidate":"r1"}"#)).await;
    assert_eq!((a.status, a.text.as_str()), (503, "failed to write failover key into DCS"));
}

#[tokio::test]
async fn switchover_bad_requests() {
    let paused = cluster(Some("p"), &["p", "r1"], json!({"ttl": 30, "pause": true}));
    let future = "2099-01-01T00:00:00+00:00";
    let cases: Vec<(rampart_core::Cluster, &str, &str, String, u16, &str)> = vec![
        (
            three(),
            "POST",
            "/switchover",
            r#"{"candidate":"r1"}"#.into(),
            400,
            "Switchover could be performed only from a specific leader",
        ),
        (
            three(),
            "POST",
            "/switchover",
            r#"{"leader":"p","candidate":"p"}"#.into(),
            400,
            "Switchover target and source are the same",
        ),
        (
            three(),
            "POST",
            "/failover",
            r#"{"leader":"p"}"#.into(),
            400,
            "Failover could be performed only to a specific candidate",
        ),
        (
            three(),
            "POST",
            "/failover",
            format!(r#"{{"candidate":"r1","scheduled_at":"{future}"}}"#),
            400,
            "Failover can't be scheduled",
        ),
        (
            paused.clone(),
            "POST",
            "/switchover",
            format!(r#"{{"leader":"p","candidate":"r1","scheduled_at":"{future}"}}"#),
            400,
            "Can't schedule switchover in the paused state",
        ),
        (
            paused,
            "POST",
            "/switchover",
            r#"{"leader":"p"}"#.into(),
            400,
            "Switchover is possible only to a specific candidate in a paused state",
        ),
        (
            three(),
            "POST",
            "/switchover",
            r#"{"leader":"p","scheduled_at":"2099-01-01T00:00:00"}"#.into(),
            400,
            "Timezone information is mandatory for the scheduled switchover",
        ),
        (
            three(),
            "POST",
            "/switchover",
            r#"{"leader":"p","scheduled_at":"someday"}"#.into(),
            422,
            "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601",
        ),
        (
            three(),
            "POST",
            "/switchover",
            r#"{"leader":"p","scheduled_at":"2001-01-01T00:00:00Z"}"#.into(),
            422,
            "Cannot schedule switchover in the past",
        ),
        (three(), "POST", "/switchover", r#"{"leader":5}"#.into(), 400, "leader must be a string, not 5"),
    ];
    for (state, method, path, body, want, text) in cases {
        let h = harness(vec![state], healthy_r1_r2());
        let a = h.send(method, path, Some(&body)).await;
        assert_eq!((a.status, a.text.as_str()), (want, text), "{path} {body}");
        assert!(h.backend.writes().is_empty(), "{body}: nothing may be written");
    }
    // Malformed bodies.
    let h = harness(vec![three()], healthy_r1_r2());
    for body in ["{not json", "[1]", "{}", "\"p\""] {
        assert_eq!(h.send("POST", "/switchover", Some(body)).await.status, 400, "{body}");
    }
    assert_eq!(h.send("POST", "/switchover", None).await.status, 411);
    assert!(h.backend.writes().is_empty());
}

#[tokio::test]
async fn switchover_not_possible() {
    let stopped = json!({"state": "stopped", "role": "replica"});
    let nofailover = json!({"state": "running", "role": "replica", "tags": {"nofailover": true}});
    let priority0 = json!({"state": "running", "role": "replica", "tags": {"failover_priority": 0}});
    let primary_answer = json!({"state": "running", "role": "primary"});
    let backing_off = json!({"state": "running", "role": "replica", "failover_backoff": true});
    let sync = cluster(Some("p"), &["p", "r1", "r2"], json!({"synchronous_mode": true}));
    let mut sync = sync;
    sync.sync = Some(rampart_core::model::SyncState {
        leader: Some("p".into()),
        sync_standby: Some("r2".into()),
        quorum: None,
    });
    let no_sync = {
        let mut c = sync.clone();
        c.sync = None;
        c
    };
    // (cluster, candidates' answers, body, 412 message)
    type Case<'a> = (rampart_core::Cluster, Vec<(&'a str, Value)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (three(), vec![("r1", healthy_replica())], r#"{"leader":"r1","candidate":"r2"}"#, "leader name does not match"),
        (three(), vec![], r#"{"leader":"p","candidate":"ghost"}"#, "candidate does not exists"),
        (
            three(),
            vec![],
            r#"{"leader":"p","candidate":"r1"}"#,
            "switchover is not possible: no good candidates have been found",
        ),
        (
            three(),
            vec![("r1", stopped.clone())],
            r#"{"leader":"p","candidate":"r1"}"#,
            "switchover is not possible: no good candidates have been found",
        ),
        (
            three(),
            vec![("r1", nofailover)],
            r#"{"leader":"p","candidate":"r1"}"#,
            "switchover is not possible: no good candidates have been found",
        ),
        (
            three(),
            vec![("r1", priority0)],
            r#"{"leader":"p","candidate":"r1"}"#,
            "switchover is not possible: no good candidates have been found",
        ),
        // A member backing off after a refused promotion is no candidate here either, as in the
        // agents' own race (one rule: rampart_core::eligibility).
        (
            three(),
            vec![("r1", backing_off)],
            r#"{"leader":"p","candidate":"r1"}"#,
            "switchover is not possible: no good candidates have been found",
        ),
        (
            three(),
            vec![("r1", primary_answer.clone())],
            r#"{"leader":"p","candidate":"r1"}"#,
            "switchover is not possible: no good candidates have been found",
        ),
        (
            three(),
            vec![("r1", stopped)],
            r#"{"leader":"p"}"#,
            "switchover is not possible: no good candidates have been found",
        ),
        (
            cluster(Some("p"), &["p"], config()),
            vec![],
            r#"{"leader":"p"}"#,
            "switchover is not possible: cluster does not have members except leader",
        ),
        (
            sync.clone(),
            vec![("r1", healthy_replica())],
            r#"{"leader":"p","candidate":"r1"}"#,
            "candidate name does not match with sync_standby",
        ),
        (
            no_sync,
            vec![("r1", healthy_replica())],
            r#"{"leader":"p"}"#,
            "switchover is not possible: can not find sync_standby",
        ),
        // A failover with a leader present wants a replica too.
        (
            three(),
            vec![("r1", primary_answer)],
            r#"{"candidate":"r1"}"#,
            "failover is not possible: no good candidates have been found",
        ),
    ];
    for (state, answers, body, text) in cases {
        let h = harness(vec![state], FakeProbe::with(&answers));
        let path = if body.contains("leader") { "/switchover" } else { "/failover" };
        let a = h.send("POST", path, Some(body)).await;
        assert_eq!((a.status, a.text.as_str()), (412, text), "{body}");
        assert!(h.backend.writes().is_empty(), "{body}: nothing may be written");
    }
    // In synchronous mode, the sync standby is a fine candidate.
    let h = harness(vec![sync.clone(), led_by(sync, "r2")], FakeProbe::with(&[("r2", healthy_replica())]));
    assert_eq!(h.send("POST", "/switchover", Some(r#"{"leader":"p","candidate":"r2"}"#)).await.status, 200);
}

#[tokio::test]
async fn failover_to_an_asynchronous_member_in_synchronous_mode_needs_force() {
    let mut sync = cluster(Some("p"), &["p", "r1", "r2"], json!({"synchronous_mode": true}));
    sync.sync = Some(rampart_core::model::SyncState::new("p", &["r2".into()], 0));
    let probe = || FakeProbe::with(&[("r1", healthy_replica()), ("r2", healthy_replica())]);
    let h = harness(vec![sync.clone()], probe());
    let a = h.send("POST", "/failover", Some(r#"{"candidate":"r1"}"#)).await;
    assert_eq!(a.status, 412, "{}", a.text);
    assert!(a.text.contains("\"force\": true"), "{}", a.text);
    assert!(h.backend.writes().is_empty());
    assert_eq!(h.send("POST", "/failover", Some(r#"{"candidate":"r1","force":"yes"}"#)).await.status, 400);

    let h = harness(vec![sync.clone(), led_by(sync.clone(), "r1")], probe());
    let a = h.send("POST", "/failover", Some(r#"{"candidate":"r1","force":true}"#)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let mut forced = failover(None, Some("r1"));
    if let Call::SetFailover(f) = &mut forced {
        f.force = true;
    }
    assert_eq!(h.backend.writes(), vec![forced]);

    // The listed synchronous standby needs nothing more.
    let h = harness(vec![sync.clone(), led_by(sync, "r2")], probe());
    assert_eq!(h.send("POST", "/failover", Some(r#"{"candidate":"r2"}"#)).await.status, 200);
}

#[tokio::test]
async fn failover_without_a_leader_and_with_one() {
    // Nobody holds the lock: a running member is enough, whatever its role or lag.
    let leaderless = cluster(None, &["p", "r1"], config());
    let answer = json!({"state": "running", "role": "primary", "xlog": {"location": 1}});
    let h = harness(vec![leaderless.clone(), led_by(leaderless, "r1")], FakeProbe::with(&[("r1", answer)]));
    let a = h.send("POST", "/failover", Some(r#"{"candidate":"r1"}"#)).await;
    assert_eq!((a.status, a.text.as_str()), (200, "Successfully failed over to \"r1\""));
    assert_eq!(h.backend.writes(), vec![failover(None, Some("r1"))]);

    // With "leader", a failover request is a switchover.
    let h = harness(vec![three(), led_by(three(), "r1")], healthy_r1_r2());
    let a = h.send("POST", "/failover", Some(r#"{"leader":"p","candidate":"r1"}"#)).await;
    assert_eq!((a.status, a.text.as_str()), (200, "Successfully switched over to \"r1\""));
    assert_eq!(h.backend.writes(), vec![failover(Some("p"), Some("r1"))]);

    // The failover key vanishes: "Failover failed".
    let h = harness(vec![three(), three()], healthy_r1_r2());
    let a = h.send("POST", "/failover", Some(r#"{"candidate":"r1"}"#)).await;
    assert_eq!((a.status, a.text.as_str()), (503, "Failover failed"));
}

#[tokio::test]
async fn scheduled_switchover_and_its_cancellation() {
    // Scheduled: no live checks (r1 does not even answer), 202 at once.
    let h = harness(vec![three()], FakeProbe::with(&[]));
    let a = h
        .send(
            "POST",
            "/switchover",
            Some(r#"{"leader":"p","candidate":"r1","scheduled_at":"2099-01-01T02:00:00+02:00"}"#),
        )
        .await;
    assert_eq!((a.status, a.text.as_str()), (202, "Switchover scheduled"));
    assert_eq!(
        h.backend.writes(),
        vec![Call::SetFailover(Failover {
            leader: Some("p".into()),
            member: Some("r1".into()),
            scheduled_at: Some("2099-01-01T00:00:00+00:00".into()),
            force: false,
        })]
    );

    let scheduled = with_failover(three(), Some("p"), Some("r1"), Some("2099-01-01T00:00:00+00:00"));
    let h = harness(vec![scheduled.clone()], FakeProbe::with(&[]));
    let a = h.send("DELETE", "/switchover", None).await;
    assert_eq!((a.status, a.text.as_str()), (200, "scheduled switchover deleted"));
    assert_eq!(h.backend.writes(), vec![Call::ClearFailover]);

    // A pending immediate switchover is not a scheduled one.
    for state in [three(), with_failover(three(), Some("p"), Some("r1"), None)] {
        let h = harness(vec![state], FakeProbe::with(&[]));
        let a = h.send("DELETE", "/switchover", None).await;
        assert_eq!((a.status, a.text.as_str()), (404, "no switchover is scheduled"));
        assert!(h.backend.writes().is_empty());
    }

    let h = harness(vec![scheduled], FakeProbe::with(&[]));
    *h.backend.clear_failover_result.lock().unwrap() = Err("etcd down".into());
    assert_eq!(h.send("DELETE", "/switchover", None).await.status, 409);
}

// ---------------------------------------------------------------- restart, reinitialize, reload

#[tokio::test]
async fn restart_now_and_its_filters() {
    let h = harness(vec![three()], FakeProbe::with(&[]));
    h.backend.reply_with(200, "restarted successfully");
    let a = h.send("POST", "/restart", None).await;
    assert_eq!((a.status, a.text.as_str()), (200, "restarted successfully"));
    let a = h.send("POST", "/restart", Some(r#"{"role":"primary","postgres_version":"17.1","timeout":"5min"}"#)).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        h.backend.writes(),
        vec![
            Call::Local(LocalRequest::Restart(RestartRequest::default())),
            Call::Local(LocalRequest::Restart(RestartRequest {
                restart_pending: false,
                role: Some("primary".into()),
                postgres_version: Some(170001),
                timeout_secs: Some(300),
            })),
        ]
    );

    // Filters that do not match this node (a PG 16.4 primary without pending restart): 503, and
    // the agent is not asked.
    for body in [r#"{"role":"replica"}"#, r#"{"restart_pending":true}"#, r#"{"postgres_version":"16.4"}"#] {
        let h = harness(vec![three()], FakeProbe::with(&[]));
        let a = h.send("POST", "/restart", Some(body)).await;
        assert_eq!((a.status, a.text.as_str()), (503, "restart conditions are not satisfied"), "{body}");
        assert!(h.backend.writes().is_empty());
    }
    // The agent's refusal is passed through.
    let h = harness(vec![three()], FakeProbe::with(&[]));
    h.backend.reply_with(503, "restart already in progress");
    assert_eq!(h.send("POST", "/restart", Some("{}")).await.text, "restart already in progress");
}

#[tokio::test]
async fn restart_bad_values() {
    let cases = [
        (r#"{"role":"boss"}"#, 400, "PostgreSQL role should be either primary, standby_leader, or replica"),
        (r#"{"postgres_version":"9.6"}"#, 400, "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 9.6"),
        (r#"{"postgres_version":"x.y"}"#, 400, "Invalid PostgreSQL version: x.y"),
        (r#"{"timeout":-1}"#, 400, "Timeout should be a positive number of seconds"),
        (r#"{"timeout":"0s"}"#, 400, "Timeout should be a positive number of seconds"),
        (r#"{"restart_pending":"maybe"}"#, 400, "restart_pending should be a boolean"),
        (r#"{"force":true}"#, 400, "Unknown filter for the scheduled restart: force"),
        (r#"{"schedule":"2001-01-01T00:00:00+00:00"}"#, 422, "Cannot schedule restart in the past"),
        (r#"{"schedule":"2099-01-01T00:00:00"}"#, 400, "Timezone information is mandatory for the scheduled restart"),
        ("[]", 400, "the body must be a JSON object"),
    ];
    for (body, want, text) in cases {
        let h = harness(vec![three()], FakeProbe::with(&[]));
        let a = h.send("POST", "/restart", Some(body)).await;
        assert_eq!((a.status, a.text.as_str()), (want, text), "{body}");
        assert!(h.backend.writes().is_empty(), "{body}");
    }
}

#[tokio::test]
async fn scheduled_restart() {
    let h = harness(vec![three()], FakeProbe::with(&[]));
    h.backend.reply_with(202, "Restart scheduled");
    let a = h.send("POST", "/restart", Some(r#"{"schedule":"2099-01-01T00:00:00Z","restart_pending":true}"#)).await;
    assert_eq!((a.status, a.text.as_str()), (202, "Restart scheduled"));
    // Filters travel with the schedule (they are checked when it runs, not now).
    let Call::Local(LocalRequest::ScheduleRestart(s)) = &h.backend.writes()[0] else {
        panic!("{:?}", h.backend.writes())
    };
    assert_eq!(s.schedule, "2099-01-01T00:00:00+00:00");
    assert_eq!(s.at_unix_ms, 4_070_908_800_000);
    assert!(s.request.restart_pending);

    h.backend.reply_with(409, "Another restart is already scheduled");
    let a = h.send("POST", "/restart", Some(r#"{"schedule":"2099-01-01T00:00:00Z"}"#)).await;
    assert_eq!((a.status, a.text.as_str()), (409, "Another restart is already scheduled"));

    h.backend.reply_with(200, "scheduled restart deleted");
    let a = h.send("DELETE", "/restart", None).await;
    assert_eq!((a.status, a.text.as_str()), (200, "scheduled restart deleted"));
    assert_eq!(h.backend.writes().last(), Some(&Call::Local(LocalRequest::CancelScheduledRestart)));

    // Maintenance mode: Patroni refuses to schedule (with 500).
    let paused = crate::snapshot::NodeSnapshot { paused: true, ..primary(Instant::now()) };
    let h = WriteHarness::new(paused, FakeBackend::new(vec![three()]), FakeProbe::with(&[]), Security::open());
    let a = h.send("POST", "/restart", Some(r#"{"schedule":"2099-01-01T00:00:00Z"}"#)).await;
    assert_eq!((a.status, a.text.as_str()), (500, "Can't schedule restart in the paused state"));
}

#[tokio::test]
async fn restart_filters_on_a_replica() {
    let mut snap = replica("r1", Instant::now());
    snap.pending_restart = true;
    let h = WriteHarness::new(snap, FakeBackend::new(vec![three()]), FakeProbe::with(&[]), Security::open());
    let a = h.send("POST", "/restart", Some(r#"{"role":"replica","restart_pending":"on"}"#)).await;
    assert_eq!(a.status, 200);
    let a = h.send("POST", "/restart", Some(r#"{"role":"master"}"#)).await;
    assert_eq!(a.status, 503, "master means primary");
}

#[tokio::test]
async fn reinitialize_and_reload() {
    let h = harness(vec![three()], FakeProbe::with(&[]));
    h.backend.reply_with(503, "I am the leader, can not reinitialize");
    let a = h.send("POST", "/reinitialize", Some(r#"{"force":"yes","from_leader":true}"#)).await;
    assert_eq!((a.status, a.text.as_str()), (503, "I am the leader, can not reinitialize"));
    h.backend.reply_with(200, "reinitialize started");
    assert_eq!(h.send("POST", "/reinitialize", None).await.text, "reinitialize started");
    h.backend.reply_with(202, "reload scheduled");
    let a = h.send("POST", "/reload", None).await;
    assert_eq!((a.status, a.text.as_str()), (202, "reload scheduled"));
    assert_eq!(
        h.backend.writes(),
        vec![
            Call::Local(LocalRequest::Reinitialize { force: true, from_leader: true }),
            Call::Local(LocalRequest::Reinitialize { force: false, from_leader: false }),
            Call::Local(LocalRequest::Reload),
        ]
    );
}

// ---------------------------------------------------------------- configuration

fn rich_config() -> Value {
    json!({
        "ttl": 30, "loop_wait": 10, "retry_timeout": 10,
        "synchronous_mode": true,
        "slots": {"logical": {"type": "logical", "database": "app", "plugin": "pgoutput"}},
        "postgresql": {"use_pg_rewind": true, "parameters": {"max_connections": 100, "work_mem": "4MB"}}
    })
}

fn written(h: &WriteHarness) -> (Value, Option<i64>) {
    match h.backend.writes().last() {
        Some(Call::WriteConfig(text, rev)) => (serde_json::from_str(text).unwrap(), *rev),
        other => panic!("no config write: {other:?}"),
    }
}

#[tokio::test]
async fn patch_config_merges_and_deletes() {
    let h = harness(vec![cluster(Some("p"), &["p"], rich_config())], FakeProbe::with(&[]));
    let patch = r#"{"synchronous_mode": null, "pause": true,
                    "postgresql": {"parameters": {"work_mem": null, "shared_buffers": "1GB"}}}"#;
    let a = h.send("PATCH", "/config", Some(patch)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let (stored, rev) = written(&h);
    assert_eq!(rev, Some(7), "compare-and-swap on the revision that was read");
    assert_eq!(a.json(), stored, "the answer is what was written");
    assert!(stored.get("synchronous_mode").is_none(), "null deletes");
    assert_eq!(stored["pause"], true);
    assert_eq!(stored["postgresql"]["parameters"], json!({"max_connections": 100, "shared_buffers": "1GB"}));
    assert_eq!(stored["postgresql"]["use_pg_rewind"], true, "merged, not replaced");
    assert_eq!(stored["slots"]["logical"]["plugin"], "pgoutput", "unknown keys survive");
    assert_eq!(stored["ttl"], 30);
}

#[tokio::test]
async fn patch_config_conflicts_and_refusals() {
    let h = harness(vec![cluster(Some("p"), &["p"], rich_config())], FakeProbe::with(&[]));
    *h.backend.write_config_result.lock().unwrap() = Ok(false);
    assert_eq!(h.send("PATCH", "/config", Some(r#"{"ttl": 40}"#)).await.status, 409);
    *h.backend.write_config_result.lock().unwrap() = Err("etcd down".into());
    assert_eq!(h.send("PATCH", "/config", Some(r#"{"ttl": 40}"#)).await.status, 503);

    // Invalid results are refused before any write, naming the problem.
    let h = harness(vec![cluster(Some("p"), &["p"], rich_config())], FakeProbe::with(&[]));
    let a = h.send("PATCH", "/config", Some(r#"{"ttl": 4}"#)).await;
    assert_eq!(a.status, 400);
    assert!(a.text.starts_with("invalid configuration: ttl: 4 is below the minimum"), "{}", a.text);
    // A value the local PostgreSQL refuses (the backend checks it against postgres --describe-config).
    h.backend.parameter_check.lock().unwrap().0 = Some("max_connections".into());
    let a = h.send("PATCH", "/config", Some(r#"{"postgresql": {"parameters": {"max_connections": "lots"}}}"#)).await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.text,
        "invalid configuration: postgresql.parameters.max_connections: invalid value \"lots\": not a number"
    );
    let a = h.send("PUT", "/config", Some(r#"{"postgresql": {"parameters": {"max_connections": "lots"}}}"#)).await;
    assert_eq!(a.status, 400);
    assert!(a.text.starts_with("invalid configuration: postgresql.parameters.max_connections"), "{}", a.text);
    let a = h.send("PATCH", "/config", Some(r#"{"loop_wait": "often"}"#)).await;
    assert_eq!(a.status, 400);
    assert!(a.text.starts_with("invalid configuration: loop_wait:"), "{}", a.text);
    let a = h.send("PATCH", "/config", Some(r#"{"postgresql": {"use_slots": [1]}}"#)).await;
    assert!(a.text.starts_with("invalid configuration: postgresql.use_slots:"), "{}", a.text);
    assert_eq!(h.send("PATCH", "/config", Some("{}")).await.status, 400);
    assert_eq!(h.send("PATCH", "/config", None).await.status, 411);
    assert!(h.backend.writes().is_empty());

    h.backend.parameter_check.lock().unwrap().0 = None;

    // A patch that changes nothing writes nothing.
    let a = h.send("PATCH", "/config", Some(r#"{"ttl": 30}"#)).await;
    assert_eq!(a.status, 200);
    assert!(h.backend.writes().is_empty());

    // No configuration in the DCS.
    let mut bare = three();
    bare.config = None;
    let h = harness(vec![bare], FakeProbe::with(&[]));
    assert_eq!(h.send("PATCH", "/config", Some(r#"{"ttl": 40}"#)).await.status, 503);
}

#[tokio::test]
async fn patch_config_lowers_timeouts_that_do_not_fit_ttl_as_patroni_does() {
    // Patroni's acceptance suite: PATCH {"ttl": 20} on loop_wait 2, retry_timeout 10.
    let before = json!({"ttl": 30, "loop_wait": 2, "retry_timeout": 10});
    let h = harness(vec![cluster(Some("p"), &["p"], before)], FakeProbe::with(&[]));
    let a = h.send("PATCH", "/config", Some(r#"{"ttl": 20}"#)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let (stored, _) = written(&h);
    assert_eq!(
        (stored["ttl"].as_u64(), stored["loop_wait"].as_u64(), stored["retry_timeout"].as_u64()),
        (Some(20), Some(1), Some(9))
    );
    let checked = h.backend.calls().into_iter().any(|c| matches!(c, Call::CheckParameters(_)));
    assert!(checked, "the parameters are checked before the write");
}

#[tokio::test]
async fn put_config_replaces() {
    let h = harness(vec![cluster(Some("p"), &["p"], rich_config())], FakeProbe::with(&[]));
    let a = h.send("PUT", "/config", Some(r#"{"ttl": 40, "loop_wait": 10, "retry_timeout": 10, "x": 1}"#)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let (stored, rev) = written(&h);
    assert_eq!(rev, None);
    assert_eq!(stored, json!({"ttl": 40, "loop_wait": 10, "retry_timeout": 10, "x": 1}));
    assert_eq!(a.json(), stored);

    let a = h.send("PUT", "/config", Some(r#"{"ttl": 3}"#)).await;
    assert_eq!(a.status, 400);
    assert!(a.text.contains("ttl"), "{}", a.text);
    *h.backend.write_config_result.lock().unwrap() = Err("etcd down".into());
    assert_eq!(h.send("PUT", "/config", Some(r#"{"ttl": 50}"#)).await.status, 502);
}

// ---------------------------------------------------------------- access control

#[tokio::test]
async fn basic_auth_guards_writes_only() {
    let auth = BasicAuth::new("admin", "hunter2");
    let security =
        Security { access: AccessPolicy::resolve(Some(&auth), &[], false).await.unwrap(), ..Security::open() };
    let h = WriteHarness::new(primary(Instant::now()), FakeBackend::new(vec![three()]), FakeProbe::with(&[]), security);
    h.backend.reply_with(202, "reload scheduled");

    let a = h.send("POST", "/reload", None).await;
    assert_eq!((a.status, a.text.as_str()), (401, "no auth header received"));
    assert_eq!(a.headers["www-authenticate"], "Basic realm=\"Patroni\"");
    let wrong = BasicAuth::new("admin", "hunter3").header_value();
    let a = h.send_full("POST", "/reload", None, &[("authorization", &wrong)], None).await;
    assert_eq!((a.status, a.text.as_str()), (401, "not authenticated"));
    assert!(!a.text.contains("hunter"));
    assert!(h.backend.calls().is_empty(), "refused before the backend is touched");

    let right = auth.header_value();
    let a = h.send_full("POST", "/reload", None, &[("authorization", &right)], None).await;
    assert_eq!(a.status, 202);
    // Reads stay open.
    for path in ["/patroni", "/primary", "/metrics", "/cluster"] {
        assert_eq!(h.send("GET", path, None).await.status, 200, "{path}");
    }
}

#[tokio::test]
async fn allowlist_and_client_certificates() {
    let policy = AccessPolicy::resolve(None, &["127.0.0.0/8".to_string()], true).await.unwrap();
    let security = Security { access: policy, ..Security::open() };
    let h = WriteHarness::new(primary(Instant::now()), FakeBackend::new(vec![three()]), FakeProbe::with(&[]), security);
    let outsider = PeerInfo { addr: "10.9.9.9:1234".parse().unwrap(), client_cert: true };
    let a = h.send_full("POST", "/reload", None, &[], Some(outsider)).await;
    assert_eq!((a.status, a.text.as_str()), (403, "Access is denied"));
    let a = h.send("POST", "/reload", None).await;
    assert_eq!((a.status, a.text.as_str()), (403, "client certificate required"));
    let insider = PeerInfo { addr: "127.0.0.1:1234".parse().unwrap(), client_cert: true };
    assert_eq!(h.send_full("POST", "/reload", None, &[], Some(insider)).await.status, 200);
    assert_eq!(h.send_full("GET", "/health", None, &[], Some(outsider)).await.status, 200);
}

// ---------------------------------------------------------------- metrics

#[tokio::test]
async fn metrics_endpoint() {
    let h = harness(vec![three()], FakeProbe::with(&[]));
    let a = h.send("GET", "/metrics", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let samples = crate::metrics::tests::parse_exposition(&a.text);
    for name in [
        "patroni_version",
        "patroni_postgres_running",
        "patroni_postmaster_start_time",
        "patroni_primary",
        "patroni_xlog_location",
        "patroni_standby_leader",
        "patroni_replica",
        "patroni_sync_standby",
        "patroni_xlog_received_location",
        "patroni_xlog_replayed_location",
        "patroni_xlog_replayed_timestamp",
        "patroni_xlog_paused",
        "patroni_postgres_streaming",
        "patroni_postgres_in_archive_recovery",
        "patroni_postgres_server_version",
        "patroni_cluster_unlocked",
        "patroni_failsafe_mode_is_active",
        "patroni_postgres_timeline",
        "patroni_dcs_last_seen",
        "patroni_pending_restart",
        "patroni_is_paused",
        "patroni_postgres_state",
        "patroni_failover_priority",
    ] {
        assert!(samples.contains_key(name), "{name} missing");
    }
    assert!(a.text.contains("patroni_version{scope=\"demo\",name=\"p\"} 040104\n"), "{}", a.text);
}

#[tokio::test]
async fn a_standby_cluster_section_with_a_mistake_is_refused_by_patch_and_put_naming_the_key() {
    let h = harness(vec![cluster(Some("p"), &["p"], rich_config())], FakeProbe::with(&[]));
    let a = h.send("PATCH", "/config", Some(r#"{"standby_cluster": {"port": 5432}}"#)).await;
    assert_eq!(a.status, 400);
    assert!(a.text.contains("standby_cluster: give the other cluster's host"), "{}", a.text);
    let mut whole = rich_config();
    whole["standby_cluster"] = serde_json::json!({"host": "10.0.0.9", "hots": "x"});
    let a = h.send("PUT", "/config", Some(&whole.to_string())).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(h.backend.writes().is_empty());
    let a = h.send("PATCH", "/config", Some(r#"{"standby_cluster": {"host": "10.0.0.9", "port": 5432}}"#)).await;
    assert_eq!(a.status, 200, "a readable section is written: {}", a.text);
}
