//! Swarm testing: each seed picks its own cluster size, fault mix and intensities (so a
//! few hundred seeds cover very different runs), drives the cluster through a safety phase
//! with faults and client load, then a liveness phase: heal everything and require a
//! leader, and every proposal made in that phase applied on every node, within bounds.

use crate::checker::{command_hash, Violation};
use crate::cluster::{stream_seed, Cluster, ClusterConfig, MAX_NODES};
use crate::disk::DiskConfig;
use crate::faults::{self, Agenda, FaultEffect, FaultParams, FaultPlan, SafetyPhase, Timed};
use crate::network::NetConfig;
use raft::{ConfChange, ConfChangeKind, ConfChangeSingle, Index, NodeId, ProposeError, Rng, Term};
use std::fmt;

/// After the heal, a leader must be elected within this.
pub const LIVENESS_LEADER_BOUND_US: u64 = 10_000_000;
/// After the heal, every liveness-phase proposal must be applied on every node within this.
pub const LIVENESS_COMMIT_BOUND_US: u64 = 30_000_000;
/// Chance that a change adding voters is followed at once by a split between the leader
/// with the new voters and the rest.
const SPLIT_AT_CHANGE: f64 = 0.3;
/// Mean length of that split.
const SPLIT_AT_CHANGE_US: u64 = 2_000_000;
/// Proposals made in the liveness phase.
pub const LIVENESS_PROPOSALS: u64 = 20;
/// A liveness-phase proposal not committed after this is proposed again.
const LIVENESS_RETRY_US: u64 = 2_000_000;

/// The kinds of network fault a seed may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PartitionKind {
    /// Cut the current leader off from everyone.
    IsolateLeader,
    /// A random minority against the majority.
    MinorityMajority,
    /// Every node in one of two or three random groups.
    RandomGroups,
    /// Some one-way links cut (asymmetric reachability).
    OneWay,
    /// Two sides that only a bridge node sees both of (A–B–C).
    Bridge,
    /// Each link cut independently at random.
    RandomLinks,
}

pub(crate) const ALL_KINDS: [PartitionKind; 6] = [
    PartitionKind::IsolateLeader,
    PartitionKind::MinorityMajority,
    PartitionKind::RandomGroups,
    PartitionKind::OneWay,
    PartitionKind::Bridge,
    PartitionKind::RandomLinks,
];

/// Which swarm seeds change their membership (both workloads; `sim --membership`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Membership {
    /// As each seed draws it: about two raft seeds in five (half of those with pre-vote),
    /// three kv seeds in ten.
    #[default]
    Random,
    /// Every seed gets spare members and an operator. The other draws of a seed stay
    /// what they are, so a seed that has membership changes under `random` runs exactly
    /// the same (same trace hash); a raft seed that drew no pre-vote runs with it, as the
    /// core relies on pre-vote to keep a removed member that missed its removal from
    /// raising terms (the service drops its messages instead).
    Always,
    /// No seed changes its membership.
    Never,
}

impl Membership {
    /// What a seed whose own draw said `drawn` does.
    pub fn decide(self, drawn: bool) -> bool {
        match self {
            Membership::Random => drawn,
            Membership::Always => true,
            Membership::Never => false,
        }
    }

    /// The CLI flag that selects it (empty for the default), for replay commands.
    pub fn flag(self) -> &'static str {
        match self {
            Membership::Random => "",
            Membership::Always => " --membership always",
            Membership::Never => " --membership never",
        }
    }
}

/// Everything a seed decides about its run.
#[derive(Clone, Debug)]
pub struct SwarmParams {
    /// The seed.
    pub seed: u64,
    /// Cluster shape, network, disk, clock and compaction.
    pub cluster: ClusterConfig,
    /// Concurrent clients.
    pub clients: usize,
    /// Mean time between one client's proposals.
    pub propose_interval_us: u64,
    /// The safety phase's network faults and crashes, and its length.
    pub faults: FaultParams,
    /// Mean time between membership operations (changes and leadership transfers);
    /// `None`: the membership stays as founded.
    pub membership_interval_us: Option<u64>,
}

