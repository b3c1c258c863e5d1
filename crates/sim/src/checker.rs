//! The safety checkers. They run incrementally, after every event, against registries that
//! span the whole run (so a violation is caught at the event that causes it):
//!
//! - **Election Safety** (Raft Figure 3): at most one leader per term; also at most one
//!   vote per term per node, checked on the hard states a node writes.
//! - **Log Matching**: a registry `(index, term) → (entry hash, previous entry's term)`
//!   that every entry any node persists must agree with. Agreement on the previous term,
//!   by induction, makes logs identical up to any shared `(index, term)`.
//! - **Leader Completeness**: the highest committed `(index, term)` ever observed must be
//!   in the log of every leader of a later term (checked when a node becomes leader, and
//!   against the current leaders when the commit point moves).
//! - **State Machine Safety**: a registry of applied entries (term, hash and a running
//!   digest of the sequence); every node applies densely from its snapshot on, only
//!   committed entries, and the same entry at each index. A snapshot's digest must equal
//!   the digest of the applied sequence up to its index.
//!
//! The durability and driver-contract checks live next to the events that they judge, in
//! the cluster.

use crate::node::StateMachine;
use crate::trace::Fnv64;
use raft::{Entry, EntryKind, Index, NodeId, Raft, SnapshotMeta, Term};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

/// A broken invariant: the run is wrong and the seed reproduces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant, named as in the Raft paper where it has a name there.
    pub invariant: &'static str,
    /// What was observed, with node ids, indices and terms.
    pub details: String,
}

impl Violation {
    pub(crate) fn new(invariant: &'static str, details: String) -> Violation {
        Violation { invariant, details }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.details)
    }
}

/// Identity of an entry's content: kind and payload.
pub(crate) fn entry_hash(e: &Entry) -> u64 {
    let mut h = Fnv64::new();
    h.write(&[e.kind.to_u8()]);
    h.write(&e.data);
    h.finish()
}

/// The [`entry_hash`] of a command entry carrying `data`.
pub(crate) fn command_hash(data: &[u8]) -> u64 {
    let mut h = Fnv64::new();
    h.write(&[EntryKind::Normal.to_u8()]);
    h.write(data);
    h.finish()
}

/// Extends the digest of an applied sequence by one entry.
pub(crate) fn chain_next(chain: u64, index: Index, entry_hash: u64) -> u64 {
    let mut h = Fnv64::new();
    h.write_u64(chain);
    h.write_u64(index);
    h.write_u64(entry_hash);
    h.finish()
}

/// What was applied at one index (by whichever node applied it first).
#[derive(Clone, Debug)]
pub(crate) struct AppliedRecord {
    pub(crate) term: Term,
    pub(crate) entry_hash: u64,
    pub(crate) chain: u64,
    pub(crate) data: Arc<[u8]>,
}

/// Registries over the whole run. The hash maps are only ever looked up, never iterated,
/// so their random iteration order cannot reach the output.
#[derive(Default)]
pub(crate) struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    log: HashMap<(Index, Term), (u64, Term)>,
    /// Applied entry at index `i` is `applied[i - 1]`; dense by construction.
    applied: Vec<AppliedRecord>,
    /// First index at which a command with this hash was applied.
    command_index: HashMap<u64, Index>,
    /// Highest committed (index, term) observed on any node.
    committed: (Index, Term),
}

impl Checker {
    /// Election Safety: `id` leads `term`.
    pub(crate) fn on_leader(&mut self, id: NodeId, term: Term) -> Result<(), Violation> {
        match self.leaders.insert(term, id) {
            Some(other) if other != id => Err(Violation::new(
                "Election Safety",
                format!("n{id} became leader of term {term}, which n{other} already leads"),
            )),
            _ => Ok(()),
        }
    }

