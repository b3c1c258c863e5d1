//! The member driver: core + store + state machine + pending requests.

use crate::members::{
    new_member_id, LeaderView, Member, MemberChange, MemberChanged, MemberFailure, PendingMember,
};
use kv::{
    AlarmAction, AlarmType, Command, KvError, LeaseTtlResponse, MemberOp, Op, RangeRequest,
    Response, StateMachine,
};
use raft::{
    ConfChange, ConfChangeKind, ConfChangeSingle, Entry, EntryKind, HardState, Index, Message,
    MessageBody, NodeId, ProposeError, Raft, ReadError, Restored, Role, Snapshot, SnapshotMeta,
    Term,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

/// The durable half of a member: what the core hands out to persist.
///
/// Writes and syncs are separate so that several Readies share one sync (group commit),
/// and so the simulator can crash a member between a write and its sync.
pub trait LogStore {
    /// Writes the persist part of one Ready, not yet durable: `hard_state` if set, then
    /// `snapshot` if set (one installed from the leader: it replaces the whole log), then
    /// `entries` (entries whose index is already stored replace the stored log from there).
    fn append(
        &mut self,
        hard_state: Option<&HardState>,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
    ) -> Result<(), NodeError>;

    /// Makes everything written so far durable (one fsync).
    fn sync(&mut self) -> Result<(), NodeError>;

    /// Makes a snapshot the service took durable (everything written before it too); the
    /// log up to it may then be dropped.
    fn persist_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), NodeError>;

    /// Adopts a snapshot whose file a [`SnapshotJob`] already wrote durably elsewhere.
    fn adopt_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), NodeError>;
}

/// A snapshot to serialize and write off the node's thread (see
/// [`NodeConfig::background_snapshots`]): the state machine view is frozen in O(1), so
/// apply goes on while the job runs. Hand the result to [`Node::finish_snapshot`].
pub struct SnapshotJob {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The frozen state.
    pub view: kv::SnapshotView,
}

impl SnapshotJob {
    /// Serializes the view into a snapshot (the slow part).
    pub fn build(&self) -> Snapshot {
        let mut data = Vec::new();
        self.view.write_to(&mut data).expect("writing to memory cannot fail");
        Snapshot { meta: self.meta.clone(), data: data.into() }
    }

    /// Serializes the view straight into its snapshot file through `disk` (see
    /// `storage::write_snapshot_file_with`), never holding the bytes whole in memory;
    /// returns their length. Hand the result to [`Node::finish_snapshot_file`].
    pub fn write_file<D: storage::Disk>(&self, disk: &mut D) -> Result<u64, storage::StorageError> {
        storage::write_snapshot_file_with(disk, &self.meta, |mut w| {
            self.view.write_to(&mut w).map(|_| ())
        })
    }
}

/// Settings of one member.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The consensus core's settings.
    pub raft: raft::Config,
    /// The voters of a new cluster (ignored when the store holds a snapshot).
    pub voters: BTreeSet<NodeId>,
    /// State machine limits; must be the same on every member.
    pub kv: kv::Config,
    /// Take a snapshot once this many entries were applied since the last one (0: never).
    pub snapshot_interval_entries: u64,
    /// A request not answered within this many ticks gets [`RequestError::Timeout`].
    pub request_timeout_ticks: u64,
    /// Report appended and applied entries in [`Output::events`] (for the simulator's
    /// checkers).
    pub record_events: bool,
    /// Hand snapshots out as [`Output::snapshot_job`] to build and write on another
    /// thread, instead of serializing them inline (which stalls apply for the time it
    /// takes to write the whole state).
    pub background_snapshots: bool,
    /// The space quota in bytes of [`StateMachine::size_bytes`] (etcd's
    /// `--quota-backend-bytes`); `None`: no quota. See [`Node::submit`].
    pub quota_bytes: Option<u64>,
    /// Hand reads out as [`Output::reads`] once they may be served (a serializable
    /// read at once, a linearizable one once its ReadIndex is applied), for the driver
    /// to answer from a view of the state on another thread, instead of answering them
    /// inline (which holds the driver's thread for as long as a read takes: a range
    /// over a million keys holds it for most of a second).
    pub hand_out_reads: bool,
    /// Refuse new writes with [`RequestError::Busy`] while the commit index is more
    /// than this many entries ahead of the applied index (etcd's
    /// `maxGapBetweenApplyAndCommitIndex`, 5000): a member that cannot apply as fast
    /// as it commits stops taking more.
    pub apply_gap_entries_max: u64,
    /// Hand committed entries (and snapshots from the leader to install) out as
    /// [`Output::apply`] batches for an [`Applier`] on another thread, and take its
    /// [`Applied`] reports back through [`Node::on_applied`], instead of applying them
    /// inline (which holds the thread that heartbeats for as long as the apply takes:
    /// a delete range over a million keys holds it for about a second).
    pub apply_apart: bool,
    /// This member joins an existing cluster (etcd's `--initial-cluster-state
    /// existing`) with an empty store: it starts with no configuration and no state,
    /// and takes no log entry before the leader's snapshot gives it both (the
    /// configuration the cluster was born with is not in the log). Ignored once the
    /// store holds a snapshot.
    pub joining: bool,
    /// The members of a new cluster, the same on every member (from
    /// `--initial-cluster`): the member table starts with them (state at index 0).
    /// Ignored when joining, and once the state holds a member table.
    pub initial_members: Vec<Member>,
    /// For simulators and tests: the id to give a member added at these peer URLs
    /// (`None`, or an answer of `None` or of an id in use or removed: an id derived
    /// from a hash, as in production).
    pub new_member_id: Option<MemberIdHook>,
}

/// See [`NodeConfig::new_member_id`]: peer URLs of an added member → the id to give it.
pub type MemberIdHook = fn(&[String]) -> Option<NodeId>;

impl NodeConfig {
    /// Defaults for member `id` of a cluster of `voters`.
    pub fn new(id: NodeId, voters: BTreeSet<NodeId>) -> Self {
        NodeConfig {
            raft: raft::Config::new(id),
            kv: kv::Config::default(),
            snapshot_interval_entries: 10_000,
            request_timeout_ticks: 100,
            record_events: false,
            background_snapshots: false,
            quota_bytes: None,
            hand_out_reads: false,
            apply_gap_entries_max: APPLY_GAP_ENTRIES_MAX,
            apply_apart: false,
            joining: false,
            initial_members: voters.iter().map(|&id| Member { id, ..Member::default() }).collect(),
            new_member_id: None,
            voters,
        }
    }
}

/// etcd's largest gap between the commit and applied indices before new writes are
/// refused with "too many requests" (`maxGapBetweenApplyAndCommitIndex`).
pub const APPLY_GAP_ENTRIES_MAX: u64 = 5000;

/// Most committed entries in one [`ApplyBatch`]: a report comes back at least this often
/// while the applier catches up, so answers and reads are not held for a whole backlog.
pub const APPLY_BATCH_ENTRIES_MAX: usize = 1024;

/// Bytes of entry data past which an [`ApplyBatch`] stops (it holds at least one entry,
/// however large).
pub const APPLY_BATCH_BYTES_MAX: u64 = 4 << 20;

/// Most [`ApplyBatch`]es handed out and not yet reported: two, so the applier starts on
/// the next batch while the node takes in the report of the last one. This bounds the
/// queue between the node and its applier; the committed entries waiting behind it are
/// the node's own log (already in memory, and kept until a snapshot covers them).
pub const APPLY_BATCHES_IN_FLIGHT_MAX: usize = 2;

/// The driver's id for a client request; unique among this member's open requests.
pub type RequestId = u64;

/// A read served outside the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadQuery {
    /// etcd Range.
    Range(RangeRequest),
    /// One key's current value.
    Get(Vec<u8>),
}

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A command through the log (writes; also reads that must go through the log).
    Write(Command),
    /// A write already encoded for the log ([`Request::encoded`]): the thread that
    /// submits it neither encodes the command nor frees its decoded form, which for
    /// the largest accepted transaction takes tens of milliseconds.
    Encoded(EncodedWrite),
    /// A read: linearizable (ReadIndex) unless `serializable`, which answers from the
    /// local state at once and may be stale.
    Read {
        /// What to read.
        query: ReadQuery,
        /// Serve locally, possibly stale.
        serializable: bool,
    },
}

/// A write command in its log encoding, with the one figure the node needs from its
/// decoded form: its [`kv::space_cost`] (for the quota). Built by [`Request::encoded`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedWrite {
    data: Vec<u8>,
    space_cost: u64,
}

impl EncodedWrite {
    /// Encodes `cmd` for the log (O(size of the command)).
    pub fn new(cmd: &Command) -> Self {
        EncodedWrite { data: cmd.encode(), space_cost: kv::space_cost(&cmd.op) }
    }

    /// Size of the encoding in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True if the encoding is empty (never, for a real command).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl Request {
    /// `Write(cmd)` with the command encoded here, on the caller's thread, so the node
    /// thread only proposes the bytes. Lease keep-alives and time-to-live queries are
    /// answered by the leader without the log, so they stay decoded.
    pub fn encoded(cmd: Command) -> Request {
        match cmd.op {
            Op::LeaseKeepAlive { .. } | Op::LeaseTimeToLive { .. } => Request::Write(cmd),
            _ => Request::Encoded(EncodedWrite::new(&cmd)),
        }
    }
}

/// Why a request was not answered with a result. All are for the client to retry (the
/// clerk does, keeping its session sequence number, so a write executes at most once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// This member cannot serve it; `leader` is where to go, if known. A write refused
    /// so was not applied (it was never proposed, or its entry was replaced), so
    /// sending it again cannot apply it twice.
    NotLeader {
        /// The leader this member knows of.
        leader: Option<NodeId>,
    },
    /// No answer in time; the write may or may not have been applied.
    Timeout,
    /// The request is larger than a proposal may be.
    TooLarge {
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        max: u64,
    },
    /// The member has too much work queued (uncommitted data on the leader, committed
    /// entries not yet applied, or a full input queue); nothing was proposed: retry
    /// shortly. etcd's "too many requests".
    Busy,
    /// The leader could not read this write, which this member forwarded to it: the
    /// leader runs an older build that does not know the request (README, Upgrading).
    /// Nothing was proposed. etcd's "not capable".
    NotCapable,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NotLeader { leader: Some(l) } => {
                write!(f, "this member is not the leader; member {l} is")
            }
            RequestError::NotLeader { leader: None } => {
                write!(f, "no leader is known right now; retry shortly")
            }
            RequestError::Timeout => {
                write!(f, "request timed out; it may or may not have taken effect")
            }
            RequestError::TooLarge { size, max } => {
                write!(f, "request of {size} bytes exceeds the limit of {max} bytes")
            }
            RequestError::Busy => write!(f, "too many requests; retry shortly"),
            RequestError::NotCapable => write!(
                f,
                "the leader runs an older raftkv build that cannot read this request; nothing \
                 was applied: upgrade every member before using it"
            ),
        }
    }
}
impl std::error::Error for RequestError {}

/// Why a leadership transfer ([`Node::transfer_leader`]) did not happen. The texts are
/// etcd's where etcd has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferFailure {
    /// This member does not lead; only the leader can hand leadership over.
    NotLeader {
        /// The leader this member knows of.
        leader: Option<NodeId>,
    },
    /// The target is not a voting member (unknown, or a learner).
    BadTransferee(NodeId),
    /// No other voter to hand leadership to (a single-member cluster).
    NoTransferee,
    /// The target did not take over in time (the core gave up after an election
    /// timeout, or another member won the election); this member may still lead.
    TimedOut,
    /// Another transfer is under way; retry once it is over.
    InProgress,
}

impl fmt::Display for TransferFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferFailure::NotLeader { .. } => write!(f, "etcdserver: not leader"),
            TransferFailure::BadTransferee(_) => write!(f, "etcdserver: bad leader transferee"),
            TransferFailure::NoTransferee => {
                write!(f, "etcdserver: no other voting member to transfer leadership to")
            }
            TransferFailure::TimedOut => {
                write!(f, "etcdserver: request timed out, leader transfer took too long")
            }
            TransferFailure::InProgress => {
                write!(f, "etcdserver: a leadership transfer is already under way; retry")
            }
        }
    }
}
impl std::error::Error for TransferFailure {}

/// A leadership transfer waiting for its outcome.
#[derive(Clone, Debug)]
struct PendingTransfer {
    id: RequestId,
    target: NodeId,
    /// The tick by which it is answered [`TransferFailure::TimedOut`] in any case.
    deadline: u64,
}

/// A fatal problem of this member: it must stop (its disk failed, or what it recovered
/// is inconsistent). Never a reason to keep going with possibly lost data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeError(pub String);

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NodeError {}

/// What happened inside a member, for checkers (see [`NodeConfig::record_events`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// Entries handed to the store (they may replace a stored suffix).
    Appended(Vec<Entry>),
    /// A committed entry was applied.
    Applied(Entry),
    /// The state machine was replaced by a snapshot from the leader.
    Installed(SnapshotMeta),
    /// Everything appended so far became durable.
    Synced,
}

