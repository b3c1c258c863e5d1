//! Backups: what `Maintenance.Snapshot` streams (`etcdctl snapshot save` writes it to a
//! file as is), and the restore that turns such a file into the data dir of a member of
//! a new cluster (`raftkv snapshot restore`, as `etcdctl snapshot restore`).
//!
//! etcd streams its bolt database and appends the SHA-256 of everything before it; its
//! tools check that hash, and recognise it by the file size (bolt files are whole pages,
//! so a size of 32 more than a multiple of 512 means "hash appended"). We stream the
//! `kv` crate's own snapshot encoding of the state machine, in an envelope that keeps
//! both of those properties.
//!
//! # File format (version 1, integers little-endian)
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
//!
//! The payload is a consistent state at one applied log index: the server takes an O(1)
//! view of the state machine on the node thread and serialises it on another thread, so
//! the node never waits. It is serialised twice — once to count its bytes (the stream
//! announces how many remain, as etcd's does), once to send — so neither the server
//! nor the stream ever holds the whole snapshot in memory.

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
    total: u64,
}

impl Chunker<'_> {
    fn emit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.sha.update(&chunk);
        self.sent += chunk.len() as u64;
        if self.sent > self.total {
            return Err(io::Error::other("the snapshot grew while it was streamed"));
        }
        (self.send)(Bytes::from(chunk), self.total - self.sent)
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

