//! Writes that arrive at followers while the leader changes (issue 12: forwarded writes
//! travel inside the peer frame stream). Writers put fresh keys through every member's
//! own gRPC port (two thirds of them arrive at followers and are forwarded), while the
//! leader hands over to another member and, later, is killed with `kill -9` and
//! restarted. A forwarded batch in flight then may have been applied by the old leader
//! and its stream broken before the answer came: its writes must come back "request
//! timed out" (unknown outcome), never be sent again by the follower.
//!
//! Checks: every acknowledged put is there with its value; no key was put twice (each
//! key's version is 1: a put the follower resent after it was applied would be 2); and
//! the forwards went by the frame stream.

mod common;

use common::TestCluster;
use proto::etcdserverpb as pb;
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Writers per member: enough that batches are in flight at any moment.
const WRITERS_PER_MEMBER: usize = 6;
/// Short ticks: elections after a kill take a fraction of a second.
const FLAGS: &[&str] = &["--tick-ms", "20"];

/// Puts `w{id}/{n}` through member `i`'s port, one after another, until stopped; records
/// the acknowledged keys with their values.
fn writer(
    cluster: &TestCluster,
    i: usize,
    id: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
) -> tokio::task::JoinHandle<()> {
    let mut kv = KvClient::new(cluster.channel(i));
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let (key, value) = (format!("w{id:02}/{n:06}"), format!("{id}-{n}"));
            let put = pb::PutRequest {
                key: key.clone().into(),
                value: value.clone().into(),
                ..Default::default()
            };
            match kv.put(put).await {
                Ok(_) => acked.lock().unwrap().push((key, value)),
                // Unknown outcome or refused: never resent (a new key follows).
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
            n += 1;
        }
    })
}

/// Member `i`'s id.
async fn member_id(cluster: &TestCluster, i: usize) -> u64 {
    cluster.client().status(i).await.unwrap().header.unwrap().member_id
}

/// The value of the `/metrics` line of member `i` that starts with `series ` (0 if none).
fn metric(cluster: &TestCluster, i: usize, series: &str) -> u64 {
    let Some((_, body)) = cluster.http_get(i, "/metrics") else { return 0 };
    let line = body.lines().find(|l| l.strip_prefix(series).is_some_and(|r| r.starts_with(' ')));
    line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

fn forwarded_by_frame(cluster: &TestCluster, i: usize) -> u64 {
    metric(cluster, i, "raftkv_forwarded_batches_total{transport=\"frame\"}")
}

/// Waits until `n` more puts are acknowledged (the cluster makes progress again).
async fn progress(acked: &Mutex<Vec<(String, String)>>, n: usize) {
    let before = acked.lock().unwrap().len();
    common::wait_for(
        "acknowledged writes",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            let now = acked.lock().unwrap().len();
            async move { (now >= before + n).then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_writes_survive_leader_changes_without_loss_or_duplicates() {
    let mut cluster = TestCluster::start("forward-leader-change", FLAGS);
    cluster.wait_ready().await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for i in 0..3 {
        for w in 0..WRITERS_PER_MEMBER {
            writers.push(writer(
                &cluster,
                i,
                i * WRITERS_PER_MEMBER + w,
                stop.clone(),
                acked.clone(),
            ));
        }
    }
    progress(&acked, 200).await;

    // Two hand-overs: the leader transfers to a follower while writes are forwarded to it.
    for _ in 0..2 {
        let leader = cluster.leader().await;
        let target = member_id(&cluster, (leader + 1) % 3).await;
        let mut m = MaintenanceClient::new(cluster.channel(leader));
        let moved = m.move_leader(pb::MoveLeaderRequest { target_id: target }).await;
        assert!(moved.is_ok(), "move-leader: {moved:?}");
        progress(&acked, 200).await;
    }
    // Two kills: the leader dies with forwarded batches in flight, and comes back.
    for _ in 0..2 {
        let leader = cluster.leader().await;
        cluster.kill(leader);
        progress(&acked, 200).await;
        cluster.spawn(leader);
        progress(&acked, 200).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    cluster.wait_ready().await;
    let leader = cluster.leader().await;
    let mut kv = KvClient::new(cluster.channel(leader));
    let all = pb::RangeRequest { key: "w".into(), range_end: "x".into(), ..Default::default() };
    let stored: BTreeMap<Vec<u8>, (Vec<u8>, i64)> = kv
        .range(all)
        .await
        .unwrap()
        .into_inner()
        .kvs
        .into_iter()
        .map(|kv| (kv.key.to_vec(), (kv.value.to_vec(), kv.version)))
        .collect();
    let acked = acked.lock().unwrap().clone();
    for (key, value) in &acked {
        let got = stored.get(key.as_bytes());
        assert_eq!(got.map(|(v, _)| &v[..]), Some(value.as_bytes()), "acknowledged {key} lost");
    }
    let twice: Vec<String> = stored
        .iter()
        .filter(|(_, (_, version))| *version != 1)
        .map(|(k, (_, version))| format!("{} (version {version})", String::from_utf8_lossy(k)))
        .collect();
    assert!(twice.is_empty(), "puts applied more than once: {twice:?}");
    let framed: u64 = (0..3).map(|i| forwarded_by_frame(&cluster, i)).sum();
    assert!(framed > 0, "the forwards took the frame stream");
    // Each forwarded write is timed, and so is the wait to apply it here too.
    let timed: u64 = (0..3).map(|i| metric(&cluster, i, "raftkv_forward_seconds_count")).sum();
    let waited: u64 =
        (0..3).map(|i| metric(&cluster, i, "raftkv_forward_apply_wait_seconds_count")).sum();
    assert!(timed >= framed, "{timed} forwarded writes timed, fewer than {framed} batches");
    assert!(waited > 0 && waited <= timed, "{waited} apply waits timed of {timed} forwards");
    println!(
        "{} puts acknowledged, {} stored, {framed} batches forwarded by frame (members up now)",
        acked.len(),
        stored.len()
    );
}
