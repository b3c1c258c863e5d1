//! Requests, responses and errors of the state machine (the etcd v3 data
//! model with leases and watch events, plus a course-style `Append`).
//!
//! Revisions, versions and indices are `u64` (etcd uses `i64` but never a
//! negative value); lease ids stay `i64` as in etcd so they map one to one.

use std::fmt;

use crate::auth::{AuthError, AuthOp, AuthResponse, AuthStamp};

/// A key with its value and MVCC metadata, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// Revision of the write that created the key (since its last delete).
    pub create_revision: u64,
    /// Revision of the last write to the key.
    pub mod_revision: u64,
    /// Number of writes since the key was created: 1 after the first put,
    /// reset by a delete.
    pub version: u64,
    /// The value; empty when the read asked for `keys_only`.
    pub value: Vec<u8>,
    /// Lease id attached by the last put, 0 for none.
    pub lease: i64,
}

/// Put a key (etcd `PutRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    /// The key; must not be empty.
    pub key: Vec<u8>,
    /// The new value (ignored when `ignore_value` is set).
    pub value: Vec<u8>,
    /// Lease id to attach, 0 for none; the lease must exist
    /// ([`KvError::LeaseNotFound`] otherwise), and revoking it deletes the key.
    pub lease: i64,
    /// Return the previous key-value, if any.
    pub prev_kv: bool,
    /// Keep the current value; fails with [`KvError::KeyNotFound`] if the key
    /// does not exist.
    pub ignore_value: bool,
    /// Keep the current lease; fails with [`KvError::KeyNotFound`] if the key
    /// does not exist.
    pub ignore_lease: bool,
}

/// Result of a put.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// Store revision after the write.
    pub revision: u64,
    /// The key-value before the put, when asked for and present.
    pub prev_kv: Option<KeyValue>,
}

/// Order of the results of a range read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Key order (ascending), no extra sort.
    #[default]
    None,
    /// Ascending by the sort target.
    Ascend,
    /// Descending by the sort target.
    Descend,
}

/// Field a range read sorts by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value.
    Value,
}

/// Read a key or a range of keys (etcd `RangeRequest`).
///
/// `range_end` follows etcd: empty means the single key `key`; `[0]` means
/// every key `>= key`; otherwise the half-open range `[key, range_end)` (empty
/// when `range_end <= key`). A prefix read uses `range_end` = `key` with its
/// last byte incremented, see [`prefix_end`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// First key; must not be empty (use `[0]` for "from the start").
    pub key: Vec<u8>,
    /// End of the range, see the type docs.
    pub range_end: Vec<u8>,
    /// Most key-values returned, 0 for no limit; `more` says if some were cut.
    pub limit: u64,
    /// Revision to read at, 0 for the current one.
    pub revision: u64,
    /// Sort order.
    pub sort_order: SortOrder,
    /// Sort target.
    pub sort_target: SortTarget,
    /// Leave values empty.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Keep only keys with `mod_revision >= min_mod_revision` (0 = off).
    pub min_mod_revision: u64,
    /// Keep only keys with `mod_revision <= max_mod_revision` (0 = off).
    pub max_mod_revision: u64,
    /// Keep only keys with `create_revision >= min_create_revision` (0 = off).
    pub min_create_revision: u64,
    /// Keep only keys with `create_revision <= max_create_revision` (0 = off).
    pub max_create_revision: u64,
}

impl RangeRequest {
    /// Read one key at the current revision.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        RangeRequest { key: key.into(), ..Default::default() }
    }

    /// Read every key starting with `prefix` at the current revision.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        RangeRequest { range_end: prefix_end(&key), key, ..Default::default() }
    }

    /// Read every key at the current revision.
    pub fn all() -> Self {
        RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() }
    }
}

/// The `range_end` that selects every key starting with `prefix` (etcd's
/// `clientv3.GetPrefixRangeEnd`): the prefix with its last byte below 0xff
/// incremented and the rest cut; `[0]` (all keys) if every byte is 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Result of a range read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// Current store revision (not the revision read at, as in etcd).
    pub revision: u64,
    /// The key-values, after filters, sort and limit.
    pub kvs: Vec<KeyValue>,
    /// Whether the limit cut some key-values.
    pub more: bool,
    /// Number of keys in the range at the read revision, before filters and
    /// limit.
    pub count: u64,
}

