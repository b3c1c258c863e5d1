//! The Raft state machine: roles, elections, replication, commit, reads, snapshots.

use crate::confchange::{self, ConfChange, ConfChangeError};
use crate::log::RaftLog;
use crate::message::{Message, MessageBody, RejectHint};
use crate::progress::{Progress, ProgressState};
use crate::rng::Rng;
use crate::types::*;
use crate::validate::{self, PeerLimits};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

/// Tunables of one Raft member. Time is in ticks; the driver decides how long a tick is.
#[derive(Clone, Debug)]
pub struct Config {
    /// This member's id (non-zero).
    pub id: NodeId,
    /// Minimum election timeout; each timeout is drawn from `[this, 2 × this)`.
    pub election_timeout_ticks: u32,
    /// A leader sends heartbeats this often. Must be below the election timeout.
    pub heartbeat_interval_ticks: u32,
    /// Ask "would you vote for me?" before bumping the term (Raft thesis §9.6), so a
    /// member that was partitioned away cannot depose a healthy leader when it returns.
    pub pre_vote: bool,
    /// A leader that has not heard from a majority within an election timeout steps
    /// down, and followers that heard from a leader within that time ignore vote requests.
    pub check_quorum: bool,
    /// Most AppendEntries messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// Most entry bytes in flight to one follower.
    pub max_inflight_bytes: u64,
    /// Most entry bytes in one AppendEntries (at least one entry is always sent).
    pub max_msg_bytes: u64,
    /// Size of one InstallSnapshot chunk.
    pub snapshot_chunk_bytes: u64,
    /// Largest proposal accepted.
    pub max_proposal_bytes: u64,
    /// Most uncommitted entry bytes a leader accepts before refusing proposals.
    pub max_uncommitted_bytes: u64,
    /// Seed for election-timeout jitter.
    pub rng_seed: u64,
    /// Largest snapshot accepted from a leader. A follower buffers an incoming snapshot
    /// in memory, so this bounds what a peer can make it hold; a leader whose snapshot
    /// is larger cannot catch followers up by snapshot (they log why).
    pub max_snapshot_bytes: u64,
    /// Most entries accepted in one AppendEntries from a peer.
    pub max_append_entries: u64,
    /// Applied entries kept in memory for catching followers up, besides those a leader
    /// knows a follower still needs (etcd keeps 5000 after a snapshot). Older applied
    /// entries are dropped from memory before a snapshot covers them: they stay in the
    /// driver's durable log, and a follower that needs them after all gets a snapshot
    /// (the core asks for a new one, [`Raft::wants_snapshot`]). `u64::MAX` keeps every
    /// entry until the snapshot covers it; a driver that never takes snapshots must.
    pub catch_up_entries: u64,
    /// The same bound in bytes ([`Entry::size_bytes`]): fewer entries are kept when they
    /// are large.
    pub catch_up_bytes: u64,
}

impl Config {
    /// Defaults that suit a tick of about 50 ms: heartbeats every 250 ms, elections after
    /// 1–2 s of silence.
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            election_timeout_ticks: 20,
            heartbeat_interval_ticks: 5,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 256,
            max_inflight_bytes: 32 << 20,
            max_msg_bytes: 1 << 20,
            snapshot_chunk_bytes: 1 << 20,
            max_proposal_bytes: 2 << 20,
            max_uncommitted_bytes: 64 << 20,
            rng_seed: id,
            max_snapshot_bytes: 16 << 30,
            max_append_entries: 1 << 20,
            catch_up_entries: 5_000,
            catch_up_bytes: 16 << 20,
        }
    }

    /// The limits peer messages are checked against ([`crate::validate::check_message`]).
    pub fn peer_limits(&self) -> PeerLimits {
        PeerLimits {
            max_snapshot_bytes: self.max_snapshot_bytes,
            max_append_entries: self.max_append_entries,
        }
    }

    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |what: &str| Err(ConfigError(what.to_string()));
        if self.id == 0 {
            return fail("id must be non-zero (0 means \"no node\")");
        }
        if self.heartbeat_interval_ticks == 0 {
            return fail("heartbeat_interval_ticks must be at least 1");
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return fail("election_timeout_ticks must be greater than heartbeat_interval_ticks");
        }
        if self.max_inflight_msgs == 0 || self.max_inflight_bytes == 0 {
            return fail("max_inflight_msgs and max_inflight_bytes must be at least 1");
        }
        if self.max_msg_bytes == 0 || self.snapshot_chunk_bytes == 0 {
            return fail("max_msg_bytes and snapshot_chunk_bytes must be at least 1");
        }
        // A leader sends at least one entry per append, and up to max_msg_bytes of them
        // (24 bytes each at least): its followers must accept that many.
        if self.max_append_entries < self.max_msg_bytes / 24 + 1 {
            return fail("max_append_entries must be at least max_msg_bytes / 24 + 1");
        }
        Ok(())
    }
}

/// A setting that does not make sense, with what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid raft config: {}", self.0)
    }
}
impl std::error::Error for ConfigError {}

/// A member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes, term not yet bumped.
    PreCandidate,
    /// Campaigning in a new term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// Why a proposal was refused. All are operating errors: the client retries elsewhere or
/// later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This member does not lead; `leader` is who it believes does, if anyone.
    NotLeader {
        /// The leader this member knows of.
        leader: Option<NodeId>,
    },
    /// The proposal exceeds [`Config::max_proposal_bytes`].
    TooLarge {
        /// Size of the proposal.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Too many uncommitted bytes are queued; retry once some commit.
    Busy,
    /// Leadership is being transferred; retry once the new leader is known.
    Transferring,
    /// A membership change is not committed yet, or the joint configuration it entered
    /// has not been left yet; only one change may be in flight.
    ConfChangePending,
    /// The membership change is not valid for the current configuration.
    BadConfChange(ConfChangeError),
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader { leader: Some(l) } => {
                write!(f, "not the leader; member {l} is, send there")
            }
            ProposeError::NotLeader { leader: None } => {
                write!(f, "not the leader and no leader is known; retry shortly")
            }
            ProposeError::TooLarge { size, max } => {
                write!(f, "proposal of {size} bytes exceeds the limit of {max} bytes")
            }
            ProposeError::Busy => write!(f, "too many uncommitted proposals; retry shortly"),
            ProposeError::Transferring => {
                write!(f, "leadership is being transferred; retry shortly")
            }
            ProposeError::ConfChangePending => {
                write!(f, "a membership change is in progress; retry once it completes")
            }
            ProposeError::BadConfChange(e) => write!(f, "{e}"),
        }
    }
}
impl std::error::Error for ProposeError {}

/// Why a read was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// No leader is known to forward the read to.
    NoLeader,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no leader is known; retry shortly")
    }
}
impl std::error::Error for ReadError {}

/// Why [`Raft::transfer_leader`] refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferError {
    /// Only the leader can transfer leadership; `leader` is who does, if known.
    NotLeader {
        /// The leader this member knows of.
        leader: Option<NodeId>,
    },
    /// The target is not a voting member (unknown, or a learner).
    NotVoter(NodeId),
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::NotLeader { leader: Some(l) } => {
                write!(f, "not the leader; member {l:x} is, send there")
            }
            TransferError::NotLeader { leader: None } => {
                write!(f, "not the leader and no leader is known; retry shortly")
            }
            TransferError::NotVoter(id) => {
                write!(f, "member {id:x} is not a voting member and cannot lead")
            }
        }
    }
}
impl std::error::Error for TransferError {}

/// Why [`Raft::compact`] refused a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompactError {
    /// The snapshot is not newer than the log's current start.
    Stale {
        /// Snapshot index offered.
        index: Index,
        /// Index already covered by the current snapshot.
        covered: Index,
    },
    /// The snapshot claims an index that has not been applied yet.
    NotApplied {
        /// Snapshot index offered.
        index: Index,
        /// Highest index handed out for applying.
        applied: Index,
    },
    /// The snapshot's term does not match the log's term at its index.
    TermMismatch {
        /// Snapshot index offered.
        index: Index,
        /// Snapshot term offered.
        term: Term,
    },
    /// The snapshot's configuration is not the one in force at its index (take it from
    /// [`Raft::conf_at`]).
    ConfMismatch {
        /// Snapshot index offered.
        index: Index,
    },
}

