//! The simulated cluster: nodes, disks, network, clock and checkers, all driven by one
//! event queue and one seed.
//!
//! Every node runs the same driver loop a real server would: tick on its own (drifting)
//! clock, step each delivered message, and after every input drain the core's Readies —
//! send the messages, hand the persist part to the disk, apply what committed. The
//! checkers look at each Ready as it goes by and at each node after every event.

use crate::checker::{Checker, Violation};
use crate::conftrack::ConfTrack;
use crate::disk::{DiskConfig, PendingWrite};
use crate::network::{MessageStats, NetConfig, Network};
use crate::node::{Node, StateMachine};
use crate::queue::{Event, EventQueue};
use crate::trace::{MsgFmt, Trace};
use raft::{
    ConfState, Config, Entry, HardState, Message, MessageBody, NodeId, Raft, Ready, Restored, Rng,
    Role, Snapshot, SnapshotMeta,
};
use std::collections::BTreeSet;
use std::fmt::Write;

/// Most nodes a cluster may have.
pub const MAX_NODES: usize = 9;
/// Readies drained after one event before the driver calls the core stuck.
const READY_ROUNDS_MAX: usize = 1_000;

/// Everything that shapes a cluster run besides the script or swarm that drives it.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Number of nodes, ids `1..=nodes`.
    pub nodes: usize,
    /// The founding voters are `1..=voters`; the other nodes start outside the
    /// configuration and take part once a membership change adds them.
    pub voters: usize,
    /// The one seed every random choice derives from.
    pub seed: u64,
    /// Network behaviour.
    pub net: NetConfig,
    /// Disk behaviour.
    pub disk: DiskConfig,
    /// Nominal tick period.
    pub tick_interval_us: u64,
    /// Each node's tick period is off by a fraction drawn from `[-drift, +drift]`.
    pub clock_drift: f64,
    /// Take a snapshot and compact once this many entries are applied past the last
    /// snapshot; `None` never compacts.
    pub compact_threshold_entries: Option<u64>,
    /// Raft's [`raft::Config::catch_up_entries`]: applied entries kept in memory past
    /// what followers are known to need. Small values make followers that lag behind a
    /// new leader need a fresh snapshot, which the service takes when the core asks
    /// (even with `compact_threshold_entries` `None`).
    pub catch_up_entries: u64,
    /// Chance, per write issued, that the node loses power before the write syncs (a
    /// crash aimed at the moments where durability matters). 0 turns it off.
    pub crash_during_write: f64,
    /// How long a node that lost power during a write stays down.
    pub crash_restart_us: u64,
    /// Extra bytes in each snapshot, so transfers take several chunks.
    pub snapshot_padding_bytes: u64,
    /// Raft's InstallSnapshot chunk size.
    pub snapshot_chunk_bytes: u64,
    /// Raft's minimum election timeout.
    pub election_timeout_ticks: u32,
    /// Raft's heartbeat period.
    pub heartbeat_interval_ticks: u32,
    /// Run the core with pre-vote (its default); the swarm turns it off for some seeds so
    /// the plain vote rules are exercised too.
    pub pre_vote: bool,
    /// Run the core with check-quorum (its default); off for some swarm seeds.
    pub check_quorum: bool,
    /// Format and hash every event (off only for benchmarks: then no trace hash).
    pub trace: bool,
    /// Print every event line.
    pub verbose: bool,
    /// Event lines kept for failure reports.
    pub recent_events_max: usize,
}

impl ClusterConfig {
    /// A reliable cluster of `nodes` with SSD-like disks, 10 ms ticks and 1% drift.
    pub fn new(nodes: usize, seed: u64) -> ClusterConfig {
        ClusterConfig {
            nodes,
            voters: nodes,
            seed,
            net: NetConfig::reliable(),
            disk: DiskConfig::ssd(),
            tick_interval_us: 10_000,
            clock_drift: 0.01,
            compact_threshold_entries: None,
            catch_up_entries: u64::MAX,
            crash_during_write: 0.0,
            crash_restart_us: 100_000,
            snapshot_padding_bytes: 0,
            snapshot_chunk_bytes: 1 << 20,
            election_timeout_ticks: 20,
            heartbeat_interval_ticks: 5,
            pre_vote: true,
            check_quorum: true,
            trace: true,
            verbose: false,
            recent_events_max: 40,
        }
    }
}

