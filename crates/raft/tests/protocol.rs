//! Protocol tests of the core on a tiny synchronous network: every message is delivered
//! in order unless a link is cut, and every Ready is persisted at once. Each test names
//! the rule it checks and the section of the Raft paper or thesis it comes from.

mod net;

use net::*;
use raft::*;
use std::sync::Arc;

/// Raft §5.2: a single member elects itself and commits on its own.
/// The metadata of a snapshot of `raft`'s three-voter cluster at `index`.
fn meta_at(raft: &Raft, index: Index) -> SnapshotMeta {
    let term = raft.term_at(index).expect("the index is in the log");
    SnapshotMeta { index, term, conf: ConfState::from_voters(voters(3)) }
}

#[test]
fn single_node_elects_itself_and_commits() {
    let mut net = Net::new(1);
    net.elect(1);
    net.node(1).propose(b"x".to_vec()).unwrap();
    net.deliver_all();
    assert_eq!(net.applied_data(1), vec![b"x".to_vec()]);
}

/// Raft §5.2, §5.3: one leader is elected and a proposal is applied everywhere in order.
#[test]
fn three_nodes_elect_one_leader_and_replicate() {
    let mut net = Net::new(3);
    net.tick_all(60);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1, "exactly one leader");
    let l = leaders[0];
    for k in 0..10u8 {
        net.node(l).propose(vec![k]).unwrap();
    }
    net.deliver_all();
    let want: Vec<Vec<u8>> = (0..10u8).map(|k| vec![k]).collect();
    for id in 1..=3 {
        assert_eq!(net.applied_data(id), want, "node {id}");
    }
}

/// Raft §5.4.1: a voter refuses a candidate whose log is less up to date (compare last
/// terms, then lengths).
#[test]
fn vote_refused_to_candidate_with_stale_log() {
    let mut net = Net::with_logs(&[
        (2, entries(&[(1, 3)])),
        (2, entries(&[(1, 2), (2, 1)])),
        (2, entries(&[(1, 5)])),
    ]);
    // Node 1 (last term 1) cannot win against node 2 (last term 2); node 3 has the longest
    // log but a lower last term, so node 1 still loses against node 2's vote. Node 1's
    // only other voter, node 3, has a longer log of the same last term: refused too.
    for _ in 0..100 {
        net.node(1).tick();
        net.deliver_all();
    }
    assert_ne!(net.node(1).role(), Role::Leader);
    net.elect(2);
    assert_eq!(net.leaders(), vec![2]);
}

/// Raft §5.4.2 and Figure 8: a leader never commits an entry of an earlier term by
/// counting replicas; it commits it only together with an entry of its own term.
#[test]
fn figure8_old_term_entry_not_committed_by_counting_replicas() {
    // Node 1 leads term 3 holding (1,1),(2,2); node 2 holds (1,1); node 3 holds (1,1).
    // Entry 2 (term 2) reaching a majority must not commit until the no-op of term 3
    // is replicated too.
    let mut net = Net::with_logs(&[
        (2, entries(&[(1, 1), (2, 1)])),
        (2, entries(&[(1, 1)])),
        (2, entries(&[(1, 1)])),
    ]);
    // Let node 1 win, but only deliver the old entry to node 2, not its own no-op.
    net.elect(1);
    assert_eq!(net.node(1).term(), 3);
    // In our synchronous net the no-op went out with entry 2, so both commit together:
    // check that the commit index never covered entry 2 while the no-op was missing by
    // replaying on a net where only entry 2 arrives.
    let mut net = Net::with_logs(&[
        (2, entries(&[(1, 1), (2, 1)])),
        (2, entries(&[(1, 1), (2, 1)])),
        (2, entries(&[(1, 1)])),
    ]);
    net.cut.insert((1, 2));
    net.cut.insert((1, 3));
    net.elect_without_delivery(1);
    // Node 1 leads term 3; node 2 already holds entry 2 of term 2: a majority holds it.
    let l = net.node(1);
    assert_eq!(l.role(), Role::Leader);
    assert_eq!(l.commit_index(), 0, "entry 2 (term 2) is on a majority but must not commit");
    // Deliver the no-op to node 2 only: now the term-3 entry is on a majority and both
    // commit.
    net.cut.remove(&(1, 2));
    net.tick_all(10);
    assert_eq!(net.node(1).commit_index(), 3);
}

