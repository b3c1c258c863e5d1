//! The in-memory Raft log: a snapshot followed by the entries after it.
//!
//! Indices are absolute. `entries[k]` has index `offset + 1 + k`, so discarding a
//! prefix (compaction, trimming) or replacing everything with a received snapshot
//! changes the offset, never an index.
//!
//! The offset is the snapshot's index, or later: entries that are applied and that no
//! follower is known to need are *trimmed* from memory before the next snapshot covers
//! them (see [`RaftLog::trim`]; they stay in the driver's durable log). Only their terms
//! are kept, as runs, so [`RaftLog::term_at`] answers for every index from the
//! snapshot's on; their contents are gone, and a follower that needs them gets a newer
//! snapshot instead.
//!
//! Besides the entries, the log tracks four positions:
//! - `committed`: known committed (Raft Figure 2 `commitIndex`);
//! - `applied`: handed to the driver for applying;
//! - `persisted`: entries up to here are durable *and* still the ones in memory;
//! - `unstable`: entries from here on have not been handed to the driver to persist.

use crate::types::{Entry, Index, Snapshot, Term};

pub(crate) struct RaftLog {
    pub(crate) snapshot: Snapshot,
    /// The index before `entries[0]`: the snapshot's, or the last trimmed entry's.
    offset: Index,
    /// The terms of the trimmed entries `(snapshot.meta.index, offset]`, as runs
    /// `(first index, term)` in index order; empty when nothing is trimmed.
    trimmed_terms: Vec<(Index, Term)>,
    entries: Vec<Entry>,
    pub(crate) committed: Index,
    pub(crate) applied: Index,
    pub(crate) persisted: Index,
    unstable: Index,
    /// A snapshot received from the leader, not yet handed to the driver.
    pub(crate) pending_snapshot: Option<Snapshot>,
}

impl RaftLog {
    /// A log recovered from storage: `entries` follow `snapshot` contiguously and are all
    /// durable.
    pub(crate) fn restore(snapshot: Snapshot, entries: Vec<Entry>, commit: Index) -> Self {
        let first = snapshot.meta.index + 1;
        for (k, e) in entries.iter().enumerate() {
            assert_eq!(e.index, first + k as u64, "restored entries must be contiguous");
        }
        let snap_index = snapshot.meta.index;
        let last = snap_index + entries.len() as u64;
        RaftLog {
            snapshot,
            offset: snap_index,
            trimmed_terms: Vec::new(),
            entries,
            committed: commit.clamp(snap_index, last),
            applied: snap_index,
            persisted: last,
            unstable: last + 1,
            pending_snapshot: None,
        }
    }

    /// The first entry held in memory.
    pub(crate) fn first_index(&self) -> Index {
        self.offset + 1
    }

    /// The last entry trimmed from memory (see [`RaftLog::trim`]), or the snapshot's
    /// index if none is.
    pub(crate) fn trimmed_to(&self) -> Index {
        self.offset
    }

