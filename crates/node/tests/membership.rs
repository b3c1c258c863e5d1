//! Membership changes through the node on a synchronous in-memory cluster: a 3 → 4 → 3
//! change (add a learner, promote it, remove a member), each refusal with etcd 3.4's
//! text, a joining member whose first state comes by snapshot, the removed flag, and
//! restarts that recover the member table.

use kv::{Op, PutRequest};
use node::*;
use raft::{Message, MessageBody, NodeId, Role};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

type MemberOutcome = Result<MemberChanged, MemberFailure>;

struct Cluster {
    nodes: BTreeMap<NodeId, Node<MemStore>>,
    queue: VecDeque<Message>,
    changes: BTreeMap<RequestId, MemberOutcome>,
    events: BTreeMap<NodeId, Vec<NodeEvent>>,
    removed: BTreeSet<NodeId>,
    down: BTreeSet<NodeId>,
}

fn url(id: NodeId) -> String {
    format!("http://127.0.0.1:{}", 22000 + id)
}

fn initial_members(n: u64) -> Vec<Member> {
    (1..=n).map(|id| Member { id, peer_urls: vec![url(id)], ..Member::default() }).collect()
}

fn config(id: NodeId, n: u64) -> NodeConfig {
    let mut c = NodeConfig::new(id, (1..=n).collect());
    c.raft.rng_seed = id.wrapping_mul(31);
    c.snapshot_interval_entries = 0; // only the membership rule takes snapshots
    c.initial_members = initial_members(n);
    c.record_events = true;
    c
}

fn joining_config(id: NodeId) -> NodeConfig {
    let mut c = config(id, 0);
    c.joining = true;
    c.initial_members = Vec::new();
    c
}

impl Cluster {
    fn new(n: u64) -> Cluster {
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            changes: BTreeMap::new(),
            events: BTreeMap::new(),
            removed: BTreeSet::new(),
            down: BTreeSet::new(),
        };
        for id in 1..=n {
            c.start(id, config(id, n), MemStore::default());
        }
        c
    }

    fn start(&mut self, id: NodeId, cfg: NodeConfig, store: MemStore) {
        let restored = store.recover();
        self.nodes.insert(id, Node::new(cfg, store, restored).unwrap());
    }

    fn settle(&mut self) {
        loop {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids.into_iter().filter(|id| !self.down.contains(id)) {
                let q = &mut self.queue;
                let out =
                    self.nodes.get_mut(&id).unwrap().run_once(&mut |ms| q.extend(ms)).unwrap();
                self.changes.extend(out.member_changes);
                self.events.entry(id).or_default().extend(out.events);
                if out.removed {
                    self.removed.insert(id);
                }
            }
            let Some(m) = self.queue.pop_front() else { return };
            let up = |id| !self.down.contains(&id) && self.nodes.contains_key(&id);
            if up(m.to) && up(m.from) {
                self.nodes.get_mut(&m.to).unwrap().step(m);
            }
        }
    }

    fn tick(&mut self, n: u32) {
        for _ in 0..n {
            for (id, node) in self.nodes.iter_mut() {
                if !self.down.contains(id) {
                    node.tick();
                }
            }
            self.settle();
        }
    }

    fn leader(&self) -> NodeId {
        let up = self.nodes.iter().filter(|(id, _)| !self.down.contains(id));
        *up.clone().find(|(_, n)| n.raft().role() == Role::Leader).expect("a leader").0
    }

    fn node(&mut self, id: NodeId) -> &mut Node<MemStore> {
        self.nodes.get_mut(&id).unwrap()
    }

    fn put(&mut self, key: &str) {
        let l = self.leader();
        let put = PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() };
        self.node(l).submit(u64::MAX, Request::Write(kv::Command::new(Op::Put(put))));
        self.settle();
    }

    /// Asks `at` for a change and lets the cluster settle; the outcome.
    fn change(&mut self, at: NodeId, id: RequestId, change: MemberChange) -> MemberOutcome {
        self.node(at).change_members(id, change);
        self.settle();
        self.changes.remove(&id).expect("answered once applied")
    }

    fn failure(&mut self, id: RequestId, change: MemberChange) -> String {
        let l = self.leader();
        match self.change(l, id, change) {
            Err(e) => e.to_string(),
            Ok(ok) => panic!("change {id} succeeded: {ok:?}"),
        }
    }

    fn follower(&self) -> NodeId {
        let l = self.leader();
        *self.nodes.keys().find(|&&id| id != l && !self.down.contains(&id)).unwrap()
    }
}

