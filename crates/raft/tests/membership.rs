//! Membership changes, learners and leadership transfer on the tiny synchronous network.
//! Each test names the rule it pins (Raft thesis chapter 4 and §3.10, etcd's
//! ConfChangeV2 semantics).

mod net;

use net::*;
use raft::ConfChangeKind::*;
use raft::*;
use std::collections::BTreeSet;

fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
    ids.iter().copied().collect()
}

fn change(steps: &[(ConfChangeKind, NodeId)]) -> ConfChange {
    ConfChange {
        changes: steps.iter().map(|&(kind, node)| ConfChangeSingle { kind, node }).collect(),
        context: Vec::new(),
    }
}

/// A cluster of `n` founding voters plus `extra` members that start knowing only the
/// founding configuration (as a member added later does).
fn net_with_spares(n: u64, extra: u64) -> Net {
    let mut nodes = std::collections::BTreeMap::new();
    for id in 1..=n + extra {
        nodes.insert(id, Raft::new(config(id), &voters(n)).unwrap());
    }
    Net::with_nodes(nodes)
}

fn plain(voters: &[NodeId], learners: &[NodeId]) -> ConfState {
    ConfState { learners: set(learners), ..ConfState::from_voters(set(voters)) }
}

/// Ticks every node except `except` (a member that must not be the one to campaign).
fn tick_others(net: &mut Net, except: NodeId, ticks: u32) {
    for _ in 0..ticks {
        let ids: Vec<NodeId> = net.nodes.keys().copied().filter(|id| *id != except).collect();
        for id in ids {
            net.node(id).tick();
        }
        net.deliver_all();
    }
}

/// A learner receives the log, and a promotion goes through a joint configuration that
/// the leader leaves by itself once it commits.
#[test]
fn learner_is_added_caught_up_and_promoted_through_a_joint_config() {
    let mut net = net_with_spares(3, 1);
    net.elect(1);
    net.node(1).propose(b"before".to_vec()).unwrap();
    net.node(1).propose_conf_change(change(&[(AddLearner, 4)])).unwrap();
    net.deliver_all();
    for id in 1..=4 {
        assert_eq!(*net.node(id).conf_state(), plain(&[1, 2, 3], &[4]), "member {id}");
    }
    assert_eq!(net.applied_data(4), vec![b"before".to_vec()], "the learner got the log");
    let last = net.node(1).last_index();
    let p = net.node(1).progress(4).expect("the leader tracks the learner");
    assert_eq!(p.match_index, last);

    let (joint_index, _) = net.node(1).propose_conf_change(change(&[(AddVoter, 4)])).unwrap();
    assert!(net.node(1).conf_state().is_joint(), "joint as soon as appended");
    net.deliver_all();
    for id in 1..=4 {
        let r = net.node(id);
        assert_eq!(*r.conf_state(), plain(&[1, 2, 3, 4], &[]), "member {id}");
        assert!(r.pending_conf_index() > joint_index, "the leave entry follows the joint one");
        assert!(r.commit_index() >= r.pending_conf_index(), "and it committed");
    }
}

/// A learner never campaigns, however long it hears nothing.
#[test]
fn learner_never_campaigns() {
    let mut net = net_with_spares(3, 1);
    net.elect(1);
    net.node(1).propose_conf_change(change(&[(AddLearner, 4)])).unwrap();
    net.deliver_all();
    net.isolate(4);
    for _ in 0..500 {
        net.node(4).tick();
        net.deliver_all();
        assert_eq!(net.node(4).role(), Role::Follower);
    }
}

/// Votes of learners never count: a voter cut off from the other voters cannot win with
/// the learners alone.
#[test]
fn learner_votes_do_not_count() {
    let mut net = net_with_spares(3, 2);
    net.elect(1);
    net.node(1).propose_conf_change(change(&[(AddLearner, 4), (AddLearner, 5)])).unwrap();
    net.deliver_all();
    // The leader is gone and member 3 talks only to the learners, whose leader lease
    // runs out: voters 3 and two learners would be a majority of five.
    net.isolate(1);
    for pair in [(3, 2), (2, 3)] {
        net.cut.insert(pair);
    }
    for _ in 0..400 {
        for id in 3..=5 {
            net.node(id).tick();
        }
        net.deliver_all();
        assert_ne!(net.node(3).role(), Role::Leader, "won with learners' votes");
    }
}

