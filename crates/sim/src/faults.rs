//! Faults shared by the raft and kv workloads: which partition a seed cuts, drawn from the
//! seed's generator, applied to any simulated cluster through [`NetFaultTarget`]; and the
//! safety phase's schedule of network faults, heals, crashes and restarts ([`FaultPlan`]
//! on an [`Agenda`]), applied through [`FaultTarget`].

use crate::checker::Violation;
use crate::network::NetConfig;
use crate::swarm::PartitionKind;
use raft::{NodeId, Rng};
use std::collections::BTreeMap;

/// A cluster whose member-to-member links can be cut (ids `1..=n`).
pub(crate) trait NetFaultTarget {
    /// Every link up, every member connected.
    fn heal(&mut self);
    /// Links inside a group up, links between groups down.
    fn partition(&mut self, groups: &[&[NodeId]]);
    /// Cuts the one-way link `from → to`.
    fn cut_link(&mut self, from: NodeId, to: NodeId);
}

/// What a swarm's fault schedule needs of a cluster besides cutting links.
pub(crate) trait FaultTarget: NetFaultTarget {
    /// Current simulated time.
    fn now_us(&self) -> u64;
    /// True unless member `id` is crashed.
    fn is_up(&self, id: NodeId) -> bool;
    /// Power loss on member `id`.
    fn crash(&mut self, id: NodeId);
    /// Member `id` starts again from its disk.
    fn restart(&mut self, id: NodeId);
    /// The member an `IsolateLeader` fault cuts off, if one leads.
    fn fault_leader(&self) -> Option<NodeId>;
    /// Replaces the network's behaviour.
    fn set_net(&mut self, cfg: NetConfig);
    /// Sets the chance, per sync, of a power loss before it completes.
    fn set_crash_during_write(&mut self, chance: f64);
}

/// The liveness phase's start: no more loss, duplication or power cuts (delays stay),
/// every link up and every member running.
pub(crate) fn calm(target: &mut impl FaultTarget, members: usize, net: &NetConfig) {
    let mut net = net.clone();
    (net.loss, net.duplicate) = (0.0, 0.0);
    target.set_net(net);
    target.set_crash_during_write(0.0);
    target.heal();
    for id in 1..=members as NodeId {
        if !target.is_up(id) {
            target.restart(id);
        }
    }
}

/// The timed actions of a swarm's safety phase, run in (time, scheduling) order so that
/// ties never depend on anything but the seed.
pub(crate) struct Agenda<A> {
    entries: BTreeMap<(u64, u64), A>,
    seq: u64,
}

impl<A> Agenda<A> {
    pub(crate) fn new() -> Agenda<A> {
        Agenda { entries: BTreeMap::new(), seq: 0 }
    }

    /// Adds `action` at `at_us`, after anything already scheduled for that instant.
    pub(crate) fn schedule(&mut self, at_us: u64, action: A) {
        self.entries.insert((at_us, self.seq), action);
        self.seq += 1;
    }

    /// Takes the earliest action if it is due at or before `end_us`.
    pub(crate) fn next_due(&mut self, end_us: u64) -> Option<(u64, A)> {
        let entry = self.entries.first_entry()?;
        let (at, _) = *entry.key();
        (at <= end_us).then(|| (at, entry.remove()))
    }

    /// Drops everything scheduled.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

/// A random delay with mean `mean_us`, never 0.
pub(crate) fn around(rng: &mut Rng, mean_us: u64) -> u64 {
    rng.range(1, 2 * mean_us.max(1) + 1)
}

/// A fault action of the safety phase.
#[derive(Clone, Copy, Debug)]
pub(crate) enum FaultAction {
    /// Cut a network fault of one of the seed's kinds.
    CutNetwork,
    /// Heal the network.
    HealNetwork,
    /// Crash some members.
    Crash,
    /// Restart a crashed member.
    Restart(NodeId),
}

/// What one fault action did, for the counters.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FaultEffect {
    /// Network faults cut.
    pub(crate) partitions: u64,
    /// Members crashed.
    pub(crate) crashes: u64,
}

/// The safety phase's faults, the same fields for both workloads: how often the network
/// is cut and for how long, how often members crash, how many and for how long, and how
/// long the phase lasts. Each workload draws its own values (its own ranges, in its own
/// order, so seeds keep their runs); [`FaultPlan`] carries them out.
#[derive(Clone, Debug)]
pub struct FaultParams {
    /// Mean time between network faults (`None`: the network stays whole).
    pub partition_interval_us: Option<u64>,
    /// Mean time a network fault lasts.
    pub partition_duration_us: u64,
    /// Which network faults this seed uses.
    pub partition_kinds: Vec<PartitionKind>,
    /// Mean time between crash events (`None`: nothing crashes).
    pub crash_interval_us: Option<u64>,
    /// Most members one crash event takes down.
    pub crash_max_at_once: usize,
    /// Chance that a crash event takes every member down.
    pub all_crash: f64,
    /// Mean time a crashed member stays down.
    pub restart_delay_us: u64,
    /// Length of the safety phase.
    pub safety_duration_us: u64,
}

