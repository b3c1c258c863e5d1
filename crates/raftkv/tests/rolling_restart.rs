//! A rolling restart (SIGTERM and restart every member in turn, each caught up before
//! the next goes) while a writer runs: the longest time the writer waits between two
//! acknowledged writes stays below one election timeout of the server (20 ticks of
//! the default 50 ms: 1 s), because a leader that gets SIGTERM hands leadership to the
//! most caught-up voter before it exits instead of leaving the others to time out, and
//! no acknowledged write is lost.
//!
//! Without the hand-over the outage is an election timeout or more (the followers must
//! first notice the leader is gone): the test fails, as checked when it was written.

mod common;

use common::{ClusterSpec, TestCluster};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The server's election timeout with its default flags (20 ticks of 50 ms).
const ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);

/// Writes `k0`, `k1`... one after the other until told to stop; records when each
/// write was acknowledged.
async fn writer(
    mut client: client::Client,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u64, Instant)>>>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("k{n}");
        if client.put(key.as_bytes(), b"v").await.is_ok() {
            acked.lock().unwrap().push((n, Instant::now()));
            n += 1;
        }
    }
}

/// The longest wait between two acknowledged writes (from `from` on).
fn longest_gap(acked: &[(u64, Instant)], from: Instant) -> Duration {
    let times = std::iter::once(from).chain(acked.iter().map(|(_, t)| *t));
    let times: Vec<Instant> = times.collect();
    times.windows(2).map(|w| w[1].saturating_duration_since(w[0])).max().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_has_no_election_timeout_outage_and_loses_no_write() {
    let mut c = TestCluster::start_spec(ClusterSpec::raftkv("rolling", &[]));
    c.wait_ready().await;
    c.leader().await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let task = tokio::spawn(writer(c.client(), stop.clone(), acked.clone()));
    common::wait_for("first writes", Duration::from_secs(10), Duration::from_millis(10), || {
        let n = acked.lock().unwrap().len();
        async move { (n >= 20).then_some(()) }
    })
    .await;
    let started = Instant::now();
    let mut leaders_stopped = 0;
    for i in 0..3 {
        leaders_stopped += usize::from(c.leader().await == i);
        c.terminate(i);
        c.spawn(i);
        c.wait_ready().await;
        // Caught up before the next member goes: it applied what the leader has.
        let leader = c.leader().await;
        let index = c.client().status(leader).await.unwrap().raft_applied_index;
        c.wait_applied(index).await;
    }
    // A few more writes after the last restart, so a final outage counts too.
    let before = acked.lock().unwrap().len();
    common::wait_for("writes after", Duration::from_secs(10), Duration::from_millis(10), || {
        let n = acked.lock().unwrap().len();
        async move { (n >= before + 20).then_some(()) }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    let gap = longest_gap(&acked, started);
    println!(
        "rolling restart: {} writes acknowledged, {leaders_stopped} leader(s) stopped, \
         longest write outage {gap:?} (election timeout {ELECTION_TIMEOUT:?})",
        acked.len()
    );
    assert!(leaders_stopped >= 1, "the restart went through a leader at least once");
    // No acknowledged write lost: every one reads back (linearizably).
    let mut client = c.client();
    for (n, _) in &acked {
        let got = client.get(format!("k{n}").as_bytes(), false).await.unwrap();
        assert!(got.is_some(), "acknowledged write k{n} lost");
    }
    assert!(gap < ELECTION_TIMEOUT, "longest write outage {gap:?} >= {ELECTION_TIMEOUT:?}");
}
