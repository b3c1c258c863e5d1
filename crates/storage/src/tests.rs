//! Behaviour tests for storage, run against the simulated disk (and one smoke test on
//! the real one).

use crate::sim::SplitMix64;
use crate::{
    read_snapshot_data, write_snapshot_file, write_snapshot_file_with, Disk, Options, RealDisk,
    RecoveryReport, SimDisk, Storage, StorageError, SNAPSHOT_IO_CHUNK_BYTES,
};
use raft::{ConfState, Entry, EntryKind, HardState, Index, Restored, Snapshot, SnapshotMeta, Term};
use std::collections::BTreeMap;
use std::sync::Arc;

fn entry(index: Index, term: Term) -> Entry {
    let data = format!("entry {index} of term {term}");
    Entry { term, index, kind: EntryKind::Normal, data: Arc::from(data.as_bytes()) }
}

fn entries(indices: std::ops::RangeInclusive<Index>, term: Term) -> Vec<Entry> {
    indices.map(|i| entry(i, term)).collect()
}

fn snapshot(index: Index, term: Term) -> Snapshot {
    let mut conf = ConfState::default();
    conf.voters.extend([1, 2, 3]);
    let data = format!("state machine at {index}");
    Snapshot { meta: SnapshotMeta { index, term, conf }, data: Arc::from(data.as_bytes()) }
}

fn hs(term: Term, vote: u64, commit: Index) -> HardState {
    HardState { term, vote, commit }
}

fn small_segments() -> Options {
    Options { segment_bytes_max: 256 }
}

type Opened = (Storage<SimDisk>, Restored, RecoveryReport);

fn open(disk: SimDisk, options: Options) -> Opened {
    Storage::open(disk, options).unwrap_or_else(|e| panic!("open failed: {e}"))
}

fn files(disk: &SimDisk, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> =
        disk.list().expect("list").into_iter().filter(|n| n.starts_with(prefix)).collect();
    names.sort();
    names
}

fn newest_segment(disk: &SimDisk) -> String {
    files(disk, "wal-").pop().expect("at least one segment")
}

#[test]
fn fresh_directory_recovers_empty_state() {
    let (storage, restored, report) = open(SimDisk::new(1), Options::default());
    assert_eq!(restored.hard_state, HardState::default());
    assert!(restored.snapshot.is_none() && restored.entries.is_empty());
    assert!(report.warnings.is_empty() && report.torn_tail.is_none());
    assert_eq!(storage.last_index(), 0);
}

#[test]
fn saved_entries_and_hard_state_survive_reopen() {
    let (mut storage, _, _) = open(SimDisk::new(2), Options::default());
    storage.save(Some(&hs(1, 1, 0)), None, &entries(1..=3, 1)).unwrap();
    storage.save(Some(&hs(2, 2, 3)), None, &entries(4..=5, 2)).unwrap();
    storage.save(Some(&hs(2, 2, 5)), None, &[]).unwrap();

    let (storage, restored, report) = open(storage.into_disk(), Options::default());
    assert_eq!(restored.hard_state, hs(2, 2, 5));
    let mut want = entries(1..=3, 1);
    want.extend(entries(4..=5, 2));
    assert_eq!(restored.entries, want);
    assert!(restored.snapshot.is_none());
    assert!(report.torn_tail.is_none(), "{report:?}");
    assert_eq!(storage.last_index(), 5);
}

/// Raft §5.3: a follower's conflicting suffix is replaced by the leader's entries. The
/// WAL never rewrites bytes; the later entry at an index wins on replay.
#[test]
fn conflicting_suffix_is_replaced_and_stays_replaced() {
    let (mut storage, _, _) = open(SimDisk::new(3), Options::default());
    storage.save(Some(&hs(1, 1, 2)), None, &entries(1..=5, 1)).unwrap();
    storage.save(Some(&hs(2, 2, 2)), None, &entries(3..=4, 2)).unwrap();

    let (mut storage, restored, _) = open(storage.into_disk(), Options::default());
    let mut want = entries(1..=2, 1);
    want.extend(entries(3..=4, 2));
    assert_eq!(restored.entries, want, "entry 5 of term 1 must be gone");

    // Appending after a reopen continues from the replaced log.
    storage.save(None, None, &entries(5..=5, 2)).unwrap();
    let (_, restored, _) = open(storage.into_disk(), Options::default());
    assert_eq!(restored.entries.last(), Some(&entry(5, 2)));
    assert_eq!(restored.entries.len(), 5);
}

