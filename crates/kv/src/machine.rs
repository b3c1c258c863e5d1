//! The state machine: applies commands in log order and serves reads.

use std::sync::Arc;

use crate::auth::{AuthError, AuthStamp, AuthState, PermissionType};
use crate::codec::DecodeError;
use crate::members::{Member, MemberOp, Members};
use crate::mvcc::{KeyRange, KvRef, Lease, Mvcc, PutMeta, Record, Version};
use crate::quota::{Alarms, STATE_BASE_BYTES};
use crate::session::{kept_response, SessionCheck, Sessions};
use crate::txn_check::check_branch_keys;
use crate::types::*;

/// Limits and session rules. Part of the replicated state: every replica
/// must start from the same `Config`, and a snapshot carries it, so a
/// restored replica keeps the rules the cluster runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// A session untouched for more than this many log entries (by log index
    /// distance) is dropped.
    pub session_idle_entries_max: u64,
    /// Most sessions open; registering one more is refused
    /// ([`KvError::TooManySessions`]) until one expires.
    pub sessions_max: u64,
    /// Longest key accepted, in bytes.
    pub key_bytes_max: u64,
    /// Longest value accepted (also after an append), in bytes.
    pub value_bytes_max: u64,
    /// Most compares, and most operations per branch, in one transaction
    /// (etcd's `--max-txn-ops`).
    pub txn_ops_max: u64,
    /// History entries that background pruning of compacted revisions
    /// visits per applied command; bounds the extra apply latency a
    /// compaction causes.
    pub prune_entries_per_apply: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            session_idle_entries_max: 100_000,
            sessions_max: 10_000,
            key_bytes_max: 32 * 1024,
            value_bytes_max: 1536 * 1024,
            txn_ops_max: 128,
            prune_entries_per_apply: 1024,
        }
    }
}

impl Config {
    /// Why the config is unusable, if it is.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.sessions_max == 0 {
            return Err("sessions_max must be at least 1");
        }
        if self.key_bytes_max == 0 {
            return Err("key_bytes_max must be at least 1");
        }
        if self.txn_ops_max == 0 {
            return Err("txn_ops_max must be at least 1");
        }
        if self.prune_entries_per_apply == 0 {
            return Err("prune_entries_per_apply must be at least 1");
        }
        Ok(())
    }
}

/// The replicated key-value state. See the crate docs for the contract.
///
/// `Clone` is O(1): the maps are persistent and share structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateMachine {
    pub(crate) config: Config,
    pub(crate) applied_index: u64,
    pub(crate) mvcc: Mvcc,
    pub(crate) sessions: Sessions,
    pub(crate) alarms: Alarms,
    pub(crate) auth: AuthState,
    /// Behind an `Arc` (copied on write): it changes rarely, and keeps the state small.
    pub(crate) members: Arc<Members>,
}

/// Revision of an empty store, as in etcd (the first write makes 2).
pub const INITIAL_REVISION: u64 = 1;

impl StateMachine {
    /// An empty state machine.
    ///
    /// # Panics
    /// If `config` fails [`Config::check`] (a programming error).
    pub fn new(config: Config) -> Self {
        if let Err(why) = config.check() {
            panic!("invalid kv config: {why}");
        }
        StateMachine {
            config,
            applied_index: 0,
            mvcc: Mvcc { revision: INITIAL_REVISION, ..Mvcc::default() },
            sessions: Sessions::default(),
            alarms: Alarms::default(),
            auth: AuthState::default(),
            members: Arc::default(),
        }
    }

    /// Applies the committed log entry at `index` holding an encoded
    /// [`Command`]. Bytes that do not decode give
    /// [`KvError::MalformedCommand`] on every replica alike. (The member driver, `node`,
    /// decodes committed entries itself and stops at one it cannot decode: in a live
    /// cluster that is a newer build's command, which other members execute.)
    ///
    /// # Panics
    /// If `index` is not above [`applied_index`](Self::applied_index): the
    /// driver must apply in log order, each entry once.
    pub fn apply(&mut self, index: u64, entry: &[u8]) -> Response {
        match Command::decode(entry) {
            Ok(command) => self.apply_command(index, &command),
            Err(e) => {
                self.begin_apply(index);
                Response::Error(malformed(e))
            }
        }
    }