/// What [`Node::poll`] produced.
#[derive(Default)]
pub struct Output {
    /// Answers to client requests.
    pub replies: Vec<(RequestId, Result<Response, RequestError>)>,
    /// Internal events, when [`NodeConfig::record_events`] is set.
    pub events: Vec<NodeEvent>,
    /// A snapshot to build in the background, when [`NodeConfig::background_snapshots`].
    pub snapshot_job: Option<SnapshotJob>,
    /// Reads to answer, when [`NodeConfig::hand_out_reads`] (see [`ReadyRead`]).
    pub reads: Vec<ReadyRead>,
    /// Batches for the [`Applier`], in order, when [`NodeConfig::apply_apart`].
    pub apply: Vec<ApplyBatch>,
    /// Outcomes of leadership transfers ([`Node::transfer_leader`]): the member that
    /// now leads, or why it did not happen.
    pub transfers: Vec<(RequestId, Result<NodeId, TransferFailure>)>,
    /// Outcomes of membership changes ([`Node::change_members`]), each once its entry
    /// is applied, or why it did not happen.
    pub member_changes: Vec<(RequestId, Result<MemberChanged, MemberFailure>)>,
    /// This member has been removed from the cluster (its removal is applied): the
    /// driver stops it for good, as etcd does ("the member has been permanently
    /// removed from the cluster").
    pub removed: bool,
}

/// Work for the [`Applier`] (see [`NodeConfig::apply_apart`]): first a snapshot from
/// the leader to install, if any, then committed entries, densely in log order.
#[derive(Clone, Debug, Default)]
pub struct ApplyBatch {
    /// A snapshot that replaces the whole state.
    pub install: Option<Snapshot>,
    /// Committed entries following the applied index (or the installed snapshot).
    pub entries: Vec<Entry>,
}

/// What an [`Applier`] did with one [`ApplyBatch`], for [`Node::on_applied`].
#[derive(Debug)]
pub struct Applied {
    /// The snapshot installed, if the batch had one.
    pub installed: Option<SnapshotMeta>,
    /// Each entry applied, with the state machine's answer (`None` for a no-op).
    pub entries: Vec<(Entry, Option<Response>)>,
    /// The state after the batch (O(1) to take: its maps are persistent).
    pub view: StateMachine,
}

/// Owns the state machine when [`NodeConfig::apply_apart`] is set, and applies what the
/// node hands out, on whatever thread the driver runs it (the server: its own OS thread;
/// the simulator: after a seeded delay). Deterministic and sans-IO like the node.
#[derive(Debug)]
pub struct Applier {
    sm: StateMachine,
    applied: Index,
}

impl Applier {
    /// Applies one batch. An error means a snapshot from the leader could not be
    /// restored, or a committed entry holds what this build cannot decode (see
    /// [`apply_entry`]): the member must stop.
    pub fn apply(&mut self, batch: ApplyBatch) -> Result<Applied, NodeError> {
        let installed = match batch.install {
            Some(snap) => {
                assert!(snap.meta.index > self.applied, "a snapshot never takes the state back");
                self.sm = restore_state(&snap)?;
                self.applied = snap.meta.index;
                Some(snap.meta)
            }
            None => None,
        };
        let mut entries = Vec::with_capacity(batch.entries.len());
        for e in batch.entries {
            assert_eq!(e.index, self.applied + 1, "entries are applied densely, in order");
            let response = apply_entry(&mut self.sm, &e)?;
            self.applied = e.index;
            entries.push((e, response));
        }
        Ok(Applied { installed, entries, view: self.sm.clone() })
    }

    /// The state applied so far.
    pub fn state(&self) -> &StateMachine {
        &self.sm
    }

    /// Index of the last entry applied (or snapshot installed).
    pub fn applied_index(&self) -> Index {
        self.applied
    }
}

/// One item waiting for the [`Applier`].
#[derive(Debug)]
enum ApplyItem {
    Install(Snapshot),
    Entry(Entry),
}

/// A read that may be served now (see [`NodeConfig::hand_out_reads`]): answer it with
/// [`answer_read`] from a state that has applied at least `index` — the state after
/// the `poll` that handed it out, or any later one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyRead {
    /// The request.
    pub id: RequestId,
    /// What it reads.
    pub query: ReadQuery,
    /// The lowest applied index the answer may come from (a linearizable read's
    /// ReadIndex; the applied index at submission for a serializable one).
    pub index: Index,
}

/// The answer to a read from a state machine: what [`Node`] answers inline, and what a
/// driver answers a [`ReadyRead`] with.
pub fn answer_read(sm: &StateMachine, query: &ReadQuery) -> Response {
    match query {
        ReadQuery::Range(req) => match sm.range(req) {
            Ok(r) => Response::Range(r),
            Err(e) => Response::Error(e),
        },
        ReadQuery::Get(key) => {
            Response::Get(kv::GetResponse { revision: sm.revision(), kv: sm.get(key) })
        }
    }
}

impl std::fmt::Debug for SnapshotJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnapshotJob({:?})", self.meta)
    }
}

#[derive(Debug)]
struct PendingWrite {
    id: RequestId,
    term: Term,
    deadline: u64,
    /// Its [`kv::space_cost`], counted in [`Node::writes_cost`] until it leaves.
    cost: u64,
}

#[derive(Debug)]
struct PendingRead {
    id: RequestId,
    query: PendingQuery,
    deadline: u64,
}

/// What a read waiting for its ReadIndex will answer.
#[derive(Debug)]
enum PendingQuery {
    /// A client read of the state machine.
    Read(ReadQuery),
    /// A lease keep-alive or time-to-live, answered by the leader from the state
    /// machine and its [`LeaseClock`].
    Lease(Op),
}

/// How long the leader waits for a revoke it proposed to apply before proposing
/// it again (the first may have been lost with a leader change).
const LEASE_REVOKE_RETRY_MS: u64 = 3_000;

/// The leader's lease deadlines: which lease expires when, in milliseconds of a
/// monotonic clock the driver passes in ([`Node::advance_lease_clock`]). Sans-IO, so
/// the server drives it with real time and a simulator with simulated time.
///
/// Only a leader keeps deadlines, and it starts every lease afresh (now + granted
/// TTL) when it takes over: a lease is extended across a leader change, never
/// expired early, since the new leader cannot know when the old one last saw a
/// keep-alive. Expiry is decided here and carried out through the log
/// ([`Op::LeaseRevoke`]), so every member deletes the same keys at the same revision.
#[derive(Clone, Debug, Default)]
pub struct LeaseClock {
    /// The term this member leads and keeps deadlines for; `None` when not leading.
    term: Option<Term>,
    /// Last time passed in.
    now_ms: u64,
    /// Lease id → deadline.
    deadlines: BTreeMap<i64, u64>,
    /// Leases whose revoke was proposed → when to propose it again.
    revoking: BTreeMap<i64, u64>,
}

impl LeaseClock {
    /// Starts leading in `term` at `now_ms`: every lease gets a full TTL.
    fn start(&mut self, term: Term, now_ms: u64, leases: Vec<(i64, i64)>) {
        self.term = Some(term);
        self.now_ms = now_ms;
        self.revoking.clear();
        self.deadlines =
            leases.into_iter().map(|(id, ttl)| (id, now_ms.saturating_add(ttl_ms(ttl)))).collect();
    }

    /// Stops keeping deadlines (not the leader any more).
    fn stop(&mut self) {
        self.term = None;
        self.deadlines.clear();
        self.revoking.clear();
    }

    /// A lease was granted: its deadline starts now.
    fn granted(&mut self, id: i64, ttl_secs: i64) {
        if self.term.is_some() {
            self.deadlines.entry(id).or_insert(self.now_ms.saturating_add(ttl_ms(ttl_secs)));
        }
    }

    /// A lease was revoked (by a client or by expiry).
    fn revoked(&mut self, id: i64) {
        self.deadlines.remove(&id);
        self.revoking.remove(&id);
    }

    /// A keep-alive: the lease lives `ttl_secs` from now. False if it already
    /// expired (its revoke is on its way) or is unknown to the clock.
    fn refresh(&mut self, id: i64, ttl_secs: i64) -> bool {
        if self.revoking.contains_key(&id) {
            return false;
        }
        match self.deadlines.get_mut(&id) {
            Some(d) => {
                *d = self.now_ms.saturating_add(ttl_ms(ttl_secs));
                true
            }
            None => false,
        }
    }

    /// Seconds left before lease `id` expires (rounded up), if the clock runs.
    pub fn remaining_secs(&self, id: i64) -> Option<i64> {
        self.term?;
        if self.revoking.contains_key(&id) {
            return Some(0);
        }
        let deadline = *self.deadlines.get(&id)?;
        let left_ms = deadline.saturating_sub(self.now_ms);
        Some(i64::try_from(left_ms.div_ceil(1000)).unwrap_or(i64::MAX))
    }

    /// True while this member leads and keeps deadlines.
    pub fn is_running(&self) -> bool {
        self.term.is_some()
    }

    /// Number of leases with a deadline.
    pub fn len(&self) -> usize {
        self.deadlines.len()
    }

    /// True if no lease has a deadline.
    pub fn is_empty(&self) -> bool {
        self.deadlines.is_empty()
    }

    /// Leases past their deadline whose revoke is due to be proposed (again).
    fn due(&self) -> Vec<i64> {
        let now = self.now_ms;
        self.deadlines
            .iter()
            .filter(|&(id, &deadline)| {
                deadline <= now && self.revoking.get(id).is_none_or(|&retry| retry <= now)
            })
            .map(|(id, _)| *id)
            .collect()
    }
}

fn ttl_ms(ttl_secs: i64) -> u64 {
    u64::try_from(ttl_secs).unwrap_or(0).saturating_mul(1000)
}

/// One member: see the crate docs.
pub struct Node<S: LogStore> {
    cfg: NodeConfig,
    raft: Raft,
    store: S,
    sm: StateMachine,
    /// Index of the last entry applied (no-ops included).
    applied: Index,
    last_snapshot_index: Index,
    last_snapshot_bytes: u64,
    /// [`Node::set_snapshot_source`] was called: the core reads snapshot bytes from files.
    snapshot_source_set: bool,
    now: u64,
    writes: BTreeMap<Index, PendingWrite>,
    /// The space cost of `writes`: proposed, not yet applied. The quota check counts it,
    /// so the writes in flight between commit and a lagging applier cannot overshoot it.
    writes_cost: u64,
    /// Reads waiting for their ReadIndex, by ctx.
    reads_waiting_index: BTreeMap<u64, PendingRead>,
    /// Reads with a ReadIndex, waiting for apply: (index, ctx).
    reads_waiting_apply: BTreeMap<(Index, u64), PendingRead>,
    next_read_ctx: u64,
    replies: Vec<(RequestId, Result<Response, RequestError>)>,
    /// Reads ready to serve, when [`NodeConfig::hand_out_reads`].
    ready_reads: Vec<ReadyRead>,
    events: Vec<NodeEvent>,
    /// Number of the last Ready written but not yet synced.
    unsynced: Option<u64>,
    /// Term and vote of the last hard state handed to the store (whose durability the
    /// next sync covers).
    synced_vote: (raft::Term, NodeId),
    snapshot_job: Option<SnapshotJob>,
    snapshot_in_progress: bool,
    leases: LeaseClock,
    /// Index of this leader's last NOSPACE alarm proposal, so that a burst of refused
    /// writes proposes it once.
    nospace_proposed: Option<Index>,
    /// Committed entries and installs not yet handed to the applier
    /// ([`NodeConfig::apply_apart`]).
    to_apply: VecDeque<ApplyItem>,
    /// Batches handed out and not yet reported.
    apply_in_flight: usize,
    /// The leadership transfer under way, if any (at most one).
    transfer: Option<PendingTransfer>,
    /// Transfer outcomes not yet handed out.
    transfers_done: Vec<(RequestId, Result<NodeId, TransferFailure>)>,
    /// Appends cut short by [`Node::hold_back`] so far.
    appends_held_back: u64,
    /// Membership changes this leader proposed, by log index, waiting for apply.
    members_pending: BTreeMap<Index, PendingMember>,
    /// Membership change outcomes not yet handed out.
    members_done: Vec<(RequestId, Result<MemberChanged, MemberFailure>)>,
    /// A snapshot is due whatever the interval: a membership change was applied while
    /// the log still starts at index 1 (see [`Node::compact_after_conf_change`]).
    snapshot_due: bool,
    /// The tick each member of the configuration was last heard from (entries only for
    /// members, so its size is bounded by the configuration's).
    last_heard: BTreeMap<NodeId, u64>,
}

impl<S: LogStore> Node<S> {
    /// Starts a member from what its store recovered.
    pub fn new(cfg: NodeConfig, store: S, restored: Restored) -> Result<Self, NodeError> {
        let restored_bytes = restored.snapshot.as_ref().map_or(0, |s| s.data.len() as u64);
        let restored_term_vote = (restored.hard_state.term, restored.hard_state.vote);
        let (mut sm, applied) = match &restored.snapshot {
            Some(snap) => (restore_state(snap)?, snap.meta.index),
            None => (StateMachine::new(cfg.kv), 0),
        };
        let joining = cfg.joining && restored.snapshot.is_none();
        if !joining {
            sm.seed_members(&cfg.initial_members);
        }
        let raft = if joining {
            Raft::join(cfg.raft.clone(), restored)
        } else {
            Raft::restore(cfg.raft.clone(), &cfg.voters, restored)
        }
        .map_err(|e| NodeError(format!("cannot start member {}: {e}", cfg.raft.id)))?;
        Ok(Node {
            raft,
            store,
            sm,
            applied,
            last_snapshot_index: applied,
            last_snapshot_bytes: restored_bytes,
            snapshot_source_set: false,
            now: 0,
            writes: BTreeMap::new(),
            writes_cost: 0,
            reads_waiting_index: BTreeMap::new(),
            reads_waiting_apply: BTreeMap::new(),
            next_read_ctx: 1,
            replies: Vec::new(),
            ready_reads: Vec::new(),
            events: Vec::new(),
            unsynced: None,
            synced_vote: (restored_term_vote.0, restored_term_vote.1),
            snapshot_job: None,
            snapshot_in_progress: false,
            leases: LeaseClock::default(),
            nospace_proposed: None,
            to_apply: VecDeque::new(),
            apply_in_flight: 0,
            transfer: None,
            transfers_done: Vec::new(),
            appends_held_back: 0,
            members_pending: BTreeMap::new(),
            members_done: Vec::new(),
            snapshot_due: false,
            last_heard: BTreeMap::new(),
            cfg,
        })
    }