impl fmt::Display for CompactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompactError::Stale { index, covered } => {
                write!(f, "snapshot at {index} is not newer than the current one at {covered}")
            }
            CompactError::NotApplied { index, applied } => {
                write!(f, "snapshot at {index} is beyond the applied index {applied}")
            }
            CompactError::TermMismatch { index, term } => {
                write!(f, "snapshot at {index} claims term {term}, which the log disagrees with")
            }
            CompactError::ConfMismatch { index } => write!(
                f,
                "snapshot at {index} carries a configuration other than the one in force there"
            ),
        }
    }
}
impl std::error::Error for CompactError {}

/// A linearizable read that may be served once the state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's id for the read (from [`Raft::read_index`]).
    pub ctx: u64,
    /// Serve the read once applied ≥ this index.
    pub index: Index,
}

/// What the driver must do next, in the order the fields are listed in the crate docs.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    /// Acknowledge with [`Raft::on_persisted`] once the persist part is durable.
    pub number: u64,
    /// Messages that may be sent immediately.
    pub messages: Vec<Message>,
    /// Hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader: persist it, then restore the state machine
    /// from it before applying `committed_entries`.
    pub snapshot: Option<Snapshot>,
    /// Entries to persist. If the first index is already stored, the stored log from that
    /// index on is replaced.
    pub entries: Vec<Entry>,
    /// Committed entries to apply, in order, after `snapshot` (if any).
    pub committed_entries: Vec<Entry>,
    /// Reads that may be served once the applied index reaches theirs.
    pub read_states: Vec<ReadState>,
    /// Reads that cannot be served by this member (leadership lost); retry them.
    pub failed_reads: Vec<u64>,
}

impl Ready {
    /// True if the Ready carries nothing to persist (its `on_persisted` is still owed).
    pub fn persist_is_empty(&self) -> bool {
        self.hard_state.is_none() && self.snapshot.is_none() && self.entries.is_empty()
    }
}

/// What a driver recovered from storage at start-up.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    /// The last durable hard state.
    pub hard_state: HardState,
    /// The last durable snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// The durable entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

/// A linearizable read waiting for its leadership confirmation.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    ctx: u64,
    /// Who asked: this member, or a follower that forwarded it.
    from: NodeId,
    index: Index,
    round: u64,
}

/// Where a leader reads its snapshot's bytes when the service keeps them (in a file)
/// instead of the core: see [`Raft::set_snapshot_source`]. The snapshot is the largest
/// thing a member holds; with a source, the core holds only its metadata and asks for
/// one chunk at a time while it catches a follower up.
pub trait SnapshotSource: Send {
    /// Up to `max_len` bytes of the data of the snapshot `meta` describes, from `offset`
    /// into the data (fewer only at its end), and the data's whole length. `None` when
    /// they cannot be read now (say why in the service's log): the chunk is asked for
    /// again at the follower's next answer, as after a lost chunk.
    fn read(&mut self, meta: &SnapshotMeta, offset: u64, max_len: u64) -> Option<(Arc<[u8]>, u64)>;
}

/// One Raft member: the whole protocol state, driven by the caller.
pub struct Raft {
    cfg: Config,
    rng: Rng,
    term: Term,
    vote: NodeId,
    role: Role,
    leader: Option<NodeId>,
    /// The configuration in force: the latest one in the log (effective on append).
    conf: ConfState,
    /// The configurations of the log, by the index of the entry that made each one. The
    /// first is the base (the snapshot's, or the initial one); the others come from
    /// ConfChange entries still in the log, so a truncation can fall back to the one
    /// before.
    conf_history: Vec<(Index, ConfState)>,
    log: RaftLog,
    /// Leader: the member leadership is being transferred to, and for how many ticks.
    lead_transferee: Option<(NodeId, u32)>,

    election_elapsed: u32,
    randomized_election_timeout: u32,
    heartbeat_elapsed: u32,

    /// Votes (or pre-votes) received in the current campaign.
    votes: BTreeMap<NodeId, bool>,
    /// Leader only: one entry per other voter.
    progress: BTreeMap<NodeId, Progress>,
    /// Leader only: bytes proposed but not yet committed.
    uncommitted_bytes: u64,
    /// Leader only: new entries to send at the next `ready`.
    pending_broadcast: bool,
    /// Leader only: the commit index advanced; tell followers at the next `ready`.
    commit_notice_due: bool,

    /// Messages that may leave now.
    msgs: Vec<Message>,
    /// Messages that may leave once everything handed out so far is durable.
    msgs_after_persist: Vec<Message>,
    /// Messages waiting for `on_persisted(n)`.
    msgs_waiting: VecDeque<(u64, Message)>,

    /// Follower: a snapshot being received in chunks.
    incoming_snapshot: Option<(SnapshotMeta, Vec<u8>)>,

    /// Leader: reads waiting for an entry of this term to commit.
    reads_awaiting_commit: Vec<(u64, NodeId)>,
    /// Leader: reads waiting for a round of heartbeats to confirm leadership.
    reads_pending: VecDeque<PendingRead>,
    /// Leader: the last read round broadcast.
    read_round: u64,
    /// Leader: a new read round must be broadcast.
    read_round_due: bool,
    /// Follower: the reads of the one ReadIndex request on its way to the leader (the
    /// request carries the last one's ctx), oldest first. One request at a time: reads
    /// that arrive meanwhile wait in `reads_to_forward` and share the next request, so
    /// a follower costs the leader one ReadIndex per round trip, not one per read.
    reads_forwarded: Vec<u64>,
    /// Follower: ticks since the request of `reads_forwarded` left; past an election
    /// timeout it (or its answer) is taken as lost and the reads are asked for again.
    reads_forwarded_elapsed: u32,
    /// Follower: reads that arrived while a request was on its way.
    reads_to_forward: Vec<u64>,
    read_states: Vec<ReadState>,
    failed_reads: Vec<u64>,

    /// The last hard state handed to the driver.
    handed_hard_state: HardState,
    ready_number: u64,
    persisted_number: u64,
    /// (ready number, last index, last term) of each Ready that carried entries.
    persist_marks: VecDeque<(u64, Index, Term)>,
    /// Peer messages dropped by [`Raft::step`] because a field was out of bounds.
    invalid_dropped: u64,
    /// Where snapshot bytes come from when the service keeps them; `None`: the core
    /// holds them (`log.snapshot.data`).
    snapshot_source: Option<Box<dyn SnapshotSource>>,
    /// Leader: a follower needs entries trimmed from memory that the snapshot does not
    /// cover; the driver should take a snapshot ([`Raft::wants_snapshot`]).
    snapshot_wanted: bool,
    /// The applied index at the last trim of the in-memory log (see `maybe_trim`).
    trim_checked: Index,
    /// Bytes of the entries handed out for applying since then.
    trim_bytes_since: u64,
}

impl Raft {
    /// A brand-new member of a new cluster with the given voters (which include `cfg.id`).
    pub fn new(cfg: Config, voters: &BTreeSet<NodeId>) -> Result<Raft, ConfigError> {
        Self::restore(cfg, voters, Restored::default())
    }

    /// A member restarted from what storage recovered. `voters` is used when the
    /// recovered state has no snapshot (a snapshot carries its own membership).
    pub fn restore(
        cfg: Config,
        voters: &BTreeSet<NodeId>,
        restored: Restored,
    ) -> Result<Raft, ConfigError> {
        Self::restore_with(cfg, Some(voters), restored)
    }

    /// A member joining an existing cluster (etcd's `--initial-cluster-state existing`):
    /// without a snapshot in `restored` it has no configuration at all, so it never
    /// campaigns, and its first configuration comes with the leader's snapshot (the
    /// driver must make sure it takes no log entries before that snapshot: the
    /// configuration the cluster was born with is not in the log). With a snapshot it is
    /// an ordinary restart.
    pub fn join(cfg: Config, restored: Restored) -> Result<Raft, ConfigError> {
        Self::restore_with(cfg, None, restored)
    }

