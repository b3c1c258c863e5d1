//! Backups: what `Maintenance.Snapshot` streams (`etcdctl snapshot save` writes it to a
//! file as is), and the restore that turns such a file into the data dir of a member of
//! a new cluster (`raftkv snapshot restore`, as `etcdctl snapshot restore`).
//!
//! etcd streams its bolt database and appends the SHA-256 of everything before it; its
//! tools check that hash, and recognise it by the file size (bolt files are whole pages,
//! so a size of 32 more than a multiple of 512 means "hash appended"). raftkv streams
//! the same: its state in etcd's database layout ([`crate::etcd_db`], written by the
//! `bbolt` crate) and the SHA-256, so `etcdctl snapshot status` and `etcdctl snapshot
//! restore` take raftkv's snapshots and a real etcd starts from them.
//!
//! The restore reads both that and raftkv's older backup format (below), which
//! releases before the etcd layout streamed; it tells them apart by the first bytes.
//! Between raftkv members, the Raft snapshots a leader sends a follower stay in `kv`'s
//! own encoding (faster to write and read, and they carry the client sessions that an
//! etcd database has no place for); a backup is for people and etcd's tools.
//!
//! The export is a consistent state at one applied log index: the server takes an O(1)
//! view of the state machine on the node thread and writes it on another thread, so
//! the node never waits. The bbolt writer runs twice over the frozen view — once to
//! lay out the pages (the meta pages come first and name the root page and the size,
//! which the stream announces, as etcd's does), once to send — so neither the server
//! nor the stream ever holds the whole snapshot in memory.
//!
//! # raftkv's older backup format (version 1, integers little-endian)
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `raftkvBK` |
//! | 8 | 4 | format version [`BACKUP_FORMAT_VERSION`] |
//! | 12 | 4 | zero (reserved) |
//! | 16 | 8 | payload length `d` |
//! | 24 | `d` | the state machine: `kv`'s snapshot encoding, with its own CRC32C |
//! | 24 + `d` | | zeros up to a multiple of 512 bytes |
//! | end − 32 | 32 | SHA-256 of every byte before it |

use crate::config::{write_new_identity, Member};
use bytes::Bytes;
use kv::{RangeRequest, SnapshotView, StateMachine};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Magic bytes that open a backup file.
pub const BACKUP_MAGIC: [u8; 8] = *b"raftkvBK";
/// The format version this build writes and reads.
pub const BACKUP_FORMAT_VERSION: u32 = 1;
/// Bytes before the payload.
pub const HEADER_BYTES: u64 = 24;
/// The content before the hash is padded to a multiple of this (etcd's tools expect it).
pub const ALIGN_BYTES: u64 = 512;
/// Bytes of the stream's chunks (etcd sends 32 KiB).
pub const CHUNK_BYTES: usize = 32 * 1024;

/// Length of the content before the hash, for a payload of `payload_bytes`.
pub fn content_len(payload_bytes: u64) -> u64 {
    (HEADER_BYTES + payload_bytes).div_ceil(ALIGN_BYTES) * ALIGN_BYTES
}

/// Counts bytes and drops them.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Bytes in a SHA-256 digest.
pub const DIGEST_BYTES: usize = 32;

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Cuts what is written into chunks, hashing them, and hands each to `send` with the
/// number of content bytes still to come after it.
struct Chunker<'a> {
    send: &'a mut dyn FnMut(Bytes, u64) -> io::Result<()>,
    buf: Vec<u8>,
    sha: Sha256,
    sent: u64,
    /// Content bytes in all; known before the first chunk goes.
    total: &'a std::cell::Cell<u64>,
}

impl<'a> Chunker<'a> {
    fn new(
        send: &'a mut dyn FnMut(Bytes, u64) -> io::Result<()>,
        total: &'a std::cell::Cell<u64>,
    ) -> Self {
        Chunker { send, buf: Vec::with_capacity(CHUNK_BYTES), sha: Sha256::new(), sent: 0, total }
    }

    fn emit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.sha.update(&chunk);
        self.sent += chunk.len() as u64;
        let total = self.total.get();
        if self.sent > total {
            return Err(io::Error::other("the snapshot grew while it was streamed"));
        }
        (self.send)(Bytes::from(chunk), total - self.sent)
    }
}