    /// Appends this member cut short so far because its applier was past the apply gap
    /// (see [`Node::step`]).
    pub fn appends_held_back(&self) -> u64 {
        self.appends_held_back
    }

    /// Advances time by one tick: the core's timers and request deadlines.
    pub fn tick(&mut self) {
        self.now += 1;
        self.raft.tick();
        self.expire_requests();
    }

    /// Processes one message from a peer. Messages from removed members are dropped.
    /// Back-pressure on every member: while this member's applier is more than
    /// [`NodeConfig::apply_gap_entries_max`] committed entries behind, an append takes
    /// no entry past the end of its log (see [`Node::hold_back`]).
    ///
    /// A joining member that has not installed a snapshot yet ignores appends that would start its log at index 1 (see
    /// [`NodeConfig::joining`]): the leader probes again and, once its log no longer
    /// starts at 1, sends its snapshot.
    pub fn step(&mut self, mut m: Message) {
        if self.is_removed_member(m.from) {
            // etcd drops what removed members send: one that missed its removal could
            // otherwise disturb the cluster with its elections.
            return;
        }
        if self.awaiting_first_snapshot() {
            if let MessageBody::Append { prev_index: 0, .. } = m.body {
                return;
            }
        }
        let conf = self.raft.conf_state();
        if conf.is_voter(m.from) || conf.is_learner(m.from) {
            self.last_heard.insert(m.from, self.now);
        }
        self.hold_back(&mut m);
        self.raft.step(m);
    }

    /// True while this member joins and has no snapshot (so no configuration) yet.
    pub fn awaiting_first_snapshot(&self) -> bool {
        self.cfg.joining && self.raft.snapshot_meta().index == 0
    }

    /// Cuts an append down to the entries this member already has (their index at most
    /// its last index) while its apply gap exceeds the bound, so a member whose applier
    /// is slower than the cluster's commit rate holds at most the gap plus one append's
    /// worth of committed entries it has not applied. Safe: the prefix of an append is
    /// itself a valid append (as if the leader had sent fewer entries), and the answer
    /// names the prefix's end, so the leader sends the rest again later. Live: the
    /// entries in the gap are committed, so the applier drains them with no help from
    /// the network, and the member then takes entries again.
    fn hold_back(&mut self, m: &mut Message) {
        if self.apply_gap() <= self.cfg.apply_gap_entries_max {
            return;
        }
        if let MessageBody::Append { prev_index, entries, .. } = &mut m.body {
            let keep = self.raft.last_index().saturating_sub(*prev_index);
            if (entries.len() as u64) > keep {
                entries.truncate(keep as usize);
                self.appends_held_back += 1;
            }
        }
    }

    /// Accepts a client request; its answer comes out of a later [`Node::poll`] (or at
    /// once, for errors and serializable reads).
    ///
    /// The space quota is checked here, on the leader, before a write is proposed (as
    /// etcd checks it before proposing): a write whose [`kv::space_cost`] would take
    /// the state to the quota or past it is answered [`KvError::NoSpace`] and the
    /// NOSPACE alarm is proposed for this member. Once that alarm is applied every
    /// member refuses such writes at apply time, whatever its own estimate says.
    pub fn submit(&mut self, id: RequestId, request: Request) {
        let deadline = self.now + self.cfg.request_timeout_ticks;
        match request {
            Request::Write(Command {
                op: op @ (Op::LeaseKeepAlive { .. } | Op::LeaseTimeToLive { .. }),
                ..
            }) => self.submit_lease_query(id, op, deadline),
            Request::Write(cmd) => self.submit_write(id, EncodedWrite::new(&cmd), deadline),
            Request::Encoded(write) => self.submit_write(id, write, deadline),
            Request::Read { query, serializable: true } => {
                let index = self.applied;
                self.serve_read(id, query, index);
            }
            Request::Read { query, serializable: false } => {
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                match self.raft.read_index(ctx) {
                    Ok(()) => {
                        let query = PendingQuery::Read(query);
                        self.reads_waiting_index.insert(ctx, PendingRead { id, query, deadline });
                    }
                    Err(ReadError::NoLeader) => {
                        self.replies.push((id, Err(RequestError::NotLeader { leader: None })))
                    }
                }
            }
        }
    }

    /// Asks to hand leadership to `target`, or with `None` to the most caught-up other
    /// voter (Raft thesis §3.10: the core stops taking proposals, catches the target
    /// up, tells it to campaign, and gives up after an election timeout). The outcome
    /// comes out of a later [`Node::poll`] in [`Output::transfers`]: the new leader
    /// once this member sees the target lead, or a [`TransferFailure`]. Transferring
    /// to the current leader itself succeeds at once, as etcd's.
    pub fn transfer_leader(&mut self, id: RequestId, target: Option<NodeId>) {
        let outcome = self.start_transfer(id, target);
        if let Err(e) = outcome {
            self.transfers_done.push((id, Err(e)));
        } else if let Ok(Some(done)) = outcome {
            self.transfers_done.push((id, Ok(done)));
        }
    }

    /// Starts a transfer; `Ok(Some(leader))` when there is nothing to wait for.
    fn start_transfer(
        &mut self,
        id: RequestId,
        target: Option<NodeId>,
    ) -> Result<Option<NodeId>, TransferFailure> {
        if self.raft.role() != Role::Leader {
            return Err(TransferFailure::NotLeader { leader: self.raft.leader() });
        }
        if self.transfer.is_some() {
            return Err(TransferFailure::InProgress);
        }
        let target = match target {
            Some(t) => t,
            None => self.most_caught_up_voter().ok_or(TransferFailure::NoTransferee)?,
        };
        if !self.raft.voters().contains(&target) {
            return Err(TransferFailure::BadTransferee(target));
        }
        if target == self.raft.id() {
            return Ok(Some(target));
        }
        self.raft.transfer_leader(target).map_err(|e| match e {
            raft::TransferError::NotLeader { leader } => TransferFailure::NotLeader { leader },
            raft::TransferError::NotVoter(t) => TransferFailure::BadTransferee(t),
        })?;
        // The core gives up after an election timeout; the new leader may need one
        // more to be heard of. Past twice that, answer in any case.
        let deadline = self.now + 2 * self.cfg.raft.election_timeout_ticks as u64 + 1;
        self.transfer = Some(PendingTransfer { id, target, deadline });
        Ok(None)
    }

    /// The other voter whose log matches the most of ours (ties: the lowest id).
    fn most_caught_up_voter(&self) -> Option<NodeId> {
        let me = self.raft.id();
        let matched = |id: NodeId| self.raft.progress(id).map_or(0, |p| p.match_index);
        let others = self.raft.voters().iter().copied().filter(|&v| v != me);
        others.max_by_key(|&v| (matched(v), std::cmp::Reverse(v)))
    }

    /// Answers the transfer under way once its outcome is known.
    fn check_transfer(&mut self) {
        let Some(t) = &self.transfer else { return };
        let outcome = match (self.raft.role(), self.raft.leader()) {
            (_, Some(l)) if l == t.target => Some(Ok(l)),
            // The core gave up: the target did not win within an election timeout.
            (Role::Leader, _) if self.raft.lead_transferee() != Some(t.target) => {
                Some(Err(TransferFailure::TimedOut))
            }
            (Role::Follower, Some(_)) => Some(Err(TransferFailure::TimedOut)),
            _ if self.now >= t.deadline => Some(Err(TransferFailure::TimedOut)),
            _ => None, // still transferring, or an election is under way
        };
        if let Some(outcome) = outcome {
            let t = self.transfer.take().expect("checked above");
            self.transfers_done.push((t.id, outcome));
        }
    }

    /// Asks for a membership change (etcd's MemberAdd/Remove/Update/Promote, or a
    /// started member's publish). Only the leader takes it; it checks etcd's rules
    /// first (see [`MemberFailure`]), proposes it, and answers in
    /// [`Output::member_changes`] once the change's entry is applied, with the member
    /// and the whole list; a follower answers [`MemberFailure::NotLeader`] for the
    /// driver to forward. Add, Remove and Promote are configuration changes (one at a
    /// time: [`MemberFailure::InProgress`]); Update and Publish only change the record.
    pub fn change_members(&mut self, id: RequestId, change: MemberChange) {
        let deadline = self.now + self.cfg.request_timeout_ticks;
        match self.start_member_change(change) {
            Ok((index, term, member)) => {
                let pending = PendingMember { id, term, deadline, member };
                if let Some(old) = self.members_pending.insert(index, pending) {
                    // Its entry was replaced by a newer leader's: it never applies.
                    let leader = self.raft.leader();
                    self.members_done.push((old.id, Err(MemberFailure::NotLeader { leader })));
                }
            }
            Err(e) => self.members_done.push((id, Err(e))),
        }
    }

    /// Every member, from the applied state (etcd's MemberList).
    pub fn members(&self) -> Vec<Member> {
        self.sm.members().list()
    }

    /// True if `id` was a member of this cluster and has been removed (as applied
    /// here): its messages and its restart are to be refused.
    pub fn is_removed_member(&self, id: NodeId) -> bool {
        self.sm.members().is_removed(id)
    }

    /// True if this member's removal has been applied here.
    fn is_removed(&self) -> bool {
        self.is_removed_member(self.raft.id())
    }

    /// Checks and proposes a change; the index and term of its entry and the member
    /// it is about.
    fn start_member_change(
        &mut self,
        change: MemberChange,
    ) -> Result<(Index, Term, NodeId), MemberFailure> {
        if self.raft.role() != Role::Leader {
            return Err(MemberFailure::NotLeader { leader: self.raft.leader() });
        }
        let started = self.started_members();
        let view = LeaderView {
            members: self.sm.members(),
            conf: self.raft.conf_state(),
            started: &started,
            commit: self.raft.commit_index(),
        };
        let (op, step) = match change {
            MemberChange::Add { peer_urls, is_learner } => {
                self.check_no_conf_change_in_flight()?;
                view.check_add(&peer_urls, is_learner)?;
                let index = self.raft.last_index() + 1;
                let free = |id: &NodeId| {
                    *id != 0 && view.members.get(*id).is_none() && !view.members.is_removed(*id)
                };
                let chosen = self.cfg.new_member_id.and_then(|f| f(&peer_urls)).filter(free);
                let id = chosen.unwrap_or_else(|| {
                    new_member_id(&peer_urls, index, self.raft.term(), view.members)
                });
                let kind =
                    if is_learner { ConfChangeKind::AddLearner } else { ConfChangeKind::AddVoter };
                let m =
                    Member { id, name: String::new(), peer_urls, client_urls: vec![], is_learner };
                m.check().map_err(MemberFailure::Invalid)?;
                (MemberOp::Add(m), Some(ConfChangeSingle { kind, node: id }))
            }
            MemberChange::Remove(id) => {
                self.check_no_conf_change_in_flight()?;
                view.check_remove(id)?;
                let step = ConfChangeSingle { kind: ConfChangeKind::Remove, node: id };
                (MemberOp::Remove(id), Some(step))
            }
            MemberChange::Promote(id) => {
                self.check_no_conf_change_in_flight()?;
                let learner_match = self.raft.progress(id).map_or(0, |p| p.match_index);
                view.check_promote(id, learner_match)?;
                let step = ConfChangeSingle { kind: ConfChangeKind::AddVoter, node: id };
                (MemberOp::Promote(id), Some(step))
            }
            MemberChange::Update { id, peer_urls } => {
                view.check_update(id, &peer_urls)?;
                (MemberOp::Update { id, peer_urls }, None)
            }
            MemberChange::Publish { id, name, client_urls } => {
                let mut m = view.members.get(id).ok_or(MemberFailure::NotFound(id))?.clone();
                (m.name, m.client_urls) = (name.clone(), client_urls.clone());
                m.check().map_err(MemberFailure::Invalid)?;
                (MemberOp::Publish { id, name, client_urls }, None)
            }
        };
        let member = op.member_id();
        let proposed = match step {
            Some(step) => {
                let cc = ConfChange { changes: vec![step], context: op.encode() };
                self.raft.propose_conf_change(cc)
            }
            None => self.raft.propose(Command::new(Op::Member(op)).encode()),
        };
        let (index, term) = proposed.map_err(member_propose_error)?;
        Ok((index, term, member))
    }

    /// One configuration change at a time, and none until the last one is applied
    /// here (the checks read the applied member table).
    fn check_no_conf_change_in_flight(&self) -> Result<(), MemberFailure> {
        let pending = self.raft.pending_conf_index();
        if self.raft.conf_state().is_joint() || pending > self.applied {
            return Err(MemberFailure::InProgress);
        }
        Ok(())
    }