    /// Applies an already decoded command; same contract as
    /// [`apply`](Self::apply).
    pub fn apply_command(&mut self, index: u64, command: &Command) -> Response {
        self.begin_apply(index);
        if command.op == Op::RegisterSession {
            return match self.sessions.register(index, self.config.sessions_max) {
                Ok(client_id) => Response::SessionRegistered { client_id },
                Err(e) => Response::Error(e),
            };
        }
        let Some(id) = command.request_id else {
            if let Err(e) = self.check_auth(command) {
                return Response::Error(KvError::Auth(e));
            }
            return self.execute(command.auth.as_ref(), &command.op);
        };
        match self.sessions.check(id) {
            SessionCheck::Execute => {
                // A refusal does not use up the sequence number: the member
                // checks again under the new auth state and retries it.
                if let Err(e) = self.check_auth(command) {
                    return Response::Error(KvError::Auth(e));
                }
                let response = self.execute(command.auth.as_ref(), &command.op);
                let kept = kept_response(id, &response, self.mvcc.revision);
                let executed = Some((id.seq, kept));
                self.sessions.touch(id.client_id, index, executed);
                response
            }
            SessionCheck::Replay(response) => {
                self.sessions.touch(id.client_id, index, None);
                Response::clone(&response)
            }
            SessionCheck::Reject(e) => Response::Error(e),
        }
    }

    /// etcd's apply-time permission check (its `authApplierV3`): a stamped
    /// command must still be allowed under the auth state of its index.
    /// Auth commands check their caller themselves ([`AuthState::apply`]).
    fn check_auth(&self, command: &Command) -> Result<(), AuthError> {
        let (Some(stamp), true) = (&command.auth, self.auth.enabled) else { return Ok(()) };
        let a = &self.auth;
        match &command.op {
            Op::Put(p) => {
                a.check_put(stamp, p)?;
                self.check_lease_keys(stamp, p.lease)
            }
            Op::Range(r) => a.check_read(stamp, r),
            Op::Get { key } => a.check_range(stamp, key, &[], PermissionType::Read),
            Op::Append { key, .. } => a.check_range(stamp, key, &[], PermissionType::ReadWrite),
            Op::DeleteRange(d) => a.check_delete(stamp, d),
            Op::Txn(t) => a.check_txn(stamp, t),
            Op::LeaseRevoke { id } => self.check_lease_keys(stamp, *id),
            Op::Compact { .. }
            | Op::RegisterSession
            | Op::LeaseGrant { .. }
            | Op::LeaseKeepAlive { .. }
            | Op::LeaseTimeToLive { .. }
            | Op::Alarm { .. }
            | Op::Member(_)
            | Op::Auth(_) => Ok(()),
        }
    }

    /// etcd's `checkLeasePuts`: attaching to or revoking a lease needs write
    /// permission on every key already attached to it.
    fn check_lease_keys(&self, stamp: &AuthStamp, lease: i64) -> Result<(), AuthError> {
        let Some(l) = self.mvcc.leases.get(&lease) else { return Ok(()) };
        l.keys.iter().try_for_each(|k| self.auth.check_range(stamp, k, &[], PermissionType::Write))
    }

    /// Applies the member-table part of the Raft configuration change at log `index`
    /// (its context: Add, Remove or Promote; see [`crate::members`]). Returns the
    /// member's record afterwards (a removed member's last record), or `None` if the
    /// change does not apply to the table as it is; then nothing changes, on every
    /// replica alike. Same ordering contract as [`apply`](Self::apply).
    pub fn apply_member_change(&mut self, index: u64, op: &MemberOp) -> Option<Member> {
        self.begin_apply(index);
        Arc::make_mut(&mut self.members).apply(op)
    }

    /// Fills the member table of a new cluster with its initial members (the same on
    /// every member, so this is state at index 0). Does nothing once the table holds
    /// anything (a member or a removed id).
    pub fn seed_members(&mut self, members: &[Member]) {
        if self.members.is_empty() {
            self.members = Arc::new(Members::from_parts(members.iter().cloned(), &[]));
        }
    }

    /// Empties the member table and forgets removed ids: a restored backup starts a new
    /// cluster whose members are not the old one's.
    pub fn clear_members(&mut self) {
        self.members = Arc::default();
    }

