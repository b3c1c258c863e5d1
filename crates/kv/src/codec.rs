//! Binary encoding of [`Command`] and [`Response`].
//!
//! Hand-written, fixed-width little-endian. Every encoding starts with a
//! format version byte ([`WIRE_FORMAT_VERSION`]); byte strings are a `u32`
//! length then the bytes; lists are a `u32` count then the items; enums are a
//! `u8` tag; booleans are packed into a `u8` flag set whose unknown bits are
//! refused. The decoder checks every length against the bytes that remain
//! before it allocates, bounds transaction nesting by [`TXN_DEPTH_MAX`], and
//! refuses trailing bytes, so malformed input yields a [`DecodeError`] that
//! names the byte offset, never a panic.

use std::fmt;

use crate::auth::{AuthError, AuthOp, AuthResponse, AuthStamp, Permission, PermissionType};
use crate::members::{Member, MemberOp};
use crate::types::*;

/// Version byte that opens every encoded command and response.
pub const WIRE_FORMAT_VERSION: u8 = 1;

/// Why bytes did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset where decoding failed.
    pub offset: u64,
    /// What was wrong there.
    pub kind: DecodeErrorKind,
}

/// The kinds of [`DecodeError`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The input ended early.
    Truncated {
        /// Bytes the field needed.
        needed: u64,
        /// Bytes that were left.
        remaining: u64,
    },
    /// A tag or flag byte had a value this version does not know.
    BadTag {
        /// The field being decoded.
        field: &'static str,
        /// The byte found.
        tag: u8,
    },
    /// The format version byte is not [`WIRE_FORMAT_VERSION`].
    UnsupportedVersion {
        /// The byte found.
        version: u8,
    },
    /// Transactions were nested deeper than [`TXN_DEPTH_MAX`].
    TooDeep {
        /// The limit.
        max: u64,
    },
    /// A name was not UTF-8.
    InvalidUtf8 {
        /// The field being decoded.
        field: &'static str,
    },
    /// Bytes were left after a complete value.
    TrailingBytes {
        /// How many.
        count: u64,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: ", self.offset)?;
        match &self.kind {
            DecodeErrorKind::Truncated { needed, remaining } => {
                write!(f, "truncated: needed {needed} bytes, {remaining} left")
            }
            DecodeErrorKind::BadTag { field, tag } => write!(f, "unknown {field} tag {tag}"),
            DecodeErrorKind::UnsupportedVersion { version } => write!(
                f,
                "format version {version}, this build reads only {WIRE_FORMAT_VERSION}; upgrade the node"
            ),
            DecodeErrorKind::TooDeep { max } => {
                write!(f, "transactions nested deeper than {max}")
            }
            DecodeErrorKind::InvalidUtf8 { field } => write!(f, "{field} is not UTF-8"),
            DecodeErrorKind::TrailingBytes { count } => {
                write!(f, "{count} unexpected bytes after the end")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

impl Command {
    /// Encodes the command for the Raft log.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::default();
        e.u8(WIRE_FORMAT_VERSION);
        // Bit 0: a request id follows; bit 1: an auth stamp follows. Commands
        // without a stamp encode as before stamps existed.
        e.flags(&[self.request_id.is_some(), self.auth.is_some()]);
        if let Some(id) = self.request_id {
            e.u64(id.client_id);
            e.u64(id.seq);
        }
        if let Some(stamp) = &self.auth {
            e.bytes(stamp.user.as_bytes());
            e.u64(stamp.revision);
        }
        encode_op(&mut e, &self.op);
        e.buf
    }

    /// Decodes a command; any malformation is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        let mut d = Decoder::new(bytes);
        d.version()?;
        let [has_id, has_stamp] = d.flags("command flags")?;
        let request_id =
            if has_id { Some(RequestId { client_id: d.u64()?, seq: d.u64()? }) } else { None };
        let auth = if has_stamp {
            Some(AuthStamp { user: d.string("auth user")?, revision: d.u64()? })
        } else {
            None
        };
        let op = decode_op(&mut d)?;
        d.finish()?;
        Ok(Command { request_id, auth, op })
    }
}

impl MemberOp {
    /// Encodes the change (the context of a Raft configuration change carries it).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::default();
        e.u8(WIRE_FORMAT_VERSION);
        encode_member_op(&mut e, self);
        e.buf
    }

    /// Decodes a change; any malformation is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<MemberOp, DecodeError> {
        let mut d = Decoder::new(bytes);
        d.version()?;
        let op = decode_member_op(&mut d)?;
        d.finish()?;
        Ok(op)
    }
}

impl Response {
    /// Encodes the response (sessions and snapshots store it this way).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::default();
        e.u8(WIRE_FORMAT_VERSION);
        encode_response(&mut e, self);
        e.buf
    }

    /// Decodes a response; any malformation is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        let mut d = Decoder::new(bytes);
        d.version()?;
        let response = decode_response(&mut d)?;
        d.finish()?;
        Ok(response)
    }
}

#[derive(Default)]
struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn flags(&mut self, bits: &[bool]) {
        debug_assert!(bits.len() <= 8);
        let v = bits.iter().enumerate().fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << i));
        self.u8(v);
    }
    fn len(&mut self, n: usize) {
        // Lengths beyond u32 cannot occur: the node bounds request size far
        // lower. Failing loudly beats writing a corrupt entry.
        let n = u32::try_from(n).expect("encoded length exceeds u32::MAX");
        self.u32(n);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.buf.extend_from_slice(b);
    }
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

type DResult<T> = Result<T, DecodeError>;

