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
}

impl EntryKind {
    /// Stable one-byte encoding, for storage and wire formats.
    pub fn to_u8(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::Noop => 1,
        }
    }

    /// Inverse of [`EntryKind::to_u8`]; `None` for an unknown byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::Noop),
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

/// The membership: who votes. A set, not a count, so membership changes can come later.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfState {
    /// The voting members.
    pub voters: BTreeSet<NodeId>,
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
