//! The facade the node driver uses: open (recover), save, sync, save_snapshot.

use crate::codec::{
    encode_commit, encode_entry, encode_hard_state, encode_segment_header, encode_snapshot_header,
    encode_snapshot_marker, locate_snapshot_data, parse_snapshot_name, segment_name, snapshot_name,
    SegmentHeader, TMP_SUFFIX,
};
use crate::disk::Disk;
use crate::error::{RecoveryReport, StorageError};
use crate::recovery::{io_error, recover, SegmentInfo};
use raft::{Entry, HardState, Index, Restored, Snapshot, SnapshotMeta};
use std::io;

/// Tunables.
#[derive(Clone, Debug)]
pub struct Options {
    /// A new WAL segment is started before a batch that would take the current one past
    /// this size. A single batch larger than this still goes whole into one segment.
    pub segment_bytes_max: u64,
}

impl Default for Options {
    /// 64 MiB segments: few files, and recovery reads at most one damaged segment twice.
    fn default() -> Self {
        Options { segment_bytes_max: 64 << 20 }
    }
}

/// The segment being appended to.
#[derive(Clone, Copy, Debug)]
struct Active {
    seq: u64,
    size_bytes: u64,
    has_batches: bool,
}

/// A member's durable state: the WAL, the hard state and the snapshot, over a [`Disk`].
///
/// # Poisoning
/// After any I/O error every later write fails with [`StorageError::Poisoned`]. On Linux a
/// failed fsync may already have dropped the dirty pages it could not write and marked
/// them clean, so a second fsync can succeed while the data is gone (PostgreSQL's
/// "fsyncgate", 2018); even a failed `write` may have left part of a record behind.
/// Retrying would let the Raft core believe something durable that is not, which can
/// break the persist-before-reply rule. The only honest way on is a restart: recovery
/// re-reads what actually reached the disk.
///
/// # Panics
/// Calls that break the contract with the Raft core panic (see the crate docs, "The
/// contract with the caller"): they are bugs in the caller, not conditions to handle.
#[derive(Debug)]
pub struct Storage<D: Disk> {
    disk: D,
    options: Options,
    poisoned: Option<String>,
    hard_state: HardState,
    snapshot: SnapshotMeta,
    /// The last index written (durable or not); the snapshot's if the log is empty.
    last_index: Index,
    /// Every segment on disk, oldest first; the active one is last.
    segments: Vec<SegmentInfo>,
    active: Option<Active>,
    next_seq: u64,
    file_unsynced: bool,
    dir_unsynced: bool,
    compaction_due: bool,
    buf: Vec<u8>,
}

impl<D: Disk> Storage<D> {
    /// Recovers the durable state from `disk` (an empty disk is a fresh member).
    ///
    /// Returns the storage ready for writes, what to hand to `raft::Raft::restore`, and a
    /// report whose warnings the server should log. Fails, without changing anything on
    /// disk, if the data are damaged in a way a crash does not explain.
    pub fn open(
        mut disk: D,
        options: Options,
    ) -> Result<(Storage<D>, Restored, RecoveryReport), StorageError> {
        assert!(options.segment_bytes_max > 0, "segment_bytes_max must be positive");
        let recovered = recover(&mut disk)?;
        let meta = recovered.snapshot.as_ref().map(|s| s.meta.clone()).unwrap_or_default();
        let last_index = recovered.entries.last().map_or(meta.index, |e| e.index);
        let next_seq = recovered.segments.last().map_or(1, |s| s.seq + 1);
        let storage = Storage {
            disk,
            options,
            poisoned: None,
            hard_state: recovered.hard_state,
            snapshot: meta,
            last_index,
            segments: recovered.segments,
            active: None,
            next_seq,
            file_unsynced: false,
            dir_unsynced: false,
            compaction_due: false,
            buf: Vec::new(),
        };
        let restored = Restored {
            hard_state: recovered.hard_state,
            snapshot: recovered.snapshot,
            entries: recovered.entries,
        };
        Ok((storage, restored, recovered.report))
    }

    /// Persists one Ready: [`Storage::append`] then [`Storage::sync`] (one fdatasync for
    /// the whole batch). When it returns Ok, everything is durable.
    pub fn save(
        &mut self,
        hard_state: Option<&HardState>,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        self.append(hard_state, snapshot, entries)?;
        self.sync()
    }

