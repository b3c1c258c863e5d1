//! Membership changes: what a change is, its encoding in a log entry, and the pure
//! function that validates it against a configuration and computes the next one.
//!
//! The shape is etcd's `ConfChangeV2`. A change that alters the voters always goes
//! through a joint configuration (Raft thesis §4.3): the first entry moves from `C_old`
//! to `C_old,new` (`voters_outgoing` = the old voters, `voters` = the new ones), and once
//! that entry commits the leader appends an empty change that leaves the joint
//! configuration (`C_new`). Because every decision in `C_old,new` needs a majority of both
//! halves, no two disjoint majorities can decide at any moment. A change that only adds
//! or removes learners changes no quorum, so it applies directly.
//!
//! Kept free of the rest of the core so the rules can be tested one by one.

use crate::types::{ConfState, NodeId};
use std::collections::BTreeSet;
use std::fmt;

/// What one step of a change does to one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChangeKind {
    /// Make `node` a voter (a new member, or a learner being promoted).
    AddVoter,
    /// Make `node` a learner (a new member, or a voter being demoted).
    AddLearner,
    /// Remove `node` from the configuration.
    Remove,
}

/// One step of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConfChangeSingle {
    /// What happens.
    pub kind: ConfChangeKind,
    /// To whom.
    pub node: NodeId,
}

/// A membership change as proposed and stored in a [`crate::EntryKind::ConfChange`]
/// entry. No steps means "leave the joint configuration" (the leader proposes it by
/// itself; a service never needs to).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfChange {
    /// The steps, applied together.
    pub changes: Vec<ConfChangeSingle>,
    /// The service's opaque data about the change (etcd's `ConfChange.Context`: the
    /// member record), at most [`CONF_CHANGE_CONTEXT_BYTES_MAX`] bytes. The core never
    /// reads it; every member sees it when it applies the entry.
    pub context: Vec<u8>,
}

/// Largest [`ConfChange::context`]: a member record (a name and a few URLs) is far
/// below it; the bound keeps a forged or buggy entry from carrying megabytes.
pub const CONF_CHANGE_CONTEXT_BYTES_MAX: usize = 64 * 1024;

/// Largest encoded [`ConfChange`] entry: the context plus the steps of a change that
/// names every member of the largest configuration a snapshot may carry.
pub const CONF_CHANGE_BYTES_MAX: usize = 9 + 4 + CONF_CHANGE_CONTEXT_BYTES_MAX + 9 * 1024;

/// Why a change cannot be applied to a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChangeError {
    /// The change names member 0, which means "no member".
    ZeroNode,
    /// The change names the same member twice.
    Duplicate(NodeId),
    /// A joint configuration must be left before another change.
    AlreadyJoint,
    /// Asked to leave a joint configuration while not in one.
    NotJoint,
    /// The member already votes in the incoming configuration.
    AlreadyVoter(NodeId),
    /// The member is already a learner.
    AlreadyLearner(NodeId),
    /// The member is not in the configuration.
    NotMember(NodeId),
    /// The change would leave no voter at all.
    NoVoters,
    /// The entry's bytes are not an encoded change.
    Malformed(&'static str),
    /// The context is larger than [`CONF_CHANGE_CONTEXT_BYTES_MAX`].
    ContextTooLarge(usize),
}

impl fmt::Display for ConfChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfChangeError::ZeroNode => write!(f, "member id 0 is not valid"),
            ConfChangeError::Duplicate(id) => {
                write!(f, "member {id:x} appears twice in one change; split it")
            }
            ConfChangeError::AlreadyJoint => {
                write!(f, "a membership change is in progress; retry once it completes")
            }
            ConfChangeError::NotJoint => write!(f, "not in a joint configuration"),
            ConfChangeError::AlreadyVoter(id) => write!(f, "member {id:x} is already a voter"),
            ConfChangeError::AlreadyLearner(id) => {
                write!(f, "member {id:x} is already a learner")
            }
            ConfChangeError::NotMember(id) => write!(f, "member {id:x} is not in the cluster"),
            ConfChangeError::NoVoters => {
                write!(f, "the change would remove the last voting member")
            }
            ConfChangeError::Malformed(what) => write!(f, "malformed membership change: {what}"),
            ConfChangeError::ContextTooLarge(len) => write!(
                f,
                "membership change context of {len} bytes exceeds the limit of \
                 {CONF_CHANGE_CONTEXT_BYTES_MAX} bytes"
            ),
        }
    }
}
impl std::error::Error for ConfChangeError {}

