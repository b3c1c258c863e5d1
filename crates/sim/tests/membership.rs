//! Named membership scenarios on the simulated cluster (Raft thesis chapter 4, §3.10):
//! every step also runs the checkers, including "every member's configuration is the
//! one its log says"; any violation panics with the seed.

use raft::{ConfChange, ConfChangeKind, ConfChangeSingle, NodeId, Role};
use sim::{Cluster, ClusterConfig};
use std::time::Duration;

/// Longest election timeout with the default config (40 ticks of 10 ms).
const ELECTION_TIMEOUT: Duration = Duration::from_millis(400);

fn change(steps: &[(ConfChangeKind, NodeId)]) -> ConfChange {
    ConfChange {
        changes: steps.iter().map(|&(kind, node)| ConfChangeSingle { kind, node }).collect(),
        context: Vec::new(),
    }
}

/// `voters` founding voters and `nodes - voters` spare nodes waiting to be added.
fn cluster(nodes: usize, voters: usize, seed: u64) -> ClusterConfig {
    let mut cfg = ClusterConfig::new(nodes, seed);
    cfg.voters = voters;
    cfg
}

/// Runs until the leader's configuration is `voters` (not joint) and every node of it
/// holds that configuration; panics after 10 s simulated.
fn wait_conf(c: &mut Cluster, voters: &[NodeId]) {
    for _ in 0..200 {
        c.run_for(Duration::from_millis(50));
        let settled = voters.iter().all(|&id| {
            c.raft(id).is_some_and(|r| {
                let conf = r.conf_state();
                !conf.is_joint() && conf.voters.iter().copied().eq(voters.iter().copied())
            })
        });
        if settled {
            return;
        }
    }
    panic!("configuration {voters:?} never settled\n{}", c.describe_nodes());
}

#[test]
fn new_member_catches_up_by_install_snapshot_then_is_promoted() {
    // A member added after the log was compacted gets the leader's snapshot (Raft §7),
    // then the entries after it, including its own promotion.
    let mut cfg = cluster(4, 3, 21);
    cfg.compact_threshold_entries = Some(20);
    cfg.snapshot_padding_bytes = 3_000;
    cfg.snapshot_chunk_bytes = 512;
    let mut c = Cluster::scripted(cfg);
    for k in 0..60 {
        c.one(format!("before-{k}").as_bytes(), 3, true);
    }
    let leader = c.check_one_leader();
    c.conf_change_to(leader, change(&[(ConfChangeKind::AddLearner, 4)])).unwrap();
    let index = c.one(b"after the learner", 4, true);
    assert!(c.durable(4).snapshot.is_some(), "the new member was caught up by a snapshot");
    assert!(c.state_machine(4).applied_index >= index);
    let leader = c.check_one_leader();
    c.conf_change_to(leader, change(&[(ConfChangeKind::AddVoter, 4)])).unwrap();
    wait_conf(&mut c, &[1, 2, 3, 4]);
    c.one(b"four voters", 4, true);
}

#[test]
fn leader_crash_in_the_middle_of_a_joint_config_is_finished_by_the_next_leader() {
    // {1,2,3} -> {1,2,3,4,5} minus one follower, through C_old,new; the leader crashes
    // right after proposing.
    // Whoever leads next (from either half, with both majorities) leaves the joint
    // configuration once the joint entry commits.
    let mut c = Cluster::scripted(cluster(5, 3, 22));
    c.one(b"start", 3, true);
    let leader = c.check_one_leader();
    let others: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();
    let cc = change(&[
        (ConfChangeKind::AddVoter, 4),
        (ConfChangeKind::AddVoter, 5),
        (ConfChangeKind::Remove, others[0]),
    ]);
    c.conf_change_to(leader, cc).unwrap();
    c.run_for(Duration::from_millis(5));
    c.crash(leader);
    c.run_for(ELECTION_TIMEOUT * 3);
    c.restart(leader);
    let want: Vec<NodeId> = (1..=5).filter(|&id| id != others[0]).collect();
    wait_conf(&mut c, &want);
    c.one(b"after the change", 3, true);
}

#[test]
fn leader_that_removes_itself_steps_down_and_the_rest_carry_on() {
    let mut c = Cluster::scripted(cluster(3, 3, 23));
    c.one(b"start", 3, true);
    let leader = c.check_one_leader();
    c.conf_change_to(leader, change(&[(ConfChangeKind::Remove, leader)])).unwrap();
    let rest: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();
    wait_conf(&mut c, &rest);
    c.run_for(ELECTION_TIMEOUT * 2);
    assert_ne!(c.role(leader), Some(Role::Leader));
    let new_leader = c.check_one_leader();
    assert_ne!(new_leader, leader);
    c.one(b"without the old leader", 2, true);
    c.run_for(ELECTION_TIMEOUT * 10);
    assert_eq!(c.check_one_leader(), new_leader, "the removed member did not disrupt");
}

#[test]
fn leadership_transfer_moves_the_leader_within_an_election_timeout() {
    let mut c = Cluster::scripted(cluster(3, 3, 24));
    c.one(b"start", 3, true);
    let leader = c.check_one_leader();
    let target = if leader == 3 { 1 } else { 3 };
    c.transfer_leader(leader, target).unwrap();
    c.run_for(ELECTION_TIMEOUT);
    assert_eq!(c.stable_leader(), Some(target));
    c.one(b"after the transfer", 3, true);
}
