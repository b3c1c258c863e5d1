//! Encoding and decoding of WAL records and snapshot files, and the file-name scheme.
//! The byte layouts are documented in the crate docs; this file is their only
//! implementation, so the two must change together.

use crc32c::crc32c;
use raft::{ConfState, Entry, EntryKind, HardState, Index, Snapshot, SnapshotMeta, Term};
use std::fmt;
use std::sync::Arc;

/// `len` (4) + `crc` (4) + `type` (1).
pub(crate) const RECORD_HEADER_BYTES: usize = 9;
/// Largest payload a record may carry. Bounds what a damaged length field can make the
/// reader believe; the Raft core's proposal limit is far below it.
pub(crate) const RECORD_PAYLOAD_MAX_BYTES: usize = 64 << 20;

const WAL_MAGIC: [u8; 8] = *b"raftkvWL";
const WAL_VERSION: u32 = 1;
const SNAP_MAGIC: [u8; 8] = *b"raftkvSN";
/// Version 3 puts the data length after the data, so a snapshot can be streamed into
/// its file while it is serialized (its length unknown until the end). Version 2 (length
/// before the data) stores the whole configuration (joint halves, learners); version 1
/// files (voters only, length first) are still read.
pub(crate) const SNAP_VERSION: u32 = 3;
const SNAP_VERSION_LENGTH_FIRST: u32 = 2;
const SNAP_VERSION_VOTERS_ONLY: u32 = 1;
/// Magic, version, index, term: the fixed start of every snapshot file.
pub(crate) const SNAP_FIXED_HEADER_BYTES: usize = 8 + 4 + 8 + 8;
/// What follows the data in a version 3 file: its length (8) and the CRC32C (4).
pub(crate) const SNAP_TRAILER_BYTES: usize = 8 + 4;

const TYPE_SEGMENT_HEADER: u8 = 1;
const TYPE_ENTRY: u8 = 2;
const TYPE_HARD_STATE: u8 = 3;
const TYPE_SNAPSHOT: u8 = 4;
const TYPE_COMMIT: u8 = 5;

/// Suffix of a snapshot file being written; such files are never read back.
pub(crate) const TMP_SUFFIX: &str = ".tmp";
/// Suffix of a WAL segment or snapshot file being removed (see
/// `Disk::remove_obsolete`); recovery removes any it finds.
pub(crate) const OBSOLETE_SUFFIX: &str = ".obsolete";

/// The first record of every segment: a checkpoint of everything that is not an entry,
/// so that older segments can be deleted without losing the hard state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub seq: u64,
    pub hard_state: HardState,
    pub snapshot_index: Index,
    pub snapshot_term: Term,
}

/// One decoded WAL record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    SegmentHeader(SegmentHeader),
    Entry(Entry),
    HardState(HardState),
    /// A snapshot file `snap-<index>-<term>.snap` is durable; with `reset`, the log
    /// before it is discarded (a snapshot installed from the leader).
    Snapshot {
        index: Index,
        term: Term,
        reset: bool,
    },
    /// Closes a batch of `records` records; a batch without it never happened.
    Commit {
        records: u32,
    },
}

/// Why bytes do not decode as a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    ShortHeader { available: usize },
    TooLong { len: u32 },
    ShortRecord { len: u32, available: usize },
    BadCrc { stored: u32, computed: u32 },
    UnknownType(u8),
    BadPayload(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::ShortHeader { available } => write!(
                f,
                "only {available} bytes left, less than a {RECORD_HEADER_BYTES}-byte record header"
            ),
            DecodeError::TooLong { len } => {
                write!(f, "record length {len} exceeds the maximum {RECORD_PAYLOAD_MAX_BYTES}")
            }
            DecodeError::ShortRecord { len, available } => write!(
                f,
                "record of {len} payload bytes but only {available} bytes follow its header"
            ),
            DecodeError::BadCrc { stored, computed } => write!(
                f,
                "checksum mismatch (stored crc32c {stored:#010x}, computed {computed:#010x})"
            ),
            DecodeError::UnknownType(t) => write!(f, "unknown record type {t}"),
            DecodeError::BadPayload(why) => write!(f, "malformed record: {why}"),
        }
    }
}

