//! Space quota, NOSPACE alarm and automatic compaction on a real 3-member cluster.
//!
//! The quota story as an operator lives it (etcd's "space quota" maintenance guide):
//! writes until the quota trips, the error every client then gets, what still works,
//! the alarm in `alarm list`, `Status` and `/health`, and the documented recovery —
//! compact, defragment, disarm — after which writes work again.

mod common;

use common::{retry, wait_for, TestCluster};
use proto::etcdserverpb as pb;
use std::time::Duration;
use tonic::Code;

const QUOTA_BYTES: u64 = 1024 * 1024;
const VALUE_BYTES: usize = 50_000;

fn put(key: &str, value_bytes: usize) -> pb::PutRequest {
    pb::PutRequest {
        key: key.to_string().into(),
        value: vec![b'x'; value_bytes].into(),
        ..Default::default()
    }
}

fn kv(c: &TestCluster, i: usize) -> pb::kv_client::KvClient<tonic::transport::Channel> {
    pb::kv_client::KvClient::new(c.channel(i))
}

fn maintenance(
    c: &TestCluster,
    i: usize,
) -> pb::maintenance_client::MaintenanceClient<tonic::transport::Channel> {
    pb::maintenance_client::MaintenanceClient::new(c.channel(i))
}

fn alarm_request(action: pb::alarm_request::AlarmAction, m: &pb::AlarmMember) -> pb::AlarmRequest {
    pb::AlarmRequest { action: action as i32, member_id: m.member_id, alarm: m.alarm }
}

async fn alarm_list(c: &TestCluster, i: usize) -> Vec<pb::AlarmMember> {
    let get = pb::AlarmRequest::default(); // GET, type NONE: every alarm
    retry!(maintenance(c, i).alarm(get)).unwrap().into_inner().alarms
}

async fn member_id(c: &TestCluster, i: usize) -> u64 {
    let s = retry!(maintenance(c, i).status(pb::StatusRequest {})).unwrap().into_inner();
    s.header.unwrap().member_id
}

fn assert_no_space(what: &str, r: Result<impl std::fmt::Debug, tonic::Status>) {
    let e = r.expect_err(what);
    assert_eq!(e.code(), Code::ResourceExhausted, "{what}: {e:?}");
    assert_eq!(e.message(), "etcdserver: mvcc: database space exceeded", "{what}");
}