fn ids(members: &[Member]) -> BTreeSet<NodeId> {
    members.iter().map(|m| m.id).collect()
}

/// A 3-member cluster with a leader and a few writes.
fn three() -> Cluster {
    let mut c = Cluster::new(3);
    c.tick(60);
    for k in 0..5 {
        c.put(&format!("k{k}"));
    }
    c
}

/// Adds a learner at `peer` through the leader and starts it as a joining member; the
/// new member's id.
fn add_learner(c: &mut Cluster, req: RequestId, peer: String) -> NodeId {
    let l = c.leader();
    let added = c.change(l, req, MemberChange::Add { peer_urls: vec![peer], is_learner: true });
    let added = added.expect("learner added");
    let m = added.member.expect("the new member");
    assert!(m.is_learner && m.name.is_empty());
    c.start(m.id, joining_config(m.id), MemStore::default());
    m.id
}

#[test]
fn three_to_four_to_three_with_a_learner_promoted_and_a_member_removed() {
    let mut c = three();
    let new = add_learner(&mut c, 1, url(4));
    c.tick(30);
    let l = c.leader();
    assert_eq!(c.nodes[&new].state().get(b"k4").map(|kv| kv.value), Some(b"v".to_vec()));
    assert!(c.nodes[&l].raft().conf_state().learners.contains(&new));

    let promoted = c.change(l, 2, MemberChange::Promote(new)).expect("promoted");
    assert!(!promoted.member.unwrap().is_learner);
    assert_eq!(promoted.members.len(), 4);
    c.tick(10);
    let voters: BTreeSet<NodeId> = [1, 2, 3, new].into();
    assert_eq!(c.nodes[&l].raft().conf_state().voters, voters);

    let gone = c.follower();
    let removed = c.change(l, 3, MemberChange::Remove(gone)).expect("removed");
    assert!(!ids(&removed.members).contains(&gone));
    assert_eq!(removed.members.len(), 3);
    c.tick(10);
    assert!(c.removed.contains(&gone), "the removed member learns it was removed");
    assert_eq!(c.removed.len(), 1);
    for (id, n) in c.nodes.iter().filter(|(id, _)| **id != gone) {
        assert_eq!(ids(&n.members()), ids(&removed.members), "member {id}'s table");
        assert!(n.is_removed_member(gone));
    }
    // The cluster goes on without it.
    c.down.insert(gone);
    c.put("after");
    assert!(c.nodes[&new].state().get(b"after").is_some());
}

#[test]
fn a_joining_member_gets_its_first_state_by_snapshot_never_from_index_1() {
    let mut c = three();
    let l = c.leader();
    assert_eq!(c.nodes[&l].raft().first_index(), 1, "no snapshot yet (interval 0)");
    let new = add_learner(&mut c, 1, url(4));
    c.tick(30);
    assert!(c.nodes[&l].raft().first_index() > 1, "the leader compacted after the change");
    let first = c.events[&new]
        .iter()
        .find(|e| matches!(e, NodeEvent::Installed(_) | NodeEvent::Appended(_)))
        .expect("the joiner got state");
    assert!(matches!(first, NodeEvent::Installed(_)), "first state by snapshot: {first:?}");
    assert_eq!(ids(&c.nodes[&new].members()), ids(&c.nodes[&l].members()));
    assert_eq!(c.nodes[&new].raft().conf_state(), c.nodes[&l].raft().conf_state());
}

#[test]
fn a_joining_member_ignores_an_append_from_index_1() {
    let mut c = Cluster::new(1);
    c.start(9, joining_config(9), MemStore::default());
    let entry =
        raft::Entry { term: 1, index: 1, kind: raft::EntryKind::Noop, data: Vec::new().into() };
    let body = MessageBody::Append { prev_index: 0, prev_term: 0, entries: vec![entry], commit: 1 };
    c.node(9).step(Message { from: 1, to: 9, term: 1, body });
    let mut sent = Vec::new();
    c.node(9).run_once(&mut |ms| sent.extend(ms)).unwrap();
    assert_eq!(c.nodes[&9].raft().last_index(), 0, "no entry taken");
    assert!(sent.is_empty(), "no answer: the leader probes again later");
    assert!(c.nodes[&9].awaiting_first_snapshot());
}

