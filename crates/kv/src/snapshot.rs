//! Snapshots: a frozen O(1) view of the state, streamed to bytes on any
//! thread, and the verified rebuild from those bytes.
//!
//! # Format (version 6, all integers little-endian)
//!
//! | field | size | notes |
//! | --- | --- | --- |
//! | magic | 8 | `b"raftkvSN"` |
//! | format version | 1 | [`SNAPSHOT_FORMAT_VERSION`] |
//! | applied index, revision, compact revision | 3 × 8 | |
//! | config | 6 × 8 | [`Config`] fields in declaration order |
//! | prune cursor | 1 (+ 4 + n) | flag, then length-prefixed key |
//! | entry count, session count | 2 × 8 | |
//! | entries | | each: key length u32, key, revision u64, sub-revision u64 (version 3 on), kind u8 (0 tombstone, 1 put); a put adds create revision u64, version u64, lease i64, value length u32, value. Sorted by (key, revision, sub-revision), strictly; no two entries share (revision, sub-revision). |
//! | sessions | | each: client id u64, last seq u64, last index u64, response flag u8 (+ length u32 + encoded [`Response`]). Sorted by client id, strictly. |
//! | lease count | 8 | version 2 on; absent in version 1 (no leases) |
//! | leases | | each: id i64 (non-zero), granted TTL i64 (≥ 1). Sorted by id, strictly. |
//! | alarm count | 8 | version 4 on; absent before (no alarms) |
//! | alarms | | each: member id u64, alarm type u8 (1 NOSPACE, 2 CORRUPT). Sorted by (member id, type), strictly. |
//! | auth | | version 5 on; absent before (auth off, no users or roles): enabled u8 (0/1), auth revision u64 (≥ 1), user count u64, users, role count u64, roles |
//! | users | | each: name (u32 length + UTF-8), hash flag u8 (+ u32 length + bcrypt hash), role count u64, role names (u32 length + UTF-8, sorted strictly). Sorted by name, strictly. |
//! | roles | | each: name (u32 length + UTF-8), permission count u64, permissions (type u8: 0 read, 1 write, 2 readwrite; key, range end as u32 length + bytes; sorted by (key, range end), strictly). Sorted by name, strictly. |
//! | members | | version 6 on; absent before (empty table): member count u64, members (id u64 non-zero, name, peer URL count u64, peer URLs, client URL count u64, client URLs, learner u8 (0/1); strings as u32 length + UTF-8; sorted by id, strictly), removed count u64, removed ids (u64, ascending strictly) |
//! | CRC32C | 4 | Castagnoli CRC of every byte before it |
//!
//! The watch index and each lease's attached keys are not stored: restore
//! rebuilds them from the entries (a key belongs to the lease of its newest
//! version).
//!
//! Older versions are still read. Version 5 (before the member table) reads as
//! version 6 with an empty table (the node seeds it from the cluster's initial
//! members). Version 4 (before auth) reads as version 5
//! with auth off and no users or roles. Version 3 (before alarms) reads as version 4
//! with no alarm raised. Version 2 (before sub-revisions) numbers the
//! changes of each revision in key order: that is the order those releases
//! delivered a revision's events in, and the order of a delete range's or a
//! lease revoke's keys now. So a member that restores an old snapshot may order
//! the events of an old multi-key transaction differently from one that applied
//! it from the log; what the events are, every read and the Hash/HashKV
//! checksums (which do not cover sub-revisions) stay the same on every member.
//! Version 1 (before leases) reads as version 2 with no leases.
//!
//! What is retained: every stored version — the full MVCC history not yet
//! pruned by compaction, tombstones included — so a restored replica serves
//! the same past-revision reads, compacts the same way and gives bit-identical
//! results for the same further commands.
//!
//! The reader checks structure as it goes (lengths, tags, order, revision
//! bounds) and the checksum at the end, and only then returns the state, so
//! a damaged snapshot never installs partially. Lengths are not trusted for
//! allocation: bytes are read incrementally.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::sync::Arc;