/// Version 1: steps only. Version 2 (now written) adds the context; version 1 is still
/// read, as a change with an empty context.
const ENCODING_VERSION: u8 = 2;

impl ConfChangeKind {
    fn to_u8(self) -> u8 {
        match self {
            ConfChangeKind::AddVoter => 0,
            ConfChangeKind::AddLearner => 1,
            ConfChangeKind::Remove => 2,
        }
    }

    fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(ConfChangeKind::AddVoter),
            1 => Some(ConfChangeKind::AddLearner),
            2 => Some(ConfChangeKind::Remove),
            _ => None,
        }
    }
}

impl ConfChange {
    /// A change of one step.
    pub fn single(kind: ConfChangeKind, node: NodeId) -> Self {
        ConfChange { changes: vec![ConfChangeSingle { kind, node }], context: Vec::new() }
    }

    /// Validates the change against `cs` and returns the configuration it leads to (what
    /// the core computes when the change's entry is appended).
    pub fn apply_to(&self, cs: &ConfState) -> Result<ConfState, ConfChangeError> {
        apply(cs, self)
    }

    /// True for the empty change that leaves a joint configuration.
    pub fn is_leave_joint(&self) -> bool {
        self.changes.is_empty()
    }

    /// Entry bytes: version (2), step count (u32 LE), then per step kind (1) and node
    /// (u64 LE), then the context length (u32 LE) and the context. (Version 1 ended
    /// after the steps.)
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + 9 * self.changes.len() + self.context.len());
        out.push(ENCODING_VERSION);
        out.extend_from_slice(&(self.changes.len() as u32).to_le_bytes());
        for c in &self.changes {
            out.push(c.kind.to_u8());
            out.extend_from_slice(&c.node.to_le_bytes());
        }
        out.extend_from_slice(&(self.context.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.context);
        out
    }

    /// Inverse of [`ConfChange::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, ConfChangeError> {
        let bad = ConfChangeError::Malformed;
        let (&version, rest) = bytes.split_first().ok_or(bad("empty"))?;
        if version != 1 && version != ENCODING_VERSION {
            return Err(bad("unknown encoding version"));
        }
        let count = rest.get(..4).ok_or(bad("truncated step count"))?;
        let count = u32::from_le_bytes(count.try_into().expect("4 bytes")) as usize;
        let rest = &rest[4..];
        let steps_len = count.checked_mul(9).ok_or(bad("step count too large"))?;
        let (steps, tail) = if version == 1 {
            (rest, &[][..])
        } else {
            rest.split_at_checked(steps_len).ok_or(bad("truncated steps"))?
        };
        if steps.len() != steps_len {
            return Err(bad("step count does not match the length"));
        }
        let context = if version == 1 { Vec::new() } else { decode_context(tail)? };
        let changes = steps
            .chunks_exact(9)
            .map(|s| {
                let kind = ConfChangeKind::from_u8(s[0]).ok_or(bad("unknown step kind"))?;
                let node = u64::from_le_bytes(s[1..].try_into().expect("8 bytes"));
                Ok(ConfChangeSingle { kind, node })
            })
            .collect::<Result<_, _>>()?;
        Ok(ConfChange { changes, context })
    }
}

/// The context part of a version 2 encoding: length (u32 LE), then exactly that many bytes.
fn decode_context(tail: &[u8]) -> Result<Vec<u8>, ConfChangeError> {
    let bad = ConfChangeError::Malformed;
    let len = tail.get(..4).ok_or(bad("truncated context length"))?;
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    if len > CONF_CHANGE_CONTEXT_BYTES_MAX {
        return Err(ConfChangeError::ContextTooLarge(len));
    }
    if tail.len() - 4 != len {
        return Err(bad("context length does not match the length"));
    }
    Ok(tail[4..].to_vec())
}

