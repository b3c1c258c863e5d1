//! The membership invariant: every member's configuration is the one its own log says.
//!
//! The simulator follows each node's log from the outside (the Readies it hands out and
//! the disk it restarts from) and folds the membership-change entries over the base
//! configuration (initial, or the snapshot's). After every event the core's
//! configuration must equal that fold: this catches a change that takes effect at the
//! wrong time (at commit instead of append), one that survives the truncation of its
//! entry, and one lost across a snapshot or a restart.

use crate::checker::Violation;
use raft::{ConfChange, ConfState, Entry, EntryKind, Index, NodeId, Raft, Snapshot};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One node's log as far as membership goes.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConfTrack {
    /// The configuration in force at `base_index`.
    base: ConfState,
    base_index: Index,
    /// Membership-change entries after `base_index` that the node holds.
    changes: BTreeMap<Index, Arc<[u8]>>,
    /// The fold of `changes` over `base`, kept between checks (`None` once the log's
    /// membership entries changed): the check runs after every event, the log's
    /// membership entries change rarely, and folding clones configurations.
    folded: Option<ConfState>,
}

impl ConfTrack {
    /// A node starting from its durable state (`initial` if it has no snapshot).
    pub(crate) fn from_durable(
        initial: &ConfState,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
    ) -> ConfTrack {
        let mut t = ConfTrack { base: initial.clone(), ..ConfTrack::default() };
        if let Some(s) = snapshot {
            t.on_snapshot(s);
        }
        t.on_entries(entries);
        t
    }

    /// The node replaced its log with a snapshot from the leader.
    pub(crate) fn on_snapshot(&mut self, s: &Snapshot) {
        self.base = s.meta.conf.clone();
        self.base_index = s.meta.index;
        self.changes.clear();
        self.folded = None;
    }

    /// The node appended `entries` (replacing whatever it held from the first one on).
    pub(crate) fn on_entries(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        if !self.changes.split_off(&first.index).is_empty() {
            self.folded = None;
        }
        for e in entries.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            if e.index > self.base_index {
                self.changes.insert(e.index, Arc::clone(&e.data));
                self.folded = None;
            }
        }
    }

    /// The configuration the log says, folding (and forgetting) changes at or below
    /// `committed`, which can no longer be truncated. Recomputed only when the log's
    /// membership entries changed or one of them is newly committed.
    fn fold(&mut self, committed: Index) -> &ConfState {
        let newly_committed = self.changes.first_key_value().is_some_and(|(&i, _)| i <= committed);
        if self.folded.is_none() || newly_committed {
            let conf = self.fold_now(committed);
            self.folded = Some(conf);
        }
        self.folded.as_ref().expect("set above")
    }

    /// Folds every change over the base, from scratch.
    fn fold_now(&mut self, committed: Index) -> ConfState {
        let mut conf = self.base.clone();
        let mut folded = Vec::new();
        for (&index, data) in &self.changes {
            // Entries that do not apply are skipped, as the core skips them.
            if let Ok(next) = ConfChange::decode(data).and_then(|cc| cc.apply_to(&conf)) {
                conf = next;
            }
            if index <= committed {
                folded.push((index, conf.clone()));
            }
        }
        if let Some((index, at)) = folded.pop() {
            self.changes = self.changes.split_off(&(index + 1));
            self.base = at;
            self.base_index = index;
        }
        conf
    }

    /// Checks that `raft`'s configuration is what its log says.
    pub(crate) fn check(&mut self, id: NodeId, raft: &Raft) -> Result<(), Violation> {
        let want = self.fold(raft.commit_index());
        if raft.conf_state() != want {
            let details = format!(
                "n{id} runs with configuration {:?}, but its log says {want:?}",
                raft.conf_state()
            );
            return Err(Violation::new("Configuration matches the log", details));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::ConfChangeKind;

    fn conf_entry(index: Index, cc: &ConfChange) -> Entry {
        Entry { term: 1, index, kind: EntryKind::ConfChange, data: cc.encode().into() }
    }

    #[test]
    fn truncated_change_is_forgotten_and_committed_ones_fold_into_the_base() {
        let initial = ConfState::from_voters([1, 2, 3].into());
        let add = ConfChange::single(ConfChangeKind::AddLearner, 4);
        let mut t = ConfTrack::from_durable(&initial, None, &[conf_entry(5, &add)]);
        let with_learner = ConfState { learners: [4].into(), ..initial.clone() };
        assert_eq!(*t.fold(0), with_learner);
        let normal = Entry { term: 2, index: 5, kind: EntryKind::Normal, data: Vec::new().into() };
        t.on_entries(&[normal]);
        assert_eq!(*t.fold(0), initial, "the change was truncated away");
        t.on_entries(&[conf_entry(6, &add)]);
        assert_eq!(*t.fold(6), with_learner);
        assert!(t.changes.is_empty() && t.base_index == 6, "committed changes fold");
    }
}