use crate::auth::{AuthState, Permission, PermissionType, User};
use crate::machine::{Config, StateMachine};
use crate::members::{
    Member, Members, MEMBER_NAME_BYTES_MAX, MEMBER_URLS_MAX, MEMBER_URL_BYTES_MAX,
};
use crate::mvcc::{Lease, Mvcc, MvccKey, PutMeta, Record, Version};
use crate::quota::Alarms;
use crate::session::{ClientSession, Sessions};
use crate::types::{AlarmMember, AlarmType, Response};

/// Magic bytes that open a snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"raftkvSN";
/// Version byte after the magic.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 6;
/// The oldest format version this build still reads.
const SNAPSHOT_FORMAT_VERSION_MIN: u8 = 1;

/// A frozen, `Send` view of the state at one applied index. Taking it is
/// O(1) (it shares the persistent maps); the live state keeps applying, and
/// pays for the sharing only by copying the tree nodes it writes to while the
/// view is alive.
#[derive(Clone, Debug)]
pub struct SnapshotView {
    state: StateMachine,
}

impl StateMachine {
    /// Freezes the current state for a snapshot. O(1).
    pub fn snapshot_view(&self) -> SnapshotView {
        SnapshotView { state: self.clone() }
    }

    /// Rebuilds a state machine from a snapshot written by
    /// [`SnapshotView::write_to`], verifying structure and checksum. The
    /// config comes from the snapshot.
    pub fn restore(reader: impl Read) -> Result<Self, SnapshotError> {
        let mut r =
            SnapReader { inner: BufReader::with_capacity(1 << 16, reader), crc: 0, offset: 0 };
        let state = read_state(&mut r)?;
        let computed = r.crc;
        let stored = u32::from_le_bytes(r.array()?);
        if stored != computed {
            return Err(SnapshotError::ChecksumMismatch { stored, computed });
        }
        let mut extra = [0u8; 1];
        if r.inner.read(&mut extra)? != 0 {
            return Err(SnapshotError::TrailingBytes { offset: r.offset });
        }
        Ok(state)
    }
}

impl SnapshotView {
    /// Log index of the last entry the view includes; the Raft snapshot's
    /// index.
    pub fn applied_index(&self) -> u64 {
        self.state.applied_index
    }

    /// The frozen state, to read (ranges, hashes, exports) off the apply thread.
    pub fn state(&self) -> &StateMachine {
        &self.state
    }

    /// Store revision in the view.
    pub fn revision(&self) -> u64 {
        self.state.mvcc.revision
    }

    /// Streams the snapshot to `w`, record by record, and returns the bytes
    /// written. Memory use is a small buffer, whatever the state's size.
    pub fn write_to<W: Write>(&self, w: &mut W) -> io::Result<u64> {
        let mut out =
            SnapWriter { inner: BufWriter::with_capacity(1 << 16, w), crc: 0, written: 0 };
        write_state(&mut out, &self.state)?;
        let crc = out.crc;
        out.inner.write_all(&crc.to_le_bytes())?;
        out.inner.flush()?;
        Ok(out.written + 4)
    }
}

