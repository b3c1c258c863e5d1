//! Hostile peer input against live cores (issue 10, "hardened peer input").
//!
//! Without TLS anyone who reaches a member's peer port can hand its core any message.
//! These tests pin two promises:
//! - a message with a field out of bounds (`raft::validate`) or an answer naming an index
//!   beyond the leader's log is dropped with *no effect at all*: a cluster fed thousands
//!   of them behaves exactly (message for message) like the same seeded cluster without;
//! - no message, however extreme, panics a core (overflow, allocation, assertion).
//!
//! What they cannot promise: a *well-formed* forged message in a member's name (a vote
//! grant, an acknowledgement) can still mislead the core; only authenticating the
//! sender (TLS on the peer port) prevents that. The regression tests at the end each
//! open with the bug they pin.

use raft::validate::{INDEX_MAX, TERM_JUMP_MAX, TERM_MAX};
use raft::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

const VOTERS: [NodeId; 3] = [1, 2, 3];

fn config(id: NodeId) -> Config {
    let mut c = Config::new(id);
    c.rng_seed = id * 7919;
    c.max_msg_bytes = 240;
    c.max_append_entries = 16;
    c.snapshot_chunk_bytes = 64;
    c.max_snapshot_bytes = 4096;
    c
}

/// A three-member cluster on an in-order network; every Ready is persisted at once.
/// Records what a checker needs: every message delivered, every entry applied.
struct Cluster {
    nodes: BTreeMap<NodeId, Raft>,
    queue: VecDeque<Message>,
    delivered: Vec<Message>,
    /// Per member: index → (term, data) of each entry applied.
    applied: BTreeMap<NodeId, BTreeMap<Index, (Term, Vec<u8>)>>,
    /// The leader seen in each term.
    leader_of_term: BTreeMap<Term, NodeId>,
    proposals: u64,
    /// A member that is down: not ticked, messages to and from it are lost.
    down: Option<NodeId>,
}

impl Cluster {
    fn new() -> Cluster {
        let voters: BTreeSet<NodeId> = VOTERS.into();
        let nodes =
            VOTERS.iter().map(|&id| (id, Raft::new(config(id), &voters).unwrap())).collect();
        Cluster {
            nodes,
            queue: VecDeque::new(),
            delivered: Vec::new(),
            applied: BTreeMap::new(),
            leader_of_term: BTreeMap::new(),
            proposals: 0,
            down: None,
        }
    }