    /// Writes one Ready's persist part as one atomic batch, without syncing it: after a
    /// crash the batch is recovered whole or not at all. Several batches followed by one
    /// [`Storage::sync`] are a group commit.
    ///
    /// `entries` whose first index is already stored replace the stored log from there
    /// on. A `snapshot` (one installed from the leader) replaces the whole log: its file is
    /// made durable here, before the batch that records it.
    ///
    /// # Panics
    /// If `entries` are not contiguous, start past the end of the log (leaving a gap),
    /// have terms going down, or if `snapshot` is not newer than the stored one, or the
    /// hard state's term goes down.
    pub fn append(
        &mut self,
        hard_state: Option<&HardState>,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        self.check_usable()?;
        self.check_batch(hard_state, snapshot, entries);
        if hard_state.is_none() && snapshot.is_none() && entries.is_empty() {
            return Ok(());
        }
        if let Some(s) = snapshot {
            self.write_snapshot_file(s)?;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut records = 0u32;
        if let Some(s) = snapshot {
            encode_snapshot_marker(s.meta.index, s.meta.term, true, &mut buf);
            records += 1;
        }
        if let Some(hs) = hard_state {
            encode_hard_state(hs, &mut buf);
            records += 1;
        }
        for e in entries {
            encode_entry(e, &mut buf);
            records += 1;
        }
        encode_commit(records, &mut buf);
        let written = self.write_batch(&buf);
        self.buf = buf;
        written?;
        self.note_batch(hard_state, snapshot, entries);
        Ok(())
    }

    /// Makes every batch appended so far durable (one fdatasync of the active segment,
    /// plus the directory if a segment was created), then deletes what a newly durable
    /// snapshot made obsolete.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        if self.file_unsynced {
            let name = segment_name(self.active.expect("unsynced data has a segment").seq);
            self.io("sync", &name, |d| d.sync(&name))?;
            self.file_unsynced = false;
        }
        if self.dir_unsynced {
            self.io("sync_dir", "", |d| d.sync_dir())?;
            self.dir_unsynced = false;
        }
        if self.compaction_due {
            self.compact()?;
            self.compaction_due = false;
        }
        Ok(())
    }

    /// Durably saves a snapshot the service took of its state machine at an applied
    /// index, then deletes the WAL segments and older snapshots it covers. Call it before
    /// `raft::Raft::compact`. The log after the snapshot is kept.
    ///
    /// A snapshot not newer than the stored one is refused with
    /// [`StorageError::SnapshotNotNewer`] (storage stays usable).
    pub fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.check_usable()?;
        if snapshot.meta.index <= self.snapshot.index {
            let (index, current) = (snapshot.meta.index, self.snapshot.index);
            return Err(StorageError::SnapshotNotNewer { index, current });
        }
        self.write_snapshot_file(snapshot)?;
        let mut buf = Vec::new();
        encode_snapshot_marker(snapshot.meta.index, snapshot.meta.term, false, &mut buf);
        encode_commit(1, &mut buf);
        self.write_batch(&buf)?;
        self.snapshot = snapshot.meta.clone();
        self.last_index = self.last_index.max(snapshot.meta.index);
        self.compaction_due = true;
        self.sync()
    }

    /// Adopts a snapshot file that [`write_snapshot_file`] already made durable (from
    /// another thread, through its own [`Disk`] on the same directory): records it in the
    /// WAL and deletes what it covers, as [`Storage::save_snapshot`] does. Checks first
    /// that the file is there, so the WAL never names a missing snapshot.
    ///
    /// It does not read the file again: [`write_snapshot_file`] verified it before giving
    /// it its name, and this runs on the caller's (the node's) thread, where reading a
    /// large snapshot back would stall heartbeats (measured: 0.2 s for 256 MiB). Damage
    /// between the two is media damage, which recovery detects (see the crate docs).
    pub fn adopt_snapshot_file(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        self.check_usable()?;
        if meta.index <= self.snapshot.index {
            let (index, current) = (meta.index, self.snapshot.index);
            return Err(StorageError::SnapshotNotNewer { index, current });
        }
        let name = snapshot_name(meta.index, meta.term);
        if !self.io("list", "", |d| d.list())?.contains(&name) {
            return Err(StorageError::Corrupt {
                file: name,
                offset: None,
                found: "the snapshot file to adopt is missing; take the snapshot again".into(),
            });
        }
        let mut buf = Vec::new();
        encode_snapshot_marker(meta.index, meta.term, false, &mut buf);
        encode_commit(1, &mut buf);
        self.write_batch(&buf)?;
        self.snapshot = meta.clone();
        self.last_index = self.last_index.max(meta.index);
        self.compaction_due = true;
        self.sync()
    }

    /// The last hard state written (durable once the write's sync returned).
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// What the stored snapshot covers (index 0 if none).
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    /// The last log index written; the snapshot's index if no entry follows it.
    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// True if batches were appended since the last successful [`Storage::sync`].
    pub fn has_unsynced_writes(&self) -> bool {
        self.file_unsynced || self.dir_unsynced || self.compaction_due
    }

    /// The error that poisoned this storage, if one did.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// The disk, for inspection.
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// The disk, for fault injection in tests and the simulator. Writing through it
    /// behind storage's back voids every guarantee.
    pub fn disk_mut(&mut self) -> &mut D {
        &mut self.disk
    }

    /// Gives the disk back (for instance to crash a [`crate::SimDisk`] and reopen it).
    pub fn into_disk(self) -> D {
        self.disk
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        match &self.poisoned {
            Some(cause) => Err(StorageError::Poisoned { cause: cause.clone() }),
            None => Ok(()),
        }
    }

    /// The caller's side of the contract; a violation is a bug, so it panics.
    fn check_batch(&self, hs: Option<&HardState>, snap: Option<&Snapshot>, entries: &[Entry]) {
        let mut last = self.last_index;
        if let Some(s) = snap {
            assert!(
                s.meta.index > self.snapshot.index,
                "installed snapshot at {} is not newer than the stored one at {}",
                s.meta.index,
                self.snapshot.index
            );
            last = s.meta.index;
        }
        if let Some(first) = entries.first() {
            assert!(
                first.index >= 1 && first.index <= last + 1,
                "entries start at index {} but the log ends at {last}: that leaves a gap",
                first.index
            );
        }
        for pair in entries.windows(2) {
            assert_eq!(pair[1].index, pair[0].index + 1, "entries are not contiguous");
            assert!(pair[1].term >= pair[0].term, "entry terms go down within a batch");
        }
        let last_after = match entries.last() {
            Some(e) => e.index.max(snap.map_or(self.snapshot.index, |s| s.meta.index)),
            None => last,
        };
        if let Some(hs) = hs {
            assert!(
                hs.commit <= last_after,
                "hard state commits index {} but the log would end at {last_after}",
                hs.commit
            );
            assert!(
                hs.term >= self.hard_state.term,
                "hard state term went down from {} to {}",
                self.hard_state.term,
                hs.term
            );
        }
    }

    /// Updates the in-memory view after a batch was written.
    fn note_batch(&mut self, hs: Option<&HardState>, snap: Option<&Snapshot>, entries: &[Entry]) {
        if let Some(s) = snap {
            // The whole log before the snapshot is obsolete: every segment may go.
            self.segments.iter_mut().for_each(|s| s.max_index = 0);
            self.snapshot = s.meta.clone();
            self.last_index = s.meta.index;
            self.compaction_due = true;
        }
        if let Some(hs) = hs {
            self.hard_state = *hs;
        }
        if let Some(last) = entries.last() {
            self.last_index = last.index.max(self.snapshot.index);
            let segment = self.segments.last_mut().expect("a batch was just written");
            segment.max_index = segment.max_index.max(last.index);
        }
    }

    /// Appends one encoded batch to the active segment, rotating first if needed.
    fn write_batch(&mut self, batch: &[u8]) -> Result<(), StorageError> {
        let rotate = match self.active {
            None => true,
            Some(a) => {
                a.has_batches && a.size_bytes + batch.len() as u64 > self.options.segment_bytes_max
            }
        };
        if rotate {
            self.rotate()?;
        }
        let active = self.active.as_mut().expect("rotate() sets it");
        let name = segment_name(active.seq);
        active.size_bytes += batch.len() as u64;
        active.has_batches = true;
        self.file_unsynced = true;
        self.io("append", &name, |d| d.append(&name, batch))
    }

    /// Starts a new segment. The previous one, file and name, is made durable first, so
    /// a durable segment is never preceded by a lost one (recovery relies on that).
    fn rotate(&mut self) -> Result<(), StorageError> {
        if let Some(active) = self.active {
            let name = segment_name(active.seq);
            if self.file_unsynced {
                self.io("sync", &name, |d| d.sync(&name))?;
                self.file_unsynced = false;
            }
            if self.dir_unsynced {
                self.io("sync_dir", "", |d| d.sync_dir())?;
                self.dir_unsynced = false;
            }
        }
        let seq = self.next_seq;
        let header = SegmentHeader {
            seq,
            hard_state: self.hard_state,
            snapshot_index: self.snapshot.index,
            snapshot_term: self.snapshot.term,
        };
        let mut bytes = Vec::new();
        encode_segment_header(&header, &mut bytes);
        let name = segment_name(seq);
        self.next_seq += 1;
        self.segments.push(SegmentInfo { seq, max_index: 0 });
        self.active = Some(Active { seq, size_bytes: bytes.len() as u64, has_batches: false });
        self.file_unsynced = true;
        self.dir_unsynced = true;
        self.io("append", &name, |d| d.append(&name, &bytes))
    }

    /// Writes `snap-<index>-<term>.snap` durably and verified (see
    /// [`write_snapshot_file`]). An I/O error poisons storage, as any other.
    fn write_snapshot_file(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        match write_snapshot_file(&mut self.disk, snapshot) {
            Ok(()) => {
                self.dir_unsynced = false;
                Ok(())
            }
            Err(e) => {
                if matches!(e, StorageError::Io { .. }) {
                    self.poisoned = Some(err_summary(&e));
                }
                Err(e)
            }
        }
    }

    /// Deletes the oldest segments whose entries the durable snapshot covers (never the
    /// newest one, which carries the current state), and every other snapshot file, with
    /// [`Disk::remove_obsolete`]: the disk may finish a removal later, off this thread.
    fn compact(&mut self) -> Result<(), StorageError> {
        let covered = self.snapshot.index;
        let mut removed = false;
        while self.segments.len() > 1 && self.segments[0].max_index <= covered {
            let name = segment_name(self.segments[0].seq);
            self.io("remove", &name, |d| d.remove_obsolete(&name))?;
            self.segments.remove(0);
            removed = true;
        }
        let current = (self.snapshot.index, self.snapshot.term);
        for name in self.io("list", "", |d| d.list())? {
            if parse_snapshot_name(&name).is_some_and(|id| id != current) {
                self.io("remove", &name, |d| d.remove_obsolete(&name))?;
                removed = true;
            }
        }
        if removed {
            self.io("sync_dir", "", |d| d.sync_dir())?;
        }
        Ok(())
    }

    /// Runs one disk operation; an error poisons the storage.
    fn io<T>(
        &mut self,
        op: &'static str,
        file: &str,
        f: impl FnOnce(&mut D) -> io::Result<T>,
    ) -> Result<T, StorageError> {
        f(&mut self.disk).map_err(|e| {
            let err = io_error(op, file)(e);
            self.poisoned = Some(err_summary(&err));
            err
        })
    }
}