    /// The member table (members and removed ids).
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// The replicated auth state (users, roles, permissions, enabled flag).
    pub fn auth(&self) -> &AuthState {
        &self.auth
    }

    fn begin_apply(&mut self, index: u64) {
        assert!(
            index > self.applied_index,
            "log index {index} applied after {}: entries must be applied once, in order",
            self.applied_index
        );
        self.applied_index = index;
        // Both steps depend only on the index and the state, so every replica
        // expires the same sessions and prunes the same history.
        self.sessions.expire(index, self.config.session_idle_entries_max);
        self.mvcc.prune_step(self.config.prune_entries_per_apply);
    }

    /// Log index of the last applied entry (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Current store revision.
    pub fn revision(&self) -> u64 {
        self.mvcc.revision
    }

    /// Oldest readable revision (0 before any compaction).
    pub fn compact_revision(&self) -> u64 {
        self.mvcc.compact_revision
    }

    /// The rules this state machine runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of open client sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Estimated bytes the state holds: a fixed base, every stored version of every
    /// key (key, value and a fixed overhead) and every live lease. Kept up to date in O(1) per
    /// change and the same on every replica; what the space quota is measured on
    /// (see [`space_cost`](crate::space_cost)). Shrinks as compaction prunes history.
    pub fn size_bytes(&self) -> u64 {
        STATE_BASE_BYTES + self.mvcc.size_bytes
    }

    /// The raised alarms, by member id then type.
    pub fn alarms(&self) -> Vec<AlarmMember> {
        self.alarms.raised.iter().copied().collect()
    }

    /// Whether `alarm` is raised for any member.
    pub fn alarm_raised(&self, alarm: AlarmType) -> bool {
        self.alarms.raised.iter().any(|a| a.alarm == alarm)
    }

    /// Number of stored key versions (live, historical and tombstones); for
    /// metrics.
    pub fn history_len(&self) -> usize {
        self.mvcc.entries.len()
    }

    /// Range read at the applied state, for reads served outside the log
    /// (ReadIndex or lease reads): same semantics as [`Op::Range`].
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, KvError> {
        check_key(&self.config, &request.key)?;
        let mut response = range(&self.mvcc, request, self.mvcc.revision)?;
        response.revision = self.mvcc.revision;
        Ok(response)
    }