/// Why a snapshot could not be restored.
#[derive(Debug)]
pub enum SnapshotError {
    /// Reading failed.
    Io(io::Error),
    /// The input does not start with [`SNAPSHOT_MAGIC`].
    BadMagic,
    /// The format version is not one this build reads.
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// The input ended early.
    Truncated {
        /// Bytes read before the end.
        offset: u64,
    },
    /// A field holds an impossible value.
    Corrupt {
        /// Byte offset just after the field.
        offset: u64,
        /// What was wrong.
        what: String,
    },
    /// The data does not match its checksum.
    ChecksumMismatch {
        /// CRC32C in the trailer.
        stored: u32,
        /// CRC32C of the data read.
        computed: u32,
    },
    /// Bytes follow the checksum.
    TrailingBytes {
        /// Offset of the first extra byte.
        offset: u64,
    },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ADVICE: &str = "discard this snapshot and fetch a fresh one from the leader";
        match self {
            SnapshotError::Io(e) => write!(f, "reading snapshot failed: {e}; retry, or {ADVICE}"),
            SnapshotError::BadMagic => write!(f, "not a kv snapshot (bad magic bytes); {ADVICE}"),
            SnapshotError::UnsupportedVersion { version } => write!(
                f,
                "snapshot format version {version}, this build reads {SNAPSHOT_FORMAT_VERSION_MIN} to {SNAPSHOT_FORMAT_VERSION}; upgrade the node"
            ),
            SnapshotError::Truncated { offset } => {
                write!(f, "snapshot truncated after {offset} bytes; {ADVICE}")
            }
            SnapshotError::Corrupt { offset, what } => {
                write!(f, "snapshot corrupt at byte {offset}: {what}; {ADVICE}")
            }
            SnapshotError::ChecksumMismatch { stored, computed } => write!(
                f,
                "snapshot checksum mismatch (stored {stored:#010x}, computed {computed:#010x}); {ADVICE}"
            ),
            SnapshotError::TrailingBytes { offset } => {
                write!(f, "unexpected bytes after the snapshot end at byte {offset}; {ADVICE}")
            }
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<io::Error> for SnapshotError {
    fn from(e: io::Error) -> Self {
        SnapshotError::Io(e)
    }
}

struct SnapWriter<W: Write> {
    inner: BufWriter<W>,
    crc: u32,
    written: u64,
}

impl<W: Write> SnapWriter<W> {
    fn bytes_raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.written += b.len() as u64;
        self.inner.write_all(b)
    }
    fn u8(&mut self, v: u8) -> io::Result<()> {
        self.bytes_raw(&[v])
    }
    fn u64(&mut self, v: u64) -> io::Result<()> {
        self.bytes_raw(&v.to_le_bytes())
    }
    fn i64(&mut self, v: i64) -> io::Result<()> {
        self.bytes_raw(&v.to_le_bytes())
    }
    fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        let len = u32::try_from(b.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "field longer than 4 GiB"))?;
        self.bytes_raw(&len.to_le_bytes())?;
        self.bytes_raw(b)
    }
}

fn write_state<W: Write>(w: &mut SnapWriter<W>, s: &StateMachine) -> io::Result<()> {
    w.bytes_raw(&SNAPSHOT_MAGIC)?;
    w.u8(SNAPSHOT_FORMAT_VERSION)?;
    w.u64(s.applied_index)?;
    w.u64(s.mvcc.revision)?;
    w.u64(s.mvcc.compact_revision)?;
    let c = &s.config;
    for v in [
        c.session_idle_entries_max,
        c.sessions_max,
        c.key_bytes_max,
        c.value_bytes_max,
        c.txn_ops_max,
        c.prune_entries_per_apply,
    ] {
        w.u64(v)?;
    }
    match &s.mvcc.prune_cursor {
        None => w.u8(0)?,
        Some(key) => {
            w.u8(1)?;
            w.bytes(key)?;
        }
    }
    w.u64(s.mvcc.entries.len() as u64)?;
    w.u64(s.sessions.by_client.len() as u64)?;
    for (k, record) in s.mvcc.entries.iter() {
        w.bytes(&k.key)?;
        w.u64(k.rev)?;
        w.u64(k.sub)?;
        match record {
            Record::Tombstone => w.u8(0)?,
            Record::Put(v) => {
                let m = v.meta();
                w.u8(1)?;
                w.u64(m.create_revision)?;
                w.u64(m.version)?;
                w.i64(m.lease)?;
                w.bytes(v.value())?;
            }
        }
    }
    for (client_id, session) in s.sessions.by_client.iter() {
        w.u64(*client_id)?;
        w.u64(session.last_seq)?;
        w.u64(session.last_index)?;
        match &session.response {
            None => w.u8(0)?,
            Some(response) => {
                w.u8(1)?;
                w.bytes(&response.encode())?;
            }
        }
    }
    w.u64(s.mvcc.leases.len() as u64)?;
    for (id, lease) in s.mvcc.leases.iter() {
        w.i64(*id)?;
        w.i64(lease.ttl_secs)?;
    }
    w.u64(s.alarms.raised.len() as u64)?;
    for a in &s.alarms.raised {
        w.u64(a.member_id)?;
        w.u8(match a.alarm {
            AlarmType::None => 0,
            AlarmType::Nospace => 1,
            AlarmType::Corrupt => 2,
        })?;
    }
    write_auth(w, &s.auth)?;
    write_members(w, &s.members)
}

