//! Network faults shared by the raft and kv workloads: which partition a seed cuts, drawn
//! from the seed's generator, applied to any simulated cluster through [`NetFaultTarget`].

use crate::swarm::PartitionKind;
use raft::{NodeId, Rng};

/// A cluster whose member-to-member links can be cut (ids `1..=n`).
pub(crate) trait NetFaultTarget {
    /// Every link up, every member connected.
    fn heal(&mut self);
    /// Links inside a group up, links between groups down.
    fn partition(&mut self, groups: &[&[NodeId]]);
    /// Cuts the one-way link `from → to`.
    fn cut_link(&mut self, from: NodeId, to: NodeId);
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
