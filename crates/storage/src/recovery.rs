//! Recovery: read the WAL and the snapshot back, decide what is a torn tail and what is
//! damage, and repair only what a crash explains.
//!
//! Recovery first analyses without writing anything, and applies its repairs (truncating
//! a torn tail, removing leftovers) only once the whole state has checked out. A member
//! that refuses to open therefore leaves its directory exactly as the operator found it.

use crate::codec::{
    decode_record, decode_snapshot, parse_segment_name, parse_snapshot_name, segment_name,
    snapshot_name, valid_record_after, Record, SegmentHeader, OBSOLETE_SUFFIX, TMP_SUFFIX,
};
use crate::disk::Disk;
use crate::error::{RecoveryReport, StorageError, TornTail};
use raft::{Entry, HardState, Index, Snapshot, Term};
use std::collections::BTreeMap;
use std::io;

/// What storage remembers about a segment: deletable once a durable snapshot covers
/// `max_index` (0 once a snapshot installed after it made all its entries obsolete).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentInfo {
    pub seq: u64,
    pub max_index: Index,
}

/// The outcome of a successful recovery.
pub(crate) struct Recovered {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub segments: Vec<SegmentInfo>,
    pub report: RecoveryReport,
}

/// A snapshot's identity: (index, term).
type SnapshotId = (Index, Term);

/// What the replay of the WAL establishes, before the snapshot file is read.
struct Replayed {
    hard_state: HardState,
    snapshot: SnapshotId,
    entries: Vec<Entry>,
}

/// A change recovery makes once it has decided the directory is sound.
enum Repair {
    Truncate { name: String, len: u64 },
    Remove { name: String },
}

pub(crate) fn io_error(op: &'static str, file: &str) -> impl FnOnce(io::Error) -> StorageError {
    let file = file.to_string();
    move |source| StorageError::Io { op, file, source }
}

fn corrupt(file: &str, offset: Option<usize>, found: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        file: file.to_string(),
        offset: offset.map(|o| o as u64),
        found: found.into(),
    }
}

/// Reads everything back. See the crate docs, "Recovery", for the rules.
pub(crate) fn recover<D: Disk>(disk: &mut D) -> Result<Recovered, StorageError> {
    let mut report = RecoveryReport::default();
    let mut repairs = Vec::new();
    let (mut seqs, snapshots) = classify(disk, &mut repairs, &mut report)?;
    drop_headerless_last_segment(disk, &mut seqs, &mut repairs, &mut report)?;
    // Only the segments after the last gap in the numbering are replayed; earlier ones
    // are leftovers of a compaction whose removals were not all durable (checked below).
    let run_start = (1..seqs.len()).rev().find(|&i| seqs[i] != seqs[i - 1] + 1).unwrap_or(0);
    let (stale, run) = seqs.split_at(run_start);
    let mut replay = Replay::default();
    for (k, &seq) in run.iter().enumerate() {
        let name = segment_name(seq);
        let bytes = disk.read(&name).map_err(io_error("read", &name))?;
        report.segments_replayed += 1;
        if let Some(torn) = replay.segment(&name, seq, &bytes, k + 1 == run.len())? {
            report.warnings.push(format!(
                "WAL {}: cut {} bytes at offset {} ({}): the last batch was incomplete, \
                 as a crash during a write leaves it; it was never acknowledged as durable",
                torn.file, torn.bytes_dropped, torn.offset, torn.reason
            ));
            repairs.push(Repair::Truncate { name: name.clone(), len: torn.offset });
            report.torn_tail = Some(torn);
        }
    }
    let segments = replay.segments.clone();
    let Replayed { hard_state, snapshot: (snap_index, snap_term), entries } =
        match replay.finish(run) {
            Ok(state) => state,
            Err(e) if !stale.is_empty() => {
                let missing = stale[stale.len() - 1] + 1;
                return Err(corrupt(
                    &segment_name(missing),
                    None,
                    format!(
                        "WAL segment {missing} is missing (segments {} to {} exist) and the \
                     later segments do not stand alone: {e}",
                        stale[0],
                        seqs[seqs.len() - 1]
                    ),
                ));
            }
            Err(e) => return Err(e),
        };
    let snapshot = load_snapshot(disk, snap_index, snap_term)?;
    for &seq in stale {
        let name = segment_name(seq);
        report.warnings.push(format!("removed {name}: left over from an interrupted compaction"));
        repairs.push(Repair::Remove { name });
    }
    for (index, term) in snapshots {
        if (index, term) != (snap_index, snap_term) {
            let name = snapshot_name(index, term);
            report
                .warnings
                .push(format!("removed {name}: superseded or never recorded in the WAL"));
            repairs.push(Repair::Remove { name });
        }
    }
    apply_repairs(disk, repairs)?;
    Ok(Recovered { hard_state, snapshot, entries, segments, report })
}