fn write_members<W: Write>(w: &mut SnapWriter<W>, m: &Members) -> io::Result<()> {
    let list = m.list();
    w.u64(list.len() as u64)?;
    for m in &list {
        w.u64(m.id)?;
        w.bytes(m.name.as_bytes())?;
        for urls in [&m.peer_urls, &m.client_urls] {
            w.u64(urls.len() as u64)?;
            for u in urls {
                w.bytes(u.as_bytes())?;
            }
        }
        w.u8(u8::from(m.is_learner))?;
    }
    let removed = m.removed();
    w.u64(removed.len() as u64)?;
    for id in removed {
        w.u64(id)?;
    }
    Ok(())
}

/// Most members or removed ids a snapshot may list (a guard against a corrupt count,
/// far above any real cluster's history).
const MEMBERS_MAX: u64 = 1 << 20;

fn read_members<R: Read>(r: &mut SnapReader<R>) -> SResult<Members> {
    let count = r.u64()?;
    if count > MEMBERS_MAX {
        return Err(r.corrupt(format!("member count {count} exceeds {MEMBERS_MAX}")));
    }
    let mut members: Vec<Member> = Vec::new();
    for _ in 0..count {
        let id = r.u64()?;
        if id == 0 || members.last().is_some_and(|last| id <= last.id) {
            return Err(r.corrupt(format!("member {id:x} is 0 or out of order")));
        }
        let name = read_string(r, MEMBER_NAME_BYTES_MAX, "member name")?;
        let peer_urls = read_urls(r, "peer URL")?;
        let client_urls = read_urls(r, "client URL")?;
        let is_learner = match r.u8()? {
            0 => false,
            1 => true,
            tag => return Err(r.corrupt(format!("member learner flag {tag}"))),
        };
        members.push(Member { id, name, peer_urls, client_urls, is_learner });
    }
    let count = r.u64()?;
    if count > MEMBERS_MAX {
        return Err(r.corrupt(format!("removed member count {count} exceeds {MEMBERS_MAX}")));
    }
    let mut removed: Vec<u64> = Vec::new();
    for _ in 0..count {
        let id = r.u64()?;
        if id == 0 || removed.last().is_some_and(|&last| id <= last) {
            return Err(r.corrupt(format!("removed member {id:x} is 0 or out of order")));
        }
        removed.push(id);
    }
    Ok(Members::from_parts(members, &removed))
}

fn read_urls<R: Read>(r: &mut SnapReader<R>, what: &str) -> SResult<Vec<String>> {
    let count = r.u64()?;
    if count > MEMBER_URLS_MAX as u64 {
        return Err(r.corrupt(format!("{count} {what}s, more than {MEMBER_URLS_MAX}")));
    }
    (0..count).map(|_| read_string(r, MEMBER_URL_BYTES_MAX, what)).collect()
}

fn read_string<R: Read>(r: &mut SnapReader<R>, max: usize, what: &str) -> SResult<String> {
    let b = r.bytes(max as u64, what)?;
    String::from_utf8(b).map_err(|_| r.corrupt(format!("{what} is not UTF-8")))
}

fn write_auth<W: Write>(w: &mut SnapWriter<W>, a: &AuthState) -> io::Result<()> {
    w.u8(u8::from(a.enabled))?;
    w.u64(a.revision)?;
    w.u64(a.users.len() as u64)?;
    for (name, user) in a.users.iter() {
        w.bytes(name.as_bytes())?;
        match &user.password_hash {
            None => w.u8(0)?,
            Some(hash) => {
                w.u8(1)?;
                w.bytes(hash)?;
            }
        }
        w.u64(user.roles.len() as u64)?;
        for role in &user.roles {
            w.bytes(role.as_bytes())?;
        }
    }
    w.u64(a.roles.len() as u64)?;
    for (name, perms) in a.roles.iter() {
        w.bytes(name.as_bytes())?;
        w.u64(perms.len() as u64)?;
        for p in perms {
            w.u8(match p.perm_type {
                PermissionType::Read => 0,
                PermissionType::Write => 1,
                PermissionType::ReadWrite => 2,
            })?;
            w.bytes(&p.key)?;
            w.bytes(&p.range_end)?;
        }
    }
    Ok(())
}

