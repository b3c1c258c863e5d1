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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

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
