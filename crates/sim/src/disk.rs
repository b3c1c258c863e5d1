//! The simulated disk of one node: its durable Raft state (hard state, snapshot, log) and a
//! FIFO of writes that are issued but not yet synced.
//!
//! A write is one Ready's persist part, recorded as a sequence of records (hard state,
//! snapshot, then one record per entry, as a sequential WAL would append them). Writes
//! complete in order after a random latency; only then does the driver call
//! `on_persisted`. A crash keeps everything synced, may keep a prefix of the records of
//! the oldest unsynced write (a torn write) and loses every later one. This stands in for
//! the real WAL and its crash-simulating disk (crates/storage), which will replace it.

use raft::{Entry, HardState, Index, Rng, Snapshot, Term};
use std::collections::VecDeque;

/// Timing and failure behaviour of the simulated disks.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskConfig {
    /// Shortest write-to-sync latency. 0 together with `sync_max_us == 0` means an
    /// in-memory store: writes are durable at once.
    pub sync_min_us: u64,
    /// Longest ordinary write-to-sync latency.
    pub sync_max_us: u64,
    /// Chance that a sync is slow (a stall behind other IO).
    pub slow_sync: f64,
    /// Longest slow sync.
    pub slow_sync_max_us: u64,
    /// Chance that a crash leaves a prefix of the oldest unsynced write on disk.
    pub torn_write: f64,
    /// A deliberately broken driver that reports writes durable as soon as they are
    /// issued. Never set outside tests of the checkers themselves: it exists to show that
    /// they catch a persist-before-reply bug.
    pub ack_before_sync: bool,
}

impl DiskConfig {
    /// Writes are durable the moment they are issued (benchmarks, pure protocol tests).
    pub fn instant() -> DiskConfig {
        DiskConfig {
            sync_min_us: 0,
            sync_max_us: 0,
            slow_sync: 0.0,
            slow_sync_max_us: 0,
            torn_write: 0.0,
            ack_before_sync: false,
        }
    }

    /// An SSD-like disk: 0.05–1 ms syncs, a rare 20 ms stall, half of crashes tear a write.
    pub fn ssd() -> DiskConfig {
        DiskConfig {
            sync_min_us: 50,
            sync_max_us: 1_000,
            slow_sync: 0.01,
            slow_sync_max_us: 20_000,
            torn_write: 0.5,
            ack_before_sync: false,
        }
    }

    pub(crate) fn is_instant(&self) -> bool {
        self.sync_max_us == 0 && self.slow_sync == 0.0
    }

    pub(crate) fn sample_latency_us(&self, rng: &mut Rng) -> u64 {
        if self.slow_sync > 0.0 && rng.chance(self.slow_sync) {
            return rng.range(self.sync_max_us, self.slow_sync_max_us.max(self.sync_max_us) + 1);
        }
        rng.range(self.sync_min_us, self.sync_max_us + 1)
    }
}

/// What survives a crash: exactly what a restarted node recovers from.
#[derive(Clone, Debug, Default)]
pub struct DurableState {
    /// The last hard state written.
    pub hard_state: HardState,
    /// The newest snapshot written.
    pub snapshot: Option<Snapshot>,
    /// The log after the snapshot, contiguous from `snapshot_index() + 1`.
    pub entries: Vec<Entry>,
}

