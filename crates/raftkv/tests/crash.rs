//! Real processes, real disks, `kill -9`: acknowledged writes survive any member being
//! killed at any moment, including all of them at once.
//!
//! `cargo test --release -p raftkv --test crash` runs the short version (CI). The long
//! loop — hundreds of kill/restart cycles with a concurrent writer — is
//! `RAFTKV_CRASH_CYCLES=100 cargo test --release -p raftkv --test crash -- --ignored --nocapture`.

mod common;

use client::{Client, ClientOptions};
use common::TestCluster;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Short ticks (elections after 400-800 ms) and frequent snapshots, so that the kills
/// land in elections, snapshots and log compaction alike.
const SERVER_FLAGS: &[&str] = &["--tick-ms", "20", "--snapshot-count", "200"];

/// Every acknowledged write, read back from every member's own state.
async fn check_all(cluster: &TestCluster, acked: &[(String, String)]) {
    let c = cluster.client();
    let mut max_commit = 0;
    for i in 0..3 {
        if let Ok(s) = c.status(i).await {
            max_commit = max_commit.max(s.raft_index);
        }
    }
    cluster.wait_applied(max_commit).await;
    for (i, ep) in cluster.endpoints().into_iter().enumerate() {
        let opts = ClientOptions {
            deadline: Duration::from_secs(20),
            exactly_once: false,
            ..ClientOptions::default()
        };
        let mut one = Client::connect(&[ep], opts).unwrap();
        for (k, v) in acked {
            let got = one.get(k.as_bytes(), true).await.unwrap();
            let got = got.map(|kv| String::from_utf8(kv.value.to_vec()).unwrap());
            assert_eq!(got.as_deref(), Some(v.as_str()), "member {i} lost acknowledged write {k}");
        }
    }
}

/// Writes keys `prefix-N` one after another until stopped, recording acknowledged ones.
fn start_writer(
    cluster: &TestCluster,
    prefix: &'static str,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let mut c = cluster.client();
    tokio::spawn(async move {
        let mut failures = 0;
        let mut n = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let (k, v) = (format!("{prefix}-{n}"), format!("value-{n}"));
            match c.put(k.as_bytes(), v.as_bytes()).await {
                Ok(_) => acked.lock().unwrap().push((k, v)),
                Err(_) => failures += 1,
            }
            n += 1;
        }
        failures
    })
}

async fn crash_cycles(tag: &str, cycles: usize) {
    let mut cluster = TestCluster::start(tag, SERVER_FLAGS);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = start_writer(&cluster, "w", acked.clone(), stop.clone());
    let mut rng = 0x9E37_79B9u64;
    for cycle in 0..cycles {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis(300 + (rng >> 33) % 500)).await;
        let victim = match cycle % 4 {
            // Followers, the leader, and every so often all members at once.
            0 | 2 => cluster.leader_now().await.map(|l| (l + 1) % 3).unwrap_or(0),
            1 => cluster.leader_now().await.unwrap_or(1),
            _ => usize::MAX,
        };
        if victim == usize::MAX {
            for i in 0..3 {
                cluster.kill(i);
            }
            for i in 0..3 {
                cluster.spawn(i);
            }
        } else {
            cluster.kill(victim);
            tokio::time::sleep(Duration::from_millis(200 + (rng >> 40) % 400)).await;
            cluster.spawn(victim);
        }
        eprintln!(
            "cycle {cycle}: killed {}; {} writes acknowledged",
            if victim == usize::MAX { "all".to_string() } else { format!("m{}", victim + 1) },
            acked.lock().unwrap().len()
        );
    }
    // The cluster recovered from the last crash: a write after it is acknowledged.
    let before = acked.lock().unwrap().len();
    common::wait_for(
        "a write acknowledged after the last restart",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            let now = acked.lock().unwrap().len();
            async move { (now > before).then_some(()) }
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let failures = writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    check_all(&cluster, &acked).await;
    eprintln!("{} cycles: {} acknowledged writes all present on every member ({failures} writes failed and were not acknowledged)", cycles, acked.len());
}

/// Kill -9 a follower, then the leader, then all members, with a concurrent writer:
/// every acknowledged write is readable from every member afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    crash_cycles("crash", 4).await;
}

/// The long loop: RAFTKV_CRASH_CYCLES cycles (default 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn acknowledged_writes_survive_many_kill_9_cycles() {
    let cycles =
        std::env::var("RAFTKV_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    crash_cycles("crash-long", cycles).await;
}
