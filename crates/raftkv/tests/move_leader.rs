//! `etcdctl move-leader` against raftkv and against a real etcd 3.4, side by side: the
//! same commands on a 3-member cluster of each, and the transcripts (stdout, the error
//! line and the exit status) must be equal once member ids are replaced by member
//! names. Covers a transfer to a follower, to the leader itself, to an unknown id, and
//! MoveLeader sent to a follower (through gRPC: etcdctl itself only asks the leader).
//!
//! Needs `etcd` and `etcdctl`; without them the test prints SKIPPED and passes.

mod common;

use common::{ClusterSpec, TestCluster};
use proto::etcdserverpb as pb;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use std::collections::BTreeMap;

/// Member id (hex, as etcdctl prints it) → member name, from each member's status.
async fn names(c: &TestCluster) -> BTreeMap<String, String> {
    let client = c.client();
    let mut names = BTreeMap::new();
    for i in 0..c.members().len() {
        let s = client.status(i).await.expect("status");
        let id = s.header.expect("a header").member_id;
        names.insert(format!("{id:x}"), c.members()[i].name.clone());
    }
    names
}

/// Runs `etcdctl move-leader target` on `endpoints`; stdout, the `Error:` line and the
/// exit status, ids replaced by names.
fn move_leader(endpoints: &str, target: &str, names: &BTreeMap<String, String>) -> Vec<String> {
    let out = common::etcdctl()
        .args(["--endpoints", endpoints, "--command-timeout=10s", "move-leader", target])
        .output()
        .expect("running etcdctl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr.lines().filter(|l| l.starts_with("Error:")).map(str::to_string);
    let mut lines: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).chain(error).collect();
    lines.push(format!("exit {}", out.status.code().unwrap_or(-1)));
    for line in &mut lines {
        let words: Vec<String> = line
            .split(' ')
            .map(|w| names.get(w).cloned().unwrap_or_else(|| w.to_string()))
            .collect();
        *line = words.join(" ");
    }
    lines
}

/// The transcript of the scenario on one cluster.
async fn transcript(spec: ClusterSpec) -> Vec<String> {
    let c = TestCluster::start_spec(spec);
    c.wait_ready().await;
    let names = names(&c).await;
    let id = |i: usize| names.iter().find(|(_, n)| **n == c.members()[i].name).unwrap().0.clone();
    let all = c.endpoints().join(",");
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let mut t = vec![format!("leader is {}", c.members()[leader].name)];
    t.extend(move_leader(&all, &id(follower), &names));
    let now = c.leader().await;
    t.push(format!("leader is {}", c.members()[now].name));
    t.extend(move_leader(&all, &id(now), &names));
    t.extend(move_leader(&all, "ffff", &names));
    // MoveLeader sent to a follower directly.
    let other = (now + 1) % 3;
    let mut m = MaintenanceClient::new(c.channel(other));
    let req = pb::MoveLeaderRequest { target_id: u64::from_str_radix(&id(other), 16).unwrap() };
    let e = m.move_leader(req).await.expect_err("a follower refuses MoveLeader");
    t.push(format!("follower: {:?} {}", e.code(), e.message()));
    // Which member leads first differs between runs: name members by role instead.
    let role = |i: usize| {
        if i == leader {
            "L"
        } else if i == follower {
            "F"
        } else {
            "O"
        }
    };
    let roles: BTreeMap<&str, &str> =
        (0..3).map(|i| (c.members()[i].name.as_str(), role(i))).collect();
    t.iter()
        .map(|l| l.split(' ').map(|w| roles.get(w).copied().unwrap_or(w)).collect::<Vec<_>>())
        .map(|w| w.join(" "))
        .collect()
}

#[test]
fn move_leader_matches_etcd() {
    if !common::have("etcd", "--version") || !common::have("etcdctl", "version") {
        println!("SKIPPED: etcd and etcdctl are not installed");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let etcd = rt.block_on(transcript(ClusterSpec::etcd("move-etcd", &[])));
    let raftkv = rt.block_on(transcript(ClusterSpec::raftkv("move-raftkv", &[])));
    for (e, r) in etcd.iter().zip(&raftkv) {
        println!("{e:<60} | {r}");
    }
    assert_eq!(etcd, raftkv, "the transcripts differ (etcd left, raftkv right)");
    assert!(raftkv.contains(&"Leadership transferred from L to F".to_string()), "{raftkv:?}");
}
