//! Membership changes on real processes, under a writer:
//!
//! - a member dies for good (`kill -9`): it is removed, and a brand-new member with an
//!   empty data dir, started from exactly the lines `etcdctl member add` prints, joins
//!   and catches up by snapshot (the only way: its first state must be a snapshot);
//! - the cluster grows 3 → 5 and shrinks back to 3; each removed member exits by itself
//!   and its data dir then refuses to start.
//!
//! In both, no acknowledged write is lost (each one reads back, linearizably, and from
//! the new member), and the longest write outage is printed.

mod common;

use common::{ClusterSpec, Load, TestCluster};
use proto::etcdserverpb as pb;
use proto::etcdserverpb::cluster_client::ClusterClient;
use std::time::{Duration, Instant};

/// Member `i`'s id, from its own status.
async fn id_of(c: &TestCluster, i: usize) -> u64 {
    let s = c.client().status(i).await.expect("status");
    s.header.expect("a header").member_id
}

/// A Cluster client of member `i`.
fn cluster(c: &TestCluster, i: usize) -> ClusterClient<tonic::transport::Channel> {
    ClusterClient::new(c.channel(i))
}

/// Retries a membership call while the cluster answers `Unavailable` (an election; or
/// etcd's "unhealthy cluster" until the members have been connected for 5 s), at most
/// 30 s.
macro_rules! until_done {
    ($call:expr) => {{
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match $call.await {
                Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => break other.expect("membership change").into_inner(),
            }
        }
    }};
}

/// Adds a new member `name` through `etcdctl member add` on member `via` (or, without
/// etcdctl, through gRPC, writing the same lines), and starts it from those lines.
/// Returns its index.
async fn add_and_start(c: &mut TestCluster, via: usize, name: &str) -> usize {
    let i = add(c, via, name).await;
    c.spawn(i);
    i
}