/// Raft's catch-up allowance for a seed: off (every entry kept until a snapshot covers
/// it) in a quarter of seeds, the server's default in a quarter, and small in half, so
/// followers that lag behind a new leader often need a snapshot the core asks for.
pub(crate) fn draw_catch_up(r: &mut Rng) -> u64 {
    match r.range(0, 4) {
        0 => u64::MAX,
        1 => raft::Config::new(1).catch_up_entries,
        2 => r.range(0, 8),
        _ => r.range(8, 200),
    }
}

pub(crate) fn permille(rng: &mut Rng, max: u64) -> f64 {
    rng.range(0, max + 1) as f64 / 1000.0
}

impl SwarmParams {
    /// Draws a seed's parameters.
    pub fn from_seed(seed: u64) -> SwarmParams {
        SwarmParams::from_seed_with(seed, Membership::Random)
    }

    /// Draws a seed's parameters, with membership changes as `membership` says.
    pub fn from_seed_with(seed: u64, membership: Membership) -> SwarmParams {
        let mut r = Rng::new(stream_seed(seed, 0x0053_5741_524d));
        let nodes = r.range(3, 8) as usize;
        let mut cluster = ClusterConfig::new(nodes, seed);
        cluster.net = draw_net(&mut r);
        draw_long_delay(&mut cluster.net, seed, 0x4c4f_4e47);
        cluster.disk = draw_disk(&mut r);
        cluster.clock_drift = permille(&mut r, 50);
        cluster.compact_threshold_entries = match r.range(0, 4) {
            0 => None,
            1 => Some(r.range(10, 100)),
            2 => Some(r.range(100, 500)),
            _ => Some(r.range(500, 2_000)),
        };
        cluster.snapshot_padding_bytes = r.range(0, 2_000);
        cluster.snapshot_chunk_bytes = [64, 512, 1 << 20][r.range(0, 3) as usize];
        cluster.crash_during_write = if r.chance(0.5) { 0.0 } else { permille(&mut r, 3) };
        cluster.crash_restart_us = r.range(10_000, 2_000_000);
        let clients = r.range(1, 5) as usize;
        let proposals_per_second = r.range(9, 41);
        let mut kinds: Vec<PartitionKind> =
            ALL_KINDS.iter().copied().filter(|_| r.chance(0.6)).collect();
        if kinds.is_empty() {
            kinds.push(ALL_KINDS[r.range(0, ALL_KINDS.len() as u64) as usize]);
        }
        // Drawn from their own stream, so the other parameters of a seed stay as they were.
        let mut protocol = Rng::new(stream_seed(seed, 0x0050_5245_564f));
        cluster.pre_vote = !protocol.chance(0.25);
        cluster.check_quorum = !protocol.chance(0.25);
        // Drawn from their own stream, so the other parameters stay as they were.
        cluster.catch_up_entries = draw_catch_up(&mut Rng::new(stream_seed(seed, 0x4341_5443)));
        // Membership changes in half of the seeds that run pre-vote: without pre-vote, a
        // removed member that missed its removal bumps terms forever, which the service
        // prevents by refusing messages from removed members, not the core.
        let mut member = Rng::new(stream_seed(seed, 0x004d_454d_4245));
        let drawn = cluster.pre_vote && member.chance(0.5);
        let membership = membership.decide(drawn);
        if membership {
            cluster.pre_vote = true;
            cluster.voters = nodes;
            cluster.nodes = (nodes + member.range(1, 3) as usize).min(MAX_NODES);
        }
        SwarmParams {
            seed,
            cluster,
            clients,
            propose_interval_us: clients as u64 * 1_000_000 / proposals_per_second,
            // Drawn in this order (a struct literal's fields evaluate in order).
            faults: FaultParams {
                partition_interval_us: (!r.chance(0.15)).then(|| r.range(500_000, 20_000_000)),
                partition_duration_us: r.range(300_000, 15_000_000),
                partition_kinds: kinds,
                crash_interval_us: (!r.chance(0.15)).then(|| r.range(1_000_000, 30_000_000)),
                crash_max_at_once: r.range(1, nodes as u64 + 1) as usize,
                all_crash: permille(&mut r, 200),
                restart_delay_us: r.range(100_000, 10_000_000),
                safety_duration_us: r.range(120_000_000, 180_000_001),
            },
            membership_interval_us: membership.then(|| member.range(500_000, 10_000_000)),
        }
    }
}