/// Delete a key or a range of keys (etcd `DeleteRangeRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    /// First key; must not be empty.
    pub key: Vec<u8>,
    /// End of the range, as in [`RangeRequest`].
    pub range_end: Vec<u8>,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

/// Result of a delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    /// Store revision after the delete (unchanged if nothing was deleted).
    pub revision: u64,
    /// Number of keys deleted.
    pub deleted: u64,
    /// The deleted key-values, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// How a compare checks the stored field against the given one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareResult {
    /// stored == given
    Equal,
    /// stored > given
    Greater,
    /// stored < given
    Less,
    /// stored != given
    NotEqual,
}

/// The field a compare reads, with the value to compare against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The version (0 for a missing key).
    Version(u64),
    /// The create revision (0 for a missing key).
    CreateRevision(u64),
    /// The mod revision (0 for a missing key).
    ModRevision(u64),
    /// The value, compared bytewise; always false for a missing key.
    Value(Vec<u8>),
    /// The lease id (0 for a missing key).
    Lease(i64),
}

/// One condition of a transaction (etcd `Compare`). Over a range it holds
/// when it holds for every key in the range; over an empty range it is
/// checked against a zero key-value (and is false for a value compare).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// First key; must not be empty.
    pub key: Vec<u8>,
    /// End of the range, as in [`RangeRequest`]; empty for one key.
    pub range_end: Vec<u8>,
    /// The comparison.
    pub result: CompareResult,
    /// The field and the value to compare with.
    pub target: CompareTarget,
}

/// One operation of a transaction branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    /// A put.
    Put(PutRequest),
    /// A range read; sees the writes made earlier in the same transaction.
    Range(RangeRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction; its compares are evaluated, with all others,
    /// against the state before the outer transaction (as etcd does).
    Txn(TxnRequest),
}

/// Deepest transaction nesting accepted (a top-level transaction is depth 1).
/// Bounds the recursion of decoding and applying.
pub const TXN_DEPTH_MAX: u64 = 8;

/// An atomic compare-then-act transaction (etcd `TxnRequest`). All its
/// writes share one new revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    /// Conditions, all of which must hold for `success` to run.
    pub compare: Vec<Compare>,
    /// Operations run when every compare holds.
    pub success: Vec<RequestOp>,
    /// Operations run otherwise.
    pub failure: Vec<RequestOp>,
}

/// Result of one transaction operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    /// Result of a put.
    Put(PutResponse),
    /// Result of a range read.
    Range(RangeResponse),
    /// Result of a delete.
    DeleteRange(DeleteRangeResponse),
    /// Result of a nested transaction.
    Txn(TxnResponse),
}

/// Result of a transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    /// Store revision after the transaction.
    pub revision: u64,
    /// Whether the compares held (and `success` ran).
    pub succeeded: bool,
    /// One response per operation of the branch that ran.
    pub responses: Vec<ResponseOp>,
}

/// Identifies a write for exactly-once execution: the client's session id
/// (handed out by [`Op::RegisterSession`]) and a sequence number that the
/// client raises by one per new command and keeps for retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId {
    /// Session id from [`Response::SessionRegistered`].
    pub client_id: u64,
    /// Sequence number, starting at 1 for each session.
    pub seq: u64,
}