    /// The members the leader counts as started (etcd: members it is connected to):
    /// itself and every member it heard from within the last election timeout.
    fn started_members(&self) -> BTreeSet<NodeId> {
        let me = self.raft.id();
        let window = u64::from(self.cfg.raft.election_timeout_ticks);
        let recent = |id: &NodeId| {
            self.last_heard.get(id).is_some_and(|&t| self.now.saturating_sub(t) <= window)
        };
        let members = self.raft.conf_state().members();
        members.into_iter().filter(|id| *id == me || recent(id)).collect()
    }

    /// Answers the membership change proposed at `e`'s index, if any, now that `e` is
    /// applied with `response`.
    fn answer_member_change(&mut self, e: &Entry, response: &Option<Response>) {
        let Some(m) = self.members_pending.remove(&e.index) else { return };
        let outcome = match response {
            Some(Response::Member(Some(member))) if m.term == e.term => Ok(MemberChanged {
                member: Some(member.clone()),
                members: self.sm.members().list(),
            }),
            Some(Response::Member(None)) if m.term == e.term => {
                Err(MemberFailure::NotFound(m.member))
            }
            _ => Err(MemberFailure::NotLeader { leader: self.raft.leader() }),
        };
        self.members_done.push((m.id, outcome));
    }

    /// A configuration change was applied. If the log still starts at index 1, take a
    /// snapshot now: from then on this member, should it lead, sends a member that
    /// joins a snapshot (which carries the configuration) and never the log from index
    /// 1 (which does not: the first configuration was never an entry). See
    /// docs/ARCHITECTURE.md, "Membership".
    fn compact_after_conf_change(&mut self) {
        if self.raft.snapshot_meta().index == 0 {
            self.snapshot_due = true;
        }
    }

    /// Whether this member leads and `op` would take the state to its quota or past it.
    /// Proposes a write after the quota and apply-gap checks (see [`Node::submit`]).
    fn submit_write(&mut self, id: RequestId, write: EncodedWrite, deadline: u64) {
        let cost = write.space_cost;
        if self.over_quota(cost) {
            self.raise_nospace();
            self.replies.push((id, Ok(Response::Error(KvError::NoSpace))));
            return;
        }
        if self.apply_gap() > self.cfg.apply_gap_entries_max {
            self.replies.push((id, Err(RequestError::Busy)));
            return;
        }
        match self.raft.propose(write.data) {
            Ok((index, term)) => self.track_write(index, PendingWrite { id, term, deadline, cost }),
            Err(e) => self.replies.push((id, Err(propose_error(e)))),
        }
    }

    fn over_quota(&self, cost: u64) -> bool {
        let Some(quota) = self.cfg.quota_bytes else { return false };
        let size = self.sm.size_bytes().saturating_add(self.writes_cost);
        cost > 0 && self.raft.role() == Role::Leader && size.saturating_add(cost) >= quota
    }

    /// Remembers a proposed write until it is applied, expires or is covered by a
    /// snapshot. A write still waiting at the same index lost its entry to a newer
    /// leader's log (it never applies there with its term): it is answered "not leader".
    fn track_write(&mut self, index: Index, w: PendingWrite) {
        self.writes_cost = self.writes_cost.saturating_add(w.cost);
        if let Some(old) = self.writes.insert(index, w) {
            self.writes_cost = self.writes_cost.saturating_sub(old.cost);
            let leader = self.raft.leader();
            self.replies.push((old.id, Err(RequestError::NotLeader { leader })));
        }
    }

    /// Forgets the write proposed at `index`, if any (see [`Node::track_write`]).
    fn take_write(&mut self, index: Index) -> Option<PendingWrite> {
        let w = self.writes.remove(&index)?;
        self.writes_cost = self.writes_cost.saturating_sub(w.cost);
        Some(w)
    }

    /// Proposes the NOSPACE alarm for this member unless it is raised or on its way.
    fn raise_nospace(&mut self) {
        let me = self.raft.id();
        let raised =
            self.sm.alarms().iter().any(|a| a.member_id == me && a.alarm == AlarmType::Nospace);
        let pending = self.nospace_proposed.is_some_and(|i| i > self.applied);
        if raised || pending {
            return;
        }
        let op =
            Op::Alarm { action: AlarmAction::Activate, member_id: me, alarm: AlarmType::Nospace };
        // Busy or a lost leadership: the next refused write tries again.
        if let Ok((index, _)) = self.raft.propose(Command::new(op).encode()) {
            self.nospace_proposed = Some(index);
        }
    }

    /// Committed entries not yet applied.
    fn apply_gap(&self) -> u64 {
        self.raft.commit_index().saturating_sub(self.applied)
    }

    /// A read that may be served now (the state has applied `index`): answered here, or
    /// handed out (see [`NodeConfig::hand_out_reads`]).
    fn serve_read(&mut self, id: RequestId, query: ReadQuery, index: Index) {
        debug_assert!(index <= self.applied, "a read is served only once its index applied");
        if self.cfg.hand_out_reads {
            self.ready_reads.push(ReadyRead { id, query, index });
        } else {
            let answer = answer_read(&self.sm, &query);
            self.replies.push((id, Ok(answer)));
        }
    }