    /// The current key-value of `key`, if it exists.
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.mvcc.get_at(key, self.mvcc.revision).map(|kv| kv.to_key_value(true))
    }

    /// Every live lease as `(id, granted TTL in seconds)`, by id.
    pub fn leases(&self) -> Vec<(i64, i64)> {
        self.mvcc.leases.iter().map(|(id, l)| (*id, l.ttl_secs)).collect()
    }

    /// Number of live leases.
    pub fn lease_count(&self) -> usize {
        self.mvcc.leases.len()
    }

    /// The granted TTL of lease `id`, if it exists.
    pub fn lease_ttl(&self, id: i64) -> Option<i64> {
        self.mvcc.leases.get(&id).map(|l| l.ttl_secs)
    }

    /// Lease `id` as [`Op::LeaseTimeToLive`] answers it: the granted TTL as
    /// both TTLs (no clock here), and the attached keys if asked for.
    pub fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTtlResponse, KvError> {
        let lease = self.mvcc.leases.get(&id).ok_or(KvError::LeaseNotFound { id })?;
        Ok(LeaseTtlResponse {
            revision: self.mvcc.revision,
            id,
            ttl_secs: lease.ttl_secs,
            granted_ttl_secs: lease.ttl_secs,
            keys: if keys { lease.keys.iter().map(|k| k.to_vec()).collect() } else { Vec::new() },
        })
    }

    /// The events (puts and deletes) of the keys in `key`..`range_end` (etcd's
    /// range conventions) at revisions `from..=to`, for watches. Visits about
    /// `budget` changes at most, never splitting a revision; the batch says
    /// where to continue. `to` is capped at the current revision.
    ///
    /// Events of one revision come in the order the transaction made them.
    ///
    /// `from` below the compact revision gives [`KvError::Compacted`]. From
    /// the compact revision itself the watch sees what etcd's compaction keeps
    /// of it: the puts (deletes at that revision are compacted away), without
    /// previous key-values (the revision before is compacted).
    ///
    /// Bounds changes only; [`StateMachine::events_within`] bounds bytes too.
    pub fn events(
        &self,
        key: &[u8],
        range_end: &[u8],
        from: u64,
        to: u64,
        prev_kv: bool,
        budget: u64,
    ) -> Result<EventBatch, KvError> {
        let limits = EventLimits { changes: budget, bytes: u64::MAX };
        self.events_within(key, range_end, from, to, prev_kv, limits)
    }

    /// [`StateMachine::events`] under both bounds of `limits`: the batch also
    /// stops (between revisions) once its events hold `limits.bytes` of keys
    /// and values, so a catch-up over large values holds bounded memory. A
    /// revision is never split, and the first one always comes whole, however
    /// large.
    pub fn events_within(
        &self,
        key: &[u8],
        range_end: &[u8],
        from: u64,
        to: u64,
        prev_kv: bool,
        limits: EventLimits,
    ) -> Result<EventBatch, KvError> {
        let m = &self.mvcc;
        if from < m.compact_revision {
            return Err(KvError::Compacted {
                requested: from,
                compact_revision: m.compact_revision,
            });
        }
        let to = to.min(m.revision);
        if from > to {
            return Ok(EventBatch {
                events: Vec::new(),
                next_revision: from,
                revision: m.revision,
            });
        }
        let range = KeyRange::new(key, range_end);
        let limits = EventLimits { changes: limits.changes.max(1), ..limits };
        let (events, next_revision) = m.events(range, from, to, prev_kv, limits);
        Ok(EventBatch { events, next_revision, revision: m.revision })
    }

    fn execute(&mut self, stamp: Option<&AuthStamp>, op: &Op) -> Response {
        if let Op::Auth(a) = op {
            if let Some(refused) = self.alarms.refusal(op) {
                return Response::Error(refused);
            }
            return match self.auth.apply(stamp, a) {
                Ok(answer) => Response::Auth(self.auth.response(self.mvcc.revision, a, answer)),
                Err(e) => Response::Error(KvError::Auth(e)),
            };
        }
        match self.try_execute(op) {
            Ok(response) => response,
            Err(e) => Response::Error(e),
        }
    }

    fn try_execute(&mut self, op: &Op) -> Result<Response, KvError> {
        if let Some(refused) = self.alarms.refusal(op) {
            return Err(refused);
        }
        let cfg = self.config;
        let m = &mut self.mvcc;
        match op {
            Op::Put(r) => {
                check_put(&cfg, r)?;
                let mut p = Pending::begin(m);
                let mut response = put(m, &mut p, r)?;
                p.commit(m);
                response.revision = m.revision;
                Ok(Response::Put(response))
            }
            Op::Append { key, suffix } => {
                check_key(&cfg, key)?;
                let mut p = Pending::begin(m);
                let mut response = append(&cfg, m, &mut p, key, suffix)?;
                p.commit(m);
                response.revision = m.revision;
                Ok(Response::Append(response))
            }
            Op::Range(r) => {
                check_key(&cfg, &r.key)?;
                let mut response = range(m, r, m.revision)?;
                response.revision = m.revision;
                Ok(Response::Range(response))
            }
            Op::Get { key } => {
                check_key(&cfg, key)?;
                Ok(Response::Get(GetResponse {
                    revision: m.revision,
                    kv: m.get_at(key, m.revision).map(|kv| kv.to_key_value(true)),
                }))
            }
            Op::DeleteRange(r) => {
                check_key(&cfg, &r.key)?;
                let mut p = Pending::begin(m);
                let mut response = delete_range(m, &mut p, r);
                p.commit(m);
                response.revision = m.revision;
                Ok(Response::DeleteRange(response))
            }
            Op::Txn(t) => execute_txn(&cfg, m, t).map(Response::Txn),
            Op::Compact { revision } => {
                let revision = *revision;
                if revision <= m.compact_revision {
                    return Err(KvError::Compacted {
                        requested: revision,
                        compact_revision: m.compact_revision,
                    });
                }
                if revision > m.revision {
                    return Err(KvError::FutureRevision {
                        requested: revision,
                        current: m.revision,
                    });
                }
                m.compact(revision);
                m.prune_step(cfg.prune_entries_per_apply);
                Ok(Response::Compact(CompactResponse { revision: m.revision }))
            }
            Op::LeaseGrant { id, ttl_secs } => {
                if *ttl_secs > LEASE_TTL_MAX_SECS {
                    return Err(KvError::LeaseTtlTooLarge { ttl_secs: *ttl_secs });
                }
                let id = match *id {
                    // The log index is unique and the same on every replica;
                    // step over ids a client chose.
                    0 => {
                        let mut id = i64::try_from(self.applied_index).unwrap_or(1).max(1);
                        while m.leases.contains_key(&id) {
                            id += 1;
                        }
                        id
                    }
                    id if m.leases.contains_key(&id) => return Err(KvError::LeaseExists { id }),
                    id => id,
                };
                let ttl_secs = (*ttl_secs).max(1);
                m.grant_lease(id, Lease { ttl_secs, keys: Default::default() });
                Ok(Response::LeaseGranted(LeaseGrantResponse {
                    revision: m.revision,
                    id,
                    ttl_secs,
                }))
            }
            Op::LeaseRevoke { id } => {
                let lease = m.revoke_lease(*id).ok_or(KvError::LeaseNotFound { id: *id })?;
                // One revision for all the keys, as a DeleteRange over them.
                // In key order, as etcd sorts them, so sub-revisions agree.
                // The newest version of each of its keys carries this lease (what
                // `leases` records), so no write seeks it.
                let mut p = Pending::begin(m);
                for key in lease.keys.iter() {
                    p.write_over(m, key.clone(), Record::Tombstone, *id);
                }
                p.commit(m);
                Ok(Response::LeaseRevoked(LeaseRevokeResponse {
                    revision: m.revision,
                    id: *id,
                    deleted: lease.keys.len() as u64,
                }))
            }
            Op::LeaseKeepAlive { id } => {
                self.lease_time_to_live(*id, false).map(Response::LeaseTtl)
            }
            Op::LeaseTimeToLive { id, keys } => {
                self.lease_time_to_live(*id, *keys).map(Response::LeaseTtl)
            }
            Op::Alarm { action, member_id, alarm } => {
                let alarms = self.alarms.apply(*action, *member_id, *alarm);
                Ok(Response::Alarm(AlarmResponse { revision: self.mvcc.revision, alarms }))
            }
            Op::Member(op) => Ok(Response::Member(Arc::make_mut(&mut self.members).apply(op))),
            Op::RegisterSession => unreachable!("handled by apply_command"),
            Op::Auth(_) => unreachable!("handled by execute"),
        }
    }
}