/// A configuration takes effect when appended (on the leader and on followers), before
/// it commits, and a follower whose change is truncated away falls back to the one before.
#[test]
fn config_takes_effect_on_append_and_falls_back_when_truncated() {
    let mut net = net_with_spares(5, 1);
    net.elect(1);
    net.deliver_all();
    // The leader reaches only member 2.
    for other in [3, 4, 5] {
        net.cut.insert((1, other));
        net.cut.insert((other, 1));
    }
    net.node(1).propose_conf_change(change(&[(AddLearner, 6)])).unwrap();
    net.deliver_all();
    for id in [1, 2] {
        let r = net.node(id);
        assert_eq!(*r.conf_state(), plain(&[1, 2, 3, 4, 5], &[6]), "member {id}");
        assert!(r.commit_index() < r.pending_conf_index(), "not committed on {id}");
    }
    // Members 3, 4, 5 elect 3 without 1 and 2; its log replaces the change.
    net.isolate(1);
    net.isolate(2);
    for pair in [(3, 4), (4, 3), (3, 5), (5, 3), (4, 5), (5, 4)] {
        net.cut.remove(&pair);
    }
    let mut leader = None;
    for _ in 0..300 {
        tick_others(&mut net, 0, 1);
        leader = net.leaders().into_iter().find(|id| *id >= 3);
        if leader.is_some() {
            break;
        }
    }
    let leader = leader.expect("members 3, 4, 5 elect a leader");
    net.node(leader).propose(b"new".to_vec()).unwrap();
    net.deliver_all();
    net.heal();
    tick_others(&mut net, 0, 10);
    assert_eq!(net.leaders(), vec![leader]);
    let founding = plain(&[1, 2, 3, 4, 5], &[]);
    assert_eq!(*net.node(2).conf_state(), founding, "member 2 fell back");
    assert_eq!(net.node(2).pending_conf_index(), 0);
}

/// While joint, an entry commits only with a majority of both halves.
#[test]
fn joint_config_commits_only_with_both_majorities() {
    let mut net = net_with_spares(3, 2);
    net.elect(1);
    net.deliver_all();
    for id in [4, 5] {
        net.isolate(id);
    }
    // {1,2,3} → {1,4,5}: the old half is reachable, the new one is not.
    let cc = change(&[(AddVoter, 4), (AddVoter, 5), (Remove, 2), (Remove, 3)]);
    let (index, _) = net.node(1).propose_conf_change(cc).unwrap();
    net.deliver_all();
    net.tick_all(3);
    assert!(net.node(1).commit_index() < index, "committed without the new majority");
    assert_eq!(net.node(1).conf_state().voters_outgoing, set(&[1, 2, 3]));
    net.heal();
    tick_others(&mut net, 0, 10);
    let leader = net.leaders();
    assert_eq!(leader, vec![1]);
    assert!(net.node(1).commit_index() > index);
    for id in [1, 4, 5] {
        assert_eq!(*net.node(id).conf_state(), plain(&[1, 4, 5], &[]), "member {id}");
    }
}

/// Only one change in flight, and invalid changes are refused with the reason.
#[test]
fn one_change_in_flight_and_invalid_changes_refused() {
    let mut net = net_with_spares(3, 1);
    net.elect(1);
    net.deliver_all();
    let r = net.node(1);
    assert_eq!(
        r.propose_conf_change(change(&[(AddVoter, 2)])),
        Err(ProposeError::BadConfChange(ConfChangeError::AlreadyVoter(2)))
    );
    assert_eq!(
        r.propose_conf_change(ConfChange::default()),
        Err(ProposeError::BadConfChange(ConfChangeError::NotJoint))
    );
    r.propose_conf_change(change(&[(AddVoter, 4)])).unwrap();
    assert_eq!(
        r.propose_conf_change(change(&[(AddLearner, 9)])),
        Err(ProposeError::ConfChangePending)
    );
    assert!(matches!(
        net.node(2).propose_conf_change(change(&[(AddLearner, 9)])),
        Err(ProposeError::NotLeader { .. })
    ));
}