/// An independent random stream for one purpose, so that e.g. changing the network does
/// not reshuffle every disk latency.
pub(crate) fn stream_seed(seed: u64, purpose: u64) -> u64 {
    Rng::new(seed ^ purpose.wrapping_mul(0xA076_1D64_78BD_642F)).next_u64()
}

/// A simulated cluster. See the crate docs for the model; the scripted test API is in
/// [`crate::script`].
pub struct Cluster {
    pub(crate) cfg: ClusterConfig,
    pub(crate) now_us: u64,
    queue: EventQueue,
    pub(crate) nodes: Vec<Node>,
    voters: BTreeSet<NodeId>,
    pub(crate) net: Network,
    rng_net: Rng,
    rng_disk: Rng,
    /// Tick phases of (re)started nodes.
    rng_clock: Rng,
    pub(crate) checker: Checker,
    pub(crate) trace: Trace,
    pub(crate) stats: MessageStats,
    pub(crate) violation: Option<(Violation, u64)>,
    pub(crate) panic_on_violation: bool,
    events: u64,
    /// Snapshots taken (log compactions), on every node.
    compactions: u64,
    /// Of those, the ones the core asked for.
    compactions_asked: u64,
}

macro_rules! trace_line {
    ($self:ident, $($arg:tt)*) => {
        if let Some(line) = $self.trace.line($self.now_us) {
            let _ = write!(line, $($arg)*);
            $self.trace.end();
        }
    };
}
pub(crate) use trace_line;

impl Cluster {
    /// Boots a cluster: every node starts fresh, with its first tick at a random offset.
    pub fn with_config(cfg: ClusterConfig) -> Cluster {
        assert!((1..=MAX_NODES).contains(&cfg.nodes), "nodes must be in 1..={MAX_NODES}");
        let mut rng_clock = Rng::new(stream_seed(cfg.seed, 1));
        let nodes = (1..=cfg.nodes as NodeId)
            .map(|id| {
                let drift = (rng_clock.next_u64() as f64 / u64::MAX as f64) * 2.0 - 1.0;
                let period = cfg.tick_interval_us as f64 * (1.0 + drift * cfg.clock_drift);
                Node::new(id, (period.round() as u64).max(1))
            })
            .collect();
        let mut c = Cluster {
            now_us: 0,
            queue: EventQueue::default(),
            nodes,
            voters: (1..=cfg.voters.min(cfg.nodes) as NodeId).collect(),
            net: Network::new(cfg.nodes, cfg.net.clone()),
            rng_net: Rng::new(stream_seed(cfg.seed, 2)),
            rng_disk: Rng::new(stream_seed(cfg.seed, 3)),
            rng_clock,
            checker: Checker::default(),
            trace: Trace::new(cfg.trace, cfg.verbose, cfg.recent_events_max),
            stats: MessageStats::default(),
            violation: None,
            panic_on_violation: false,
            events: 0,
            compactions: 0,
            compactions_asked: 0,
            cfg,
        };
        trace_line!(c, "boot {} nodes seed {}", c.cfg.nodes, c.cfg.seed);
        for idx in 0..c.nodes.len() {
            c.boot(idx);
        }
        c
    }

    /// Runs events until simulated time `until_us` (or a violation). True if no invariant
    /// has been violated.
    pub fn run_until_us(&mut self, until_us: u64) -> bool {
        while self.violation.is_none() {
            let Some((t, event)) = self.queue.pop_due(until_us) else { break };
            self.now_us = t;
            self.events += 1;
            self.dispatch(event);
            if let Some(v) = self.queue.storm() {
                self.record(v);
            }
        }
        if self.violation.is_none() {
            self.now_us = self.now_us.max(until_us);
        }
        self.violation.is_none()
    }

    /// Current simulated time.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// The seed of this run.
    pub fn seed(&self) -> u64 {
        self.cfg.seed
    }

    /// Events processed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Snapshots taken so far (log compactions), on every node.
    pub fn compactions(&self) -> u64 {
        self.compactions
    }

    /// Snapshots taken because the core asked for one ([`raft::Raft::wants_snapshot`]).
    pub fn compactions_asked(&self) -> u64 {
        self.compactions_asked
    }

