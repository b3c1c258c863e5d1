//! A member of a new cluster (`--initial-cluster-state new`, the default) that starts on
//! an empty data dir asks the other members whether it has started before, as etcd's
//! `isMemberBootstrapped` does:
//!
//! - a member whose data dir was lost (`rm -rf`) refuses to start ("has already been
//!   bootstrapped", non-zero exit) instead of voting with an empty log, and no
//!   acknowledged write is lost;
//! - a member that never started (the others list it, unpublished) still bootstraps,
//!   whether it starts late or together with the others.

mod common;

use common::{ClusterSpec, TestCluster};
use proto::etcdserverpb as pb;
use proto::peer::peer_client::PeerClient;
use proto::peer::MembersRequest;
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

/// Waits (up to 30 s) for member `i`'s process to exit by itself.
async fn wait_exit(c: &mut TestCluster, i: usize) -> std::process::ExitStatus {
    let mut status = None;
    common::wait_for(
        "the member exits",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            status = status.or_else(|| c.exited(i));
            std::future::ready(status.map(|_| ()))
        },
    )
    .await;
    status.unwrap()
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
    let status = wait_exit(&mut c, 2).await;
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