fn frame(out: &mut Vec<u8>, record_type: u8, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    out.push(record_type);
    payload(out);
    let len = out.len() - start - RECORD_HEADER_BYTES;
    assert!(
        len <= RECORD_PAYLOAD_MAX_BYTES,
        "a WAL record of {len} bytes exceeds the {RECORD_PAYLOAD_MAX_BYTES}-byte limit"
    );
    let crc = crc32c(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_hard_state(out: &mut Vec<u8>, hs: &HardState) {
    out.extend_from_slice(&hs.term.to_le_bytes());
    out.extend_from_slice(&hs.vote.to_le_bytes());
    out.extend_from_slice(&hs.commit.to_le_bytes());
}

pub(crate) fn encode_segment_header(h: &SegmentHeader, out: &mut Vec<u8>) {
    frame(out, TYPE_SEGMENT_HEADER, |out| {
        out.extend_from_slice(&WAL_MAGIC);
        out.extend_from_slice(&WAL_VERSION.to_le_bytes());
        out.extend_from_slice(&h.seq.to_le_bytes());
        put_hard_state(out, &h.hard_state);
        out.extend_from_slice(&h.snapshot_index.to_le_bytes());
        out.extend_from_slice(&h.snapshot_term.to_le_bytes());
    });
}

pub(crate) fn encode_entry(e: &Entry, out: &mut Vec<u8>) {
    frame(out, TYPE_ENTRY, |out| {
        out.extend_from_slice(&e.index.to_le_bytes());
        out.extend_from_slice(&e.term.to_le_bytes());
        out.push(e.kind.to_u8());
        out.extend_from_slice(&e.data);
    });
}

pub(crate) fn encode_hard_state(hs: &HardState, out: &mut Vec<u8>) {
    frame(out, TYPE_HARD_STATE, |out| put_hard_state(out, hs));
}

pub(crate) fn encode_snapshot_marker(index: Index, term: Term, reset: bool, out: &mut Vec<u8>) {
    frame(out, TYPE_SNAPSHOT, |out| {
        out.extend_from_slice(&index.to_le_bytes());
        out.extend_from_slice(&term.to_le_bytes());
        out.push(u8::from(reset));
    });
}

pub(crate) fn encode_commit(records: u32, out: &mut Vec<u8>) {
    frame(out, TYPE_COMMIT, |out| out.extend_from_slice(&records.to_le_bytes()));
}

/// A cursor over a payload; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::BadPayload("payload shorter than its fields"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8 bytes")))
    }
    /// A member list: count (u32) then that many ids (u64).
    fn id_list(&mut self) -> Result<std::collections::BTreeSet<u64>, DecodeError> {
        let count = self.u32()? as usize;
        (0..count).map(|_| self.u64()).collect()
    }
    /// `n` ids (u64), the count read elsewhere.
    fn id_list_of(&mut self, n: u32) -> Result<std::collections::BTreeSet<u64>, DecodeError> {
        (0..n).map(|_| self.u64()).collect()
    }
    fn hard_state(&mut self) -> Result<HardState, DecodeError> {
        Ok(HardState { term: self.u64()?, vote: self.u64()?, commit: self.u64()? })
    }
    fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::BadPayload("payload longer than its fields"))
        }
    }
}