/// A leader that removes itself keeps leading (and replicating) through the joint
/// configuration, steps down once the configuration without it commits, and never
/// campaigns again; the others elect a leader among themselves.
#[test]
fn removed_leader_steps_down_once_the_change_commits() {
    let mut net = net_with_spares(3, 0);
    net.elect(1);
    net.deliver_all();
    net.node(1).propose_conf_change(change(&[(Remove, 1)])).unwrap();
    assert_eq!(net.node(1).role(), Role::Leader, "still leads while joint");
    net.deliver_all();
    let r = net.node(1);
    assert_eq!(r.role(), Role::Follower, "stepped down after the leave committed");
    assert_eq!(*r.conf_state(), plain(&[2, 3], &[]));
    for id in [2, 3] {
        assert_eq!(*net.node(id).conf_state(), plain(&[2, 3], &[]), "member {id}");
    }
    net.tick_all(100);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], 1, "the removed member never leads again");
    let l = leaders[0];
    net.node(l).propose(b"after".to_vec()).unwrap();
    net.deliver_all();
    assert_eq!(net.applied_data(2).last(), Some(&b"after".to_vec()));
}

/// A member removed while cut off never learns it, campaigns when it returns, and does
/// not disturb the cluster: the leader and its term stay (pre-vote and check-quorum).
#[test]
fn removed_member_that_missed_its_removal_cannot_disrupt() {
    let mut net = net_with_spares(3, 0);
    net.elect(1);
    net.deliver_all();
    net.isolate(3);
    net.node(1).propose_conf_change(change(&[(Remove, 3)])).unwrap();
    net.deliver_all();
    assert_eq!(*net.node(1).conf_state(), plain(&[1, 2], &[]));
    // Member 3 times out over and over while cut off, then returns.
    for _ in 0..200 {
        net.node(3).tick();
        net.deliver_all();
    }
    net.heal();
    let term = net.node(1).term();
    tick_others(&mut net, 0, 300);
    assert_eq!(net.leaders(), vec![1], "member 1 still leads");
    assert_eq!(net.node(1).term(), term, "no election was forced");
}

/// Thesis §3.10: the target of a transfer takes over at once, even though the others
/// hear from a live leader.
#[test]
fn leadership_transfer_hands_over_to_a_lagging_target() {
    let mut net = net_with_spares(3, 0);
    net.elect(1);
    net.deliver_all();
    net.cut.insert((1, 3));
    for k in 0..5u8 {
        net.node(1).propose(vec![k]).unwrap();
    }
    net.deliver_all();
    net.heal();
    let term = net.node(1).term();
    net.node(1).transfer_leader(3).unwrap();
    // The target is caught up at the next heartbeat round, then takes over.
    for _ in 0..10 {
        net.node(1).tick();
        net.deliver_all();
    }
    assert_eq!(net.leaders(), vec![3]);
    assert_eq!(net.node(3).term(), term + 1);
    net.node(3).propose(b"x".to_vec()).unwrap();
    net.deliver_all();
    assert_eq!(net.applied_data(1).len(), 6);
}

/// A leader refuses proposals while it transfers, and gives up after an election timeout
/// if the target does not take over.
#[test]
fn transfer_refuses_proposals_and_aborts_after_an_election_timeout() {
    let mut net = net_with_spares(3, 0);
    net.elect(1);
    net.deliver_all();
    net.isolate(3);
    net.node(1).transfer_leader(3).unwrap();
    assert_eq!(net.node(1).lead_transferee(), Some(3));
    assert_eq!(net.node(1).propose(b"x".to_vec()), Err(ProposeError::Transferring));
    for _ in 0..Config::new(1).election_timeout_ticks {
        net.node(1).tick();
        net.node(2).tick();
        net.deliver_all();
    }
    assert_eq!(net.node(1).lead_transferee(), None);
    assert_eq!(net.leaders(), vec![1]);
    net.node(1).propose(b"x".to_vec()).unwrap();
    assert_eq!(net.node(1).transfer_leader(9), Err(TransferError::NotVoter(9)));
    assert!(matches!(net.node(2).transfer_leader(1), Err(TransferError::NotLeader { .. })));
}

