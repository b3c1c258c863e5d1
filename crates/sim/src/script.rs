//! The scripted API for scenario tests, in the spirit of the MIT 6.824 test harness: build
//! a cluster, run it for a while, cut and heal links, crash and restart servers, propose,
//! and assert on leaders and on what committed. Every method runs the checkers as it goes;
//! a cluster made with [`Cluster::new`] or [`Cluster::scripted`] panics at the first
//! violation with the seed and the last events.

use crate::cluster::{trace_line, Cluster, ClusterConfig};
use crate::network::NetConfig;
use crate::trace::fnv1a64;
use raft::{ConfChange, Index, NodeId, ProposeError, Role, Term, TransferError};
use std::fmt::Write;
use std::time::Duration;

/// How long the `check_*`/`wait_*` helpers wait before declaring failure.
const WAIT_MAX: Duration = Duration::from_secs(10);

impl Cluster {
    /// A reliable `n`-node cluster that panics at the first violation.
    pub fn new(n: usize, seed: u64) -> Cluster {
        Cluster::scripted(ClusterConfig::new(n, seed))
    }

    /// A cluster from `cfg` that panics at the first violation.
    pub fn scripted(cfg: ClusterConfig) -> Cluster {
        let mut c = Cluster::with_config(cfg);
        c.panic_on_violation = true;
        c
    }