    /// A lease keep-alive or time-to-live: only the leader keeps lease deadlines, so
    /// only the leader answers, after a ReadIndex round (which confirms it still
    /// leads, and that it has applied every grant and revoke committed before).
    /// Anywhere else: [`RequestError::NotLeader`], for the caller to forward it.
    fn submit_lease_query(&mut self, id: RequestId, op: Op, deadline: u64) {
        if self.raft.role() != Role::Leader {
            let leader = self.raft.leader();
            self.replies.push((id, Err(RequestError::NotLeader { leader })));
            return;
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        match self.raft.read_index(ctx) {
            Ok(()) => {
                let query = PendingQuery::Lease(op);
                self.reads_waiting_index.insert(ctx, PendingRead { id, query, deadline });
            }
            Err(ReadError::NoLeader) => {
                self.replies.push((id, Err(RequestError::NotLeader { leader: None })))
            }
        }
    }

    /// Whether this member is the leader and its [`LeaseClock`] is not yet running for
    /// its term: a driver then calls [`Node::advance_lease_clock`] at once rather than
    /// at its next tick, so lease queries right after an election are answered.
    pub fn lease_clock_pending(&self) -> bool {
        self.raft.role() == Role::Leader && self.leases.term != Some(self.raft.term())
    }

    /// Passes time to the leader's [`LeaseClock`] (`now_ms`: a monotonic clock in
    /// milliseconds; only differences matter). On the leader, proposes the revoke of
    /// every lease past its deadline; the proposals go out with the next `poll`. A
    /// member that has just become leader first gives every lease a full TTL from now.
    /// Drivers that never call this never expire leases.
    pub fn advance_lease_clock(&mut self, now_ms: u64) {
        self.leases.now_ms = self.leases.now_ms.max(now_ms);
        if self.raft.role() != Role::Leader {
            self.leases.stop();
            return;
        }
        let term = self.raft.term();
        if self.leases.term != Some(term) {
            let now = self.leases.now_ms;
            self.leases.start(term, now, self.sm.leases());
            return;
        }
        for id in self.leases.due() {
            if self.sm.lease_ttl(id).is_none() {
                self.leases.revoked(id); // revoked meanwhile (its revoke applied)
                continue;
            }
            let cmd = Command::new(Op::LeaseRevoke { id });
            // Busy or a lost leadership: the next call tries again.
            if self.raft.propose(cmd.encode()).is_ok() {
                let retry = self.leases.now_ms.saturating_add(LEASE_REVOKE_RETRY_MS);
                self.leases.revoking.insert(id, retry);
            }
        }
    }

    /// The leader's lease deadlines (empty and stopped on other members).
    pub fn lease_clock(&self) -> &LeaseClock {
        &self.leases
    }

    /// Runs the core until it has nothing more to do, writing what it hands out to the
    /// store without syncing. `send` receives each batch of messages as soon as it may
    /// leave — a leader's appends before its own disk write. Answers that depend on
    /// durable state leave only after [`Node::sync`] and the next `poll`.
    pub fn poll(&mut self, send: &mut impl FnMut(Vec<Message>)) -> Result<Output, NodeError> {
        while self.raft.has_ready() {
            let mut rd = self.raft.ready();
            if !rd.messages.is_empty() {
                send(std::mem::take(&mut rd.messages));
            }
            // Only term, vote, entries and snapshots must be durable before anything that
            // depends on them leaves (Raft Figure 2). A Ready that only moves the commit
            // index is written but needs no sync of its own: what its commit index vouches
            // for is already durable, and waiting for an fsync there would delay every
            // client answer by one (as etcd raft's MustSync also skips it).
            let must_sync = rd.snapshot.is_some()
                || !rd.entries.is_empty()
                || rd.hard_state.is_some_and(|hs| {
                    (hs.term, hs.vote) != (self.synced_vote.0, self.synced_vote.1)
                });
            if !rd.persist_is_empty() {
                self.store.append(rd.hard_state.as_ref(), rd.snapshot.as_ref(), &rd.entries)?;
                if self.cfg.record_events && !rd.entries.is_empty() {
                    self.events.push(NodeEvent::Appended(rd.entries.clone()));
                }
            }
            if let Some(hs) = rd.hard_state {
                self.synced_vote = (hs.term, hs.vote);
            }
            if !must_sync && self.unsynced.is_none() {
                self.raft.on_persisted(rd.number);
            } else {
                self.unsynced = Some(rd.number);
            }
            if self.cfg.apply_apart {
                self.to_apply.extend(rd.snapshot.map(ApplyItem::Install));
                self.to_apply.extend(rd.committed_entries.into_iter().map(ApplyItem::Entry));
            } else {
                if let Some(snap) = &rd.snapshot {
                    self.install(snap)?;
                }
                for e in rd.committed_entries {
                    self.apply(e)?;
                }
            }
            for rs in rd.read_states {
                if let Some(r) = self.reads_waiting_index.remove(&rs.ctx) {
                    self.reads_waiting_apply.insert((rs.index, rs.ctx), r);
                }
            }
            for ctx in rd.failed_reads {
                if let Some(r) = self.reads_waiting_index.remove(&ctx) {
                    let leader = self.raft.leader();
                    self.replies.push((r.id, Err(RequestError::NotLeader { leader })));
                }
            }
            self.serve_reads();
            self.maybe_snapshot()?;
        }
        if self.raft.wants_snapshot() {
            // Asked for while stepping a message that needed no Ready.
            self.maybe_snapshot()?;
        }
        let replies = std::mem::take(&mut self.replies);
        let events = std::mem::take(&mut self.events);
        let reads = std::mem::take(&mut self.ready_reads);
        let apply = self.hand_out_apply();
        self.check_transfer();
        let transfers = std::mem::take(&mut self.transfers_done);
        let snapshot_job = self.snapshot_job.take();
        let member_changes = std::mem::take(&mut self.members_done);
        let removed = self.is_removed();
        Ok(Output {
            replies,
            events,
            snapshot_job,
            reads,
            apply,
            transfers,
            member_changes,
            removed,
        })
    }

    /// The batches the applier may take now: at most [`APPLY_BATCHES_IN_FLIGHT_MAX`]
    /// unreported, each at most [`APPLY_BATCH_ENTRIES_MAX`] entries and about
    /// [`APPLY_BATCH_BYTES_MAX`] bytes; an install always starts a batch.
    fn hand_out_apply(&mut self) -> Vec<ApplyBatch> {
        let mut batches = Vec::new();
        while self.apply_in_flight < APPLY_BATCHES_IN_FLIGHT_MAX && !self.to_apply.is_empty() {
            let mut batch = ApplyBatch::default();
            if let Some(ApplyItem::Install(_)) = self.to_apply.front() {
                let Some(ApplyItem::Install(snap)) = self.to_apply.pop_front() else {
                    unreachable!("just seen")
                };
                batch.install = Some(snap);
            }
            let mut bytes = 0;
            while let Some(ApplyItem::Entry(e)) = self.to_apply.front() {
                let full = batch.entries.len() >= APPLY_BATCH_ENTRIES_MAX
                    || (!batch.entries.is_empty()
                        && bytes + e.size_bytes() > APPLY_BATCH_BYTES_MAX);
                if full {
                    break;
                }
                bytes += e.size_bytes();
                let Some(ApplyItem::Entry(e)) = self.to_apply.pop_front() else {
                    unreachable!("just seen")
                };
                batch.entries.push(e);
            }
            self.apply_in_flight += 1;
            batches.push(batch);
        }
        batches
    }

    /// An applier for this member ([`NodeConfig::apply_apart`]), starting from the state
    /// the node recovered. Create it once, before the first `poll`.
    pub fn applier(&self) -> Applier {
        assert!(self.cfg.apply_apart, "an applier is for a node that applies apart");
        Applier { sm: self.sm.clone(), applied: self.applied }
    }

    /// Takes in the applier's report on the oldest batch handed out: answers the writes
    /// it applied, moves lease deadlines, serves the reads it made servable, and adopts
    /// its view of the state. Returns the view it replaced: dropping it may free a tree
    /// the applier no longer shares (O(keys) after a large delete), so drop it off the
    /// thread that heartbeats. Call [`Node::poll`] afterwards to collect the answers.
    pub fn on_applied(&mut self, applied: Applied) -> Result<StateMachine, NodeError> {
        assert!(self.apply_in_flight > 0, "a report answers a batch handed out");
        self.apply_in_flight -= 1;
        // The view first: answers built below (a membership change's member list) read it.
        let old = std::mem::replace(&mut self.sm, applied.view);
        if let Some(meta) = applied.installed {
            self.installed(meta);
        }
        for (e, response) in applied.entries {
            self.applied_entry(e, response);
        }
        self.serve_reads();
        self.maybe_snapshot()?;
        Ok(old)
    }

    /// True if writes are waiting for [`Node::sync`].
    pub fn needs_sync(&self) -> bool {
        self.unsynced.is_some()
    }

    /// Makes everything written durable (one fsync for all Readies since the last sync)
    /// and tells the core. Call [`Node::poll`] afterwards: it releases the answers.
    pub fn sync(&mut self) -> Result<(), NodeError> {
        if let Some(number) = self.unsynced.take() {
            self.store.sync()?;
            self.raft.on_persisted(number);
            if self.cfg.record_events {
                self.events.push(NodeEvent::Synced);
            }
        }
        Ok(())
    }

    /// `poll`, then `sync` and `poll` again until nothing is left: the whole cycle, for
    /// drivers that sync inline (the server's node thread, tests).
    pub fn run_once(&mut self, send: &mut impl FnMut(Vec<Message>)) -> Result<Output, NodeError> {
        self.run_once_with(send, Node::sync)
    }

    /// [`Node::run_once`] with each sync made through `sync` (which must call
    /// [`Node::sync`]), for a driver that observes it, e.g. times it with its own clock.
    pub fn run_once_with(
        &mut self,
        send: &mut impl FnMut(Vec<Message>),
        mut sync: impl FnMut(&mut Self) -> Result<(), NodeError>,
    ) -> Result<Output, NodeError> {
        let mut out = self.poll(send)?;
        while self.needs_sync() {
            sync(self)?;
            let more = self.poll(send)?;
            out.replies.extend(more.replies);
            out.events.extend(more.events);
            out.reads.extend(more.reads);
            out.snapshot_job = out.snapshot_job.or(more.snapshot_job);
            out.apply.extend(more.apply);
            out.transfers.extend(more.transfers);
            out.member_changes.extend(more.member_changes);
            out.removed |= more.removed;
        }
        Ok(out)
    }

    fn apply(&mut self, e: Entry) -> Result<(), NodeError> {
        assert_eq!(e.index, self.applied + 1, "entries are applied densely, in order");
        let response = apply_entry(&mut self.sm, &e)?;
        self.applied_entry(e, response);
        Ok(())
    }

    /// Bookkeeping after entry `e` was applied (here or by the applier) with `response`.
    fn applied_entry(&mut self, e: Entry, response: Option<Response>) {
        assert_eq!(e.index, self.applied + 1, "entries are applied densely, in order");
        self.applied = e.index;
        match &response {
            Some(Response::LeaseGranted(g)) => self.leases.granted(g.id, g.ttl_secs),
            Some(Response::LeaseRevoked(r)) => self.leases.revoked(r.id),
            _ => {}
        }
        if e.kind == EntryKind::ConfChange {
            self.compact_after_conf_change();
            let conf = self.raft.conf_state();
            self.last_heard.retain(|id, _| conf.is_voter(*id) || conf.is_learner(*id));
        }
        self.answer_member_change(&e, &response);
        // Writes proposed at lower indices whose entries were replaced never apply at
        // their index with their term; they are answered below when their index comes.
        if let Some(w) = self.take_write(e.index) {
            let reply = match response {
                Some(r) if w.term == e.term => Ok(r),
                _ => Err(RequestError::NotLeader { leader: self.raft.leader() }),
            };
            self.replies.push((w.id, reply));
        }
        if self.cfg.record_events {
            self.events.push(NodeEvent::Applied(e));
        }
    }

    /// A snapshot from the leader replaced our state: restore the state machine from it.
    fn install(&mut self, snap: &Snapshot) -> Result<(), NodeError> {
        assert!(snap.meta.index > self.applied, "a snapshot never takes the state back");
        self.sm = restore_state(snap)?;
        self.installed(snap.meta.clone());
        Ok(())
    }

    /// Bookkeeping after a snapshot from the leader replaced the state (here or in the
    /// applier).
    fn installed(&mut self, meta: SnapshotMeta) {
        assert!(meta.index > self.applied, "a snapshot never takes the state back");
        self.applied = meta.index;
        // Leases may have come and gone: rebuild the deadlines (a leader never
        // installs a snapshot, but the clock must never track a stale set).
        self.leases.stop();
        self.last_snapshot_index = meta.index;
        // Writes at covered indices: their outcome is inside the snapshot, unknown here
        // (so not `NotLeader`, which says "not applied"). The client's retry (same
        // session sequence) gets the recorded answer.
        let covered: Vec<Index> = self.writes.range(..=meta.index).map(|(i, _)| *i).collect();
        for i in covered {
            let w = self.take_write(i).expect("present");
            self.replies.push((w.id, Err(RequestError::Timeout)));
        }
        let rest = self.members_pending.split_off(&(meta.index + 1));
        for (_, m) in std::mem::replace(&mut self.members_pending, rest) {
            self.members_done.push((m.id, Err(MemberFailure::Timeout)));
        }
        if self.cfg.record_events {
            self.events.push(NodeEvent::Installed(meta));
        }
    }

    fn serve_reads(&mut self) {
        while let Some(entry) = self.reads_waiting_apply.first_entry() {
            if entry.key().0 > self.applied {
                break;
            }
            let index = entry.key().0;
            let r = entry.remove();
            match r.query {
                PendingQuery::Read(query) => self.serve_read(r.id, query, index),
                PendingQuery::Lease(op) => {
                    let answer = self.answer_lease(&op);
                    self.replies.push((r.id, answer));
                }
            }
        }
    }

    /// A keep-alive or time-to-live on the leader, with the remaining TTL from the
    /// lease clock. A lease past its deadline counts as gone.
    fn answer_lease(&mut self, op: &Op) -> Result<Response, RequestError> {
        if self.raft.role() != Role::Leader || !self.leases.is_running() {
            return Err(RequestError::NotLeader { leader: self.raft.leader() });
        }
        let (id, keys, keep_alive) = match *op {
            Op::LeaseKeepAlive { id } => (id, false, true),
            Op::LeaseTimeToLive { id, keys } => (id, keys, false),
            _ => unreachable!("only lease queries wait here"),
        };
        let not_found = Ok(Response::Error(KvError::LeaseNotFound { id }));
        let Ok(mut ttl) = self.sm.lease_time_to_live(id, keys) else { return not_found };
        if keep_alive {
            if !self.leases.refresh(id, ttl.granted_ttl_secs) {
                return not_found;
            }
            return Ok(Response::LeaseTtl(LeaseTtlResponse { keys: Vec::new(), ..ttl }));
        }
        match self.leases.remaining_secs(id) {
            Some(0) | None => not_found,
            Some(left) => {
                ttl.ttl_secs = left;
                Ok(Response::LeaseTtl(ttl))
            }
        }
    }

    fn maybe_snapshot(&mut self) -> Result<(), NodeError> {
        let interval = self.cfg.snapshot_interval_entries;
        // The core asks for one when a follower needs entries it trimmed from memory.
        let interval_due = (interval != 0 && self.applied >= self.last_snapshot_index + interval)
            || (self.raft.wants_snapshot() && self.applied > self.raft.snapshot_meta().index);
        // With apply apart, the log may already have been replaced by a newer snapshot
        // from the leader that the applier has not installed yet: wait for it.
        if !(interval_due || self.snapshot_due)
            || self.snapshot_in_progress
            || self.raft.term_at(self.applied).is_none()
        {
            return Ok(());
        }
        self.snapshot_due = false;
        if self.cfg.background_snapshots {
            let meta = self.snapshot_meta();
            self.snapshot_in_progress = true;
            self.snapshot_job = Some(SnapshotJob { meta, view: self.sm.snapshot_view() });
            return Ok(());
        }
        let snapshot = self.snapshot_now();
        self.last_snapshot_bytes = snapshot.data.len() as u64;
        self.store.persist_snapshot(&snapshot)?;
        self.compact_to(snapshot).map(drop)
    }

    /// Compacts the core's log to `snapshot`; returns the discarded entries, unfreed.
    fn compact_to(&mut self, snapshot: Snapshot) -> Result<Vec<Entry>, NodeError> {
        let index = snapshot.meta.index;
        let discarded = match self.raft.compact(snapshot) {
            Ok(discarded) => discarded,
            Err(raft::CompactError::Stale { .. }) => Vec::new(),
            Err(e) => return Err(NodeError(format!("compacting the log after a snapshot: {e}"))),
        };
        self.last_snapshot_index = self.last_snapshot_index.max(index);
        Ok(discarded)
    }

    /// A [`SnapshotJob`] finished: its file is durable (written with
    /// `storage::write_snapshot_file`). Adopts it and compacts the log. `None` reports a
    /// job that failed; the next interval tries again.
    pub fn finish_snapshot(&mut self, snapshot: Option<Snapshot>) -> Result<(), NodeError> {
        self.snapshot_in_progress = false;
        let Some(snapshot) = snapshot else { return Ok(()) };
        if snapshot.meta.index <= self.raft.snapshot_meta().index {
            return Ok(()); // a newer snapshot from the leader was installed meanwhile
        }
        self.last_snapshot_bytes = snapshot.data.len() as u64;
        self.store.adopt_snapshot(&snapshot.meta)?;
        self.compact_to(snapshot).map(drop)
    }

    /// The service keeps snapshot bytes in files and `source` reads them for the chunks
    /// a leader sends (see `raft::Raft::set_snapshot_source`): neither the core nor the
    /// node holds a snapshot's bytes after it is durable. Needed before
    /// [`Node::finish_snapshot_file`].
    pub fn set_snapshot_source(&mut self, source: Box<dyn raft::SnapshotSource>) {
        self.raft.set_snapshot_source(source);
        self.snapshot_source_set = true;
    }

    /// A [`SnapshotJob`] finished by [`SnapshotJob::write_file`]: the file of
    /// `Some((meta, data length))` is durable. Adopts it and compacts the log, as
    /// [`Node::finish_snapshot`] does, without the bytes. `None` reports a job that
    /// failed; the next interval tries again.
    ///
    /// Returns the log entries the compaction discarded, not yet freed, so that the
    /// caller can free them off its thread: a snapshot every 100k entries discards 100k,
    /// and freeing them held a loaded server's node thread 10-30 ms (its heartbeats,
    /// appends and every answer waited).
    ///
    /// # Panics
    /// Without [`Node::set_snapshot_source`]: the core would have no bytes to send a
    /// follower that needs this snapshot.
    pub fn finish_snapshot_file(
        &mut self,
        done: Option<(SnapshotMeta, u64)>,
    ) -> Result<Vec<Entry>, NodeError> {
        assert!(self.snapshot_source_set, "finish_snapshot_file needs a snapshot source");
        self.snapshot_in_progress = false;
        let Some((meta, bytes)) = done else { return Ok(Vec::new()) };
        if meta.index <= self.raft.snapshot_meta().index {
            return Ok(Vec::new()); // a newer snapshot from the leader was installed meanwhile
        }
        self.last_snapshot_bytes = bytes;
        self.store.adopt_snapshot(&meta)?;
        self.compact_to(Snapshot { meta, data: Arc::from(&[][..]) })
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        let index = self.applied;
        let term = self.raft.term_at(index).expect("the applied entry is held");
        SnapshotMeta { index, term, conf: self.raft.conf_at(index) }
    }

    /// A snapshot of the state machine at the applied index. Taking the view is O(1); it
    /// is serialized here, in the driver's thread.
    pub fn snapshot_now(&self) -> Snapshot {
        SnapshotJob { meta: self.snapshot_meta(), view: self.sm.snapshot_view() }.build()
    }

    fn expire_requests(&mut self) {
        let now = self.now;
        let expired: Vec<Index> =
            self.writes.iter().filter(|(_, w)| w.deadline <= now).map(|(i, _)| *i).collect();
        for i in expired {
            let w = self.take_write(i).expect("present");
            self.replies.push((w.id, Err(RequestError::Timeout)));
        }
        let expired: Vec<u64> = self
            .reads_waiting_index
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(c, _)| *c)
            .collect();
        for c in expired {
            let r = self.reads_waiting_index.remove(&c).expect("present");
            self.replies.push((r.id, Err(RequestError::Timeout)));
        }
        let expired: Vec<(Index, u64)> = self
            .reads_waiting_apply
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            let r = self.reads_waiting_apply.remove(&k).expect("present");
            self.replies.push((r.id, Err(RequestError::Timeout)));
        }
        let expired: Vec<Index> = self
            .members_pending
            .iter()
            .filter(|(_, m)| m.deadline <= now)
            .map(|(i, _)| *i)
            .collect();
        for i in expired {
            let m = self.members_pending.remove(&i).expect("present");
            self.members_done.push((m.id, Err(MemberFailure::Timeout)));
        }
    }

    /// True if `poll` has work (messages, persistence, applies or replies).
    pub fn has_work(&self) -> bool {
        self.raft.has_ready()
            || !self.transfers_done.is_empty()
            || !self.members_done.is_empty()
            || !self.replies.is_empty()
            || !self.ready_reads.is_empty()
            || (self.apply_in_flight < APPLY_BATCHES_IN_FLIGHT_MAX && !self.to_apply.is_empty())
    }

    /// The consensus core, for status and checks.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The state machine, for status and checks.
    pub fn state(&self) -> &StateMachine {
        &self.sm
    }

    /// Size in bytes of the last snapshot taken or installed (0: none yet).
    pub fn last_snapshot_bytes(&self) -> u64 {
        self.last_snapshot_bytes
    }

    /// Writes proposed by this member and not yet applied (or refused).
    pub fn writes_pending(&self) -> usize {
        self.writes.len()
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> Index {
        self.applied
    }

    /// The store, for tests and status.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably (the simulator crashes its disk through this).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Stops the member and gives its store back, with whatever it wrote (synced or
    /// not): the simulator takes the disk out of it to cut the power and reopen it.
    pub fn into_store(self) -> S {
        self.store
    }
}