impl FaultParams {
    /// The schedule over members `1..=members`.
    pub(crate) fn plan(&self, members: usize) -> FaultPlan<'_> {
        FaultPlan { members, p: self }
    }

    /// One line for the parameter listing; `kinds_note` follows the partition kinds.
    pub(crate) fn describe(&self, kinds_note: &str) -> String {
        let ms = |us: u64| us / 1000;
        format!(
            "  faults: partitions every {:?} ms for ~{} ms {:?}{kinds_note}; crashes every {:?} ms, up to {} at once, all {:.3}, down ~{} ms",
            self.partition_interval_us.map(ms),
            ms(self.partition_duration_us),
            self.partition_kinds,
            self.crash_interval_us.map(ms),
            self.crash_max_at_once,
            self.all_crash,
            ms(self.restart_delay_us)
        )
    }
}

/// A seed's fault schedule: network faults and crash events at random intervals, each
/// network fault healed and each crashed member restarted after a random while.
pub(crate) struct FaultPlan<'a> {
    members: usize,
    p: &'a FaultParams,
}

impl FaultPlan<'_> {
    /// Schedules the first network fault and the first crash event.
    pub(crate) fn start<A: From<FaultAction>>(&self, rng: &mut Rng, agenda: &mut Agenda<A>) {
        if let Some(mean) = self.p.partition_interval_us {
            agenda.schedule(around(rng, mean), FaultAction::CutNetwork.into());
        }
        if let Some(mean) = self.p.crash_interval_us {
            agenda.schedule(around(rng, mean), FaultAction::Crash.into());
        }
    }

    /// Carries out `fault` on `target` and schedules what follows it.
    pub(crate) fn perform<A: From<FaultAction>>(
        &self,
        fault: FaultAction,
        rng: &mut Rng,
        agenda: &mut Agenda<A>,
        target: &mut impl FaultTarget,
    ) -> FaultEffect {
        let now = target.now_us();
        let mut effect = FaultEffect::default();
        match fault {
            FaultAction::CutNetwork => {
                effect.partitions = 1;
                let kind = self.p.partition_kinds
                    [rng.range(0, self.p.partition_kinds.len() as u64) as usize];
                let leader = target.fault_leader();
                apply_net_fault(kind, self.members, leader, rng, target);
                agenda.schedule(
                    now + around(rng, self.p.partition_duration_us),
                    FaultAction::HealNetwork.into(),
                );
            }
            FaultAction::HealNetwork => {
                target.heal();
                let mean = self.p.partition_interval_us.expect("partitions on");
                agenda.schedule(now + around(rng, mean), FaultAction::CutNetwork.into());
            }
            FaultAction::Crash => {
                effect.crashes = self.crash_some(rng, agenda, target);
                let mean = self.p.crash_interval_us.expect("crashes on");
                agenda.schedule(now + around(rng, mean), FaultAction::Crash.into());
            }
            FaultAction::Restart(id) => {
                if !target.is_up(id) {
                    target.restart(id);
                }
            }
        }
        effect
    }

    /// Crashes one to `crash_max_at_once` members (sometimes all), each restarted after
    /// a random while; returns how many.
    fn crash_some<A: From<FaultAction>>(
        &self,
        rng: &mut Rng,
        agenda: &mut Agenda<A>,
        target: &mut impl FaultTarget,
    ) -> u64 {
        let up: Vec<NodeId> = (1..=self.members as NodeId).filter(|&id| target.is_up(id)).collect();
        let count = if rng.chance(self.p.all_crash) {
            up.len()
        } else {
            (rng.range(1, self.p.crash_max_at_once as u64 + 1) as usize).min(up.len())
        };
        let down = pick(rng, &up, count);
        for &id in &down {
            target.crash(id);
            let at = target.now_us() + around(rng, self.p.restart_delay_us);
            agenda.schedule(at, FaultAction::Restart(id).into());
        }
        down.len() as u64
    }
}

/// An action on a safety phase's agenda: a fault of the shared plan, or one of the
/// workload's own (client proposals, membership changes...).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Timed<W> {
    /// A fault, carried out by the [`FaultPlan`].
    Fault(FaultAction),
    /// The workload's own action.
    Work(W),
}

impl<W> From<FaultAction> for Timed<W> {
    fn from(f: FaultAction) -> Self {
        Timed::Fault(f)
    }
}