impl<'a> Decoder<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }
    fn err(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError { offset: self.pos as u64, kind }
    }
    fn bad_tag(&self, field: &'static str, tag: u8) -> DecodeError {
        // The tag byte was already consumed; point at it.
        DecodeError {
            offset: self.pos.saturating_sub(1) as u64,
            kind: DecodeErrorKind::BadTag { field, tag },
        }
    }
    fn take(&mut self, n: usize) -> DResult<&'a [u8]> {
        let remaining = self.buf.len() - self.pos;
        if n > remaining {
            return Err(self.err(DecodeErrorKind::Truncated {
                needed: n as u64,
                remaining: remaining as u64,
            }));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> DResult<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn tag(&mut self, _field: &'static str) -> DResult<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> DResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> DResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> DResult<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn flags<const N: usize>(&mut self, field: &'static str) -> DResult<[bool; N]> {
        let v = self.tag(field)?;
        if u32::from(v) >> N != 0 {
            return Err(self.bad_tag(field, v));
        }
        let mut out = [false; N];
        for (i, bit) in out.iter_mut().enumerate() {
            *bit = v & (1 << i) != 0;
        }
        Ok(out)
    }
    fn bytes(&mut self) -> DResult<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self, field: &'static str) -> DResult<String> {
        let start = self.pos;
        let b = self.bytes()?;
        String::from_utf8(b).map_err(|_| DecodeError {
            offset: start as u64,
            kind: DecodeErrorKind::InvalidUtf8 { field },
        })
    }
    /// Reads a list count. Every item takes at least one byte, so a count
    /// larger than the remaining input is malformed; refusing it here keeps a
    /// corrupt count from driving a long loop.
    fn count(&mut self) -> DResult<usize> {
        let n = self.u32()? as usize;
        let remaining = self.buf.len() - self.pos;
        if n > remaining {
            return Err(self.err(DecodeErrorKind::Truncated {
                needed: n as u64,
                remaining: remaining as u64,
            }));
        }
        Ok(n)
    }
    fn version(&mut self) -> DResult<()> {
        let v = self.tag("version")?;
        if v != WIRE_FORMAT_VERSION {
            return Err(DecodeError {
                offset: 0,
                kind: DecodeErrorKind::UnsupportedVersion { version: v },
            });
        }
        Ok(())
    }
    fn finish(&self) -> DResult<()> {
        let count = (self.buf.len() - self.pos) as u64;
        if count != 0 {
            return Err(self.err(DecodeErrorKind::TrailingBytes { count }));
        }
        Ok(())
    }
}

// ---- requests ----

const OP_PUT: u8 = 1;
const OP_RANGE: u8 = 2;
const OP_DELETE_RANGE: u8 = 3;
const OP_TXN: u8 = 4;
const OP_COMPACT: u8 = 5;
const OP_GET: u8 = 6;
const OP_APPEND: u8 = 7;
const OP_REGISTER_SESSION: u8 = 8;
const OP_LEASE_GRANT: u8 = 9;
const OP_LEASE_REVOKE: u8 = 10;
const OP_LEASE_KEEP_ALIVE: u8 = 11;
const OP_LEASE_TIME_TO_LIVE: u8 = 12;
const OP_ALARM: u8 = 13;
const OP_AUTH: u8 = 14;
const OP_MEMBER: u8 = 15;

fn encode_op(e: &mut Encoder, op: &Op) {
    match op {
        Op::Put(r) => {
            e.u8(OP_PUT);
            encode_put(e, r);
        }
        Op::Range(r) => {
            e.u8(OP_RANGE);
            encode_range(e, r);
        }
        Op::DeleteRange(r) => {
            e.u8(OP_DELETE_RANGE);
            encode_delete(e, r);
        }
        Op::Txn(r) => {
            e.u8(OP_TXN);
            encode_txn(e, r);
        }
        Op::Compact { revision } => {
            e.u8(OP_COMPACT);
            e.u64(*revision);
        }
        Op::Get { key } => {
            e.u8(OP_GET);
            e.bytes(key);
        }
        Op::Append { key, suffix } => {
            e.u8(OP_APPEND);
            e.bytes(key);
            e.bytes(suffix);
        }
        Op::RegisterSession => e.u8(OP_REGISTER_SESSION),
        Op::LeaseGrant { id, ttl_secs } => {
            e.u8(OP_LEASE_GRANT);
            e.i64(*id);
            e.i64(*ttl_secs);
        }
        Op::LeaseRevoke { id } => {
            e.u8(OP_LEASE_REVOKE);
            e.i64(*id);
        }
        Op::LeaseKeepAlive { id } => {
            e.u8(OP_LEASE_KEEP_ALIVE);
            e.i64(*id);
        }
        Op::LeaseTimeToLive { id, keys } => {
            e.u8(OP_LEASE_TIME_TO_LIVE);
            e.i64(*id);
            e.flags(&[*keys]);
        }
        Op::Alarm { action, member_id, alarm } => {
            e.u8(OP_ALARM);
            e.u8(match action {
                AlarmAction::Get => 0,
                AlarmAction::Activate => 1,
                AlarmAction::Deactivate => 2,
            });
            e.u64(*member_id);
            e.u8(alarm_tag(*alarm));
        }
        Op::Auth(a) => {
            e.u8(OP_AUTH);
            encode_auth_op(e, a);
        }
        Op::Member(m) => {
            e.u8(OP_MEMBER);
            encode_member_op(e, m);
        }
    }
}

/// etcd's numbers for the alarm types.
fn alarm_tag(alarm: AlarmType) -> u8 {
    match alarm {
        AlarmType::None => 0,
        AlarmType::Nospace => 1,
        AlarmType::Corrupt => 2,
    }
}

fn decode_alarm_type(d: &mut Decoder) -> DResult<AlarmType> {
    Ok(match d.tag("alarm type")? {
        0 => AlarmType::None,
        1 => AlarmType::Nospace,
        2 => AlarmType::Corrupt,
        tag => return Err(d.bad_tag("alarm type", tag)),
    })
}

