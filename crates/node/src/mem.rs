//! [`LogStore`] implementations: the real one over the `storage` crate, and an in-memory one
//! for tests. The in-memory one: everything persisted is "durable" at once, and
//! [`MemStore::recover`] gives back what a restart would find.

use crate::node::{LogStore, NodeError};
use raft::{Entry, HardState, Restored, Snapshot, SnapshotMeta};

/// A [`LogStore`] that keeps everything in memory.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    /// Number of `sync` calls (each would be one fsync).
    pub syncs: u64,
}

impl MemStore {
    /// What a member restarting on this store recovers.
    pub fn recover(&self) -> Restored {
        Restored {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
        }
    }

    fn first_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(1, |s| s.meta.index + 1)
    }

    fn drop_through(&mut self, index: u64) {
        let keep_from = self.entries.iter().position(|e| e.index > index);
        match keep_from {
            Some(k) => {
                self.entries.drain(..k);
            }
            None => self.entries.clear(),
        }
    }
}

impl LogStore for MemStore {
    fn sync(&mut self) -> Result<(), NodeError> {
        self.syncs += 1;
        Ok(())
    }

    fn append(
        &mut self,
        hard_state: Option<&HardState>,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
    ) -> Result<(), NodeError> {
        if let Some(hs) = hard_state {
            self.hard_state = *hs;
        }
        if let Some(s) = snapshot {
            self.snapshot = Some(s.clone());
            self.entries.clear();
        }
        if let Some(first) = entries.first() {
            let start = self.first_index();
            if first.index < start {
                return Err(NodeError(format!(
                    "entry {} is below the stored log start {start}",
                    first.index
                )));
            }
            let keep = (first.index - start) as usize;
            if keep > self.entries.len() {
                return Err(NodeError(format!("gap before entry {}", first.index)));
            }
            self.entries.truncate(keep);
            self.entries.extend_from_slice(entries);
        }
        Ok(())
    }

    fn persist_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), NodeError> {
        if self.snapshot.as_ref().is_some_and(|s| s.meta.index >= snapshot.meta.index) {
            return Ok(());
        }
        self.drop_through(snapshot.meta.index);
        self.snapshot = Some(snapshot.clone());
        Ok(())
    }

    fn adopt_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), NodeError> {
        Err(NodeError(format!(
            "MemStore cannot adopt snapshot {} written elsewhere; use inline snapshots",
            meta.index
        )))
    }
}

impl<D: storage::Disk> LogStore for storage::Storage<D> {
    fn append(
        &mut self,
        hard_state: Option<&HardState>,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
    ) -> Result<(), NodeError> {
        storage::Storage::append(self, hard_state, snapshot, entries)
            .map_err(|e| NodeError(e.to_string()))
    }

    fn sync(&mut self) -> Result<(), NodeError> {
        storage::Storage::sync(self).map_err(|e| NodeError(e.to_string()))
    }

    fn persist_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), NodeError> {
        match self.save_snapshot(snapshot) {
            Ok(()) | Err(storage::StorageError::SnapshotNotNewer { .. }) => Ok(()),
            Err(e) => Err(NodeError(e.to_string())),
        }
    }

    fn adopt_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), NodeError> {
        match self.adopt_snapshot_file(meta) {
            Ok(()) | Err(storage::StorageError::SnapshotNotNewer { .. }) => Ok(()),
            Err(e) => Err(NodeError(e.to_string())),
        }
    }
}