impl Write for Chunker<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let take = (CHUNK_BYTES - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() == CHUNK_BYTES {
            self.emit()?;
        }
        Ok(take)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Streams the backup of `view` as etcd's snapshot: its state in etcd's database
/// layout, in content chunks of at most [`CHUNK_BYTES`], each with the content bytes
/// still to come, then the 32-byte SHA-256 with 0 to come — etcd's `SnapshotResponse`
/// sequence. Stops at the first error `send` returns.
pub fn stream_backup(
    view: &SnapshotView,
    send: &mut dyn FnMut(Bytes, u64) -> io::Result<()>,
) -> io::Result<()> {
    let total = std::cell::Cell::new(0u64);
    let mut out = Chunker::new(send, &total);
    crate::etcd_db::write_etcd_db(view.state(), &mut out, &mut |n| {
        total.set(n);
        Ok(())
    })?;
    out.emit()?;
    assert_eq!(out.sent, total.get(), "every content byte was sent");
    let digest = out.sha.clone().finalize();
    (out.send)(Bytes::copy_from_slice(&digest), 0)
}

/// Streams the backup of `view` in raftkv's older format (see the module docs), with
/// the same framing as [`stream_backup`]. Restores still read it.
pub fn stream_raftkv_backup(
    view: &SnapshotView,
    send: &mut dyn FnMut(Bytes, u64) -> io::Result<()>,
) -> io::Result<()> {
    let payload_bytes = view.write_to(&mut Counter(0))?;
    let total = std::cell::Cell::new(content_len(payload_bytes));
    let mut out = Chunker::new(send, &total);
    out.write_all(&BACKUP_MAGIC)?;
    out.write_all(&BACKUP_FORMAT_VERSION.to_le_bytes())?;
    out.write_all(&0u32.to_le_bytes())?;
    out.write_all(&payload_bytes.to_le_bytes())?;
    let written = view.write_to(&mut out)?;
    if written != payload_bytes {
        return Err(io::Error::other(format!(
            "the snapshot serialised to {written} bytes, then {payload_bytes}: a frozen view \
             must not change"
        )));
    }
    let padding = total.get() - HEADER_BYTES - payload_bytes;
    out.write_all(&vec![0u8; padding as usize])?;
    out.emit()?;
    assert_eq!(out.sent, total.get(), "every content byte was sent");
    let digest = out.sha.clone().finalize();
    (out.send)(Bytes::copy_from_slice(&digest), 0)
}

/// Why a backup file cannot be used. The message names the file.
#[derive(Debug)]
pub struct BackupError(pub String);

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BackupError {}

/// A verified backup file.
pub struct Backup {
    /// The state machine it holds.
    pub state: StateMachine,
    /// The payload bytes (`kv`'s snapshot encoding of `state`).
    pub payload: Vec<u8>,
    /// The file's size in bytes.
    pub file_bytes: u64,
    /// The file's SHA-256 (its last 32 bytes), checked; `None` for an etcd database
    /// without one, read with the hash check skipped.
    pub sha256: Option<[u8; DIGEST_BYTES]>,
    /// Whether the file is an etcd database (else raftkv's older format).
    pub etcd: bool,
    /// What the file held that the state does not keep (see [`crate::etcd_db::Imported`]).
    pub skipped: Vec<String>,
}

impl Backup {
    /// Keys live at the current revision.
    pub fn key_count(&self) -> u64 {
        let all = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            count_only: true,
            ..Default::default()
        };
        self.state.range(&all).map_or(0, |r| r.count)
    }
}

/// Reads and verifies a backup file: an etcd snapshot or database (bbolt, as `etcdctl
/// snapshot save` and raftkv's `Maintenance.Snapshot` write it) or raftkv's older
/// format, told apart by the first bytes. The trailing SHA-256 is checked unless
/// `skip_hash_check` (etcd's `--skip-hash-check`, for a db file copied from a data dir,
/// which has none). Any problem is an error naming the file and what is wrong.
pub fn read_backup(path: &Path, skip_hash_check: bool) -> Result<Backup, BackupError> {
    let name = path.display();
    let err = |what: String| BackupError(format!("snapshot file {name}: {what}"));
    let io_err = |e: io::Error| err(format!("cannot read it: {e}"));
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let file_bytes = file.metadata().map_err(io_err)?.len();
    let mut magic = [0u8; 8];
    if file_bytes >= 8 {
        file.read_exact(&mut magic).map_err(io_err)?;
    }
    if magic == BACKUP_MAGIC {
        return read_raftkv_backup(file, file_bytes).map_err(err);
    }
    read_etcd_backup(file, file_bytes, skip_hash_check).map_err(err)
}