fn err_summary(err: &StorageError) -> String {
    match err {
        StorageError::Io { op, file, source } => format!("{op} {file:?}: {source}"),
        other => other.to_string(),
    }
}

/// Writes `snapshot`'s file durably through `disk` without touching the WAL, so a
/// background thread with its own [`Disk`] on the same directory can do the slow part;
/// then [`Storage::adopt_snapshot_file`] records it. See [`write_snapshot_file_with`],
/// which streams the data instead of taking it whole.
pub fn write_snapshot_file<D: Disk>(disk: &mut D, snapshot: &Snapshot) -> Result<(), StorageError> {
    write_snapshot_file_with(disk, &snapshot.meta, |w| w.write_all(&snapshot.data)).map(|_| ())
}

/// Bytes a snapshot is written and read back in: bounds the memory a snapshot of any
/// size takes while it moves between the service and its file.
pub const SNAPSHOT_IO_CHUNK_BYTES: usize = 1 << 20;

/// A snapshot being written is synced every this many bytes, not only at its end: the
/// WAL's fdatasync on the node thread otherwise waits for the file system to write back
/// everything the snapshot left dirty (ext4's ordered journal), which held the node
/// thread 50-100 ms once per snapshot of 32-64 MiB.
pub const SNAPSHOT_SYNC_EVERY_BYTES: u64 = 4 << 20;