    fn restore_with(
        cfg: Config,
        voters: Option<&BTreeSet<NodeId>>,
        restored: Restored,
    ) -> Result<Raft, ConfigError> {
        cfg.validate()?;
        let snapshot = restored.snapshot.unwrap_or_default();
        let conf = match voters {
            _ if snapshot.meta.index > 0 => snapshot.meta.conf.clone(),
            Some(voters) => ConfState::from_voters(voters.clone()),
            None => ConfState::default(),
        };
        let joining = voters.is_none() && snapshot.meta.index == 0;
        if (conf.voters.is_empty() && !joining) || conf.members().contains(&0) {
            return Err(ConfigError("the voter set must be non-empty and not contain 0".into()));
        }
        let base = (snapshot.meta.index, conf.clone());
        let first = snapshot.meta.index + 1;
        for (k, e) in restored.entries.iter().enumerate() {
            if e.index != first + k as u64 {
                return Err(ConfigError(format!(
                    "recovered log is not contiguous: expected index {} after snapshot {}, found {}",
                    first + k as u64,
                    snapshot.meta.index,
                    e.index
                )));
            }
        }
        let mut hs = restored.hard_state;
        let log = RaftLog::restore(snapshot, restored.entries, hs.commit);
        if log.last_term() > hs.term {
            // A torn write kept entries of a newer term but not the hard state written
            // after them. Nothing that depended on that hard state was sent (answers wait
            // for the sync), so adopting the entries' term with no vote is safe.
            hs = HardState { term: log.last_term(), vote: 0, commit: hs.commit };
        }
        let mut r = Raft {
            rng: Rng::new(cfg.rng_seed),
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: None,
            conf,
            conf_history: vec![base],
            log,
            lead_transferee: None,
            election_elapsed: 0,
            randomized_election_timeout: 0,
            heartbeat_elapsed: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            uncommitted_bytes: 0,
            pending_broadcast: false,
            commit_notice_due: false,
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            msgs_waiting: VecDeque::new(),
            incoming_snapshot: None,
            snapshot_source: None,
            reads_awaiting_commit: Vec::new(),
            reads_pending: VecDeque::new(),
            read_round: 0,
            read_round_due: false,
            reads_forwarded: Vec::new(),
            reads_forwarded_elapsed: 0,
            reads_to_forward: Vec::new(),
            read_states: Vec::new(),
            failed_reads: Vec::new(),
            handed_hard_state: hs,
            ready_number: 0,
            persisted_number: 0,
            persist_marks: VecDeque::new(),
            invalid_dropped: 0,
            snapshot_wanted: false,
            trim_checked: 0,
            trim_bytes_since: 0,
            cfg,
        };
        r.handed_hard_state = r.hard_state();
        let first = r.log.first_index();
        r.conf_after_log_change(first);
        r.reset_election_timer();
        Ok(r)
    }

