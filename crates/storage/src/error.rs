//! Errors storage reports, and the recovery report.

use raft::Index;
use std::fmt;
use std::io;

/// What to do about damaged durable state. Restarting the member empty under the same id
/// is deliberately not suggested: it would forget its vote and could vote twice in a term.
const CORRUPTION_ADVICE: &str = "this member's durable state cannot be trusted and it \
must not vote or acknowledge entries with it. Stop it, move its data directory aside \
(keep it for inspection), then replace the member: remove it from the cluster and add a \
new member with an empty data directory so the leader sends it a snapshot. Do not \
restart it empty under the same id (it would forget its vote). If this is the last copy \
of the data, restore from a backup instead";

/// Why storage refused to open or to write.
#[derive(Debug)]
pub enum StorageError {
    /// A disk operation failed. Storage is now poisoned (see [`crate::Storage`]).
    Io {
        /// The operation: `append`, `sync`, `rename`, ...
        op: &'static str,
        /// The file it was applied to (empty for directory operations).
        file: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// Durable data is damaged or inconsistent; recovery refuses to guess.
    Corrupt {
        /// The file where the problem was found.
        file: String,
        /// Byte offset in that file, when the problem has one.
        offset: Option<u64>,
        /// What was found there.
        found: String,
    },
    /// An earlier I/O error left the durable state unknown; nothing more is written.
    Poisoned {
        /// The error that poisoned storage.
        cause: String,
    },
    /// [`crate::Storage::save_snapshot`] was given a snapshot that is not newer than the
    /// stored one. Nothing was written and storage remains usable.
    SnapshotNotNewer {
        /// Index of the snapshot offered.
        index: Index,
        /// Index of the stored snapshot.
        current: Index,
    },
    /// A snapshot file did not read back as it was written: it never got its real name,
    /// so it cannot be adopted, and the WAL it would have replaced is kept. Nothing was
    /// written to the WAL; the write may be tried again.
    SnapshotUnverified {
        /// The snapshot file (or its temporary name).
        file: String,
        /// What was wrong with it.
        found: String,
    },
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { op, file, source } => write!(
                f,
                "storage I/O error: {op} {file:?} failed: {source}. Storage now refuses \
                 further writes (after a failed fsync the kernel may have dropped the data \
                 it had accepted, and retrying could report success falsely). Restart the \
                 member so recovery re-reads what actually reached the disk; if errors \
                 persist, check the device (kernel log, SMART) and free space"
            ),
            StorageError::Corrupt { file, offset: Some(at), found } => {
                write!(f, "corrupt data in {file:?} at byte offset {at}: {found}. Refusing to start: {CORRUPTION_ADVICE}")
            }
            StorageError::Corrupt { file, offset: None, found } => {
                write!(f, "inconsistent data in {file:?}: {found}. Refusing to start: {CORRUPTION_ADVICE}")
            }
            StorageError::Poisoned { cause } => write!(
                f,
                "storage refuses to write: an earlier I/O error ({cause}) left the durable \
                 state unknown. Restart the member to recover from what reached the disk"
            ),
            StorageError::SnapshotNotNewer { index, current } => write!(
                f,
                "snapshot at index {index} is not newer than the stored one at {current}; \
                 nothing was written"
            ),
            StorageError::SnapshotUnverified { file, found } => write!(
                f,
                "snapshot file {file:?} does not verify: {found}. It was not adopted and the \
                 WAL it would have replaced is kept, so nothing is lost; the snapshot is taken \
                 again later. If this repeats, check the device (kernel log, SMART)"
            ),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A torn final write that recovery cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The WAL segment it was in.
    pub file: String,
    /// The file was truncated to this length: the start of the incomplete batch.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes_dropped: u64,
    /// What was wrong with the first damaged or missing record.
    pub reason: String,
}

/// What recovery found and did, for the server to log.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// WAL segments read.
    pub segments_replayed: usize,
    /// Set if the last batch was incomplete and cut off.
    pub torn_tail: Option<TornTail>,
    /// One line per notable event (torn tail, leftover files removed), to log as warnings.
    pub warnings: Vec<String>,
}