    fn node(&mut self, id: NodeId) -> &mut Raft {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Drains `id`'s Readies, applying and compacting every 8 entries (so snapshots
    /// travel), and checks one leader per term.
    fn process(&mut self, id: NodeId) {
        loop {
            let r = self.nodes.get_mut(&id).unwrap();
            if !r.has_ready() {
                break;
            }
            let rd = r.ready();
            r.on_persisted(rd.number);
            self.queue.extend(rd.messages);
            let applied = self.applied.entry(id).or_default();
            for e in &rd.committed_entries {
                applied.insert(e.index, (e.term, e.data.to_vec()));
            }
            let r = self.nodes.get_mut(&id).unwrap();
            let applied_index = r.applied_index();
            if applied_index >= r.first_index() + 8 {
                let meta = SnapshotMeta {
                    index: applied_index,
                    term: r.term_at(applied_index).unwrap(),
                    conf: ConfState::from_voters(r.voters().clone()),
                };
                let data: Arc<[u8]> = applied_index.to_le_bytes().to_vec().into();
                r.compact(Snapshot { meta, data }).unwrap();
            }
        }
        let r = &self.nodes[&id];
        if r.role() == Role::Leader {
            let first = *self.leader_of_term.entry(r.term()).or_insert(id);
            assert_eq!(first, id, "two leaders in term {}", r.term());
        }
    }

    fn deliver_all(&mut self) {
        for _ in 0..100_000 {
            for id in VOTERS {
                self.process(id);
            }
            let Some(m) = self.queue.pop_front() else { return };
            if self.down == Some(m.to) || self.down == Some(m.from) {
                continue;
            }
            self.delivered.push(m.clone());
            self.node(m.to).step(m);
        }
        panic!("message storm: the exchange never settles");
    }

    /// One round of the schedule: every member ticks, sometimes the leader gets a
    /// proposal, then everything in flight is delivered.
    fn round(&mut self, propose: bool) {
        let down = self.down;
        for id in VOTERS.into_iter().filter(|id| down != Some(*id)) {
            self.node(id).tick();
        }
        if propose {
            if let Some(l) = VOTERS.into_iter().find(|id| self.nodes[id].role() == Role::Leader) {
                let data = self.proposals.to_le_bytes().to_vec();
                if self.node(l).propose(data).is_ok() {
                    self.proposals += 1;
                }
            }
        }
        self.deliver_all();
    }

    /// Raft's State Machine Safety: no two members apply different entries at an index.
    fn check_applied_agree(&self) {
        let mut seen: BTreeMap<Index, &(Term, Vec<u8>)> = BTreeMap::new();
        for (id, applied) in &self.applied {
            for (index, e) in applied {
                let first = *seen.entry(*index).or_insert(e);
                assert_eq!(first, e, "member {id} applied a different entry at {index}");
            }
        }
    }

    fn snapshot_state(&self) -> Vec<(Role, HardState, Index, Index, u64)> {
        self.nodes
            .values()
            .map(|r| (r.role(), r.hard_state(), r.last_index(), r.applied_index(), 0))
            .collect()
    }
}

/// Picks a value that lies out of bounds for a term or index field.
fn beyond(rng: &mut Rng, max: u64) -> u64 {
    match rng.range(0, 3) {
        0 => u64::MAX,
        1 => max + 1,
        _ => rng.range(max + 1, u64::MAX),
    }
}

fn any_id(rng: &mut Rng) -> NodeId {
    rng.range(1, 4)
}

/// A message from a member to `to` with at least one field out of bounds, or an answer
/// beyond the recipient's log in its own term: one `step` must change nothing.
fn invalid_message(rng: &mut Rng, to: &Raft) -> Message {
    let mut from = any_id(rng);
    if from == to.id() {
        from = from % 3 + 1;
    }
    let term = to.term();
    let past_log = to.last_index() + 1 + rng.range(0, 1000);
    let (term, body) = match rng.range(0, 10) {
        0 => (beyond(rng, TERM_MAX), MessageBody::Heartbeat { commit: 0, read_round: 0 }),
        1 => (
            term,
            MessageBody::Vote { last_index: beyond(rng, INDEX_MAX), last_term: 0, transfer: false },
        ),
        2 => (term + 1, MessageBody::PreVote { last_index: 1, last_term: term + 2 }),
        3 => (term, MessageBody::AppendResp { index: beyond(rng, INDEX_MAX), reject: None }),
        4 => (term, MessageBody::AppendResp { index: past_log, reject: None }),
        5 => {
            let last_index = past_log;
            let done = rng.chance(0.5);
            (
                term,
                MessageBody::SnapshotResp { snapshot_index: 1, next_offset: 0, done, last_index },
            )
        }
        6 => (term + 1, huge_snapshot_chunk(rng, term + 1)),
        7 => (term + 1, gap_append(rng, to.last_index(), term + 1)),
        8 => (term, MessageBody::ReadIndexResp { ctx: 1, index: beyond(rng, INDEX_MAX) }),
        _ => {
            // A well-formed message that names no member or the recipient as sender.
            let from = if rng.chance(0.5) { 0 } else { to.id() };
            let m =
                Message { from, to: to.id(), term, body: MessageBody::VoteResp { reject: false } };
            return m;
        }
    };
    Message { from, to: to.id(), term, body }
}

fn huge_snapshot_chunk(rng: &mut Rng, term: Term) -> MessageBody {
    let total_bytes = if rng.chance(0.5) { 1 << 62 } else { 4097 };
    MessageBody::Snapshot {
        meta: SnapshotMeta { index: 1 << 40, term, conf: ConfState::from_voters(VOTERS.into()) },
        offset: 0,
        total_bytes,
        chunk: Arc::from(&b"x"[..]),
        done: false,
    }
}

fn gap_append(rng: &mut Rng, last: Index, term: Term) -> MessageBody {
    let data: Arc<[u8]> = Arc::from(&b"forged"[..]);
    let e = |index| Entry { term, index, kind: EntryKind::Normal, data: data.clone() };
    let entries = if rng.chance(0.5) {
        vec![e(last + 1), e(last + 3)] // not contiguous
    } else {
        (0..17).map(|k| e(last + 1 + k)).collect() // more than max_append_entries
    };
    MessageBody::Append { prev_index: last, prev_term: 0, entries, commit: last + 17 }
}

/// Property: thousands of invalid messages, interleaved with a working cluster's traffic,
/// change nothing. The same seeded cluster runs twice, once clean and once with hostile
/// messages stepped into a random member before every round; the delivered messages,
/// roles, hard states and applied entries must be identical, and every hostile message
/// counted as dropped.
#[test]
fn invalid_peer_messages_change_nothing() {
    let mut cases = 0u64;
    for seed in 0..20u64 {
        let mut clean = Cluster::new();
        let mut hostile = Cluster::new();
        let mut schedule = Rng::new(seed);
        let mut forger = Rng::new(seed ^ 0xF0F0);
        for round in 0..150 {
            let propose = schedule.chance(0.5);
            for _ in 0..forger.range(0, 8) {
                let to = any_id(&mut forger);
                let m = invalid_message(&mut forger, &hostile.nodes[&to]);
                let before = hostile.nodes[&to].invalid_messages_dropped();
                hostile.node(to).step(m.clone());
                let after = hostile.nodes[&to].invalid_messages_dropped();
                // Out-of-bounds fields are always counted; an answer beyond the log only
                // by a leader (anyone else ignores it anyway).
                let out_of_bounds =
                    raft::validate::check_message(&m, to, &config(to).peer_limits()).is_err();
                assert!(after == before + 1 || !out_of_bounds, "seed {seed}: {m:?} not dropped");
                cases += 1;
            }
            clean.round(propose);
            hostile.round(propose);
            assert_eq!(
                clean.snapshot_state(),
                hostile.snapshot_state(),
                "seed {seed} round {round}"
            );
        }
        assert_eq!(clean.delivered, hostile.delivered, "seed {seed}");
        assert_eq!(clean.applied, hostile.applied, "seed {seed}");
        hostile.check_applied_agree();
        assert!(hostile.proposals > 10, "seed {seed}: the cluster made progress");
    }
    println!("{cases} invalid messages stepped, all without effect");
    assert!(cases > 5000);
}

/// Any value a field may hold: the boundaries, the recipient's own term and log
/// positions and their neighbours, and random bits.
fn extreme(rng: &mut Rng, near: u64) -> u64 {
    let choices =
        [0, 1, near.saturating_sub(1), near, near.saturating_add(1), TERM_MAX, INDEX_MAX, u64::MAX];
    if rng.chance(0.2) {
        rng.next_u64()
    } else {
        choices[rng.range(0, choices.len() as u64) as usize]
    }
}

fn extreme_message(rng: &mut Rng, to: &Raft) -> Message {
    let (t, li) = (to.term(), to.last_index());
    let term = extreme(rng, t);
    let body = match rng.range(0, 13) {
        0 => MessageBody::PreVote { last_index: extreme(rng, li), last_term: extreme(rng, t) },
        1 => MessageBody::PreVoteResp { reject: rng.chance(0.5) },
        2 => MessageBody::Vote {
            last_index: extreme(rng, li),
            last_term: extreme(rng, t),
            transfer: rng.chance(0.5),
        },
        3 => MessageBody::VoteResp { reject: rng.chance(0.5) },
        4 => {
            let prev_index = extreme(rng, li);
            let entry_term = extreme(rng, t);
            let n = rng.range(0, 4);
            let entries = (0..n)
                .map(|k| Entry {
                    term: entry_term,
                    index: prev_index.wrapping_add(1 + k),
                    kind: EntryKind::Normal,
                    data: Arc::from(&b"e"[..]),
                })
                .collect();
            let prev_term = extreme(rng, t);
            MessageBody::Append { prev_index, prev_term, entries, commit: extreme(rng, li) }
        }
        5 => {
            let reject = rng.chance(0.5).then(|| RejectHint {
                conflict_term: extreme(rng, t),
                conflict_first_index: extreme(rng, li),
                log_len: extreme(rng, li),
            });
            MessageBody::AppendResp { index: extreme(rng, li), reject }
        }
        6 => MessageBody::Heartbeat { commit: extreme(rng, li), read_round: extreme(rng, 1) },
        7 => MessageBody::HeartbeatResp { read_round: extreme(rng, 1) },
        8 => {
            let total_bytes = extreme(rng, 64);
            let offset = extreme(rng, 0);
            let len = rng.range(0, 80) as usize;
            let meta = SnapshotMeta {
                index: extreme(rng, li),
                term: extreme(rng, t),
                conf: ConfState::from_voters(VOTERS.into()),
            };
            let done = rng.chance(0.5);
            MessageBody::Snapshot { meta, offset, total_bytes, chunk: vec![7; len].into(), done }
        }
        9 => MessageBody::SnapshotResp {
            snapshot_index: extreme(rng, li),
            next_offset: extreme(rng, 64),
            done: rng.chance(0.5),
            last_index: extreme(rng, li),
        },
        10 => MessageBody::ReadIndex { ctx: rng.next_u64() },
        11 => MessageBody::TimeoutNow,
        _ => MessageBody::ReadIndexResp { ctx: extreme(rng, 1), index: extreme(rng, li) },
    };
    let mut from = any_id(rng);
    if from == to.id() {
        from = from % 3 + 1;
    }
    Message { from, to: to.id(), term, body }
}

/// Property: no message, with any field at any extreme, panics a core, whatever state
/// the cluster is in. (Forged *valid* messages may mislead it: that is what TLS is for,
/// so only the absence of panics is asserted here.)
#[test]
fn extreme_peer_messages_never_panic_a_core() {
    let mut cases = 0u64;
    for seed in 0..30u64 {
        let mut c = Cluster::new();
        let mut rng = Rng::new(seed ^ 0xABCD);
        for _ in 0..120 {
            for _ in 0..rng.range(0, 6) {
                let to = any_id(&mut rng);
                let m = extreme_message(&mut rng, &c.nodes[&to]);
                c.node(to).step(m);
                cases += 1;
            }
            let propose = rng.chance(0.5);
            // Forged messages may make members disagree; the schedule goes on regardless.
            c.leader_of_term.clear();
            c.round(propose);
        }
    }
    println!("{cases} extreme messages stepped without a panic");
    assert!(cases > 8000);
}

// ------------------------------------------------------------ regression tests

fn elected_cluster() -> (Cluster, NodeId) {
    let mut c = Cluster::new();
    for _ in 0..200 {
        c.round(false);
        if let Some(l) = VOTERS.into_iter().find(|id| c.nodes[id].role() == Role::Leader) {
            return (c, l);
        }
    }
    panic!("no leader elected");
}

fn follower_of(leader: NodeId) -> NodeId {
    leader % 3 + 1
}

/// Issue 10: an AppendResp with index u64::MAX made the leader compute
/// `index + 1` in `progress.rs` and panic on the overflow. An acknowledgement beyond the
/// leader's log (which no follower can honestly send) must leave its view unchanged.
#[test]
fn append_answer_beyond_the_log_is_dropped_not_overflowed() {
    let (mut c, l) = elected_cluster();
    let f = follower_of(l);
    let term = c.nodes[&l].term();
    let before = c.nodes[&l].progress(f).unwrap().match_index;
    for index in [u64::MAX, INDEX_MAX, c.nodes[&l].last_index() + 1] {
        let body = MessageBody::AppendResp { index, reject: None };
        c.node(l).step(Message { from: f, to: l, term, body });
    }
    assert_eq!(c.nodes[&l].invalid_messages_dropped(), 3);
    assert_eq!(c.nodes[&l].progress(f).unwrap().match_index, before);
    assert_eq!(c.nodes[&l].role(), Role::Leader);
}

/// Issue 10: a snapshot chunk announcing 2^62 bytes made the follower reserve that much
/// (`Vec::with_capacity(total_bytes)`) and abort. Beyond the configured maximum it is
/// dropped; within it, memory grows only with the bytes that actually arrive.
#[test]
fn snapshot_chunk_announcing_huge_size_allocates_nothing() {
    let (mut c, l) = elected_cluster();
    let f = follower_of(l);
    let term = c.nodes[&f].term();
    let chunk = |total_bytes| MessageBody::Snapshot {
        meta: SnapshotMeta { index: 1 << 40, term, conf: ConfState::from_voters(VOTERS.into()) },
        offset: 0,
        total_bytes,
        chunk: Arc::from(&b"x"[..]),
        done: false,
    };
    c.node(f).step(Message { from: l, to: f, term, body: chunk(1 << 62) });
    assert_eq!(c.nodes[&f].invalid_messages_dropped(), 1);

    // A member configured to accept any size still must not reserve the claim.
    let voters: BTreeSet<NodeId> = VOTERS.into();
    let mut cfg = config(f);
    cfg.max_snapshot_bytes = u64::MAX;
    let mut lone = Raft::new(cfg, &voters).unwrap();
    lone.step(Message { from: l, to: f, term: 1, body: chunk(1 << 62) });
    assert_eq!(lone.invalid_messages_dropped(), 0, "accepted: it fits the limit");
    assert_eq!(lone.term(), 1);
}

/// Issue 10: a message with term u64::MAX was adopted, and the next election's
/// `term + 1` overflowed and panicked. Terms beyond `TERM_MAX`, or further ahead of the
/// member's own than `TERM_JUMP_MAX`, are dropped, so the member keeps its term and the
/// next election works; a corrupt hard state at u64::MAX stops campaigning instead of
/// wrapping around.
#[test]
fn message_with_term_u64_max_does_not_break_the_next_election() {
    let (mut c, l) = elected_cluster();
    let f = follower_of(l);
    let term = c.nodes[&f].term();
    for forged in [u64::MAX, TERM_MAX, term + TERM_JUMP_MAX + 1] {
        let body = MessageBody::Heartbeat { commit: 0, read_round: 0 };
        c.node(f).step(Message { from: l, to: f, term: forged, body });
    }
    assert_eq!(c.nodes[&f].term(), term);
    assert_eq!(c.nodes[&f].invalid_messages_dropped(), 3);
    // The leader goes down: the others elect a new one in a later term.
    c.down = Some(l);
    for _ in 0..200 {
        c.round(false);
        if c.nodes.values().any(|r| r.role() == Role::Leader && r.id() != l) {
            break;
        }
    }
    let leader = c.nodes.values().find(|r| r.role() == Role::Leader && r.id() != l);
    assert!(leader.expect("a new leader").term() > term);

    let restored = Restored {
        hard_state: HardState { term: u64::MAX, vote: 0, commit: 0 },
        ..Restored::default()
    };
    let mut lone = Raft::restore(config(1), &[1].into(), restored).unwrap();
    for _ in 0..200 {
        lone.tick();
    }
    assert_eq!((lone.term(), lone.role()), (u64::MAX, Role::Follower), "never wraps to 0");
}

/// A heartbeat answer echoing a read round the leader never sent would confirm reads no
/// majority has confirmed (a stale read, Raft thesis §6.4). The echo is capped at the
/// last round sent.
#[test]
fn heartbeat_answer_cannot_confirm_a_round_never_sent() {
    let (mut c, l) = elected_cluster();
    c.round(true); // an entry of the leader's term commits, so reads may start
    c.node(l).read_index(42).unwrap();
    // Before the leader sends the round for this read, both followers "answer" it.
    let term = c.nodes[&l].term();
    for f in VOTERS.into_iter().filter(|id| *id != l) {
        let body = MessageBody::HeartbeatResp { read_round: u64::MAX / 2 };
        c.node(l).step(Message { from: f, to: l, term, body });
    }
    // The leader now broadcasts the round; no real answer has arrived yet.
    let rd = c.node(l).ready();
    c.node(l).on_persisted(rd.number);
    assert!(rd.read_states.is_empty(), "read confirmed by forged answers: {:?}", rd.read_states);
    // The real answers confirm it.
    c.queue.extend(rd.messages);
    c.deliver_all();
    let rd_reads: Vec<u64> = c
        .delivered
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::HeartbeatResp { read_round } if m.to == l => Some(read_round),
            _ => None,
        })
        .collect();
    assert!(!rd_reads.is_empty());
}