    /// The node ids, `1..=n`.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Runs the simulation for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now_us + d.as_micros() as u64;
        self.run_until_us(until);
    }

    /// Starts or stops printing every event (for debugging a scenario).
    pub fn set_verbose(&mut self, verbose: bool) {
        self.trace.set_verbose(verbose);
    }

    /// Simulated time since boot.
    pub fn now(&self) -> Duration {
        Duration::from_micros(self.now_us)
    }

    fn trace_net(&mut self, what: &str) {
        let links = self.net.describe();
        trace_line!(self, "net {what}:{links}");
    }

    /// Cuts every link to and from `id`.
    pub fn disconnect(&mut self, id: NodeId) {
        self.net.set_connected(id, false);
        self.trace_net(&format!("disconnect n{id}"));
    }

    /// Undoes [`Cluster::disconnect`] (links cut otherwise stay cut).
    pub fn connect(&mut self, id: NodeId) {
        self.net.set_connected(id, true);
        self.trace_net(&format!("connect n{id}"));
    }

    /// True unless `id` is disconnected.
    pub fn is_connected(&self, id: NodeId) -> bool {
        self.net.is_connected(id)
    }

    /// Replaces all cuts and disconnects with a partition into `groups`: links inside a
    /// group are up, links between groups are down; a node in no group is isolated.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        self.net.heal();
        let group_of = |id: NodeId| groups.iter().position(|g| g.contains(&id));
        for from in self.ids() {
            for to in self.ids() {
                let same = from != to && group_of(from).is_some() && group_of(from) == group_of(to);
                self.net.set_link(from, to, same || from == to);
            }
        }
        self.trace_net(&format!("partition {groups:?}"));
    }

    /// Cuts the one-way link `from → to` (the other direction is untouched).
    pub fn cut_link(&mut self, from: NodeId, to: NodeId) {
        self.net.set_link(from, to, false);
        self.trace_net(&format!("cut n{from}>n{to}"));
    }

    /// Restores the one-way link `from → to`.
    pub fn restore_link(&mut self, from: NodeId, to: NodeId) {
        self.net.set_link(from, to, true);
        self.trace_net(&format!("restore n{from}>n{to}"));
    }

    /// Every link up, every node connected (crashed nodes stay down).
    pub fn heal(&mut self) {
        self.net.heal();
        self.trace_net("heal");
    }

    /// Replaces the network's behaviour (loss, duplication, delays).
    pub fn set_net(&mut self, cfg: NetConfig) {
        trace_line!(self, "net config {cfg:?}");
        self.net.cfg = cfg;
    }

    /// Switches between [`NetConfig::unreliable`] and [`NetConfig::reliable`].
    pub fn set_unreliable(&mut self, unreliable: bool) {
        self.set_net(if unreliable { NetConfig::unreliable() } else { NetConfig::reliable() });
    }

    /// Sets the chance, per write, of a power loss while the write is in flight (0: off;
    /// also voids such crashes already planned).
    pub fn set_crash_during_write(&mut self, chance: f64) {
        trace_line!(self, "crash during write chance {chance}");
        self.cfg.crash_during_write = chance;
    }

    /// Power loss on `id`: it stops, unsynced writes are lost or torn, messages in flight
    /// to it are dropped.
    pub fn crash(&mut self, id: NodeId) {
        self.crash_node(id as usize - 1);
    }

    /// Starts `id` again from its durable state (crashing it first if it is up).
    pub fn restart(&mut self, id: NodeId) {
        self.crash_node(id as usize - 1);
        self.boot(id as usize - 1);
    }

    /// True unless `id` is crashed.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes[id as usize - 1].is_up()
    }

    /// A client hands `data` to node `id`. A crashed node answers like a follower that
    /// knows no leader.
    pub fn propose_to(&mut self, id: NodeId, data: Vec<u8>) -> Result<(Index, Term), ProposeError> {
        let idx = id as usize - 1;
        let (len, hash) = (data.len(), fnv1a64(&data));
        let result = match self.nodes[idx].raft.as_mut() {
            Some(raft) => raft.propose(data),
            None => Err(ProposeError::NotLeader { leader: None }),
        };
        if let Some(line) = self.trace.line(self.now_us) {
            let _ = write!(line, "client -> n{id} propose {len}B h{:08x}: ", hash as u32);
            let _ = match &result {
                Ok((i, t)) => write!(line, "ok ({i}, t{t})"),
                Err(e) => write!(line, "{e:?}"),
            };
            self.trace.end();
        }
        self.drain_ready(idx);
        self.check_node(idx);
        result
    }

    /// An operator asks node `id` for a membership change. A crashed node answers like a
    /// follower that knows no leader.
    pub fn conf_change_to(
        &mut self,
        id: NodeId,
        cc: ConfChange,
    ) -> Result<(Index, Term), ProposeError> {
        let idx = id as usize - 1;
        let result = match self.nodes[idx].raft.as_mut() {
            Some(raft) => raft.propose_conf_change(cc.clone()),
            None => Err(ProposeError::NotLeader { leader: None }),
        };
        trace_line!(self, "operator -> n{id} conf change {:?}: {result:?}", cc.changes);
        self.drain_ready(idx);
        self.check_node(idx);
        result
    }

    /// An operator asks node `id` to hand leadership to `target`.
    pub fn transfer_leader(&mut self, id: NodeId, target: NodeId) -> Result<(), TransferError> {
        let idx = id as usize - 1;
        let result = match self.nodes[idx].raft.as_mut() {
            Some(raft) => raft.transfer_leader(target),
            None => Err(TransferError::NotLeader { leader: None }),
        };
        trace_line!(self, "operator -> n{id} transfer leadership to n{target}: {result:?}");
        self.drain_ready(idx);
        self.check_node(idx);
        result
    }

    /// Proposes to whichever up, connected node believes it leads (highest term first).
    pub fn propose_via_leader(&mut self, data: Vec<u8>) -> Option<(NodeId, Index, Term)> {
        let mut leaders = self.leaders();
        leaders.sort_by_key(|&(id, term)| (std::cmp::Reverse(term), id));
        let (id, _) = leaders.into_iter().find(|&(id, _)| self.is_connected(id))?;
        self.propose_to(id, data).ok().map(|(i, t)| (id, i, t))
    }

    /// Up nodes that believe they lead, with their terms.
    pub fn leaders(&self) -> Vec<(NodeId, Term)> {
        let up = self.nodes.iter().filter_map(|n| n.raft.as_ref().map(|r| (n.id, r)));
        up.filter(|(_, r)| r.role() == Role::Leader).map(|(id, r)| (id, r.term())).collect()
    }

    /// A leader whose term is the highest among up nodes, if there is one.
    pub fn stable_leader(&self) -> Option<NodeId> {
        let max_term = self.nodes.iter().filter_map(|n| n.raft.as_ref().map(|r| r.term())).max()?;
        self.leaders().into_iter().find(|&(_, t)| t == max_term).map(|(id, _)| id)
    }

    /// The leader of the highest term among up nodes, if no up member of its own
    /// configuration is in a higher term: the cluster has converged on it. Up nodes
    /// outside that configuration do not count: a removed member, or one whose addition
    /// never committed and that still holds it in its log, may campaign in a higher term
    /// for good without disturbing anyone (the members it asks are in the leader's lease,
    /// and the leader never writes to it) — as a real one would be refused by every peer.
    /// Every `stable_leader` is a converged leader; the liveness phase asks for this one
    /// (raft seed 4875 `--membership always`: n6, whose addition was cut off uncommitted
    /// by a partition, sat in term 16 above the leader's 15).
    pub fn converged_leader(&self) -> Option<NodeId> {
        let (id, term) =
            self.leaders().into_iter().max_by_key(|&(id, t)| (t, std::cmp::Reverse(id)))?;
        let members = self.raft(id)?.conf_state().members();
        let above = self
            .nodes
            .iter()
            .filter(|n| members.contains(&n.id))
            .filter_map(|n| n.raft.as_ref())
            .any(|r| r.term() > term);
        (!above).then_some(id)
    }

    /// Role of `id`, if up.
    pub fn role(&self, id: NodeId) -> Option<Role> {
        self.raft(id).map(|r| r.role())
    }

    /// Term of `id`, if up.
    pub fn term(&self, id: NodeId) -> Option<Term> {
        self.raft(id).map(|r| r.term())
    }

    fn connected_up(&self) -> Vec<NodeId> {
        self.ids().into_iter().filter(|&id| self.is_up(id) && self.is_connected(id)).collect()
    }

    /// Waits (up to 10 s simulated, in 500 ms steps) until the up, connected nodes have a
    /// leader; panics if two of them lead the same term or none leads. Returns the leader
    /// of the highest term.
    pub fn check_one_leader(&mut self) -> NodeId {
        for _ in 0..(WAIT_MAX.as_millis() / 500) {
            self.run_for(Duration::from_millis(500));
            let live = self.connected_up();
            let mut leaders: Vec<(Term, NodeId)> = self
                .leaders()
                .into_iter()
                .filter(|(id, _)| live.contains(id))
                .map(|(id, t)| (t, id))
                .collect();
            leaders.sort();
            if let Some(w) = leaders.windows(2).find(|w| w[0].0 == w[1].0) {
                panic!(
                    "seed {}: term {} has two leaders: n{} and n{}",
                    self.seed(),
                    w[0].0,
                    w[0].1,
                    w[1].1
                );
            }
            if let Some(&(_, id)) = leaders.last() {
                return id;
            }
        }
        panic!("seed {}: expected one leader, got none\n{}", self.seed(), self.describe_nodes());
    }

    /// Panics if an up, connected node believes it leads.
    pub fn check_no_leader(&self) {
        let live = self.connected_up();
        if let Some((id, t)) = self.leaders().into_iter().find(|(id, _)| live.contains(id)) {
            panic!(
                "seed {}: expected no leader among {live:?}, but n{id} leads term {t}",
                self.seed()
            );
        }
    }

    /// The term all up, connected nodes agree on; panics if they disagree.
    pub fn check_terms(&self) -> Term {
        let terms: Vec<(NodeId, Term)> =
            self.connected_up().into_iter().map(|id| (id, self.term(id).expect("up"))).collect();
        if terms.windows(2).any(|w| w[0].1 != w[1].1) {
            panic!("seed {}: servers disagree on term: {terms:?}", self.seed());
        }
        terms.first().map_or(0, |&(_, t)| t)
    }

    /// How many nodes' state machines (crashed ones frozen as they were) have applied
    /// `index`, and the command there.
    pub fn n_committed(&self, index: Index) -> (usize, Option<Vec<u8>>) {
        let count = self.nodes.iter().filter(|n| n.sm.applied_index >= index).count();
        let data = self.checker.applied_at(index).map(|r| r.data.to_vec());
        (count, data)
    }

    /// Runs until at least `expected` nodes applied `index` (panics after 10 s simulated);
    /// returns the command there.
    pub fn wait_committed(&mut self, index: Index, expected: usize) -> Vec<u8> {
        let deadline = self.now_us + WAIT_MAX.as_micros() as u64;
        loop {
            let (n, data) = self.n_committed(index);
            if n >= expected {
                return data.unwrap_or_default();
            }
            if self.now_us >= deadline {
                panic!(
                    "seed {}: only {n} of {expected} nodes applied index {index} within {WAIT_MAX:?}\n{}",
                    self.seed(),
                    self.describe_nodes()
                );
            }
            self.run_for(Duration::from_millis(10));
        }
    }

    /// The 6.824 `one()`: proposes `data` to the nodes in turn until a leader accepts it,
    /// then waits up to 2 s for `expected` nodes to apply it there. With `retry`, a proposal
    /// that does not commit is re-proposed; gives up (panics) after 10 s simulated.
    pub fn one(&mut self, data: &[u8], expected: usize, retry: bool) -> Index {
        let deadline = self.now_us + WAIT_MAX.as_micros() as u64;
        let n = self.nodes.len() as NodeId;
        let mut next = 0;
        while self.now_us < deadline {
            let mut accepted = None;
            for _ in 0..n {
                next = next % n + 1;
                if self.is_up(next) && self.is_connected(next) {
                    if let Ok((i, _)) = self.propose_to(next, data.to_vec()) {
                        accepted = Some(i);
                        break;
                    }
                }
            }
            let Some(index) = accepted else {
                self.run_for(Duration::from_millis(50));
                continue;
            };
            let until = self.now_us + 2_000_000;
            while self.now_us < until {
                let (count, cmd) = self.n_committed(index);
                if count >= expected && cmd.as_deref() == Some(data) {
                    return index;
                }
                self.run_for(Duration::from_millis(20));
            }
            assert!(
                retry,
                "seed {}: one({data:?}) failed to reach agreement\n{}",
                self.seed(),
                self.describe_nodes()
            );
        }
        panic!(
            "seed {}: one({data:?}) failed to reach agreement in {WAIT_MAX:?}\n{}",
            self.seed(),
            self.describe_nodes()
        );
    }

    /// One line per node: up or down, role, term, leader, commit, applied, log span.
    pub fn describe_nodes(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let net = if self.is_connected(n.id) { "" } else { " disconnected" };
            let _ = match n.raft.as_ref() {
                Some(r) => writeln!(
                    out,
                    "  n{}{net}: {:?} t{} leader {:?} commit {} applied {} log [{}..={}] persisted {}",
                    n.id,
                    r.role(),
                    r.term(),
                    r.leader(),
                    r.commit_index(),
                    n.sm.applied_index,
                    r.first_index(),
                    r.last_index(),
                    r.persisted_index()
                ),
                None => writeln!(out, "  n{}{net}: down (applied {})", n.id, n.sm.applied_index),
            };
        }
        out
    }
}

impl crate::faults::NetFaultTarget for Cluster {
    fn heal(&mut self) {
        Cluster::heal(self);
    }
    fn partition(&mut self, groups: &[&[NodeId]]) {
        Cluster::partition(self, groups);
    }
    fn cut_link(&mut self, from: NodeId, to: NodeId) {
        Cluster::cut_link(self, from, to);
    }
}

impl crate::faults::FaultTarget for Cluster {
    fn now_us(&self) -> u64 {
        Cluster::now_us(self)
    }
    fn is_up(&self, id: NodeId) -> bool {
        Cluster::is_up(self, id)
    }
    fn crash(&mut self, id: NodeId) {
        Cluster::crash(self, id);
    }
    fn restart(&mut self, id: NodeId) {
        Cluster::restart(self, id);
    }
    fn fault_leader(&self) -> Option<NodeId> {
        self.stable_leader()
    }
    fn set_net(&mut self, cfg: NetConfig) {
        Cluster::set_net(self, cfg);
    }
    fn set_crash_during_write(&mut self, chance: f64) {
        Cluster::set_crash_during_write(self, chance);
    }
}