    /// Leader Completeness for one leader: it holds the highest committed entry.
    pub(crate) fn check_leader_complete(&self, id: NodeId, raft: &Raft) -> Result<(), Violation> {
        let (index, term) = self.committed;
        if index == 0 || raft.term() <= term || raft.snapshot_meta().index >= index {
            return Ok(());
        }
        match raft.term_at(index) {
            Some(t) if t == term => Ok(()),
            other => Err(Violation::new(
                "Leader Completeness",
                format!(
                    "n{id} leads term {} but holds {} at index {index}, where an entry of term {term} is committed (its last index is {})",
                    raft.term(),
                    other.map_or("nothing".to_string(), |t| format!("term {t}")),
                    raft.last_index()
                ),
            )),
        }
    }

    /// A node's commit index reached `(index, term)`. True if that is a new high point.
    pub(crate) fn on_commit(&mut self, index: Index, term: Term) -> bool {
        if index <= self.committed.0 {
            return false;
        }
        self.committed = (index, term);
        true
    }

    /// Log Matching: `entries` (contiguous, from one Ready) and the term before them.
    pub(crate) fn on_entries(
        &mut self,
        id: NodeId,
        entries: &[Entry],
        prev_term: Term,
    ) -> Result<(), Violation> {
        let mut prev = (entries[0].index - 1, prev_term);
        for e in entries {
            if e.index != prev.0 + 1 || e.term < prev.1 {
                return Err(Violation::new(
                    "Log Matching",
                    format!(
                        "n{id} persists entry ({}, t{}) right after ({}, t{}): indices must be dense and terms non-decreasing",
                        e.index, e.term, prev.0, prev.1
                    ),
                ));
            }
            let seen = (entry_hash(e), prev.1);
            match self.log.insert((e.index, e.term), seen) {
                Some(old) if old != seen => {
                    return Err(Violation::new(
                        "Log Matching",
                        format!(
                            "n{id} persists entry ({}, t{}) with hash {:016x} after term {}, but another log holds ({}, t{}) with hash {:016x} after term {}",
                            e.index, e.term, seen.0, seen.1, e.index, e.term, old.0, old.1
                        ),
                    ))
                }
                _ => {}
            }
            prev = (e.index, e.term);
        }
        Ok(())
    }

    /// State Machine Safety for one applied entry; `sm` is the node's state before it.
    pub(crate) fn on_apply(
        &mut self,
        id: NodeId,
        sm: &StateMachine,
        e: &Entry,
    ) -> Result<u64, Violation> {
        let hash = entry_hash(e);
        let chain = chain_next(sm.chain, e.index, hash);
        let slot = (e.index - 1) as usize;
        if slot == self.applied.len() {
            if e.kind == EntryKind::Normal {
                self.command_index.entry(hash).or_insert(e.index);
            }
            let data = e.data.clone();
            self.applied.push(AppliedRecord { term: e.term, entry_hash: hash, chain, data });
            return Ok(chain);
        }
        let Some(r) = self.applied.get(slot) else {
            return Err(Violation::new(
                "State Machine Safety",
                format!(
                    "n{id} applies index {} but no node ever applied {}",
                    e.index,
                    self.applied.len() + 1
                ),
            ));
        };
        if (r.term, r.entry_hash, r.chain) != (e.term, hash, chain) {
            return Err(Violation::new(
                "State Machine Safety",
                format!(
                    "n{id} applies ({}, t{}) hash {hash:016x} digest {chain:016x}; another node applied ({}, t{}) hash {:016x} digest {:016x} there",
                    e.index, e.term, e.index, r.term, r.entry_hash, r.chain
                ),
            ));
        }
        Ok(chain)
    }

    /// A snapshot's state must be the applied sequence up to its index.
    pub(crate) fn check_snapshot(
        &self,
        id: NodeId,
        meta: &SnapshotMeta,
        sm: &StateMachine,
    ) -> Result<(), Violation> {
        if meta.index == 0 {
            return Ok(());
        }
        let ok = self
            .applied
            .get((meta.index - 1) as usize)
            .is_some_and(|r| r.term == meta.term && r.chain == sm.chain);
        if ok {
            return Ok(());
        }
        Err(Violation::new(
            "State Machine Safety",
            format!(
                "n{id} installs a snapshot at ({}, t{}) with digest {:016x} that matches no applied history",
                meta.index, meta.term, sm.chain
            ),
        ))
    }

