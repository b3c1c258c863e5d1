//! The leader's snapshot bytes, read from the snapshot file chunk by chunk.
//!
//! The Raft core used to keep its last snapshot's bytes in memory for as long as it was
//! current, only to send them to a follower that fell behind the log: the whole state
//! machine serialized, held next to the live state (issue 12). The node thread gives the
//! core this source instead (`raft::Raft::set_snapshot_source`), so the bytes live only
//! in the member's snapshot file (`storage` keeps the current one) and one chunk at a
//! time is read while a follower catches up.

use raft::{SnapshotMeta, SnapshotSource};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most one warning about unreadable snapshot chunks per this interval: a failing
/// read is retried at every answer of the follower.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Reads snapshot chunks from the snapshot files in a member's directory.
pub struct FileSnapshotSource {
    dir: PathBuf,
    last_warning: Option<Instant>,
}

impl FileSnapshotSource {
    /// Reads from the snapshot files `storage` keeps in `dir`.
    pub fn new(dir: PathBuf) -> FileSnapshotSource {
        FileSnapshotSource { dir, last_warning: None }
    }

    fn read_chunk(
        &self,
        meta: &SnapshotMeta,
        offset: u64,
        len: usize,
    ) -> Result<(Vec<u8>, u64), String> {
        let disk = storage::RealDisk::open(&self.dir)
            .map_err(|e| format!("{}: {e}", self.dir.display()))?;
        storage::read_snapshot_data(&disk, meta, offset, len).map_err(|e| e.to_string())
    }
}

impl SnapshotSource for FileSnapshotSource {
    fn read(&mut self, meta: &SnapshotMeta, offset: u64, max_len: u64) -> Option<(Arc<[u8]>, u64)> {
        let len = usize::try_from(max_len).unwrap_or(usize::MAX);
        match self.read_chunk(meta, offset, len) {
            Ok((bytes, total)) => Some((bytes.into(), total)),
            Err(e) => {
                if self.last_warning.is_none_or(|t| t.elapsed() >= WARN_INTERVAL) {
                    self.last_warning = Some(Instant::now());
                    tracing::warn!(
                        index = meta.index,
                        offset,
                        error = %e,
                        "cannot read a snapshot chunk for a follower; retrying at its next answer"
                    );
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::{ConfState, Snapshot};

    /// What a follower is sent is what the snapshot file holds, chunk by chunk; a
    /// snapshot whose file is gone gives `None` (retried later), not a panic.
    #[test]
    fn chunks_come_from_the_file_and_a_missing_file_is_none() {
        let dir = std::env::temp_dir().join(format!("raftkv-snapsrc-{}", std::process::id()));
        let mut disk = storage::RealDisk::open(&dir).expect("temp dir");
        let meta =
            SnapshotMeta { index: 7, term: 2, conf: ConfState::from_voters([1, 2, 3].into()) };
        let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        let snap = Snapshot { meta: meta.clone(), data: data.clone().into() };
        storage::write_snapshot_file(&mut disk, &snap).expect("written");
        let mut source = FileSnapshotSource::new(dir.clone());
        let mut got = Vec::new();
        while got.len() < data.len() {
            let (chunk, total) = source.read(&meta, got.len() as u64, 1000).expect("readable");
            assert_eq!(total, data.len() as u64);
            assert!(!chunk.is_empty() && chunk.len() <= 1000);
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, data);
        let gone = SnapshotMeta { index: 8, ..meta };
        assert!(source.read(&gone, 0, 1000).is_none());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