fn malformed(e: DecodeError) -> KvError {
    KvError::MalformedCommand { detail: e.to_string() }
}

/// The revision a write transaction writes at, and how many changes it made
/// so far. Revisions bump once per transaction, and only if something changed.
struct Pending {
    rev: u64,
    /// The next change's sub-revision, which is also the number of changes
    /// made: changes are numbered in the order the transaction makes them, as
    /// etcd numbers them.
    sub: u64,
}

impl Pending {
    fn begin(m: &Mvcc) -> Self {
        Pending { rev: m.revision + 1, sub: 0 }
    }

    /// Writes the transaction's next change, to a key whose newest version the caller
    /// read at [`Pending::read_rev`] (see [`Mvcc::write_over`]): nothing in the map is
    /// newer than the pending revision, so that version is the key's newest.
    fn write_over(&mut self, m: &mut Mvcc, key: Arc<[u8]>, record: Record, newest_lease: i64) {
        m.write_over(key, self.rev, self.sub, record, newest_lease);
        self.sub += 1;
    }

    fn changed(&self) -> bool {
        self.sub > 0
    }

    /// Revision that reads inside the transaction see: its own writes.
    fn read_rev(&self) -> u64 {
        if self.changed() {
            self.rev
        } else {
            self.rev - 1
        }
    }

    fn commit(self, m: &mut Mvcc) {
        if self.changed() {
            assert_eq!(self.rev, m.revision + 1);
            m.revision = self.rev;
        }
    }
}

// ---- validation: static checks done before any change ----

fn check_key(cfg: &Config, key: &[u8]) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if key.len() as u64 > cfg.key_bytes_max {
        return Err(KvError::KeyTooLarge { len: key.len() as u64, max: cfg.key_bytes_max });
    }
    Ok(())
}

fn check_value_len(cfg: &Config, len: usize) -> Result<(), KvError> {
    if len as u64 > cfg.value_bytes_max {
        return Err(KvError::ValueTooLarge { len: len as u64, max: cfg.value_bytes_max });
    }
    Ok(())
}