/// What a command does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// etcd Put.
    Put(PutRequest),
    /// etcd Range (a read through the log).
    Range(RangeRequest),
    /// etcd DeleteRange.
    DeleteRange(DeleteRangeRequest),
    /// etcd Txn.
    Txn(TxnRequest),
    /// etcd Compact: forget history older than `revision`.
    Compact {
        /// Revision to compact to; reads below it fail afterwards.
        revision: u64,
    },
    /// Read one key at the current revision.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Set the value to the old value followed by `suffix` (a put of
    /// `suffix` if the key is missing). Counts as a put for revisions.
    Append {
        /// The key.
        key: Vec<u8>,
        /// Bytes to append.
        suffix: Vec<u8>,
    },
    /// Open a client session; the response carries its id, which is the log
    /// index of this command and so unique for the life of the cluster.
    /// A [`RequestId`] on this command is ignored.
    RegisterSession,
    /// etcd LeaseGrant: create a lease of `ttl_secs` seconds. The state
    /// machine keeps no clock: it records the granted TTL, and the leader
    /// decides expiry and proposes [`Op::LeaseRevoke`].
    LeaseGrant {
        /// The lease id; 0 lets the state machine choose one (the log index of
        /// this command, or the next free id above it).
        id: i64,
        /// Granted time to live in seconds (at least 1 is kept; at most
        /// [`LEASE_TTL_MAX_SECS`]).
        ttl_secs: i64,
    },
    /// etcd LeaseRevoke (and lease expiry): delete the lease and every key
    /// attached to it, all at one new revision.
    LeaseRevoke {
        /// The lease id.
        id: i64,
    },
    /// etcd LeaseKeepAlive. Changes nothing in the state machine (a leader
    /// answers it from its own clock without the log); applied through the
    /// log it answers like [`Op::LeaseTimeToLive`] without keys.
    LeaseKeepAlive {
        /// The lease id.
        id: i64,
    },
    /// etcd LeaseTimeToLive: the lease's granted TTL and, if asked, its keys.
    /// Read-only; the remaining TTL is the leader's to fill in.
    LeaseTimeToLive {
        /// The lease id.
        id: i64,
        /// List the attached keys.
        keys: bool,
    },
    /// etcd's Maintenance.Alarm: raise, clear or list alarms. Alarms are replicated
    /// state: while NOSPACE is raised every member refuses puts, transactions with
    /// puts and lease grants ([`KvError::NoSpace`]); while CORRUPT is raised, every
    /// command but alarms and lease queries ([`KvError::Corrupt`]).
    Alarm {
        /// What to do.
        action: AlarmAction,
        /// The member the alarm is for (ignored by [`AlarmAction::Get`]).
        member_id: u64,
        /// The alarm; [`AlarmType::None`] lists every alarm with
        /// [`AlarmAction::Get`] and changes nothing with the other actions.
        alarm: AlarmType,
    },
    /// A change of the member table that is not a Raft configuration change (etcd's
    /// member Update and a started member's Publish; see [`crate::members`]). Answered
    /// with [`Response::Member`].
    Member(crate::members::MemberOp),
    /// etcd's Auth service: a change or a query of users, roles, permissions
    /// and the enabled flag. With an [`AuthStamp`] on the command, apply checks
    /// the caller is allowed it (admin, or a get of oneself or one's role).
    Auth(AuthOp),
}

/// What an [`Op::Alarm`] does (etcd's `AlarmRequest.AlarmAction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmAction {
    /// List the raised alarms of a type (all of them for [`AlarmType::None`]).
    Get,
    /// Raise an alarm for a member.
    Activate,
    /// Clear a member's alarm.
    Deactivate,
}

/// An alarm type (etcd's `AlarmType`, same order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlarmType {
    /// No alarm: with [`AlarmAction::Get`], every alarm.
    None,
    /// The store is over its space quota.
    Nospace,
    /// A member's data was found corrupt.
    Corrupt,
}

/// A raised alarm: which member, which type (etcd's `AlarmMember`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AlarmMember {
    /// The member the alarm is for.
    pub member_id: u64,
    /// Its type (never [`AlarmType::None`]).
    pub alarm: AlarmType,
}

/// Result of [`Op::Alarm`], as etcd answers it: for a get, the alarms listed; for an
/// activate, the alarm (new or already raised); for a deactivate, the alarm cleared
/// (none if it was not raised).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlarmResponse {
    /// Current store revision.
    pub revision: u64,
    /// The alarms, by member id then type.
    pub alarms: Vec<AlarmMember>,
}

/// Longest lease TTL accepted, in seconds (etcd's `MaxLeaseTTL`).
pub const LEASE_TTL_MAX_SECS: i64 = 9_000_000_000;

/// Result of [`Op::LeaseGrant`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseGrantResponse {
    /// Current store revision.
    pub revision: u64,
    /// The lease id (chosen by the state machine when the request said 0).
    pub id: i64,
    /// Granted TTL in seconds.
    pub ttl_secs: i64,
}