/// The bytes of the bbolt database in an etcd snapshot file: all but the trailing
/// SHA-256 if there is one (checked unless `skip_hash_check`), else all of it (allowed
/// only with `skip_hash_check`, as etcd).
fn etcd_db_bytes(
    file: &mut std::fs::File,
    file_bytes: u64,
    skip_hash_check: bool,
) -> Result<(u64, Option<[u8; DIGEST_BYTES]>), String> {
    let io_err = |e: io::Error| format!("cannot read it: {e}");
    if file_bytes % ALIGN_BYTES != DIGEST_BYTES as u64 {
        if !skip_hash_check {
            return Err(format!(
                "{file_bytes} bytes, so no SHA-256 at its end (etcd's snapshots are whole                  512-byte blocks plus 32): truncated, or a database copied from a data dir;                  to restore a copied database anyway, add --skip-hash-check"
            ));
        }
        return Ok((file_bytes, None));
    }
    let content = file_bytes - DIGEST_BYTES as u64;
    let mut stored = [0u8; DIGEST_BYTES];
    file.seek(SeekFrom::Start(content)).map_err(io_err)?;
    file.read_exact(&mut stored).map_err(io_err)?;
    if !skip_hash_check {
        let computed = hash_prefix(file, content).map_err(io_err)?;
        if stored != computed {
            return Err(format!(
                "sha256 mismatch (stored {}, computed {}): the file is damaged or incomplete \
                 (save the snapshot again)",
                hex(&stored),
                hex(&computed)
            ));
        }
    }
    Ok((content, Some(stored)))
}

fn read_etcd_backup(
    mut file: std::fs::File,
    file_bytes: u64,
    skip_hash_check: bool,
) -> Result<Backup, String> {
    let (db_bytes, sha256) = etcd_db_bytes(&mut file, file_bytes, skip_hash_check)?;
    let db = bbolt::Db::open((file, db_bytes)).map_err(|e| {
        format!("neither a raftkv snapshot nor an etcd one (a bbolt database): {e}")
    })?;
    let imported = crate::etcd_db::read_etcd_db(db).map_err(|e| format!("etcd database: {e}"))?;
    let mut payload = Vec::new();
    imported.state.snapshot_view().write_to(&mut payload).map_err(|e| e.to_string())?;
    Ok(Backup {
        state: imported.state,
        payload,
        file_bytes,
        sha256,
        etcd: true,
        skipped: imported.skipped,
    })
}