    // ---------------------------------------------------------------- inputs

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.role == Role::Leader {
            self.tick_leader();
        } else if self.election_elapsed >= self.randomized_election_timeout && self.promotable() {
            self.campaign();
        } else {
            self.tick_forwarded_reads();
        }
    }

    /// A follower's ReadIndex request unanswered for an election timeout was lost, or its
    /// answer was: asks again for its reads and those that queued since. Asking again is
    /// safe: a later read index only makes the reads wait for more.
    fn tick_forwarded_reads(&mut self) {
        if self.reads_forwarded.is_empty() {
            return;
        }
        self.reads_forwarded_elapsed += 1;
        if self.reads_forwarded_elapsed >= self.cfg.election_timeout_ticks {
            let mut again = std::mem::take(&mut self.reads_forwarded);
            again.append(&mut self.reads_to_forward);
            self.reads_to_forward = again;
            self.forward_reads();
        }
    }

    /// Sends the queued reads to the leader as one ReadIndex request, unless one is on
    /// its way (they go when its answer comes: a read must not take an index the leader
    /// fixed before the read arrived).
    fn forward_reads(&mut self) {
        let Some(leader) = self.leader else { return };
        if !self.reads_forwarded.is_empty() || self.reads_to_forward.is_empty() {
            return;
        }
        self.reads_forwarded = std::mem::take(&mut self.reads_to_forward);
        self.reads_forwarded_elapsed = 0;
        let ctx = *self.reads_forwarded.last().expect("a request has reads");
        self.send(leader, MessageBody::ReadIndex { ctx });
    }

    fn tick_leader(&mut self) {
        if let Some((target, elapsed)) = self.lead_transferee {
            // Thesis §3.10: give up if the target has not taken over within an election
            // timeout, and accept proposals again.
            let elapsed = elapsed + 1;
            self.lead_transferee =
                (elapsed < self.cfg.election_timeout_ticks).then_some((target, elapsed));
        }
        self.heartbeat_elapsed += 1;
        if self.heartbeat_elapsed >= self.cfg.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
        if self.election_elapsed >= self.cfg.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_recently_active() {
                // Raft thesis §6.2: a leader that cannot reach a majority steps down, so
                // clients stop waiting on it and it stops serving reads.
                let term = self.term;
                self.become_follower(term, None);
            }
        }
    }

    fn quorum_recently_active(&mut self) -> bool {
        let mut active = BTreeMap::new();
        active.insert(self.cfg.id, true);
        for (id, pr) in self.progress.iter_mut() {
            active.insert(*id, pr.recent_active);
            pr.recent_active = false;
        }
        let (incoming, outgoing) = (&self.conf.voters, &self.conf.voters_outgoing);
        crate::quorum::joint_vote_result(incoming, outgoing, &active)
            == crate::quorum::VoteResult::Won
    }

    /// Processes one message from a peer. A message with a field out of bounds
    /// ([`crate::validate::check_message`]) is dropped and counted
    /// ([`Raft::invalid_messages_dropped`]); drivers should check (and log) first.
    pub fn step(&mut self, m: Message) {
        let too_far_ahead = m.term > self.term.saturating_add(validate::TERM_JUMP_MAX);
        if too_far_ahead
            || validate::check_message(&m, self.cfg.id, &self.cfg.peer_limits()).is_err()
        {
            self.invalid_dropped += 1;
            return;
        }
        if m.term > self.term {
            if !self.accept_higher_term(&m) {
                return;
            }
        } else if m.term < self.term {
            self.answer_stale_term(&m);
            return;
        }
        match self.role {
            Role::Leader => self.step_leader(m),
            Role::Candidate | Role::PreCandidate => self.step_candidate(m),
            Role::Follower => self.step_follower(m),
        }
    }

    /// A message from a higher term. Returns false if it must be ignored.
    fn accept_higher_term(&mut self, m: &Message) -> bool {
        let is_vote = matches!(
            m.body,
            MessageBody::Vote { transfer: false, .. } | MessageBody::PreVote { .. }
        );
        if is_vote && self.in_leader_lease() {
            // Raft thesis §4.2.3: a member that hears from a live leader ignores vote
            // requests, so a member that was partitioned away (or removed) cannot depose
            // it. A transfer's vote request is the leader's own wish (§3.10): honour it.
            return false;
        }
        match m.body {
            // A pre-vote does not change anyone's term.
            MessageBody::PreVote { .. } => true,
            MessageBody::PreVoteResp { reject: false } => true,
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Snapshot { .. } => {
                self.become_follower(m.term, Some(m.from));
                true
            }
            _ => {
                self.become_follower(m.term, None);
                true
            }
        }
    }

    fn in_leader_lease(&self) -> bool {
        self.cfg.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.cfg.election_timeout_ticks
    }

    fn answer_stale_term(&mut self, m: &Message) {
        match m.body {
            // A deposed leader must learn of the new term, or with check-quorum and
            // pre-vote it could go on believing it leads.
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } => {
                self.send(m.from, MessageBody::HeartbeatResp { read_round: 0 });
            }
            MessageBody::PreVote { .. } => {
                self.send(m.from, MessageBody::PreVoteResp { reject: true });
            }
            _ => {}
        }
    }

    fn step_common(&mut self, m: &Message) -> bool {
        match m.body {
            MessageBody::PreVote { last_index, last_term } => {
                // m.term is the term the candidate would campaign in. Grant if we could
                // vote for it in that term and its log is at least as up to date (§5.4.1).
                let can_vote = m.term > self.term
                    || self.vote == m.from
                    || (self.vote == 0 && self.leader.is_none());
                let grant = can_vote && self.log.is_up_to_date(last_index, last_term);
                let term = if grant { m.term } else { self.term };
                self.msgs.push(Message {
                    from: self.cfg.id,
                    to: m.from,
                    term,
                    body: MessageBody::PreVoteResp { reject: !grant },
                });
                true
            }
            MessageBody::Vote { last_index, last_term, .. } => {
                let can_vote = self.vote == m.from || (self.vote == 0 && self.leader.is_none());
                let grant = can_vote && self.log.is_up_to_date(last_index, last_term);
                if grant {
                    self.vote = m.from;
                    self.election_elapsed = 0;
                }
                self.send(m.from, MessageBody::VoteResp { reject: !grant });
                true
            }
            MessageBody::ReadIndex { ctx } if self.role != Role::Leader => {
                self.send(m.from, MessageBody::ReadIndexResp { ctx, index: 0 });
                true
            }
            _ => false,
        }
    }

    fn step_follower(&mut self, m: Message) {
        if self.step_common(&m) {
            return;
        }
        match m.body {
            MessageBody::Append { prev_index, prev_term, entries, commit } => {
                self.hear_from_leader(m.from);
                self.handle_append(m.from, prev_index, prev_term, entries, commit);
            }
            MessageBody::Heartbeat { commit, read_round } => {
                self.hear_from_leader(m.from);
                self.log.commit_to(commit.min(self.log.last_index()));
                self.send(m.from, MessageBody::HeartbeatResp { read_round });
            }
            MessageBody::Snapshot { meta, offset, total_bytes, chunk, done } => {
                self.hear_from_leader(m.from);
                self.handle_snapshot_chunk(m.from, meta, offset, total_bytes, chunk, done);
            }
            MessageBody::TimeoutNow
                if self.leader == Some(m.from)
                    && self.role == Role::Follower
                    && self.conf.is_voter(self.cfg.id) =>
            {
                // Thesis §3.10: the leader hands over; campaign at once, without pre-vote.
                // Only our own leader may ask, and only once we follow it.
                self.become_candidate(true);
            }
            MessageBody::ReadIndexResp { ctx, index }
                if self.leader == Some(m.from) && self.reads_forwarded.last() == Some(&ctx) =>
            {
                // Every read of the request arrived before it left, so the index the
                // leader fixed on receiving it serves them all.
                let reads = std::mem::take(&mut self.reads_forwarded);
                if index == 0 {
                    self.failed_reads.extend(reads);
                } else {
                    self.read_states.extend(reads.into_iter().map(|ctx| ReadState { ctx, index }));
                }
                self.forward_reads();
            }
            _ => {}
        }
    }

    fn hear_from_leader(&mut self, leader: NodeId) {
        self.election_elapsed = 0;
        if self.leader != Some(leader) {
            self.fail_forwarded_reads();
            self.leader = Some(leader);
        }
    }

    fn step_candidate(&mut self, m: Message) {
        if self.step_common(&m) {
            return;
        }
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Snapshot { .. } => {
                // Someone won this term (§5.2): follow it.
                let term = self.term;
                self.become_follower(term, Some(m.from));
                self.step_follower(m);
            }
            // A grant carries the term it was asked for, ours being `term + 1`; a grant
            // for `term` answers a round run before we reached this term (a reply held
            // back), so it says nothing of this one (thesis §9.6: grow the term only on a
            // majority's word for that term).
            MessageBody::PreVoteResp { reject }
                if self.role == Role::PreCandidate
                    && (reject || self.term.checked_add(1) == Some(m.term)) =>
            {
                self.record_vote(m.from, !reject);
            }
            MessageBody::VoteResp { reject } if self.role == Role::Candidate => {
                self.record_vote(m.from, !reject);
            }
            _ => {}
        }
    }

    fn record_vote(&mut self, from: NodeId, granted: bool) {
        self.votes.entry(from).or_insert(granted);
        let (incoming, outgoing) = (&self.conf.voters, &self.conf.voters_outgoing);
        match crate::quorum::joint_vote_result(incoming, outgoing, &self.votes) {
            crate::quorum::VoteResult::Won => {
                if self.role == Role::PreCandidate {
                    self.become_candidate(false);
                } else {
                    self.become_leader();
                }
            }
            crate::quorum::VoteResult::Lost => {
                let term = self.term;
                self.become_follower(term, None);
            }
            crate::quorum::VoteResult::Pending => {}
        }
    }

    fn step_leader(&mut self, m: Message) {
        if self.step_common(&m) {
            return;
        }
        let from = m.from;
        if let Some(pr) = self.progress.get_mut(&from) {
            pr.recent_active = true;
        }
        match m.body {
            MessageBody::AppendResp { index, reject } => {
                self.handle_append_resp(from, index, reject)
            }
            MessageBody::HeartbeatResp { read_round } => {
                self.handle_heartbeat_resp(from, read_round)
            }
            MessageBody::SnapshotResp { snapshot_index, next_offset, done, last_index } => {
                self.handle_snapshot_resp(from, snapshot_index, next_offset, done, last_index)
            }
            MessageBody::ReadIndex { ctx } => self.start_read(ctx, from),
            _ => {}
        }
    }

    /// Appends a command to the log if this member leads. Returns where it will commit if
    /// it commits at all; a later leader may overwrite it, which the driver learns when a
    /// different entry is applied at that index.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(Index, Term), ProposeError> {
        self.check_can_propose()?;
        let size = data.len() as u64;
        if size > self.cfg.max_proposal_bytes {
            return Err(ProposeError::TooLarge { size, max: self.cfg.max_proposal_bytes });
        }
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + size > self.cfg.max_uncommitted_bytes
        {
            return Err(ProposeError::Busy);
        }
        let index = self.append_entry(EntryKind::Normal, data.into());
        Ok((index, self.term))
    }

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if self.lead_transferee.is_some() {
            return Err(ProposeError::Transferring);
        }
        Ok(())
    }

    /// Proposes a membership change (leader only). It takes effect on each member when
    /// appended there. A change of voters enters a joint configuration; the leader
    /// leaves it by itself once it commits. Refused while another change is uncommitted
    /// or the configuration is joint, and when invalid for the current configuration.
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<(Index, Term), ProposeError> {
        self.check_can_propose()?;
        if self.conf.is_joint() || self.pending_conf_index() > self.log.committed {
            return Err(ProposeError::ConfChangePending);
        }
        if cc.is_leave_joint() {
            return Err(ProposeError::BadConfChange(ConfChangeError::NotJoint));
        }
        if cc.context.len() > confchange::CONF_CHANGE_CONTEXT_BYTES_MAX {
            let len = cc.context.len();
            return Err(ProposeError::BadConfChange(ConfChangeError::ContextTooLarge(len)));
        }
        confchange::apply(&self.conf, &cc).map_err(ProposeError::BadConfChange)?;
        let index = self.append_entry(EntryKind::ConfChange, cc.encode().into());
        Ok((index, self.term))
    }

    /// Moves leadership to `target` (Raft thesis §3.10): proposals are refused while the
    /// transfer runs; the target is caught up and then told to campaign at once. The
    /// transfer is abandoned after an election timeout. Transferring to itself does
    /// nothing.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader { leader: self.leader });
        }
        if target == self.cfg.id {
            return Ok(());
        }
        if !self.conf.is_voter(target) {
            return Err(TransferError::NotVoter(target));
        }
        self.lead_transferee = Some((target, 0));
        self.maybe_send_timeout_now(target);
        self.send_append(target, false);
        Ok(())
    }

    /// Sends TimeoutNow to the transfer target once its log matches ours.
    fn maybe_send_timeout_now(&mut self, id: NodeId) {
        let Some((target, _)) = self.lead_transferee else { return };
        let caught_up =
            self.progress.get(&id).is_some_and(|p| p.match_index == self.log.last_index());
        if target == id && caught_up {
            self.send(id, MessageBody::TimeoutNow);
        }
    }

    fn append_entry(&mut self, kind: EntryKind, data: Arc<[u8]>) -> Index {
        let entry = Entry { term: self.term, index: self.log.last_index() + 1, kind, data };
        self.uncommitted_bytes += entry.size_bytes();
        let index = entry.index;
        self.log.append(entry);
        if kind == EntryKind::ConfChange {
            self.conf_after_log_change(index);
        }
        // Sent at the next `ready`, so proposals made between two Readies share messages.
        self.pending_broadcast = true;
        index
    }

    /// Starts a linearizable read (ReadIndex, Raft thesis §6.4). The answer comes as a
    /// [`ReadState`] or a failed read in a later [`Ready`]. `ctx` must be unique among
    /// this member's outstanding reads. A follower forwards the read to its leader, in one
    /// request with the reads that queued while its previous request was on its way (one
    /// in flight; asked again after an election timeout without answer); the driver
    /// should still time out reads whose answer never comes.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ReadError> {
        match self.role {
            Role::Leader => {
                self.start_read(ctx, self.cfg.id);
                Ok(())
            }
            _ => match self.leader {
                Some(_) => {
                    self.reads_to_forward.push(ctx);
                    self.forward_reads();
                    Ok(())
                }
                None => Err(ReadError::NoLeader),
            },
        }
    }

    fn start_read(&mut self, ctx: u64, from: NodeId) {
        if self.log.term_at(self.log.committed) != Some(self.term) {
            // §6.4 step 1: until an entry of its own term commits, a new leader does not
            // know the latest commit index.
            self.reads_awaiting_commit.push((ctx, from));
            return;
        }
        let index = self.log.committed;
        self.reads_pending.push_back(PendingRead { ctx, from, index, round: self.read_round + 1 });
        self.read_round_due = true;
        self.confirm_reads();
    }

    fn release_reads_awaiting_commit(&mut self) {
        if self.reads_awaiting_commit.is_empty()
            || self.log.term_at(self.log.committed) != Some(self.term)
        {
            return;
        }
        for (ctx, from) in std::mem::take(&mut self.reads_awaiting_commit) {
            self.start_read(ctx, from);
        }
    }

    /// Serves every pending read whose round a majority (the leader included) has
    /// acknowledged in this term.
    fn confirm_reads(&mut self) {
        let (me, progress) = (self.cfg.id, &self.progress);
        let round = |id: NodeId| {
            if id == me {
                u64::MAX
            } else {
                progress.get(&id).map_or(0, |p| p.read_round_acked)
            }
        };
        let (incoming, outgoing) = (&self.conf.voters, &self.conf.voters_outgoing);
        let confirmed = crate::quorum::joint_committed(incoming, outgoing, round);
        while let Some(read) = self.reads_pending.front().copied() {
            if read.round > confirmed {
                break;
            }
            self.reads_pending.pop_front();
            if read.from == self.cfg.id {
                self.read_states.push(ReadState { ctx: read.ctx, index: read.index });
            } else {
                self.send(
                    read.from,
                    MessageBody::ReadIndexResp { ctx: read.ctx, index: read.index },
                );
            }
        }
    }

    fn fail_all_reads(&mut self) {
        let awaiting = std::mem::take(&mut self.reads_awaiting_commit);
        let pending = std::mem::take(&mut self.reads_pending);
        let all = awaiting.into_iter().chain(pending.into_iter().map(|r| (r.ctx, r.from)));
        for (ctx, from) in all {
            if from == self.cfg.id {
                self.failed_reads.push(ctx);
            } else {
                self.send(from, MessageBody::ReadIndexResp { ctx, index: 0 });
            }
        }
        self.read_round_due = false;
        self.fail_forwarded_reads();
    }

    fn fail_forwarded_reads(&mut self) {
        let forwarded = std::mem::take(&mut self.reads_forwarded);
        self.failed_reads.extend(forwarded);
        let queued = std::mem::take(&mut self.reads_to_forward);
        self.failed_reads.extend(queued);
    }

    /// The service took a snapshot (already durable) at an applied index: discard the log
    /// up to it. Returns the discarded entries, for the caller to free where it suits it:
    /// a log of 100k entries took a loaded member's node thread 10-30 ms to free, a
    /// stall of every heartbeat, append and client answer behind it.
    pub fn compact(&mut self, snapshot: Snapshot) -> Result<Vec<Entry>, CompactError> {
        let index = snapshot.meta.index;
        let covered = self.log.snapshot.meta.index;
        if index <= covered {
            return Err(CompactError::Stale { index, covered });
        }
        if index > self.log.applied {
            return Err(CompactError::NotApplied { index, applied: self.log.applied });
        }
        if self.log.term_at(index) != Some(snapshot.meta.term) {
            return Err(CompactError::TermMismatch { index, term: snapshot.meta.term });
        }
        if snapshot.meta.conf != self.conf_at(index) {
            return Err(CompactError::ConfMismatch { index });
        }
        let keep_from = self.conf_history.partition_point(|(i, _)| *i <= index);
        let mut history = vec![(index, snapshot.meta.conf.clone())];
        history.extend(self.conf_history.drain(keep_from..));
        self.conf_history = history;
        let discarded = self.log.compact(snapshot);
        self.drop_held_snapshot_data();
        // If a follower still needs more than this one covers, the next append to it
        // asks again.
        self.snapshot_wanted = false;
        Ok(discarded)
    }

    // ------------------------------------------------------------ elections

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let min = self.cfg.election_timeout_ticks as u64;
        self.randomized_election_timeout = self.rng.range(min, 2 * min) as u32;
    }

    /// Whether this member may campaign: it is a voter in the configuration in force (the
    /// latest in its log), or in the one at its commit index. The second case is a member
    /// that holds a change removing it (or making it a learner) that it does not know to
    /// be committed: the members still in the configuration before that change may need
    /// its vote, which it refuses while its log is ahead of theirs, so it must be able to
    /// win and finish the change itself (docs/ARCHITECTURE.md, "A removed member that
    /// holds its removal"). Votes are counted in the configuration in force, where its
    /// own vote does not count, so this changes who may ask, never what wins.
    fn promotable(&self) -> bool {
        let id = self.cfg.id;
        self.conf.is_voter(id) || self.conf_ref_at(self.log.committed).is_voter(id)
    }

    fn campaign(&mut self) {
        if self.term.checked_add(1).is_none() {
            // Only a corrupt hard state gets here (peers' terms stop at TERM_MAX): never
            // wrap around to term 0, which would undo every vote.
            return;
        }
        if self.cfg.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate(false);
        }
    }

    fn become_pre_candidate(&mut self) {
        self.role = Role::PreCandidate;
        self.set_leader(None);
        self.votes.clear();
        self.reset_election_timer();
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for id in self.other_voters() {
            self.msgs.push(Message {
                from: self.cfg.id,
                to: id,
                term: self.term + 1,
                body: MessageBody::PreVote { last_index, last_term },
            });
        }
        self.record_vote(self.cfg.id, true);
    }

    /// `transfer`: the leader asked us to take over (TimeoutNow), so our vote requests
    /// say so and members with a live leader still consider them.
    fn become_candidate(&mut self, transfer: bool) {
        self.role = Role::Candidate;
        self.term += 1;
        self.vote = self.cfg.id;
        self.set_leader(None);
        self.votes.clear();
        self.reset_election_timer();
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for id in self.other_voters() {
            self.send(id, MessageBody::Vote { last_index, last_term, transfer });
        }
        // Our own vote counts only once it is durable: it travels as an answer to
        // ourselves, held back like any other vote.
        self.send(self.cfg.id, MessageBody::VoteResp { reject: false });
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(term >= self.term, "terms never decrease");
        if term > self.term {
            self.term = term;
            self.vote = 0;
        }
        if self.role == Role::Leader {
            self.fail_all_reads();
        }
        self.role = Role::Follower;
        self.set_leader(leader);
        self.progress.clear();
        self.lead_transferee = None;
        self.pending_broadcast = false;
        self.commit_notice_due = false;
        self.uncommitted_bytes = 0;
        self.reset_election_timer();
    }

    fn set_leader(&mut self, leader: Option<NodeId>) {
        if self.leader != leader {
            self.fail_forwarded_reads();
        }
        self.leader = leader;
    }

    fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate);
        self.role = Role::Leader;
        self.set_leader(Some(self.cfg.id));
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.uncommitted_bytes = 0;
        self.progress.clear();
        self.sync_progress();
        // Raft §5.4.2 and §8: entries of earlier terms commit only once an entry of the
        // leader's own term commits, so a new leader appends an empty one right away.
        self.append_entry(EntryKind::Noop, Arc::from(Vec::new()));
    }

    fn other_voters(&self) -> Vec<NodeId> {
        self.conf.all_voters().into_iter().filter(|id| *id != self.cfg.id).collect()
    }

    /// Every other member that receives the log: voters of both halves and learners.
    fn other_members(&self) -> Vec<NodeId> {
        self.conf.members().into_iter().filter(|id| *id != self.cfg.id).collect()
    }

    /// Leader: one progress per other member, new ones probing from the end of the log.
    fn sync_progress(&mut self) {
        let members = self.other_members();
        self.say_goodbye(&members);
        self.progress.retain(|id, _| members.contains(id));
        // A member added by the entry just appended must still be sent that entry.
        let next = self.log.last_index().max(1);
        let (count, bytes) = (self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes);
        for id in members {
            self.progress.entry(id).or_insert_with(|| Progress::new(next, count, bytes));
        }
    }

    /// Leader, before it stops replicating to members no longer in the configuration:
    /// tells each the commit index it may act on (never beyond what it holds), so a
    /// member removed by a joint change it has acknowledged learns that the change
    /// committed, applies it and knows it was removed. Best effort: if the message is
    /// lost the member finds out otherwise (the service refuses it).
    fn say_goodbye(&mut self, staying: &[NodeId]) {
        let committed = self.log.committed;
        let leaving: Vec<(NodeId, Index)> = self
            .progress
            .iter()
            .filter(|(id, pr)| !staying.contains(id) && pr.commit_sent < committed)
            .map(|(id, pr)| (*id, committed.min(pr.match_index)))
            .collect();
        for (id, commit) in leaving {
            self.send(id, MessageBody::Heartbeat { commit, read_round: 0 });
        }
    }

    // ------------------------------------------------------- configuration

    /// The log changed from index `from` on (appended, or truncated and appended):
    /// forget the configurations of entries from there, then re-read the entries. A
    /// configuration takes effect when its entry is appended, so a truncated-away
    /// change falls back to the configuration before it.
    fn conf_after_log_change(&mut self, from: Index) {
        while self.conf_history.len() > 1 && self.conf_history.last().expect("non-empty").0 >= from
        {
            self.conf_history.pop();
        }
        let mut conf = self.conf_history.last().expect("base").1.clone();
        for index in from.max(self.log.first_index())..=self.log.last_index() {
            let Some(e) = self.log.entry(index) else { break };
            if e.kind != EntryKind::ConfChange {
                continue;
            }
            // The leader validated the change before appending it and every member
            // computes the same result, so an entry that does not apply is skipped by all.
            let next = ConfChange::decode(&e.data).and_then(|cc| confchange::apply(&conf, &cc));
            if let Ok(next) = next {
                conf = next.clone();
                self.conf_history.push((index, next));
            }
        }
        self.set_conf(conf);
    }

    fn set_conf(&mut self, conf: ConfState) {
        if conf == self.conf {
            return;
        }
        self.conf = conf;
        if self.role == Role::Leader {
            self.sync_progress();
            if let Some((target, _)) = self.lead_transferee {
                if !self.conf.is_voter(target) {
                    self.lead_transferee = None;
                }
            }
        }
    }

    /// Leader, after the commit index moved: leave a joint configuration once the entry
    /// that entered it commits, and step down once a configuration without us commits.
    fn after_conf_commit(&mut self) {
        if self.pending_conf_index() > self.log.committed {
            return;
        }
        if self.conf.is_joint() {
            let leave = ConfChange::default().encode();
            self.append_entry(EntryKind::ConfChange, leave.into());
        } else if !self.conf.is_voter(self.cfg.id) {
            // We replicated the change that removed us until it committed; now let the
            // remaining members elect a leader among themselves.
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    // ---------------------------------------------------------- replication

    fn handle_append(
        &mut self,
        leader: NodeId,
        prev_index: Index,
        prev_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: Index,
    ) {
        let (mut prev_index, mut prev_term) = (prev_index, prev_term);
        let committed = self.log.committed;
        if prev_index < committed {
            // Everything up to our commit index matches the leader's log (Leader
            // Completeness), so skip that part of a late or duplicated message.
            let skip = ((committed - prev_index) as usize).min(entries.len());
            entries.drain(..skip);
            prev_index += skip as u64;
            if prev_index < committed {
                self.send(leader, MessageBody::AppendResp { index: committed, reject: None });
                return;
            }
            // prev_index is now our commit index, whose entry matches the leader's.
            prev_term = self.log.term_at(prev_index).expect("committed entries are held");
        }
        match self.log.try_append(prev_index, prev_term, &entries) {
            Some(last_new) => {
                if !entries.is_empty() {
                    self.conf_after_log_change(prev_index + 1);
                }
                self.log.commit_to(leader_commit.min(last_new));
                self.send(leader, MessageBody::AppendResp { index: last_new, reject: None });
            }
            None => {
                let hint = self.reject_hint(prev_index);
                self.send(
                    leader,
                    MessageBody::AppendResp { index: prev_index, reject: Some(hint) },
                );
            }
        }
    }

    /// What the follower tells the leader when `prev_index` does not match, so the leader
    /// can skip the whole conflicting term.
    fn reject_hint(&self, prev_index: Index) -> RejectHint {
        let log_len = self.log.last_index() + 1;
        match self.log.term_at(prev_index) {
            Some(t) if prev_index <= self.log.last_index() => RejectHint {
                conflict_term: t,
                conflict_first_index: self.log.first_index_of_term(prev_index, t),
                log_len,
            },
            _ => RejectHint { conflict_term: 0, conflict_first_index: 0, log_len },
        }
    }

    fn handle_append_resp(&mut self, from: NodeId, index: Index, reject: Option<RejectHint>) {
        if index > self.log.last_index() {
            // A leader's log never shrinks in its term, and every answer names an index
            // it sent: no honest follower acknowledges (or rejects) beyond it.
            self.invalid_dropped += 1;
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        match reject {
            None => {
                if pr.maybe_update(index) {
                    match pr.state {
                        ProgressState::Probe => pr.become_replicate(),
                        ProgressState::Snapshot { index: snap, .. } if pr.match_index >= snap => {
                            pr.become_probe()
                        }
                        _ => {}
                    }
                    // Either the commit index moves, or this follower can now be told
                    // of a commit index it could not act on before.
                    self.commit_notice_due = true;
                    self.maybe_commit();
                    self.maybe_send_timeout_now(from);
                }
                self.send_append(from, false);
            }
            Some(hint) => {
                let stale = match pr.state {
                    // In Replicate, a rejection at or below the match is from an old message.
                    ProgressState::Replicate => index <= pr.match_index,
                    // In Probe, only the answer to the outstanding probe counts.
                    ProgressState::Probe => index != pr.next_index - 1,
                    ProgressState::Snapshot { .. } => true,
                };
                if stale {
                    return;
                }
                let next = self.next_after_rejection(index, hint);
                let pr = self.progress.get_mut(&from).expect("checked above");
                pr.next_index = next.min(index).max(pr.match_index + 1);
                pr.become_probe();
                self.send_append(from, false);
            }
        }
    }

    /// Fast backup (Raft §5.3, last paragraphs; MIT 6.824 lab 2C): if the follower's log
    /// is shorter, continue from its end; if the leader holds the conflicting term,
    /// continue after its last entry of that term; otherwise skip the follower's whole
    /// run of that term.
    fn next_after_rejection(&self, rejected: Index, hint: RejectHint) -> Index {
        if hint.conflict_term == 0 {
            return hint.log_len;
        }
        match self.log.last_index_of_term(rejected, hint.conflict_term) {
            Some(i) => i + 1,
            None => hint.conflict_first_index.max(1),
        }
    }

    fn handle_heartbeat_resp(&mut self, from: NodeId, read_round: u64) {
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        // An answer can only echo a round this leader sent; a larger one is forged and
        // would confirm reads no majority has confirmed.
        pr.read_round_acked = pr.read_round_acked.max(read_round.min(self.read_round));
        match pr.state {
            ProgressState::Probe => pr.probe_sent = false,
            ProgressState::Replicate if pr.inflights.is_full() => pr.inflights.free_first(),
            ProgressState::Snapshot { index, .. } => {
                pr.chunk_sent = false;
                // The follower said it is behind us and said nothing newer since: resend
                // from where it is. Answers a previous copy of its partial snapshot sent
                // before it restarted can move us past it (simulator seed 2764), and a
                // chunk beyond its copy only earns the same answer again.
                if let Some(offset) = pr.snapshot_behind.take() {
                    pr.state = ProgressState::Snapshot { index, offset };
                }
            }
            _ => {}
        }
        let behind = pr.match_index < last;
        if behind {
            self.send_append(from, true);
        }
        self.confirm_reads();
    }

    /// Sends what follower `to` is missing, as far as flow control allows. With `force`,
    /// sends even an empty append so a follower whose acknowledgements were lost can
    /// report its position.
    fn send_append(&mut self, to: NodeId, force: bool) {
        let mut force = force;
        loop {
            let Some(pr) = self.progress.get(&to) else {
                return;
            };
            if let ProgressState::Snapshot { .. } = pr.state {
                self.send_snapshot_chunk(to);
                return;
            }
            if pr.is_paused() {
                return;
            }
            let next = pr.next_index;
            let last = self.log.last_index();
            if next > last && !force {
                return;
            }
            let prev_index = next - 1;
            if next <= self.log.trimmed_to() && prev_index >= self.log.snapshot.meta.index {
                // Those entries were trimmed from memory once applied (`maybe_trim`) and
                // the snapshot does not cover them: wait for a newer snapshot, which
                // will (it is taken at the applied index, past every trimmed entry).
                self.snapshot_wanted = true;
                return;
            }
            let Some(prev_term) = self.log.term_at(prev_index) else {
                // The entries this follower needs were compacted: send the snapshot.
                let snap_index = self.log.snapshot.meta.index;
                self.progress.get_mut(&to).expect("present").become_snapshot(snap_index);
                self.send_snapshot_chunk(to);
                return;
            };
            let entries = self.log.slice(next, last, self.cfg.max_msg_bytes);
            let commit = self.log.committed;
            let bytes: u64 = entries.iter().map(|e| e.size_bytes()).sum();
            let sent_last = prev_index + entries.len() as u64;
            let pr = self.progress.get_mut(&to).expect("present");
            match pr.state {
                ProgressState::Replicate if !entries.is_empty() => {
                    pr.next_index = sent_last + 1;
                    pr.inflights.add(sent_last, bytes);
                }
                ProgressState::Probe => pr.probe_sent = true,
                _ => {}
            }
            pr.commit_sent = pr.commit_sent.max(commit.min(sent_last));
            let pipelined = pr.state == ProgressState::Replicate && !entries.is_empty();
            self.send(to, MessageBody::Append { prev_index, prev_term, entries, commit });
            force = false;
            if !pipelined {
                return;
            }
        }
    }

    fn broadcast_append(&mut self) {
        for id in self.other_members() {
            self.send_append(id, false);
        }
    }

    fn broadcast_heartbeat(&mut self) {
        for id in self.other_members() {
            let Some(pr) = self.progress.get_mut(&id) else { continue };
            let commit = self.log.committed.min(pr.match_index);
            pr.commit_sent = pr.commit_sent.max(commit);
            self.send(id, MessageBody::Heartbeat { commit, read_round: self.read_round });
        }
    }

    /// Tells each follower that has not heard of the latest commit index about it, so
    /// followers apply promptly even when no new entries follow. The notice is an empty
    /// append at the follower's match index, which it is known to hold, so it can never
    /// be rejected or disturb the replication state.
    fn send_commit_notices(&mut self) {
        let committed = self.log.committed;
        for id in self.other_members() {
            let Some(pr) = self.progress.get_mut(&id) else { continue };
            let target = committed.min(pr.match_index);
            if pr.commit_sent >= target || matches!(pr.state, ProgressState::Snapshot { .. }) {
                continue;
            }
            let prev_index = pr.match_index;
            let Some(prev_term) = self.log.term_at(prev_index) else { continue };
            pr.commit_sent = target;
            let body = MessageBody::Append {
                prev_index,
                prev_term,
                entries: Vec::new(),
                commit: committed,
            };
            self.send(id, body);
        }
    }

    /// Figure 8 / §5.4.2: advance the commit index to the highest index a majority holds,
    /// but only if that entry is from the current term.
    fn maybe_commit(&mut self) {
        let (me, persisted, progress) = (self.cfg.id, self.log.persisted, &self.progress);
        let matched = |id: NodeId| {
            if id == me {
                // The leader counts itself only for what is durable on its own disk.
                persisted
            } else {
                progress.get(&id).map_or(0, |p| p.match_index)
            }
        };
        let (incoming, outgoing) = (&self.conf.voters, &self.conf.voters_outgoing);
        let candidate = crate::quorum::joint_committed(incoming, outgoing, matched);
        if candidate > self.log.committed && self.log.term_at(candidate) == Some(self.term) {
            let old = self.log.committed;
            self.log.commit_to(candidate);
            let freed: u64 = (old + 1..=candidate)
                .filter_map(|i| self.log.entry(i))
                .map(|e| e.size_bytes())
                .sum();
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(freed);
            self.commit_notice_due = true;
            self.release_reads_awaiting_commit();
            self.after_conf_commit();
        }
    }

    /// Drops applied entries from memory that neither the catch-up allowance
    /// ([`Config::catch_up_entries`], [`Config::catch_up_bytes`]) nor, on a leader, a
    /// follower's known position keeps. Runs once a quarter of the allowance (in entries
    /// or in bytes) has been applied since the last time, so its O(kept entries) cost is
    /// spread thin.
    fn maybe_trim(&mut self) {
        let applied = self.log.applied;
        let step = (self.cfg.catch_up_entries / 4).max(1);
        let due = applied >= self.trim_checked.saturating_add(step)
            || self.trim_bytes_since >= self.cfg.catch_up_bytes / 4;
        if self.cfg.catch_up_entries == u64::MAX || !due {
            return;
        }
        self.trim_checked = applied;
        self.trim_bytes_since = 0;
        let mut to = applied.saturating_sub(self.cfg.catch_up_entries);
        let (mut i, mut bytes) = (applied, 0);
        while i > to.max(self.log.trimmed_to()) {
            bytes += self.log.entry(i).map_or(0, |e| e.size_bytes());
            if bytes > self.cfg.catch_up_bytes {
                to = i;
                break;
            }
            i -= 1;
        }
        if self.role == Role::Leader {
            let me = self.cfg.id;
            for (id, pr) in &self.progress {
                if *id != me {
                    to = to.min(pr.match_index);
                }
            }
        }
        self.log.trim(to);
    }

    // ------------------------------------------------------------- snapshots

    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let snap = &self.log.snapshot;
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        let ProgressState::Snapshot { index, offset } = pr.state else {
            return;
        };
        if index != snap.meta.index {
            // The leader compacted again meanwhile: send the newer snapshot from scratch.
            pr.become_snapshot(snap.meta.index);
            return self.send_snapshot_chunk(to);
        }
        if pr.chunk_sent {
            return;
        }
        let max_len = self.cfg.snapshot_chunk_bytes;
        let (chunk, total): (Arc<[u8]>, u64) = match self.snapshot_source.as_mut() {
            Some(source) => match source.read(&snap.meta, offset, max_len) {
                Some(read) => read,
                None => return, // not sent: asked for again at the next answer
            },
            None => {
                let total = snap.data.len() as u64;
                let start = offset.min(total);
                let end = (start + max_len).min(total);
                (Arc::from(&snap.data[start as usize..end as usize]), total)
            }
        };
        pr.chunk_sent = true;
        let start = offset.min(total);
        let end = (start + chunk.len() as u64).min(total);
        let body = MessageBody::Snapshot {
            meta: snap.meta.clone(),
            offset: start,
            total_bytes: total,
            chunk,
            done: end == total,
        };
        self.send(to, body);
    }

    fn handle_snapshot_resp(
        &mut self,
        from: NodeId,
        snapshot_index: Index,
        next_offset: u64,
        done: bool,
        last_index: Index,
    ) {
        if last_index > self.log.last_index() {
            // A follower answers with the snapshot's index or its commit index, both
            // within the leader's log.
            self.invalid_dropped += 1;
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        let ProgressState::Snapshot { index, .. } = pr.state else {
            return;
        };
        if index != snapshot_index {
            return;
        }
        if done {
            pr.maybe_update(last_index);
            pr.next_index = pr.match_index + 1;
            pr.become_probe();
            self.maybe_commit();
            self.send_append(from, false);
        } else {
            let ProgressState::Snapshot { offset, .. } = pr.state else { return };
            // Only an answer that moves the transfer forward sends the next chunk (or one
            // saying the follower lost its partial copy: start over). Duplicated or late
            // answers change nothing; if each of them sent a chunk, every duplicate would
            // start another endless chunk/answer ping-pong (simulator, kv seed 8971).
            let restart = next_offset == 0 && offset > 0;
            if next_offset > offset || restart {
                pr.state = ProgressState::Snapshot { index, offset: next_offset };
                pr.chunk_sent = false;
                pr.snapshot_behind = None;
                self.send_snapshot_chunk(from);
            } else if next_offset < offset {
                let lowest = pr.snapshot_behind.map_or(next_offset, |o| o.min(next_offset));
                pr.snapshot_behind = Some(lowest);
            }
        }
    }

    fn handle_snapshot_chunk(
        &mut self,
        leader: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        total_bytes: u64,
        chunk: Arc<[u8]>,
        done: bool,
    ) {
        let index = meta.index;
        let reply = |r: &mut Raft, next_offset: u64, done: bool, last_index: Index| {
            r.send(
                leader,
                MessageBody::SnapshotResp { snapshot_index: index, next_offset, done, last_index },
            );
        };
        if index <= self.log.committed {
            // Never go back in time: we already have (at least) this state.
            self.incoming_snapshot = None;
            let committed = self.log.committed;
            return reply(self, total_bytes, true, committed);
        }
        // A first chunk starts a transfer, unless it is a late duplicate of the one under
        // way: throwing that progress away would leave the leader (which only moves
        // forward) resending a chunk we can no longer take (simulator seed 1041).
        let same_transfer = matches!(&self.incoming_snapshot, Some((m, _)) if *m == meta);
        if offset == 0 && !same_transfer {
            // Grow as chunks arrive: `total_bytes` is the sender's claim, not an allocation.
            self.incoming_snapshot = Some((meta.clone(), Vec::with_capacity(chunk.len())));
        }
        let Some((held_meta, buf)) = self.incoming_snapshot.as_mut() else {
            return reply(self, 0, false, 0);
        };
        if *held_meta != meta {
            return reply(self, 0, false, 0);
        }
        if offset as usize == buf.len() {
            buf.extend_from_slice(&chunk);
        }
        let have = buf.len() as u64;
        if !(done && have == total_bytes) {
            return reply(self, have, false, 0);
        }
        let (meta, data) = self.incoming_snapshot.take().expect("present");
        let snapshot = Snapshot { meta, data: data.into() };
        let matched = self.install_snapshot(snapshot);
        reply(self, total_bytes, true, matched);
    }

    /// InstallSnapshot receiver (Raft Figure 13, rules 6–8). Returns the index up to
    /// which our log now matches the leader's.
    fn install_snapshot(&mut self, snapshot: Snapshot) -> Index {
        let meta = &snapshot.meta;
        let index = meta.index;
        if self.log.term_at(index) == Some(meta.term) {
            // Our log already holds the snapshot's last entry: keep the suffix after it
            // and simply learn that everything up to it is committed.
            self.log.commit_to(index);
            return index;
        }
        let conf = meta.conf.clone();
        self.conf_history = vec![(index, conf.clone())];
        self.log.install(snapshot);
        // The Ready keeps its own reference until the service has persisted it.
        self.drop_held_snapshot_data();
        self.set_conf(conf);
        index
    }

    /// From now on the service keeps snapshot bytes and `source` reads them for the
    /// chunks a leader sends; the core drops its copy of the current snapshot's bytes
    /// and of every later one (its own compactions and the leader's snapshots it
    /// installs, once handed out in a `Ready` for the service to persist). The service
    /// must keep the file of every snapshot from its `Raft::compact` (or its persisting
    /// of a `Ready`'s snapshot) until the next one.
    pub fn set_snapshot_source(&mut self, source: Box<dyn SnapshotSource>) {
        self.snapshot_source = Some(source);
        self.drop_held_snapshot_data();
    }

    fn drop_held_snapshot_data(&mut self) {
        if self.snapshot_source.is_some() {
            self.log.snapshot.data = Arc::from(&[][..]);
        }
    }

    // -------------------------------------------------------------- output

    fn send(&mut self, to: NodeId, body: MessageBody) {
        let m = Message { from: self.cfg.id, to, term: self.term, body };
        if m.needs_durable_state() {
            self.msgs_after_persist.push(m);
        } else {
            self.msgs.push(m);
        }
    }

    /// True if [`Raft::ready`] has something for the driver.
    pub fn has_ready(&self) -> bool {
        !self.msgs.is_empty()
            || !self.msgs_after_persist.is_empty()
            || self.pending_broadcast
            || self.commit_notice_due
            || self.read_round_due
            || self.hard_state() != self.handed_hard_state
            || self.log.pending_snapshot.is_some()
            || self.log.has_unstable()
            || self.log.has_next_committed()
            || !self.read_states.is_empty()
            || !self.failed_reads.is_empty()
    }

    /// The next batch of work for the driver.
    pub fn ready(&mut self) -> Ready {
        if self.pending_broadcast {
            self.pending_broadcast = false;
            if self.role == Role::Leader {
                self.broadcast_append();
            }
        }
        if self.commit_notice_due {
            self.commit_notice_due = false;
            if self.role == Role::Leader {
                self.send_commit_notices();
            }
        }
        if self.read_round_due {
            self.read_round_due = false;
            self.read_round += 1;
            self.broadcast_heartbeat();
            self.confirm_reads();
        }
        self.ready_number += 1;
        let number = self.ready_number;
        let hs = self.hard_state();
        let hard_state = (hs != self.handed_hard_state).then_some(hs);
        self.handed_hard_state = hs;
        let snapshot = self.log.pending_snapshot.take();
        let entries = self.log.take_unstable();
        if let Some(last) = entries.last() {
            self.persist_marks.push_back((number, last.index, last.term));
        } else if let Some(s) = &snapshot {
            self.persist_marks.push_back((number, s.meta.index, s.meta.term));
        }
        let nothing_to_persist = hard_state.is_none() && snapshot.is_none() && entries.is_empty();
        let mut messages = std::mem::take(&mut self.msgs);
        let after = std::mem::take(&mut self.msgs_after_persist);
        if nothing_to_persist && self.persisted_number + 1 == number {
            // Everything handed out before is durable already: no need to wait.
            for m in after {
                self.deliver_released(m, &mut messages);
            }
        } else {
            self.msgs_waiting.extend(after.into_iter().map(|m| (number, m)));
        }
        let committed_entries = self.log.take_committed();
        let handed: u64 = committed_entries.iter().map(Entry::size_bytes).sum();
        self.trim_bytes_since = self.trim_bytes_since.saturating_add(handed);
        self.maybe_trim();
        Ready {
            number,
            messages,
            hard_state,
            snapshot,
            entries,
            committed_entries,
            read_states: std::mem::take(&mut self.read_states),
            failed_reads: std::mem::take(&mut self.failed_reads),
        }
    }

    fn deliver_released(&mut self, m: Message, out: &mut Vec<Message>) {
        if m.to == self.cfg.id {
            // Our own vote, now durable.
            if m.term == self.term {
                self.step_candidate(m);
            }
        } else {
            out.push(m);
        }
    }

    /// The persist part of Ready `number` (and every earlier one) is durable.
    pub fn on_persisted(&mut self, number: u64) {
        assert!(number <= self.ready_number, "on_persisted({number}) for a Ready not handed out");
        if number <= self.persisted_number {
            return;
        }
        self.persisted_number = number;
        while let Some(&(n, index, term)) = self.persist_marks.front() {
            if n > number {
                break;
            }
            self.persist_marks.pop_front();
            self.log.persisted_to(index, term);
        }
        let mut released = Vec::new();
        while let Some((n, _)) = self.msgs_waiting.front() {
            if *n > number {
                break;
            }
            let (_, m) = self.msgs_waiting.pop_front().expect("present");
            self.deliver_released(m, &mut released);
        }
        self.msgs.extend(released);
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    // ------------------------------------------------------------ observers

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }
    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }
    /// The leader this member knows of in its current term.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// The current hard state (possibly not yet durable).
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed }
    }
    /// Highest index known committed.
    pub fn commit_index(&self) -> Index {
        self.log.committed
    }
    /// Highest index handed out for applying (including a snapshot's index).
    pub fn applied_index(&self) -> Index {
        self.log.applied
    }
    /// Highest log index whose entries are known durable on this member.
    pub fn persisted_index(&self) -> Index {
        self.log.persisted
    }
    /// Index of the first entry held in memory: the snapshot index plus one, or later
    /// once applied entries were trimmed ([`Config::catch_up_entries`]).
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }
    /// Whether the leader needs a snapshot newer than the current one: a follower needs
    /// entries that were trimmed from memory (see [`Config::catch_up_entries`]). The
    /// driver should take one at its applied index and hand it to [`Raft::compact`],
    /// which clears this; until then that follower waits.
    pub fn wants_snapshot(&self) -> bool {
        self.snapshot_wanted
    }
    /// Index of the last log entry (the snapshot index if the log is empty).
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }
    /// Term of the entry at `index`, if known (the snapshot's own index included).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.log.term_at(index)
    }
    /// The entry at `index`, if held in memory.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.log.entry(index)
    }
    /// What the current snapshot covers.
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.log.snapshot.meta
    }
    /// The voting members (the incoming half while joint).
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        &self.conf.voters
    }
    /// The configuration in force: the latest in this member's log, committed or not.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf
    }
    /// The configuration in force at log index `index` (at or after the snapshot index):
    /// what a snapshot taken at `index` must carry.
    pub fn conf_at(&self, index: Index) -> ConfState {
        self.conf_ref_at(index).clone()
    }
    fn conf_ref_at(&self, index: Index) -> &ConfState {
        let at = self.conf_history.partition_point(|(i, _)| *i <= index);
        &self.conf_history[at.saturating_sub(1)].1
    }
    /// Index of the entry that made the configuration in force (0 for the initial one).
    /// A change is in flight while this is above the commit index.
    pub fn pending_conf_index(&self) -> Index {
        self.conf_history.last().map_or(0, |(i, _)| *i)
    }
    /// Leader: the member leadership is being transferred to, if a transfer is under way.
    pub fn lead_transferee(&self) -> Option<NodeId> {
        self.lead_transferee.map(|(id, _)| id)
    }
    /// Peer messages dropped because a field was out of bounds or an answer named an
    /// index beyond this leader's log.
    pub fn invalid_messages_dropped(&self) -> u64 {
        self.invalid_dropped
    }
    /// The leader's view of follower `id`'s replication (leaders only).
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }
}
