//! Bounds on every field of a message that arrives from a peer, checked before the core
//! acts on it.
//!
//! Why a module of its own: a peer's bytes are input, and without TLS anyone who reaches
//! the peer port can send them. The core does arithmetic on terms and indices, sizes
//! buffers from snapshot totals and asserts invariants that only an honest peer keeps; a
//! value no honest member could send (a term of `u64::MAX`, a 2^62-byte snapshot) must
//! never reach that code. These checks depend only on the message and a few limits, not
//! on the core's state, so the server runs them on its network tasks (to count, log and
//! drop) and [`crate::Raft::step`] runs them again (so no driver can forget them). Checks
//! that need the core's state (an acknowledgement beyond the leader's log) live next to
//! the code they protect, in `core.rs`.
//!
//! The bounds are far beyond anything a real cluster reaches (a term per millisecond for
//! a million years stays below [`TERM_MAX`]) and leave room for `+ 1` everywhere.
//! Extending: a new message kind needs an arm in [`check_message`] (the match is
//! exhaustive, so the compiler asks for it).

use crate::message::{Message, MessageBody};
use crate::types::{EntryKind, Index, NodeId, SnapshotMeta, Term};
use std::fmt;

/// Largest term accepted from a peer. A member whose term reached it would be unable
/// to campaign again, so a peer's term is refused well before `u64::MAX`.
pub const TERM_MAX: Term = 1 << 62;
/// Furthest a peer's term may be ahead of this member's own. Honest terms grow by one
/// per election (a million years of one election a second stays below it); the check
/// needs the member's term, so [`crate::Raft::step`] makes it. Without it one forged
/// message could lift every member to [`TERM_MAX`], where elections stop for good; with
/// it that takes 2^30 forged messages in a row (TLS stops them all).
pub const TERM_JUMP_MAX: Term = 1 << 32;
/// Largest log index (or commit index, or read index) accepted from a peer.
pub const INDEX_MAX: Index = 1 << 62;
/// Most voters a snapshot's membership may list.
pub const VOTERS_MAX: usize = 1024;

/// The configured limits the checks compare against (from [`crate::Config`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerLimits {
    /// Largest snapshot a follower accepts (it buffers the whole snapshot in memory).
    pub max_snapshot_bytes: u64,
    /// Most entries in one AppendEntries.
    pub max_append_entries: u64,
}

/// Why a peer message was refused. Each is the sender's fault (a broken or hostile
/// peer); the receiver drops the message and counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// The sender or recipient id is 0 ("none").
    ZeroId,
    /// The message is addressed to another member.
    NotForUs {
        /// The recipient the message names.
        to: NodeId,
        /// This member.
        me: NodeId,
    },
    /// The message claims to come from this member itself.
    FromSelf,
    /// A term above [`TERM_MAX`], or an entry or snapshot term above the message's term.
    BadTerm {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: Term,
        /// The largest value allowed there.
        max: Term,
    },
    /// An index above [`INDEX_MAX`].
    IndexTooLarge {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: Index,
    },
    /// More entries in one append than [`PeerLimits::max_append_entries`].
    TooManyEntries {
        /// Entries in the message.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// An append whose entries do not run on from `prev_index + 1`, or whose terms go
    /// backwards or are 0 (every real entry has a leader's term, at least 1; an entry of
    /// term 0 makes the fast-backup hint point before the log and the leader resend the
    /// same append forever).
    EntriesOutOfOrder {
        /// Index of the first offending entry.
        index: Index,
    },
    /// A snapshot larger than [`PeerLimits::max_snapshot_bytes`].
    SnapshotTooLarge {
        /// The size announced.
        total_bytes: u64,
        /// The limit.
        max: u64,
    },
    /// A snapshot chunk that does not lie inside its snapshot, or a `done` flag that
    /// disagrees with whether the chunk ends the snapshot.
    BadChunk {
        /// The chunk's offset.
        offset: u64,
        /// Its length.
        len: u64,
        /// The snapshot's announced size.
        total_bytes: u64,
    },
    /// A membership change entry larger than [`crate::CONF_CHANGE_BYTES_MAX`].
    ConfChangeTooLarge {
        /// Its index.
        index: Index,
        /// Its size in bytes.
        len: usize,
    },
    /// A snapshot membership that is empty, too large, or lists id 0.
    BadVoters {
        /// How many voters it lists.
        count: usize,
    },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::ZeroId => write!(f, "sender or recipient id is 0"),
            Invalid::NotForUs { to, me } => {
                write!(f, "addressed to member {to:x}, this is member {me:x}")
            }
            Invalid::FromSelf => write!(f, "claims to come from this member itself"),
            Invalid::BadTerm { field, value, max } => {
                write!(f, "{field} = {value} exceeds the largest acceptable term {max}")
            }
            Invalid::IndexTooLarge { field, value } => {
                write!(f, "{field} = {value} exceeds the largest acceptable index {INDEX_MAX}")
            }
            Invalid::TooManyEntries { count, max } => {
                write!(f, "append carries {count} entries, more than the limit of {max}")
            }
            Invalid::EntriesOutOfOrder { index } => write!(
                f,
                "append entries out of order at index {index} (indices must run on from \
                 prev_index + 1, terms must not decrease and are at least 1)"
            ),
            Invalid::SnapshotTooLarge { total_bytes, max } => write!(
                f,
                "snapshot of {total_bytes} bytes exceeds the limit of {max} bytes \
                 (raise the maximum snapshot size on this member if it is genuine)"
            ),
            Invalid::BadChunk { offset, len, total_bytes } => write!(
                f,
                "snapshot chunk of {len} bytes at offset {offset} does not fit a \
                 {total_bytes}-byte snapshot"
            ),
            Invalid::ConfChangeTooLarge { index, len } => write!(
                f,
                "membership change entry at index {index} of {len} bytes exceeds the \
                 limit of {} bytes",
                crate::CONF_CHANGE_BYTES_MAX
            ),
            Invalid::BadVoters { count } => {
                write!(f, "snapshot membership of {count} voters is empty, too large or lists 0")
            }
        }
    }
}