#[test]
fn each_refusal_has_etcds_text() {
    let mut c = three();
    let l = c.leader();
    let f = c.follower();
    // A follower does not change members; the driver forwards to the leader.
    let out = c.change(f, 1, MemberChange::Remove(l));
    assert_eq!(out.unwrap_err(), MemberFailure::NotLeader { leader: Some(l) });
    let taken = MemberChange::Add { peer_urls: vec![url(2)], is_learner: false };
    assert_eq!(c.failure(2, taken), "etcdserver: Peer URLs already exists");
    assert_eq!(c.failure(3, MemberChange::Remove(99)), "etcdserver: member not found");
    let promote_voter = MemberChange::Promote(f);
    assert_eq!(c.failure(4, promote_voter), "etcdserver: can only promote a learner member");
    let update = MemberChange::Update { id: 99, peer_urls: vec![url(99)] };
    assert_eq!(c.failure(5, update), "etcdserver: member not found");
    let bad = MemberChange::Add { peer_urls: vec!["127.0.0.1:1".into()], is_learner: false };
    assert!(c.failure(6, bad).starts_with("etcdserver: given member URLs are invalid"));

    // A learner that is down never catches up: not ready to be promoted.
    let learner = add_learner(&mut c, 7, url(4));
    c.down.insert(learner);
    c.put("more");
    assert_eq!(
        c.failure(8, MemberChange::Promote(learner)),
        "etcdserver: can only promote a learner member which is in sync with leader"
    );
    let second = MemberChange::Add { peer_urls: vec![url(5)], is_learner: true };
    assert_eq!(c.failure(9, second), "etcdserver: too many learner members in cluster");

    // One change at a time.
    let l = c.leader();
    c.node(l).change_members(10, MemberChange::Remove(learner));
    c.node(l).change_members(11, MemberChange::Add { peer_urls: vec![url(6)], is_learner: false });
    c.settle();
    assert!(c.changes.remove(&10).unwrap().is_ok());
    assert_eq!(c.changes.remove(&11).unwrap().unwrap_err(), MemberFailure::InProgress);
}

#[test]
fn strict_reconfiguration_refuses_what_would_leave_too_few_started_members() {
    let mut c = three();
    let l = c.leader();
    let f = c.follower();
    c.down.insert(f);
    c.tick(25); // past an election timeout: the leader has not heard from f since
    assert_eq!(c.leader(), l);
    let add = MemberChange::Add { peer_urls: vec![url(4)], is_learner: false };
    let text = "etcdserver: re-configuration failed due to not enough started members";
    assert_eq!(c.failure(1, add), text);
    let other = *c.nodes.keys().find(|&&id| id != l && id != f).unwrap();
    assert_eq!(c.failure(2, MemberChange::Remove(other)), text);
    // The member that is down may go: the two left are both started.
    assert!(c.change(l, 3, MemberChange::Remove(f)).is_ok());
}

#[test]
fn update_and_publish_change_the_record_only() {
    let mut c = three();
    let l = c.leader();
    let f = c.follower();
    let conf = c.nodes[&l].raft().conf_state().clone();
    let new_url = "http://10.0.0.9:2380".to_string();
    let up = c.change(l, 1, MemberChange::Update { id: f, peer_urls: vec![new_url.clone()] });
    assert_eq!(up.unwrap().member.unwrap().peer_urls, vec![new_url]);
    let publish = MemberChange::Publish {
        id: f,
        name: "infra2".into(),
        client_urls: vec!["http://10.0.0.9:2379".into()],
    };
    let published = c.change(l, 2, publish).unwrap().member.unwrap();
    assert_eq!(published.name, "infra2");
    assert_eq!(c.nodes[&l].raft().conf_state(), &conf, "no configuration change");
    c.tick(5);
    let on_f = c.nodes[&f].members().into_iter().find(|m| m.id == f).unwrap();
    assert_eq!(on_f, published, "replicated");
}

#[test]
fn a_restart_recovers_the_member_table_and_a_removed_member_knows_it() {
    let mut c = three();
    let new = add_learner(&mut c, 1, url(4));
    c.tick(30);
    let l = c.leader();
    let gone = c.follower();
    c.change(l, 2, MemberChange::Remove(gone)).expect("removed");
    c.tick(10);
    for id in [l, new, gone] {
        let before = c.nodes[&id].members();
        let store = c.nodes.remove(&id).unwrap().into_store();
        let cfg = if id == new { joining_config(id) } else { config(id, 3) };
        c.start(id, cfg, store);
        c.node(id).run_once(&mut |_| {}).unwrap(); // replays the committed log
        assert_eq!(c.nodes[&id].members(), before, "member {id} after restart");
    }
    c.removed.clear();
    c.tick(10);
    assert!(c.removed.contains(&gone), "the removed member's restart is detected");
    assert!(!c.removed.contains(&l) && !c.removed.contains(&new));
    c.down.insert(gone);
    c.tick(60);
    c.put("after-restart");
}