/// Applies one committed entry to the state machine: a command, or the member-table
/// part of a configuration change (its context). `None` for entries with nothing to
/// apply (no-ops, configuration changes without a member record).
///
/// An entry this build cannot decode is an error, and the member must stop before it:
/// a leader proposes only commands it decoded (forwarded ones included), and the log
/// is checksummed on disk and on the wire, so such an entry was proposed by a newer
/// build. Answering it as malformed here while newer members execute it would make
/// this member's state diverge from theirs for good; stopping keeps it where it is,
/// and the same binary upgraded applies the entry on restart.
fn apply_entry(sm: &mut StateMachine, e: &Entry) -> Result<Option<Response>, NodeError> {
    match e.kind {
        EntryKind::Normal => {
            let command = Command::decode(&e.data).map_err(|why| undecodable(e, "command", why))?;
            Ok(Some(sm.apply_command(e.index, &command)))
        }
        EntryKind::Noop => Ok(None),
        // The configuration itself took effect inside the core when appended; the
        // member record rides along as the change's context.
        EntryKind::ConfChange => {
            let Ok(cc) = ConfChange::decode(&e.data) else { return Ok(None) };
            if cc.context.is_empty() {
                return Ok(None);
            }
            let op = MemberOp::decode(&cc.context)
                .map_err(|why| undecodable(e, "member change", why))?;
            Ok(Some(Response::Member(sm.apply_member_change(e.index, &op))))
        }
    }
}

/// Why a committed entry that does not decode stops the member (see [`apply_entry`]).
fn undecodable(e: &Entry, what: &str, why: kv::DecodeError) -> NodeError {
    NodeError(format!(
        "the committed entry at index {} (term {}) holds a {what} this build cannot decode \
         ({why}): a member running a newer raftkv proposed it; stopping before applying it \
         so this member's state does not diverge. Upgrade this member's binary to the \
         cluster's newest build and start it again: it applies the entry then (README, \
         Upgrading)",
        e.index, e.term
    ))
}

fn restore_state(snap: &Snapshot) -> Result<StateMachine, NodeError> {
    StateMachine::restore(&snap.data[..]).map_err(|e| {
        NodeError(format!(
            "snapshot at index {} (term {}) cannot be restored: {e}; \
             this member's data is damaged: remove its data directory and let it rejoin",
            snap.meta.index, snap.meta.term
        ))
    })
}

fn member_propose_error(e: ProposeError) -> MemberFailure {
    match e {
        ProposeError::NotLeader { leader } => MemberFailure::NotLeader { leader },
        ProposeError::Transferring => MemberFailure::NotLeader { leader: None },
        ProposeError::ConfChangePending | ProposeError::Busy => MemberFailure::InProgress,
        ProposeError::BadConfChange(raft::ConfChangeError::NotMember(id)) => {
            MemberFailure::NotFound(id)
        }
        e @ (ProposeError::BadConfChange(_) | ProposeError::TooLarge { .. }) => {
            MemberFailure::Invalid(e.to_string())
        }
    }
}

fn propose_error(e: ProposeError) -> RequestError {
    match e {
        ProposeError::NotLeader { leader } => RequestError::NotLeader { leader },
        ProposeError::TooLarge { size, max } => RequestError::TooLarge { size, max },
        // Leadership is on its way to another member: the write was not proposed, so
        // the caller may send it again, to the new leader once it is known (the
        // server's write path waits for one and forwards there).
        ProposeError::Transferring => RequestError::NotLeader { leader: None },
        // A membership change in progress: retry shortly.
        ProposeError::Busy | ProposeError::ConfChangePending => RequestError::Busy,
        ProposeError::BadConfChange(_) => RequestError::Busy,
    }
}

/// A one-member cluster with `cfg` (member 1, the only voter), once it has elected itself.
#[cfg(test)]
fn one_member_leader(cfg: NodeConfig) -> Node<crate::MemStore> {
    let store = crate::MemStore::default();
    let restored = store.recover();
    let mut n = Node::new(cfg, store, restored).unwrap();
    for _ in 0..100 {
        n.tick();
        n.run_once(&mut |_| {}).unwrap();
        if n.raft().role() == Role::Leader {
            return n;
        }
    }
    panic!("a one-member cluster elects itself");
}

#[cfg(test)]
mod lease_clock_tests {
    use super::*;
    use crate::MemStore;
    use kv::PutRequest;

    /// A one-member cluster: it leads itself, so the lease clock runs.
    fn leader() -> Node<MemStore> {
        one_member_leader(NodeConfig::new(1, [1].into()))
    }

    fn call(n: &mut Node<MemStore>, id: RequestId, op: Op) -> Result<Response, RequestError> {
        n.submit(id, Request::Write(Command::new(op)));
        let out = n.run_once(&mut |_| {}).unwrap();
        out.replies.into_iter().find(|(r, _)| *r == id).expect("answered").1
    }

    fn put_leased(n: &mut Node<MemStore>, id: RequestId, lease: i64) {
        let put =
            PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), lease, ..Default::default() };
        assert!(matches!(call(n, id, Op::Put(put)), Ok(Response::Put(_))));
    }

    /// Expiry is the leader's decision, carried out through the log; a keep-alive
    /// pushes the deadline back by a full TTL.
    #[test]
    fn an_expired_lease_is_revoked_through_the_log_and_keep_alive_defers_it() {
        let mut n = leader();
        n.advance_lease_clock(0);
        let Ok(Response::LeaseGranted(g)) = call(&mut n, 1, Op::LeaseGrant { id: 0, ttl_secs: 2 })
        else {
            panic!("grant")
        };
        put_leased(&mut n, 2, g.id);
        n.advance_lease_clock(1_500);
        assert_eq!(n.lease_clock().remaining_secs(g.id), Some(1));
        let ka = call(&mut n, 3, Op::LeaseKeepAlive { id: g.id });
        assert!(matches!(ka, Ok(Response::LeaseTtl(ref t)) if t.granted_ttl_secs == 2), "{ka:?}");
        n.advance_lease_clock(3_000); // past the first deadline, not the refreshed one
        n.run_once(&mut |_| {}).unwrap();
        assert!(n.state().get(b"k").is_some(), "the keep-alive extended the lease");
        n.advance_lease_clock(3_600);
        n.run_once(&mut |_| {}).unwrap();
        assert!(n.state().get(b"k").is_none(), "expired: revoked through the log");
        assert_eq!(n.state().lease_ttl(g.id), None);
        assert!(n.lease_clock().is_empty());
        let ka = call(&mut n, 4, Op::LeaseKeepAlive { id: g.id });
        assert_eq!(ka, Ok(Response::Error(KvError::LeaseNotFound { id: g.id })));
    }

    /// A member that takes over as leader cannot know when its predecessor last saw a
    /// keep-alive: it gives every lease a full TTL from the takeover.
    #[test]
    fn a_new_leader_starts_every_lease_afresh() {
        let mut n = leader();
        n.advance_lease_clock(0);
        let Ok(Response::LeaseGranted(g)) = call(&mut n, 1, Op::LeaseGrant { id: 5, ttl_secs: 3 })
        else {
            panic!("grant")
        };
        // Pretend leadership was lost and won again (a new term) much later.
        n.leases.stop();
        n.advance_lease_clock(100_000);
        assert_eq!(n.lease_clock().remaining_secs(g.id), Some(3));
        n.advance_lease_clock(102_000);
        n.run_once(&mut |_| {}).unwrap();
        assert!(n.state().lease_ttl(g.id).is_some());
    }

    /// A new leader's clock is pending until the driver starts it, and a lease query
    /// answered before then is refused as "leader changed": drivers start it as soon as
    /// `lease_clock_pending` says so (the server does, every loop).
    #[test]
    fn a_new_leaders_lease_clock_is_pending_until_started() {
        let mut n = leader();
        assert!(n.lease_clock_pending());
        let r = call(&mut n, 1, Op::LeaseTimeToLive { id: 1, keys: false });
        assert!(matches!(r, Err(RequestError::NotLeader { .. })), "{r:?}");
        n.advance_lease_clock(0);
        assert!(!n.lease_clock_pending());
        let r = call(&mut n, 2, Op::LeaseTimeToLive { id: 1, keys: false });
        assert_eq!(r, Ok(Response::Error(KvError::LeaseNotFound { id: 1 })));
    }

    #[test]
    fn lease_queries_on_a_follower_say_who_leads() {
        let store = MemStore::default();
        let restored = store.recover();
        let mut n = Node::new(NodeConfig::new(1, [1, 2, 3].into()), store, restored).unwrap();
        let r = call(&mut n, 1, Op::LeaseTimeToLive { id: 1, keys: false });
        assert_eq!(r, Err(RequestError::NotLeader { leader: None }));
        n.advance_lease_clock(10);
        assert!(!n.lease_clock().is_running());
    }
}

#[cfg(test)]
mod quota_tests {
    use super::*;
    use crate::MemStore;
    use kv::{AlarmMember, DeleteRangeRequest, PutRequest};

    /// A one-member cluster with a space quota: it leads itself.
    fn leader(quota_bytes: u64) -> Node<MemStore> {
        one_member_leader(NodeConfig {
            quota_bytes: Some(quota_bytes),
            ..NodeConfig::new(1, [1].into())
        })
    }

    fn call(n: &mut Node<MemStore>, id: RequestId, op: Op) -> Response {
        n.submit(id, Request::Write(Command::new(op)));
        let out = n.run_once(&mut |_| {}).unwrap();
        out.replies.into_iter().find(|(r, _)| *r == id).expect("answered").1.expect("applied")
    }

    fn put(key: &str, value_bytes: usize) -> Op {
        Op::Put(PutRequest {
            key: key.into(),
            value: vec![b'x'; value_bytes],
            ..Default::default()
        })
    }

    /// etcd's quota check: the write that would reach the quota is refused and raises
    /// NOSPACE through the log; from then on the replicated alarm refuses writes at
    /// apply, even small ones the estimate would allow, until it is disarmed.
    #[test]
    fn the_write_that_would_reach_the_quota_is_refused_and_raises_nospace() {
        let quota = kv::STATE_BASE_BYTES + 10_000;
        let mut n = leader(quota);
        let mut id = 0;
        let refused = loop {
            id += 1;
            match call(&mut n, id, put(&format!("k{id}"), 1000)) {
                Response::Put(_) => assert!(id < 20, "the quota never tripped"),
                other => break other,
            }
        };
        assert_eq!(refused, Response::Error(KvError::NoSpace));
        assert!(n.state().size_bytes() < quota, "the refused write did not apply");
        assert_eq!(
            n.state().alarms(),
            vec![AlarmMember { member_id: 1, alarm: AlarmType::Nospace }]
        );

        // Deleting and compacting free space, but the alarm still refuses a small put.
        let all = DeleteRangeRequest { key: vec![0], range_end: vec![0], prev_kv: false };
        assert!(matches!(call(&mut n, 100, Op::DeleteRange(all)), Response::DeleteRange(_)));
        let rev = n.state().revision();
        assert!(matches!(call(&mut n, 101, Op::Compact { revision: rev }), Response::Compact(_)));
        assert_eq!(call(&mut n, 102, put("small", 1)), Response::Error(KvError::NoSpace));
        let grant = Op::LeaseGrant { id: 0, ttl_secs: 5 };
        assert_eq!(call(&mut n, 103, grant.clone()), Response::Error(KvError::NoSpace));

        let disarm =
            Op::Alarm { action: AlarmAction::Deactivate, member_id: 1, alarm: AlarmType::Nospace };
        assert!(matches!(call(&mut n, 104, disarm), Response::Alarm(_)));
        assert!(matches!(call(&mut n, 105, put("small", 1)), Response::Put(_)));
        assert!(matches!(call(&mut n, 106, grant), Response::LeaseGranted(_)));
    }

    /// Many refused writes in one batch propose the alarm once.
    #[test]
    fn a_burst_of_refused_writes_proposes_the_alarm_once() {
        let mut n = leader(kv::STATE_BASE_BYTES + 100);
        let last = n.raft().last_index();
        for id in 1..=10 {
            n.submit(id, Request::Write(Command::new(put("k", 200))));
        }
        let out = n.run_once(&mut |_| {}).unwrap();
        assert_eq!(out.replies.len(), 10);
        assert!(out.replies.iter().all(|(_, r)| *r == Ok(Response::Error(KvError::NoSpace))));
        assert_eq!(n.raft().last_index(), last + 1, "one alarm entry");
        assert!(n.state().alarm_raised(AlarmType::Nospace));
    }

    /// Writes proposed and not yet applied count toward the quota: a burst submitted
    /// before any of it applies (as while apply lags commit) cannot overshoot it.
    #[test]
    fn writes_in_flight_count_toward_the_quota() {
        let quota = kv::STATE_BASE_BYTES + 10_000;
        let mut n = leader(quota);
        for id in 1..=20 {
            n.submit(id, Request::Write(Command::new(put(&format!("k{id}"), 1000))));
        }
        let out = n.run_once(&mut |_| {}).unwrap();
        let refused =
            out.replies.iter().filter(|(_, r)| *r == Ok(Response::Error(KvError::NoSpace)));
        assert!(refused.count() >= 10, "at most ~9 puts of 1000 B fit in 10 000 B");
        assert!(n.state().size_bytes() < quota, "in-flight writes overshot the quota");
    }

