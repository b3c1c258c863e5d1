//! Plain data types shared by the core, the storage layer and the drivers.

use std::collections::BTreeSet;
use std::sync::Arc;

/// A member of the cluster. `0` is never a valid id (it means "none").
pub type NodeId = u64;
/// A Raft term. Terms start at 0 and only grow.
pub type Term = u64;
/// A log index. The first real entry has index 1; 0 means "before the log".
pub type Index = u64;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A command for the replicated state machine.
    Normal,
    /// The empty entry a new leader appends so earlier entries commit (Raft §5.4.2, §8).
    Noop,
    /// A membership change: an encoded [`crate::ConfChange`]. It takes effect on every
    /// member as soon as it is appended to that member's log, not when it commits.
    ConfChange,
}

impl EntryKind {
    /// Stable one-byte encoding, for storage and wire formats.
    pub fn to_u8(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::Noop => 1,
            EntryKind::ConfChange => 2,
        }
    }

    /// Inverse of [`EntryKind::to_u8`]; `None` for an unknown byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::Noop),
            2 => Some(EntryKind::ConfChange),
            _ => None,
        }
    }
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The absolute position in the log.
    pub index: Index,
    /// What the entry carries.
    pub kind: EntryKind,
    /// The command (empty for a no-op). Shared, so copies into messages are cheap.
    pub data: Arc<[u8]>,
}

impl Entry {
    /// Bytes this entry counts for against message and inflight limits.
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + 24
    }
}

/// The state that must be durable before the node answers anything that depends on it
/// (Raft Figure 2, "Persistent state on all servers"), plus the commit index, so a
/// restarted node can apply what it knows committed without waiting for a leader. The
/// commit index vouches for the entries it covers, so it must be durable only together
/// with or after them (the simulator found a torn write that kept a hard state without the
/// entries written with it: the restarted node applied stale entries).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// Latest term this server has seen.
    pub term: Term,
    /// Candidate that received this server's vote in `term`, or 0.
    pub vote: NodeId,
    /// Highest index known committed when this state was written.
    pub commit: Index,
}

/// The membership, in the shape of etcd's `ConfState` (joint consensus, Raft thesis §4.3).
///
/// Outside a joint configuration `voters_outgoing` is empty and a majority of `voters`
/// decides. While joint, a decision (commit, election) needs a majority of `voters` *and*
/// a majority of `voters_outgoing`. Learners receive the log but never vote or count.
/// `learners_next` holds members that are voters in the outgoing half and become learners
/// once the joint configuration is left (a member cannot be a voter and a learner at once).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfState {
    /// The voting members (the incoming half while joint).
    pub voters: BTreeSet<NodeId>,
    /// The outgoing voters while joint; empty otherwise.
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Members that receive the log but do not vote.
    pub learners: BTreeSet<NodeId>,
    /// Outgoing voters that become learners when the joint configuration is left.
    pub learners_next: BTreeSet<NodeId>,
}

impl ConfState {
    /// A plain (non-joint) configuration of `voters` and no learners.
    pub fn from_voters(voters: BTreeSet<NodeId>) -> Self {
        ConfState { voters, ..ConfState::default() }
    }

    /// True while in a joint configuration.
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// True if `id` votes in either half.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    /// True if `id` is a learner and not a voter in either half.
    pub fn is_learner(&self, id: NodeId) -> bool {
        !self.is_voter(id) && (self.learners.contains(&id) || self.learners_next.contains(&id))
    }

    /// Every member that receives the log: voters of both halves and learners.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        all.extend(&self.voters_outgoing);
        all.extend(&self.learners);
        all.extend(&self.learners_next);
        all
    }

    /// Every member that votes in either half.
    pub fn all_voters(&self) -> BTreeSet<NodeId> {
        self.voters.union(&self.voters_outgoing).copied().collect()
    }
}

/// What a snapshot covers: everything up to and including `index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Last log index the snapshot includes.
    pub index: Index,
    /// Term of the entry at `index`.
    pub term: Term,
    /// Membership as of `index`.
    pub conf: ConfState,
}

/// A state machine snapshot: metadata plus the service's opaque bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The service's serialized state.
    pub data: Arc<[u8]>,
}