struct SnapReader<R: Read> {
    inner: BufReader<R>,
    crc: u32,
    offset: u64,
}

type SResult<T> = Result<T, SnapshotError>;

impl<R: Read> SnapReader<R> {
    fn corrupt(&self, what: impl Into<String>) -> SnapshotError {
        SnapshotError::Corrupt { offset: self.offset, what: what.into() }
    }
    fn array<const N: usize>(&mut self) -> SResult<[u8; N]> {
        let mut a = [0u8; N];
        self.inner.read_exact(&mut a).map_err(|e| self.eof(e))?;
        self.crc = crc32c::crc32c_append(self.crc, &a);
        self.offset += N as u64;
        Ok(a)
    }
    fn eof(&self, e: io::Error) -> SnapshotError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            SnapshotError::Truncated { offset: self.offset }
        } else {
            SnapshotError::Io(e)
        }
    }
    fn u8(&mut self) -> SResult<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn u64(&mut self) -> SResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> SResult<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// Reads a length-prefixed field of at most `max` bytes. Grows the
    /// buffer as bytes arrive, so a corrupt length cannot make it allocate
    /// more than the input holds.
    fn bytes(&mut self, max: u64, what: &str) -> SResult<Vec<u8>> {
        let len = u64::from(u32::from_le_bytes(self.array()?));
        if len > max {
            return Err(self.corrupt(format!("{what} length {len} exceeds {max}")));
        }
        let mut buf = Vec::new();
        let got = (&mut self.inner).take(len).read_to_end(&mut buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf);
        self.offset += got as u64;
        if (got as u64) < len {
            return Err(SnapshotError::Truncated { offset: self.offset });
        }
        Ok(buf)
    }
}

fn read_state<R: Read>(r: &mut SnapReader<R>) -> SResult<StateMachine> {
    if r.array::<8>()? != SNAPSHOT_MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = r.u8()?;
    if !(SNAPSHOT_FORMAT_VERSION_MIN..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
        return Err(SnapshotError::UnsupportedVersion { version });
    }
    let applied_index = r.u64()?;
    let revision = r.u64()?;
    let compact_revision = r.u64()?;
    if compact_revision > revision {
        return Err(
            r.corrupt(format!("compact revision {compact_revision} above revision {revision}"))
        );
    }
    let config = Config {
        session_idle_entries_max: r.u64()?,
        sessions_max: r.u64()?,
        key_bytes_max: r.u64()?,
        value_bytes_max: r.u64()?,
        txn_ops_max: r.u64()?,
        prune_entries_per_apply: r.u64()?,
    };
    config.check().map_err(|why| r.corrupt(why))?;
    let prune_cursor = match r.u8()? {
        0 => None,
        1 => Some(Arc::from(r.bytes(config.key_bytes_max, "prune cursor")?)),
        tag => return Err(r.corrupt(format!("prune cursor flag {tag}"))),
    };
    let entry_count = r.u64()?;
    let session_count = r.u64()?;
    let mut mvcc = Mvcc { revision, compact_revision, prune_cursor, ..Mvcc::default() };
    let mut last: Option<MvccKey> = None;
    // Before version 3: the next sub-revision of each revision. Entries come
    // sorted by key, so numbering them as they come follows key order.
    let mut next_sub: BTreeMap<u64, u64> = BTreeMap::new();
    for _ in 0..entry_count {
        let (key, record) =
            read_entry(r, &config, revision, last.as_ref(), version, &mut next_sub)?;
        mvcc.entries.insert(key.clone(), record);
        last = Some(key);
    }
    drop(next_sub);
    let mut sessions = Sessions::default();
    let mut last_client = None;
    for _ in 0..session_count {
        let client_id = r.u64()?;
        if last_client.is_some_and(|last| client_id <= last) {
            return Err(r.corrupt(format!("session {client_id} out of order")));
        }
        last_client = Some(client_id);
        let session = read_session(r, applied_index)?;
        sessions.insert(client_id, session);
    }
    if version >= 2 {
        read_leases(r, &mut mvcc)?;
    }
    let alarms = if version >= 4 { read_alarms(r)? } else { Alarms::default() };
    mvcc.rebuild_indices();
    if let Some((rev, sub)) = mvcc.duplicate_revision() {
        return Err(r.corrupt(format!("two entries at revision ({rev}, {sub})")));
    }
    let auth = if version >= 5 { read_auth(r, &config)? } else { AuthState::default() };
    let members = Arc::new(if version >= 6 { read_members(r)? } else { Members::default() });
    Ok(StateMachine { config, applied_index, mvcc, sessions, alarms, auth, members })
}