fn check_put(cfg: &Config, r: &PutRequest) -> Result<(), KvError> {
    check_key(cfg, &r.key)?;
    check_value_len(cfg, r.value.len())
}

/// etcd's static checks of a transaction: its operation count is the largest of its
/// compares, success and failure operations, at most `ops_max`; a nested transaction
/// gets only what its parent leaves (`ops_max` minus the parent's count).
fn check_txn(cfg: &Config, t: &TxnRequest, depth: u64, ops_max: u64) -> Result<(), KvError> {
    if depth > TXN_DEPTH_MAX {
        return Err(KvError::TxnTooDeep { max: TXN_DEPTH_MAX });
    }
    let count =
        [t.compare.len(), t.success.len(), t.failure.len()].into_iter().max().unwrap_or(0) as u64;
    if count > ops_max {
        return Err(KvError::TooManyOps { count, max: ops_max });
    }
    for c in &t.compare {
        check_key(cfg, &c.key)?;
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            RequestOp::Put(r) => check_put(cfg, r)?,
            RequestOp::Range(r) => check_key(cfg, &r.key)?,
            RequestOp::DeleteRange(r) => check_key(cfg, &r.key)?,
            RequestOp::Txn(n) => check_txn(cfg, n, depth + 1, ops_max - count)?,
        }
    }
    Ok(())
}

impl Config {
    /// The static checks apply runs on a transaction before it changes
    /// anything: operation counts, nesting depth, key and value sizes, and
    /// etcd's duplicate-key rule, in O(n log n). A server runs them at the
    /// edge so that a transaction apply would refuse never reaches the log;
    /// apply runs them again (the log is not trusted).
    pub fn check_txn(&self, t: &TxnRequest) -> Result<(), KvError> {
        check_txn(self, t, 1, self.txn_ops_max)?;
        check_branch_keys(&t.success)?;
        check_branch_keys(&t.failure)
    }
}

// ---- operations ----

/// Reads the revision a range asks for, checking it against compaction.
fn read_revision(m: &Mvcc, requested: u64, current: u64) -> Result<u64, KvError> {
    if requested == 0 {
        return Ok(current);
    }
    if requested > current {
        return Err(KvError::FutureRevision { requested, current });
    }
    if requested < m.compact_revision {
        return Err(KvError::Compacted { requested, compact_revision: m.compact_revision });
    }
    Ok(requested)
}