/// Sorts the directory: segment numbers, snapshot ids; leftover temp files to remove.
fn classify<D: Disk>(
    disk: &D,
    repairs: &mut Vec<Repair>,
    report: &mut RecoveryReport,
) -> Result<(Vec<u64>, Vec<SnapshotId>), StorageError> {
    let mut seqs = Vec::new();
    let mut snapshots = Vec::new();
    for name in disk.list().map_err(io_error("list", ""))? {
        if let Some(seq) = parse_segment_name(&name) {
            seqs.push(seq);
        } else if let Some(id) = parse_snapshot_name(&name) {
            snapshots.push(id);
        } else if name.starts_with("snap-") && name.ends_with(TMP_SUFFIX) {
            report.warnings.push(format!("removed {name}: a snapshot write that did not finish"));
            repairs.push(Repair::Remove { name });
        } else if name.ends_with(OBSOLETE_SUFFIX)
            && (name.starts_with("snap-") || name.starts_with(crate::SEGMENT_PREFIX))
        {
            report.warnings.push(format!(
                "removed {name}: a file a snapshot made obsolete, whose removal did not finish"
            ));
            repairs.push(Repair::Remove { name });
        } else {
            report.warnings.push(format!("ignored unknown file {name:?} in the data directory"));
        }
    }
    seqs.sort_unstable();
    snapshots.sort_unstable();
    Ok((seqs, snapshots))
}

/// A crash right after creating a segment can leave it empty or with a torn header; it
/// then holds nothing and is removed. Damage with valid records after it is left for
/// the replay to report.
fn drop_headerless_last_segment<D: Disk>(
    disk: &D,
    seqs: &mut Vec<u64>,
    repairs: &mut Vec<Repair>,
    report: &mut RecoveryReport,
) -> Result<(), StorageError> {
    let Some(&seq) = seqs.last() else { return Ok(()) };
    let name = segment_name(seq);
    let bytes = disk.read(&name).map_err(io_error("read", &name))?;
    if let Err(e) = decode_record(&bytes) {
        if !valid_record_after(&bytes, 1) {
            report.warnings.push(format!(
                "removed {name}: the newest WAL segment has no complete header ({e}), \
                 as a crash right after creating it leaves it"
            ));
            repairs.push(Repair::Remove { name });
            seqs.pop();
        }
    }
    Ok(())
}

fn load_snapshot<D: Disk>(
    disk: &D,
    index: Index,
    term: Term,
) -> Result<Option<Snapshot>, StorageError> {
    if index == 0 {
        return Ok(None);
    }
    let name = snapshot_name(index, term);
    let bytes = match disk.read(&name) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(corrupt(
                &name,
                None,
                "the WAL records this snapshot as durable but the file is missing",
            ))
        }
        Err(e) => return Err(io_error("read", &name)(e)),
    };
    let snapshot =
        decode_snapshot(&bytes).map_err(|(at, what)| corrupt(&name, Some(at as usize), what))?;
    if (snapshot.meta.index, snapshot.meta.term) != (index, term) {
        let found = format!(
            "the file holds snapshot {}/{} instead of {index}/{term}",
            snapshot.meta.index, snapshot.meta.term
        );
        return Err(corrupt(&name, Some(12), found));
    }
    Ok(Some(snapshot))
}

fn apply_repairs<D: Disk>(disk: &mut D, repairs: Vec<Repair>) -> Result<(), StorageError> {
    let mut removed = false;
    for repair in repairs {
        match repair {
            Repair::Truncate { name, len } => {
                disk.truncate(&name, len).map_err(io_error("truncate", &name))?;
                disk.sync(&name).map_err(io_error("sync", &name))?;
            }
            Repair::Remove { name } => {
                disk.remove(&name).map_err(io_error("remove", &name))?;
                removed = true;
            }
        }
    }
    if removed {
        disk.sync_dir().map_err(io_error("sync_dir", ""))?;
    }
    Ok(())
}

/// The state rebuilt so far, segment by segment.
#[derive(Default)]
struct Replay {
    initialized: bool,
    hard_state: HardState,
    snapshot: SnapshotId,
    /// The logical log: a later entry at index i replaced every earlier one at >= i.
    log: BTreeMap<Index, Entry>,
    segments: Vec<SegmentInfo>,
}