/// Writes the file of the snapshot `meta` describes, its data streamed by `write_data`
/// into the file as it is produced (never held whole in memory), durably and without
/// touching the WAL; returns the data's length. A background thread with its own
/// [`Disk`] on the same directory does this, then [`Storage::adopt_snapshot_file`]
/// records it.
///
/// Steps: remove a temp file an earlier failed attempt left (appending to it would put
/// the new bytes after the old ones), write the temp file in [`SNAPSHOT_IO_CHUNK_BYTES`]
/// pieces, fsync it, read it back piece by piece and verify it (length, CRC32C, header,
/// index and term), rename it to its real name, fsync the directory. A file that does
/// not read back as written never gets its real name: the temp file is removed (best
/// effort; recovery removes temp files too) and [`StorageError::SnapshotUnverified`]
/// returned. An error of `write_data` is an I/O error of the temp file (a writer that
/// fails on its own should say so in the error). Safe to call again after any error.
pub fn write_snapshot_file_with<D: Disk>(
    disk: &mut D,
    meta: &SnapshotMeta,
    write_data: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
) -> Result<u64, StorageError> {
    let name = snapshot_name(meta.index, meta.term);
    let tmp = format!("{name}{TMP_SUFFIX}");
    if disk.list().map_err(io_error("list", ""))?.contains(&tmp) {
        disk.remove(&tmp).map_err(io_error("remove", &tmp))?;
    }
    let data_len = match write_snapshot_tmp(disk, &tmp, meta, write_data) {
        Ok(data_len) => data_len,
        Err(e) => {
            // No temp file is left behind until the retry: a full disk is the commonest
            // reason for a failed write, and the partial file kept it full, so the next
            // WAL append failed too and the member stopped.
            let _ = disk.remove(&tmp);
            return Err(e);
        }
    };
    disk.rename(&tmp, &name).map_err(io_error("rename", &tmp))?;
    disk.sync_dir().map_err(io_error("sync_dir", ""))?;
    Ok(data_len)
}