/// etcd's range: count every key in the range; filter, sort, then cut to
/// `limit`. Counting copies nothing; only key-values that can be returned
/// are copied out: without a sort, the first `limit` (one more with filters,
/// to know whether more pass). `revision` in the result is left for the
/// caller to set.
fn range(m: &Mvcc, r: &RangeRequest, current: u64) -> Result<RangeResponse, KvError> {
    let rev = read_revision(m, r.revision, current)?;
    let filtered = r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    // As etcd: results come in key order, so sorting by key ascending is a
    // no-op, and a non-key target without an order sorts ascending.
    let order = match (r.sort_target, r.sort_order) {
        (SortTarget::Key, SortOrder::Ascend) => SortOrder::None,
        (SortTarget::Key, order) => order,
        (_, SortOrder::None) => SortOrder::Ascend,
        (_, order) => order,
    };
    let keep_all = filtered || order != SortOrder::None;
    let limit = if r.limit == 0 { u64::MAX } else { r.limit };
    let kept_max = match (order, filtered) {
        (SortOrder::None, false) => limit,
        (SortOrder::None, true) => limit.saturating_add(1),
        _ => u64::MAX,
    };
    let passes = |kv: &KvRef<'_>| {
        (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
            && (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
            && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
            && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
    };
    let mut kvs = Vec::new();
    let mut count = 0u64;
    m.scan_at(KeyRange::new(&r.key, &r.range_end), rev, |kv| {
        count += 1;
        if !r.count_only && (kvs.len() as u64) < kept_max && passes(&kv) {
            kvs.push(kv.to_key_value(!r.keys_only));
        }
        true
    });
    if order != SortOrder::None {
        // Stable, so ties stay in key order: deterministic on every replica.
        kvs.sort_by(|a, b| {
            let ord = match r.sort_target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            if order == SortOrder::Descend {
                ord.reverse()
            } else {
                ord
            }
        });
    }
    let more = if keep_all {
        let more = kvs.len() as u64 > limit;
        kvs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        more
    } else {
        !r.count_only && count > limit
    };
    Ok(RangeResponse { revision: 0, kvs, more, count })
}

/// What a write needs from the previous version of a key: handles to its shared
/// key and version, and the client's copy when it asked for one.
struct Prev {
    key: Arc<[u8]>,
    put: Version,
    kv: KeyValue,
}

impl Prev {
    fn meta(&self) -> &PutMeta {
        self.put.meta()
    }
}

fn prev_of(m: &Mvcc, key: &[u8], rev: u64, want_kv: bool) -> Option<Prev> {
    m.get_at(key, rev).map(|kv| Prev {
        key: kv.key.clone(),
        put: kv.put.clone(),
        kv: if want_kv { kv.to_key_value(true) } else { KeyValue::default() },
    })
}

/// Writes a new version of `key` after `prev` (the key as read at
/// [`Pending::read_rev`], its newest version), keeping create revision and
/// counting the version up, or starting a new generation.
fn write_put(
    m: &mut Mvcc,
    p: &mut Pending,
    key: &[u8],
    prev: Option<&Prev>,
    value: &[u8],
    lease: i64,
) {
    let (key, create_revision, version) = match prev {
        // Reuse the stored key so all versions of a key share one allocation.
        Some(prev) => (prev.key.clone(), prev.meta().create_revision, prev.meta().version + 1),
        None => (Arc::from(key), p.rev, 1),
    };
    let record = Record::Put(Version::new(value, PutMeta { create_revision, version, lease }));
    p.write_over(m, key, record, prev.map_or(0, |prev| prev.meta().lease));
}

fn put(m: &mut Mvcc, p: &mut Pending, r: &PutRequest) -> Result<PutResponse, KvError> {
    if r.lease != 0 && !r.ignore_lease && !m.leases.contains_key(&r.lease) {
        return Err(KvError::LeaseNotFound { id: r.lease });
    }
    let prev = prev_of(m, &r.key, p.read_rev(), r.prev_kv);
    let (value, lease): (&[u8], i64) = match (&prev, r.ignore_value || r.ignore_lease) {
        (None, true) => return Err(KvError::KeyNotFound { key: r.key.clone() }),
        (Some(prev), true) => (
            if r.ignore_value { prev.put.value() } else { &r.value },
            if r.ignore_lease { prev.meta().lease } else { r.lease },
        ),
        (_, false) => (&r.value, r.lease),
    };
    write_put(m, p, &r.key, prev.as_ref(), value, lease);
    Ok(PutResponse { revision: 0, prev_kv: prev.filter(|_| r.prev_kv).map(|prev| prev.kv) })
}

fn append(
    cfg: &Config,
    m: &mut Mvcc,
    p: &mut Pending,
    key: &[u8],
    suffix: &[u8],
) -> Result<PutResponse, KvError> {
    let prev = prev_of(m, key, p.read_rev(), false);
    let old: &[u8] = prev.as_ref().map_or(&[], |prev| prev.put.value());
    check_value_len(cfg, old.len() + suffix.len())?;
    let value = [old, suffix].concat();
    let lease = prev.as_ref().map_or(0, |prev| prev.meta().lease);
    write_put(m, p, key, prev.as_ref(), &value, lease);
    Ok(PutResponse { revision: 0, prev_kv: None })
}

fn delete_range(m: &mut Mvcc, p: &mut Pending, r: &DeleteRangeRequest) -> DeleteRangeResponse {
    // Each key with the lease of its newest version (the one read here: nothing is
    // newer than the pending revision), so the write needs no second seek for it.
    let mut doomed = Vec::new();
    let mut prev_kvs = Vec::new();
    m.scan_at(KeyRange::new(&r.key, &r.range_end), p.read_rev(), |kv| {
        doomed.push((kv.key.clone(), kv.lease));
        if r.prev_kv {
            prev_kvs.push(kv.to_key_value(true));
        }
        true
    });
    // In key order, each its own sub-revision, as etcd deletes a range. A
    // delete that finds nothing changes nothing and keeps the revision.
    for (key, lease) in &doomed {
        p.write_over(m, key.clone(), Record::Tombstone, *lease);
    }
    DeleteRangeResponse { revision: 0, deleted: doomed.len() as u64, prev_kvs }
}

fn compare_holds(m: &Mvcc, c: &Compare, rev: u64) -> bool {
    let check = |kv: Option<KvRef<'_>>| {
        let ord = match &c.target {
            CompareTarget::Version(v) => kv.map_or(0, |kv| kv.version).cmp(v),
            CompareTarget::CreateRevision(v) => kv.map_or(0, |kv| kv.create_revision).cmp(v),
            CompareTarget::ModRevision(v) => kv.map_or(0, |kv| kv.mod_revision).cmp(v),
            CompareTarget::Lease(v) => kv.map_or(0, |kv| kv.lease).cmp(v),
            CompareTarget::Value(v) => match kv {
                // etcd: a value compare on a missing key always fails.
                None => return false,
                Some(kv) => kv.value[..].cmp(&v[..]),
            },
        };
        match c.result {
            CompareResult::Equal => ord.is_eq(),
            CompareResult::NotEqual => ord.is_ne(),
            CompareResult::Greater => ord.is_gt(),
            CompareResult::Less => ord.is_lt(),
        }
    };
    let mut any = false;
    let mut all = true;
    m.scan_at(KeyRange::new(&c.key, &c.range_end), rev, |kv| {
        any = true;
        all = check(Some(kv));
        all
    });
    if any {
        all
    } else {
        check(None)
    }
}