    pub(crate) fn last_index(&self) -> Index {
        self.offset + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> Term {
        match self.entries.last() {
            Some(e) => e.term,
            None => self.term_at(self.offset).expect("the offset's term is kept"),
        }
    }

    /// The term of the entry at `index`, from the snapshot's index on (trimmed entries
    /// included); `None` below it or past the end.
    pub(crate) fn term_at(&self, index: Index) -> Option<Term> {
        let snap = &self.snapshot.meta;
        if index == snap.index {
            return Some(snap.term);
        }
        if index > snap.index && index <= self.offset {
            let run = self.trimmed_terms.partition_point(|&(first, _)| first <= index);
            return Some(self.trimmed_terms[run.checked_sub(1)?].1);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: Index) -> Option<&Entry> {
        if index < self.first_index() {
            return None;
        }
        self.entries.get((index - self.first_index()) as usize)
    }

    /// Entries in `[lo, hi]`, at least one if any exist, at most about `max_bytes`.
    pub(crate) fn slice(&self, lo: Index, hi: Index, max_bytes: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut i = lo;
        while i <= hi {
            let Some(e) = self.entry(i) else { break };
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
            i += 1;
        }
        out
    }

    /// Raft §5.4.1: is a log ending at (`last_index`, `last_term`) at least as up to date
    /// as this one? Compare last terms first, then lengths.
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The first index of the run of entries with `term` that contains `index`.
    pub(crate) fn first_index_of_term(&self, index: Index, term: Term) -> Index {
        let mut i = index;
        while i > self.snapshot.meta.index + 1 && self.term_at(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// The last index at or below `index` whose term is `term`, if the log has one.
    /// Terms never decrease along the log, so the scan stops at the first smaller term.
    pub(crate) fn last_index_of_term(&self, index: Index, term: Term) -> Option<Index> {
        let mut i = index.min(self.last_index());
        loop {
            match self.term_at(i) {
                Some(t) if t == term => return Some(i),
                Some(t) if t > term && i > self.snapshot.meta.index => i -= 1,
                _ => return None,
            }
        }
    }

    /// A leader appends a new entry at the end.
    pub(crate) fn append(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index() + 1, "leader appends at the end");
        assert!(entry.term >= self.last_term(), "terms never decrease along the log");
        self.entries.push(entry);
    }

    /// AppendEntries receiver rules 2–4 (Raft Figure 2). Returns the index of the last
    /// entry of the message if `prev` matches, else `None`. An entry already present with
    /// the same term is kept as is: a stale or reordered message never truncates entries
    /// that match (§5.3: truncate only "if an existing entry conflicts").
    pub(crate) fn try_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        entries: &[Entry],
    ) -> Option<Index> {
        if self.term_at(prev_index) != Some(prev_term) {
            return None;
        }
        for (k, e) in entries.iter().enumerate() {
            assert_eq!(e.index, prev_index + 1 + k as u64, "entries must be contiguous");
            if e.index <= self.offset {
                // Committed (trimmed entries are applied): it matches (Log Matching).
                continue;
            }
            match self.term_at(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    assert!(
                        e.index > self.committed,
                        "conflict at committed index {} (committed {})",
                        e.index,
                        self.committed
                    );
                    self.truncate_from(e.index);
                    self.entries.extend_from_slice(&entries[k..]);
                    break;
                }
                None => {
                    self.entries.extend_from_slice(&entries[k..]);
                    break;
                }
            }
        }
        Some(prev_index + entries.len() as u64)
    }

    fn truncate_from(&mut self, index: Index) {
        let keep = (index - self.first_index()) as usize;
        self.entries.truncate(keep);
        self.unstable = self.unstable.min(index);
        self.persisted = self.persisted.min(index - 1);
    }

    pub(crate) fn commit_to(&mut self, index: Index) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit {index} beyond last index {}",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// Entries not yet handed to the driver to persist; marks them handed out.
    pub(crate) fn take_unstable(&mut self) -> Vec<Entry> {
        if self.unstable > self.last_index() {
            return Vec::new();
        }
        let from = self.unstable.max(self.first_index());
        let out = self.entries[(from - self.first_index()) as usize..].to_vec();
        self.unstable = self.last_index() + 1;
        out
    }

    pub(crate) fn has_unstable(&self) -> bool {
        self.unstable <= self.last_index()
    }

    /// The durable write that handed out entries up to `index` with `term` completed.
    pub(crate) fn persisted_to(&mut self, index: Index, term: Term) {
        // If the entry was replaced since, a later write covers its replacement.
        if index > self.persisted && self.term_at(index) == Some(term) {
            self.persisted = index.min(self.unstable - 1);
        }
    }

    /// The highest index that may be applied now: committed and durable here.
    pub(crate) fn applicable(&self) -> Index {
        self.committed.min(self.persisted)
    }

    pub(crate) fn has_next_committed(&self) -> bool {
        self.applicable() > self.applied
    }

    /// Committed entries not yet handed out for applying; marks them handed out.
    pub(crate) fn take_committed(&mut self) -> Vec<Entry> {
        let hi = self.applicable();
        if hi <= self.applied {
            return Vec::new();
        }
        let lo = self.applied + 1;
        let out = self.entries
            [(lo - self.first_index()) as usize..=(hi - self.first_index()) as usize]
            .to_vec();
        self.applied = hi;
        out
    }

    /// Discards entries up to the service's snapshot (which must be applied already) and
    /// returns them, unfreed: the kept tail moves to a new vector, so this costs
    /// O(entries kept), not O(entries dropped).
    pub(crate) fn compact(&mut self, snapshot: Snapshot) -> Vec<Entry> {
        let index = snapshot.meta.index;
        assert!(index > self.snapshot.meta.index && index <= self.applied);
        if index <= self.offset {
            // Covers trimmed entries only: keep the runs of those after it.
            let after = (index < self.offset).then(|| self.term_at(index + 1)).flatten();
            self.trimmed_terms.retain(|&(first, _)| first > index + 1);
            if let Some(term) = after {
                self.trimmed_terms.insert(0, (index + 1, term));
            }
            self.snapshot = snapshot;
            return Vec::new();
        }
        let drop = (index - self.offset) as usize;
        let kept = self.entries.split_off(drop);
        self.snapshot = snapshot;
        self.offset = index;
        self.trimmed_terms.clear();
        std::mem::replace(&mut self.entries, kept)
    }

    /// Drops the entries up to `to` (at most the applied index) from memory, keeping their
    /// terms. They stay in the driver's durable log until a
    /// snapshot covers them; only a follower that needs them is affected, and it gets a
    /// snapshot instead (the core asks the driver for one, `Raft::wants_snapshot`).
    /// Costs O(entries kept): call it for many entries at a time.
    pub(crate) fn trim(&mut self, to: Index) {
        let to = to.min(self.applied);
        if to <= self.offset {
            return;
        }
        for e in self.entries.drain(..(to - self.offset) as usize) {
            if self.trimmed_terms.last().is_none_or(|&(_, term)| term != e.term) {
                self.trimmed_terms.push((e.index, e.term));
            }
        }
        self.offset = to;
    }

    /// Replaces the whole log with a snapshot received from the leader (InstallSnapshot
    /// receiver rules 6–8, Raft Figure 13, for the case where no entry at the snapshot's
    /// index matches).
    pub(crate) fn install(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        assert!(index > self.committed, "never install a snapshot older than the commit");
        self.entries.clear();
        self.trimmed_terms.clear();
        self.offset = index;
        self.persisted = self.persisted.min(self.snapshot.meta.index);
        self.snapshot = snapshot.clone();
        self.committed = index;
        self.applied = index;
        self.unstable = index + 1;
        self.pending_snapshot = Some(snapshot);
    }
}