/// etcd's `snapshot status` of an etcd snapshot file (hash over every bucket, last
/// revision, keys in all buckets, database size), as `etcdctl snapshot status` prints
/// it. Unlike etcdctl it also checks the trailing SHA-256 when there is one, so a
/// damaged snapshot is reported before anyone restores it.
pub fn etcd_status(path: &Path) -> Result<(u32, u64, u64, u64), BackupError> {
    let err = |what: String| BackupError(format!("snapshot file {}: {what}", path.display()));
    let mut file = std::fs::File::open(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let len = file.metadata().map_err(|e| err(format!("cannot read it: {e}")))?.len();
    let has_hash = len % ALIGN_BYTES == DIGEST_BYTES as u64;
    let (db_bytes, _) = etcd_db_bytes(&mut file, len, !has_hash).map_err(err)?;
    let db = bbolt::Db::open((file, db_bytes)).map_err(|e| err(e.to_string()))?;
    crate::etcd_db::db_status(&db).map_err(err)
}

fn read_raftkv_backup(mut file: std::fs::File, file_bytes: u64) -> Result<Backup, String> {
    let io_err = |e: io::Error| format!("cannot read it: {e}");
    let mut header = [0u8; HEADER_BYTES as usize];
    if file_bytes < HEADER_BYTES + DIGEST_BYTES as u64 {
        return Err(format!(
            "only {file_bytes} bytes, too short for a raftkv snapshot (truncated or not a \
             snapshot)"
        ));
    }
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    file.read_exact(&mut header).map_err(io_err)?;
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != BACKUP_FORMAT_VERSION {
        return Err(format!(
            "format version {version}; this build reads version {BACKUP_FORMAT_VERSION}: use \
             the raftkv release that wrote it"
        ));
    }
    let payload_bytes = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    let expected = payload_bytes
        .checked_add(HEADER_BYTES + ALIGN_BYTES + DIGEST_BYTES as u64)
        .map(|_| content_len(payload_bytes) + DIGEST_BYTES as u64);
    if expected != Some(file_bytes) {
        let want = expected.map_or("an impossible size".to_string(), |n| format!("{n} bytes"));
        return Err(format!(
            "{file_bytes} bytes, but its header announces {want}: the file is truncated or \
             damaged (save the snapshot again)"
        ));
    }
    let content = file_bytes - DIGEST_BYTES as u64;
    let computed = hash_prefix(&mut file, content).map_err(io_err)?;
    let mut stored = [0u8; DIGEST_BYTES];
    file.read_exact(&mut stored).map_err(io_err)?;
    if stored != computed {
        return Err(format!(
            "sha256 mismatch (stored {}, computed {}): the file is damaged or incomplete (save \
             the snapshot again)",
            hex(&stored),
            hex(&computed)
        ));
    }
    file.seek(SeekFrom::Start(HEADER_BYTES)).map_err(io_err)?;
    let mut payload = Vec::new();
    (&mut file).take(payload_bytes).read_to_end(&mut payload).map_err(io_err)?;
    let mut state = StateMachine::restore(&payload[..])
        .map_err(|e| format!("its state machine does not decode: {e}"))?;
    if !state.members().is_empty() {
        // A backup starts a new cluster: the old cluster's members are not its members.
        state.clear_members();
        payload.clear();
        state.snapshot_view().write_to(&mut payload).map_err(|e| e.to_string())?;
    }
    let mut padding = Vec::new();
    (&mut file)
        .take(content - HEADER_BYTES - payload_bytes)
        .read_to_end(&mut padding)
        .map_err(io_err)?;
    if padding.iter().any(|b| *b != 0) {
        return Err("non-zero bytes in the padding after the state machine".into());
    }
    Ok(Backup {
        state,
        payload,
        file_bytes,
        sha256: Some(stored),
        etcd: false,
        skipped: Vec::new(),
    })
}

fn hash_prefix(file: &mut std::fs::File, len: u64) -> io::Result<[u8; DIGEST_BYTES]> {
    file.seek(SeekFrom::Start(0))?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(left as usize);
        file.read_exact(&mut buf[..want])?;
        sha.update(&buf[..want]);
        left -= want as u64;
    }
    Ok(sha.finalize().into())
}

/// What [`restore_data_dir`] wrote.
#[derive(Clone, Debug)]
pub struct Restored {
    /// Store revision of the restored data.
    pub revision: u64,
    /// Log index the new members start after (the backup's applied index).
    pub index: u64,
    /// Keys live at `revision`.
    pub keys: u64,
}

/// Writes, into the empty (or missing) `data_dir`, the data dir of member `me` of a new
/// cluster (`members`, `cluster_id`, as `--initial-cluster` gives them) holding the
/// state of `backup`. Each member of the new cluster gets its own data dir from the same
/// file; `raftkv server` then starts the cluster from them.
///
/// The data dir holds one Raft snapshot at the backup's applied index (term 1, the new
/// members as voters), so the new cluster's log continues after it and every member
/// starts from identical state: keys, values, revisions, leases and compaction as saved.
pub fn restore_data_dir(
    backup: Backup,
    data_dir: &Path,
    me: &Member,
    members: &[Member],
    cluster_id: u64,
) -> Result<Restored, BackupError> {
    let shown = data_dir.display();
    let dir_err = |e: String| BackupError(format!("--data-dir {shown}: {e}"));
    if let Ok(mut entries) = std::fs::read_dir(data_dir) {
        if entries.next().is_some() {
            return Err(dir_err(
                "not empty; a restore writes a new member's data dir, so give a new or empty \
                 directory"
                    .into(),
            ));
        }
    }
    let member_dir = data_dir.join("member");
    std::fs::create_dir_all(&member_dir).map_err(|e| dir_err(format!("cannot create: {e}")))?;
    let written = write_member_dir(backup, data_dir, &member_dir, me, members, cluster_id);
    if written.is_err() {
        // Leave no half-written data dir that a server could start on.
        let _ = std::fs::remove_dir_all(&member_dir);
        let _ = std::fs::remove_file(data_dir.join(crate::config::IDENTITY_FILE));
    }
    written.map_err(dir_err)
}