/// [`write_snapshot_file_with`]'s temp file `tmp`, written, synced and verified; returns
/// the data's length.
fn write_snapshot_tmp<D: Disk>(
    disk: &mut D,
    tmp: &str,
    meta: &SnapshotMeta,
    write_data: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
) -> Result<u64, StorageError> {
    let mut w = ChunkedAppend { disk: &mut *disk, name: tmp, buf: Vec::new(), crc: 0, len: 0 };
    w.push(&encode_snapshot_header(meta)).map_err(io_error("append", tmp))?;
    let header_len = w.len + w.buf.len() as u64;
    write_data(&mut w).map_err(io_error("append", tmp))?;
    let data_len = w.len + w.buf.len() as u64 - header_len;
    w.push(&data_len.to_le_bytes()).map_err(io_error("append", tmp))?;
    w.flush_buf().map_err(io_error("append", tmp))?;
    let (crc, body_len) = (w.crc, w.len);
    disk.append(tmp, &crc.to_le_bytes()).map_err(io_error("append", tmp))?;
    disk.sync(tmp).map_err(io_error("sync", tmp))?;
    if let Err(found) = verify_snapshot_file(disk, tmp, meta, body_len + 4) {
        return Err(StorageError::SnapshotUnverified { file: tmp.to_string(), found });
    }
    Ok(data_len)
}

/// Appends to a file in [`SNAPSHOT_IO_CHUNK_BYTES`] pieces, keeping the CRC32C and the
/// length of what it appended.
struct ChunkedAppend<'a, D: Disk> {
    disk: &'a mut D,
    name: &'a str,
    buf: Vec<u8>,
    crc: u32,
    len: u64,
}