pub(crate) fn draw_net(r: &mut Rng) -> NetConfig {
    let delay_min_us = r.range(100, 2_000);
    NetConfig {
        loss: if r.chance(0.25) { 0.0 } else { permille(r, 200) },
        duplicate: if r.chance(0.5) { 0.0 } else { permille(r, 50) },
        delay_min_us,
        delay_max_us: delay_min_us + r.range(500, 30_000),
        long_delay: if r.chance(0.5) { 0.0 } else { permille(r, 50) },
        long_delay_max_us: r.range(50_000, 500_000),
        reply_delay: 0.0,
        reply_delay_min_us: 0,
        reply_delay_max_us: 0,
    }
}

/// Share of swarm seeds (both workloads) on the long-delay network.
pub const LONG_DELAY_SEEDS: f64 = 0.15;

/// Turns the long-delay network on for a share of seeds: half to seven tenths of the
/// replies held back 0.2-2 s, on top of the drawn loss and delays. Drawn from a stream
/// of its own (`purpose` differs per workload), so every other seed runs as before.
pub(crate) fn draw_long_delay(net: &mut NetConfig, seed: u64, purpose: u64) {
    let mut r = Rng::new(stream_seed(seed, purpose));
    if r.chance(LONG_DELAY_SEEDS) {
        let long = NetConfig::long_delay(r.range(500, 701) as f64 / 1000.0);
        net.reply_delay = long.reply_delay;
        net.reply_delay_min_us = long.reply_delay_min_us;
        net.reply_delay_max_us = long.reply_delay_max_us;
    }
}

pub(crate) fn draw_disk(r: &mut Rng) -> DiskConfig {
    // Most seeds get an SSD; some a slow disk, whose long sync windows make crashes hit
    // servers with writes in flight more often.
    let slow_disk = r.chance(0.3);
    let sync_min_us = if slow_disk { r.range(2_000, 10_000) } else { r.range(20, 500) };
    let spread_max_us = if slow_disk { 40_000 } else { 5_000 };
    DiskConfig {
        sync_min_us,
        sync_max_us: sync_min_us + r.range(0, spread_max_us),
        slow_sync: permille(r, 20),
        slow_sync_max_us: r.range(5_000, 50_000),
        torn_write: permille(r, 1000),
        ack_before_sync: false,
    }
}

impl fmt::Display for SwarmParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.cluster;
        let ms = |us: u64| us / 1000;
        writeln!(
            f,
            "seed {}: {} nodes, {} clients every ~{} ms, safety phase {} s",
            self.seed,
            c.nodes,
            self.clients,
            ms(self.propose_interval_us),
            self.faults.safety_duration_us / 1_000_000
        )?;
        writeln!(f, "  protocol: pre-vote {}, check-quorum {}", c.pre_vote, c.check_quorum)?;
        if let Some(every) = self.membership_interval_us {
            writeln!(
                f,
                "  membership: {} founding voters of {} nodes, a change or transfer every ~{} ms",
                c.voters,
                c.nodes,
                ms(every)
            )?;
        }
        let n = &c.net;
        writeln!(
            f,
            "  net: loss {:.3} dup {:.3} delay {}..{} us, long {:.3} up to {} ms{}",
            n.loss,
            n.duplicate,
            n.delay_min_us,
            n.delay_max_us,
            n.long_delay,
            ms(n.long_delay_max_us),
            n.describe_long_delay()
        )?;
        let d = &c.disk;
        writeln!(
            f,
            "  disk: sync {}..{} us, slow {:.3} up to {} ms, torn {:.3}, crash during write {:.4} (down {} ms); drift {:.3}; compact {:?}, catch-up {}, snapshot +{} B in {} B chunks",
            d.sync_min_us, d.sync_max_us, d.slow_sync, ms(d.slow_sync_max_us), d.torn_write,
            c.crash_during_write, ms(c.crash_restart_us), c.clock_drift,
            c.compact_threshold_entries, c.catch_up_entries, c.snapshot_padding_bytes, c.snapshot_chunk_bytes
        )?;
        write!(f, "{}", self.faults.describe(""))
    }
}

/// A failed seed: the violation and the events leading to it.
#[derive(Clone, Debug)]
pub struct Failure {
    /// What broke.
    pub violation: Violation,
    /// Simulated time of the failure.
    pub time_us: u64,
    /// The last event lines, oldest first.
    pub recent_events: Vec<String>,
}