fn write_member_dir(
    backup: Backup,
    data_dir: &Path,
    member_dir: &Path,
    me: &Member,
    members: &[Member],
    cluster_id: u64,
) -> Result<Restored, String> {
    let disk = storage::RealDisk::open(member_dir).map_err(|e| e.to_string())?;
    let (mut store, _, _) =
        storage::Storage::open(disk, storage::Options::default()).map_err(|e| e.to_string())?;
    // Index 0 means "no snapshot" to the log: a backup of a store that never applied a
    // command still starts the new log after index 1.
    let index = backup.state.applied_index().max(1);
    let term = 1;
    let voters = members.iter().map(|m| m.id).collect();
    let restored = Restored { revision: backup.state.revision(), index, keys: backup.key_count() };
    let snapshot = raft::Snapshot {
        meta: raft::SnapshotMeta { index, term, conf: raft::ConfState::from_voters(voters) },
        data: backup.payload.into(),
    };
    store.save_snapshot(&snapshot).map_err(|e| e.to_string())?;
    let hard_state = raft::HardState { term, vote: 0, commit: index };
    store.save(Some(&hard_state), None, &[]).map_err(|e| e.to_string())?;
    // The identity goes last: with it, the data dir is one a server will start on.
    write_new_identity(data_dir, me, cluster_id).map_err(|e| e.0)?;
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv::{Command, Config, Op, PutRequest};

    fn state_with(keys: usize) -> StateMachine {
        let mut sm = StateMachine::new(Config::default());
        for i in 0..keys {
            let put = PutRequest {
                key: format!("key{i:05}").into_bytes(),
                value: vec![b'v'; i % 300],
                ..Default::default()
            };
            sm.apply_command(i as u64 + 1, &Command::new(Op::Put(put)));
        }
        sm
    }

    type Streamer =
        fn(&SnapshotView, &mut dyn FnMut(Bytes, u64) -> io::Result<()>) -> io::Result<()>;

    fn stream(sm: &StateMachine, streamer: Streamer) -> Vec<(Bytes, u64)> {
        let mut chunks = Vec::new();
        streamer(&sm.snapshot_view(), &mut |b, left| {
            chunks.push((b, left));
            Ok(())
        })
        .unwrap();
        chunks
    }

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("raftkv-backup-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Checks etcd's framing (chunks counting down to 0, then the SHA-256 of the
    /// content; 32 more than a multiple of 512) and returns the file's bytes.
    fn framed_file(chunks: &[(Bytes, u64)]) -> Vec<u8> {
        let (digest, left) = chunks.last().unwrap();
        assert_eq!((digest.len(), *left), (DIGEST_BYTES, 0));
        let content: Vec<u8> =
            chunks[..chunks.len() - 1].iter().flat_map(|(b, _)| b.to_vec()).collect();
        let mut sent = 0;
        for (b, left) in &chunks[..chunks.len() - 1] {
            assert!(b.len() <= CHUNK_BYTES);
            sent += b.len() as u64;
            assert_eq!(*left, content.len() as u64 - sent);
        }
        assert_eq!(&Sha256::digest(&content)[..], &digest[..]);
        assert_eq!((content.len() + DIGEST_BYTES) % 512, DIGEST_BYTES);
        let mut file = content;
        file.extend_from_slice(digest);
        file
    }

    fn all(sm: &StateMachine) -> Vec<kv::KeyValue> {
        let r = RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
        sm.range(&r).unwrap().kvs
    }

    /// The stream is an etcd snapshot: etcd's framing around a bbolt database that
    /// reads back as the same keys, revision and hash.
    #[test]
    fn stream_is_an_etcd_snapshot_that_reads_back() {
        let sm = state_with(500);
        let chunks = stream(&sm, stream_backup);
        assert!(chunks.len() > 2, "the state spans several chunks");
        let file = framed_file(&chunks);
        let dir = scratch("etcd");
        let path = dir.join("ok.db");
        std::fs::write(&path, &file).unwrap();
        let back = read_backup(&path, false).unwrap();
        assert!(back.etcd && back.skipped.is_empty());
        assert_eq!(all(&back.state), all(&sm));
        assert_eq!(back.state.revision(), sm.revision());
        let hash = |s: &StateMachine| crate::hash::hash_kv(s, 0).unwrap();
        assert_eq!(hash(&back.state), hash(&sm));
        let (_, revision, _, size) = etcd_status(&path).unwrap();
        assert_eq!((revision, size), (sm.revision(), file.len() as u64 - 32));

        // A copied db (no hash) needs --skip-hash-check, as in etcd.
        let db_only = dir.join("db");
        std::fs::write(&db_only, &file[..file.len() - 32]).unwrap();
        let e = read_backup(&db_only, false).err().unwrap().to_string();
        assert!(e.contains("--skip-hash-check") && e.contains("db"), "{e}");
        assert_eq!(all(&read_backup(&db_only, true).unwrap().state), all(&sm));

        let mut flipped = file.clone();
        flipped[file.len() / 2] ^= 1;
        let cases: [(&str, Vec<u8>, &str); 4] = [
            ("flipped.db", flipped, "sha256 mismatch"),
            ("truncated.db", file[..file.len() - 1].to_vec(), "no SHA-256"),
            ("garbage.db", [b"not a snapshot at all. ".as_slice(); 10].concat(), "no SHA-256"),
            ("empty.db", Vec::new(), "no SHA-256"),
        ];
        for (name, bytes, want) in cases {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            let e = read_backup(&p, false).err().unwrap().to_string();
            assert!(e.contains(want) && e.contains(name), "{name}: {e}");
        }
        let e = read_backup(&dir.join("missing.db"), false).err().unwrap().to_string();
        assert!(e.contains("missing.db") && e.contains("cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Damage under a matching hash (or with the check skipped) in any page: an error
    /// or other data, never a panic; a foreign bbolt file is refused by name.
    #[test]
    fn damaged_etcd_databases_are_errors_never_panics() {
        let mut sm = state_with(300);
        sm.apply_command(301, &Command::new(Op::LeaseGrant { id: 9, ttl_secs: 60 }));
        let file = framed_file(&stream(&sm, stream_backup));
        let db = &file[..file.len() - 32];
        let dir = scratch("damage");
        let path = dir.join("damaged.db");
        let mut seed = 0x1234_5678_9abc_def0u64;
        for round in 0..400 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let mut bytes = db.to_vec();
            let at = (seed >> 20) as usize % bytes.len();
            bytes[at] ^= 1 << (round % 8);
            std::fs::write(&path, &bytes).unwrap();
            if let Err(e) = read_backup(&path, true) {
                assert!(e.to_string().contains("damaged.db"), "{e}");
            }
        }
        let foreign = dir.join("foreign.db");
        let mut out = Vec::new();
        bbolt::write_db(&mut out, 1, &mut |_| Ok(()), &mut |w| {
            w.bucket(b"images")?;
            w.put(b"alpine", b"sha256:...")
        })
        .unwrap();
        std::fs::write(&foreign, &out).unwrap();
        let e = read_backup(&foreign, true).err().unwrap().to_string();
        assert!(e.contains("\"images\" is not one of etcd's"), "{e}");
        // etcd's buckets and one more: refused, not half imported.
        let mut out = Vec::new();
        bbolt::write_db(&mut out, 1, &mut |_| Ok(()), &mut |w| {
            for name in [&b"key"[..], b"meta", b"zextra"] {
                w.bucket(name)?;
            }
            Ok(())
        })
        .unwrap();
        std::fs::write(&foreign, &out).unwrap();
        let e = read_backup(&foreign, true).err().unwrap().to_string();
        assert!(e.contains("\"zextra\" is not one of etcd's") && e.contains("foreign.db"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// raftkv's older backups still restore.
    #[test]
    fn older_raftkv_backups_still_read() {
        let sm = state_with(200);
        let file = framed_file(&stream(&sm, stream_raftkv_backup));
        let dir = scratch("old");
        let path = dir.join("old.db");
        std::fs::write(&path, &file).unwrap();
        let back = read_backup(&path, false).unwrap();
        assert!(!back.etcd);
        assert_eq!(back.state, sm);
        // The old cluster's member table does not come along into the new cluster.
        let mut with_members = sm.clone();
        with_members.seed_members(&[kv::Member { id: 7, ..kv::Member::default() }]);
        std::fs::write(&path, framed_file(&stream(&with_members, stream_raftkv_backup))).unwrap();
        let back = read_backup(&path, false).unwrap();
        assert!(back.state.members().is_empty());
        assert!(StateMachine::restore(&back.payload[..]).unwrap().members().is_empty());
        let mut rehashed = file[..file.len() - 32].to_vec();
        rehashed[HEADER_BYTES as usize + 100] ^= 1;
        let digest = Sha256::digest(&rehashed);
        rehashed.extend_from_slice(&digest);
        std::fs::write(&path, &rehashed).unwrap();
        let e = read_backup(&path, false).err().unwrap().to_string();
        assert!(e.contains("does not decode"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
