//! The node driver on a tiny synchronous in-memory cluster: writes are answered after
//! apply, reads after their ReadIndex, retried writes execute once, and a restarted
//! member recovers its state from snapshot + log.

use kv::{Op, PutRequest, Response};
use node::*;
use raft::{Message, NodeId, Role};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

struct Cluster {
    nodes: BTreeMap<NodeId, Node<MemStore>>,
    queue: VecDeque<Message>,
    replies: BTreeMap<RequestId, Result<Response, RequestError>>,
    down: BTreeSet<NodeId>,
}

fn config(id: NodeId, n: u64) -> NodeConfig {
    let mut c = NodeConfig::new(id, (1..=n).collect());
    c.raft.rng_seed = id * 31;
    c.snapshot_interval_entries = 5;
    c
}

impl Cluster {
    fn new(n: u64) -> Cluster {
        let nodes = (1..=n)
            .map(|id| {
                let store = MemStore::default();
                let r = store.recover();
                (id, Node::new(config(id, n), store, r).unwrap())
            })
            .collect();
        Cluster { nodes, queue: VecDeque::new(), replies: BTreeMap::new(), down: BTreeSet::new() }
    }

    fn settle(&mut self) {
        loop {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                if self.down.contains(&id) {
                    continue;
                }
                let q = &mut self.queue;
                let out =
                    self.nodes.get_mut(&id).unwrap().run_once(&mut |ms| q.extend(ms)).unwrap();
                self.replies.extend(out.replies);
            }
            let Some(m) = self.queue.pop_front() else { return };
            if !self.down.contains(&m.to) && !self.down.contains(&m.from) {
                self.nodes.get_mut(&m.to).unwrap().step(m);
            }
        }
    }

    fn tick(&mut self, n: u32) {
        for _ in 0..n {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                if !self.down.contains(&id) {
                    self.nodes.get_mut(&id).unwrap().tick();
                }
            }
            self.settle();
        }
    }

    fn leader(&self) -> NodeId {
        *self
            .nodes
            .iter()
            .find(|(id, n)| !self.down.contains(id) && n.raft().role() == Role::Leader)
            .expect("a leader")
            .0
    }

    fn put(&mut self, at: NodeId, id: RequestId, key: &str, value: &str) {
        let op = Op::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        });
        self.nodes.get_mut(&at).unwrap().submit(id, Request::Write(kv::Command::new(op)));
    }

    fn get(&mut self, at: NodeId, id: RequestId, key: &str) {
        let query = ReadQuery::Get(key.as_bytes().to_vec());
        self.nodes.get_mut(&at).unwrap().submit(id, Request::Read { query, serializable: false });
    }

    fn value(&self, id: RequestId) -> Option<Vec<u8>> {
        match self.replies.get(&id) {
            Some(Ok(Response::Get(g))) => g.kv.as_ref().map(|kv| kv.value.clone()),
            other => panic!("request {id}: {other:?}"),
        }
    }
}

#[test]
fn write_then_linearizable_read_on_leader_and_follower() {
    let mut c = Cluster::new(3);
    c.tick(60);
    let l = c.leader();
    c.put(l, 1, "k", "v1");
    c.settle();
    assert!(matches!(c.replies[&1], Ok(Response::Put(_))), "{:?}", c.replies[&1]);
    c.get(l, 2, "k");
    c.settle();
    assert_eq!(c.value(2), Some(b"v1".to_vec()));
    let f = if l == 1 { 2 } else { 1 };
    c.get(f, 3, "k");
    c.settle();
    assert_eq!(c.value(3), Some(b"v1".to_vec()));
}

#[test]
fn write_to_follower_is_refused_with_leader_hint() {
    let mut c = Cluster::new(3);
    c.tick(60);
    let l = c.leader();
    let f = if l == 1 { 2 } else { 1 };
    c.tick(1);
    c.put(f, 1, "k", "v");
    c.settle();
    assert_eq!(c.replies[&1], Err(RequestError::NotLeader { leader: Some(l) }));
}

#[test]
fn retried_write_with_session_executes_once() {
    let mut c = Cluster::new(3);
    c.tick(60);
    let l = c.leader();
    c.nodes.get_mut(&l).unwrap().submit(1, Request::Write(kv::Command::new(Op::RegisterSession)));
    c.settle();
    let Ok(Response::SessionRegistered { client_id }) = c.replies[&1] else { panic!() };
    let append = Op::Append { key: b"k".to_vec(), suffix: b"x".to_vec() };
    let cmd = kv::Command::with_session(client_id, 1, append);
    c.nodes.get_mut(&l).unwrap().submit(2, Request::Write(cmd.clone()));
    c.nodes.get_mut(&l).unwrap().submit(3, Request::Write(cmd));
    c.settle();
    assert_eq!(c.replies[&2], c.replies[&3], "the retry gets the original answer");
    c.get(l, 4, "k");
    c.settle();
    assert_eq!(c.value(4), Some(b"x".to_vec()), "appended once");
}

#[test]
fn restarted_member_recovers_from_snapshot_and_log() {
    let mut c = Cluster::new(3);
    c.tick(60);
    let l = c.leader();
    for k in 0..12u64 {
        c.put(l, 100 + k, &format!("k{k}"), &format!("v{k}"));
        c.settle();
    }
    let victim = if l == 3 { 2 } else { 3 };
    c.tick(6);
    let before = c.nodes[&victim].state().clone();
    let store = c.nodes[&victim].store().clone();
    assert!(store.recover().snapshot.is_some(), "a snapshot was taken (interval 5)");
    let restarted = Node::new(config(victim, 3), store.clone(), store.recover()).unwrap();
    c.nodes.insert(victim, restarted);
    c.tick(10);
    assert_eq!(c.nodes[&victim].state().revision(), before.revision());
    assert_eq!(c.nodes[&victim].state().get(b"k11"), before.get(b"k11"));
}
