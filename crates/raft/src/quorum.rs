//! Majority quorum maths, kept small and separate so it can be tested against a naive
//! version.

use crate::types::{Index, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// Size of a majority of `n` voters.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The highest value that a majority has reached: with values sorted from high to low,
/// the one at position `majority - 1`. Used for the commit index (match indices) and for
/// confirmed ReadIndex rounds.
pub fn committed(values: &mut [Index]) -> Index {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[majority(values.len()) - 1]
}

/// Outcome of an election so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority granted.
    Won,
    /// A majority refused: this election cannot be won.
    Lost,
    /// Not decided yet.
    Pending,
}

/// Tallies `votes` (voter → granted) among `voters`; votes from non-voters are ignored.
pub fn vote_result(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let need = majority(voters.len());
    let granted = voters.iter().filter(|v| votes.get(v) == Some(&true)).count();
    let refused = voters.iter().filter(|v| votes.get(v) == Some(&false)).count();
    if granted >= need {
        VoteResult::Won
    } else if refused > voters.len() - need {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

/// The committed index of a joint configuration (Raft thesis §4.3): the highest index
/// that a majority of `incoming` *and* a majority of `outgoing` have reached. An empty
/// `outgoing` (not joint) places no constraint; an empty `incoming` commits nothing.
/// `value` gives each voter's index.
pub fn joint_committed(
    incoming: &BTreeSet<NodeId>,
    outgoing: &BTreeSet<NodeId>,
    value: impl Fn(NodeId) -> Index,
) -> Index {
    let half = |voters: &BTreeSet<NodeId>| {
        if voters.is_empty() {
            return Index::MAX;
        }
        let mut values: Vec<Index> = voters.iter().map(|v| value(*v)).collect();
        committed(&mut values)
    };
    if incoming.is_empty() {
        return 0;
    }
    half(incoming).min(half(outgoing))
}

/// The election result in a joint configuration: won only if both halves are won, lost
/// as soon as either half is lost. An empty `outgoing` (not joint) counts as won.
pub fn joint_vote_result(
    incoming: &BTreeSet<NodeId>,
    outgoing: &BTreeSet<NodeId>,
    votes: &BTreeMap<NodeId, bool>,
) -> VoteResult {
    let half = |voters: &BTreeSet<NodeId>| {
        if voters.is_empty() {
            VoteResult::Won
        } else {
            vote_result(voters, votes)
        }
    };
    match (half(incoming), half(outgoing)) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Property: the joint committed index is the largest x such that each half has a
    /// majority at or above x, computed naively.
    #[test]
    fn joint_committed_matches_naive_definition() {
        let mut rng = Rng::new(11);
        for _ in 0..2000 {
            let ids: Vec<NodeId> = (1..=7).collect();
            let pick = |rng: &mut Rng, min: u64| -> BTreeSet<NodeId> {
                let n = rng.range(min, 6) as usize;
                let mut half: BTreeSet<NodeId> =
                    ids.iter().copied().filter(|_| rng.range(0, 2) == 0).take(n).collect();
                half.insert(rng.range(1, 8));
                half
            };
            let incoming = pick(&mut rng, 1);
            let outgoing = if rng.range(0, 3) == 0 { BTreeSet::new() } else { pick(&mut rng, 1) };
            let values: BTreeMap<NodeId, Index> =
                ids.iter().map(|&i| (i, rng.range(0, 20))).collect();
            let has_majority = |half: &BTreeSet<NodeId>, x: Index| {
                half.is_empty()
                    || half.iter().filter(|v| values[v] >= x).count() >= majority(half.len())
            };
            let naive = (0..=20u64)
                .filter(|&x| has_majority(&incoming, x) && has_majority(&outgoing, x))
                .max()
                .unwrap();
            let got = joint_committed(&incoming, &outgoing, |v| values[&v]);
            assert_eq!(got, naive, "incoming {incoming:?} outgoing {outgoing:?} values {values:?}");
        }
    }

    #[test]
    fn joint_vote_needs_both_halves() {
        let incoming: BTreeSet<u64> = [1, 2, 3].into();
        let outgoing: BTreeSet<u64> = [3, 4, 5].into();
        let votes = |granted: &[u64], refused: &[u64]| -> BTreeMap<u64, bool> {
            granted.iter().map(|&v| (v, true)).chain(refused.iter().map(|&v| (v, false))).collect()
        };
        let result = |v| joint_vote_result(&incoming, &outgoing, &v);
        assert_eq!(result(votes(&[1, 2], &[])), VoteResult::Pending, "only the incoming half");
        assert_eq!(result(votes(&[1, 2, 4, 5], &[])), VoteResult::Won);
        assert_eq!(result(votes(&[3, 1, 4], &[])), VoteResult::Won, "3 counts in both halves");
        assert_eq!(result(votes(&[1, 2, 3], &[4, 5])), VoteResult::Lost, "outgoing lost");
        let plain = joint_vote_result(&incoming, &BTreeSet::new(), &votes(&[1, 2], &[]));
        assert_eq!(plain, VoteResult::Won, "not joint: the incoming majority decides");
    }

    #[test]
    fn committed_index_table() {
        let cases: &[(&[u64], u64)] = &[
            (&[], 0),
            (&[5], 5),
            (&[5, 3], 3),
            (&[1, 2, 3], 2),
            (&[9, 9, 1], 9),
            (&[1, 2, 3, 4], 2),
            (&[7, 1, 7, 1, 7], 7),
            (&[5, 4, 3, 2, 1], 3),
        ];
        for (values, want) in cases {
            let mut v = values.to_vec();
            assert_eq!(committed(&mut v), *want, "values {values:?}");
        }
    }

    /// Property: the result equals the largest x such that a majority has value >= x,
    /// computed naively.
    #[test]
    fn committed_matches_naive_definition() {
        let mut rng = Rng::new(7);
        for _ in 0..2000 {
            let n = rng.range(1, 8) as usize;
            let values: Vec<u64> = (0..n).map(|_| rng.range(0, 20)).collect();
            let naive = (0..=20u64)
                .filter(|x| values.iter().filter(|v| *v >= x).count() >= majority(n))
                .max()
                .unwrap();
            assert_eq!(committed(&mut values.clone()), naive, "values {values:?}");
        }
    }

    #[test]
    fn vote_tally() {
        let voters: BTreeSet<u64> = [1, 2, 3, 4, 5].into();
        let mut votes = BTreeMap::new();
        votes.insert(1, true);
        votes.insert(2, true);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(9, true); // not a voter
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(3, true);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Won);
        let mut refusals = BTreeMap::new();
        refusals.insert(1, false);
        refusals.insert(2, false);
        assert_eq!(vote_result(&voters, &refusals), VoteResult::Pending);
        refusals.insert(3, false);
        assert_eq!(vote_result(&voters, &refusals), VoteResult::Lost);
    }
}
