//! The leader's view of each follower's replication, and the flow control built on it.
//!
//! A follower is in one of three states (as in etcd raft):
//! - **Probe**: the leader does not know where the follower's log matches its own. It
//!   sends one AppendEntries at a time and waits for the answer (or a heartbeat answer)
//!   before sending another, backing up by whole terms on rejections.
//! - **Replicate**: the logs match up to `match_index`; the leader streams entries
//!   optimistically (pipelining), bounded by the inflight window ([`Inflights`]).
//! - **Snapshot**: the follower needs entries the leader has discarded; the leader
//!   sends its snapshot in chunks, one at a time, resuming from the offset the follower
//!   reports.

use crate::types::Index;
use std::collections::VecDeque;

/// Where a follower's replication stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Finding the point where the logs match; one probe at a time.
    Probe,
    /// Streaming entries within the inflight window.
    Replicate,
    /// Transferring the snapshot at `index`, next chunk from `offset`.
    Snapshot {
        /// Index of the snapshot being sent.
        index: Index,
        /// First byte the follower does not have yet.
        offset: u64,
    },
}

/// The AppendEntries messages in flight to one follower: their last indices and sizes.
/// Bounded in both count and bytes, so a slow follower cannot make the leader queue an
/// unbounded amount of data.
#[derive(Clone, Debug)]
pub struct Inflights {
    entries: VecDeque<(Index, u64)>,
    bytes: u64,
    max_count: usize,
    max_bytes: u64,
}

impl Inflights {
    /// An empty window with the given bounds.
    pub fn new(max_count: usize, max_bytes: u64) -> Self {
        Inflights { entries: VecDeque::new(), bytes: 0, max_count, max_bytes }
    }

    /// True if no more messages may be sent.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.max_count || self.bytes >= self.max_bytes
    }

    /// Records a message whose last entry is `last_index`.
    pub fn add(&mut self, last_index: Index, bytes: u64) {
        if let Some(&(prev, _)) = self.entries.back() {
            assert!(last_index > prev, "inflight indices must increase");
        }
        self.entries.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose last entry is at or below `index` (acknowledged).
    pub fn free_to(&mut self, index: Index) {
        while let Some(&(last, bytes)) = self.entries.front() {
            if last > index {
                break;
            }
            self.entries.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Frees the oldest message (used when a heartbeat answer shows the follower is alive
    /// but acknowledgements were lost).
    pub fn free_first(&mut self) {
        if let Some((_, bytes)) = self.entries.pop_front() {
            self.bytes -= bytes;
        }
    }

    /// Empties the window.
    pub fn reset(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Number of messages in flight.
    pub fn count(&self) -> usize {
        self.entries.len()
    }
}

/// The leader's view of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to match the leader's log.
    pub match_index: Index,
    /// Next index to send.
    pub next_index: Index,
    /// Replication state.
    pub state: ProgressState,
    /// In Probe: a probe is outstanding, wait for its answer.
    pub probe_sent: bool,
    /// In Snapshot: a chunk is outstanding.
    pub chunk_sent: bool,
    /// In Snapshot: the lowest offset the follower asked to resume from, below the
    /// leader's, since the transfer last moved forward. It may be a late answer or the
    /// truth (the follower restarted and late answers of its earlier copy moved the
    /// leader past it), so the leader goes back to it only at the next heartbeat answer.
    pub snapshot_behind: Option<u64>,
    /// The pipelining window.
    pub inflights: Inflights,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Highest ReadIndex round this follower has acknowledged in the current term.
    pub read_round_acked: u64,
    /// Highest commit index this follower has been told and can act on.
    pub commit_sent: Index,
}

impl Progress {
    /// A follower the leader knows nothing about yet: probe from `next_index`.
    pub fn new(next_index: Index, max_count: usize, max_bytes: u64) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            chunk_sent: false,
            snapshot_behind: None,
            inflights: Inflights::new(max_count, max_bytes),
            recent_active: true,
            read_round_acked: 0,
            commit_sent: 0,
        }
    }

    /// True if nothing more may be sent until an answer arrives.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Switches to probing from `match_index + 1`.
    pub fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflights.reset();
        self.next_index = self.next_index.max(self.match_index.saturating_add(1));
    }

    /// Switches to streaming from `match_index + 1`.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.inflights.reset();
        self.next_index = self.match_index.saturating_add(1);
    }

    /// Switches to sending the snapshot at `index` from its first byte.
    pub fn become_snapshot(&mut self, index: Index) {
        self.state = ProgressState::Snapshot { index, offset: 0 };
        self.chunk_sent = false;
        self.snapshot_behind = None;
        self.inflights.reset();
    }

    /// The follower acknowledged entries up to `index`. Returns true if that is news.
    /// Acknowledgements may arrive late, twice or out of order; old ones change nothing.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index.saturating_add(1));
        self.inflights.free_to(index);
        updated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_bound_count_and_bytes() {
        let mut w = Inflights::new(3, 100);
        w.add(1, 10);
        w.add(2, 10);
        assert!(!w.is_full());
        w.add(5, 10);
        assert!(w.is_full(), "count bound");
        w.free_to(2);
        assert_eq!(w.count(), 1);
        assert!(!w.is_full());
        w.add(9, 95);
        assert!(w.is_full(), "byte bound");
        w.free_first();
        w.free_first();
        assert_eq!(w.count(), 0);
        assert!(!w.is_full());
    }

    #[test]
    fn stale_acknowledgement_changes_nothing() {
        let mut p = Progress::new(1, 8, 1 << 20);
        assert!(p.maybe_update(10));
        assert!(!p.maybe_update(7), "a late, smaller ack is not news");
        assert_eq!(p.match_index, 10);
        assert_eq!(p.next_index, 11);
    }
}