    /// The FNV-1a 64 hash of the trace so far.
    pub fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }

    /// The most recent event lines, oldest first.
    pub fn recent_events(&self) -> Vec<String> {
        self.trace.recent()
    }

    /// The first violation, if any, with the simulated time it was found at.
    pub fn violation(&self) -> Option<&(Violation, u64)> {
        self.violation.as_ref()
    }

    /// Message counters since the start (or the last reset).
    pub fn message_stats(&self) -> &MessageStats {
        &self.stats
    }

    /// Zeroes the message counters.
    pub fn reset_message_stats(&mut self) {
        self.stats = MessageStats::default();
    }

    /// Distinct commands committed (applied by at least one node).
    pub fn commands_committed(&self) -> u64 {
        self.checker.commands_committed()
    }

    /// The core of node `id`, if it is up (for observers in tests).
    pub fn raft(&self, id: NodeId) -> Option<&Raft> {
        self.nodes.get((id as usize).wrapping_sub(1)).and_then(|n| n.raft.as_ref())
    }

    /// The state machine of node `id` (frozen while it is down).
    pub fn state_machine(&self, id: NodeId) -> StateMachine {
        self.nodes[id as usize - 1].sm
    }

    /// The durable state on node `id`'s disk.
    pub fn durable(&self, id: NodeId) -> &crate::disk::DurableState {
        &self.nodes[id as usize - 1].disk.durable
    }

    /// A full report of the violation: invariant, details, seed and the last events.
    pub fn violation_report(&self) -> Option<String> {
        let (v, at) = self.violation.as_ref()?;
        let mut out = format!(
            "invariant violated at {}.{:03} ms (seed {}): {v}\nlast {} events:\n",
            at / 1000,
            at % 1000,
            self.cfg.seed,
            self.trace.recent().len()
        );
        for line in self.trace.recent() {
            out.push_str("  ");
            out.push_str(&line);
            out.push('\n');
        }
        Some(out)
    }

    pub(crate) fn record(&mut self, v: Violation) {
        if self.violation.is_some() {
            return;
        }
        trace_line!(self, "VIOLATION {v}");
        self.violation = Some((v, self.now_us));
        if self.panic_on_violation {
            panic!("{}", self.violation_report().unwrap_or_default());
        }
    }

    fn raft_config(&self, id: NodeId, incarnation: u64) -> Config {
        let mut c = Config::new(id);
        c.election_timeout_ticks = self.cfg.election_timeout_ticks;
        c.heartbeat_interval_ticks = self.cfg.heartbeat_interval_ticks;
        c.snapshot_chunk_bytes = self.cfg.snapshot_chunk_bytes;
        c.catch_up_entries = self.cfg.catch_up_entries;
        c.pre_vote = self.cfg.pre_vote;
        c.check_quorum = self.cfg.check_quorum;
        c.rng_seed = stream_seed(self.cfg.seed, 1_000 + id * 1_000 + incarnation);
        c
    }

    /// Starts node `idx` from its durable state (a fresh node has an empty disk).
    pub(crate) fn boot(&mut self, idx: usize) {
        let node = &self.nodes[idx];
        let (id, fresh) = (node.id, node.incarnation == 0);
        let cfg = self.raft_config(id, node.incarnation);
        let d = &node.disk.durable;
        let restored = Restored {
            hard_state: d.hard_state,
            snapshot: d.snapshot.clone(),
            entries: d.entries.clone(),
        };
        let raft = if fresh {
            Raft::new(cfg, &self.voters)
        } else {
            Raft::restore(cfg, &self.voters, restored)
        };
        let raft = match raft {
            Ok(r) => r,
            Err(e) => {
                return self.record(Violation::new(
                    "Driver contract",
                    format!("n{id} failed to start: {e}"),
                ))
            }
        };
        let sm = match StateMachine::from_snapshot(d.snapshot.as_ref()) {
            Ok(sm) => sm,
            Err(e) => {
                return self.record(Violation::new("Durability", format!("n{id}: durable {e}")))
            }
        };
        let node = &mut self.nodes[idx];
        node.incarnation += 1;
        node.seen_term = raft.term();
        node.seen_commit = raft.commit_index();
        node.leader_term_noted = None;
        node.last_ready_number = 0;
        node.last_hard_state = node.disk.durable.hard_state;
        let initial = ConfState::from_voters(self.voters.clone());
        let d = &node.disk.durable;
        node.conf = ConfTrack::from_durable(&initial, d.snapshot.as_ref(), &d.entries);
        node.sm = sm;
        node.raft = Some(raft);
        let first_tick = self.rng_clock.range(1, node.tick_period_us + 1);
        let incarnation = node.incarnation;
        self.queue.push(self.now_us + first_tick, Event::Tick { node: idx, incarnation });
        trace_line!(
            self,
            "n{id} {} (incarnation {incarnation})",
            if fresh { "boots" } else { "restarts" }
        );
        if let Err(v) = self.check_restored(idx) {
            return self.record(v);
        }
        self.drain_ready(idx);
        self.check_node(idx);
    }

    /// Durable state never goes backwards: the restored core holds at least what the disk
    /// gave it.
    fn check_restored(&self, idx: usize) -> Result<(), Violation> {
        let node = &self.nodes[idx];
        let (raft, d) = (node.raft.as_ref().expect("just booted"), &node.disk.durable);
        let hs = raft.hard_state();
        let dh = d.hard_state;
        let last = d.last_index();
        let bad = if hs.term < dh.term || (hs.term == dh.term && dh.vote != 0 && hs.vote != dh.vote)
        {
            Some(format!("restored hard state {hs:?} is behind the durable {dh:?}"))
        } else if raft.last_index() < last || raft.term_at(last) != d.term_at(last) {
            Some(format!(
                "restored log ends at {} with term {:?} at {last}, but the durable log ends at {last} with term {:?}",
                raft.last_index(),
                raft.term_at(last),
                d.term_at(last)
            ))
        } else {
            None
        };
        bad.map_or(Ok(()), |b| {
            Err(Violation::new("Durability (restart)", format!("n{}: {b}", node.id)))
        })
    }

    /// Power loss on node `idx`.
    pub(crate) fn crash_node(&mut self, idx: usize) {
        let node = &mut self.nodes[idx];
        if node.raft.take().is_none() {
            return;
        }
        node.incarnation += 1;
        let id = node.id;
        match node.disk.crash(&mut self.rng_disk, self.cfg.disk.torn_write) {
            Ok(d) => trace_line!(
                self,
                "n{id} crashes: {} unsynced writes lost, {}/{} records of the oldest kept",
                d.pending_writes,
                d.torn_records_kept,
                d.torn_records_total
            ),
            Err(e) => self.record(Violation::new("Durability (crash)", format!("n{id}: {e}"))),
        }
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Tick { node, incarnation } => self.on_tick(node, incarnation),
            Event::Deliver { msg, incarnation } => self.on_deliver(msg, incarnation),
            Event::DiskSync { node, incarnation } => self.on_disk_sync(node, incarnation),
            Event::PowerLoss { node, incarnation } => self.on_power_loss(node, incarnation),
            Event::Restart { node, incarnation } => {
                let n = &self.nodes[node];
                if n.incarnation == incarnation && !n.is_up() {
                    self.boot(node);
                }
            }
        }
    }

    fn on_power_loss(&mut self, idx: usize, incarnation: u64) {
        // Checked again here: turning the fault off also voids crashes already planned.
        if !self.live(idx, incarnation) || self.cfg.crash_during_write <= 0.0 {
            return;
        }
        trace_line!(self, "n{} loses power with a write in flight", self.nodes[idx].id);
        self.crash_node(idx);
        let incarnation = self.nodes[idx].incarnation;
        self.queue.push(
            self.now_us + self.cfg.crash_restart_us,
            Event::Restart { node: idx, incarnation },
        );
    }

    fn live(&self, idx: usize, incarnation: u64) -> bool {
        let n = &self.nodes[idx];
        n.incarnation == incarnation && n.is_up()
    }

    fn on_tick(&mut self, idx: usize, incarnation: u64) {
        if !self.live(idx, incarnation) {
            return;
        }
        let node = &mut self.nodes[idx];
        node.raft.as_mut().expect("live").tick();
        let (id, period) = (node.id, node.tick_period_us);
        self.queue.push(self.now_us + period, Event::Tick { node: idx, incarnation });
        trace_line!(self, "n{id} tick");
        self.drain_ready(idx);
        self.check_node(idx);
    }

    fn on_deliver(&mut self, msg: Message, incarnation: u64) {
        let idx = msg.to as usize - 1;
        let fate = if !self.net.link_up(msg.from, msg.to) {
            "dropped: link cut"
        } else if !self.live(idx, incarnation) {
            "dropped: receiver crashed"
        } else {
            ""
        };
        trace_line!(self, "n{} <- n{} {} {fate}", msg.to, msg.from, MsgFmt(&msg));
        if !fate.is_empty() {
            self.stats.dropped += 1;
            return;
        }
        self.stats.on_deliver(&msg);
        self.nodes[idx].raft.as_mut().expect("live").step(msg);
        self.drain_ready(idx);
        self.check_node(idx);
    }

    fn on_disk_sync(&mut self, idx: usize, incarnation: u64) {
        if !self.live(idx, incarnation) {
            return;
        }
        let node = &mut self.nodes[idx];
        let id = node.id;
        let number = match node.disk.complete_next() {
            Ok(n) => n,
            Err(e) => return self.record(Violation::new("Driver contract", format!("n{id}: {e}"))),
        };
        if !self.cfg.disk.ack_before_sync {
            node.raft.as_mut().expect("live").on_persisted(number);
        }
        trace_line!(self, "n{id} synced ready #{number}");
        self.drain_ready(idx);
        self.check_node(idx);
    }

    /// Takes Readies until the core has nothing more for the driver.
    pub(crate) fn drain_ready(&mut self, idx: usize) {
        for _ in 0..READY_ROUNDS_MAX {
            let Some(raft) = self.nodes[idx].raft.as_mut() else { return };
            if !raft.has_ready() {
                return;
            }
            let rd = raft.ready();
            self.handle_ready(idx, rd);
            if self.violation.is_some() {
                return;
            }
        }
        let id = self.nodes[idx].id;
        self.record(Violation::new(
            "Driver contract",
            format!("n{id} still has a Ready after {READY_ROUNDS_MAX} rounds without new input"),
        ));
    }

    fn handle_ready(&mut self, idx: usize, rd: Ready) {
        self.trace_ready(idx, &rd);
        let checked = self.check_ready(idx, &rd);
        if let Err(v) = checked {
            return self.record(v);
        }
        let Ready { number, messages, hard_state, snapshot, entries, committed_entries, .. } = rd;
        for m in messages {
            self.send(m);
        }
        let write =
            PendingWrite { number, hard_state, snapshot: snapshot.clone(), entries, done_at_us: 0 };
        let persisted_now = match self.persist(idx, write) {
            Ok(now) => now,
            Err(v) => return self.record(v),
        };
        if let Some(s) = &snapshot {
            if let Err(v) = self.restore_state_machine(idx, s) {
                return self.record(v);
            }
        }
        for e in &committed_entries {
            if let Err(v) = self.apply(idx, e) {
                return self.record(v);
            }
        }
        if persisted_now {
            self.nodes[idx].raft.as_mut().expect("live").on_persisted(number);
        }
        if let Err(v) = self.maybe_compact(idx) {
            self.record(v);
        }
    }

    fn trace_ready(&mut self, idx: usize, rd: &Ready) {
        let Some(line) = self.trace.line(self.now_us) else { return };
        let _ = write!(line, "n{} ready #{}", self.nodes[idx].id, rd.number);
        if let Some(hs) = rd.hard_state {
            let _ = write!(line, " hs(t{} v{} c{})", hs.term, hs.vote, hs.commit);
        }
        if let Some(s) = &rd.snapshot {
            let _ = write!(line, " snap({},{})", s.meta.index, s.meta.term);
        }
        if let (Some(a), Some(b)) = (rd.entries.first(), rd.entries.last()) {
            let _ = write!(line, " persist[{}..={}]t{}-{}", a.index, b.index, a.term, b.term);
        }
        if let (Some(a), Some(b)) = (rd.committed_entries.first(), rd.committed_entries.last()) {
            let _ = write!(line, " apply[{}..={}]", a.index, b.index);
        }
        let _ = write!(line, " msgs{}", rd.messages.len());
        if !rd.read_states.is_empty() || !rd.failed_reads.is_empty() {
            let _ = write!(line, " reads{}/{}", rd.read_states.len(), rd.failed_reads.len());
        }
        self.trace.end();
    }

    /// Checks on a Ready before the driver acts on it: numbering, hard-state monotonicity
    /// (one vote per term), Log Matching of new entries, persist-before-reply.
    fn check_ready(&mut self, idx: usize, rd: &Ready) -> Result<(), Violation> {
        let node = &mut self.nodes[idx];
        let id = node.id;
        if rd.number <= node.last_ready_number {
            let msg = format!(
                "n{id} Ready #{} follows #{}: numbers must increase",
                rd.number, node.last_ready_number
            );
            return Err(Violation::new("Driver contract", msg));
        }
        node.last_ready_number = rd.number;
        if let Some(hs) = rd.hard_state {
            check_hard_state_step(id, node.last_hard_state, hs)?;
            node.last_hard_state = hs;
        }
        let raft = node.raft.as_ref().expect("live");
        if let Some(s) = &rd.snapshot {
            node.conf.on_snapshot(s);
        }
        node.conf.on_entries(&rd.entries);
        if let Some(first) = rd.entries.first() {
            let prev_term = raft.term_at(first.index - 1).ok_or_else(|| {
                let msg = format!(
                    "n{id} persists entries from {} but has no term at {}",
                    first.index,
                    first.index - 1
                );
                Violation::new("Log Matching", msg)
            })?;
            self.checker.on_entries(id, &rd.entries, prev_term)?;
        }
        for m in &rd.messages {
            check_reply_durable(node, m)?;
        }
        Ok(())
    }

    fn send(&mut self, m: Message) {
        let (from, to) = (m.from, m.to);
        if to == 0 || to as usize > self.nodes.len() || to == from {
            let details = format!("n{from} sends {} to n{to}, which is not a peer", m.kind_name());
            return self.record(Violation::new("Driver contract", details));
        }
        self.stats.on_send(&m);
        let cfg = &self.net.cfg;
        let (fate, copies) = if !self.net.link_up(from, to) {
            ("cut", 0)
        } else if cfg.loss > 0.0 && self.rng_net.chance(cfg.loss) {
            ("lost", 0)
        } else if cfg.duplicate > 0.0 && self.rng_net.chance(cfg.duplicate) {
            ("dup", 2)
        } else {
            ("", 1)
        };
        let mut delays = [0u64; 2];
        let reply = crate::network::is_reply(&m);
        for d in delays.iter_mut().take(copies) {
            *d = self.net.cfg.sample_delay_us(&mut self.rng_net, reply);
        }
        trace_line!(
            self,
            "n{from} -> n{to} {} {fate} +{}us{}",
            MsgFmt(&m),
            delays[0],
            if copies == 2 { format!(" +{}us", delays[1]) } else { String::new() }
        );
        if copies == 0 {
            self.stats.dropped += 1;
            return;
        }
        let incarnation = self.nodes[to as usize - 1].incarnation;
        if copies == 2 {
            self.queue
                .push(self.now_us + delays[1], Event::Deliver { msg: m.clone(), incarnation });
        }
        self.queue.push(self.now_us + delays[0], Event::Deliver { msg: m, incarnation });
    }

    /// Hands a Ready's persist part to the disk. True if it is durable already (so the
    /// driver acknowledges it at once).
    fn persist(&mut self, idx: usize, mut w: PendingWrite) -> Result<bool, Violation> {
        let node = &mut self.nodes[idx];
        let empty = w.records() == 0;
        if !node.disk.has_pending() && (empty || self.cfg.disk.is_instant()) {
            let id = node.id;
            node.disk
                .durable
                .apply(&w, usize::MAX)
                .map_err(|e| Violation::new("Driver contract", format!("n{id}: {e}")))?;
            return Ok(true);
        }
        let latency = if empty { 0 } else { self.cfg.disk.sample_latency_us(&mut self.rng_disk) };
        w.done_at_us = (self.now_us + latency).max(node.disk.last_done_at_us());
        let done = w.done_at_us;
        node.disk.submit(w);
        let incarnation = node.incarnation;
        self.queue.push(done, Event::DiskSync { node: idx, incarnation });
        let p = self.cfg.crash_during_write;
        if !empty && p > 0.0 && self.rng_disk.chance(p) {
            let at = self.now_us + self.rng_disk.range(0, latency + 1);
            self.queue.push(at, Event::PowerLoss { node: idx, incarnation });
        }
        // The planted bug: acknowledge a write that is still in flight.
        Ok(self.cfg.disk.ack_before_sync)
    }

    fn restore_state_machine(&mut self, idx: usize, snap: &Snapshot) -> Result<(), Violation> {
        let node = &mut self.nodes[idx];
        let id = node.id;
        let sm = StateMachine::decode(&snap.data).map_err(|e| {
            Violation::new("State Machine Safety", format!("n{id} receives a snapshot whose {e}"))
        })?;
        if sm.applied_index != snap.meta.index {
            let msg = format!(
                "n{id} snapshot meta says index {} but its data is at {}",
                snap.meta.index, sm.applied_index
            );
            return Err(Violation::new("State Machine Safety", msg));
        }
        if sm.applied_index < node.sm.applied_index {
            let msg = format!(
                "n{id} restores a snapshot at {} after applying up to {}: its state would go back",
                sm.applied_index, node.sm.applied_index
            );
            return Err(Violation::new("State Machine Safety", msg));
        }
        self.checker.check_snapshot(id, &snap.meta, &sm)?;
        node.sm = sm;
        trace_line!(self, "n{id} state machine restored from snapshot at {}", snap.meta.index);
        Ok(())
    }

    fn apply(&mut self, idx: usize, e: &Entry) -> Result<(), Violation> {
        let node = &mut self.nodes[idx];
        let id = node.id;
        let commit = node.raft.as_ref().expect("live").commit_index();
        if e.index > commit {
            let msg = format!("n{id} applies index {} beyond its commit index {commit}", e.index);
            return Err(Violation::new("State Machine Safety", msg));
        }
        if e.index != node.sm.applied_index + 1 {
            let msg = format!(
                "n{id} applies index {} after {}: applying must be dense",
                e.index, node.sm.applied_index
            );
            return Err(Violation::new("State Machine Safety", msg));
        }
        let chain = self.checker.on_apply(id, &node.sm, e)?;
        node.sm.applied_index = e.index;
        node.sm.chain = chain;
        node.sm.commands += u64::from(e.kind == raft::EntryKind::Normal);
        Ok(())
    }

    /// The service side of log compaction: once enough is applied, or when the core
    /// asks for a snapshot, write one durably, then tell the core to discard the log up
    /// to it.
    fn maybe_compact(&mut self, idx: usize) -> Result<(), Violation> {
        let threshold = self.cfg.compact_threshold_entries;
        let node = &mut self.nodes[idx];
        let id = node.id;
        let Some(raft) = node.raft.as_mut() else { return Ok(()) };
        let applied = node.sm.applied_index;
        let covered = raft.snapshot_meta().index;
        let due = threshold.is_some_and(|t| applied >= covered + t.max(1));
        if !(due || (raft.wants_snapshot() && applied > covered)) {
            return Ok(());
        }
        let term = raft.term_at(applied).ok_or_else(|| {
            Violation::new(
                "Core observer consistency",
                format!("n{id} applied {applied} but has no term for it"),
            )
        })?;
        let conf = raft.conf_at(applied);
        let data = node.sm.encode(self.cfg.snapshot_padding_bytes).into();
        let snap = Snapshot { meta: SnapshotMeta { index: applied, term, conf }, data };
        node.disk.durable.install_snapshot(&snap);
        raft.compact(snap).map_err(|e| {
            Violation::new("Core contract", format!("n{id} refused compaction at {applied}: {e}"))
        })?;
        trace_line!(self, "n{id} compacts through ({applied}, t{term})");
        self.compactions += 1;
        self.compactions_asked += u64::from(!due);
        Ok(())
    }

    /// Checks on one node after an event: terms and commit never go back while up, commit
    /// stays within the log, Election Safety and Leader Completeness when it becomes leader.
    pub(crate) fn check_node(&mut self, idx: usize) {
        if self.violation.is_some() {
            return;
        }
        if let Err(v) = self.check_node_inner(idx).and_then(|()| self.check_match_indices(idx)) {
            self.record(v);
        }
    }

    fn check_node_inner(&mut self, idx: usize) -> Result<(), Violation> {
        let node = &mut self.nodes[idx];
        let id = node.id;
        let Some(raft) = node.raft.as_ref() else { return Ok(()) };
        node.conf.check(id, raft)?;
        let (term, commit, last) = (raft.term(), raft.commit_index(), raft.last_index());
        let bad = |what: &'static str, details: String| -> Result<(), Violation> {
            Err(Violation::new(what, format!("n{id} {details}")))
        };
        if term < node.seen_term {
            return bad("Term monotonic", format!("term went from {} to {term}", node.seen_term));
        }
        if commit < node.seen_commit {
            return bad(
                "Commit monotonic",
                format!("commit index went from {} to {commit} while up", node.seen_commit),
            );
        }
        if commit > last {
            return bad(
                "Commit bounded",
                format!("commit index {commit} is beyond its last index {last}"),
            );
        }
        if raft.applied_index() != node.sm.applied_index {
            let details = format!(
                "reports applied {} but handed out entries up to {}",
                raft.applied_index(),
                node.sm.applied_index
            );
            return bad("Core observer consistency", details);
        }
        node.seen_term = term;
        let commit_advanced = commit > node.seen_commit;
        node.seen_commit = commit;
        if raft.role() == Role::Leader && node.leader_term_noted != Some(term) {
            node.leader_term_noted = Some(term);
            trace_line!(self, "n{id} becomes leader of term {term} (last index {last})");
            self.checker.on_leader(id, term)?;
            self.checker.check_leader_complete(id, raft)?;
        }
        if raft.role() == Role::Leader && commit_advanced && raft.term_at(commit) != Some(term) {
            // Raft §5.4.2 / Figure 8: a leader commits only by counting replicas of an
            // entry of its own term; earlier entries commit with it, never on their own.
            return bad(
                "Figure 8 (leader commits only current-term entries)",
                format!(
                    "leads term {term} and advanced its commit index to {commit}, an entry of term {:?}",
                    raft.term_at(commit)
                ),
            );
        }
        let new_high = commit_advanced
            && raft.term_at(commit).is_some_and(|t| self.checker.on_commit(commit, t));
        if new_high {
            for n in &self.nodes {
                match n.raft.as_ref() {
                    Some(r) if r.role() == Role::Leader => {
                        self.checker.check_leader_complete(n.id, r)?
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

impl Cluster {
    /// A leader's record of what a follower acknowledged must hold while both are in the
    /// same term: the follower acknowledged only durable entries matching the leader's, and
    /// must never drop them (Raft §5.3: truncate only on a conflict). Checked for node
    /// `idx` against every leader (if it follows) or every follower (if it leads).
    fn check_match_indices(&self, idx: usize) -> Result<(), Violation> {
        let Some(me) = self.nodes[idx].raft.as_ref() else { return Ok(()) };
        for other in &self.nodes {
            let Some(them) = other.raft.as_ref() else { continue };
            if them.id() == me.id() || them.term() != me.term() {
                continue;
            }
            let (leader, follower) = match (me.role(), them.role()) {
                (Role::Leader, _) => (me, them),
                (_, Role::Leader) => (them, me),
                _ => continue,
            };
            let Some(pr) = leader.progress(follower.id()) else { continue };
            let m = pr.match_index;
            if m <= follower.snapshot_meta().index {
                continue;
            }
            let (lt, ft) = (leader.term_at(m), follower.term_at(m));
            if lt.is_some() && lt != ft {
                return Err(Violation::new(
                    "Acknowledged entries kept (truncate only on conflict)",
                    format!(
                        "n{} (leader, term {}) records n{} as holding index {m} (term {lt:?}), but n{} holds {ft:?} there (last index {})",
                        leader.id(),
                        leader.term(),
                        follower.id(),
                        follower.id(),
                        follower.last_index()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A node's successive hard states: the term never goes back and, within a term, a vote
/// once cast never changes (one vote per term is what makes Election Safety hold).
fn check_hard_state_step(id: NodeId, prev: HardState, next: HardState) -> Result<(), Violation> {
    if next.term < prev.term {
        let msg = format!("n{id} writes term {} after term {}", next.term, prev.term);
        return Err(Violation::new("Durable state monotonic", msg));
    }
    if next.term == prev.term && prev.vote != 0 && next.vote != prev.vote {
        let msg = format!(
            "n{id} votes for n{} in term {} after voting for n{}",
            next.vote, next.term, prev.vote
        );
        return Err(Violation::new("Election Safety (one vote per term)", msg));
    }
    Ok(())
}

/// Persist before reply: an answer that depends on durable state may only leave once the
/// disk holds that state.
fn check_reply_durable(node: &Node, m: &Message) -> Result<(), Violation> {
    let d = &node.disk.durable;
    let (hs, last) = (d.hard_state, d.last_index());
    let problem = match m.body {
        MessageBody::VoteResp { reject: false } => {
            let durable = hs.term > m.term || (hs.term == m.term && hs.vote == m.to);
            (!durable).then(|| {
                format!("grants its vote to n{} in term {}; durable: {hs:?}", m.to, m.term)
            })
        }
        MessageBody::AppendResp { index, reject: None } => {
            // A torn write that kept entries of a newer term but lost the hard state
            // written after them makes a restart adopt the entries' term (Raft::restore):
            // the durable term is the larger of the two (seed 773 --membership always).
            let durable_term = hs.term.max(d.term_at(last).unwrap_or(0));
            let durable = durable_term >= m.term && last >= index;
            (!durable).then(|| {
                let (t, dt) = (m.term, durable_term);
                format!("acks up to {index} in term {t}; durable: up to {last} in term {dt}")
            })
        }
        MessageBody::SnapshotResp { snapshot_index, done: true, .. } => (last < snapshot_index)
            .then(|| format!("acks snapshot {snapshot_index}; durable: up to {last}")),
        _ => None,
    };
    match problem {
        None => Ok(()),
        Some(p) => {
            let details = format!("n{} {p}", node.id);
            Err(Violation::new("Durability (persist before reply)", details))
        }
    }
}