/// Checks the frame at the start of `buf` and returns the record type and payload.
fn check_frame(buf: &[u8]) -> Result<(u8, &[u8]), DecodeError> {
    if buf.len() < RECORD_HEADER_BYTES {
        return Err(DecodeError::ShortHeader { available: buf.len() });
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes"));
    if len as usize > RECORD_PAYLOAD_MAX_BYTES {
        return Err(DecodeError::TooLong { len });
    }
    let end = RECORD_HEADER_BYTES + len as usize;
    if buf.len() < end {
        let available = buf.len() - RECORD_HEADER_BYTES;
        return Err(DecodeError::ShortRecord { len, available });
    }
    let stored = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let computed = crc32c(&buf[8..end]);
    if stored != computed {
        return Err(DecodeError::BadCrc { stored, computed });
    }
    Ok((buf[8], &buf[RECORD_HEADER_BYTES..end]))
}

/// Decodes the record at the start of `buf`; returns it and its size in bytes.
pub(crate) fn decode_record(buf: &[u8]) -> Result<(Record, usize), DecodeError> {
    let (record_type, payload) = check_frame(buf)?;
    let size = RECORD_HEADER_BYTES + payload.len();
    let mut r = Reader { buf: payload };
    let record = match record_type {
        TYPE_SEGMENT_HEADER => {
            if r.bytes(8)? != WAL_MAGIC {
                return Err(DecodeError::BadPayload("segment header without the WAL magic"));
            }
            if r.u32()? != WAL_VERSION {
                return Err(DecodeError::BadPayload(
                    "unsupported WAL version (written by a different raftkv release)",
                ));
            }
            let seq = r.u64()?;
            let hard_state = r.hard_state()?;
            let (snapshot_index, snapshot_term) = (r.u64()?, r.u64()?);
            Record::SegmentHeader(SegmentHeader { seq, hard_state, snapshot_index, snapshot_term })
        }
        TYPE_ENTRY => {
            let (index, term) = (r.u64()?, r.u64()?);
            let kind =
                EntryKind::from_u8(r.u8()?).ok_or(DecodeError::BadPayload("unknown entry kind"))?;
            let data: Arc<[u8]> = Arc::from(std::mem::take(&mut r.buf));
            Record::Entry(Entry { term, index, kind, data })
        }
        TYPE_HARD_STATE => Record::HardState(r.hard_state()?),
        TYPE_SNAPSHOT => {
            let (index, term) = (r.u64()?, r.u64()?);
            let reset = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError::BadPayload("snapshot marker flag is not 0 or 1")),
            };
            Record::Snapshot { index, term, reset }
        }
        TYPE_COMMIT => Record::Commit { records: r.u32()? },
        other => return Err(DecodeError::UnknownType(other)),
    };
    r.finish()?;
    Ok((record, size))
}

/// True if a record that passes its checksum starts anywhere in `buf[from..]`. Used to
/// tell a torn tail (nothing valid after the damage) from damage in the middle.
pub(crate) fn valid_record_after(buf: &[u8], from: usize) -> bool {
    let last_start = buf.len().saturating_sub(RECORD_HEADER_BYTES);
    (from..=last_start).any(|p| {
        // Cheap filter first: only a known type byte can start a record.
        (TYPE_SEGMENT_HEADER..=TYPE_COMMIT).contains(&buf[p + 8]) && check_frame(&buf[p..]).is_ok()
    })
}