fn decode_alarm(d: &mut Decoder) -> DResult<Op> {
    let action = match d.tag("alarm action")? {
        0 => AlarmAction::Get,
        1 => AlarmAction::Activate,
        2 => AlarmAction::Deactivate,
        tag => return Err(d.bad_tag("alarm action", tag)),
    };
    Ok(Op::Alarm { action, member_id: d.u64()?, alarm: decode_alarm_type(d)? })
}

fn decode_op(d: &mut Decoder) -> DResult<Op> {
    Ok(match d.tag("op")? {
        OP_PUT => Op::Put(decode_put(d)?),
        OP_RANGE => Op::Range(decode_range(d)?),
        OP_DELETE_RANGE => Op::DeleteRange(decode_delete(d)?),
        OP_TXN => Op::Txn(decode_txn(d, 1)?),
        OP_COMPACT => Op::Compact { revision: d.u64()? },
        OP_GET => Op::Get { key: d.bytes()? },
        OP_APPEND => Op::Append { key: d.bytes()?, suffix: d.bytes()? },
        OP_REGISTER_SESSION => Op::RegisterSession,
        OP_LEASE_GRANT => Op::LeaseGrant { id: d.i64()?, ttl_secs: d.i64()? },
        OP_LEASE_REVOKE => Op::LeaseRevoke { id: d.i64()? },
        OP_LEASE_KEEP_ALIVE => Op::LeaseKeepAlive { id: d.i64()? },
        OP_LEASE_TIME_TO_LIVE => {
            let id = d.i64()?;
            let [keys] = d.flags("lease time-to-live flags")?;
            Op::LeaseTimeToLive { id, keys }
        }
        OP_ALARM => decode_alarm(d)?,
        OP_AUTH => Op::Auth(decode_auth_op(d)?),
        OP_MEMBER => Op::Member(decode_member_op(d)?),
        tag => return Err(d.bad_tag("op", tag)),
    })
}

fn encode_put(e: &mut Encoder, r: &PutRequest) {
    e.bytes(&r.key);
    e.bytes(&r.value);
    e.i64(r.lease);
    e.flags(&[r.prev_kv, r.ignore_value, r.ignore_lease]);
}

fn decode_put(d: &mut Decoder) -> DResult<PutRequest> {
    let key = d.bytes()?;
    let value = d.bytes()?;
    let lease = d.i64()?;
    let [prev_kv, ignore_value, ignore_lease] = d.flags("put flags")?;
    Ok(PutRequest { key, value, lease, prev_kv, ignore_value, ignore_lease })
}

fn encode_range(e: &mut Encoder, r: &RangeRequest) {
    e.bytes(&r.key);
    e.bytes(&r.range_end);
    e.u64(r.limit);
    e.u64(r.revision);
    e.u8(match r.sort_order {
        SortOrder::None => 0,
        SortOrder::Ascend => 1,
        SortOrder::Descend => 2,
    });
    e.u8(match r.sort_target {
        SortTarget::Key => 0,
        SortTarget::Version => 1,
        SortTarget::Create => 2,
        SortTarget::Mod => 3,
        SortTarget::Value => 4,
    });
    e.flags(&[r.keys_only, r.count_only]);
    e.u64(r.min_mod_revision);
    e.u64(r.max_mod_revision);
    e.u64(r.min_create_revision);
    e.u64(r.max_create_revision);
}

fn decode_range(d: &mut Decoder) -> DResult<RangeRequest> {
    let key = d.bytes()?;
    let range_end = d.bytes()?;
    let limit = d.u64()?;
    let revision = d.u64()?;
    let sort_order = match d.tag("sort order")? {
        0 => SortOrder::None,
        1 => SortOrder::Ascend,
        2 => SortOrder::Descend,
        tag => return Err(d.bad_tag("sort order", tag)),
    };
    let sort_target = match d.tag("sort target")? {
        0 => SortTarget::Key,
        1 => SortTarget::Version,
        2 => SortTarget::Create,
        3 => SortTarget::Mod,
        4 => SortTarget::Value,
        tag => return Err(d.bad_tag("sort target", tag)),
    };
    let [keys_only, count_only] = d.flags("range flags")?;
    Ok(RangeRequest {
        key,
        range_end,
        limit,
        revision,
        sort_order,
        sort_target,
        keys_only,
        count_only,
        min_mod_revision: d.u64()?,
        max_mod_revision: d.u64()?,
        min_create_revision: d.u64()?,
        max_create_revision: d.u64()?,
    })
}

fn encode_delete(e: &mut Encoder, r: &DeleteRangeRequest) {
    e.bytes(&r.key);
    e.bytes(&r.range_end);
    e.flags(&[r.prev_kv]);
}

fn decode_delete(d: &mut Decoder) -> DResult<DeleteRangeRequest> {
    let key = d.bytes()?;
    let range_end = d.bytes()?;
    let [prev_kv] = d.flags("delete flags")?;
    Ok(DeleteRangeRequest { key, range_end, prev_kv })
}

