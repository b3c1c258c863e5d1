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

use client::ClientOptions;
use common::{ClusterSpec, Load, TestCluster};
use std::time::Duration;

/// The server's election timeout with its default flags (20 ticks of 50 ms).
const ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_has_no_election_timeout_outage_and_loses_no_write() {
    let mut c = TestCluster::start_spec(ClusterSpec::raftkv("rolling", &[]));
    c.wait_ready().await;
    c.leader().await;
    // One attempt (one member) is given up after 500 ms and the next member tried: a
    // connection to a member that stopped mid-request costs that, not the deadline.
    // Without the hand-over no member can commit for an election timeout, so the outage
    // stays at least that long whatever the client does.
    let load = Load::start(c.client_with(ClientOptions {
        deadline: Duration::from_secs(20),
        attempt_timeout: Duration::from_millis(500),
        exactly_once: true,
        ..ClientOptions::default()
    }))
    .await;
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
    load.wait_more(20).await;
    let failures = load.failures();
    let (acked, gap) = load.stop().await;
    println!(
        "rolling restart: {} writes acknowledged, {leaders_stopped} leader(s) stopped, \
         longest write outage {gap:?} (election timeout {ELECTION_TIMEOUT:?})",
        acked.len()
    );
    assert!(leaders_stopped >= 1, "the restart went through a leader at least once");
    // No acknowledged write lost: every one reads back (linearizably).
    let mut client = c.client();
    for n in &acked {
        let got = client.get(format!("k{n}").as_bytes(), false).await.unwrap();
        assert!(got.is_some(), "acknowledged write k{n} lost");
    }
    assert!(
        gap < ELECTION_TIMEOUT,
        "longest write outage {gap:?} >= {ELECTION_TIMEOUT:?}; writes given up: {failures:?} \
         (member logs kept in {})",
        c.root().display()
    );
}