    /// A write that reaches the node already encoded is proposed as its command, and
    /// still counts toward the quota by the space cost taken when it was encoded.
    #[test]
    fn encoded_writes_apply_as_their_command_and_count_toward_the_quota() {
        let quota = kv::STATE_BASE_BYTES + 10_000;
        let mut n = leader(quota);
        for id in 1..=20 {
            let req = Request::encoded(Command::new(put(&format!("k{id}"), 1000)));
            assert!(matches!(req, Request::Encoded(_)), "a put is encoded");
            n.submit(id, req);
        }
        let out = n.run_once(&mut |_| {}).unwrap();
        let refused =
            out.replies.iter().filter(|(_, r)| *r == Ok(Response::Error(KvError::NoSpace)));
        assert!(refused.count() >= 10, "at most ~9 puts of 1000 B fit in 10 000 B");
        assert!(n.state().size_bytes() < quota, "in-flight writes overshot the quota");
        assert!(n.state().get(b"k1").is_some(), "the first encoded put applied");
        let keep_alive = Request::encoded(Command::new(Op::LeaseKeepAlive { id: 1 }));
        assert!(matches!(keep_alive, Request::Write(_)), "lease queries stay decoded");
    }
}

#[cfg(test)]
mod hand_out_tests {
    use super::*;
    use crate::MemStore;
    use kv::PutRequest;
    use raft::{Message, MessageBody};

    fn node(voters: BTreeSet<NodeId>, hand_out_reads: bool) -> Node<MemStore> {
        let store = MemStore::default();
        let restored = store.recover();
        let mut cfg = NodeConfig::new(1, voters);
        cfg.hand_out_reads = hand_out_reads;
        Node::new(cfg, store, restored).unwrap()
    }

    /// A one-member cluster that has elected itself.
    fn leader(hand_out_reads: bool) -> Node<MemStore> {
        one_member_leader(NodeConfig { hand_out_reads, ..NodeConfig::new(1, [1].into()) })
    }

    fn put(n: &mut Node<MemStore>, id: RequestId, key: &[u8]) {
        let put = PutRequest { key: key.to_vec(), value: b"v".to_vec(), ..Default::default() };
        n.submit(id, Request::Write(Command::new(Op::Put(put))));
        let out = n.run_once(&mut |_| {}).unwrap();
        assert!(matches!(out.replies[..], [(r, Ok(Response::Put(_)))] if r == id));
    }

    fn get(key: &[u8]) -> ReadQuery {
        ReadQuery::Get(key.to_vec())
    }

    /// The server answers reads on worker threads: the node must say when a read may be
    /// served and from which index, and never answer it itself.
    #[test]
    fn a_serializable_read_is_handed_out_at_once_with_the_applied_index() {
        let mut n = leader(true);
        put(&mut n, 1, b"k");
        n.submit(2, Request::Read { query: get(b"k"), serializable: true });
        assert!(n.has_work(), "a handed-out read is work for the next poll");
        let out = n.run_once(&mut |_| {}).unwrap();
        assert!(out.replies.is_empty(), "{:?}", out.replies);
        assert_eq!(out.reads, vec![ReadyRead { id: 2, query: get(b"k"), index: n.applied }]);
        let answer = answer_read(n.state(), &out.reads[0].query);
        assert!(
            matches!(answer, Response::Get(g) if g.kv.as_ref().is_some_and(|kv| kv.value == b"v"))
        );
    }

    /// Linearizable: handed out only once the state has applied the read's ReadIndex,
    /// which covers every write acknowledged before the read.
    #[test]
    fn a_linearizable_read_is_handed_out_once_its_read_index_is_applied() {
        let mut n = leader(true);
        put(&mut n, 1, b"k");
        let written = n.applied_index();
        n.submit(2, Request::Read { query: get(b"k"), serializable: false });
        let out = n.run_once(&mut |_| {}).unwrap();
        assert!(out.replies.is_empty(), "{:?}", out.replies);
        let [read] = &out.reads[..] else { panic!("one read handed out: {:?}", out.reads) };
        assert_eq!((read.id, &read.query), (2, &get(b"k")));
        assert!(read.index >= written && read.index <= n.applied_index(), "{read:?}");
    }

    #[test]
    fn without_hand_out_reads_are_answered_inline() {
        let mut n = leader(false);
        put(&mut n, 1, b"k");
        n.submit(2, Request::Read { query: get(b"k"), serializable: true });
        n.submit(3, Request::Read { query: get(b"k"), serializable: false });
        let out = n.run_once(&mut |_| {}).unwrap();
        assert!(out.reads.is_empty());
        let ids: Vec<RequestId> = out.replies.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![2, 3]);
    }

    /// etcd refuses new proposals with "too many requests" while the member has more
    /// than 5000 committed entries it has not applied: a member whose disk or apply
    /// lags stops taking work instead of queueing without bound.
    #[test]
    fn writes_are_refused_busy_while_commit_runs_too_far_ahead_of_apply() {
        let mut n = node([1, 2, 3].into(), true);
        n.cfg.apply_gap_entries_max = 5;
        let noop = |index| Entry { term: 1, index, kind: EntryKind::Noop, data: Vec::new().into() };
        let append = MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: (1..=10).map(noop).collect(),
            commit: 10,
        };
        n.step(Message { from: 2, to: 1, term: 1, body: append });
        // Not yet durable, so not applied: commit 10, applied 0.
        n.poll(&mut |_| {}).unwrap();
        assert_eq!((n.raft().commit_index(), n.applied_index()), (10, 0));
        let put = PutRequest { key: b"k".to_vec(), ..Default::default() };
        n.submit(1, Request::Write(Command::new(Op::Put(put.clone()))));
        let out = n.poll(&mut |_| {}).unwrap();
        assert_eq!(out.replies, vec![(1, Err(RequestError::Busy))]);
        // Once applied, the gap is gone: the write goes on (to the leader, here 2).
        n.sync().unwrap();
        n.poll(&mut |_| {}).unwrap();
        assert_eq!(n.applied_index(), 10);
        n.submit(2, Request::Write(Command::new(Op::Put(put))));
        let out = n.poll(&mut |_| {}).unwrap();
        assert_eq!(out.replies, vec![(2, Err(RequestError::NotLeader { leader: Some(2) }))]);
    }
}

#[cfg(test)]
mod apply_apart_tests {
    use super::*;
    use crate::MemStore;
    use kv::PutRequest;
    use raft::{Message, MessageBody};

    /// A one-member cluster that has elected itself, with its applier caught up.
    fn leader() -> (Node<MemStore>, Applier) {
        let store = MemStore::default();
        let restored = store.recover();
        let cfg = NodeConfig {
            apply_apart: true,
            hand_out_reads: true,
            ..NodeConfig::new(1, [1].into())
        };
        let mut n = Node::new(cfg, store, restored).unwrap();
        let mut a = n.applier();
        while n.raft().role() != Role::Leader || n.applied_index() < n.raft().commit_index() {
            assert!(n.now < 100, "a one-member cluster elects itself");
            n.tick();
            let out = n.run_once(&mut |_| {}).unwrap();
            drain(&mut n, &mut a, out.apply);
        }
        (n, a)
    }

    fn put(id: RequestId, key: &str) -> (RequestId, Request) {
        let put = PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() };
        (id, Request::Write(Command::new(Op::Put(put))))
    }

    /// Catches the applier up with everything handed out so far (the election's no-op
    /// included), returning the replies that followed.
    fn drain(n: &mut Node<MemStore>, a: &mut Applier, batches: Vec<ApplyBatch>) -> Output {
        let mut out = Output::default();
        let mut batches: VecDeque<ApplyBatch> = batches.into();
        while let Some(batch) = batches.pop_front() {
            n.on_applied(a.apply(batch).unwrap()).unwrap();
            let more = n.run_once(&mut |_| {}).unwrap();
            out.replies.extend(more.replies);
            out.reads.extend(more.reads);
            batches.extend(more.apply);
        }
        out
    }

    /// Nothing is acknowledged before it is applied: the write's entry is committed
    /// and handed to the applier, and its answer waits for the applier's report.
    #[test]
    fn a_write_is_answered_only_once_the_applier_reports_it() {
        let (mut n, mut a) = leader();
        let (id, req) = put(7, "k");
        n.submit(id, req);
        let out = n.run_once(&mut |_| {}).unwrap();
        assert!(out.replies.is_empty(), "{:?}", out.replies);
        let [batch] = &out.apply[..] else { panic!("one batch: {:?}", out.apply) };
        let index = batch.entries.last().expect("the put").index;
        assert_eq!(n.raft().commit_index(), index);
        assert!(n.applied_index() < index && n.state().get(b"k").is_none());
        let out = drain(&mut n, &mut a, out.apply);
        assert!(matches!(out.replies[..], [(7, Ok(Response::Put(_)))]), "{:?}", out.replies);
        assert_eq!(n.applied_index(), index);
        assert!(n.state().get(b"k").is_some(), "the node adopted the applier's view");
    }

    /// The queue to the applier is bounded: at most two batches unreported, each at most
    /// APPLY_BATCH_ENTRIES_MAX entries; the rest waits in the log.
    #[test]
    fn batches_are_bounded_and_at_most_two_are_in_flight() {
        let (mut n, mut a) = leader();
        let writes = 3 * APPLY_BATCH_ENTRIES_MAX as u64;
        for id in 0..writes {
            let (id, req) = put(id, &format!("k{id}"));
            n.submit(id, req);
        }
        let out = n.run_once(&mut |_| {}).unwrap();
        assert_eq!(out.apply.len(), APPLY_BATCHES_IN_FLIGHT_MAX);
        assert!(out.apply.iter().all(|b| b.entries.len() == APPLY_BATCH_ENTRIES_MAX));
        assert!(n.run_once(&mut |_| {}).unwrap().apply.is_empty(), "two in flight");
        let mut batches = out.apply.into_iter();
        n.on_applied(a.apply(batches.next().unwrap()).unwrap()).unwrap();
        let out = n.run_once(&mut |_| {}).unwrap();
        assert_eq!(out.replies.len(), APPLY_BATCH_ENTRIES_MAX);
        assert_eq!(out.apply.len(), 1, "one report frees one slot");
        let rest = batches.chain(out.apply).collect();
        let out = drain(&mut n, &mut a, rest);
        assert_eq!(out.replies.len() as u64, writes - APPLY_BATCH_ENTRIES_MAX as u64);
        assert_eq!(n.applied_index(), n.raft().commit_index());
    }

    /// A linearizable read is handed out only once the applier has reported its
    /// ReadIndex applied.
    #[test]
    fn a_linearizable_read_waits_for_the_applier() {
        let (mut n, mut a) = leader();
        let (id, req) = put(1, "k");
        n.submit(id, req);
        let put_out = n.run_once(&mut |_| {}).unwrap(); // committed, not applied
        n.submit(2, Request::Read { query: ReadQuery::Get(b"k".to_vec()), serializable: false });
        let out = n.run_once(&mut |_| {}).unwrap();
        assert!(out.reads.is_empty() && out.replies.is_empty(), "{:?}", out.reads);
        let out = drain(&mut n, &mut a, put_out.apply);
        let [read] = &out.reads[..] else { panic!("one read: {:?}", out.reads) };
        assert!(read.index <= n.applied_index());
        assert!(answer_read(n.state(), &read.query) != Response::Get(Default::default()));
    }

    /// A follower whose applier is stuck still takes appends and answers its leader:
    /// apply never delays the raft loop.
    #[test]
    fn a_follower_keeps_answering_appends_while_its_applier_lags() {
        let store = MemStore::default();
        let restored = store.recover();
        let cfg = NodeConfig { apply_apart: true, ..NodeConfig::new(1, [1, 2, 3].into()) };
        let mut n = Node::new(cfg, store, restored).unwrap();
        let noop = |index| Entry { term: 1, index, kind: EntryKind::Noop, data: Vec::new().into() };
        let mut acks = 0;
        for round in 0..3u64 {
            let append = MessageBody::Append {
                prev_index: round * 10,
                prev_term: if round == 0 { 0 } else { 1 },
                entries: (round * 10 + 1..=round * 10 + 10).map(noop).collect(),
                commit: round * 10 + 10,
            };
            n.step(Message { from: 2, to: 1, term: 1, body: append });
            let out = n.run_once(&mut |msgs| acks += msgs.len()).unwrap();
            assert!(out.apply.len() <= 1, "at most two in flight, never more");
        }
        assert_eq!(acks, 3, "every append answered");
        assert_eq!((n.raft().commit_index(), n.applied_index()), (30, 0));
    }

    /// What a follower answers to an append: the index it names and whether it rejects.
    fn answers(msgs: &[Message]) -> Vec<(Index, bool)> {
        msgs.iter()
            .filter_map(|m| match &m.body {
                MessageBody::AppendResp { index, reject } => Some((*index, reject.is_some())),
                _ => None,
            })
            .collect()
    }

    /// A follower whose applier is stuck takes no new entries once its apply gap
    /// exceeds the bound: the committed entries it holds unapplied stay at most the
    /// gap plus one append, however much the leader sends. Once the applier drains
    /// the gap, the leader's retry (after a rejection naming the follower's log end)
    /// is taken again.
    #[test]
    fn a_follower_past_the_apply_gap_takes_no_new_entries_until_it_applies() {
        let store = MemStore::default();
        let restored = store.recover();
        let cfg = NodeConfig {
            apply_apart: true,
            apply_gap_entries_max: 15,
            ..NodeConfig::new(1, [1, 2, 3].into())
        };
        let mut n = Node::new(cfg, store, restored).unwrap();
        let mut a = n.applier();
        let noop = |index| Entry { term: 1, index, kind: EntryKind::Noop, data: Vec::new().into() };
        let append = |prev: u64, count: u64| MessageBody::Append {
            prev_index: prev,
            prev_term: if prev == 0 { 0 } else { 1 },
            entries: (prev + 1..=prev + count).map(noop).collect(),
            commit: prev + count,
        };
        let mut held = Vec::new();
        let mut batches = Vec::new();
        let mut sent = Vec::new();
        for round in 0..10u64 {
            n.step(Message { from: 2, to: 1, term: 1, body: append(round * 10, 10) });
            let out = n.run_once(&mut |m| sent.extend(m)).unwrap();
            batches.extend(out.apply);
            held.push(n.raft().commit_index() - n.applied_index());
        }
        // Rounds 0 and 1 are taken (gap 0, then 10); from then on (gap 20) every
        // append is cut to what the follower already has.
        assert_eq!(held, vec![10, 20, 20, 20, 20, 20, 20, 20, 20, 20]);
        assert!(held.iter().all(|&h| h <= 15 + 10), "the gap plus one append: {held:?}");
        let acks = answers(&sent);
        assert_eq!(acks[..3], [(10, false), (20, false), (20, false)]);
        assert!(acks[3..].iter().all(|&(i, reject)| i <= 20 || reject), "{acks:?}");
        // The applier catches up: the gap is gone and the follower takes entries again.
        let mut batches: VecDeque<ApplyBatch> = batches.into();
        while let Some(batch) = batches.pop_front() {
            n.on_applied(a.apply(batch).unwrap()).unwrap();
            batches.extend(n.run_once(&mut |_| {}).unwrap().apply);
        }
        assert_eq!(n.applied_index(), 20);
        sent.clear();
        n.step(Message { from: 2, to: 1, term: 1, body: append(90, 10) });
        n.run_once(&mut |m| sent.extend(m)).unwrap();
        assert_eq!(answers(&sent), vec![(90, true)], "beyond its log: the leader backs up");
        sent.clear();
        n.step(Message { from: 2, to: 1, term: 1, body: append(20, 80) });
        n.run_once(&mut |m| sent.extend(m)).unwrap();
        assert_eq!(answers(&sent), vec![(100, false)]);
        assert_eq!(n.raft().commit_index(), 100);
    }
}