fn encode_txn(e: &mut Encoder, t: &TxnRequest) {
    e.len(t.compare.len());
    for c in &t.compare {
        e.bytes(&c.key);
        e.bytes(&c.range_end);
        e.u8(match c.result {
            CompareResult::Equal => 0,
            CompareResult::Greater => 1,
            CompareResult::Less => 2,
            CompareResult::NotEqual => 3,
        });
        match &c.target {
            CompareTarget::Version(v) => {
                e.u8(0);
                e.u64(*v);
            }
            CompareTarget::CreateRevision(v) => {
                e.u8(1);
                e.u64(*v);
            }
            CompareTarget::ModRevision(v) => {
                e.u8(2);
                e.u64(*v);
            }
            CompareTarget::Value(v) => {
                e.u8(3);
                e.bytes(v);
            }
            CompareTarget::Lease(v) => {
                e.u8(4);
                e.i64(*v);
            }
        }
    }
    for branch in [&t.success, &t.failure] {
        e.len(branch.len());
        for op in branch {
            match op {
                RequestOp::Put(r) => {
                    e.u8(OP_PUT);
                    encode_put(e, r);
                }
                RequestOp::Range(r) => {
                    e.u8(OP_RANGE);
                    encode_range(e, r);
                }
                RequestOp::DeleteRange(r) => {
                    e.u8(OP_DELETE_RANGE);
                    encode_delete(e, r);
                }
                RequestOp::Txn(r) => {
                    e.u8(OP_TXN);
                    encode_txn(e, r);
                }
            }
        }
    }
}

fn decode_compare(d: &mut Decoder) -> DResult<Compare> {
    let key = d.bytes()?;
    let range_end = d.bytes()?;
    let result = match d.tag("compare result")? {
        0 => CompareResult::Equal,
        1 => CompareResult::Greater,
        2 => CompareResult::Less,
        3 => CompareResult::NotEqual,
        tag => return Err(d.bad_tag("compare result", tag)),
    };
    let target = match d.tag("compare target")? {
        0 => CompareTarget::Version(d.u64()?),
        1 => CompareTarget::CreateRevision(d.u64()?),
        2 => CompareTarget::ModRevision(d.u64()?),
        3 => CompareTarget::Value(d.bytes()?),
        4 => CompareTarget::Lease(d.i64()?),
        tag => return Err(d.bad_tag("compare target", tag)),
    };
    Ok(Compare { key, range_end, result, target })
}

fn decode_txn(d: &mut Decoder, depth: u64) -> DResult<TxnRequest> {
    if depth > TXN_DEPTH_MAX {
        return Err(d.err(DecodeErrorKind::TooDeep { max: TXN_DEPTH_MAX }));
    }
    let n = d.count()?;
    let mut compare = Vec::new();
    for _ in 0..n {
        compare.push(decode_compare(d)?);
    }
    let mut branches = [Vec::new(), Vec::new()];
    for branch in branches.iter_mut() {
        let n = d.count()?;
        for _ in 0..n {
            branch.push(match d.tag("txn op")? {
                OP_PUT => RequestOp::Put(decode_put(d)?),
                OP_RANGE => RequestOp::Range(decode_range(d)?),
                OP_DELETE_RANGE => RequestOp::DeleteRange(decode_delete(d)?),
                OP_TXN => RequestOp::Txn(decode_txn(d, depth + 1)?),
                tag => return Err(d.bad_tag("txn op", tag)),
            });
        }
    }
    let [success, failure] = branches;
    Ok(TxnRequest { compare, success, failure })
}

// ---- responses ----

const RESP_PUT: u8 = 1;
const RESP_RANGE: u8 = 2;
const RESP_DELETE_RANGE: u8 = 3;
const RESP_TXN: u8 = 4;
const RESP_COMPACT: u8 = 5;
const RESP_GET: u8 = 6;
const RESP_APPEND: u8 = 7;
const RESP_SESSION_REGISTERED: u8 = 8;
const RESP_ERROR: u8 = 9;
const RESP_LEASE_GRANTED: u8 = 10;
const RESP_LEASE_REVOKED: u8 = 11;
const RESP_LEASE_TTL: u8 = 12;
const RESP_ALARM: u8 = 13;
const RESP_AUTH: u8 = 14;
const RESP_MEMBER: u8 = 15;

fn encode_response(e: &mut Encoder, r: &Response) {
    match r {
        Response::Put(p) => {
            e.u8(RESP_PUT);
            encode_put_response(e, p);
        }
        Response::Range(r) => {
            e.u8(RESP_RANGE);
            encode_range_response(e, r);
        }
        Response::DeleteRange(r) => {
            e.u8(RESP_DELETE_RANGE);
            encode_delete_response(e, r);
        }
        Response::Txn(t) => {
            e.u8(RESP_TXN);
            encode_txn_response(e, t);
        }
        Response::Compact(c) => {
            e.u8(RESP_COMPACT);
            e.u64(c.revision);
        }
        Response::Get(g) => {
            e.u8(RESP_GET);
            e.u64(g.revision);
            encode_opt_kv(e, g.kv.as_ref());
        }
        Response::Append(p) => {
            e.u8(RESP_APPEND);
            encode_put_response(e, p);
        }
        Response::SessionRegistered { client_id } => {
            e.u8(RESP_SESSION_REGISTERED);
            e.u64(*client_id);
        }
        Response::Error(err) => {
            e.u8(RESP_ERROR);
            encode_error(e, err);
        }
        Response::LeaseGranted(g) => {
            e.u8(RESP_LEASE_GRANTED);
            e.u64(g.revision);
            e.i64(g.id);
            e.i64(g.ttl_secs);
        }
        Response::LeaseRevoked(r) => {
            e.u8(RESP_LEASE_REVOKED);
            e.u64(r.revision);
            e.i64(r.id);
            e.u64(r.deleted);
        }
        Response::LeaseTtl(t) => {
            e.u8(RESP_LEASE_TTL);
            e.u64(t.revision);
            e.i64(t.id);
            e.i64(t.ttl_secs);
            e.i64(t.granted_ttl_secs);
            e.len(t.keys.len());
            for k in &t.keys {
                e.bytes(k);
            }
        }
        Response::Alarm(a) => {
            e.u8(RESP_ALARM);
            e.u64(a.revision);
            e.len(a.alarms.len());
            for m in &a.alarms {
                e.u64(m.member_id);
                e.u8(alarm_tag(m.alarm));
            }
        }
        Response::Auth(a) => {
            e.u8(RESP_AUTH);
            encode_auth_response(e, a);
        }
        Response::Member(m) => {
            e.u8(RESP_MEMBER);
            e.flags(&[m.is_some()]);
            if let Some(m) = m {
                encode_member(e, m);
            }
        }
    }
}