impl<D: Disk> ChunkedAppend<'_, D> {
    fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= SNAPSHOT_IO_CHUNK_BYTES {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.disk.append(self.name, &self.buf)?;
            self.crc = crc32c::crc32c_append(self.crc, &self.buf);
            let synced_up_to = self.len / SNAPSHOT_SYNC_EVERY_BYTES;
            self.len += self.buf.len() as u64;
            self.buf.clear();
            // Synced each time the length passes a multiple of SNAPSHOT_SYNC_EVERY_BYTES.
            if self.len / SNAPSHOT_SYNC_EVERY_BYTES > synced_up_to {
                self.disk.sync(self.name)?;
            }
        }
        Ok(())
    }
}

impl<D: Disk> io::Write for ChunkedAppend<'_, D> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.push(bytes)?;
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // the caller flushes once the trailer is in
    }
}

/// Reads a snapshot file back piece by piece and checks it: `len_expected` bytes, the
/// stored CRC32C matches the bytes, the header is well formed with lengths that add up,
/// and it names `meta`'s index and term. On failure, says what is wrong.
fn verify_snapshot_file<D: Disk>(
    disk: &D,
    name: &str,
    meta: &SnapshotMeta,
    len_expected: u64,
) -> Result<(), String> {
    let len = disk.file_len(name).map_err(|e| format!("reading its length: {e}"))?;
    if len != len_expected {
        return Err(format!("{len} bytes read back, {len_expected} written"));
    }
    let read_at = |offset: u64, n: usize| {
        let bytes = disk.read_at(name, offset, n).map_err(|e| format!("reading it back: {e}"))?;
        if bytes.len() != n {
            return Err(format!("at byte offset {offset}: the file ends early"));
        }
        Ok(bytes)
    };
    let body_len = len.checked_sub(4).ok_or("shorter than a snapshot header")?;
    let (mut crc, mut at) = (0u32, 0u64);
    while at < body_len {
        let n = (body_len - at).min(SNAPSHOT_IO_CHUNK_BYTES as u64) as usize;
        crc = crc32c::crc32c_append(crc, &read_at(at, n)?);
        at += n as u64;
    }
    let stored = u32::from_le_bytes(read_at(body_len, 4)?[..].try_into().expect("4 bytes"));
    if stored != crc {
        return Err(format!(
            "at byte offset {body_len}: checksum mismatch (stored crc32c {stored:#010x}, computed {crc:#010x})"
        ));
    }
    let (found, _, _) = locate_snapshot_data(len, read_at)?;
    if (found.index, found.term) != (meta.index, meta.term) {
        return Err(format!(
            "the file holds snapshot {}/{} instead of {}/{}",
            found.index, found.term, meta.index, meta.term
        ));
    }
    Ok(())
}

/// Up to `len` bytes of the data of the snapshot `meta` names, from `offset` into the
/// data (not the file), read from its file through `disk`; also the data's whole length.
/// For serving a snapshot to a follower chunk by chunk without holding it in memory.
/// Reads only the file's header and the range (checksum not verified: the file was
/// verified when written, and the follower verifies the data it restores).
pub fn read_snapshot_data<D: Disk>(
    disk: &D,
    meta: &SnapshotMeta,
    offset: u64,
    len: usize,
) -> Result<(Vec<u8>, u64), StorageError> {
    let name = snapshot_name(meta.index, meta.term);
    let file_len = disk.file_len(&name).map_err(io_error("read", &name))?;
    let read_at = |at: u64, n: usize| {
        let bytes = disk.read_at(&name, at, n).map_err(|e| format!("reading: {e}"))?;
        if bytes.len() != n {
            return Err(format!("at byte offset {at}: the file ends early"));
        }
        Ok(bytes)
    };
    let corrupt = |found: String| StorageError::Corrupt { file: name.clone(), offset: None, found };
    let (found, start, data_len) = locate_snapshot_data(file_len, read_at).map_err(corrupt)?;
    if (found.index, found.term) != (meta.index, meta.term) {
        return Err(corrupt(format!("holds snapshot {}/{}", found.index, found.term)));
    }
    let from = offset.min(data_len);
    let n = (data_len - from).min(len as u64) as usize;
    let bytes = disk.read_at(&name, start + from, n).map_err(io_error("read", &name))?;
    if bytes.len() != n {
        return Err(corrupt(format!("ends before data byte {}", from + n as u64)));
    }
    Ok((bytes, data_len))
}