#[cfg(test)]
mod transfer_tests {
    use super::*;
    use crate::MemStore;
    use kv::PutRequest;

    /// Three in-memory members wired together; messages are delivered at once.
    struct Trio {
        nodes: BTreeMap<NodeId, Node<MemStore>>,
        out: BTreeMap<NodeId, Vec<Output>>,
    }

    impl Trio {
        fn new() -> Trio {
            let nodes = (1..=3)
                .map(|id| {
                    let store = MemStore::default();
                    let restored = store.recover();
                    let cfg = NodeConfig::new(id, [1, 2, 3].into());
                    (id, Node::new(cfg, store, restored).unwrap())
                })
                .collect();
            Trio { nodes, out: BTreeMap::new() }
        }

        /// One tick of every member, then messages until quiet.
        fn step(&mut self) {
            self.step_without(0); // 0 is never a member's id: nothing is lost
        }

        fn leader(&self) -> Option<NodeId> {
            self.nodes.values().find(|n| n.raft().role() == Role::Leader).map(|n| n.raft().id())
        }

        fn elect(&mut self) -> NodeId {
            for _ in 0..200 {
                self.step();
                if let Some(l) = self.leader() {
                    return l;
                }
            }
            panic!("no leader elected in 200 ticks");
        }

        fn transfers(&mut self, id: NodeId) -> Vec<(RequestId, Result<NodeId, TransferFailure>)> {
            let outs = self.out.remove(&id).unwrap_or_default();
            outs.into_iter().flat_map(|o| o.transfers).collect()
        }
    }

    #[test]
    fn a_transfer_is_answered_once_the_target_leads() {
        let mut t = Trio::new();
        let old = t.elect();
        let target = (1..=3).find(|&i| i != old).unwrap();
        t.transfers(old);
        t.nodes.get_mut(&old).unwrap().transfer_leader(7, Some(target));
        let mut answers = Vec::new();
        for _ in 0..10 {
            t.step();
            answers.extend(t.transfers(old));
        }
        assert_eq!(answers, vec![(7, Ok(target))]);
        assert_eq!(t.leader(), Some(target));
    }

    #[test]
    fn without_a_target_the_most_caught_up_voter_takes_over() {
        let mut t = Trio::new();
        let old = t.elect();
        // Cut one follower off and write: the other one is the more caught up.
        let (cut, kept) = {
            let f: Vec<NodeId> = (1..=3).filter(|&i| i != old).collect();
            (f[0], f[1])
        };
        let cut_node = t.nodes.remove(&cut).unwrap();
        let put = PutRequest { key: b"k".to_vec(), ..Default::default() };
        t.nodes.get_mut(&old).unwrap().submit(1, Request::Write(Command::new(Op::Put(put))));
        let mut msgs = Vec::new();
        t.nodes.get_mut(&old).unwrap().run_once(&mut |m| msgs.extend(m)).unwrap();
        for m in msgs.into_iter().filter(|m| m.to == kept) {
            t.nodes.get_mut(&kept).unwrap().step(m);
        }
        let mut back = Vec::new();
        t.nodes.get_mut(&kept).unwrap().run_once(&mut |m| back.extend(m)).unwrap();
        t.nodes.get_mut(&kept).unwrap().sync().unwrap();
        t.nodes.get_mut(&kept).unwrap().run_once(&mut |m| back.extend(m)).unwrap();
        for m in back.into_iter().filter(|m| m.to == old) {
            t.nodes.get_mut(&old).unwrap().step(m);
        }
        t.nodes.insert(cut, cut_node);
        assert_eq!(t.nodes[&old].most_caught_up_voter(), Some(kept));
        t.nodes.get_mut(&old).unwrap().transfer_leader(8, None);
        let mut answers = Vec::new();
        for _ in 0..10 {
            t.step();
            answers.extend(t.transfers(old));
        }
        assert_eq!(answers, vec![(8, Ok(kept))]);
    }

    #[test]
    fn a_transfer_is_refused_off_the_leader_and_to_a_non_member() {
        let mut t = Trio::new();
        let old = t.elect();
        let follower = (1..=3).find(|&i| i != old).unwrap();
        t.transfers(old);
        t.transfers(follower);
        t.nodes.get_mut(&follower).unwrap().transfer_leader(1, Some(old));
        t.nodes.get_mut(&old).unwrap().transfer_leader(2, Some(99));
        t.nodes.get_mut(&old).unwrap().transfer_leader(3, Some(old));
        t.step();
        let f = t.transfers(follower);
        assert_eq!(f, vec![(1, Err(TransferFailure::NotLeader { leader: Some(old) }))]);
        let answers = t.transfers(old);
        assert_eq!(answers, vec![(2, Err(TransferFailure::BadTransferee(99))), (3, Ok(old))]);
        assert_eq!(
            format!("{}", TransferFailure::BadTransferee(99)),
            "etcdserver: bad leader transferee"
        );
    }

    #[test]
    fn writes_during_a_transfer_are_refused_as_not_applied_and_a_dead_target_times_out() {
        let mut t = Trio::new();
        let old = t.elect();
        let target = (1..=3).find(|&i| i != old).unwrap();
        // The target is gone: the transfer cannot finish.
        let gone = t.nodes.remove(&target).unwrap();
        t.transfers(old);
        t.nodes.get_mut(&old).unwrap().transfer_leader(5, Some(target));
        let put = PutRequest { key: b"k".to_vec(), ..Default::default() };
        t.nodes.get_mut(&old).unwrap().submit(6, Request::Write(Command::new(Op::Put(put))));
        let out = t.nodes.get_mut(&old).unwrap().run_once(&mut |_| {}).unwrap();
        assert_eq!(out.replies, vec![(6, Err(RequestError::NotLeader { leader: None }))]);
        let election_timeout = t.nodes[&old].cfg.raft.election_timeout_ticks;
        let mut answers = Vec::new();
        for _ in 0..=election_timeout {
            t.step_without(target);
            answers.extend(t.transfers(old));
        }
        assert_eq!(answers, vec![(5, Err(TransferFailure::TimedOut))]);
        assert_eq!(t.leader(), Some(old), "the leader resumes after the transfer gives up");
        drop(gone);
    }

    impl Trio {
        /// One tick of every member, then messages until quiet; messages to member
        /// `gone` are lost (it is absent).
        fn step_without(&mut self, gone: NodeId) {
            self.nodes.values_mut().for_each(|n| n.tick());
            for _ in 0..50 {
                let mut msgs = Vec::new();
                for (id, n) in self.nodes.iter_mut() {
                    let out = n.run_once(&mut |m| msgs.extend(m)).unwrap();
                    self.out.entry(*id).or_default().push(out);
                }
                msgs.retain(|m| m.to != gone);
                if msgs.is_empty() {
                    return;
                }
                for m in msgs {
                    self.nodes.get_mut(&m.to).unwrap().step(m);
                }
            }
        }
    }
}

/// A committed entry this build cannot decode (a newer build's command) stops the member
/// before it applies anything of it, on both apply paths; nothing after it applies.
#[cfg(test)]
mod newer_build_tests {
    use super::*;
    use crate::MemStore;
    use kv::PutRequest;

    fn put(key: &[u8]) -> Vec<u8> {
        let put = PutRequest { key: key.to_vec(), value: b"v".to_vec(), ..Default::default() };
        Command::new(Op::Put(put)).encode()
    }

    /// A put whose op tag no build here knows, as a newer build would encode a new op.
    fn newer_command() -> Vec<u8> {
        let mut data = put(b"k");
        // The format version byte, the flags byte, then the op's tag.
        data[2] = 0xEE;
        assert!(Command::decode(&data).is_err(), "the tag must be unknown to this build");
        data
    }

    /// A follower of leader 2 that was sent and told committed: a put of `a`, a newer
    /// build's command, a put of `b` (indices 1-3).
    fn follower(apply_apart: bool) -> Node<MemStore> {
        let store = MemStore::default();
        let restored = store.recover();
        let cfg = NodeConfig { apply_apart, ..NodeConfig::new(1, [1, 2, 3].into()) };
        let mut n = Node::new(cfg, store, restored).unwrap();
        let data = [put(b"a"), newer_command(), put(b"b")];
        let entries = (1..)
            .zip(data)
            .map(|(index, d)| Entry { term: 1, index, kind: EntryKind::Normal, data: d.into() })
            .collect();
        let append = MessageBody::Append { prev_index: 0, prev_term: 0, entries, commit: 3 };
        n.step(Message { from: 2, to: 1, term: 1, body: append });
        n.poll(&mut |_| {}).unwrap();
        n.sync().unwrap();
        n
    }

    fn says_why(e: &NodeError) {
        for part in ["entry at index 2 (term 1)", "newer raftkv", "Upgrade this member"] {
            assert!(e.0.contains(part), "{part:?} not in: {e}");
        }
    }

    #[test]
    fn applied_inline_the_member_stops_at_the_entry() {
        let mut n = follower(false);
        let Err(e) = n.poll(&mut |_| {}) else { panic!("the member must stop") };
        says_why(&e);
        assert_eq!(n.applied_index(), 1, "stopped at index 2");
        assert!(n.state().get(b"a").is_some() && n.state().get(b"b").is_none());
    }

    #[test]
    fn applied_apart_the_applier_stops_at_the_entry() {
        let mut n = follower(true);
        let mut a = n.applier();
        let out = n.poll(&mut |_| {}).unwrap();
        let [batch] = &out.apply[..] else { panic!("one batch: {:?}", out.apply) };
        let e = a.apply(batch.clone()).expect_err("the member must stop");
        says_why(&e);
        assert_eq!(a.applied_index(), 1, "stopped at index 2");
        assert!(a.state().get(b"a").is_some() && a.state().get(b"b").is_none());
    }

    /// A membership change's record from a newer build stops it too; a change without a
    /// record (the core's own, such as leaving a joint configuration) applies as nothing.
    #[test]
    fn a_member_record_this_build_cannot_decode_stops_the_member() {
        let mut sm = StateMachine::new(kv::Config::default());
        let step = ConfChangeSingle { kind: ConfChangeKind::AddLearner, node: 4 };
        let entry = |index, context: Vec<u8>| {
            let cc = ConfChange { changes: vec![step], context };
            Entry { term: 1, index, kind: EntryKind::ConfChange, data: cc.encode().into() }
        };
        assert_eq!(apply_entry(&mut sm, &entry(1, Vec::new())), Ok(None));
        let mut record = MemberOp::Remove(4).encode();
        record[1] = 0xEE;
        let e = apply_entry(&mut sm, &entry(2, record)).expect_err("the member must stop");
        assert!(e.0.contains("index 2") && e.0.contains("member change"), "{e}");
    }
}