/// Longest user or role name a snapshot may hold.
const AUTH_NAME_BYTES_MAX: u64 = 64 * 1024;
/// Longest password hash a snapshot may hold (a bcrypt hash is 60 bytes).
pub(crate) const PASSWORD_HASH_BYTES_MAX: u64 = 1024;

impl<R: Read> SnapReader<R> {
    fn name(&mut self, what: &str, after: Option<&String>) -> SResult<String> {
        let b = self.bytes(AUTH_NAME_BYTES_MAX, what)?;
        let name =
            String::from_utf8(b).map_err(|_| self.corrupt(format!("{what} is not UTF-8")))?;
        if after.is_some_and(|last| name <= *last) {
            return Err(self.corrupt(format!("{what} {name:?} out of order")));
        }
        Ok(name)
    }
}

fn read_auth<R: Read>(r: &mut SnapReader<R>, config: &Config) -> SResult<AuthState> {
    let enabled = match r.u8()? {
        0 => false,
        1 => true,
        tag => return Err(r.corrupt(format!("auth enabled flag {tag}"))),
    };
    let revision = r.u64()?;
    if revision == 0 {
        return Err(r.corrupt("auth revision 0"));
    }
    let mut users = BTreeMap::new();
    for _ in 0..r.u64()? {
        let name = r.name("user", users.keys().next_back())?;
        let password_hash = match r.u8()? {
            0 => None,
            1 => Some(r.bytes(PASSWORD_HASH_BYTES_MAX, "password hash")?),
            tag => return Err(r.corrupt(format!("password hash flag {tag}"))),
        };
        let mut roles = std::collections::BTreeSet::new();
        for _ in 0..r.u64()? {
            let role = r.name("user role", roles.iter().next_back())?;
            roles.insert(role);
        }
        users.insert(name, User { password_hash, roles });
    }
    let mut roles = BTreeMap::new();
    for _ in 0..r.u64()? {
        let name = r.name("role", roles.keys().next_back())?;
        let perms = read_permissions(r, config)?;
        roles.insert(name, perms);
    }
    Ok(AuthState { enabled, revision, users: Arc::new(users), roles: Arc::new(roles) })
}

fn read_permissions<R: Read>(r: &mut SnapReader<R>, config: &Config) -> SResult<Vec<Permission>> {
    let mut perms: Vec<Permission> = Vec::new();
    for _ in 0..r.u64()? {
        let perm_type = match r.u8()? {
            0 => PermissionType::Read,
            1 => PermissionType::Write,
            2 => PermissionType::ReadWrite,
            tag => return Err(r.corrupt(format!("permission type {tag}"))),
        };
        let key = r.bytes(config.key_bytes_max, "permission key")?;
        let range_end = r.bytes(config.key_bytes_max, "permission range end")?;
        if perms.last().is_some_and(|l| (&l.key, &l.range_end) >= (&key, &range_end)) {
            return Err(r.corrupt("permissions out of order"));
        }
        perms.push(Permission { perm_type, key, range_end });
    }
    Ok(perms)
}