#[test]
fn rotation_and_compaction_delete_covered_segments() {
    let (mut storage, _, _) = open(SimDisk::new(4), small_segments());
    for first in (1..=40).step_by(2) {
        storage.save(Some(&hs(1, 1, first + 1)), None, &entries(first..=first + 1, 1)).unwrap();
    }
    let before = files(storage.disk(), "wal-");
    assert!(before.len() >= 5, "small segments should rotate: {before:?}");

    storage.save_snapshot(&snapshot(30, 1)).unwrap();
    let after = files(storage.disk(), "wal-");
    assert!(after.len() < before.len(), "covered segments remain: {after:?}");
    let removed: Vec<&String> = before.iter().filter(|n| !after.contains(n)).collect();
    assert!(removed.iter().all(|n| **n < after[0]), "only the oldest segments go: {removed:?}");
    assert_eq!(files(storage.disk(), "snap-"), vec![crate::codec::snapshot_name(30, 1)]);

    storage.save(Some(&hs(1, 1, 42)), None, &entries(41..=42, 1)).unwrap();
    storage.save_snapshot(&snapshot(35, 1)).unwrap();
    assert_eq!(
        files(storage.disk(), "snap-"),
        vec![crate::codec::snapshot_name(35, 1)],
        "the older snapshot is deleted"
    );

    let (_, restored, report) = open(storage.into_disk(), small_segments());
    assert_eq!(restored.snapshot, Some(snapshot(35, 1)));
    assert_eq!(restored.entries, entries(36..=42, 1));
    assert_eq!(restored.hard_state, hs(1, 1, 42));
    assert!(report.warnings.is_empty(), "{report:?}");
}

/// Raft §7: a snapshot installed from the leader replaces the follower's whole log,
/// including entries past the snapshot that conflict with it.
#[test]
fn installed_snapshot_replaces_the_whole_log() {
    // Segments large enough that the stale log and the install share one segment, so
    // replay (not compaction) must discard the stale entries.
    let options = Options { segment_bytes_max: 1024 };
    let (mut storage, _, _) = open(SimDisk::new(5), options.clone());
    storage.save(Some(&hs(1, 1, 2)), None, &entries(1..=10, 1)).unwrap();
    storage.save(Some(&hs(2, 3, 5)), Some(&snapshot(5, 2)), &[]).unwrap();
    assert_eq!(files(storage.disk(), "wal-").len(), 1);

    let (mut storage, restored, _) = open(storage.into_disk(), options.clone());
    assert_eq!(restored.snapshot, Some(snapshot(5, 2)));
    assert!(restored.entries.is_empty(), "stale entries 6..=10 of term 1 are gone");
    assert_eq!(restored.hard_state, hs(2, 3, 5));
    for i in 6..=30 {
        storage.save(None, None, &entries(i..=i, 2)).unwrap();
    }
    assert!(files(storage.disk(), "wal-").len() > 1);

    // A later install past the end of the log makes every older segment obsolete.
    storage.save(Some(&hs(3, 3, 40)), Some(&snapshot(40, 3)), &entries(41..=41, 3)).unwrap();
    assert_eq!(files(storage.disk(), "wal-").len(), 1);
    let (_, restored, _) = open(storage.into_disk(), options);
    assert_eq!(restored.snapshot, Some(snapshot(40, 3)));
    assert_eq!(restored.entries, entries(41..=41, 3));
}

/// A power cut during the last write can leave any prefix of it. Every such prefix must
/// recover to the state before that batch (batches are atomic), with a warning.
#[test]
fn torn_tail_at_every_byte_offset_is_cut_with_a_warning() {
    let (mut storage, _, _) = open(SimDisk::new(6), Options::default());
    storage.save(Some(&hs(1, 1, 0)), None, &entries(1..=3, 1)).unwrap();
    storage.save(Some(&hs(1, 1, 3)), None, &entries(4..=4, 1)).unwrap();
    let disk = storage.disk().clone();
    let name = newest_segment(&disk);
    let batch_start = disk.read(&name).unwrap().len();
    storage.save(Some(&hs(2, 2, 4)), None, &entries(5..=7, 2)).unwrap();
    let full = storage.disk().read(&name).unwrap().len();
    assert!(full > batch_start + 60, "the last batch spans several records");

    for cut in batch_start..full {
        let mut disk = storage.disk().clone();
        disk.truncate(&name, cut as u64).unwrap();
        disk.sync(&name).unwrap();
        let (_, restored, report) = open(disk, Options::default());
        assert_eq!(restored.hard_state, hs(1, 1, 3), "cut at {cut}");
        assert_eq!(restored.entries, entries(1..=4, 1), "cut at {cut}");
        if cut == batch_start {
            assert!(report.torn_tail.is_none(), "a clean cut is not torn");
            continue;
        }
        let torn = report.torn_tail.as_ref().unwrap_or_else(|| panic!("no warning at {cut}"));
        assert_eq!((torn.file.as_str(), torn.offset), (name.as_str(), batch_start as u64));
        assert_eq!(torn.bytes_dropped, (cut - batch_start) as u64);
        assert!(report.warnings.iter().any(|w| w.contains(&name)), "{report:?}");
    }
}

#[test]
fn torn_tail_is_truncated_on_disk_and_appends_continue() {
    let (mut storage, _, _) = open(SimDisk::new(7), Options::default());
    storage.save(Some(&hs(1, 1, 1)), None, &entries(1..=2, 1)).unwrap();
    let name = newest_segment(storage.disk());
    let good = storage.disk().read(&name).unwrap().len();
    storage.save(None, None, &entries(3..=3, 1)).unwrap();
    let mut disk = storage.into_disk();
    disk.truncate(&name, good as u64 + 5).unwrap();
    disk.sync(&name).unwrap();

    let (mut storage, restored, report) = open(disk, Options::default());
    assert!(report.torn_tail.is_some());
    assert_eq!(restored.entries, entries(1..=2, 1));
    assert_eq!(storage.disk().durable_len(&name), Some(good), "tail cut durably");
    storage.save(None, None, &entries(3..=4, 1)).unwrap();
    let (_, restored, report) = open(storage.into_disk(), Options::default());
    assert_eq!(restored.entries, entries(1..=4, 1));
    assert!(report.torn_tail.is_none(), "{report:?}");
}