/// Result of [`Op::LeaseRevoke`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRevokeResponse {
    /// Store revision after the revoke (unchanged if the lease had no keys).
    pub revision: u64,
    /// The revoked lease.
    pub id: i64,
    /// Number of keys deleted with it.
    pub deleted: u64,
}

/// Result of [`Op::LeaseTimeToLive`] and [`Op::LeaseKeepAlive`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTtlResponse {
    /// Current store revision.
    pub revision: u64,
    /// The lease id.
    pub id: i64,
    /// Remaining TTL in seconds. The state machine has no clock and reports
    /// the granted TTL; the leader's node replaces it with what is left.
    pub ttl_secs: i64,
    /// Granted TTL in seconds.
    pub granted_ttl_secs: i64,
    /// Attached keys in key order, when asked for.
    pub keys: Vec<Vec<u8>>,
}

/// What an event did to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted (by a delete, or with its lease).
    Delete,
}

/// One change of one key at one revision, as etcd's `mvccpb.Event`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key-value after the change; for a delete only `key` and
    /// `mod_revision` (the revision of the delete) are set, as in etcd.
    pub kv: KeyValue,
    /// The key-value before the change, when asked for and present.
    pub prev_kv: Option<KeyValue>,
}

/// How much one [`StateMachine::events_within`](crate::StateMachine::events_within)
/// batch may gather. A batch stops between revisions once either bound is
/// reached, so it may pass them by one revision (never split); at least one
/// revision is always returned, so a caller resuming from the batch's
/// `next_revision` always makes progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventLimits {
    /// Most changes (of any key in the scanned history) visited.
    pub changes: u64,
    /// Most bytes of keys and values (previous key-values included) in the
    /// events gathered: bounds the memory one batch holds.
    pub bytes: u64,
}

impl EventLimits {
    /// Whether a batch that visited `visited` changes and gathered `bytes`
    /// must stop (at the next revision boundary).
    pub(crate) fn reached(&self, visited: u64, bytes: u64) -> bool {
        visited >= self.changes || bytes >= self.bytes
    }
}

impl Event {
    /// Bytes of keys and values this event holds (its previous key-value's
    /// included), the measure [`EventLimits::bytes`] bounds.
    pub fn payload_bytes(&self) -> u64 {
        let kv_bytes = |kv: &KeyValue| (kv.key.len() + kv.value.len()) as u64;
        kv_bytes(&self.kv) + self.prev_kv.as_ref().map_or(0, kv_bytes)
    }
}

/// The events of a key range over a span of revisions
/// ([`StateMachine::events`](crate::StateMachine::events)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventBatch {
    /// Events in revision order, keys in key order within a revision.
    pub events: Vec<Event>,
    /// First revision not covered: the next call starts there. Every event
    /// below it (from the requested start on) is in `events`.
    pub next_revision: u64,
    /// Current store revision when the batch was read.
    pub revision: u64,
}

/// A command as it travels through the Raft log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Exactly-once tag; `None` runs the command every time it is applied.
    pub request_id: Option<RequestId>,
    /// The permission check a client command passed where it was proposed;
    /// apply checks again under the auth state of its index and refuses a stamp
    /// older than that state. `None`: a command of the members themselves
    /// (lease expiry, compaction, alarms), which is not checked.
    pub auth: Option<AuthStamp>,
    /// The operation.
    pub op: Op,
}

impl Command {
    /// A command without a session.
    pub fn new(op: Op) -> Self {
        Command { request_id: None, auth: None, op }
    }

    /// The same command, stamped with the permission check it passed.
    pub fn stamped(self, stamp: AuthStamp) -> Self {
        Command { auth: Some(stamp), ..self }
    }

    /// A command that runs at most once for `(client_id, seq)`.
    pub fn with_session(client_id: u64, seq: u64, op: Op) -> Self {
        Command { request_id: Some(RequestId { client_id, seq }), auth: None, op }
    }
}

/// Result of [`Op::Compact`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactResponse {
    /// Current store revision.
    pub revision: u64,
}

/// Result of [`Op::Get`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetResponse {
    /// Current store revision.
    pub revision: u64,
    /// The key-value, if the key exists.
    pub kv: Option<KeyValue>,
}