    /// What was applied at `index`.
    pub(crate) fn applied_at(&self, index: Index) -> Option<&AppliedRecord> {
        index.checked_sub(1).and_then(|slot| self.applied.get(slot as usize))
    }

    /// Where the command with this hash was first applied.
    pub(crate) fn command_index(&self, hash: u64) -> Option<Index> {
        self.command_index.get(&hash).copied()
    }

    /// Distinct commands applied (by payload).
    pub(crate) fn commands_committed(&self) -> u64 {
        self.command_index.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::{Config, HardState, Restored};
    use std::collections::BTreeSet;

    fn entry(index: Index, term: Term, data: &str) -> Entry {
        Entry { index, term, kind: EntryKind::Normal, data: data.as_bytes().into() }
    }

    #[test]
    fn two_leaders_in_one_term_break_election_safety() {
        let mut c = Checker::default();
        c.on_leader(1, 3).unwrap();
        c.on_leader(1, 3).unwrap();
        c.on_leader(2, 4).unwrap();
        assert_eq!(c.on_leader(3, 3).unwrap_err().invariant, "Election Safety");
    }

    #[test]
    fn one_index_and_term_with_two_contents_or_predecessors_breaks_log_matching() {
        let mut c = Checker::default();
        c.on_entries(1, &[entry(1, 1, "a"), entry(2, 1, "b")], 0).unwrap();
        c.on_entries(2, &[entry(2, 1, "b")], 1).unwrap();
        assert!(c.on_entries(3, &[entry(2, 1, "x")], 1).is_err(), "other content");
        assert!(c.on_entries(3, &[entry(3, 2, "c")], 1).is_ok());
        assert!(c.on_entries(4, &[entry(3, 2, "c")], 2).is_err(), "other predecessor");
        let gap = [entry(4, 2, "d"), entry(6, 2, "e")];
        assert!(c.on_entries(4, &gap, 2).is_err(), "not contiguous");
        assert!(c.on_entries(4, &[entry(4, 1, "c")], 2).is_err(), "term went back");
    }

    #[test]
    fn two_entries_applied_at_one_index_break_state_machine_safety() {
        let mut c = Checker::default();
        let sm = StateMachine::default();
        let chain = c.on_apply(1, &sm, &entry(1, 1, "a")).unwrap();
        assert_eq!(c.on_apply(2, &sm, &entry(1, 1, "a")), Ok(chain));
        assert!(c.on_apply(3, &sm, &entry(1, 2, "b")).is_err());
        assert!(c.on_apply(3, &sm, &entry(3, 2, "b")).is_err(), "a gap in the applied history");
        let good = StateMachine { applied_index: 1, chain, commands: 1 };
        let meta = SnapshotMeta { index: 1, term: 1, ..SnapshotMeta::default() };
        c.check_snapshot(1, &meta, &good).unwrap();
        let forged = StateMachine { chain: chain ^ 1, ..good };
        assert!(c.check_snapshot(1, &meta, &forged).is_err());
    }

    #[test]
    fn a_later_leader_missing_a_committed_entry_breaks_leader_completeness() {
        let mut c = Checker::default();
        assert!(c.on_commit(2, 2));
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        let restored = Restored {
            hard_state: HardState { term: 5, vote: 1, commit: 1 },
            snapshot: None,
            entries: vec![entry(1, 1, "a"), entry(2, 1, "stale")],
        };
        let raft = Raft::restore(Config::new(1), &voters, restored).unwrap();
        let v = c.check_leader_complete(1, &raft).unwrap_err();
        assert_eq!(v.invariant, "Leader Completeness");
    }
}