fn read_alarms<R: Read>(r: &mut SnapReader<R>) -> SResult<Alarms> {
    let count = r.u64()?;
    let mut alarms = Alarms::default();
    let mut last = None;
    for _ in 0..count {
        let member_id = r.u64()?;
        let alarm = match r.u8()? {
            1 => AlarmType::Nospace,
            2 => AlarmType::Corrupt,
            tag => return Err(r.corrupt(format!("alarm type {tag}"))),
        };
        let a = AlarmMember { member_id, alarm };
        if last.is_some_and(|last| a <= last) {
            return Err(r.corrupt(format!("alarm {alarm:?} of member {member_id} out of order")));
        }
        last = Some(a);
        alarms.raised.insert(a);
    }
    Ok(alarms)
}

fn read_leases<R: Read>(r: &mut SnapReader<R>, mvcc: &mut Mvcc) -> SResult<()> {
    let count = r.u64()?;
    let mut last = None;
    for _ in 0..count {
        let id = r.i64()?;
        let ttl_secs = r.i64()?;
        if id == 0 || last.is_some_and(|last| id <= last) {
            return Err(r.corrupt(format!("lease {id} is zero or out of order")));
        }
        if !(1..=crate::LEASE_TTL_MAX_SECS).contains(&ttl_secs) {
            return Err(r.corrupt(format!("lease {id} has TTL {ttl_secs}")));
        }
        last = Some(id);
        mvcc.leases.insert(id, Lease { ttl_secs, keys: Default::default() });
    }
    Ok(())
}

fn read_entry<R: Read>(
    r: &mut SnapReader<R>,
    config: &Config,
    revision: u64,
    last: Option<&MvccKey>,
    version: u8,
    next_sub: &mut BTreeMap<u64, u64>,
) -> SResult<(MvccKey, Record)> {
    let key = r.bytes(config.key_bytes_max, "key")?;
    if key.is_empty() {
        return Err(r.corrupt("empty key"));
    }
    let rev = r.u64()?;
    if rev == 0 || rev > revision {
        return Err(r.corrupt(format!("entry revision {rev} outside 1..={revision}")));
    }
    let sub = if version >= 3 {
        r.u64()?
    } else {
        let next = next_sub.entry(rev).or_insert(0);
        *next += 1;
        *next - 1
    };
    // Versions of one key share the key allocation, as in the live state.
    let key: Arc<[u8]> = match last {
        Some(last) if *last.key == key[..] => last.key.clone(),
        _ => key.into(),
    };
    let mvcc_key = MvccKey::new(key, rev, sub);
    if last.is_some_and(|last| *last >= mvcc_key) {
        return Err(r.corrupt("entries out of order"));
    }
    let record = match r.u8()? {
        0 => Record::Tombstone,
        1 => {
            let create_revision = r.u64()?;
            let version = r.u64()?;
            let lease = r.i64()?;
            if create_revision == 0 || create_revision > rev || version == 0 {
                return Err(r.corrupt(format!(
                    "put at revision {rev} with create revision {create_revision}, version {version}"
                )));
            }
            let value = r.bytes(config.value_bytes_max, "value")?;
            Record::Put(Version::new(&value, PutMeta { create_revision, version, lease }))
        }
        tag => return Err(r.corrupt(format!("entry kind {tag}"))),
    };
    Ok((mvcc_key, record))
}

fn read_session<R: Read>(r: &mut SnapReader<R>, applied_index: u64) -> SResult<ClientSession> {
    let last_seq = r.u64()?;
    let last_index = r.u64()?;
    if last_index > applied_index {
        return Err(r.corrupt(format!(
            "session last index {last_index} above applied index {applied_index}"
        )));
    }
    let response = match r.u8()? {
        0 => None,
        1 => {
            let bytes = r.bytes(u64::from(u32::MAX), "session response")?;
            let response = Response::decode(&bytes)
                .map_err(|e| r.corrupt(format!("session response: {e}")))?;
            Some(Arc::new(response))
        }
        tag => return Err(r.corrupt(format!("session response flag {tag}"))),
    };
    Ok(ClientSession { last_seq, last_index, response })
}