/// What the shared safety-phase loop needs of a workload's swarm run.
pub(crate) trait SafetyPhase {
    /// The workload's own timed actions.
    type Work: Copy;
    /// The cluster the faults hit.
    type Target: FaultTarget;
    /// The plan, its generator, the agenda and the cluster, borrowed together.
    fn fault_parts(
        &mut self,
    ) -> (FaultPlan<'_>, &mut Rng, &mut Agenda<Timed<Self::Work>>, &mut Self::Target);
    /// Counts what a fault did.
    fn count(&mut self, effect: FaultEffect);
    /// Runs the cluster's events up to `at_us`.
    fn run_until_us(&mut self, at_us: u64);
    /// The first violation so far, if any.
    fn check(&self) -> Result<(), Violation>;
    /// Carries out one of the workload's own actions (and schedules what follows it).
    fn work(&mut self, work: Self::Work);
}

/// The safety phase of either workload, once its first actions are on the agenda: each
/// due action in (time, scheduling) order, the cluster run up to it and checked before
/// and after, until `end_us`.
pub(crate) fn run_safety_phase<S: SafetyPhase>(s: &mut S, end_us: u64) -> Result<(), Violation> {
    loop {
        let (_, _, agenda, _) = s.fault_parts();
        let Some((at, action)) = agenda.next_due(end_us) else { break };
        s.run_until_us(at);
        s.check()?;
        match action {
            Timed::Fault(fault) => {
                let (plan, rng, agenda, target) = s.fault_parts();
                let effect = plan.perform(fault, rng, agenda, target);
                s.count(effect);
            }
            Timed::Work(work) => s.work(work),
        }
        s.check()?;
    }
    s.run_until_us(end_us);
    s.check()
}

/// `count` distinct random members of `from` (partial Fisher–Yates).
pub(crate) fn pick(rng: &mut Rng, from: &[NodeId], count: usize) -> Vec<NodeId> {
    let mut v = from.to_vec();
    for i in 0..count.min(v.len()) {
        let j = rng.range(i as u64, v.len() as u64) as usize;
        v.swap(i, j);
    }
    v.truncate(count);
    v
}

/// Cuts a fault of `kind` into a cluster of `n` members; `leader` is the member an
/// `IsolateLeader` fault cuts off (a random one when there is none).
pub(crate) fn apply_net_fault(
    kind: PartitionKind,
    n: usize,
    leader: Option<NodeId>,
    rng: &mut Rng,
    target: &mut impl NetFaultTarget,
) {
    let all: Vec<NodeId> = (1..=n as NodeId).collect();
    let shuffled = pick(rng, &all, n);
    match kind {
        PartitionKind::IsolateLeader => {
            let leader = leader.unwrap_or(shuffled[0]);
            let rest: Vec<NodeId> = all.iter().copied().filter(|&id| id != leader).collect();
            target.partition(&[&[leader], &rest]);
        }
        PartitionKind::MinorityMajority => {
            let minority = rng.range(1, (n as u64 - 1) / 2 + 1) as usize;
            target.partition(&[&shuffled[..minority], &shuffled[minority..]]);
        }
        PartitionKind::RandomGroups => {
            let groups = rng.range(2, 4) as usize;
            let mut members: Vec<Vec<NodeId>> = vec![Vec::new(); groups];
            for &id in &all {
                members[rng.range(0, groups as u64) as usize].push(id);
            }
            let refs: Vec<&[NodeId]> = members.iter().map(|g| g.as_slice()).collect();
            target.partition(&refs);
        }
        PartitionKind::OneWay => {
            target.heal();
            let cuts = rng.range(1, n as u64 + 1);
            for _ in 0..cuts {
                let pair = pick(rng, &all, 2);
                target.cut_link(pair[0], pair[1]);
            }
        }
        PartitionKind::Bridge => bridge(&shuffled, rng, target),
        PartitionKind::RandomLinks => {
            target.heal();
            let p = rng.range(10, 51) as f64 / 100.0;
            for &from in &all {
                for &to in &all {
                    if from != to && rng.chance(p) {
                        target.cut_link(from, to);
                    }
                }
            }
        }
    }
}

/// Sides X and Y cannot reach each other; the bridge member `shuffled[0]` sees both.
fn bridge(shuffled: &[NodeId], rng: &mut Rng, target: &mut impl NetFaultTarget) {
    let rest = &shuffled[1..];
    let split = rng.range(1, rest.len() as u64) as usize;
    let (x, y) = rest.split_at(split);
    target.heal();
    for &a in x {
        for &c in y {
            target.cut_link(a, c);
            target.cut_link(c, a);
        }
    }
}
