//! The messages Raft peers exchange. The core produces and consumes these; a transport
//! (gRPC in the server, an in-memory queue in the simulator) carries them.

use crate::types::{Entry, Index, NodeId, SnapshotMeta, Term};
use std::sync::Arc;

/// One message between two peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The sender's term (for a pre-vote request: the term it would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// Why a follower rejected an AppendEntries, so the leader can skip a whole term per
/// round trip instead of one entry (the "fast backup" of the Raft paper §5.3 and
/// MIT 6.824).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectHint {
    /// Term of the follower's entry at `prev_index`, or 0 if it has no entry there.
    pub conflict_term: Term,
    /// First index the follower holds with `conflict_term` (0 if `conflict_term` is 0).
    pub conflict_first_index: Index,
    /// The follower's last log index plus one.
    pub log_len: Index,
}

/// The message kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// "Would you vote for me if I campaigned?" Sent with `term` = candidate term + 1
    /// without bumping the sender's own term (Raft thesis §9.6).
    PreVote {
        /// Index of the candidate's last log entry.
        last_index: Index,
        /// Term of the candidate's last log entry.
        last_term: Term,
    },
    /// Answer to [`MessageBody::PreVote`].
    PreVoteResp {
        /// True if the vote is refused.
        reject: bool,
    },
    /// RequestVote (Raft Figure 2).
    Vote {
        /// Index of the candidate's last log entry.
        last_index: Index,
        /// Term of the candidate's last log entry.
        last_term: Term,
        /// The candidate campaigns because the leader transferred leadership to it
        /// (thesis §3.10), so members that hear from that leader consider the request.
        transfer: bool,
    },
    /// Answer to [`MessageBody::Vote`].
    VoteResp {
        /// True if the vote is refused.
        reject: bool,
    },
    /// AppendEntries (Raft Figure 2).
    Append {
        /// Index of the entry just before `entries`.
        prev_index: Index,
        /// Term of that entry.
        prev_term: Term,
        /// Entries to store (may be empty: a probe).
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
    },
    /// Answer to [`MessageBody::Append`].
    AppendResp {
        /// On success: the index of the last entry the follower now holds that matches
        /// the leader's log. On rejection: the `prev_index` that did not match.
        index: Index,
        /// Present when the append was rejected.
        reject: Option<RejectHint>,
    },
    /// Leader keep-alive; also confirms leadership for ReadIndex rounds.
    Heartbeat {
        /// min(leader commit, follower's known match): never beyond what the follower has.
        commit: Index,
        /// The highest ReadIndex round this heartbeat confirms (0: none).
        read_round: u64,
    },
    /// Answer to [`MessageBody::Heartbeat`].
    HeartbeatResp {
        /// Echo of the heartbeat's `read_round`.
        read_round: u64,
    },
    /// One chunk of a snapshot (Raft Figure 13, InstallSnapshot).
    Snapshot {
        /// What the whole snapshot covers.
        meta: SnapshotMeta,
        /// Byte offset of this chunk in the snapshot data.
        offset: u64,
        /// Total size of the snapshot data.
        total_bytes: u64,
        /// The chunk.
        chunk: Arc<[u8]>,
        /// True on the final chunk.
        done: bool,
    },
    /// Answer to one [`MessageBody::Snapshot`] chunk.
    SnapshotResp {
        /// Index of the snapshot this answers.
        snapshot_index: Index,
        /// Bytes the follower holds contiguously from offset 0; the leader sends from here.
        next_offset: u64,
        /// True once the follower has installed the snapshot (or already has its state).
        done: bool,
        /// The follower's last log index after installing (meaningful when `done`).
        last_index: Index,
    },
    /// A follower asks the leader for a read index on behalf of one of its clients.
    ReadIndex {
        /// The follower's opaque id for the read.
        ctx: u64,
    },
    /// Leadership transfer (thesis §3.10): the leader tells a caught-up member to start
    /// an election at once.
    TimeoutNow,
    /// The leader's answer to [`MessageBody::ReadIndex`].
    ReadIndexResp {
        /// Echo of the request's `ctx`.
        ctx: u64,
        /// The index the read must wait for; 0 means refused (retry elsewhere).
        index: Index,
    },
}

impl Message {
    /// True for answers whose content depends on the sender's term, vote or log, which
    /// must therefore be durable before the answer leaves the node.
    pub fn needs_durable_state(&self) -> bool {
        matches!(
            self.body,
            MessageBody::VoteResp { .. }
                | MessageBody::AppendResp { .. }
                | MessageBody::SnapshotResp { .. }
        )
    }

    /// Approximate encoded size, for message-size and inflight accounting.
    pub fn size_bytes(&self) -> u64 {
        let body = match &self.body {
            MessageBody::Append { entries, .. } => entries.iter().map(|e| e.size_bytes()).sum(),
            MessageBody::Snapshot { chunk, .. } => chunk.len() as u64,
            _ => 0,
        };
        body + 48
    }

    /// A short name for traces and counters.
    pub fn kind_name(&self) -> &'static str {
        match self.body {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResp { .. } => "PreVoteResp",
            MessageBody::Vote { .. } => "Vote",
            MessageBody::VoteResp { .. } => "VoteResp",
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResp { .. } => "AppendResp",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResp { .. } => "HeartbeatResp",
            MessageBody::Snapshot { .. } => "Snapshot",
            MessageBody::SnapshotResp { .. } => "SnapshotResp",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResp { .. } => "ReadIndexResp",
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }
}