fn decode_response(d: &mut Decoder) -> DResult<Response> {
    Ok(match d.tag("response")? {
        RESP_PUT => Response::Put(decode_put_response(d)?),
        RESP_RANGE => Response::Range(decode_range_response(d)?),
        RESP_DELETE_RANGE => Response::DeleteRange(decode_delete_response(d)?),
        RESP_TXN => Response::Txn(decode_txn_response(d, 1)?),
        RESP_COMPACT => Response::Compact(CompactResponse { revision: d.u64()? }),
        RESP_GET => Response::Get(GetResponse { revision: d.u64()?, kv: decode_opt_kv(d)? }),
        RESP_APPEND => Response::Append(decode_put_response(d)?),
        RESP_SESSION_REGISTERED => Response::SessionRegistered { client_id: d.u64()? },
        RESP_ERROR => Response::Error(decode_error(d)?),
        RESP_LEASE_GRANTED => Response::LeaseGranted(LeaseGrantResponse {
            revision: d.u64()?,
            id: d.i64()?,
            ttl_secs: d.i64()?,
        }),
        RESP_LEASE_REVOKED => Response::LeaseRevoked(LeaseRevokeResponse {
            revision: d.u64()?,
            id: d.i64()?,
            deleted: d.u64()?,
        }),
        RESP_LEASE_TTL => {
            let revision = d.u64()?;
            let id = d.i64()?;
            let ttl_secs = d.i64()?;
            let granted_ttl_secs = d.i64()?;
            let n = d.count()?;
            let mut keys = Vec::new();
            for _ in 0..n {
                keys.push(d.bytes()?);
            }
            Response::LeaseTtl(LeaseTtlResponse { revision, id, ttl_secs, granted_ttl_secs, keys })
        }
        RESP_ALARM => {
            let revision = d.u64()?;
            let n = d.count()?;
            let mut alarms = Vec::new();
            for _ in 0..n {
                alarms.push(AlarmMember { member_id: d.u64()?, alarm: decode_alarm_type(d)? });
            }
            Response::Alarm(AlarmResponse { revision, alarms })
        }
        RESP_AUTH => Response::Auth(decode_auth_response(d)?),
        RESP_MEMBER => {
            let [some] = d.flags("member response flags")?;
            Response::Member(if some { Some(decode_member(d)?) } else { None })
        }
        tag => return Err(d.bad_tag("response", tag)),
    })
}

fn encode_kv(e: &mut Encoder, kv: &KeyValue) {
    e.bytes(&kv.key);
    e.u64(kv.create_revision);
    e.u64(kv.mod_revision);
    e.u64(kv.version);
    e.bytes(&kv.value);
    e.i64(kv.lease);
}

fn decode_kv(d: &mut Decoder) -> DResult<KeyValue> {
    Ok(KeyValue {
        key: d.bytes()?,
        create_revision: d.u64()?,
        mod_revision: d.u64()?,
        version: d.u64()?,
        value: d.bytes()?,
        lease: d.i64()?,
    })
}

fn encode_opt_kv(e: &mut Encoder, kv: Option<&KeyValue>) {
    match kv {
        None => e.u8(0),
        Some(kv) => {
            e.u8(1);
            encode_kv(e, kv);
        }
    }
}

fn decode_opt_kv(d: &mut Decoder) -> DResult<Option<KeyValue>> {
    match d.tag("optional kv")? {
        0 => Ok(None),
        1 => Ok(Some(decode_kv(d)?)),
        tag => Err(d.bad_tag("optional kv", tag)),
    }
}

fn encode_kvs(e: &mut Encoder, kvs: &[KeyValue]) {
    e.len(kvs.len());
    for kv in kvs {
        encode_kv(e, kv);
    }
}

fn decode_kvs(d: &mut Decoder) -> DResult<Vec<KeyValue>> {
    let n = d.count()?;
    let mut kvs = Vec::new();
    for _ in 0..n {
        kvs.push(decode_kv(d)?);
    }
    Ok(kvs)
}

fn encode_put_response(e: &mut Encoder, p: &PutResponse) {
    e.u64(p.revision);
    encode_opt_kv(e, p.prev_kv.as_ref());
}

fn decode_put_response(d: &mut Decoder) -> DResult<PutResponse> {
    Ok(PutResponse { revision: d.u64()?, prev_kv: decode_opt_kv(d)? })
}

fn encode_range_response(e: &mut Encoder, r: &RangeResponse) {
    e.u64(r.revision);
    encode_kvs(e, &r.kvs);
    e.flags(&[r.more]);
    e.u64(r.count);
}

fn decode_range_response(d: &mut Decoder) -> DResult<RangeResponse> {
    let revision = d.u64()?;
    let kvs = decode_kvs(d)?;
    let [more] = d.flags("range response flags")?;
    Ok(RangeResponse { revision, kvs, more, count: d.u64()? })
}

fn encode_delete_response(e: &mut Encoder, r: &DeleteRangeResponse) {
    e.u64(r.revision);
    e.u64(r.deleted);
    encode_kvs(e, &r.prev_kvs);
}

fn decode_delete_response(d: &mut Decoder) -> DResult<DeleteRangeResponse> {
    Ok(DeleteRangeResponse { revision: d.u64()?, deleted: d.u64()?, prev_kvs: decode_kvs(d)? })
}