impl Replay {
    /// Replays one segment. Returns the torn tail to cut, if the segment is the last and
    /// ends in an incomplete batch; any other damage is an error.
    fn segment(
        &mut self,
        name: &str,
        seq: u64,
        bytes: &[u8],
        is_last: bool,
    ) -> Result<Option<TornTail>, StorageError> {
        let mut at = match decode_record(bytes) {
            Ok((Record::SegmentHeader(h), n)) => {
                self.header(name, seq, &h)?;
                n
            }
            Ok(_) => {
                return Err(corrupt(name, Some(0), "the first record is not a segment header"))
            }
            Err(e) => return Err(corrupt(name, Some(0), format!("segment header: {e}"))),
        };
        self.segments.push(SegmentInfo { seq, max_index: 0 });
        let mut batch = Vec::new();
        let mut batch_start = at;
        let torn = |at: usize, reason: String| TornTail {
            file: name.to_string(),
            offset: at as u64,
            bytes_dropped: (bytes.len() - at) as u64,
            reason,
        };
        while at < bytes.len() {
            match decode_record(&bytes[at..]) {
                Ok((Record::Commit { records }, n)) => {
                    if records as usize != batch.len() {
                        let found = format!(
                            "commit record closes {records} records but its batch has {}",
                            batch.len()
                        );
                        return Err(corrupt(name, Some(at), found));
                    }
                    self.apply(name, batch_start, std::mem::take(&mut batch))?;
                    at += n;
                    batch_start = at;
                }
                Ok((Record::SegmentHeader(_), _)) => {
                    return Err(corrupt(name, Some(at), "a segment header in mid-segment"))
                }
                Ok((record, n)) => {
                    batch.push(record);
                    at += n;
                }
                Err(e) if is_last && !valid_record_after(bytes, at + 1) => {
                    let reason = format!("damaged record at offset {at}: {e}");
                    return Ok(Some(torn(batch_start, reason)));
                }
                Err(e) => return Err(corrupt(name, Some(at), e.to_string())),
            }
        }
        if batch.is_empty() {
            Ok(None)
        } else if is_last {
            Ok(Some(torn(batch_start, "the batch has no commit record".to_string())))
        } else {
            let found =
                "a batch without its commit record at the end of a segment that is not the newest";
            Err(corrupt(name, Some(batch_start), found))
        }
    }

    /// The first header initialises the state; later ones must agree with the replay.
    fn header(&mut self, name: &str, seq: u64, h: &SegmentHeader) -> Result<(), StorageError> {
        if h.seq != seq {
            let found = format!("the header says segment {} but the file name says {seq}", h.seq);
            return Err(corrupt(name, Some(0), found));
        }
        let snapshot = (h.snapshot_index, h.snapshot_term);
        if !self.initialized {
            self.initialized = true;
            self.hard_state = h.hard_state;
            self.snapshot = snapshot;
        } else if h.hard_state != self.hard_state || snapshot != self.snapshot {
            let found = format!(
                "the header records {:?} and snapshot {:?} but the earlier segments replay \
                 to {:?} and snapshot {:?}",
                h.hard_state, snapshot, self.hard_state, self.snapshot
            );
            return Err(corrupt(name, Some(0), found));
        }
        Ok(())
    }

    fn apply(&mut self, name: &str, at: usize, batch: Vec<Record>) -> Result<(), StorageError> {
        for record in batch {
            match record {
                Record::Entry(e) => {
                    self.log.split_off(&e.index);
                    let segment = self.segments.last_mut().expect("pushed before records");
                    segment.max_index = segment.max_index.max(e.index);
                    self.log.insert(e.index, e);
                }
                Record::HardState(hs) => self.hard_state = hs,
                Record::Snapshot { index, term, reset } => {
                    if index <= self.snapshot.0 {
                        let found = format!(
                            "snapshot marker {index}/{term} is not newer than {:?}",
                            self.snapshot
                        );
                        return Err(corrupt(name, Some(at), found));
                    }
                    self.snapshot = (index, term);
                    if reset {
                        self.log.clear();
                        self.segments.iter_mut().for_each(|s| s.max_index = 0);
                    }
                }
                Record::SegmentHeader(_) | Record::Commit { .. } => {
                    unreachable!("segment() never puts these in a batch")
                }
            }
        }
        Ok(())
    }

    /// Checks the replayed state hangs together and returns it.
    fn finish(mut self, run: &[u64]) -> Result<Replayed, StorageError> {
        let file = match (run.first(), run.last()) {
            (Some(&a), Some(&b)) => format!("{} .. {}", segment_name(a), segment_name(b)),
            _ => {
                let (hard_state, snapshot, entries) = (HardState::default(), (0, 0), Vec::new());
                return Ok(Replayed { hard_state, snapshot, entries });
            }
        };
        let (snap_index, snap_term) = self.snapshot;
        let entries: Vec<Entry> = self.log.split_off(&(snap_index + 1)).into_values().collect();
        let (mut expect, mut prev_term) = (snap_index + 1, snap_term);
        for e in &entries {
            if e.index != expect {
                let found = format!("the log jumps from index {} to {}", expect - 1, e.index);
                return Err(corrupt(&file, None, found));
            }
            if e.term < prev_term {
                let found = format!("entry {} has term {} after term {prev_term}", e.index, e.term);
                return Err(corrupt(&file, None, found));
            }
            (expect, prev_term) = (expect + 1, e.term);
        }
        let last_index = expect - 1;
        if self.hard_state.commit > last_index {
            let found = format!(
                "the hard state says index {} is committed but the log ends at {last_index}",
                self.hard_state.commit
            );
            return Err(corrupt(&file, None, found));
        }
        Ok(Replayed { hard_state: self.hard_state, snapshot: self.snapshot, entries })
    }
}