#[test]
fn damaged_final_record_is_treated_as_a_torn_tail() {
    let (mut storage, _, _) = open(SimDisk::new(8), Options::default());
    storage.save(Some(&hs(1, 1, 1)), None, &entries(1..=2, 1)).unwrap();
    storage.save(Some(&hs(1, 1, 2)), None, &entries(3..=3, 1)).unwrap();
    let mut disk = storage.into_disk();
    let name = newest_segment(&disk);
    let len = disk.read(&name).unwrap().len();
    disk.flip_byte(&name, len - 2); // inside the final commit record
    let (_, restored, report) = open(disk, Options::default());
    assert!(report.torn_tail.is_some());
    assert_eq!(restored.entries, entries(1..=2, 1));
    assert_eq!(restored.hard_state, hs(1, 1, 1));
}

/// Damage with valid records after it is not a torn write: recovery must refuse, name
/// the place, and change nothing.
#[test]
fn damage_before_the_tail_refuses_to_open_naming_file_and_offset() {
    let (mut storage, _, _) = open(SimDisk::new(9), Options::default());
    storage.save(Some(&hs(1, 1, 0)), None, &entries(1..=1, 1)).unwrap();
    let name = newest_segment(storage.disk());
    let second_batch = storage.disk().read(&name).unwrap().len();
    storage.save(None, None, &entries(2..=2, 1)).unwrap();
    storage.save(Some(&hs(1, 1, 2)), None, &entries(3..=3, 1)).unwrap();
    let mut disk = storage.into_disk();
    disk.flip_byte(&name, second_batch + 30); // inside entry 2's payload
    let before = disk.read(&name).unwrap();

    let err = Storage::open(disk.clone(), Options::default()).expect_err("must refuse");
    match &err {
        StorageError::Corrupt { file, offset, found } => {
            assert_eq!(file, &name);
            assert_eq!(*offset, Some(second_batch as u64));
            assert!(found.contains("checksum"), "{found}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&name) && message.contains(&format!("offset {second_batch}")));
    assert!(message.contains("replace the member"), "{message}");
    assert_eq!(disk.read(&name).unwrap(), before, "a refused open changes nothing");
}

#[test]
fn damage_at_the_end_of_an_older_segment_refuses_to_open() {
    let (mut storage, _, _) = open(SimDisk::new(10), small_segments());
    for i in 1..=12 {
        storage.save(Some(&hs(1, 1, i)), None, &entries(i..=i, 1)).unwrap();
    }
    let mut disk = storage.into_disk();
    let segments = files(&disk, "wal-");
    assert!(segments.len() >= 3);
    let len = disk.read(&segments[0]).unwrap().len();
    disk.flip_byte(&segments[0], len - 1);
    match Storage::open(disk, small_segments()) {
        Err(StorageError::Corrupt { file, offset: Some(_), .. }) => assert_eq!(file, segments[0]),
        other => panic!("expected Corrupt naming {}, got {other:?}", segments[0]),
    }
}

#[test]
fn power_loss_before_sync_loses_only_unsynced_batches() {
    let (mut lost, mut kept) = (0, 0);
    for seed in 0..64 {
        let (mut storage, _, _) = open(SimDisk::new(seed), Options::default());
        storage.save(Some(&hs(1, 1, 0)), None, &entries(1..=2, 1)).unwrap();
        storage.append(Some(&hs(2, 2, 2)), None, &entries(3..=5, 2)).unwrap();
        let mut disk = storage.into_disk();
        disk.crash();
        let (_, restored, _) = open(disk, Options::default());
        let mut all = entries(1..=2, 1);
        all.extend(entries(3..=5, 2));
        if restored.entries.len() == 2 {
            assert_eq!((restored.hard_state, &restored.entries[..]), (hs(1, 1, 0), &all[..2]));
            lost += 1;
        } else {
            assert_eq!((restored.hard_state, restored.entries), (hs(2, 2, 2), all));
            kept += 1;
        }
    }
    assert!(lost > 0 && kept > 0, "seeds should cover both outcomes: {lost} lost, {kept} kept");
}

#[test]
fn missing_middle_segment_is_reported() {
    let (mut storage, _, _) = open(SimDisk::new(11), small_segments());
    for i in 1..=12 {
        storage.save(Some(&hs(1, 1, i)), None, &entries(i..=i, 1)).unwrap();
    }
    let mut disk = storage.into_disk();
    let segments = files(&disk, "wal-");
    assert!(segments.len() >= 3);
    disk.remove(&segments[1]).unwrap();
    disk.sync_dir().unwrap();
    match Storage::open(disk, small_segments()) {
        Err(e @ StorageError::Corrupt { .. }) => {
            let message = e.to_string();
            assert!(message.contains(&segments[1]) && message.contains("missing"), "{message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// A crash during compaction can lose some segment removals but not others, leaving a
/// gap. The segments after the gap stand alone, so this is not damage.
#[test]
fn segments_left_by_an_interrupted_compaction_are_removed() {
    let (mut storage, _, _) = open(SimDisk::new(12), small_segments());
    for i in 1..=16 {
        storage.save(Some(&hs(1, 1, i)), None, &entries(i..=i, 1)).unwrap();
    }
    let first = files(storage.disk(), "wal-")[0].clone();
    let first_bytes = storage.disk().read(&first).unwrap();
    storage.save_snapshot(&snapshot(12, 1)).unwrap();
    let mut disk = storage.into_disk();
    assert!(!files(&disk, "wal-").contains(&first), "compaction removed the oldest segment");
    assert!(disk.read(&files(&disk, "wal-")[0]).is_ok());
    // The removal of the oldest segment did not reach the disk; later ones did.
    disk.append(&first, &first_bytes).unwrap();
    disk.sync(&first).unwrap();
    disk.sync_dir().unwrap();

    let (storage, restored, report) = open(disk, small_segments());
    assert_eq!(restored.snapshot, Some(snapshot(12, 1)));
    assert_eq!(restored.entries, entries(13..=16, 1));
    assert!(report.warnings.iter().any(|w| w.contains(&first)), "{report:?}");
    assert!(!files(storage.disk(), "wal-").contains(&first));
}

#[test]
fn snapshot_file_damage_is_detected() {
    let (mut storage, _, _) = open(SimDisk::new(13), Options::default());
    storage.save(Some(&hs(1, 1, 5)), None, &entries(1..=5, 1)).unwrap();
    storage.save_snapshot(&snapshot(4, 1)).unwrap();
    let name = crate::codec::snapshot_name(4, 1);

    let mut damaged = storage.disk().clone();
    damaged.flip_byte(&name, 40);
    match Storage::open(damaged, Options::default()) {
        Err(StorageError::Corrupt { file, offset: Some(_), .. }) => assert_eq!(file, name),
        other => panic!("expected Corrupt naming {name}, got {other:?}"),
    }

    let mut missing = storage.into_disk();
    missing.remove(&name).unwrap();
    match Storage::open(missing, Options::default()) {
        Err(e @ StorageError::Corrupt { .. }) => assert!(e.to_string().contains("missing")),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// save_snapshot does: append tmp, sync tmp, rename, sync_dir, append marker, sync, ...
/// A failure at each of the first steps, then a crash, must leave the old state and no
/// snapshot files behind.
#[test]
fn interrupted_snapshot_write_leaves_no_trace() {
    for fail_at in 0..5 {
        let (mut storage, _, _) = open(SimDisk::new(14 + fail_at), Options::default());
        storage.save(Some(&hs(1, 1, 5)), None, &entries(1..=5, 1)).unwrap();
        storage.disk_mut().fail_after_ops(fail_at);
        let err = storage.save_snapshot(&snapshot(5, 1)).expect_err("injected failure");
        assert!(matches!(err, StorageError::Io { .. }), "{err:?}");
        let mut disk = storage.into_disk();
        disk.crash();
        let (storage, restored, _) = open(disk, Options::default());
        assert_eq!(restored.entries, entries(1..=5, 1), "fail_at {fail_at}");
        if restored.snapshot.is_none() {
            assert!(files(storage.disk(), "snap-").is_empty(), "fail_at {fail_at}");
        }
    }
}

/// A member with entries 1..=20 (term 1, commit 20) over several small segments.
fn member_with_twenty_entries(seed: u64) -> Storage<SimDisk> {
    let (mut storage, _, _) = open(SimDisk::new(seed), small_segments());
    for i in 1..=20 {
        storage.save(Some(&hs(1, 1, i)), None, &entries(i..=i, 1)).unwrap();
    }
    assert!(files(storage.disk(), "wal-").len() > 2, "the test needs several segments");
    storage
}

/// Issue 11: a background snapshot write failed and left `.snap.tmp` behind; the retry
/// appended to it, and the doubled file was fsynced, renamed and adopted without a
/// check. The WAL it covered was deleted, and the member could not restart. Now a
/// failure at any step of the write (the appends of the data and of the checksum, fsync,
/// rename, directory fsync), then a retry, gives a snapshot that is adopted and a member
/// that restarts with all its data.
#[test]
fn snapshot_write_retried_after_a_failure_at_any_step_restarts_with_all_data() {
    for fail_at in 0..5 {
        let mut storage = member_with_twenty_entries(40 + fail_at);
        let snap = snapshot(15, 1);
        storage.disk_mut().fail_after_ops(fail_at);
        let err = write_snapshot_file(storage.disk_mut(), &snap).expect_err("injected failure");
        assert!(matches!(err, StorageError::Io { .. }), "fail_at {fail_at}: {err:?}");
        write_snapshot_file(storage.disk_mut(), &snap)
            .unwrap_or_else(|e| panic!("fail_at {fail_at}: the retry failed: {e}"));
        storage.adopt_snapshot_file(&snap.meta).unwrap();
        storage.save(Some(&hs(1, 1, 21)), None, &entries(21..=21, 1)).unwrap();

        let mut disk = storage.into_disk();
        disk.crash();
        let (_, restored, _) = Storage::open(disk, small_segments())
            .unwrap_or_else(|e| panic!("fail_at {fail_at}: the member cannot restart: {e}"));
        assert_eq!(restored.snapshot.map(|s| s.data), Some(snap.data), "fail_at {fail_at}");
        assert_eq!(restored.entries, entries(16..=21, 1), "fail_at {fail_at}");
    }
}

/// A disk that reports success for a write it got wrong: the read-back before the
/// rename catches it, the file never gets its real name, and the WAL stays whole.
#[test]
fn snapshot_that_reads_back_wrong_is_never_renamed_and_the_wal_is_kept() {
    let mut storage = member_with_twenty_entries(50);
    let segments = files(storage.disk(), "wal-");
    let snap = snapshot(15, 1);
    storage.disk_mut().corrupt_next_write();
    let err = write_snapshot_file(storage.disk_mut(), &snap).expect_err("read-back fails");
    assert!(matches!(err, StorageError::SnapshotUnverified { .. }), "{err:?}");
    assert!(err.to_string().contains("WAL it would have replaced is kept"), "{err}");
    assert!(files(storage.disk(), "snap-").is_empty(), "neither the real nor the temp name");
    storage.adopt_snapshot_file(&snap.meta).expect_err("there is no file to adopt");
    assert_eq!(files(storage.disk(), "wal-"), segments);

    let mut disk = storage.into_disk();
    disk.crash();
    let (_, restored, _) = open(disk, small_segments());
    assert!(restored.snapshot.is_none());
    assert_eq!(restored.entries, entries(1..=20, 1));
}

/// A snapshot being written is synced as it goes (every `SNAPSHOT_SYNC_EVERY_BYTES`), so
/// it never leaves tens of MiB dirty for the WAL's next fdatasync to wait for: here the
/// write fails after 9 MiB, and most of those were made durable along the way. The failed
/// write then removes its temp file: left behind, a partial snapshot kept a full disk full
/// until the retry, and the member's next WAL append failed.
#[test]
fn a_snapshot_being_written_is_synced_as_it_goes() {
    let mut storage = member_with_twenty_entries(61);
    let synced_before = storage.disk().synced_bytes();
    let meta = snapshot(15, 1).meta;
    let piece = vec![7u8; 64 * 1024];
    let failed = write_snapshot_file_with(storage.disk_mut(), &meta, |w| {
        for _ in 0..(9 << 20) / piece.len() {
            w.write_all(&piece)?;
        }
        Err(std::io::Error::other("stop here"))
    });
    assert!(failed.is_err());
    let synced = storage.disk().synced_bytes() - synced_before;
    assert!(
        synced >= 2 * crate::storage::SNAPSHOT_SYNC_EVERY_BYTES,
        "only {synced} of 9 MiB synced"
    );
    assert!(files(storage.disk(), "snap-").is_empty(), "the failed write left its temp file");
}

/// Issue 12: a snapshot was serialized whole into memory, then copied into the file's
/// bytes, then read back whole: three copies of the largest thing a member holds. Now
/// the service streams its data into the file in pieces (here in writes of every size,
/// over several 1 MiB chunks), and recovery reads back exactly what was streamed.
#[test]
fn snapshot_streamed_in_pieces_recovers_whole() {
    let mut storage = member_with_twenty_entries(60);
    let data: Vec<u8> =
        (0..SNAPSHOT_IO_CHUNK_BYTES * 2 + 12345).map(|i| (i * 7 % 251) as u8).collect();
    let meta = snapshot(15, 1).meta;
    let written = write_snapshot_file_with(storage.disk_mut(), &meta, |w| {
        let mut rest = &data[..];
        let mut size = 1;
        while !rest.is_empty() {
            let n = size.min(rest.len());
            w.write_all(&rest[..n])?;
            rest = &rest[n..];
            size = size * 3 + 1;
        }
        Ok(())
    })
    .expect("written");
    assert_eq!(written, data.len() as u64);
    storage.adopt_snapshot_file(&meta).expect("adopted");
    let mut disk = storage.into_disk();
    disk.crash();
    let (_, restored, _) = open(disk, small_segments());
    let snap = restored.snapshot.expect("a snapshot");
    assert_eq!((snap.meta, &snap.data[..]), (meta, &data[..]));
}

/// A leader serves a follower's snapshot from the file, chunk by chunk: every range of
/// the data reads back as written, the last one short, past the end empty; and the whole
/// length comes with each piece.
#[test]
fn snapshot_data_reads_back_by_range() {
    let mut storage = member_with_twenty_entries(61);
    let mut snap = snapshot(15, 1);
    snap.meta.conf.learners.insert(9);
    snap.data = (0..5000u32).map(|i| i as u8).collect::<Vec<u8>>().into();
    write_snapshot_file(storage.disk_mut(), &snap).expect("written");
    storage.adopt_snapshot_file(&snap.meta).expect("adopted");
    let total = snap.data.len() as u64;
    for (offset, len) in [(0, 1000), (1000, 1000), (4500, 1000), (0, 5000), (5000, 10), (7000, 1)] {
        let (bytes, whole) = read_snapshot_data(storage.disk(), &snap.meta, offset, len)
            .unwrap_or_else(|e| panic!("{offset}+{len}: {e}"));
        let from = (offset as usize).min(snap.data.len());
        let to = (from + len).min(snap.data.len());
        assert_eq!((&bytes[..], whole), (&snap.data[from..to], total), "{offset}+{len}");
    }
    let other = snapshot(16, 1).meta;
    let err = read_snapshot_data(storage.disk(), &other, 0, 10).expect_err("no such file");
    assert!(matches!(err, StorageError::Io { .. }), "{err:?}");
}

#[test]
fn io_error_poisons_storage_until_restart() {
    let (mut storage, _, _) = open(SimDisk::new(15), Options::default());
    storage.save(Some(&hs(1, 1, 1)), None, &entries(1..=1, 1)).unwrap();
    storage.disk_mut().fail_next_sync();
    let err = storage.save(None, None, &entries(2..=2, 1)).expect_err("sync fails");
    assert!(matches!(err, StorageError::Io { op: "sync", .. }), "{err:?}");
    let again = storage.save(None, None, &entries(2..=2, 1)).expect_err("poisoned");
    assert!(matches!(again, StorageError::Poisoned { .. }), "{again:?}");
    assert!(storage.sync().is_err() && storage.save_snapshot(&snapshot(1, 1)).is_err());
    assert!(again.to_string().contains("Restart"), "{again}");

    let mut disk = storage.into_disk();
    disk.crash();
    let (_, restored, _) = open(disk, Options::default());
    assert_eq!(restored.entries[0], entry(1, 1), "synced data survives");
    assert!(restored.entries.len() <= 2);
}

#[test]
fn failed_write_poisons_and_its_partial_record_is_cut() {
    let (mut storage, _, _) = open(SimDisk::new(16), Options::default());
    storage.save(Some(&hs(1, 1, 1)), None, &entries(1..=1, 1)).unwrap();
    storage.disk_mut().fail_next_write();
    let err = storage.save(None, None, &entries(2..=3, 1)).expect_err("write fails");
    assert!(matches!(err, StorageError::Io { op: "append", .. }), "{err:?}");
    assert!(storage.poisoned().is_some());
    let mut disk = storage.into_disk();
    disk.crash();
    let (_, restored, _) = open(disk, Options::default());
    assert_eq!(restored.entries, entries(1..=1, 1));
}

#[test]
fn stale_service_snapshot_is_refused_without_poisoning() {
    let (mut storage, _, _) = open(SimDisk::new(17), Options::default());
    storage.save(Some(&hs(1, 1, 5)), None, &entries(1..=5, 1)).unwrap();
    storage.save_snapshot(&snapshot(4, 1)).unwrap();
    let err = storage.save_snapshot(&snapshot(4, 1)).expect_err("not newer");
    assert!(matches!(err, StorageError::SnapshotNotNewer { index: 4, current: 4 }));
    storage.save(None, None, &entries(6..=6, 1)).expect("still usable");
}

#[test]
#[should_panic(expected = "leaves a gap")]
fn entries_leaving_a_gap_are_a_caller_bug() {
    let (mut storage, _, _) = open(SimDisk::new(18), Options::default());
    storage.save(None, None, &entries(1..=2, 1)).unwrap();
    let _ = storage.save(None, None, &entries(4..=4, 1));
}

#[test]
fn sim_disk_crash_is_decided_by_the_seed() {
    let run = |seed: u64| {
        let (mut storage, _, _) = open(SimDisk::new(seed), small_segments());
        for i in 1..=8 {
            storage.append(Some(&hs(1, 1, i - 1)), None, &entries(i..=i, 1)).unwrap();
        }
        let mut disk = storage.into_disk();
        disk.crash();
        let (_, restored, _) = open(disk, small_segments());
        restored.entries.len()
    };
    let outcomes: Vec<usize> = (0..16).map(run).collect();
    assert_eq!(outcomes, (0..16).map(run).collect::<Vec<_>>(), "same seed, same crash");
    assert!(outcomes.iter().any(|&n| n != outcomes[0]), "seeds differ: {outcomes:?}");
}

/// The naive reference for the model test: the full state after each batch.
#[derive(Clone, Debug, Default)]
struct ModelState {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    log: BTreeMap<Index, Entry>,
}

impl ModelState {
    fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }
    fn last_index(&self) -> Index {
        self.log.keys().next_back().copied().unwrap_or(0).max(self.snapshot_index())
    }
    fn view(&self) -> (HardState, Option<Snapshot>, Vec<Entry>) {
        let after = self.log.range(self.snapshot_index() + 1..).map(|(_, e)| e.clone());
        (self.hard_state, self.snapshot.clone(), after.collect())
    }
}

/// Every state written since the last successful sync is a possible crash outcome.
struct Model {
    states: Vec<ModelState>,
    synced: usize,
    term: Term,
}

impl Model {
    fn current(&self) -> &ModelState {
        self.states.last().expect("never empty")
    }
    fn check_recovered(&self, seed: u64, step: usize, restored: &Restored) {
        let got = (restored.hard_state, restored.snapshot.clone(), restored.entries.clone());
        let ok = self.states[self.synced..].iter().any(|s| s.view() == got);
        assert!(
            ok,
            "seed {seed} step {step}: recovered {got:?}\nnot among the states from the last \
             sync on: {:?}",
            self.states[self.synced..].iter().map(ModelState::view).collect::<Vec<_>>()
        );
    }
    fn restart_from(&mut self, restored: &Restored) {
        let log = restored.entries.iter().map(|e| (e.index, e.clone())).collect();
        let state = ModelState {
            hard_state: restored.hard_state,
            snapshot: restored.snapshot.clone(),
            log,
        };
        self.states = vec![state];
        self.synced = 0;
    }
}

/// A generated Ready's persist part and the model state after it.
struct RandomBatch {
    hard_state: Option<HardState>,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    next: ModelState,
}

/// One random Ready: maybe a hard state, maybe an installed snapshot, maybe entries
/// (possibly replacing a suffix above the commit index).
fn random_batch(rng: &mut SplitMix64, model: &mut Model) -> RandomBatch {
    let mut next = model.current().clone();
    if rng.up_to(4) == 0 {
        model.term += 1;
    }
    let term = model.term;
    let mut snap = None;
    if rng.up_to(19) == 0 {
        let floor = next.snapshot_index().max(next.hard_state.commit);
        let index = floor + 1 + rng.up_to((next.last_index() - floor + 4) as usize) as u64;
        let s =
            Snapshot { data: Arc::from(vec![rng.next_u64() as u8; 3]), ..snapshot(index, term) };
        next.log.clear();
        next.snapshot = Some(s.clone());
        snap = Some(s);
    }
    let mut batch = Vec::new();
    if rng.up_to(4) != 0 {
        let lowest = next.snapshot_index().max(next.hard_state.commit) + 1;
        let first = lowest + rng.up_to((next.last_index() + 1 - lowest) as usize) as u64;
        let count = 1 + rng.up_to(3) as u64;
        batch = (first..first + count).map(|i| entry(i, term)).collect();
        next.log.split_off(&first);
        next.log.extend(batch.iter().map(|e| (e.index, e.clone())));
    }
    let mut hard_state = None;
    if rng.coin() || snap.is_some() {
        let floor = next.hard_state.commit.max(next.snapshot_index());
        let commit = floor + rng.up_to((next.last_index() - floor) as usize) as u64;
        next.hard_state = HardState { term, vote: rng.up_to(3) as u64, commit };
        hard_state = Some(next.hard_state);
    }
    RandomBatch { hard_state, snapshot: snap, entries: batch, next }
}

fn random_service_snapshot(rng: &mut SplitMix64, model: &Model) -> Option<(Snapshot, ModelState)> {
    let current = model.current();
    let (floor, commit) = (current.snapshot_index(), current.hard_state.commit);
    if commit <= floor {
        return None;
    }
    let index = floor + 1 + rng.up_to((commit - floor - 1) as usize) as u64;
    let term = current.log[&index].term;
    let snap = Snapshot { data: Arc::from(vec![rng.next_u64() as u8; 5]), ..snapshot(index, term) };
    let mut next = current.clone();
    next.snapshot = Some(snap.clone());
    Some((snap, next))
}

fn crash_and_reopen(
    rng: &mut SplitMix64,
    storage: Storage<SimDisk>,
    (seed, step): (u64, usize),
    model: &mut Model,
) -> Storage<SimDisk> {
    let mut disk = storage.into_disk();
    disk.crash();
    if rng.up_to(3) == 0 {
        // Recovery's own repairs can fail or be cut by another crash; that must not
        // change what the next recovery finds.
        disk.fail_after_ops(rng.up_to(3) as u64);
        if let Err(e) = Storage::open(&mut disk, small_segments()) {
            assert!(matches!(e, StorageError::Io { .. }), "seed {seed} step {step}: {e}");
        }
        disk.crash();
    }
    let (storage, restored, _) = Storage::open(disk, small_segments())
        .unwrap_or_else(|e| panic!("seed {seed} step {step}: reopen failed: {e}"));
    model.check_recovered(seed, step, &restored);
    model.restart_from(&restored);
    storage
}

/// One seeded run of random saves, appends, syncs, snapshots, faults and crashes.
fn model_run(seed: u64, steps: usize) {
    let mut rng = SplitMix64::new(seed ^ 0x5EED);
    let mut model = Model { states: vec![ModelState::default()], synced: 0, term: 1 };
    let (mut storage, _, _) = open(SimDisk::new(seed), small_segments());
    for step in 0..steps {
        let result = match rng.up_to(19) {
            0..=8 => {
                let b = random_batch(&mut rng, &mut model);
                model.states.push(b.next);
                storage.save(b.hard_state.as_ref(), b.snapshot.as_ref(), &b.entries)
            }
            9..=12 => {
                let b = random_batch(&mut rng, &mut model);
                model.states.push(b.next);
                storage.append(b.hard_state.as_ref(), b.snapshot.as_ref(), &b.entries)
            }
            13..=14 => storage.sync(),
            15..=16 => match random_service_snapshot(&mut rng, &model) {
                Some((snap, next)) => {
                    model.states.push(next);
                    storage.save_snapshot(&snap)
                }
                None => Ok(()),
            },
            17 => {
                storage.disk_mut().fail_after_ops(rng.up_to(12) as u64);
                Ok(())
            }
            _ => {
                storage = crash_and_reopen(&mut rng, storage, (seed, step), &mut model);
                continue;
            }
        };
        match result {
            Ok(()) => {
                let current = model.current();
                assert_eq!(storage.last_index(), current.last_index(), "seed {seed} step {step}");
                assert_eq!(storage.hard_state(), current.hard_state, "seed {seed} step {step}");
                if !storage_has_unsynced(&storage) {
                    model.synced = model.states.len() - 1;
                }
            }
            Err(StorageError::Io { .. } | StorageError::Poisoned { .. }) => {
                storage = crash_and_reopen(&mut rng, storage, (seed, step), &mut model);
            }
            Err(e) => panic!("seed {seed} step {step}: unexpected error {e}"),
        }
    }
    storage.sync().ok();
    crash_and_reopen(&mut rng, storage, (seed, steps), &mut model);
}

fn storage_has_unsynced(storage: &Storage<SimDisk>) -> bool {
    storage.has_unsynced_writes()
}

/// The WAL against a naive model, under random operations, faults and crashes: after
/// every crash the recovered state is exactly one written at or after the last
/// successful sync (so every synced batch survives and no batch is half there).
#[test]
fn random_operations_and_crashes_match_the_model() {
    for seed in 0..400 {
        model_run(seed, 120);
    }
}

#[test]
fn real_disk_smoke() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir()
        .join(format!("raftkv-storage-smoke-{}-{nanos}", std::process::id()))
        .join("data");
    let options = Options { segment_bytes_max: 512 };
    {
        let disk = RealDisk::open(&dir).expect("create data dir");
        let (mut storage, restored, _) = Storage::open(disk, options.clone()).expect("open");
        assert!(restored.entries.is_empty());
        for i in 1..=20 {
            storage.save(Some(&hs(1, 1, i - 1)), None, &entries(i..=i, 1)).expect("save");
        }
        storage.save_snapshot(&snapshot(10, 1)).expect("snapshot");
        storage.save(Some(&hs(2, 2, 20)), None, &entries(21..=22, 2)).expect("save");
        storage.save(None, None, &entries(22..=22, 3)).expect("replace a suffix");
    }
    let disk = RealDisk::open(&dir).expect("reopen data dir");
    assert_eq!(disk.root(), dir.as_path());
    let (_, restored, report) = Storage::open(disk, options).expect("recover");
    let mut want = entries(11..=20, 1);
    want.extend([entry(21, 2), entry(22, 3)]);
    assert_eq!(restored.entries, want);
    assert_eq!(restored.snapshot, Some(snapshot(10, 1)));
    assert_eq!(restored.hard_state, hs(2, 2, 20));
    assert!(report.warnings.is_empty(), "{report:?}");
    std::fs::remove_dir_all(dir.parent().expect("has a parent")).expect("clean up");
}

fn temp_data_dir(what: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("raftkv-storage-{what}-{}-{nanos}", std::process::id()))
}

/// `RealDisk::remove_obsolete` takes the name away at once (recovery never sees it
/// again under its own name) and has the file gone once the disk is dropped, however
/// large it was (it is freed a few MiB at a time, off the caller's thread).
#[test]
fn real_disk_removes_obsolete_files_by_the_time_it_is_dropped() {
    let dir = temp_data_dir("obsolete");
    let mut disk = RealDisk::open(&dir).expect("create data dir");
    let big = vec![7u8; 9 << 20];
    for name in
        ["wal-00000000000000000001.log", "snap-00000000000000000010-00000000000000000001.snap"]
    {
        disk.append(name, &big).expect("append");
        disk.sync(name).expect("sync");
    }
    disk.append("keep", b"x").expect("append");
    disk.remove_obsolete("wal-00000000000000000001.log").expect("remove");
    disk.remove_obsolete("snap-00000000000000000010-00000000000000000001.snap").expect("remove");
    let names = disk.list().expect("list");
    assert!(
        names.iter().all(|n| n == "keep" || n.ends_with(".obsolete")),
        "the removed names are gone at once: {names:?}"
    );
    drop(disk);
    let left: Vec<_> =
        std::fs::read_dir(&dir).expect("read dir").flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, ["keep"], "every obsolete file is gone once the disk is dropped");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// A crash while an obsolete segment or snapshot was being freed leaves it renamed and
/// cut short; the next start removes it, says so, and recovers as if it were gone.
#[test]
fn recovery_removes_files_a_crash_left_half_removed() {
    let mut disk = SimDisk::new(7);
    {
        let (mut storage, _, _) = Storage::open(&mut disk, small_segments()).expect("open");
        for i in 1..=20 {
            storage.save(Some(&hs(1, 1, i - 1)), None, &entries(i..=i, 1)).expect("save");
        }
        storage.save_snapshot(&snapshot(10, 1)).expect("snapshot");
    }
    let before = disk.list().expect("list");
    // What the remover thread leaves when the process dies mid-way: renamed, shrunk.
    for name in [
        "wal-00000000000000000001.log.obsolete",
        "snap-00000000000000000005-00000000000000000001.snap.obsolete",
    ] {
        disk.append(name, &[1, 2, 3]).expect("append");
    }
    disk.sync_dir().expect("sync dir");
    let (_, restored, report) = Storage::open(&mut disk, small_segments()).expect("recover");
    assert_eq!(restored.snapshot, Some(snapshot(10, 1)));
    assert_eq!(restored.entries, entries(11..=20, 1));
    let removed =
        report.warnings.iter().filter(|w| w.contains("whose removal did not finish")).count();
    assert_eq!(removed, 2, "{report:?}");
    let mut after = disk.list().expect("list");
    after.sort();
    let mut before = before;
    before.sort();
    assert_eq!(after, before, "only the half-removed files went");
}