fn encode_txn_response(e: &mut Encoder, t: &TxnResponse) {
    e.u64(t.revision);
    e.flags(&[t.succeeded]);
    e.len(t.responses.len());
    for r in &t.responses {
        match r {
            ResponseOp::Put(p) => {
                e.u8(RESP_PUT);
                encode_put_response(e, p);
            }
            ResponseOp::Range(r) => {
                e.u8(RESP_RANGE);
                encode_range_response(e, r);
            }
            ResponseOp::DeleteRange(r) => {
                e.u8(RESP_DELETE_RANGE);
                encode_delete_response(e, r);
            }
            ResponseOp::Txn(t) => {
                e.u8(RESP_TXN);
                encode_txn_response(e, t);
            }
        }
    }
}

fn decode_txn_response(d: &mut Decoder, depth: u64) -> DResult<TxnResponse> {
    if depth > TXN_DEPTH_MAX {
        return Err(d.err(DecodeErrorKind::TooDeep { max: TXN_DEPTH_MAX }));
    }
    let revision = d.u64()?;
    let [succeeded] = d.flags("txn response flags")?;
    let n = d.count()?;
    let mut responses = Vec::new();
    for _ in 0..n {
        responses.push(match d.tag("txn response op")? {
            RESP_PUT => ResponseOp::Put(decode_put_response(d)?),
            RESP_RANGE => ResponseOp::Range(decode_range_response(d)?),
            RESP_DELETE_RANGE => ResponseOp::DeleteRange(decode_delete_response(d)?),
            RESP_TXN => ResponseOp::Txn(decode_txn_response(d, depth + 1)?),
            tag => return Err(d.bad_tag("txn response op", tag)),
        });
    }
    Ok(TxnResponse { revision, succeeded, responses })
}

fn encode_error(e: &mut Encoder, err: &KvError) {
    match err {
        KvError::EmptyKey => e.u8(1),
        KvError::KeyTooLarge { len, max } => {
            e.u8(2);
            e.u64(*len);
            e.u64(*max);
        }
        KvError::ValueTooLarge { len, max } => {
            e.u8(3);
            e.u64(*len);
            e.u64(*max);
        }
        KvError::KeyNotFound { key } => {
            e.u8(4);
            e.bytes(key);
        }
        KvError::Compacted { requested, compact_revision } => {
            e.u8(5);
            e.u64(*requested);
            e.u64(*compact_revision);
        }
        KvError::FutureRevision { requested, current } => {
            e.u8(6);
            e.u64(*requested);
            e.u64(*current);
        }
        KvError::TooManyOps { count, max } => {
            e.u8(7);
            e.u64(*count);
            e.u64(*max);
        }
        KvError::TxnTooDeep { max } => {
            e.u8(8);
            e.u64(*max);
        }
        KvError::DuplicateKeyInTxn { key } => {
            e.u8(9);
            e.bytes(key);
        }
        KvError::StaleSequence { client_id, seq, last_seq } => {
            e.u8(10);
            e.u64(*client_id);
            e.u64(*seq);
            e.u64(*last_seq);
        }
        KvError::SessionExpired { client_id } => {
            e.u8(11);
            e.u64(*client_id);
        }
        KvError::MalformedCommand { detail } => {
            e.u8(12);
            e.bytes(detail.as_bytes());
        }
        KvError::LeaseNotFound { id } => {
            e.u8(13);
            e.i64(*id);
        }
        KvError::LeaseExists { id } => {
            e.u8(14);
            e.i64(*id);
        }
        KvError::LeaseTtlTooLarge { ttl_secs } => {
            e.u8(15);
            e.i64(*ttl_secs);
        }
        KvError::NoSpace => e.u8(16),
        KvError::Corrupt => e.u8(17),
        KvError::TooManySessions { max } => {
            e.u8(18);
            e.u64(*max);
        }
        KvError::ResponseNotKept { client_id, seq, revision } => {
            e.u8(19);
            e.u64(*client_id);
            e.u64(*seq);
            e.u64(*revision);
        }
        KvError::Auth(a) => {
            e.u8(20);
            e.u8(auth_error_tag(*a));
        }
    }
}

fn decode_error(d: &mut Decoder) -> DResult<KvError> {
    Ok(match d.tag("error")? {
        1 => KvError::EmptyKey,
        2 => KvError::KeyTooLarge { len: d.u64()?, max: d.u64()? },
        3 => KvError::ValueTooLarge { len: d.u64()?, max: d.u64()? },
        4 => KvError::KeyNotFound { key: d.bytes()? },
        5 => KvError::Compacted { requested: d.u64()?, compact_revision: d.u64()? },
        6 => KvError::FutureRevision { requested: d.u64()?, current: d.u64()? },
        7 => KvError::TooManyOps { count: d.u64()?, max: d.u64()? },
        8 => KvError::TxnTooDeep { max: d.u64()? },
        9 => KvError::DuplicateKeyInTxn { key: d.bytes()? },
        10 => KvError::StaleSequence { client_id: d.u64()?, seq: d.u64()?, last_seq: d.u64()? },
        11 => KvError::SessionExpired { client_id: d.u64()? },
        12 => KvError::MalformedCommand {
            // Lossy on purpose: the text is only shown to a person.
            detail: String::from_utf8_lossy(&d.bytes()?).into_owned(),
        },
        13 => KvError::LeaseNotFound { id: d.i64()? },
        14 => KvError::LeaseExists { id: d.i64()? },
        15 => KvError::LeaseTtlTooLarge { ttl_secs: d.i64()? },
        16 => KvError::NoSpace,
        17 => KvError::Corrupt,
        18 => KvError::TooManySessions { max: d.u64()? },
        19 => KvError::ResponseNotKept { client_id: d.u64()?, seq: d.u64()?, revision: d.u64()? },
        20 => {
            let tag = d.tag("auth error")?;
            let found = AuthError::ALL.get(usize::from(tag).wrapping_sub(1)).copied();
            KvError::Auth(found.ok_or_else(|| d.bad_tag("auth error", tag))?)
        }
        tag => return Err(d.bad_tag("error", tag)),
    })
}