/// What one seed's run did.
#[derive(Clone, Debug)]
pub struct SeedOutcome {
    /// The parameters the seed drew.
    pub params: SwarmParams,
    /// Simulated time covered.
    pub sim_time_us: u64,
    /// Events processed.
    pub events: u64,
    /// Client proposals made (each with a fresh payload, retries not counted).
    pub proposals: u64,
    /// Proposals a leader accepted.
    pub proposals_accepted: u64,
    /// Distinct commands committed.
    pub commands_committed: u64,
    /// Crash events and nodes crashed.
    pub crashes: u64,
    /// Network faults.
    pub partitions: u64,
    /// Membership changes a leader accepted.
    pub conf_changes: u64,
    /// Leadership transfers a leader started.
    pub transfers: u64,
    /// Snapshots taken (log compactions), on every node.
    pub snapshots: u64,
    /// Of those, the ones taken because the core asked ([`raft::Raft::wants_snapshot`]).
    pub snapshots_asked: u64,
    /// FNV-1a 64 of the whole trace.
    pub trace_hash: u64,
    /// The failure, if the seed failed.
    pub failure: Option<Failure>,
}

/// The raft workload's own actions in the safety phase.
#[derive(Clone, Copy, Debug)]
enum Action {
    Propose(usize),
    Membership,
    /// End of the split cut right after a change of voters.
    HealSplit,
}

/// A liveness-phase proposal, followed until it is applied everywhere.
struct Tracked {
    data: Vec<u8>,
    hash: u64,
    accepted: Option<(Index, Term, u64)>,
    committed_at: Option<Index>,
}

struct Swarm {
    p: SwarmParams,
    cluster: Cluster,
    rng: Rng,
    /// Each client's idea of the leader.
    targets: Vec<NodeId>,
    agenda: Agenda<Timed<Action>>,
    proposals: u64,
    accepted: u64,
    crashes: u64,
    partitions: u64,
    conf_changes: u64,
    transfers: u64,
    /// Every proposal a leader accepted: (index, term, command hash), at most
    /// [`PLACED_TRACKED_MAX`]; each must end with a known outcome.
    placed: Vec<(Index, Term, u64)>,
}

/// Accepted proposals whose outcome a seed follows (a seed makes a few thousand).
const PLACED_TRACKED_MAX: usize = 200_000;

/// Runs one seed: safety phase, then liveness phase. `verbose` prints every event.
pub fn run_seed(seed: u64, verbose: bool) -> SeedOutcome {
    run_params(SwarmParams::from_seed(seed), verbose)
}

/// Runs one seed with membership changes as `membership` says.
pub fn run_seed_with(seed: u64, membership: Membership, verbose: bool) -> SeedOutcome {
    run_params(SwarmParams::from_seed_with(seed, membership), verbose)
}

/// Runs one swarm run with the given parameters (a seed's own, or a named scenario's).
pub fn run_params(mut p: SwarmParams, verbose: bool) -> SeedOutcome {
    let seed = p.seed;
    p.cluster.verbose = verbose;
    if verbose {
        println!("{p}");
    }
    let mut cluster = Cluster::with_config(p.cluster.clone());
    cluster.panic_on_violation = false;
    let mut rng = Rng::new(stream_seed(seed, 4));
    let targets = (0..p.clients).map(|_| rng.range(1, p.cluster.nodes as u64 + 1)).collect();
    let mut s = Swarm {
        p,
        cluster,
        rng,
        targets,
        agenda: Agenda::new(),
        proposals: 0,
        accepted: 0,
        crashes: 0,
        partitions: 0,
        conf_changes: 0,
        transfers: 0,
        placed: Vec::new(),
    };
    let result =
        s.safety_phase().and_then(|()| s.liveness_phase()).and_then(|()| s.outcomes_known());
    s.outcome(result.err())
}

impl SafetyPhase for Swarm {
    type Work = Action;
    type Target = Cluster;

    fn fault_parts(
        &mut self,
    ) -> (FaultPlan<'_>, &mut Rng, &mut Agenda<Timed<Action>>, &mut Cluster) {
        let plan = self.p.faults.plan(self.p.cluster.nodes);
        (plan, &mut self.rng, &mut self.agenda, &mut self.cluster)
    }

    fn count(&mut self, effect: FaultEffect) {
        self.partitions += effect.partitions;
        self.crashes += effect.crashes;
    }