/// Adds a new member `name` as [`add_and_start`] does, without starting it.
async fn add(c: &mut TestCluster, via: usize, name: &str) -> usize {
    let i = c.plan_member(name);
    let peer = c.peer_url(i);
    let env = if common::have("etcdctl", "version") {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = common::etcdctl()
                .args(["--endpoints", &c.address(via), "--command-timeout=15s"])
                .args(["member", "add", name, &format!("--peer-urls={peer}")])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() {
                println!("{stdout}");
                break common::member_add_env(&stdout);
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("unhealthy cluster") || stderr.contains("Unavailable"),
                "{stderr}"
            );
            assert!(Instant::now() < deadline, "member add {name}: {stderr}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    } else {
        let req = pb::MemberAddRequest { peer_ur_ls: vec![peer.clone()], is_learner: false };
        let resp = until_done!(cluster(c, via).member_add(req.clone()));
        let new = resp.member.expect("the new member").id;
        let list: Vec<String> = resp
            .members
            .iter()
            .map(|m| format!("{}={}", if m.id == new { name } else { &m.name }, m.peer_ur_ls[0]))
            .collect();
        vec![
            ("ETCD_NAME".into(), name.into()),
            ("ETCD_INITIAL_CLUSTER".into(), list.join(",")),
            ("ETCD_INITIAL_ADVERTISE_PEER_URLS".into(), peer),
            ("ETCD_INITIAL_CLUSTER_STATE".into(), "existing".into()),
        ]
    };
    c.set_join_env(i, env);
    i
}

/// Waits (up to 60 s) until member `i` is listed with its name (it published itself)
/// and has applied what the leader had applied when the wait began.
async fn wait_caught_up(c: &TestCluster, via: usize, i: usize) {
    let name = c.members()[i].name.clone();
    let client = c.client();
    let target = client.status(via).await.expect("status").raft_applied_index;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = cluster(c, via).member_list(pb::MemberListRequest::default()).await;
        let listed = list.is_ok_and(|l| l.into_inner().members.iter().any(|m| m.name == name));
        let applied = client.status(i).await.map_or(0, |s| s.raft_applied_index);
        if listed && applied >= target {
            return;
        }
        assert!(Instant::now() < deadline, "{name} not caught up within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes member `id` through member `via`.
async fn remove(c: &TestCluster, via: usize, id: u64) -> pb::MemberRemoveResponse {
    until_done!(cluster(c, via).member_remove(pb::MemberRemoveRequest { id }))
}

/// Every acknowledged write reads back through `client` (linearizably), and through a
/// serializable read on member `local` (which has caught up).
async fn check_writes(c: &TestCluster, acked: &[u64], local: usize) {
    let mut client = c.client();
    for n in acked {
        let got = client.get(format!("k{n}").as_bytes(), false).await.unwrap();
        assert!(got.is_some(), "acknowledged write k{n} lost");
    }
    let mut kv = pb::kv_client::KvClient::new(c.channel(local));
    let all = pb::RangeRequest {
        key: "k".into(),
        range_end: "l".into(),
        serializable: true,
        count_only: true,
        ..Default::default()
    };
    let count = kv.range(all).await.unwrap().into_inner().count;
    assert!(count as usize >= acked.len(), "member {local} has {count} of {} writes", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_is_replaced_by_a_new_one_that_catches_up_by_snapshot() {
    let mut c = TestCluster::start_spec(ClusterSpec::raftkv("replace", &[]));
    c.wait_ready().await;
    let load = Load::start(c.client()).await;
    let dead = c.leader().await;
    let dead_id = id_of(&c, dead).await;
    c.kill(dead);
    let via = (dead + 1) % 3;
    let removed = remove(&c, via, dead_id).await;
    assert_eq!(removed.members.len(), 2, "{removed:?}");
    load.wait_more(20).await;
    let new = add_and_start(&mut c, via, "m4").await;
    wait_caught_up(&c, via, new).await;
    load.wait_more(20).await;
    let (acked, gap) = load.stop().await;
    println!("replace: {} writes acknowledged, longest write outage {gap:?}", acked.len());
    // Its first state came by snapshot (see `snapshot_files`).
    assert!(c.snapshot_files(new) >= 1, "the new member installed a snapshot");
    check_writes(&c, &acked, new).await;
    let list = cluster(&c, new).member_list(pb::MemberListRequest::default()).await.unwrap();
    let names: Vec<String> = list.into_inner().members.iter().map(|m| m.name.clone()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&"m4".to_string()) && !names.contains(&c.members()[dead].name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_grows_to_five_and_shrinks_to_three_and_removed_members_stay_out() {
    let mut c = TestCluster::start_spec(ClusterSpec::raftkv("grow", &[]));
    c.wait_ready().await;
    let load = Load::start(c.client()).await;
    let m4 = add_and_start(&mut c, 0, "m4").await;
    wait_caught_up(&c, 0, m4).await;
    let m5 = add_and_start(&mut c, 1, "m5").await;
    wait_caught_up(&c, 1, m5).await;
    let five = cluster(&c, 2).member_list(pb::MemberListRequest::default()).await.unwrap();
    assert_eq!(five.into_inner().members.len(), 5);
    load.wait_more(20).await;
    for i in [m4, m5] {
        let id = id_of(&c, i).await;
        remove(&c, 2, id).await;
        let status = c.wait_exit(i).await;
        assert!(!status.success(), "a removed member exits non-zero: {status}");
        load.wait_more(10).await;
    }
    let (acked, gap) = load.stop().await;
    println!("grow and shrink: {} writes acknowledged, longest write outage {gap:?}", acked.len());
    check_writes(&c, &acked, 2).await;
    let three = cluster(&c, 0).member_list(pb::MemberListRequest::default()).await.unwrap();
    assert_eq!(three.into_inner().members.len(), 3);

    // A removed member's data dir refuses to start, and says why.
    c.spawn(m5);
    let status = c.wait_exit(m5).await;
    assert!(!status.success());
    let log = std::fs::read_to_string(c.members()[m5].dir.with_extension("log")).unwrap();
    assert!(log.contains("the member has been permanently removed from the cluster"), "{log}");
    let refusal = log.lines().last().unwrap_or_default();
    assert!(refusal.contains("which was removed from cluster"), "{refusal}");
    assert!(refusal.contains("`member add` again to rejoin"), "{refusal}");
}

/// The leader that removes itself (Raft §4.2.2; etcd 3.4's behaviour): `etcdctl member
/// remove <leader's id>` sent to the leader itself gets etcd's answer (the removal
/// committed and applied, so the leader knows it is out), and only then does the
/// leader stop; the two members left elect a leader among themselves and keep every
/// acknowledged write. The answer must leave before the removed member's process ends,
/// which its exit (right after the removal is applied) would otherwise race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_removes_itself_answers_before_it_stops() {
    if !common::have("etcdctl", "version") {
        eprintln!("SKIPPED: etcdctl is needed for the transcript");
        return;
    }
    let mut c = TestCluster::start_spec(ClusterSpec::raftkv("self-remove", &[]));
    c.wait_ready().await;
    let load = Load::start(c.client()).await;
    let leader = c.leader().await;
    let header = c.client().status(leader).await.expect("status").header.expect("a header");
    let id = format!("{:x}", header.member_id);
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = common::etcdctl()
            .args(["--endpoints", &c.address(leader), "--command-timeout=15s"])
            .args(["member", "remove", &id])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // etcd's health check wants the leader connected to every voter for 5 s.
        if stderr.contains("unhealthy cluster") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        break (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr);
    };
    // etcdctl prints both ids as `%16x`: space-padded to 16 (a member id has fewer hex
    // digits one time in sixteen).
    let (id16, cluster16) =
        (format!("{:16x}", header.member_id), format!("{:16x}", header.cluster_id));
    assert_eq!(
        (out.0, out.1.as_str()),
        (true, format!("Member {id16} removed from cluster {cluster16}\n").as_str()),
        "stderr: {}",
        out.2
    );
    let status = c.wait_exit(leader).await;
    assert!(!status.success(), "a removed member exits non-zero: {status}");
    load.wait_more(20).await;
    let (acked, gap) = load.stop().await;
    println!(
        "leader removed itself: {} writes acknowledged, longest write outage {gap:?}",
        acked.len()
    );
    let left = (leader + 1) % 3;
    check_writes(&c, &acked, left).await;
    let list = cluster(&c, left).member_list(pb::MemberListRequest::default()).await.unwrap();
    let ids: Vec<String> =
        list.into_inner().members.iter().map(|m| format!("{:x}", m.id)).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(!ids.contains(&id), "{ids:?}");
}

/// A member that joined but was killed before its first snapshot arrived holds its ids
/// (`raftkv-joined`, the identity file) and no state. Restarted with the same flags
/// (the same `ETCD_*` lines), it asks the cluster for the member list again, finds
/// itself still listed (unstarted), and catches up by snapshot as on its first start;
/// it must not start from its own data as a cluster of one.
///
/// No snapshot can reach it the first time: two of the three members are paused
/// (SIGSTOP) before it starts, so the 4-voter cluster has no quorum and no leader,
/// while the third still answers the joiner's member-list call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_killed_before_its_first_snapshot_rejoins_with_the_same_flags() {
    let mut c = TestCluster::start_spec(ClusterSpec::raftkv("joiner-crash", &[]));
    c.wait_ready().await;
    let mut client = c.client();
    client.put(b"before-join", b"yes").await.unwrap();
    let leader = c.leader().await;
    let m4 = add(&mut c, leader, "m4").await;
    let answering = (leader + 1) % 3;
    let paused = [leader, (leader + 2) % 3];
    for i in paused {
        c.pause(i);
    }
    c.spawn(m4);
    // Up: it found its ids (kept in its data dir) and serves /health (unhealthy: no
    // leader), which it does only once its node runs.
    let joined = c.members()[m4].dir.join("raftkv-joined");
    common::wait_for("m4 starts", Duration::from_secs(60), Duration::from_millis(100), || {
        let started = joined.exists() && c.http_get(m4, "/health").is_some();
        async move { started.then_some(()) }
    })
    .await;
    c.kill(m4);
    assert_eq!(c.snapshot_files(m4), 0, "no snapshot could arrive: no leader");
    for i in paused {
        c.resume(i);
    }

    c.spawn(m4);
    wait_caught_up(&c, answering, m4).await;
    assert!(c.snapshot_files(m4) >= 1, "m4's first state came by snapshot");
    let mut kv = pb::kv_client::KvClient::new(c.channel(m4));
    let read = pb::RangeRequest { key: "before-join".into(), ..Default::default() };
    let got = common::retry!(kv.range(read.clone())).expect("a linearizable read on m4");
    let values: Vec<_> = got.into_inner().kvs.into_iter().map(|kv| kv.value).collect();
    assert_eq!(values, vec![b"yes".to_vec()]);
    let list = cluster(&c, m4).member_list(pb::MemberListRequest::default()).await.unwrap();
    let names: Vec<String> = list.into_inner().members.iter().map(|m| m.name.clone()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.contains(&"m4".to_string()), "m4 published itself: {names:?}");
}