// ---- auth ----

fn auth_error_tag(a: AuthError) -> u8 {
    let at = AuthError::ALL.iter().position(|x| *x == a).expect("every AuthError is in ALL");
    (at + 1) as u8
}

const AUTH_ENABLE: u8 = 1;
const AUTH_DISABLE: u8 = 2;
const AUTH_STATUS: u8 = 3;
const AUTH_USER_ADD: u8 = 4;
const AUTH_USER_GET: u8 = 5;
const AUTH_USER_LIST: u8 = 6;
const AUTH_USER_DELETE: u8 = 7;
const AUTH_USER_CHANGE_PASSWORD: u8 = 8;
const AUTH_USER_GRANT_ROLE: u8 = 9;
const AUTH_USER_REVOKE_ROLE: u8 = 10;
const AUTH_ROLE_ADD: u8 = 11;
const AUTH_ROLE_GET: u8 = 12;
const AUTH_ROLE_LIST: u8 = 13;
const AUTH_ROLE_DELETE: u8 = 14;
const AUTH_ROLE_GRANT_PERMISSION: u8 = 15;
const AUTH_ROLE_REVOKE_PERMISSION: u8 = 16;
const AUTH_AUTHENTICATE: u8 = 17;

fn encode_opt_bytes(e: &mut Encoder, b: Option<&Vec<u8>>) {
    match b {
        None => e.u8(0),
        Some(b) => {
            e.u8(1);
            e.bytes(b);
        }
    }
}

fn decode_opt_bytes(d: &mut Decoder) -> DResult<Option<Vec<u8>>> {
    match d.tag("optional bytes")? {
        0 => Ok(None),
        1 => Ok(Some(d.bytes()?)),
        tag => Err(d.bad_tag("optional bytes", tag)),
    }
}

fn encode_permission(e: &mut Encoder, p: &Permission) {
    e.u8(match p.perm_type {
        PermissionType::Read => 0,
        PermissionType::Write => 1,
        PermissionType::ReadWrite => 2,
    });
    e.bytes(&p.key);
    e.bytes(&p.range_end);
}

fn decode_permission(d: &mut Decoder) -> DResult<Permission> {
    let perm_type = match d.tag("permission type")? {
        0 => PermissionType::Read,
        1 => PermissionType::Write,
        2 => PermissionType::ReadWrite,
        tag => return Err(d.bad_tag("permission type", tag)),
    };
    Ok(Permission { perm_type, key: d.bytes()?, range_end: d.bytes()? })
}

fn encode_auth_op(e: &mut Encoder, op: &AuthOp) {
    let name = |e: &mut Encoder, tag: u8, n: &str| {
        e.u8(tag);
        e.bytes(n.as_bytes());
    };
    let pair = |e: &mut Encoder, tag: u8, a: &str, b: &str| {
        name(e, tag, a);
        e.bytes(b.as_bytes());
    };
    match op {
        AuthOp::Enable => e.u8(AUTH_ENABLE),
        AuthOp::Disable => e.u8(AUTH_DISABLE),
        AuthOp::Status => e.u8(AUTH_STATUS),
        AuthOp::UserAdd { name: n, password_hash } => {
            name(e, AUTH_USER_ADD, n);
            encode_opt_bytes(e, password_hash.as_ref());
        }
        AuthOp::UserGet { name: n } => name(e, AUTH_USER_GET, n),
        AuthOp::UserList => e.u8(AUTH_USER_LIST),
        AuthOp::UserDelete { name: n } => name(e, AUTH_USER_DELETE, n),
        AuthOp::UserChangePassword { name: n, password_hash } => {
            name(e, AUTH_USER_CHANGE_PASSWORD, n);
            encode_opt_bytes(e, password_hash.as_ref());
        }
        AuthOp::UserGrantRole { user, role } => pair(e, AUTH_USER_GRANT_ROLE, user, role),
        AuthOp::UserRevokeRole { user, role } => pair(e, AUTH_USER_REVOKE_ROLE, user, role),
        AuthOp::RoleAdd { name: n } => name(e, AUTH_ROLE_ADD, n),
        AuthOp::RoleGet { name: n } => name(e, AUTH_ROLE_GET, n),
        AuthOp::RoleList => e.u8(AUTH_ROLE_LIST),
        AuthOp::RoleDelete { name: n } => name(e, AUTH_ROLE_DELETE, n),
        AuthOp::RoleGrantPermission { role, permission } => {
            name(e, AUTH_ROLE_GRANT_PERMISSION, role);
            encode_permission(e, permission);
        }
        AuthOp::RoleRevokePermission { role, key, range_end } => {
            name(e, AUTH_ROLE_REVOKE_PERMISSION, role);
            e.bytes(key);
            e.bytes(range_end);
        }
        AuthOp::Authenticate { name: n, password_hash, token_prefix } => {
            name(e, AUTH_AUTHENTICATE, n);
            e.bytes(password_hash);
            e.bytes(token_prefix.as_bytes());
        }
    }
}