    fn run_until_us(&mut self, at_us: u64) {
        self.cluster.run_until_us(at_us);
    }

    fn check(&self) -> Result<(), Violation> {
        match self.cluster.violation() {
            Some((v, _)) => Err(v.clone()),
            None => Ok(()),
        }
    }

    fn work(&mut self, action: Action) {
        self.perform(action);
    }
}

impl Swarm {
    fn schedule(&mut self, at_us: u64, action: Action) {
        self.agenda.schedule(at_us, Timed::Work(action));
    }

    /// A random delay with mean `mean_us`, never 0.
    fn around(&mut self, mean_us: u64) -> u64 {
        faults::around(&mut self.rng, mean_us)
    }

    /// Clients' first proposals, the first faults and the first membership operation on
    /// the agenda (in this order: the draws decide the run), then the shared loop.
    fn safety_phase(&mut self) -> Result<(), Violation> {
        let now = self.cluster.now_us();
        for c in 0..self.p.clients {
            let at = now + self.around(self.p.propose_interval_us);
            self.schedule(at, Action::Propose(c));
        }
        self.p.faults.plan(self.p.cluster.nodes).start(&mut self.rng, &mut self.agenda);
        if let Some(every) = self.p.membership_interval_us {
            let at = now + self.around(every);
            self.schedule(at, Action::Membership);
        }
        faults::run_safety_phase(self, self.p.faults.safety_duration_us)
    }

    fn perform(&mut self, action: Action) {
        let now = self.cluster.now_us();
        match action {
            Action::Propose(c) => {
                self.propose_fresh(c);
                let at = now + self.around(self.p.propose_interval_us);
                self.schedule(at, Action::Propose(c));
            }
            Action::Membership => {
                self.change_membership();
                let every = self.p.membership_interval_us.expect("scheduled only when set");
                let at = now + self.around(every);
                self.schedule(at, Action::Membership);
            }
            Action::HealSplit => self.cluster.heal(),
        }
    }

    /// An operator's move against the current leader: add a learner, promote it, add or
    /// remove a voter (the leader itself included), demote a voter, remove a learner,
    /// replace a voter in one joint change, or transfer leadership. A move that does not
    /// fit the configuration is skipped; one the leader refuses (a change in flight) too.
    fn change_membership(&mut self) {
        let Some(leader) = self.cluster.stable_leader() else { return };
        let conf = self.cluster.raft(leader).expect("a leader is up").conf_state().clone();
        let members = conf.members();
        let outsiders: Vec<NodeId> =
            (1..=self.p.cluster.nodes as NodeId).filter(|id| !members.contains(id)).collect();
        let voters: Vec<NodeId> = conf.voters.iter().copied().collect();
        let others: Vec<NodeId> = voters.iter().copied().filter(|&v| v != leader).collect();
        let learners: Vec<NodeId> = conf.learners.iter().copied().collect();
        let rng = &mut self.rng;
        let mut pick = |from: &[NodeId]| {
            (!from.is_empty()).then(|| from[rng.range(0, from.len() as u64) as usize])
        };
        use ConfChangeKind::*;
        let step = |kind, node| ConfChangeSingle { kind, node };
        let changes = match pick(&[0, 1, 2, 3, 4, 5, 6, 7, 8]).expect("non-empty") {
            0 => pick(&outsiders).map(|n| vec![step(AddLearner, n)]),
            1 => pick(&learners).map(|n| vec![step(AddVoter, n)]),
            2 => pick(&outsiders).map(|n| vec![step(AddVoter, n)]),
            3 => pick(&others).map(|n| vec![step(Remove, n)]),
            4 => (voters.len() > 1).then(|| vec![step(Remove, leader)]),
            5 => pick(&others).map(|n| vec![step(AddLearner, n)]),
            6 => pick(&learners).map(|n| vec![step(Remove, n)]),
            7 => {
                if let Some(target) = pick(&others) {
                    self.transfers +=
                        u64::from(self.cluster.transfer_leader(leader, target).is_ok());
                }
                None
            }
            _ => pick(&others)
                .zip(pick(&outsiders))
                .map(|(out, new)| vec![step(Remove, out), step(AddVoter, new)]),
        };
        let Some(changes) = changes else { return };
        let added: Vec<NodeId> =
            changes.iter().filter(|c| c.kind == AddVoter).map(|c| c.node).collect();
        let cc = ConfChange { changes, context: Vec::new() };
        let accepted = self.cluster.conf_change_to(leader, cc).is_ok();
        self.conf_changes += u64::from(accepted);
        if accepted && !added.is_empty() && self.rng.chance(SPLIT_AT_CHANGE) {
            self.split_at_change(leader, &added);
        }
    }

