//! The tiny synchronous network the protocol and membership tests run on: every message is
//! delivered in order unless a link is cut, and every Ready is persisted at once.

#![allow(dead_code)]

use raft::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

pub struct Net {
    pub nodes: BTreeMap<NodeId, Raft>,
    pub queue: VecDeque<Message>,
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub delivered: Vec<Message>,
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    pub failed_reads: BTreeMap<NodeId, Vec<u64>>,
    /// Deliver every message twice (a duplicating network).
    pub duplicate: bool,
}

pub fn config(id: NodeId) -> Config {
    let mut c = Config::new(id);
    c.rng_seed = id * 7919;
    c
}

pub fn voters(n: u64) -> BTreeSet<NodeId> {
    (1..=n).collect()
}

pub fn entries(spec: &[(Term, u64)]) -> Vec<Entry> {
    // spec: runs of (term, count), indices from 1.
    let mut out = Vec::new();
    for &(term, count) in spec {
        for _ in 0..count {
            let index = out.len() as u64 + 1;
            let data: Arc<[u8]> = format!("t{term}i{index}").into_bytes().into();
            out.push(Entry { term, index, kind: EntryKind::Normal, data });
        }
    }
    out
}

impl Net {
    pub fn new(n: u64) -> Net {
        let nodes = (1..=n).map(|id| (id, Raft::new(config(id), &voters(n)).unwrap())).collect();
        Net::with_nodes(nodes)
    }

    pub fn with_logs(logs: &[(Term, Vec<Entry>)]) -> Net {
        let n = logs.len() as u64;
        let mut nodes = BTreeMap::new();
        for (k, (term, log)) in logs.iter().enumerate() {
            let id = k as u64 + 1;
            let restored = Restored {
                hard_state: HardState { term: *term, vote: 0, commit: 0 },
                snapshot: None,
                entries: log.clone(),
            };
            nodes.insert(id, Raft::restore(config(id), &voters(n), restored).unwrap());
        }
        Net::with_nodes(nodes)
    }

    pub fn with_nodes(nodes: BTreeMap<NodeId, Raft>) -> Net {
        Net {
            nodes,
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            delivered: Vec::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            failed_reads: BTreeMap::new(),
            duplicate: false,
        }
    }

    pub fn node(&mut self, id: NodeId) -> &mut Raft {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Drains one node's Readies, persisting each at once.
    pub fn process(&mut self, id: NodeId) {
        loop {
            let r = self.nodes.get_mut(&id).unwrap();
            if !r.has_ready() {
                return;
            }
            let rd = r.ready();
            r.on_persisted(rd.number);
            self.queue.extend(rd.messages);
            self.applied.entry(id).or_default().extend(rd.committed_entries);
            self.reads.entry(id).or_default().extend(rd.read_states);
            self.failed_reads.entry(id).or_default().extend(rd.failed_reads);
        }
    }

    pub fn deliver_all(&mut self) {
        loop {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.process(id);
            }
            let Some(m) = self.queue.pop_front() else {
                return;
            };
            if self.cut.contains(&(m.from, m.to)) || !self.nodes.contains_key(&m.to) {
                continue;
            }
            self.delivered.push(m.clone());
            assert!(self.delivered.len() < 200_000, "message storm: the exchange never settles");
            let to = m.to;
            if self.duplicate {
                self.node(to).step(m.clone());
            }
            self.node(to).step(m);
        }
    }

    pub fn isolate(&mut self, id: NodeId) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for other in ids {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Ticks only `id` until it leads, delivering messages as they come.
    pub fn elect(&mut self, id: NodeId) {
        for _ in 0..200 {
            self.node(id).tick();
            self.deliver_all();
            if self.node(id).role() == Role::Leader {
                return;
            }
        }
        panic!("node {id} did not become leader");
    }

    /// Ticks every node `ticks` times, delivering after each round.
    pub fn tick_all(&mut self, ticks: u32) {
        for _ in 0..ticks {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.node(id).tick();
            }
            self.deliver_all();
        }
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes.values().filter(|r| r.role() == Role::Leader).map(|r| r.id()).collect()
    }

    pub fn applied_data(&self, id: NodeId) -> Vec<Vec<u8>> {
        self.applied
            .get(&id)
            .map(|es| {
                es.iter().filter(|e| e.kind == EntryKind::Normal).map(|e| e.data.to_vec()).collect()
            })
            .unwrap_or_default()
    }
}