impl Net {
    /// Makes `id` leader with votes from all nodes while its own outgoing links are cut
    /// (votes are answered, appends are lost).
    fn elect_without_delivery(&mut self, id: NodeId) {
        let cut = std::mem::take(&mut self.cut);
        for _ in 0..200 {
            self.node(id).tick();
            // Deliver only election traffic.
            self.process(id);
            loop {
                let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                for i in ids {
                    self.process(i);
                }
                let Some(m) = self.queue.pop_front() else {
                    break;
                };
                let election = matches!(
                    m.body,
                    MessageBody::PreVote { .. }
                        | MessageBody::PreVoteResp { .. }
                        | MessageBody::Vote { .. }
                        | MessageBody::VoteResp { .. }
                );
                if election {
                    let to = m.to;
                    self.node(to).step(m);
                }
            }
            if self.node(id).role() == Role::Leader {
                self.cut = cut;
                return;
            }
        }
        panic!("node {id} did not become leader");
    }
}

/// Fast backup (Raft §5.3; MIT 6.824 lab 2C): a follower 1000 entries behind across 50
/// divergent terms catches up in about 50 round trips, one term per rejection.
#[test]
fn fast_backup_skips_a_term_per_round_trip() {
    let leader_log = entries(&[(1, 10), (60, 1000)]);
    let mut runs = vec![(1, 10)];
    runs.extend((2..=51).map(|t| (t, 20)));
    let follower_log = entries(&runs);
    assert_eq!(follower_log.len(), 1010);
    let mut net = Net::with_logs(&[(60, leader_log.clone()), (60, follower_log), (60, leader_log)]);
    net.elect(1);
    net.deliver_all();
    let rejections = net
        .delivered
        .iter()
        .filter(|m| {
            m.from == 2 && matches!(m.body, MessageBody::AppendResp { reject: Some(_), .. })
        })
        .count();
    let appends_to_2 = net
        .delivered
        .iter()
        .filter(|m| m.to == 2 && matches!(m.body, MessageBody::Append { .. }))
        .count();
    assert!((50..=52).contains(&rejections), "rejections {rejections}, want about 50");
    assert!(appends_to_2 <= 60, "appends to the follower {appends_to_2}");
    let leader_last = net.node(1).last_index();
    assert_eq!(net.node(2).last_index(), leader_last);
    assert_eq!(net.node(2).term_at(leader_last), net.node(1).term_at(leader_last));
    assert_eq!(net.node(2).commit_index(), leader_last);
}

/// Raft §5.3: a stale or reordered AppendEntries never truncates entries that match.
#[test]
fn stale_append_does_not_truncate_matching_entries() {
    let mut net = Net::new(3);
    net.elect(1);
    for k in 0..5u8 {
        net.node(1).propose(vec![k]).unwrap();
        net.deliver_all();
    }
    let last = net.node(2).last_index();
    // Replay an old append that carries only the first entries.
    let old = Message {
        from: 1,
        to: 2,
        term: net.node(1).term(),
        body: MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: (1..=2).map(|i| net.nodes[&1].entry(i).unwrap().clone()).collect(),
            commit: 0,
        },
    };
    net.node(2).step(old);
    net.deliver_all();
    assert_eq!(net.node(2).last_index(), last, "matching suffix kept");
}

/// The persist-before-reply rule (Raft Figure 2, "respond after persisting"): a vote is
/// only sent after the Ready that records it has been persisted.
#[test]
fn vote_is_released_only_after_persist() {
    let mut a = Raft::new(config(1), &voters(3)).unwrap();
    let vote = Message {
        from: 2,
        to: 1,
        term: 5,
        body: MessageBody::Vote { last_index: 0, last_term: 0, transfer: false },
    };
    a.step(vote);
    let rd = a.ready();
    assert!(rd.messages.is_empty(), "the vote may not leave before it is durable");
    assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((5, 2)));
    a.on_persisted(rd.number);
    let rd2 = a.ready();
    assert!(matches!(rd2.messages[0].body, MessageBody::VoteResp { reject: false }));
}

/// Raft thesis §9.6: with pre-vote, a member cut off from the cluster does not inflate
/// its term, and on its return it does not depose the healthy leader.
#[test]
fn prevote_partitioned_member_does_not_disrupt_leader() {
    let mut net = Net::new(3);
    net.elect(1);
    let term = net.node(1).term();
    net.isolate(3);
    net.tick_all(300);
    assert_eq!(net.node(3).term(), term, "isolated member's term unchanged");
    net.heal();
    net.tick_all(100);
    assert_eq!(net.leaders(), vec![1]);
    assert_eq!(net.node(1).term(), term);
}