/// Writes through a follower (forwarded to the leader, which checks the quota) until
/// the first refusal; returns how many were accepted.
async fn write_until_refused(c: &TestCluster, via: usize) -> usize {
    let mut accepted = 0;
    loop {
        match retry!(kv(c, via).put(put(&format!("k{accepted}"), VALUE_BYTES))) {
            Ok(_) => accepted += 1,
            Err(e) => {
                assert_no_space("the write over the quota", Err::<(), _>(e));
                return accepted;
            }
        }
        assert!(accepted < 100, "1 MiB quota never tripped after {accepted} writes of 50 kB");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_until_the_quota_trips_then_compact_defrag_disarm_recovers() {
    let c = TestCluster::start("quota", &[&format!("--quota-backend-bytes={QUOTA_BYTES}")]);
    c.wait_ready().await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let accepted = write_until_refused(&c, follower).await;
    // 50 kB values, 1 MiB quota, a 16 KiB base: the 20th would reach it.
    assert!((15..=20).contains(&accepted), "{accepted} writes accepted");

    // NOSPACE is raised through the log by the member that refused the write: the
    // member the client reached (etcd's check, on its own size estimate) or the leader
    // (which checks again before proposing, counting writes in flight, and may trip
    // first when the follower's estimate lags one apply behind). Exactly one alarm,
    // and every member lists it.
    let (follower_id, leader_id) = (member_id(&c, follower).await, member_id(&c, leader).await);
    let listed = alarm_list(&c, 0).await;
    assert_eq!(listed.len(), 1, "one alarm after the refused write: {listed:?}");
    let nospace = listed[0];
    assert_eq!(nospace.alarm, pb::AlarmType::Nospace as i32, "{listed:?}");
    assert!(
        [follower_id, leader_id].contains(&nospace.member_id),
        "NOSPACE raised for member {} (follower {follower_id}, leader {leader_id})",
        nospace.member_id
    );
    let member_id = nospace.member_id;
    for i in 0..3 {
        assert_eq!(alarm_list(&c, i).await, vec![nospace], "alarm list on member {i}");
    }

    // Every member refuses what may grow the store, at the edge or at apply.
    for i in 0..3 {
        assert_no_space("a small put", retry!(kv(&c, i).put(put("small", 1))));
        let txn = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(put("t", 1))),
            }],
            ..Default::default()
        };
        assert_no_space("a txn with a put", retry!(kv(&c, i).txn(txn.clone())));
        let mut lease = pb::lease_client::LeaseClient::new(c.channel(i));
        let grant = pb::LeaseGrantRequest { ttl: 60, id: 0 };
        assert_no_space("a lease grant", retry!(lease.lease_grant(grant)));
    }

    // Reads and deletes work; Status and /health show the alarm on every member.
    let k0 = pb::RangeRequest { key: "k0".into(), ..Default::default() };
    let got = retry!(kv(&c, follower).range(k0.clone())).unwrap().into_inner();
    assert_eq!(got.kvs.len(), 1);
    let del = pb::DeleteRangeRequest { key: "k0".into(), ..Default::default() };
    assert_eq!(retry!(kv(&c, follower).delete_range(del.clone())).unwrap().into_inner().deleted, 1);
    for i in 0..3 {
        let s = retry!(maintenance(&c, i).status(pb::StatusRequest {})).unwrap().into_inner();
        assert_eq!(s.errors, vec![format!("memberID:{member_id} alarm:NOSPACE ")]);
        assert!(s.db_size > (QUOTA_BYTES as i64) / 2, "db size {}", s.db_size);
        assert_eq!(s.db_size, s.db_size_in_use);
        let (code, body) = c.http_get(i, "/health").expect("/health answers");
        assert_eq!((code, body.trim()), (503, r#"{"health":"false","reason":"ALARM NOSPACE"}"#));
    }

    // The recovery etcd documents: compact, defragment, disarm.
    let rev = got.header.unwrap().revision + 1; // the delete's revision
    let compact = pb::CompactionRequest { revision: rev, physical: true };
    retry!(kv(&c, leader).compact(compact)).unwrap();
    for i in 0..3 {
        retry!(maintenance(&c, i).defragment(pb::DefragmentRequest {})).unwrap();
    }
    assert_no_space("a put before the disarm", retry!(kv(&c, 0).put(put("small", 1))));
    let deactivate = alarm_request(pb::alarm_request::AlarmAction::Deactivate, &nospace);
    let cleared = retry!(maintenance(&c, follower).alarm(deactivate)).unwrap().into_inner();
    assert_eq!(cleared.alarms, vec![nospace], "the disarm answers the alarm it cleared");
    for i in 0..3 {
        assert_eq!(alarm_list(&c, i).await, vec![], "alarm list on member {i}");
        retry!(kv(&c, i).put(put(&format!("after{i}"), 1))).expect("writes work again");
        let (code, _) = wait_for(
            "health after the disarm",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || async { c.http_get(i, "/health").filter(|(code, _)| *code == 200) },
        )
        .await;
        assert_eq!(code, 200);
    }
}

/// Alarm ACTIVATE through the API raises an alarm for the member it names, as etcd's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_activated_through_the_api_refuses_writes_until_deactivated() {
    let c = TestCluster::start("alarm-api", &[]);
    c.wait_ready().await;
    let m = pb::AlarmMember { member_id: 42, alarm: pb::AlarmType::Nospace as i32 };
    let activate = alarm_request(pb::alarm_request::AlarmAction::Activate, &m);
    let raised = retry!(maintenance(&c, 1).alarm(activate)).unwrap().into_inner();
    assert_eq!(raised.alarms, vec![m]);
    assert_no_space("a put under an activated alarm", retry!(kv(&c, 2).put(put("k", 1))));
    let bad = pb::AlarmRequest { action: 7, member_id: 1, alarm: 1 };
    let e = retry!(maintenance(&c, 0).alarm(bad)).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let deactivate = alarm_request(pb::alarm_request::AlarmAction::Deactivate, &m);
    retry!(maintenance(&c, 0).alarm(deactivate)).unwrap();
    retry!(kv(&c, 2).put(put("k", 1))).expect("writes work again");
}

/// The compact revision as HashKV reports it on member `i`.
async fn compact_revision(c: &TestCluster, i: usize) -> i64 {
    let r = retry!(maintenance(c, i).hash_kv(pb::HashKvRequest { revision: 0 }));
    r.unwrap().into_inner().compact_revision
}

/// Revision mode keeps the last N revisions: the leader compacts to current − N at
/// its next check (etcd checks every 5 minutes; a hidden flag shortens it here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_auto_compaction_keeps_the_last_revisions() {
    let c = TestCluster::start(
        "autocompact-rev",
        &[
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=5",
            "--experimental-auto-compaction-revision-interval=200ms",
        ],
    );
    c.wait_ready().await;
    let mut last = 0;
    for i in 0..20 {
        last = retry!(kv(&c, 0).put(put(&format!("k{}", i % 3), 10)))
            .unwrap()
            .into_inner()
            .header
            .unwrap()
            .revision;
    }
    for i in 0..3 {
        wait_for(
            "revision auto compaction",
            Duration::from_secs(15),
            Duration::from_millis(50),
            || async { (compact_revision(&c, i).await == last - 5).then_some(()) },
        )
        .await;
    }
    let old = pb::RangeRequest { key: "k0".into(), revision: last - 6, ..Default::default() };
    let e = retry!(kv(&c, 1).range(old.clone())).unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
}

/// Periodic mode with a 1 s retention: once writes stop, the revision of one period
/// ago is the last one, and the leader compacts to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_auto_compaction_compacts_to_the_revision_of_one_period_ago() {
    let c = TestCluster::start(
        "autocompact-periodic",
        &["--auto-compaction-mode=periodic", "--auto-compaction-retention=1s"],
    );
    c.wait_ready().await;
    let mut last = 0;
    for i in 0..10 {
        let r = retry!(kv(&c, 0).put(put(&format!("k{i}"), 10))).unwrap().into_inner();
        last = r.header.unwrap().revision;
    }
    wait_for(
        "periodic auto compaction",
        Duration::from_secs(15),
        Duration::from_millis(50),
        || async { (compact_revision(&c, 0).await == last).then_some(()) },
    )
    .await;
}