    /// Cuts the leader and the voters it just added off from everyone else before the
    /// change reaches them: the two sides are a majority of the new voters and a majority
    /// of the old ones, which is exactly where a change that skipped the joint phase
    /// would let both sides commit.
    fn split_at_change(&mut self, leader: NodeId, added: &[NodeId]) {
        let mut side: Vec<NodeId> = vec![leader];
        side.extend(added);
        let rest: Vec<NodeId> =
            (1..=self.p.cluster.nodes as NodeId).filter(|id| !side.contains(id)).collect();
        self.cluster.partition(&[&side, &rest]);
        self.partitions += 1;
        let at = self.cluster.now_us() + self.around(SPLIT_AT_CHANGE_US);
        self.schedule(at, Action::HealSplit);
    }

    fn payload(&mut self, client: usize) -> Vec<u8> {
        let mut data = format!("s{}c{client}p{}", self.p.seed, self.proposals).into_bytes();
        let extra = self.rng.range(0, 64) as usize;
        data.extend((0..extra).map(|k| (k as u8).wrapping_mul(13)));
        self.proposals += 1;
        data
    }

    fn propose_fresh(&mut self, client: usize) {
        let data = self.payload(client);
        self.propose(client, data);
    }

    /// A client proposes to the node it believes leads, following up to two redirects.
    fn propose(&mut self, client: usize, data: Vec<u8>) -> Option<(Index, Term)> {
        for _ in 0..3 {
            let target = self.targets[client];
            match self.cluster.propose_to(target, data.clone()) {
                Ok(placed) => {
                    self.accepted += 1;
                    if self.placed.len() < PLACED_TRACKED_MAX {
                        self.placed.push((placed.0, placed.1, command_hash(&data)));
                    }
                    return Some(placed);
                }
                Err(ProposeError::NotLeader { leader: Some(l) }) if l != target => {
                    self.targets[client] = l
                }
                Err(_) => {
                    self.targets[client] = self.rng.range(1, self.p.cluster.nodes as u64 + 1);
                    return None;
                }
            }
        }
        None
    }

    /// Heal everything, then demand progress within fixed bounds.
    fn liveness_phase(&mut self) -> Result<(), Violation> {
        self.agenda.clear();
        let start = self.cluster.now_us();
        faults::calm(&mut self.cluster, self.p.cluster.nodes, &self.p.cluster.net);
        self.check()?;
        let mut tracked: Vec<Tracked> = Vec::new();
        let mut leader_seen = false;
        let patience = self.p.cluster.net.patience();
        loop {
            let now = self.cluster.now_us() + 10_000;
            self.cluster.run_until_us(now);
            self.check()?;
            let elapsed = now - start;
            leader_seen = leader_seen || self.cluster.converged_leader().is_some();
            if !leader_seen && elapsed > LIVENESS_LEADER_BOUND_US * patience {
                let details = format!(
                    "no leader within {} s of healing everything\n{}",
                    LIVENESS_LEADER_BOUND_US * patience / 1_000_000,
                    self.cluster.describe_nodes()
                );
                return Err(Violation::new("Liveness (election)", details));
            }
            if (tracked.len() as u64) < LIVENESS_PROPOSALS
                && elapsed >= tracked.len() as u64 * 100_000
            {
                let client = tracked.len() % self.p.clients;
                let data = self.payload(client);
                tracked.push(Tracked {
                    hash: command_hash(&data),
                    data,
                    accepted: None,
                    committed_at: None,
                });
            }
            self.drive_tracked(&mut tracked, now);
            if tracked.len() as u64 == LIVENESS_PROPOSALS && self.all_applied_everywhere(&tracked) {
                return Ok(());
            }
            if elapsed > LIVENESS_COMMIT_BOUND_US * patience {
                return Err(self.commit_stall(&tracked));
            }
        }
    }