impl DurableState {
    /// Index the snapshot covers (0 without one).
    pub fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }

    /// Last index stored (the snapshot's if the log is empty).
    pub fn last_index(&self) -> Index {
        self.snapshot_index() + self.entries.len() as u64
    }

    /// Term of the stored entry at `index` (the snapshot's own index included).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        let snap = self.snapshot_index();
        if index == snap {
            return Some(self.snapshot.as_ref().map_or(0, |s| s.meta.term));
        }
        if index < snap || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - snap - 1) as usize].term)
    }

    /// Stores a snapshot. As Raft Figure 13 says for InstallSnapshot: if the log holds the
    /// snapshot's last entry, the entries after it stay; otherwise the whole log goes. A
    /// snapshot not newer than the stored one changes nothing.
    pub(crate) fn install_snapshot(&mut self, snap: &Snapshot) {
        let old = self.snapshot_index();
        if snap.meta.index <= old && self.snapshot.is_some() {
            return;
        }
        if self.term_at(snap.meta.index) == Some(snap.meta.term) {
            self.entries.drain(..(snap.meta.index - old) as usize);
        } else {
            self.entries.clear();
        }
        self.snapshot = Some(snap.clone());
    }

    /// Appends entries; entries at indices already stored replace the stored suffix.
    /// Entries the snapshot already covers are skipped.
    pub(crate) fn write_entries(&mut self, entries: &[Entry]) -> Result<(), String> {
        let snap = self.snapshot_index();
        let skip = entries.iter().take_while(|e| e.index <= snap).count();
        let new = &entries[skip..];
        let Some(first) = new.first() else { return Ok(()) };
        let last = self.last_index();
        if first.index > last + 1 {
            return Err(format!(
                "a write of entries from index {} would leave a gap after the stored log, which ends at {last}",
                first.index
            ));
        }
        if new.windows(2).any(|w| w[1].index != w[0].index + 1) {
            return Err(format!("a write of entries from index {} is not contiguous", first.index));
        }
        self.entries.truncate((first.index - snap - 1) as usize);
        self.entries.extend_from_slice(new);
        Ok(())
    }

    /// Applies the first `records` records of `w` (all of them with `usize::MAX`).
    pub(crate) fn apply(&mut self, w: &PendingWrite, records: usize) -> Result<(), String> {
        // The persist order of the core's contract: snapshot, entries, then hard state,
        // so a torn write that kept the hard state kept everything its commit index
        // vouches for.
        let mut left = records;
        if let Some(s) = &w.snapshot {
            if left == 0 {
                return Ok(());
            }
            self.install_snapshot(s);
            left -= 1;
        }
        let n = left.min(w.entries.len());
        self.write_entries(&w.entries[..n])?;
        left -= n;
        if let Some(hs) = w.hard_state {
            if left == 0 {
                return Ok(());
            }
            self.hard_state = hs;
        }
        Ok(())
    }
}

/// One Ready's persist part, issued but not yet synced.
#[derive(Clone, Debug)]
pub(crate) struct PendingWrite {
    pub(crate) number: u64,
    pub(crate) hard_state: Option<HardState>,
    pub(crate) snapshot: Option<Snapshot>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) done_at_us: u64,
}

impl PendingWrite {
    pub(crate) fn records(&self) -> usize {
        usize::from(self.hard_state.is_some())
            + usize::from(self.snapshot.is_some())
            + self.entries.len()
    }
}

/// What a crash did to the unsynced writes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CrashDamage {
    /// Unsynced writes at the crash.
    pub(crate) pending_writes: usize,
    /// Records of the oldest unsynced write that survived.
    pub(crate) torn_records_kept: usize,
    /// Records in the oldest unsynced write.
    pub(crate) torn_records_total: usize,
}

/// One node's disk.
#[derive(Default)]
pub(crate) struct SimDisk {
    pub(crate) durable: DurableState,
    pending: VecDeque<PendingWrite>,
}

impl SimDisk {
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// When the newest pending write completes (writes complete in order).
    pub(crate) fn last_done_at_us(&self) -> u64 {
        self.pending.back().map_or(0, |w| w.done_at_us)
    }

    pub(crate) fn submit(&mut self, w: PendingWrite) {
        debug_assert!(w.done_at_us >= self.last_done_at_us());
        self.pending.push_back(w);
    }

    /// The oldest pending write becomes durable; returns its Ready number.
    pub(crate) fn complete_next(&mut self) -> Result<u64, String> {
        let w = self.pending.pop_front().ok_or("disk sync with no pending write")?;
        self.durable.apply(&w, usize::MAX)?;
        Ok(w.number)
    }

