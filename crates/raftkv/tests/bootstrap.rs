//! A member of a new cluster (`--initial-cluster-state new`, the default) that starts on
//! an empty data dir asks the other members whether it has started before, as etcd's
//! `isMemberBootstrapped` does:
//!
//! - a member whose data dir was lost (`rm -rf`) refuses to start ("has already been
//!   bootstrapped", non-zero exit) instead of voting with an empty log, and no
//!   acknowledged write is lost;
//! - a member that never started (the others list it, unpublished) still bootstraps,
//!   whether it starts late or together with the others.
//!
//! And `--initial-cluster-token` counts: two clusters on the same names and peer URLs
//! that differ by token (a cluster restored from a backup and the old one) refuse each
//! other's members.

mod common;

use common::{ClusterSpec, TestCluster};
use proto::etcdserverpb as pb;
use proto::peer::peer_client::PeerClient;
use proto::peer::MembersRequest;
use std::process::{Child, Command};
use std::time::Duration;

/// Whether member `i`'s peer service answers that member `of` has published its client
/// URLs (it has started).
async fn lists_as_started(c: &TestCluster, i: usize, of: usize) -> bool {
    let Ok(channel) = tonic::transport::Endpoint::from_shared(c.peer_url(i)).map(|e| {
        e.connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(2)).connect_lazy()
    }) else {
        return false;
    };
    let request = MembersRequest { peer_urls: vec![] };
    let Ok(answer) = PeerClient::new(channel).members(request).await else { return false };
    let peer_url = c.peer_url(of);
    answer
        .into_inner()
        .members
        .iter()
        .any(|m| m.peer_urls.contains(&peer_url) && !m.client_urls.is_empty())
}

/// Reads `key` linearizably from member `i` (retrying while there is no leader).
async fn get(c: &TestCluster, i: usize, key: &str) -> Option<Vec<u8>> {
    let kv = pb::kv_client::KvClient::new(c.channel(i));
    let request = pb::RangeRequest { key: key.as_bytes().to_vec().into(), ..Default::default() };
    let answer =
        common::wait_for("a read", Duration::from_secs(30), Duration::from_millis(100), || {
            let (mut kv, request) = (kv.clone(), request.clone());
            async move { kv.range(request).await.ok() }
        })
        .await;
    answer.into_inner().kvs.first().map(|kv| kv.value.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_data_dir_was_lost_refuses_to_bootstrap_again() {
    let mut c = TestCluster::start("boot-lost", &[]);
    c.wait_ready().await;
    let mut client = c.client();
    for n in 0..20 {
        client.put(format!("k{n}").as_bytes(), b"v").await.expect("put");
    }
    // m2 down; LOST is acknowledged by m1 and m3 only.
    c.kill(1);
    client.put(b"LOST", b"acknowledged").await.expect("put LOST with m1 and m3");
    c.kill(0);
    c.kill(2);
    std::fs::remove_dir_all(&c.members()[2].dir).unwrap();

    // m2 comes back first (its data dir is intact) and, once it answers, lists m3 as
    // started: m3 published its client URLs in its first life.
    c.spawn(1);
    common::wait_for(
        "m2 lists m3 as started",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let c = &c;
            async move { lists_as_started(c, 1, 2).await.then_some(()) }
        },
    )
    .await;
    c.spawn(2);
    let status = c.wait_exit(2).await;
    assert!(!status.success(), "m3 on an empty data dir must not start: {status}");
    let log = std::fs::read_to_string(c.members()[2].dir.with_extension("log")).unwrap();
    assert!(log.contains("has already been bootstrapped"), "etcd's words: {log}");
    assert!(log.contains("member add") && log.contains("backup"), "what to do: {log}");
    assert!(!c.members()[2].dir.join("member").exists(), "m3 wrote no state");

    // m1 and m2 make a quorum again; nothing acknowledged was lost.
    c.spawn(0);
    assert_eq!(get(&c, 1, "LOST").await.as_deref(), Some(&b"acknowledged"[..]));
    for n in 0..20 {
        assert_eq!(get(&c, 0, &format!("k{n}")).await.as_deref(), Some(&b"v"[..]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_started_bootstraps_late_or_with_the_others() {
    // Late: m1 and m2 run (and list m3, unpublished) before m3 first starts.
    let mut c = TestCluster::plan(ClusterSpec::raftkv("boot-late", &[]));
    c.spawn(0);
    c.spawn(1);
    c.wait_ready().await;
    assert!(!lists_as_started(&c, 0, 2).await, "m3 has not started yet");
    c.spawn(2);
    c.wait_ready().await;
    assert!(c.exited(2).is_none(), "m3 runs");
    c.client().put(b"k", b"v").await.expect("put");
    assert_eq!(get(&c, 2, "k").await.as_deref(), Some(&b"v"[..]));
    drop(c);

    // Together: no member answers yet, each bootstraps.
    let c = TestCluster::start("boot-together", &[]);
    c.wait_ready().await;
    c.client().put(b"k", b"v").await.expect("put");
}

/// A process killed (`kill -9`) when dropped, failing test or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_that_differ_only_by_token_refuse_each_others_members() {
    let flags = ["--initial-cluster-token", "new-token"];
    let mut c = TestCluster::plan(ClusterSpec::raftkv("boot-token", &flags));
    c.spawn(0);
    c.spawn(1);
    c.wait_ready().await;
    // m3 of the old cluster (etcd's default token): same name, URLs and member list.
    let m = &c.members()[2];
    let log_path = m.dir.with_extension("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let client_url = format!("http://127.0.0.1:{}", m.client_port);
    let _old = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_raftkv"))
            .arg("server")
            .arg("--data-dir")
            .arg(&m.dir)
            .args(["--name", &m.name, "--initial-cluster", c.initial_cluster()])
            .args(["--listen-client-urls", &client_url, "--listen-peer-urls", &c.peer_url(2)])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // Its logs (stdout) and errors: the new cluster's members refuse its Hello.
    common::wait_for("m3 is refused", Duration::from_secs(30), Duration::from_millis(100), || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        std::future::ready(log.contains("belongs to cluster").then_some(()))
    })
    .await;
    // The new cluster goes on with its own two members; m3 follows nobody.
    c.client().put(b"k", b"v").await.expect("put");
    let status = pb::maintenance_client::MaintenanceClient::new(c.channel(2))
        .status(pb::StatusRequest {})
        .await
        .expect("m3's status")
        .into_inner();
    let ids = [c.client().status(0).await.unwrap(), c.client().status(1).await.unwrap()];
    let members = ids.map(|s| s.header.unwrap().member_id);
    assert!(!members.contains(&status.leader), "m3 follows no member of the new cluster");
}