    /// Proposes each tracked command that is not committed and not (recently) in a leader's
    /// log; one whose index another entry took, or that waited too long, is proposed again.
    fn drive_tracked(&mut self, tracked: &mut [Tracked], now: u64) {
        for (k, t) in tracked.iter_mut().enumerate() {
            if t.committed_at.is_some() {
                continue;
            }
            if let Some(index) = self.cluster.checker.command_index(t.hash) {
                t.committed_at = Some(index);
                continue;
            }
            let lost = match t.accepted {
                None => true,
                Some((index, _, at)) => {
                    let taken = self
                        .cluster
                        .checker
                        .applied_at(index)
                        .is_some_and(|r| r.entry_hash != t.hash);
                    taken || now.saturating_sub(at) > LIVENESS_RETRY_US
                }
            };
            if lost {
                let client = k % self.p.clients;
                t.accepted = self.propose(client, t.data.clone()).map(|(i, term)| (i, term, now));
            }
        }
    }

    /// Once the liveness phase is done, every proposal a leader accepted has a known
    /// outcome: committed (at its index or, proposed again, at another), or dead: another
    /// entry is committed at its index, or its index lies past the last committed entry
    /// while its term is older than that entry's (terms never decrease along a log, so
    /// no log holding the committed entry can hold it after; Raft §5.3-5.4).
    fn outcomes_known(&self) -> Result<(), Violation> {
        let checker = &self.cluster.checker;
        let mut last = 0;
        while checker.applied_at(last + 1).is_some() {
            last += 1;
        }
        let last_term = checker.applied_at(last).map_or(0, |r| r.term);
        let open: Vec<(Index, Term)> = self
            .placed
            .iter()
            .filter(|&&(index, term, hash)| {
                let decided = checker.command_index(hash).is_some()
                    || checker.applied_at(index).is_some()
                    || term < last_term;
                !decided
            })
            .map(|&(index, term, _)| (index, term))
            .collect();
        if open.is_empty() {
            return Ok(());
        }
        let details = format!(
            "{} of {} accepted proposals have no known outcome after the liveness phase (last committed: index {last}, term {last_term}); first: {:?}",
            open.len(),
            self.placed.len(),
            &open[..open.len().min(5)]
        );
        Err(Violation::new("Proposal outcomes known", details))
    }

    fn all_applied_everywhere(&self, tracked: &[Tracked]) -> bool {
        let Some(max) = tracked.iter().map(|t| t.committed_at).collect::<Option<Vec<_>>>() else {
            return false;
        };
        let need = max.into_iter().max().unwrap_or(0);
        // Every member of the leader's configuration; removed nodes no longer follow.
        let Some(leader) = self.cluster.converged_leader() else { return false };
        let members = self.cluster.raft(leader).expect("a leader is up").conf_state().members();
        members.into_iter().all(|id| self.cluster.state_machine(id).applied_index >= need)
    }

    fn commit_stall(&self, tracked: &[Tracked]) -> Violation {
        let uncommitted: Vec<usize> = tracked
            .iter()
            .enumerate()
            .filter(|(_, t)| t.committed_at.is_none())
            .map(|(k, _)| k)
            .collect();
        let details = format!(
            "liveness-phase proposals not all applied on every node within {} s of healing; {} of {} never committed {:?}\n{}",
            LIVENESS_COMMIT_BOUND_US * self.p.cluster.net.patience() / 1_000_000,
            uncommitted.len(),
            tracked.len(),
            uncommitted,
            self.cluster.describe_nodes()
        );
        Violation::new("Liveness (commit)", details)
    }

    fn outcome(self, violation: Option<Violation>) -> SeedOutcome {
        let failure = violation.map(|v| Failure {
            time_us: self.cluster.violation().map_or(self.cluster.now_us(), |(_, t)| *t),
            violation: v,
            recent_events: self.cluster.recent_events(),
        });
        SeedOutcome {
            sim_time_us: self.cluster.now_us(),
            events: self.cluster.events(),
            proposals: self.proposals,
            proposals_accepted: self.accepted,
            commands_committed: self.cluster.commands_committed(),
            crashes: self.crashes,
            partitions: self.partitions,
            conf_changes: self.conf_changes,
            transfers: self.transfers,
            snapshots: self.cluster.compactions(),
            snapshots_asked: self.cluster.compactions_asked(),
            trace_hash: self.cluster.trace_hash(),
            failure,
            params: self.p,
        }
    }
}