/// Streams the backup of `view`: content chunks of at most [`CHUNK_BYTES`], each with
/// the content bytes still to come, then the 32-byte SHA-256 with 0 to come — etcd's
/// `SnapshotResponse` sequence. Stops at the first error `send` returns.
pub fn stream_backup(
    view: &SnapshotView,
    send: &mut dyn FnMut(Bytes, u64) -> io::Result<()>,
) -> io::Result<()> {
    let payload_bytes = view.write_to(&mut Counter(0))?;
    let total = content_len(payload_bytes);
    let mut out =
        Chunker { send, buf: Vec::with_capacity(CHUNK_BYTES), sha: Sha256::new(), sent: 0, total };
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
    let padding = total - HEADER_BYTES - payload_bytes;
    out.write_all(&vec![0u8; padding as usize])?;
    out.emit()?;
    assert_eq!(out.sent, total, "every content byte was sent");
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
    /// The file's SHA-256 (its last 32 bytes), checked.
    pub sha256: [u8; DIGEST_BYTES],
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

/// Reads and verifies a backup file: magic, version, length, SHA-256, then the payload
/// (structure and its own CRC) and the padding. Any problem is an error naming the file
/// and what is wrong; nothing is trusted before the hash matches.
pub fn read_backup(path: &Path) -> Result<Backup, BackupError> {
    let name = path.display();
    let err = |what: String| BackupError(format!("snapshot file {name}: {what}"));
    let io_err = |e: io::Error| err(format!("cannot read it: {e}"));
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let file_bytes = file.metadata().map_err(io_err)?.len();
    let mut header = [0u8; HEADER_BYTES as usize];
    if file_bytes < HEADER_BYTES + DIGEST_BYTES as u64 {
        return Err(err(format!(
            "only {file_bytes} bytes, too short for a raftkv snapshot (truncated or not a \
             snapshot)"
        )));
    }
    file.read_exact(&mut header).map_err(io_err)?;
    if header[..8] != BACKUP_MAGIC {
        return Err(err(
            "not a raftkv snapshot (no `raftkvBK` magic); etcd's own snapshots (bolt \
             databases) cannot be restored into raftkv"
                .into(),
        ));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != BACKUP_FORMAT_VERSION {
        return Err(err(format!(
            "format version {version}; this build reads version {BACKUP_FORMAT_VERSION}: use \
             the raftkv release that wrote it"
        )));
    }
    let payload_bytes = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    let expected = payload_bytes
        .checked_add(HEADER_BYTES + ALIGN_BYTES + DIGEST_BYTES as u64)
        .map(|_| content_len(payload_bytes) + DIGEST_BYTES as u64);
    if expected != Some(file_bytes) {
        let want = expected.map_or("an impossible size".to_string(), |n| format!("{n} bytes"));
        return Err(err(format!(
            "{file_bytes} bytes, but its header announces {want}: the file is truncated or \
             damaged (save the snapshot again)"
        )));
    }
    let content = file_bytes - DIGEST_BYTES as u64;
    let computed = hash_prefix(&mut file, content).map_err(io_err)?;
    let mut stored = [0u8; DIGEST_BYTES];
    file.read_exact(&mut stored).map_err(io_err)?;
    if stored != computed {
        return Err(err(format!(
            "sha256 mismatch (stored {}, computed {}): the file is damaged or incomplete (save \
             the snapshot again)",
            hex(&stored),
            hex(&computed)
        )));
    }
    file.seek(SeekFrom::Start(HEADER_BYTES)).map_err(io_err)?;
    let mut payload = Vec::new();
    (&mut file).take(payload_bytes).read_to_end(&mut payload).map_err(io_err)?;
    let state = StateMachine::restore(&payload[..])
        .map_err(|e| err(format!("its state machine does not decode: {e}")))?;
    let mut padding = Vec::new();
    (&mut file)
        .take(content - HEADER_BYTES - payload_bytes)
        .read_to_end(&mut padding)
        .map_err(io_err)?;
    if padding.iter().any(|b| *b != 0) {
        return Err(err("non-zero bytes in the padding after the state machine".into()));
    }
    Ok(Backup { state, payload, file_bytes, sha256: stored })
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

    fn stream(sm: &StateMachine) -> Vec<(Bytes, u64)> {
        let mut chunks = Vec::new();
        stream_backup(&sm.snapshot_view(), &mut |b, left| {
            chunks.push((b, left));
            Ok(())
        })
        .unwrap();
        chunks
    }

    /// etcd's framing: chunks with the bytes still to come, counting down to 0, then the
    /// SHA-256 of the content; the file size is 32 more than a multiple of 512.
    #[test]
    fn stream_has_etcd_framing_and_reads_back() {
        let sm = state_with(500);
        let chunks = stream(&sm);
        let (digest, left) = chunks.last().unwrap();
        assert_eq!((digest.len(), *left), (DIGEST_BYTES, 0));
        let content: Vec<u8> =
            chunks[..chunks.len() - 1].iter().flat_map(|(b, _)| b.to_vec()).collect();
        assert!(chunks.len() > 2, "the state spans several chunks");
        let mut sent = 0;
        for (b, left) in &chunks[..chunks.len() - 1] {
            assert!(b.len() <= CHUNK_BYTES);
            sent += b.len() as u64;
            assert_eq!(*left, content.len() as u64 - sent);
        }
        assert_eq!(&Sha256::digest(&content)[..], &digest[..]);
        assert_eq!((content.len() + DIGEST_BYTES) % 512, DIGEST_BYTES);

        let dir = std::env::temp_dir().join(format!("raftkv-backup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ok.db");
        let mut file = content.clone();
        file.extend_from_slice(digest);
        std::fs::write(&path, &file).unwrap();
        let back = read_backup(&path).unwrap();
        assert_eq!(back.state, sm);
        assert_eq!(back.key_count(), 500);

        // Damage anywhere, truncation and garbage are refused with the file named.
        let mut flipped = file.clone();
        flipped[HEADER_BYTES as usize + 100] ^= 1;
        let truncated = file[..file.len() - 1].to_vec();
        // A damaged payload under a hash that matches it: the payload's own check finds it.
        let mut rehashed = content.clone();
        rehashed[HEADER_BYTES as usize + 100] ^= 1;
        let digest = Sha256::digest(&rehashed);
        rehashed.extend_from_slice(&digest);
        let cases: [(&str, Vec<u8>, &str); 5] = [
            ("flipped.db", flipped, "sha256 mismatch"),
            ("truncated.db", truncated, "truncated"),
            ("rehashed.db", rehashed, "does not decode"),
            ("garbage.db", [b"not a snapshot at all. ".as_slice(); 10].concat(), "magic"),
            ("empty.db", Vec::new(), "too short"),
        ];
        for (name, bytes, want) in cases {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            let e = read_backup(&p).err().unwrap().to_string();
            assert!(e.contains(want) && e.contains(name), "{name}: {e}");
        }
        let e = read_backup(&dir.join("missing.db")).err().unwrap().to_string();
        assert!(e.contains("missing.db") && e.contains("cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An empty store streams and reads back too (the smallest file).
    #[test]
    fn empty_state_round_trips() {
        let sm = StateMachine::new(Config::default());
        let chunks = stream(&sm);
        assert_eq!(chunks.len(), 2, "one content chunk, then the hash");
        assert_eq!(
            chunks[0].0.len() as u64,
            content_len(sm.snapshot_view().write_to(&mut Counter(0)).unwrap())
        );
    }
}