/// Raft thesis §9.6: a pre-candidate grows its term only on a majority's word for that
/// term; a grant held back from a round it ran for its current term does not count.
///
/// Simulator seeds 5476 and 6355 (`--membership always`): a removed member counted such
/// grants, held back 1-2 s by the long-delay network, became a candidate one term above
/// the leader, and was ignored by the leader's followers (leader lease) and never heard
/// from again (removed): its term stayed above the leader's for good. A member still in
/// the configuration does the same after a partition and deposes a healthy leader on
/// its return, which is what pre-vote exists to prevent.
#[test]
fn prevote_grant_held_back_from_an_earlier_term_does_not_count() {
    let mut a = Raft::new(config(1), &voters(3)).unwrap();
    tick_until_role(&mut a, Role::PreCandidate);
    assert_eq!(a.term(), 0);
    let asked = a.ready().messages;
    assert!(asked.iter().all(|m| m.term == 1 && matches!(m.body, MessageBody::PreVote { .. })));
    // Round for term 1: node 3, already in term 1, refuses; node 2's grant is held back.
    let answer = |from, term, reject| Message {
        from,
        to: 1,
        term,
        body: MessageBody::PreVoteResp { reject },
    };
    a.step(answer(3, 1, true));
    assert_eq!((a.role(), a.term()), (Role::Follower, 1));
    // Next round, for term 2: the held-back grant for term 1 arrives first.
    tick_until_role(&mut a, Role::PreCandidate);
    a.step(answer(2, 1, false));
    assert_eq!(
        (a.role(), a.term()),
        (Role::PreCandidate, 1),
        "a grant for term 1 counted in the round for term 2"
    );
    // Node 2's answer to this round counts.
    a.step(answer(2, 2, false));
    assert_eq!((a.role(), a.term()), (Role::Candidate, 2));
}

fn tick_until_role(raft: &mut Raft, role: Role) {
    for _ in 0..2 * Config::new(raft.id()).election_timeout_ticks {
        raft.tick();
        if raft.role() == role {
            return;
        }
    }
    panic!("node {} did not become {role:?} within two election timeouts", raft.id());
}

/// Raft thesis §6.2: with check-quorum, a leader that cannot reach a majority steps
/// down within an election timeout or two.
#[test]
fn check_quorum_isolated_leader_steps_down() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(1);
    net.tick_all(150);
    assert_ne!(net.node(1).role(), Role::Leader);
    let others: Vec<NodeId> = net.leaders();
    assert_eq!(others.len(), 1);
    assert_ne!(others[0], 1);
}

/// Raft thesis §6.4: ReadIndex — a read is answered at the commit index after a
/// heartbeat round confirms leadership; a leader cut off from the majority serves none.
#[test]
fn read_index_needs_a_quorum_round() {
    let mut net = Net::new(3);
    net.elect(1);
    net.node(1).propose(b"a".to_vec()).unwrap();
    net.deliver_all();
    let commit = net.node(1).commit_index();
    net.node(1).read_index(42).unwrap();
    net.deliver_all();
    assert_eq!(net.reads[&1], vec![ReadState { ctx: 42, index: commit }]);
    // Followers forward reads.
    net.node(3).read_index(7).unwrap();
    net.deliver_all();
    assert_eq!(net.reads[&3], vec![ReadState { ctx: 7, index: commit }]);
    // Cut the leader off: the read is never confirmed, and fails when it steps down.
    net.isolate(1);
    net.node(1).read_index(43).unwrap();
    net.deliver_all();
    assert_eq!(net.reads[&1].len(), 1, "no answer without a quorum");
    net.tick_all(60);
    assert!(net.failed_reads[&1].contains(&43));
}

/// Raft thesis §6.4, batched at the follower: its reads share one ReadIndex request per
/// round trip. Reads that arrive while a request is on its way wait for its answer and go
/// together in the next (never in the one already sent: the leader may have fixed that
/// one's index before they arrived).
#[test]
fn follower_reads_share_one_read_index_request_per_round_trip() {
    let mut net = Net::new(3);
    net.elect(1);
    net.node(1).propose(b"a".to_vec()).unwrap();
    net.deliver_all();
    let commit = net.node(1).commit_index();
    let before = net.delivered.len();
    for ctx in [1, 2, 3] {
        net.node(3).read_index(ctx).unwrap();
    }
    net.deliver_all();
    let requests: Vec<u64> = net.delivered[before..]
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::ReadIndex { ctx } if m.from == 3 => Some(ctx),
            _ => None,
        })
        .collect();
    assert_eq!(requests, vec![1, 3], "the first read alone, then the two that waited");
    let answered: Vec<(u64, u64)> = net.reads[&3].iter().map(|r| (r.ctx, r.index)).collect();
    assert_eq!(answered, vec![(1, commit), (2, commit), (3, commit)]);
}