/// The configuration survives a restart: from the entries, and from a snapshot whose
/// metadata must carry the configuration in force at its index.
#[test]
fn config_is_recovered_from_log_and_snapshot() {
    let mut net = net_with_spares(3, 1);
    net.elect(1);
    net.node(1).propose_conf_change(change(&[(AddLearner, 4)])).unwrap();
    net.deliver_all();
    let r = net.node(2);
    let last = r.last_index();
    let entries: Vec<Entry> = (1..=last).map(|i| r.entry(i).unwrap().clone()).collect();
    let restored = Restored { hard_state: r.hard_state(), snapshot: None, entries };
    let back = Raft::restore(config(2), &voters(3), restored).unwrap();
    assert_eq!(*back.conf_state(), plain(&[1, 2, 3], &[4]));

    let index = r.applied_index();
    let term = r.term_at(index).unwrap();
    let wrong = SnapshotMeta { index, term, conf: plain(&[1, 2, 3], &[]) };
    let snap = |meta| Snapshot { meta, data: Vec::new().into() };
    assert_eq!(r.compact(snap(wrong)), Err(CompactError::ConfMismatch { index }));
    let meta = SnapshotMeta { index, term, conf: r.conf_at(index) };
    r.compact(snap(meta.clone())).unwrap();
    let restored =
        Restored { hard_state: r.hard_state(), snapshot: Some(snap(meta)), entries: vec![] };
    let back = Raft::restore(config(2), &voters(3), restored).unwrap();
    assert_eq!(*back.conf_state(), plain(&[1, 2, 3], &[4]));
}

/// A member that holds the change removing it, and does not know it committed, may
/// still campaign (docs/ARCHITECTURE.md, "A removed member that holds its removal"). Here
/// leader 1 of {1, 2} removes itself: the joint entry commits, and only member 1 gets
/// the leave entry before it is cut off; check-quorum makes it step down (member 2 does
/// not answer). Member 2 is still joint, so it needs member 1's vote, which member 1
/// refuses (its log is ahead). Unless member 1 campaigns and finishes the change, no one
/// ever leads again (simulator seed 226 with `--membership always`).
#[test]
fn removed_member_holding_its_uncommitted_removal_campaigns_to_finish_it() {
    let mut net = net_with_spares(2, 0);
    net.elect(1);
    net.deliver_all();
    let (joint, _) = net.node(1).propose_conf_change(change(&[(Remove, 1)])).unwrap();
    // Deliver one message at a time until member 1 appends the leave entry.
    while net.node(1).pending_conf_index() == joint {
        for id in [1, 2] {
            net.process(id);
        }
        let m = net.queue.pop_front().expect("the exchange goes on until the leave entry");
        let to = m.to;
        net.node(to).step(m);
    }
    net.isolate(1);
    net.deliver_all();
    assert_eq!(*net.node(1).conf_state(), plain(&[2], &[]));
    assert!(net.node(2).conf_state().is_joint(), "member 2 never got the leave entry");
    assert!(net.node(1).last_index() > net.node(2).last_index());
    let timeout = Config::new(1).election_timeout_ticks;
    net.tick_all(2 * timeout);
    assert_eq!(net.node(1).role(), Role::Follower, "check-quorum: no voter answers");

    net.heal();
    let mut led = false;
    for _ in 0..40 * timeout {
        net.tick_all(1);
        let r = net.node(2);
        if r.role() == Role::Leader && r.commit_index() >= r.pending_conf_index() {
            led = true;
            break;
        }
    }
    assert!(led, "member 2 never led in the configuration without member 1");
    assert_eq!(*net.node(2).conf_state(), plain(&[2], &[]));
    net.tick_all(4 * timeout);
    assert_eq!(net.leaders(), vec![2], "the removed member stepped down for good");
    net.node(2).propose(b"after".to_vec()).unwrap();
    net.deliver_all();
    assert_eq!(net.applied_data(2).last(), Some(&b"after".to_vec()));
}