/// Validates `cc` against `cs` and returns the configuration it leads to.
pub fn apply(cs: &ConfState, cc: &ConfChange) -> Result<ConfState, ConfChangeError> {
    if cc.is_leave_joint() {
        return leave_joint(cs);
    }
    if cs.is_joint() {
        return Err(ConfChangeError::AlreadyJoint);
    }
    check_steps(cc)?;
    let mut next = cs.clone();
    for c in &cc.changes {
        apply_step(&mut next, c)?;
    }
    if next.voters.is_empty() {
        return Err(ConfChangeError::NoVoters);
    }
    if next.voters != cs.voters {
        // The voters change: go through C_old,new.
        next.voters_outgoing = cs.voters.clone();
        // A demoted voter stays a voter of the outgoing half until the joint config ends.
        let demoted: BTreeSet<NodeId> =
            next.learners.intersection(&next.voters_outgoing).copied().collect();
        for id in demoted {
            next.learners.remove(&id);
            next.learners_next.insert(id);
        }
    }
    Ok(next)
}

fn check_steps(cc: &ConfChange) -> Result<(), ConfChangeError> {
    let mut seen = BTreeSet::new();
    for c in &cc.changes {
        if c.node == 0 {
            return Err(ConfChangeError::ZeroNode);
        }
        if !seen.insert(c.node) {
            return Err(ConfChangeError::Duplicate(c.node));
        }
    }
    Ok(())
}

fn apply_step(cs: &mut ConfState, c: &ConfChangeSingle) -> Result<(), ConfChangeError> {
    let id = c.node;
    match c.kind {
        ConfChangeKind::AddVoter => {
            if cs.voters.contains(&id) {
                return Err(ConfChangeError::AlreadyVoter(id));
            }
            cs.learners.remove(&id);
            cs.voters.insert(id);
        }
        ConfChangeKind::AddLearner => {
            if cs.learners.contains(&id) {
                return Err(ConfChangeError::AlreadyLearner(id));
            }
            cs.voters.remove(&id);
            cs.learners.insert(id);
        }
        ConfChangeKind::Remove => {
            if !cs.voters.remove(&id) && !cs.learners.remove(&id) {
                return Err(ConfChangeError::NotMember(id));
            }
        }
    }
    Ok(())
}