/// A follower's ReadIndex request that is lost (or whose answer is) is asked again after
/// an election timeout, with the reads that queued meanwhile: one lost message must not
/// hold every later read of the follower.
#[test]
fn a_lost_follower_read_index_request_is_asked_again() {
    let mut net = Net::new(3);
    net.elect(1);
    net.node(1).propose(b"a".to_vec()).unwrap();
    net.deliver_all();
    net.cut.insert((3, 1));
    net.node(3).read_index(1).unwrap();
    net.deliver_all();
    net.node(3).read_index(2).unwrap();
    net.deliver_all();
    assert!(net.reads.get(&3).is_none_or(|r| r.is_empty()), "the request was lost");
    net.heal();
    let timeout = config(3).election_timeout_ticks;
    net.tick_all(timeout);
    let answered: Vec<u64> = net.reads[&3].iter().map(|r| r.ctx).collect();
    assert_eq!(answered, vec![1, 2]);
    assert_eq!(net.node(3).role(), Role::Follower);
}

/// Raft thesis §6.4: a new leader serves no read before an entry of its own term
/// commits (it does not know the commit index until then).
#[test]
fn read_index_waits_for_commit_in_new_term() {
    let mut net = Net::new(3);
    net.cut.insert((1, 2));
    net.cut.insert((1, 3));
    net.elect_without_delivery(1);
    net.node(1).read_index(9).unwrap();
    net.deliver_all();
    assert!(net.reads.get(&1).is_none_or(|r| r.is_empty()));
    net.heal();
    net.deliver_all();
    net.tick_all(6);
    assert_eq!(net.reads[&1].len(), 1);
    assert!(net.reads[&1][0].index >= 1);
}

/// Raft §7 and Figure 13: a follower behind the leader's snapshot catches up through
/// InstallSnapshot, sent in chunks; the log indices keep counting.
#[test]
fn lagging_follower_catches_up_by_chunked_snapshot() {
    let mut net = Net::new(3);
    for id in 1..=3 {
        let mut c = config(id);
        c.snapshot_chunk_bytes = 10;
        *net.node(id) = Raft::new(c, &voters(3)).unwrap();
    }
    net.elect(1);
    net.isolate(3);
    for k in 0..20u8 {
        net.node(1).propose(vec![k]).unwrap();
        net.deliver_all();
    }
    let applied = net.node(1).applied_index();
    let meta = meta_at(net.node(1), applied);
    let data: Arc<[u8]> = vec![7u8; 95].into();
    net.node(1).compact(Snapshot { meta: meta.clone(), data: data.clone() }).unwrap();
    assert_eq!(net.node(1).first_index(), applied + 1);
    net.heal();
    net.tick_all(20);
    let chunks = net
        .delivered
        .iter()
        .filter(|m| m.to == 3 && matches!(m.body, MessageBody::Snapshot { .. }))
        .count();
    assert_eq!(chunks, 10, "95 bytes in 10-byte chunks");
    assert_eq!(net.node(3).snapshot_meta().index, applied);
    assert_eq!(net.node(3).last_index(), net.node(1).last_index());
    assert_eq!(net.node(3).commit_index(), net.node(1).commit_index());
}

/// Serves a snapshot's bytes as a service keeping them in a file would, failing the
/// first `fail_first` reads (a read error), and counts the reads.
struct FileLike {
    data: Arc<[u8]>,
    meta: SnapshotMeta,
    reads: Arc<std::sync::atomic::AtomicU64>,
    fail_first: u64,
}

impl SnapshotSource for FileLike {
    fn read(&mut self, meta: &SnapshotMeta, offset: u64, max_len: u64) -> Option<(Arc<[u8]>, u64)> {
        assert_eq!(meta, &self.meta, "asked for the current snapshot");
        let n = self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n < self.fail_first {
            return None;
        }
        let total = self.data.len() as u64;
        let start = offset.min(total);
        let end = (start + max_len).min(total);
        Some((Arc::from(&self.data[start as usize..end as usize]), total))
    }
}