/// What applying a command returned. Operating errors are a variant, so a
/// response (error included) can be stored in a session and replayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Result of [`Op::Put`].
    Put(PutResponse),
    /// Result of [`Op::Range`].
    Range(RangeResponse),
    /// Result of [`Op::DeleteRange`].
    DeleteRange(DeleteRangeResponse),
    /// Result of [`Op::Txn`].
    Txn(TxnResponse),
    /// Result of [`Op::Compact`].
    Compact(CompactResponse),
    /// Result of [`Op::Get`].
    Get(GetResponse),
    /// Result of [`Op::Append`] (`prev_kv` is always `None`).
    Append(PutResponse),
    /// Result of [`Op::RegisterSession`].
    SessionRegistered {
        /// The new session's id, to put in every [`RequestId`].
        client_id: u64,
    },
    /// Result of [`Op::LeaseGrant`].
    LeaseGranted(LeaseGrantResponse),
    /// Result of [`Op::LeaseRevoke`].
    LeaseRevoked(LeaseRevokeResponse),
    /// Result of [`Op::LeaseTimeToLive`] and [`Op::LeaseKeepAlive`].
    LeaseTtl(LeaseTtlResponse),
    /// The command failed; it changed nothing.
    Error(KvError),
    /// Result of [`Op::Alarm`].
    Alarm(AlarmResponse),
    /// Result of [`Op::Auth`].
    Auth(AuthResponse),
    /// Result of [`Op::Member`]: the member's record afterwards, or `None` if the
    /// change did not apply (the member is unknown or was removed).
    Member(Option<crate::members::Member>),
}

impl Response {
    /// The error, if the command failed.
    pub fn error(&self) -> Option<&KvError> {
        match self {
            Response::Error(e) => Some(e),
            _ => None,
        }
    }
}