/// `C_old,new` → `C_new`: the outgoing half is dropped and demoted voters become learners.
pub fn leave_joint(cs: &ConfState) -> Result<ConfState, ConfChangeError> {
    if !cs.is_joint() {
        return Err(ConfChangeError::NotJoint);
    }
    let mut next = cs.clone();
    next.voters_outgoing.clear();
    let demoted = std::mem::take(&mut next.learners_next);
    next.learners.extend(demoted);
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConfChangeKind::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn plain(voters: &[NodeId], learners: &[NodeId]) -> ConfState {
        ConfState { learners: set(learners), ..ConfState::from_voters(set(voters)) }
    }

    fn change(steps: &[(ConfChangeKind, NodeId)]) -> ConfChange {
        let changes = steps.iter().map(|&(kind, node)| ConfChangeSingle { kind, node }).collect();
        ConfChange { changes, context: Vec::new() }
    }

    #[test]
    fn adding_a_voter_enters_a_joint_config_then_leaves_it() {
        let cs = plain(&[1, 2, 3], &[]);
        let joint = apply(&cs, &change(&[(AddVoter, 4)])).unwrap();
        assert_eq!(joint.voters, set(&[1, 2, 3, 4]));
        assert_eq!(joint.voters_outgoing, set(&[1, 2, 3]));
        assert!(joint.is_joint());
        let done = apply(&joint, &ConfChange::default()).unwrap();
        assert_eq!(done, plain(&[1, 2, 3, 4], &[]));
    }

    #[test]
    fn learner_only_changes_apply_directly() {
        let cs = plain(&[1, 2, 3], &[]);
        let with = apply(&cs, &change(&[(AddLearner, 4)])).unwrap();
        assert_eq!(with, plain(&[1, 2, 3], &[4]));
        let without = apply(&with, &change(&[(Remove, 4)])).unwrap();
        assert_eq!(without, cs);
    }

    #[test]
    fn promotion_moves_a_learner_to_the_incoming_voters() {
        let cs = plain(&[1, 2, 3], &[4]);
        let joint = apply(&cs, &change(&[(AddVoter, 4)])).unwrap();
        assert!(joint.learners.is_empty());
        assert_eq!(joint.voters, set(&[1, 2, 3, 4]));
        assert_eq!(joint.voters_outgoing, set(&[1, 2, 3]));
    }

    #[test]
    fn demoted_voter_keeps_voting_in_the_outgoing_half_until_the_leave() {
        let cs = plain(&[1, 2, 3], &[]);
        let joint = apply(&cs, &change(&[(AddLearner, 3)])).unwrap();
        assert_eq!(joint.voters, set(&[1, 2]));
        assert_eq!(joint.learners_next, set(&[3]));
        assert!(joint.is_voter(3) && !joint.is_learner(3));
        let done = leave_joint(&joint).unwrap();
        assert_eq!(done, plain(&[1, 2], &[3]));
    }

    #[test]
    fn invalid_changes_are_errors() {
        let cs = plain(&[1, 2, 3], &[4]);
        let cases = [
            (change(&[(AddVoter, 1)]), ConfChangeError::AlreadyVoter(1)),
            (change(&[(AddLearner, 4)]), ConfChangeError::AlreadyLearner(4)),
            (change(&[(Remove, 9)]), ConfChangeError::NotMember(9)),
            (change(&[(AddVoter, 0)]), ConfChangeError::ZeroNode),
            (change(&[(AddVoter, 5), (Remove, 5)]), ConfChangeError::Duplicate(5)),
            (change(&[(Remove, 1), (Remove, 2), (Remove, 3)]), ConfChangeError::NoVoters),
            (ConfChange::default(), ConfChangeError::NotJoint),
        ];
        for (cc, want) in cases {
            assert_eq!(apply(&cs, &cc), Err(want), "change {cc:?}");
        }
        let only = plain(&[1], &[]);
        assert_eq!(apply(&only, &change(&[(Remove, 1)])), Err(ConfChangeError::NoVoters));
        assert_eq!(apply(&only, &change(&[(AddLearner, 1)])), Err(ConfChangeError::NoVoters));
    }

    #[test]
    fn no_change_while_joint_except_leaving() {
        let joint = apply(&plain(&[1, 2, 3], &[]), &change(&[(Remove, 3)])).unwrap();
        assert_eq!(apply(&joint, &change(&[(AddVoter, 5)])), Err(ConfChangeError::AlreadyJoint));
        assert_eq!(apply(&joint, &ConfChange::default()).unwrap(), plain(&[1, 2], &[]));
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        for cc in [
            ConfChange::default(),
            change(&[(AddVoter, 4)]),
            change(&[(AddLearner, u64::MAX), (Remove, 1), (AddVoter, 7)]),
        ] {
            assert_eq!(ConfChange::decode(&cc.encode()), Ok(cc));
        }
        let good = change(&[(Remove, 1)]).encode();
        assert!(ConfChange::decode(&[]).is_err());
        assert!(ConfChange::decode(&good[..good.len() - 1]).is_err());
        let mut bad_kind = good.clone();
        bad_kind[5] = 9;
        assert!(ConfChange::decode(&bad_kind).is_err());
        let mut bad_version = good;
        bad_version[0] = 3;
        assert!(ConfChange::decode(&bad_version).is_err());
    }

    #[test]
    fn the_context_round_trips_and_version_one_still_reads() {
        let cc = ConfChange { context: b"member record".to_vec(), ..change(&[(AddVoter, 4)]) };
        assert_eq!(ConfChange::decode(&cc.encode()), Ok(cc));
        // Version 1, as written before contexts: one step, no context.
        let mut v1 = vec![1, 1, 0, 0, 0, 0];
        v1.extend_from_slice(&4u64.to_le_bytes());
        assert_eq!(ConfChange::decode(&v1), Ok(change(&[(AddVoter, 4)])));
    }

    #[test]
    fn a_context_over_the_bound_or_of_the_wrong_length_is_refused() {
        let big = ConfChange { context: vec![7; CONF_CHANGE_CONTEXT_BYTES_MAX + 1], ..change(&[]) };
        let err = ConfChange::decode(&big.encode());
        assert_eq!(err, Err(ConfChangeError::ContextTooLarge(CONF_CHANGE_CONTEXT_BYTES_MAX + 1)));
        let ok = ConfChange { context: vec![7; 3], ..change(&[(Remove, 2)]) }.encode();
        assert!(ConfChange::decode(&ok[..ok.len() - 1]).is_err());
        let mut long = ok.clone();
        long.push(0);
        assert!(ConfChange::decode(&long).is_err());
    }
}