/// Issue 12: the leader kept its last snapshot's bytes in memory for as long as it was
/// current, only to serve InstallSnapshot. With a snapshot source the core drops them
/// and sends a lagging follower chunks read from the source (here bytes different from
/// the ones given to `compact`, so only the source can have produced what arrives); a
/// failed read sends nothing and is retried at the follower's next heartbeat answer.
#[test]
fn lagging_follower_gets_the_snapshot_from_the_source_chunk_by_chunk() {
    let mut net = Net::new(3);
    for id in 1..=3 {
        let mut c = config(id);
        c.snapshot_chunk_bytes = 10;
        *net.node(id) = Raft::new(c, &voters(3)).unwrap();
    }
    net.elect(1);
    net.isolate(3);
    for k in 0..20u8 {
        net.node(1).propose(vec![k]).unwrap();
        net.deliver_all();
    }
    let applied = net.node(1).applied_index();
    let meta = meta_at(net.node(1), applied);
    let in_file: Arc<[u8]> = (0..95u8).collect::<Vec<u8>>().into();
    let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let source =
        FileLike { data: in_file.clone(), meta: meta.clone(), reads: reads.clone(), fail_first: 2 };
    net.node(1).set_snapshot_source(Box::new(source));
    net.node(1).compact(Snapshot { meta: meta.clone(), data: vec![0u8; 7].into() }).unwrap();
    net.heal();
    net.tick_all(40);
    let received: Vec<u8> = net
        .delivered
        .iter()
        .filter(|m| m.to == 3)
        .filter_map(|m| match &m.body {
            MessageBody::Snapshot { chunk, .. } => Some(chunk.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(received, in_file.to_vec(), "95 bytes from the source in 10-byte chunks");
    assert_eq!(reads.load(std::sync::atomic::Ordering::Relaxed), 2 + 10, "2 failed, 10 served");
    assert_eq!(net.node(3).snapshot_meta().index, applied);
    assert_eq!(net.node(3).commit_index(), net.node(1).commit_index());
}

/// Raft Figure 13 and the state machine never going back in time: a follower ignores a
/// snapshot that is not newer than what it has committed.
#[test]
fn follower_ignores_snapshot_older_than_its_commit() {
    let mut net = Net::new(3);
    net.elect(1);
    for k in 0..5u8 {
        net.node(1).propose(vec![k]).unwrap();
    }
    net.deliver_all();
    net.tick_all(6);
    let commit = net.node(2).commit_index();
    let applied_before = net.applied[&2].len();
    let term = net.node(1).term();
    let old = Message {
        from: 1,
        to: 2,
        term,
        body: MessageBody::Snapshot {
            meta: SnapshotMeta { index: 2, term, conf: ConfState::from_voters(voters(3)) },
            offset: 0,
            total_bytes: 3,
            chunk: vec![1u8, 2, 3].into(),
            done: true,
        },
    };
    net.node(2).step(old);
    let rd = net.node(2).ready();
    assert!(rd.snapshot.is_none(), "an older snapshot is never installed");
    net.node(2).on_persisted(rd.number);
    assert_eq!(net.node(2).commit_index(), commit);
    assert_eq!(net.applied[&2].len(), applied_before);
}

/// Flow control: many proposals made between two Readies travel in one message per
/// follower, not one each.
#[test]
fn proposals_between_readies_are_batched() {
    let mut net = Net::new(3);
    net.elect(1);
    net.delivered.clear();
    for k in 0..100u8 {
        net.node(1).propose(vec![k]).unwrap();
    }
    net.deliver_all();
    let appends = net
        .delivered
        .iter()
        .filter(|m| {
            m.from == 1
                && matches!(&m.body, MessageBody::Append { entries, .. } if !entries.is_empty())
        })
        .count();
    assert_eq!(appends, 2, "one batched append per follower");
}

/// Regression (simulator seed 2451): with the persist order snapshot → entries → hard
/// state, a torn write can keep entries of a newer term without the hard state written
/// after them. The member restarts in the entries' term with no vote, rather than
/// refusing to start.
#[test]
fn restart_after_torn_write_adopts_the_term_of_surviving_entries() {
    let restored = Restored {
        hard_state: HardState { term: 2, vote: 1, commit: 1 },
        snapshot: None,
        entries: entries(&[(1, 1), (3, 1)]),
    };
    let r = Raft::restore(config(1), &voters(3), restored).unwrap();
    assert_eq!(r.term(), 3);
    assert_eq!(r.hard_state().vote, 0, "no vote is known in the adopted term");
    assert_eq!(r.last_index(), 2);
}

/// Three voters with 10-byte snapshot chunks; node 1 leads and, while node 3 was cut
/// off, committed 20 entries and compacted them into a 95-byte snapshot (node 3 then
/// needs it, in 10 chunks). Node 3 stays isolated. Returns the snapshot's index too.
fn leader_1_with_a_snapshot_node_3_lacks() -> (Net, u64) {
    let mut net = Net::new(3);
    for id in 1..=3 {
        let mut c = config(id);
        c.snapshot_chunk_bytes = 10;
        *net.node(id) = Raft::new(c, &voters(3)).unwrap();
    }
    net.elect(1);
    net.isolate(3);
    for k in 0..20u8 {
        net.node(1).propose(vec![k]).unwrap();
        net.deliver_all();
    }
    let applied = net.node(1).applied_index();
    let meta = meta_at(net.node(1), applied);
    net.node(1).compact(Snapshot { meta, data: vec![7u8; 95].into() }).unwrap();
    (net, applied)
}

/// Regression (simulator, kv seed 8971): on a network that duplicates messages, every
/// duplicated InstallSnapshot answer used to send another chunk, each starting another
/// endless chunk/answer exchange — a message storm. Only an answer that moves the transfer
/// forward may send the next chunk.
#[test]
fn duplicated_snapshot_answers_do_not_multiply_chunks() {
    let (mut net, applied) = leader_1_with_a_snapshot_node_3_lacks();
    net.heal();
    net.duplicate = true;
    net.delivered.clear();
    net.tick_all(20);
    let chunks = net
        .delivered
        .iter()
        .filter(|m| m.to == 3 && matches!(m.body, MessageBody::Snapshot { .. }))
        .count();
    assert!(chunks <= 12, "10 chunks needed, {chunks} sent");
    assert_eq!(net.node(3).snapshot_meta().index, applied);
}

/// Regression (simulator seed 1041): a late duplicate of a snapshot's first chunk used to
/// restart the follower's copy, after which it could never accept the chunk the leader
/// was resending (the leader only moves forward) — the follower never caught up.
#[test]
fn late_duplicate_first_chunk_keeps_snapshot_progress() {
    let mut f = Raft::new(config(3), &voters(3)).unwrap();
    let meta = SnapshotMeta { index: 50, term: 1, conf: ConfState::from_voters(voters(3)) };
    let chunk = |offset: u64, done: bool| Message {
        from: 1,
        to: 3,
        term: 1,
        body: MessageBody::Snapshot {
            meta: meta.clone(),
            offset,
            total_bytes: 30,
            chunk: vec![offset as u8; 10].into(),
            done,
        },
    };
    let answer = |f: &mut Raft| -> (u64, bool) {
        let mut out = None;
        for _ in 0..2 {
            let rd = f.ready();
            f.on_persisted(rd.number);
            for m in rd.messages {
                if let MessageBody::SnapshotResp { next_offset, done, .. } = m.body {
                    out = Some((next_offset, done));
                }
            }
        }
        out.expect("an answer")
    };
    f.step(chunk(0, false));
    assert_eq!(answer(&mut f), (10, false));
    f.step(chunk(10, false));
    assert_eq!(answer(&mut f), (20, false));
    f.step(chunk(0, false));
    assert_eq!(answer(&mut f), (20, false), "a late first chunk keeps the progress");
    f.step(chunk(20, true));
    assert_eq!(answer(&mut f), (30, true));
    assert_eq!(f.snapshot_meta().index, 50);
}

/// Raft Figure 13, chunked InstallSnapshot resumed from the follower's offset: a follower
/// that answers it holds less than the leader's offset (it restarted and lost its copy,
/// while answers of its earlier copy, held back, moved the leader past it) gets the
/// snapshot from its own offset at the next heartbeat answer, unless an answer moved the
/// transfer forward meanwhile (then the low answer was only late).
///
/// Regression (simulator seed 2764, `--membership always`): the leader ignored every
/// answer below its offset, the follower answered every chunk past its copy with the same
/// offset, and it never caught up.
#[test]
fn snapshot_transfer_resumes_from_a_follower_behind_the_leaders_offset() {
    let (mut net, applied) = leader_1_with_a_snapshot_node_3_lacks();
    let term = net.node(1).term();
    let held = net.node(1).progress(3).unwrap().match_index;
    // Node 3's side is played by hand: the leader's answer to each of its messages is
    // the offset of the chunk it sends node 3 next.
    let mut from_3 = |body: MessageBody| -> Option<u64> {
        net.node(1).step(Message { from: 3, to: 1, term, body });
        net.process(1);
        let sent = std::mem::take(&mut net.queue);
        sent.into_iter().rev().find_map(|m| match m.body {
            MessageBody::Snapshot { offset, .. } if m.to == 3 => Some(offset),
            _ => None,
        })
    };
    let heartbeat_answer = || MessageBody::HeartbeatResp { read_round: 0 };
    let answer = |next_offset| MessageBody::SnapshotResp {
        snapshot_index: applied,
        next_offset,
        done: false,
        last_index: 0,
    };
    // Node 3 has nothing past its match: the leader must send the snapshot.
    let no_match = MessageBody::AppendResp {
        index: held + 1,
        reject: Some(RejectHint { conflict_term: 0, conflict_first_index: 0, log_len: held + 1 }),
    };
    assert_eq!(from_3(no_match), Some(0), "the transfer starts");
    assert_eq!(from_3(answer(10)), Some(10));
    assert_eq!(from_3(answer(20)), Some(20));
    // Node 3 restarts without its copy: asked from 0, the leader starts over.
    assert_eq!(from_3(answer(0)), Some(0));
    // The answer its earlier copy gave to chunk 20, held back, moves the leader to 30.
    assert_eq!(from_3(answer(30)), Some(30));
    // Node 3 holds 10 bytes (chunk 0 of the new start) and says so; not at once (it
    // could be late), but at the next heartbeat answer the leader resends from there.
    assert_eq!(from_3(answer(10)), None);
    assert_eq!(from_3(heartbeat_answer()), Some(10), "resent from the follower's offset");
    // A low answer overtaken by one that moves the transfer forward was only late.
    assert_eq!(from_3(answer(20)), Some(20));
    assert_eq!(from_3(answer(10)), None);
    assert_eq!(from_3(answer(30)), Some(30));
    assert_eq!(from_3(heartbeat_answer()), Some(30), "a late answer does not move it back");
}

#[test]
fn compaction_hands_back_the_entries_it_discards_and_keeps_the_rest() {
    let mut net = Net::new(3);
    net.elect(1);
    for k in 0..20u8 {
        net.node(1).propose(vec![k]).unwrap();
        net.deliver_all();
    }
    let (first, last) = (net.node(1).first_index(), net.node(1).last_index());
    let index = net.node(1).applied_index() - 5;
    let expected: Vec<Entry> =
        (first..=index).map(|i| net.node(1).entry(i).unwrap().clone()).collect();
    let kept: Vec<Entry> =
        (index + 1..=last).map(|i| net.node(1).entry(i).unwrap().clone()).collect();
    let meta = meta_at(net.node(1), index);
    let discarded = net.node(1).compact(Snapshot { meta, data: vec![1u8].into() }).unwrap();
    assert_eq!(discarded, expected, "the discarded entries, in order, unchanged");
    assert_eq!(net.node(1).first_index(), index + 1);
    let now: Vec<Entry> =
        (index + 1..=last).map(|i| net.node(1).entry(i).unwrap().clone()).collect();
    assert_eq!(now, kept, "the entries after the snapshot stay");
    // The leader still replicates from the kept log.
    net.node(1).propose(vec![99]).unwrap();
    net.deliver_all();
    assert_eq!(net.node(2).last_index(), last + 1);
}

/// A net of three whose members keep `catch_up` applied entries in memory past what a
/// leader knows its followers need, with node 1 leading.
fn net_keeping(catch_up: u64) -> Net {
    let mut net = Net::new(3);
    for id in 1..=3 {
        let mut c = config(id);
        c.catch_up_entries = catch_up;
        *net.node(id) = Raft::new(c, &voters(3)).unwrap();
    }
    net.elect(1);
    net
}

/// [`net_keeping`] 4 entries, where node 3 is cut off and misses 40 commands.
fn net_with_3_left_behind() -> Net {
    let mut net = net_keeping(4);
    net.isolate(3);
    for k in 0..40u8 {
        net.node(1).propose(vec![k]).unwrap();
        net.deliver_all();
    }
    net
}

/// Issue 12: applied entries leave memory once past the catch-up allowance, before any
/// snapshot covers them (etcd keeps 5000 after a snapshot; raftkv kept everything up to
/// the next snapshot, 100k entries). Their terms stay, so the log answers for every
/// index, and a leader keeps what a lagging follower it knows of still needs, so that
/// follower catches up from the log, with no snapshot.
#[test]
fn applied_entries_past_the_catch_up_allowance_leave_memory_but_not_what_a_follower_needs() {
    let mut net = net_with_3_left_behind();
    let (applied, behind) = (net.node(2).applied_index(), net.node(3).last_index());
    assert!(applied >= 40, "applied {applied}");
    let first = net.node(2).first_index();
    assert!(first > applied - 8 && first <= applied - 3, "follower 2 holds from {first}");
    assert_eq!(net.node(2).entry(first - 1), None, "trimmed");
    for i in 1..=applied {
        assert_eq!(net.node(2).term_at(i), net.node(1).term_at(i), "term at {i}");
    }
    assert!(
        net.node(1).first_index() <= behind + 1,
        "the leader keeps from {} although follower 3 needs {}",
        net.node(1).first_index(),
        behind + 1
    );
    net.heal();
    net.tick_all(20);
    assert!(!net.node(1).wants_snapshot());
    assert_eq!(net.node(3).snapshot_meta().index, 0, "caught up from the log");
    assert_eq!(net.node(3).last_index(), net.node(1).last_index());
    assert_eq!(net.applied_data(3), net.applied_data(1));
    // Once the follower has it all, the leader lets go of it too.
    for k in 0..8u8 {
        net.node(1).propose(vec![k]).unwrap();
        net.deliver_all();
    }
    assert!(
        net.node(1).first_index() > applied - 8,
        "leader holds from {}",
        net.node(1).first_index()
    );
}

/// Large entries: `catch_up_bytes` keeps fewer of them than `catch_up_entries` allows.
#[test]
fn the_catch_up_allowance_in_bytes_keeps_fewer_large_entries() {
    let mut net = Net::new(1);
    let mut c = config(1);
    c.catch_up_bytes = 10_000;
    *net.node(1) = Raft::new(c, &voters(1)).unwrap();
    net.elect(1);
    for _ in 0..20 {
        net.node(1).propose(vec![7u8; 3_000]).unwrap();
        net.deliver_all();
    }
    let kept = net.node(1).applied_index() + 1 - net.node(1).first_index();
    assert!((3..=4).contains(&kept), "{kept} entries of 3 kB kept for a 10 kB allowance");
}

/// A follower that lags behind a *new* leader, which trimmed as a follower what it did
/// not know would be needed: the leader sends it nothing it cannot (no entries, not the
/// old snapshot, which would not reach past the trimmed ones), asks its service for a
/// snapshot, and sends that once it has it.
#[test]
fn a_follower_behind_a_new_leaders_trimmed_entries_gets_the_snapshot_the_core_asks_for() {
    let mut net = net_with_3_left_behind();
    // Node 3, cut off, stops expecting a leader; then node 1 goes and node 2 leads.
    for _ in 0..60 {
        net.node(3).tick();
    }
    net.deliver_all();
    net.heal();
    net.isolate(1);
    net.elect(2);
    net.tick_all(10);
    assert!(net.node(2).wants_snapshot(), "node 2 needs a snapshot for node 3");
    assert!(net.node(3).commit_index() < 40, "node 3 still lags");
    assert!(
        !net.delivered
            .iter()
            .any(|m| m.from == 2 && m.to == 3 && matches!(&m.body, MessageBody::Snapshot { .. })),
        "no old snapshot sent"
    );
    let applied = net.node(2).applied_index();
    let meta = meta_at(net.node(2), applied);
    net.node(2).compact(Snapshot { meta, data: vec![1u8; 10].into() }).unwrap();
    assert!(!net.node(2).wants_snapshot());
    net.tick_all(20);
    assert_eq!(net.node(3).snapshot_meta().index, applied, "node 3 installed it");
    assert_eq!(net.node(3).commit_index(), net.node(2).commit_index());
    net.node(2).propose(vec![99]).unwrap();
    net.deliver_all();
    assert_eq!(net.node(3).last_index(), net.node(2).last_index());
}

/// A snapshot that covers only entries already trimmed keeps the terms of the ones
/// after it, and none before.
#[test]
fn a_snapshot_inside_the_trimmed_entries_keeps_the_later_terms() {
    let mut net = net_keeping(2);
    for k in 0..20u8 {
        net.node(1).propose(vec![k]).unwrap();
        net.deliver_all();
    }
    let first = net.node(2).first_index();
    let index = first - 5;
    let terms: Vec<Option<Term>> =
        (0..=net.node(2).last_index()).map(|i| net.node(2).term_at(i)).collect();
    let meta = meta_at(net.node(2), index);
    let discarded = net.node(2).compact(Snapshot { meta, data: vec![1u8].into() }).unwrap();
    assert!(discarded.is_empty(), "they were trimmed already");
    assert_eq!(net.node(2).first_index(), first);
    for i in 0..index {
        assert_eq!(net.node(2).term_at(i), None, "below the snapshot: {i}");
    }
    for i in index..terms.len() as u64 {
        assert_eq!(net.node(2).term_at(i), terms[i as usize], "term at {i}");
    }
}