impl std::error::Error for Invalid {}

/// Checks every field of `m`, received by member `me`, against the fixed bounds and
/// `limits`. `Ok` means the core may step it; what it *means* (a stale term, a log that
/// does not match) is still the core's to judge.
pub fn check_message(m: &Message, me: NodeId, limits: &PeerLimits) -> Result<(), Invalid> {
    if m.from == 0 || m.to == 0 {
        return Err(Invalid::ZeroId);
    }
    if m.to != me {
        return Err(Invalid::NotForUs { to: m.to, me });
    }
    if m.from == me {
        return Err(Invalid::FromSelf);
    }
    term(m.term, "term", TERM_MAX)?;
    match &m.body {
        MessageBody::PreVote { last_index, last_term }
        | MessageBody::Vote { last_index, last_term, .. } => {
            index(*last_index, "last_index")?;
            term(*last_term, "last_term", m.term)
        }
        MessageBody::PreVoteResp { .. } | MessageBody::VoteResp { .. } => Ok(()),
        MessageBody::Append { prev_index, prev_term, entries, commit } => {
            check_append(m.term, (*prev_index, *prev_term), entries, *commit, limits)
        }
        MessageBody::AppendResp { index: i, reject } => {
            index(*i, "index")?;
            if let Some(hint) = reject {
                term(hint.conflict_term, "conflict_term", m.term)?;
                index(hint.conflict_first_index, "conflict_first_index")?;
                index(hint.log_len, "log_len")?;
            }
            Ok(())
        }
        MessageBody::Heartbeat { commit, .. } => index(*commit, "commit"),
        MessageBody::HeartbeatResp { .. } => Ok(()),
        MessageBody::Snapshot { meta, offset, total_bytes, chunk, done } => {
            check_snapshot_meta(meta, m.term)?;
            check_chunk(*offset, chunk.len() as u64, *total_bytes, *done, limits)
        }
        MessageBody::SnapshotResp { snapshot_index, last_index, .. } => {
            index(*snapshot_index, "snapshot_index")?;
            index(*last_index, "last_index")
        }
        MessageBody::ReadIndex { .. } | MessageBody::TimeoutNow => Ok(()),
        MessageBody::ReadIndexResp { index: i, .. } => index(*i, "index"),
    }
}

fn term(value: Term, field: &'static str, max: Term) -> Result<(), Invalid> {
    if value > max || value > TERM_MAX {
        return Err(Invalid::BadTerm { field, value, max: max.min(TERM_MAX) });
    }
    Ok(())
}

fn index(value: Index, field: &'static str) -> Result<(), Invalid> {
    if value > INDEX_MAX {
        return Err(Invalid::IndexTooLarge { field, value });
    }
    Ok(())
}

fn check_append(
    msg_term: Term,
    (prev_index, prev_term): (Index, Term),
    entries: &[crate::types::Entry],
    commit: Index,
    limits: &PeerLimits,
) -> Result<(), Invalid> {
    index(prev_index, "prev_index")?;
    term(prev_term, "prev_term", msg_term)?;
    index(commit, "commit")?;
    let count = entries.len() as u64;
    if count > limits.max_append_entries {
        return Err(Invalid::TooManyEntries { count, max: limits.max_append_entries });
    }
    // prev_index ≤ INDEX_MAX = 2^62 and count ≤ the limit keep these sums far from u64::MAX.
    index(prev_index.saturating_add(count), "last entry index")?;
    let mut min_term = prev_term.max(1);
    for (k, e) in entries.iter().enumerate() {
        let expected = prev_index + 1 + k as u64;
        if e.index != expected || e.term < min_term {
            return Err(Invalid::EntriesOutOfOrder { index: expected });
        }
        term(e.term, "entry term", msg_term)?;
        if e.kind == EntryKind::ConfChange && e.data.len() > crate::CONF_CHANGE_BYTES_MAX {
            return Err(Invalid::ConfChangeTooLarge { index: e.index, len: e.data.len() });
        }
        min_term = e.term;
    }
    Ok(())
}

fn check_snapshot_meta(meta: &SnapshotMeta, msg_term: Term) -> Result<(), Invalid> {
    index(meta.index, "snapshot index")?;
    term(meta.term, "snapshot term", msg_term)?;
    let conf = &meta.conf;
    let count = conf.voters.len();
    let members =
        count + conf.voters_outgoing.len() + conf.learners.len() + conf.learners_next.len();
    let sets = [&conf.voters, &conf.voters_outgoing, &conf.learners, &conf.learners_next];
    if count == 0 || members > VOTERS_MAX || sets.iter().any(|s| s.contains(&0)) {
        return Err(Invalid::BadVoters { count: members });
    }
    Ok(())
}

fn check_chunk(
    offset: u64,
    len: u64,
    total_bytes: u64,
    done: bool,
    limits: &PeerLimits,
) -> Result<(), Invalid> {
    if total_bytes > limits.max_snapshot_bytes {
        return Err(Invalid::SnapshotTooLarge { total_bytes, max: limits.max_snapshot_bytes });
    }
    let end = offset.checked_add(len);
    let fits = end.is_some_and(|end| end <= total_bytes && done == (end == total_bytes));
    if !fits {
        return Err(Invalid::BadChunk { offset, len, total_bytes });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
