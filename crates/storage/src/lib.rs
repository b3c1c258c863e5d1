//! # storage: the durable half of a raftkv member
//!
//! The Raft core (crate `raft`) owns no files: each `Ready` names what must be durable
//! before the member may answer anything that depends on it. This crate makes it
//! durable, and reads it back after a restart: a write-ahead log (WAL) of entries and
//! hard state in segment files, and the service's state-machine snapshots in their own
//! files, all through the small [`Disk`] trait. The server plugs in [`RealDisk`]; tests
//! and the simulator plug in [`SimDisk`], which models power cuts and disk faults from a
//! seed, so the same driver code runs in both.
//!
//! ## Guarantees
//! - **Durable on Ok.** When [`Storage::save`], [`Storage::sync`] or
//!   [`Storage::save_snapshot`] returns `Ok`, what was written survives a crash or a power
//!   cut (given the media assumptions below).
//! - **Atomic batches.** Each [`Storage::append`] (one Ready) is one batch, closed by a
//!   commit record. Recovery returns a batch whole or not at all, so a hard state is
//!   never recovered without the entries written with it.
//! - **Prefix recovery.** After a crash, recovery returns exactly the state after some
//!   batch at or after the last synced one: every synced batch, maybe some unsynced ones
//!   that reached the media, never part of a batch, never garbage.
//! - **Damage is detected, never skipped.** Every record carries its length and a
//!   CRC32C. A damaged final batch, with nothing valid after it, is what a crash during
//!   a write leaves: it is cut off and reported in [`RecoveryReport`]. Damage anywhere
//!   else refuses the open with [`StorageError::Corrupt`], naming the file, the byte
//!   offset, what was found and what the operator should do. A refused open changes
//!   nothing on disk.
//! - **No retry after an I/O error.** The first failed disk operation poisons the
//!   [`Storage`]; see its docs for why (fsync failure semantics).
//!
//! ## The contract with the caller (the node driver)
//! 1. `let (mut storage, restored, report) = Storage::open(disk, Options::default())?;`
//!    log each line of `report.warnings`, then `raft::Raft::restore(cfg, &voters,
//!    restored)`. A fresh directory gives `Restored::default()`.
//! 2. For each `Ready`: `storage.save(ready.hard_state.as_ref(), ready.snapshot.as_ref(),
//!    &ready.entries)?`, then `raft.on_persisted(ready.number)`. To group several Readies
//!    under one fdatasync, call [`Storage::append`] for each and one [`Storage::sync`],
//!    then acknowledge the last one. A snapshot in a Ready is one installed from the
//!    leader: it replaces the whole stored log.
//! 3. When the service has snapshotted its state machine at an applied index:
//!    `storage.save_snapshot(&snapshot)?`, then `raft.compact(snapshot)`. The log after
//!    the snapshot is kept; the WAL segments and older snapshots it covers are deleted.
//! 4. On any error but [`StorageError::SnapshotNotNewer`], stop the member and restart
//!    it; never acknowledge the Ready whose save failed.
//!
//! What the core guarantees and storage asserts (a violation panics: it is a bug, not a
//! condition to handle): a batch's entries are contiguous with non-decreasing terms and
//! start at most one past the last stored index; a snapshot in a Ready is newer than the
//! stored one; the hard state's term never goes down and its commit index is within the
//! log as it stands after the batch (recovery relies on that to spot a lost log tail).
//!
//! ## Media assumptions
//! | Assumption | If it does not hold |
//! |---|---|
//! | fdatasync returning Ok means the file's bytes are on stable media (write cache flushed or power-loss protected) | acknowledged writes can be lost: Raft safety is void |
//! | fsync of the directory makes creations, renames and removals in it durable; rename is atomic | a snapshot or segment may vanish; recovery reports it as corruption |
//! | bytes appended after the last fdatasync survive a power cut, if at all, as a prefix (possibly ending inside a record) | a later sector surviving an earlier lost one looks like damage followed by valid records: recovery refuses to open (safe, needs the operator) |
//! | nothing but this crate changes the files | media damage is detected by CRC32C (missed with probability about 2⁻³² per damaged record), never repaired |
//!
//! A damaged *final* record with nothing valid after it cannot be told apart from a torn
//! write, so it is cut like one. Raft tolerates that only because such a batch was, in
//! the torn-write case, never acknowledged; media damage to an acknowledged final batch
//! is the one case this design cannot detect.
//!
//! ## On-disk format
//! One flat directory. All integers are fixed-width little-endian; indices and terms are
//! `u64`.
//!
//! | File | Content |
//! |---|---|
//! | `wal-<seq>.log` | WAL segment number `seq` (20 decimal digits, from 1, consecutive) |
//! | `snap-<index>-<term>.snap` | snapshot covering the log up to `index` (20 digits each) |
//! | `snap-<index>-<term>.snap.tmp` | a snapshot being written; removed by recovery |
//!
//! ### WAL record frame
//! | Offset | Size | Field |
//! |---|---|---|
//! | 0 | 4 | `len`: payload bytes (at most 64 MiB) |
//! | 4 | 4 | `crc`: CRC32C (Castagnoli) over `type` and the payload |
//! | 8 | 1 | `type` |
//! | 9 | `len` | payload |
//!
//! ### WAL record payloads
//! | Type | Record | Payload |
//! |---|---|---|
//! | 1 | segment header | magic `raftkvWL` (8), version `1` (u32), seq (u64), hard state: term, vote, commit (3 × u64), snapshot index (u64), snapshot term (u64) — 60 bytes |
//! | 2 | entry | index (u64), term (u64), kind (u8: 0 normal, 1 no-op, 2 membership change), data (the rest) |
//! | 3 | hard state | term (u64), vote (u64), commit (u64) |
//! | 4 | snapshot marker | index (u64), term (u64), reset (u8: 1 = installed from the leader, the log before it is discarded; 0 = the service's own, the log is kept) |
//! | 5 | commit | number of records in the batch it closes (u32) |
//!
//! A segment is a header followed by batches; a batch is records of types 2–4 followed
//! by one commit record. Batches never span segments. The header checkpoints the hard
//! state and snapshot as of the segment's creation, so older segments can be deleted;
//! a new segment is created only after the previous one is durable, file and name.
//!
//! ### Snapshot file
//! | Offset | Size | Field |
//! |---|---|---|
//! | 0 | 8 | magic `raftkvSN` |
//! | 8 | 4 | version `3` |
//! | 12 | 8 | index |
//! | 20 | 8 | term |
//! | 28 | … | four member lists, each a count `n` (u32) then `n` ids (u64, ascending): voters, outgoing voters (joint configuration only), learners, learners that outgoing voters become |
//! | 28 + L | d | the service's data |
//! | 28 + L + d | 8 | data length `d` |
//! | 36 + L + d | 4 | CRC32C over all bytes before it |
//!
//! The data length follows the data so that a snapshot is streamed into its file while
//! the service serializes it ([`write_snapshot_file_with`]), never held whole in memory.
//! Version `2` files (the length `d` before the data instead of after it) and version `1`
//! files (written before membership changes: a single list, the voters, then `d`, the
//! data and the CRC) are still read.
//!
//! A snapshot is written to a `.tmp` name (removed first if a failed attempt left one) in
//! 1 MiB pieces, fsynced, read back piece by piece and verified (length, CRC32C, index, term), renamed, and the
//! directory fsynced; only then does a snapshot marker go into the WAL. The marker lets
//! the segments the snapshot covers be deleted, so a file that does not read back as
//! written never gets its real name, and so never a marker. The WAL decides which
//! snapshot is current, so a snapshot file without its marker (a crash in between) is
//! ignored and removed. Only the current snapshot is kept. If it is damaged, recovery refuses to
//! open rather than fall back to an older one: the WAL it would need has been deleted.
//!
//! ### Recovery
//! 1. Remove leftover `.tmp` files; remove the newest segment if it has no complete
//!    header (a crash right after creating it).
//! 2. Replay the segments after the last gap in their numbering, in order. The first
//!    header sets the state; each later header must agree with the replay so far. A
//!    batch applies only when its commit record is read; an entry at index `i` discards
//!    every replayed entry at `i` or above; a reset marker discards them all.
//! 3. In the newest segment, a damaged record with no valid record anywhere after it, or
//!    a batch without a commit record, is a torn tail: cut back to the batch's start.
//!    Anything else damaged is [`StorageError::Corrupt`].
//! 4. Check: the entries after the snapshot are contiguous from `snapshot index + 1`
//!    with non-decreasing terms, and the hard state's commit index is within the log.
//!    Segments before a gap are leftovers of a compaction whose removals were lost at a
//!    crash; they are removed if the later run passes these checks, otherwise the gap is
//!    reported as a missing segment.
//! 5. Load and verify the snapshot the WAL names; remove other snapshot files.

mod codec;
mod disk;
mod error;
mod recovery;
mod sim;
mod storage;

pub use crate::disk::{Disk, RealDisk};
pub use crate::error::{RecoveryReport, StorageError, TornTail};
pub use crate::sim::SimDisk;
pub use crate::storage::{
    read_snapshot_data, write_snapshot_file, write_snapshot_file_with, Options, Storage,
    SNAPSHOT_IO_CHUNK_BYTES,
};

/// How every WAL segment's file name starts (`wal-<sequence>.log`); snapshot files are
/// `snap-<index>-<term>.snap`.
pub const SEGMENT_PREFIX: &str = "wal-";

#[cfg(test)]
mod tests;
