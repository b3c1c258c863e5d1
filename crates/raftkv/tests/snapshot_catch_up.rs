//! A follower that missed more than the leader's log holds catches up by InstallSnapshot,
//! and the snapshot it gets is read chunk by chunk from the leader's snapshot file (the
//! core keeps no snapshot bytes, issue 12). Real processes, real disks.

mod common;

use client::{Client, ClientOptions};
use common::TestCluster;
use std::time::Duration;

/// Snapshots every 50 entries, so 600 writes compact the log far past a stopped member.
const SERVER_FLAGS: &[&str] = &["--tick-ms", "20", "--snapshot-count", "50"];

/// Story: the leader used to serve InstallSnapshot from the bytes its core kept in
/// memory; now it reads each chunk from the file. A member stopped before 600 writes
/// (the leader's log now starts hundreds of entries after its last index, so only a
/// snapshot can catch it up) is restarted and must serve every key from its own state:
/// a chunk read from the wrong place fails the follower's checksum and it never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_follower_catches_up_from_the_leaders_snapshot_file() {
    let mut cluster = TestCluster::start("snapcatchup", SERVER_FLAGS);
    cluster.wait_ready().await;
    let leader = cluster.leader().await;
    let behind = (leader + 1) % 3;
    cluster.kill(behind);
    let mut c = cluster.client();
    let value = "v".repeat(2000); // 600 × 2 kB: a snapshot of several 1 MiB chunks
    for n in 0..600 {
        c.put(format!("k{n:04}").as_bytes(), value.as_bytes()).await.unwrap();
    }
    cluster.spawn(behind);
    let opts = ClientOptions {
        deadline: Duration::from_secs(5),
        exactly_once: false,
        ..ClientOptions::default()
    };
    let connect = || Client::connect(&[cluster.endpoint(behind)], opts.clone()).unwrap();
    common::wait_for(
        "the restarted member serves the last write from its own state",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let mut one = connect();
            async move { one.get(b"k0599", true).await.ok().flatten().map(|_| ()) }
        },
    )
    .await;
    let mut one = connect();
    for n in 0..600 {
        let got = one.get(format!("k{n:04}").as_bytes(), true).await.unwrap();
        assert_eq!(got.map(|kv| kv.value.len()), Some(2000), "key k{n:04} on the restarted member");
    }
}

/// Story (issue 12): a member keeps only the last few applied entries in memory
/// (`--experimental-snapshot-catchup-entries`, 5000 by default, 20 here) past what its
/// leader knows followers need, and no snapshot is due (`--snapshot-count` 100k). A
/// follower is stopped, 300 writes go by (the other follower trims them from memory),
/// then the leader is stopped and the stopped follower restarted: the one that kept
/// running leads, and its log in memory starts long after where the restarted member
/// stands, past its last snapshot. It must take a snapshot for it and send it; without
/// that the restarted member never catches up, and with two of three members up nothing
/// commits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_a_new_leaders_trimmed_log_gets_a_snapshot_taken_for_it() {
    let flags = &["--tick-ms", "20", "--experimental-snapshot-catchup-entries", "20"];
    let mut cluster = TestCluster::start("trimcatchup", flags);
    cluster.wait_ready().await;
    let leader = cluster.leader().await;
    let (behind, other) = ((leader + 1) % 3, (leader + 2) % 3);
    cluster.kill(behind);
    let mut c = cluster.client();
    for n in 0..300 {
        c.put(format!("k{n:04}").as_bytes(), b"v").await.unwrap();
    }
    cluster.kill(leader);
    cluster.spawn(behind);
    let opts = ClientOptions {
        deadline: Duration::from_secs(5),
        exactly_once: false,
        ..ClientOptions::default()
    };
    let (on_behind, on_other) = (cluster.endpoint(behind), cluster.endpoint(other));
    common::wait_for(
        "a write commits on the two members left",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let mut two =
                Client::connect(&[on_other.clone(), on_behind.clone()], opts.clone()).unwrap();
            async move { two.put(b"after", b"1").await.ok().map(|_| ()) }
        },
    )
    .await;
    let mut one = Client::connect(&[on_behind], opts).unwrap();
    for key in (0..300).map(|n| format!("k{n:04}")).chain(["after".to_string()]) {
        let got = one.get(key.as_bytes(), true).await.unwrap();
        assert!(got.is_some(), "key {key} on the restarted member");
    }
    assert!(cluster.snapshot_files(other) > 0, "the new leader took a snapshot");
}