fn decode_auth_op(d: &mut Decoder) -> DResult<AuthOp> {
    Ok(match d.tag("auth op")? {
        AUTH_ENABLE => AuthOp::Enable,
        AUTH_DISABLE => AuthOp::Disable,
        AUTH_STATUS => AuthOp::Status,
        AUTH_USER_ADD => {
            AuthOp::UserAdd { name: d.string("user")?, password_hash: decode_opt_bytes(d)? }
        }
        AUTH_USER_GET => AuthOp::UserGet { name: d.string("user")? },
        AUTH_USER_LIST => AuthOp::UserList,
        AUTH_USER_DELETE => AuthOp::UserDelete { name: d.string("user")? },
        AUTH_USER_CHANGE_PASSWORD => AuthOp::UserChangePassword {
            name: d.string("user")?,
            password_hash: decode_opt_bytes(d)?,
        },
        AUTH_USER_GRANT_ROLE => {
            AuthOp::UserGrantRole { user: d.string("user")?, role: d.string("role")? }
        }
        AUTH_USER_REVOKE_ROLE => {
            AuthOp::UserRevokeRole { user: d.string("user")?, role: d.string("role")? }
        }
        AUTH_ROLE_ADD => AuthOp::RoleAdd { name: d.string("role")? },
        AUTH_ROLE_GET => AuthOp::RoleGet { name: d.string("role")? },
        AUTH_ROLE_LIST => AuthOp::RoleList,
        AUTH_ROLE_DELETE => AuthOp::RoleDelete { name: d.string("role")? },
        AUTH_ROLE_GRANT_PERMISSION => AuthOp::RoleGrantPermission {
            role: d.string("role")?,
            permission: decode_permission(d)?,
        },
        AUTH_ROLE_REVOKE_PERMISSION => AuthOp::RoleRevokePermission {
            role: d.string("role")?,
            key: d.bytes()?,
            range_end: d.bytes()?,
        },
        AUTH_AUTHENTICATE => AuthOp::Authenticate {
            name: d.string("user")?,
            password_hash: d.bytes()?,
            token_prefix: d.string("token")?,
        },
        tag => return Err(d.bad_tag("auth op", tag)),
    })
}

fn encode_strings(e: &mut Encoder, list: &[String]) {
    e.len(list.len());
    for s in list {
        e.bytes(s.as_bytes());
    }
}

fn decode_strings(d: &mut Decoder, field: &'static str) -> DResult<Vec<String>> {
    let n = d.count()?;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(d.string(field)?);
    }
    Ok(out)
}

fn encode_auth_response(e: &mut Encoder, a: &AuthResponse) {
    e.u64(a.revision);
    e.u64(a.auth_revision);
    e.flags(&[a.enabled]);
    encode_strings(e, &a.roles);
    encode_strings(e, &a.users);
    e.len(a.permissions.len());
    for p in &a.permissions {
        encode_permission(e, p);
    }
}

fn decode_auth_response(d: &mut Decoder) -> DResult<AuthResponse> {
    let revision = d.u64()?;
    let auth_revision = d.u64()?;
    let [enabled] = d.flags("auth response flags")?;
    let roles = decode_strings(d, "role")?;
    let users = decode_strings(d, "user")?;
    let n = d.count()?;
    let mut permissions = Vec::new();
    for _ in 0..n {
        permissions.push(decode_permission(d)?);
    }
    Ok(AuthResponse { revision, auth_revision, enabled, roles, users, permissions })
}

// ---- member table ----

const MEMBER_ADD: u8 = 1;
const MEMBER_REMOVE: u8 = 2;
const MEMBER_PROMOTE: u8 = 3;
const MEMBER_UPDATE: u8 = 4;
const MEMBER_PUBLISH: u8 = 5;

fn encode_member(e: &mut Encoder, m: &Member) {
    e.u64(m.id);
    e.bytes(m.name.as_bytes());
    encode_strings(e, &m.peer_urls);
    encode_strings(e, &m.client_urls);
    e.flags(&[m.is_learner]);
}

fn decode_member(d: &mut Decoder) -> DResult<Member> {
    let id = d.u64()?;
    let name = d.string("member name")?;
    let peer_urls = decode_strings(d, "peer url")?;
    let client_urls = decode_strings(d, "client url")?;
    let [is_learner] = d.flags("member flags")?;
    Ok(Member { id, name, peer_urls, client_urls, is_learner })
}

fn encode_member_op(e: &mut Encoder, op: &MemberOp) {
    match op {
        MemberOp::Add(m) => {
            e.u8(MEMBER_ADD);
            encode_member(e, m);
        }
        MemberOp::Remove(id) => {
            e.u8(MEMBER_REMOVE);
            e.u64(*id);
        }
        MemberOp::Promote(id) => {
            e.u8(MEMBER_PROMOTE);
            e.u64(*id);
        }
        MemberOp::Update { id, peer_urls } => {
            e.u8(MEMBER_UPDATE);
            e.u64(*id);
            encode_strings(e, peer_urls);
        }
        MemberOp::Publish { id, name, client_urls } => {
            e.u8(MEMBER_PUBLISH);
            e.u64(*id);
            e.bytes(name.as_bytes());
            encode_strings(e, client_urls);
        }
    }
}

fn decode_member_op(d: &mut Decoder) -> DResult<MemberOp> {
    Ok(match d.tag("member op")? {
        MEMBER_ADD => MemberOp::Add(decode_member(d)?),
        MEMBER_REMOVE => MemberOp::Remove(d.u64()?),
        MEMBER_PROMOTE => MemberOp::Promote(d.u64()?),
        MEMBER_UPDATE => {
            MemberOp::Update { id: d.u64()?, peer_urls: decode_strings(d, "peer url")? }
        }
        MEMBER_PUBLISH => MemberOp::Publish {
            id: d.u64()?,
            name: d.string("member name")?,
            client_urls: decode_strings(d, "client url")?,
        },
        tag => return Err(d.bad_tag("member op", tag)),
    })
}