/// An operating error: the command was refused and changed nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvError {
    /// A key (or range start) was empty.
    EmptyKey,
    /// A key was longer than the configured maximum.
    KeyTooLarge {
        /// Its length.
        len: u64,
        /// The maximum.
        max: u64,
    },
    /// A value (or an appended value) was longer than the configured maximum.
    ValueTooLarge {
        /// Its length.
        len: u64,
        /// The maximum.
        max: u64,
    },
    /// A put with `ignore_value` or `ignore_lease` named a missing key.
    KeyNotFound {
        /// The key.
        key: Vec<u8>,
    },
    /// The revision asked for was compacted away.
    Compacted {
        /// Revision asked for.
        requested: u64,
        /// Oldest revision still readable.
        compact_revision: u64,
    },
    /// The revision asked for is newer than the store's.
    FutureRevision {
        /// Revision asked for.
        requested: u64,
        /// Current revision.
        current: u64,
    },
    /// A transaction branch, or its compares, had too many operations.
    TooManyOps {
        /// How many it had.
        count: u64,
        /// The maximum.
        max: u64,
    },
    /// Transactions were nested too deeply.
    TxnTooDeep {
        /// Deepest nesting allowed.
        max: u64,
    },
    /// A transaction branch wrote the same key twice (two puts, or a put
    /// inside a deleted range), which etcd refuses.
    DuplicateKeyInTxn {
        /// The key.
        key: Vec<u8>,
    },
    /// The request's sequence number is below the session's last one: the
    /// client has moved on and this is a late duplicate.
    StaleSequence {
        /// Session id.
        client_id: u64,
        /// Sequence number of the request.
        seq: u64,
        /// Last sequence number the session executed.
        last_seq: u64,
    },
    /// The session is unknown: never registered, or expired.
    SessionExpired {
        /// Session id.
        client_id: u64,
    },
    /// The log entry did not decode as a command.
    MalformedCommand {
        /// What the decoder found.
        detail: String,
    },
    /// The lease does not exist (never granted, revoked or expired).
    LeaseNotFound {
        /// The lease id.
        id: i64,
    },
    /// A grant asked for an id that is already a lease.
    LeaseExists {
        /// The lease id.
        id: i64,
    },
    /// A grant asked for a TTL above [`LEASE_TTL_MAX_SECS`].
    LeaseTtlTooLarge {
        /// The TTL asked for.
        ttl_secs: i64,
    },
    /// The NOSPACE alarm is raised (or the write would take the store over its space
    /// quota): puts, transactions with puts and lease grants are refused until an
    /// operator frees space and disarms the alarm.
    NoSpace,
    /// The CORRUPT alarm is raised: the cluster refuses commands until it is cleared.
    Corrupt,
    /// A session registration found every session slot taken by live
    /// sessions (they are never evicted; they expire when idle).
    TooManySessions {
        /// The session limit.
        max: u64,
    },
    /// A retry of a session's last write, whose response was too large to
    /// keep: the write took effect once, at `revision`, and is not run again.
    ResponseNotKept {
        /// Session id.
        client_id: u64,
        /// Sequence number of the write.
        seq: u64,
        /// Store revision right after the write.
        revision: u64,
    },
    /// An auth refusal, with etcd's error (see [`AuthError`]).
    Auth(AuthError),
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::EmptyKey => write!(f, "key is empty; give a non-empty key (use \\0 as range start to read from the first key)"),
            KvError::KeyTooLarge { len, max } => write!(f, "key of {len} bytes exceeds the {max}-byte limit; use a shorter key"),
            KvError::ValueTooLarge { len, max } => write!(f, "value of {len} bytes exceeds the {max}-byte limit; split the value"),
            KvError::KeyNotFound { key } => write!(f, "key {} not found, but the put asked to keep its value or lease; put it with a value first", Escaped(key)),
            KvError::Compacted { requested, compact_revision } => write!(f, "revision {requested} has been compacted (oldest readable is {compact_revision}); read at a newer revision"),
            KvError::FutureRevision { requested, current } => write!(f, "revision {requested} is in the future (current is {current}); read at or below the current revision"),
            KvError::TooManyOps { count, max } => write!(f, "transaction has {count} operations in one list, more than the {max} allowed; split it"),
            KvError::TxnTooDeep { max } => write!(f, "transactions are nested more than {max} deep; flatten the transaction"),
            KvError::DuplicateKeyInTxn { key } => write!(f, "transaction writes key {} twice in one branch; write each key once", Escaped(key)),
            KvError::StaleSequence { client_id, seq, last_seq } => write!(f, "session {client_id} already executed sequence {last_seq}, so {seq} is a late duplicate; drop it"),
            KvError::SessionExpired { client_id } => write!(f, "session {client_id} is unknown or expired; the outcome of its pending command is unknown: register a new session and re-read before retrying"),
            KvError::MalformedCommand { detail } => write!(f, "log entry is not a valid command ({detail}); fix the client that proposed it"),
            KvError::LeaseNotFound { id } => write!(f, "lease {id} not found (never granted, revoked or expired); grant a new lease"),
            KvError::LeaseExists { id } => write!(f, "lease {id} already exists; choose another id or let the server choose (id 0)"),
            KvError::LeaseTtlTooLarge { ttl_secs } => write!(f, "lease TTL of {ttl_secs} s exceeds the {LEASE_TTL_MAX_SECS} s limit; ask for a shorter TTL"),
            KvError::NoSpace => write!(f, "database space exceeded (the NOSPACE alarm is raised); compact the history, defragment and disarm the alarm (etcdctl alarm disarm), or raise --quota-backend-bytes"),
            KvError::Corrupt => write!(f, "the CORRUPT alarm is raised; check the members' data, then disarm the alarm"),
            KvError::TooManySessions { max } => write!(f, "all {max} client sessions are in use; retry later (idle sessions expire) or reuse an open session"),
            KvError::Auth(e) => write!(f, "{}", e.message()),
            KvError::ResponseNotKept { client_id, seq, revision } => write!(f, "session {client_id}'s write {seq} took effect at revision {revision} and is not run again, but its response was too large to keep; read what you need at revision {revision}"),
        }
    }
}

impl std::error::Error for KvError {}

/// Shows bytes as text with non-printable bytes escaped, for messages.
pub(crate) struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN_BYTES_MAX: usize = 64;
        write!(f, "\"")?;
        for &b in self.0.iter().take(SHOWN_BYTES_MAX) {
            write!(f, "{}", std::ascii::escape_default(b))?;
        }
        if self.0.len() > SHOWN_BYTES_MAX {
            write!(f, "...")?;
        }
        write!(f, "\"")
    }
}