/// The header of a (version 3) snapshot file: everything before the service's data.
pub(crate) fn encode_snapshot_header(meta: &SnapshotMeta) -> Vec<u8> {
    let conf = &meta.conf;
    let lists = [&conf.voters, &conf.voters_outgoing, &conf.learners, &conf.learners_next];
    let ids: usize = lists.iter().map(|l| l.len()).sum();
    let mut out = Vec::with_capacity(SNAP_FIXED_HEADER_BYTES + 16 + ids * 8);
    out.extend_from_slice(&SNAP_MAGIC);
    out.extend_from_slice(&SNAP_VERSION.to_le_bytes());
    out.extend_from_slice(&meta.index.to_le_bytes());
    out.extend_from_slice(&meta.term.to_le_bytes());
    for list in lists {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for id in list {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    out
}

/// Snapshot file bytes (layout in the crate docs), whole: for tests (the real writer
/// streams, see `storage::write_snapshot_file_with`).
#[cfg(test)]
pub(crate) fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let mut out = encode_snapshot_header(&s.meta);
    out.reserve(s.data.len() + SNAP_TRAILER_BYTES);
    out.extend_from_slice(&s.data);
    out.extend_from_slice(&(s.data.len() as u64).to_le_bytes());
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a snapshot file; on failure returns the byte offset and what was wrong.
pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, (u64, String)> {
    let (meta, data) = check_snapshot(bytes)?;
    let data: Arc<[u8]> = Arc::from(&bytes[data]);
    Ok(Snapshot { meta, data })
}

/// Verifies a snapshot file (length, checksum, header) without copying its data: what
/// it covers, and where the service's data lies in `bytes`.
pub(crate) fn check_snapshot(
    bytes: &[u8],
) -> Result<(SnapshotMeta, std::ops::Range<usize>), (u64, String)> {
    const FIXED_BYTES: usize = SNAP_FIXED_HEADER_BYTES + 4 + 8 + 4;
    if bytes.len() < FIXED_BYTES {
        return Err((
            0,
            format!("file of {} bytes is shorter than a snapshot header", bytes.len()),
        ));
    }
    let body_len = bytes.len() - 4;
    let stored = u32::from_le_bytes(bytes[body_len..].try_into().expect("4 bytes"));
    let computed = crc32c(&bytes[..body_len]);
    if stored != computed {
        return Err((
            body_len as u64,
            format!("checksum mismatch (stored crc32c {stored:#010x}, computed {computed:#010x})"),
        ));
    }
    let mut r = Reader { buf: &bytes[..body_len] };
    let field_error = |e: DecodeError| (0, e.to_string());
    if r.bytes(8).map_err(field_error)? != SNAP_MAGIC {
        return Err((0, "not a raftkv snapshot (bad magic)".to_string()));
    }
    let version = r.u32().map_err(field_error)?;
    let index = r.u64().map_err(field_error)?;
    let term = r.u64().map_err(field_error)?;
    let conf = match version {
        SNAP_VERSION_VOTERS_ONLY => ConfState::from_voters(r.id_list().map_err(field_error)?),
        SNAP_VERSION | SNAP_VERSION_LENGTH_FIRST => ConfState {
            voters: r.id_list().map_err(field_error)?,
            voters_outgoing: r.id_list().map_err(field_error)?,
            learners: r.id_list().map_err(field_error)?,
            learners_next: r.id_list().map_err(field_error)?,
        },
        _ => return Err((8, format!("unsupported snapshot version {version}"))),
    };
    let data_len = if version == SNAP_VERSION {
        let Some(at) = r.buf.len().checked_sub(8) else {
            return Err((body_len as u64, "file ends before the data length".into()));
        };
        let len = u64::from_le_bytes(r.buf[at..].try_into().expect("8 bytes"));
        r.buf = &r.buf[..at];
        len
    } else {
        r.u64().map_err(field_error)?
    };
    if data_len != r.buf.len() as u64 {
        let at = (bytes.len() - r.buf.len()) as u64;
        return Err((at, format!("data length {data_len} but {} bytes of data", r.buf.len())));
    }
    let start = r.buf.as_ptr() as usize - bytes.as_ptr() as usize;
    Ok((SnapshotMeta { index, term, conf }, start..start + r.buf.len()))
}

/// Where the service's data lies in a snapshot file of `file_len` bytes, found by
/// reading only its header through `read_at(offset, len)`: (what the snapshot covers,
/// data offset, data length). Checks the header's shape and that the lengths add up;
/// not the checksum (that needs the whole file).
pub(crate) fn locate_snapshot_data(
    file_len: u64,
    mut read_at: impl FnMut(u64, usize) -> Result<Vec<u8>, String>,
) -> Result<(SnapshotMeta, u64, u64), String> {
    let fixed = read_at(0, SNAP_FIXED_HEADER_BYTES)?;
    let mut r = Reader { buf: &fixed };
    let short = |e: DecodeError| format!("header: {e}");
    if r.bytes(8).map_err(short)? != SNAP_MAGIC {
        return Err("not a raftkv snapshot (bad magic)".into());
    }
    let version = r.u32().map_err(short)?;
    let (index, term) = (r.u64().map_err(short)?, r.u64().map_err(short)?);
    let lists = match version {
        SNAP_VERSION_VOTERS_ONLY => 1,
        SNAP_VERSION | SNAP_VERSION_LENGTH_FIRST => 4,
        _ => return Err(format!("unsupported snapshot version {version}")),
    };
    let mut at = SNAP_FIXED_HEADER_BYTES as u64;
    let mut read_list = |at: &mut u64| -> Result<std::collections::BTreeSet<u64>, String> {
        let count = read_at(*at, 4)?;
        let n = u32::from_le_bytes(count[..].try_into().map_err(|_| "header ends early")?);
        if *at + 4 + n as u64 * 8 > file_len {
            return Err(format!("a member list of {n} ids runs past the end of the file"));
        }
        let ids = read_at(*at + 4, n as usize * 8)?;
        *at += 4 + n as u64 * 8;
        Reader { buf: &ids }.id_list_of(n).map_err(short)
    };
    let voters = read_list(&mut at)?;
    let mut conf = ConfState::from_voters(voters);
    if lists == 4 {
        conf.voters_outgoing = read_list(&mut at)?;
        conf.learners = read_list(&mut at)?;
        conf.learners_next = read_list(&mut at)?;
    }
    let (start, len, trailer) = if version == SNAP_VERSION {
        let tail = file_len.checked_sub(SNAP_TRAILER_BYTES as u64).ok_or("file too short")?;
        let len = read_at(tail, 8)?;
        (at, u64::from_le_bytes(len[..].try_into().map_err(|_| "file ends early")?), 12)
    } else {
        let len = read_at(at, 8)?;
        (at + 8, u64::from_le_bytes(len[..].try_into().map_err(|_| "file ends early")?), 4)
    };
    if start.checked_add(len).and_then(|e| e.checked_add(trailer)) != Some(file_len) {
        return Err(format!("data length {len} does not fit a file of {file_len} bytes"));
    }
    Ok((SnapshotMeta { index, term, conf }, start, len))
}

pub(crate) fn segment_name(seq: u64) -> String {
    format!("{}{seq:020}.log", crate::SEGMENT_PREFIX)
}

fn parse_fixed_u64(digits: &str) -> Option<u64> {
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    parse_fixed_u64(name.strip_prefix(crate::SEGMENT_PREFIX)?.strip_suffix(".log")?)
}

pub(crate) fn snapshot_name(index: Index, term: Term) -> String {
    format!("snap-{index:020}-{term:020}.snap")
}

pub(crate) fn parse_snapshot_name(name: &str) -> Option<(Index, Term)> {
    let rest = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    let (index, term) = rest.split_once('-')?;
    Some((parse_fixed_u64(index)?, parse_fixed_u64(term)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, term: Term, data: &[u8]) -> Entry {
        Entry { term, index, kind: EntryKind::Normal, data: Arc::from(data) }
    }

    #[test]
    fn every_record_type_round_trips() {
        let hs = HardState { term: 7, vote: 3, commit: 5 };
        let header = SegmentHeader { seq: 9, hard_state: hs, snapshot_index: 4, snapshot_term: 2 };
        let mut buf = Vec::new();
        encode_segment_header(&header, &mut buf);
        encode_entry(&entry(5, 7, b"hello"), &mut buf);
        encode_hard_state(&hs, &mut buf);
        encode_snapshot_marker(4, 2, true, &mut buf);
        encode_commit(3, &mut buf);
        let mut at = 0;
        let mut got = Vec::new();
        while at < buf.len() {
            let (rec, n) = decode_record(&buf[at..]).expect("valid record");
            got.push(rec);
            at += n;
        }
        let want = vec![
            Record::SegmentHeader(header),
            Record::Entry(entry(5, 7, b"hello")),
            Record::HardState(hs),
            Record::Snapshot { index: 4, term: 2, reset: true },
            Record::Commit { records: 3 },
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn every_single_byte_flip_in_a_record_is_detected() {
        let mut buf = Vec::new();
        encode_entry(&entry(1, 1, b"payload"), &mut buf);
        for i in 0..buf.len() {
            let mut damaged = buf.clone();
            damaged[i] ^= 0x40;
            assert!(decode_record(&damaged).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn snapshot_file_round_trips_and_detects_damage() {
        let mut conf = ConfState::default();
        conf.voters.extend([1, 2, 3]);
        let snap = Snapshot {
            meta: SnapshotMeta { index: 10, term: 3, conf },
            data: Arc::from(&b"state machine"[..]),
        };
        let bytes = encode_snapshot(&snap);
        assert_eq!(decode_snapshot(&bytes).expect("valid"), snap);
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x01;
            assert!(decode_snapshot(&damaged).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn snapshot_keeps_a_joint_configuration_with_learners() {
        let set = |ids: &[u64]| ids.iter().copied().collect();
        let conf = ConfState {
            voters: set(&[1, 2, 4]),
            voters_outgoing: set(&[1, 2, 3]),
            learners: set(&[5]),
            learners_next: set(&[3]),
        };
        let snap = Snapshot {
            meta: SnapshotMeta { index: 10, term: 3, conf },
            data: Arc::from(&b"state"[..]),
        };
        assert_eq!(decode_snapshot(&encode_snapshot(&snap)).expect("valid"), snap);
    }

    /// A snapshot file written before membership changes (version 1: voters only).
    #[test]
    fn version_1_snapshot_file_is_still_read() {
        let mut v1 = Vec::new();
        v1.extend_from_slice(&SNAP_MAGIC);
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&10u64.to_le_bytes());
        v1.extend_from_slice(&3u64.to_le_bytes());
        v1.extend_from_slice(&2u32.to_le_bytes());
        v1.extend_from_slice(&1u64.to_le_bytes());
        v1.extend_from_slice(&2u64.to_le_bytes());
        v1.extend_from_slice(&5u64.to_le_bytes());
        v1.extend_from_slice(b"state");
        let crc = crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let snap = decode_snapshot(&v1).expect("a version 1 file decodes");
        assert_eq!(snap.meta.conf, ConfState::from_voters([1, 2].into()));
        assert_eq!((snap.meta.index, snap.meta.term, &snap.data[..]), (10, 3, &b"state"[..]));
    }

    /// A snapshot file written before streaming (version 2: the data length before the
    /// data) is still read, by whole-file decoding and by range.
    #[test]
    fn version_2_snapshot_file_is_still_read() {
        let mut v2 = Vec::new();
        v2.extend_from_slice(&SNAP_MAGIC);
        v2.extend_from_slice(&2u32.to_le_bytes());
        v2.extend_from_slice(&10u64.to_le_bytes());
        v2.extend_from_slice(&3u64.to_le_bytes());
        for list in [&[1u64, 2][..], &[], &[7], &[]] {
            v2.extend_from_slice(&(list.len() as u32).to_le_bytes());
            list.iter().for_each(|id| v2.extend_from_slice(&id.to_le_bytes()));
        }
        v2.extend_from_slice(&5u64.to_le_bytes());
        v2.extend_from_slice(b"state");
        let crc = crc32c(&v2);
        v2.extend_from_slice(&crc.to_le_bytes());
        let snap = decode_snapshot(&v2).expect("a version 2 file decodes");
        let mut conf = ConfState::from_voters([1, 2].into());
        conf.learners.insert(7);
        assert_eq!(snap.meta.conf, conf);
        assert_eq!((snap.meta.index, snap.meta.term, &snap.data[..]), (10, 3, &b"state"[..]));
        let read = |at: u64, n: usize| Ok(v2[at as usize..at as usize + n].to_vec());
        let (meta, start, len) = locate_snapshot_data(v2.len() as u64, read).expect("located");
        assert_eq!((meta, &v2[start as usize..(start + len) as usize]), (snap.meta, &b"state"[..]));
    }

    #[test]
    fn membership_entry_kind_round_trips() {
        let e = Entry { kind: EntryKind::ConfChange, ..entry(4, 2, &[1, 0, 0, 0, 0]) };
        let mut buf = Vec::new();
        encode_entry(&e, &mut buf);
        assert_eq!(decode_record(&buf).expect("valid").0, Record::Entry(e));
    }

    #[test]
    fn file_names_round_trip_and_reject_lookalikes() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_snapshot_name(&snapshot_name(7, 3)), Some((7, 3)));
        assert_eq!(parse_segment_name("wal-42.log"), None);
        assert_eq!(parse_snapshot_name(&format!("{}{TMP_SUFFIX}", snapshot_name(7, 3))), None);
    }
}