    /// Power loss: keeps the durable state, maybe a prefix of the oldest pending write's
    /// records, and nothing else.
    pub(crate) fn crash(&mut self, rng: &mut Rng, torn_write: f64) -> Result<CrashDamage, String> {
        let mut damage =
            CrashDamage { pending_writes: self.pending.len(), ..CrashDamage::default() };
        if let Some(first) = self.pending.front() {
            damage.torn_records_total = first.records();
            if rng.chance(torn_write) {
                damage.torn_records_kept = rng.range(0, first.records() as u64 + 1) as usize;
            }
            let synced_last = self.durable.last_index();
            let synced_term = self.durable.term_at(synced_last);
            // A snapshot whose last entry the log does not hold replaces the whole log
            // (Figure 13), if the torn write kept it.
            let conflicting_snapshot = first
                .snapshot
                .as_ref()
                .filter(|s| self.durable.term_at(s.meta.index) != Some(s.meta.term))
                .map(|s| s.meta.index);
            self.durable.apply(first, damage.torn_records_kept)?;
            let log_replaced =
                conflicting_snapshot.is_some_and(|index| self.durable.snapshot_index() == index);
            check_synced_survives(&self.durable, first, synced_last, synced_term, log_replaced)?;
        }
        self.pending.clear();
        Ok(damage)
    }
}

/// A synced entry may only disappear if a later (here: torn) record replaced it, a
/// snapshot covers it, or a kept snapshot that conflicts with the log replaced the whole
/// log (`log_replaced`; seed 229 --membership always: a stale suffix of term 17 behind a
/// snapshot of term 21).
fn check_synced_survives(
    durable: &DurableState,
    torn: &PendingWrite,
    synced_last: Index,
    synced_term: Option<Term>,
    log_replaced: bool,
) -> Result<(), String> {
    let replaced = log_replaced || torn.entries.first().is_some_and(|e| e.index <= synced_last);
    let covered = durable.snapshot_index() >= synced_last;
    if replaced || covered || durable.term_at(synced_last) == synced_term {
        return Ok(());
    }
    Err(format!(
        "synced entry {synced_last} (term {synced_term:?}) vanished in a crash without being overwritten"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::EntryKind;

    fn entry(index: Index, term: Term) -> Entry {
        Entry { index, term, kind: EntryKind::Normal, data: vec![index as u8].into() }
    }

    fn write(number: u64, entries: Vec<Entry>) -> PendingWrite {
        let hard_state = Some(HardState { term: 1, vote: 1, commit: 0 });
        PendingWrite { number, hard_state, snapshot: None, entries, done_at_us: 0 }
    }

    #[test]
    fn a_write_at_a_stored_index_replaces_the_suffix() {
        let mut d = DurableState::default();
        d.write_entries(&[entry(1, 1), entry(2, 1), entry(3, 1)]).unwrap();
        d.write_entries(&[entry(2, 2)]).unwrap();
        assert_eq!(d.last_index(), 2);
        assert_eq!(d.term_at(2), Some(2));
        assert!(d.write_entries(&[entry(5, 2)]).is_err(), "a gap must be refused");
    }

    #[test]
    fn a_crash_keeps_synced_writes_and_at_most_a_prefix_of_the_first_pending_one() {
        let mut rng = Rng::new(7);
        for _ in 0..50 {
            let mut disk = SimDisk::default();
            disk.submit(write(1, vec![entry(1, 1), entry(2, 1)]));
            disk.complete_next().unwrap();
            disk.submit(write(2, vec![entry(3, 1), entry(4, 1), entry(5, 1)]));
            disk.submit(write(3, vec![entry(6, 1)]));
            let damage = disk.crash(&mut rng, 1.0).unwrap();
            // Entries come first in a write, the hard state last.
            let kept_entries = (damage.torn_records_kept as u64).min(3);
            assert_eq!(disk.durable.last_index(), 2 + kept_entries);
            assert!(!disk.has_pending());
        }
    }

    #[test]
    fn a_snapshot_keeps_the_log_after_it_only_if_the_log_holds_its_last_entry() {
        let mut d = DurableState::default();
        d.write_entries(&[entry(1, 1), entry(2, 1), entry(3, 2)]).unwrap();
        let mut snap = Snapshot::default();
        snap.meta.index = 2;
        snap.meta.term = 1;
        d.install_snapshot(&snap);
        assert_eq!((d.snapshot_index(), d.last_index()), (2, 3));
        snap.meta.index = 3;
        snap.meta.term = 3;
        d.install_snapshot(&snap);
        assert_eq!((d.snapshot_index(), d.last_index()), (3, 3));
        assert_eq!(d.term_at(3), Some(3));
    }
}