/// Evaluates the compares of `t` and of every nested transaction on the
/// chosen path, depth first in op order, all against revision `rev` (the
/// state before the transaction, as etcd does).
fn txn_path(m: &Mvcc, t: &TxnRequest, rev: u64, path: &mut Vec<bool>) {
    let ok = t.compare.iter().all(|c| compare_holds(m, c, rev));
    path.push(ok);
    for op in if ok { &t.success } else { &t.failure } {
        if let RequestOp::Txn(nested) = op {
            txn_path(m, nested, rev, path);
        }
    }
}

fn execute_txn(cfg: &Config, m: &mut Mvcc, t: &TxnRequest) -> Result<TxnResponse, KvError> {
    cfg.check_txn(t)?;
    let mut path = Vec::new();
    txn_path(m, t, m.revision, &mut path);
    // O(1) thanks to structural sharing; lets a failure half-way (a put with
    // ignore_value on a missing key, a range at a compacted revision) undo
    // the earlier writes, so a transaction is all or nothing.
    let before = m.clone();
    let mut p = Pending::begin(m);
    let mut path = path.into_iter();
    match run_txn(m, &mut p, t, &mut path) {
        Ok(mut response) => {
            assert!(path.next().is_none(), "txn path not fully consumed");
            p.commit(m);
            set_txn_revision(&mut response, m.revision);
            Ok(response)
        }
        Err(e) => {
            *m = before;
            Err(e)
        }
    }
}

fn run_txn(
    m: &mut Mvcc,
    p: &mut Pending,
    t: &TxnRequest,
    path: &mut impl Iterator<Item = bool>,
) -> Result<TxnResponse, KvError> {
    let succeeded = path.next().expect("txn path covers every nested txn");
    let mut responses = Vec::new();
    for op in if succeeded { &t.success } else { &t.failure } {
        responses.push(match op {
            RequestOp::Put(r) => ResponseOp::Put(put(m, p, r)?),
            RequestOp::Range(r) => ResponseOp::Range(range(m, r, p.read_rev())?),
            RequestOp::DeleteRange(r) => ResponseOp::DeleteRange(delete_range(m, p, r)),
            RequestOp::Txn(nested) => ResponseOp::Txn(run_txn(m, p, nested, path)?),
        });
    }
    Ok(TxnResponse { revision: 0, succeeded, responses })
}

/// Every response inside a transaction carries the transaction's revision.
fn set_txn_revision(t: &mut TxnResponse, revision: u64) {
    t.revision = revision;
    for r in &mut t.responses {
        match r {
            ResponseOp::Put(r) => r.revision = revision,
            ResponseOp::Range(r) => r.revision = revision,
            ResponseOp::DeleteRange(r) => r.revision = revision,
            ResponseOp::Txn(r) => set_txn_revision(r, revision),
        }
    }
}
