//! The kv simulation engine: members (real `node::Node`s over simulated disks), the
//! network between them and their clients, the event queue and the per-event checks.

use super::auth_check;
use super::client::{Client, OpMix};
use super::lease::LEASE_EXPIRY_BOUND_US;
use super::reference::Reference;
use super::watch::{WatchMsg, WatchStream, Watcher};
use crate::checker::{entry_hash, Violation};
use crate::cluster::stream_seed;
use crate::disk::DiskConfig;
use crate::faults::{FaultTarget, NetFaultTarget};
use crate::network::{is_reply, NetConfig, Network};
use crate::queue::EventQueue;
use crate::trace::{MsgFmt, Trace};
use kv::Response;
use lincheck::{History, KvOp, KvResult};
use node::{
    Applier, ApplyBatch, MemberChange, MemberChanged, MemberFailure, Node, NodeConfig, NodeEvent,
    Request, RequestError, RequestId,
};
use raft::{Index, Message, NodeId, Rng, Role, Term};
use std::collections::btree_map::Entry as MapEntry;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write;
use std::time::Duration;
use storage::{Disk, Options, SimDisk, Storage};

/// A member as the simulator runs it: the server's driver over a simulated disk.
pub type KvNode = Node<Storage<SimDisk>>;

/// Everything that shapes a kv run besides the swarm or script that drives it.
#[derive(Clone, Debug)]
pub struct KvConfig {
    /// Members, ids `1..=members`.
    pub members: usize,
    /// Spare member slots, ids `members + 1..=members + spare_members`: not started at
    /// boot; a slot starts as a joining member once a membership change adds its id
    /// ([`KvCluster::change_members`]; its peer URL is [`sim_peer_url`]).
    pub spare_members: usize,
    /// The one seed every random choice derives from.
    pub seed: u64,
    /// Network behaviour (between members, and between clients and members).
    pub net: NetConfig,
    /// Sync latencies (the crash behaviour itself is [`SimDisk`]'s).
    pub disk: DiskConfig,
    /// Each batch a member hands its applier is applied after a delay drawn from
    /// `0..=apply_delay_us_max`, as the server applies on its own thread: apply lags
    /// behind commit, and answers, reads and leases must still be right.
    pub apply_delay_us_max: u64,
    /// One member (by index) whose applier is slower than the rest: its delays are drawn
    /// from `0..=` this many µs instead. With a small [`KvConfig::apply_gap_entries_max`]
    /// it runs past the apply gap and holds back appends (back-pressure on a follower).
    pub slow_applier: Option<(usize, u64)>,
    /// Each member's [`node::NodeConfig::apply_gap_entries_max`].
    pub apply_gap_entries_max: u64,
    /// Nominal tick period.
    pub tick_interval_us: u64,
    /// Each member's tick period is off by a fraction drawn from `[-drift, +drift]`.
    pub clock_drift: f64,
    /// Raft's minimum election timeout.
    pub election_timeout_ticks: u32,
    /// Raft's heartbeat period.
    pub heartbeat_interval_ticks: u32,
    /// Raft's InstallSnapshot chunk size.
    pub snapshot_chunk_bytes: u64,
    /// A member snapshots its state machine every this many applied entries.
    pub snapshot_interval_entries: u64,
    /// Raft's [`raft::Config::catch_up_entries`] (small values make lagging followers
    /// need a snapshot the core asks for).
    pub catch_up_entries: u64,
    /// WAL segment size.
    pub segment_bytes_max: u64,
    /// A member answers a request it could not finish within this many ticks with a
    /// timeout.
    pub request_timeout_ticks: u64,
    /// The state machine drops sessions idle for this many log entries.
    pub session_idle_entries_max: u64,
    /// Chance, per sync issued, that the member loses power before it completes.
    pub crash_during_write: f64,
    /// How long a member that lost power during a write stays down.
    pub crash_restart_us: u64,
    /// Clients.
    pub clients: usize,
    /// Keys the clients use (`k0`, `k1`, ...).
    pub keys: usize,
    /// Mean pause between one client's operations.
    pub think_us: u64,
    /// A client resends to the next member when no answer came within this.
    pub client_timeout_us: u64,
    /// A client gives up on an operation after this.
    pub op_deadline_us: u64,
    /// Relative frequencies of the operations.
    pub mix: OpMix,
    /// Clients draw random operations; when false they run only what
    /// [`KvCluster::client_invoke`] gives them.
    pub random_ops: bool,
    /// Chance that a partition confines a client to one side.
    pub client_confined: f64,
    /// A deliberately broken client that asks for serializable (local, possibly stale)
    /// reads while recording them as linearizable ones. Never set outside tests of the
    /// checker itself: it exists to show that stale reads are caught.
    pub stale_reads: bool,
    /// Random watchers, started at random times within `watch_start_window_us`
    /// (see [`crate::kv::watch`]).
    pub watchers: usize,
    /// Watchers start within this much time from boot.
    pub watch_start_window_us: u64,
    /// Changes one batch of a watch stream visits at most (the server's budget is 1000).
    pub watch_batch_changes: u64,
    /// Bytes of keys and values past which one batch stops, at the next revision (the
    /// server's budget is 1 MiB; small here, the sim's values being short).
    pub watch_batch_bytes: u64,
    /// Mean time after which a watcher moves to another member of its own accord
    /// (`None`: only when its stream breaks).
    pub watch_move_mean_us: Option<u64>,
    /// Keys leased clients use (`l0`, `l1`, ...), apart from the linearizability keys.
    pub lease_keys: usize,
    /// Clients grant leases of 1 to this many seconds.
    pub lease_ttl_secs_max: i64,
    /// Share of client operations that change the auth state instead (user and role
    /// adds and deletes, grants, revokes, enable, disable; see `client::draw_auth_op`).
    /// Most clients then act as users and stamp their commands (see `auth_check`);
    /// what is checked is that every member holds the log's auth state at every index,
    /// across snapshots, restores and replays, and that no stamped command is served
    /// without the permission the auth state of its index gives.
    pub auth_share: f64,
    /// A deliberately broken watcher that resumes one revision too late after a
    /// reconnect. Never set outside tests of the checker: it shows that a skipped event
    /// is caught.
    pub broken_watch_resume: bool,
    /// How fast the lease clock handed to members runs against their tick clock (1.0:
    /// as the server does). Tests of the checker set it above 1 + drift to show that a
    /// lease expiring before its TTL is caught.
    pub lease_clock_rate: f64,
    /// Format and hash every event.
    pub trace: bool,
    /// Print every event line.
    pub verbose: bool,
    /// Event lines kept for failure reports.
    pub recent_events_max: usize,
}

impl KvConfig {
    /// A reliable cluster of `members` with `clients` random clients on 5 keys, SSD-like
    /// disks, 10 ms ticks, snapshots every 50 entries and 4 KiB WAL segments.
    pub fn new(members: usize, clients: usize, seed: u64) -> KvConfig {
        KvConfig {
            members,
            spare_members: 0,
            seed,
            net: NetConfig::reliable(),
            disk: DiskConfig::ssd(),
            apply_delay_us_max: 5_000,
            slow_applier: None,
            apply_gap_entries_max: node::APPLY_GAP_ENTRIES_MAX,
            tick_interval_us: 10_000,
            clock_drift: 0.01,
            election_timeout_ticks: 20,
            heartbeat_interval_ticks: 5,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_interval_entries: 50,
            catch_up_entries: raft::Config::new(1).catch_up_entries,
            segment_bytes_max: 4 << 10,
            request_timeout_ticks: 100,
            session_idle_entries_max: 100_000,
            crash_during_write: 0.0,
            crash_restart_us: 200_000,
            clients,
            keys: 5,
            think_us: 20_000,
            client_timeout_us: 500_000,
            op_deadline_us: 5_000_000,
            mix: OpMix::default(),
            random_ops: true,
            client_confined: 0.3,
            stale_reads: false,
            watchers: 0,
            watch_start_window_us: 5_000_000,
            watch_batch_changes: 50,
            watch_batch_bytes: u64::MAX,
            watch_move_mean_us: Some(3_000_000),
            lease_keys: 4,
            lease_ttl_secs_max: 4,
            auth_share: 0.0,
            broken_watch_resume: false,
            lease_clock_rate: 1.0,
            trace: true,
            verbose: false,
            recent_events_max: 40,
        }
    }
}

/// Log entries a member's WAL may hold beyond its snapshot threshold: what a leader
/// appends while its applier lags or a snapshot is being written, and an uncommitted
/// tail from a deposed leader.
pub const RAFT_STATE_SLACK_ENTRIES: u64 = 100;
/// The largest WAL record of one entry the kv workload writes (its commands are small:
/// short keys and values, a session, an auth-free stamp) with the record's framing.
pub const RAFT_STATE_ENTRY_BYTES_MAX: u64 = 256;

/// The most bytes a member's WAL may hold under `cfg`, faults included: the entries
/// since its last snapshot (at most the snapshot threshold plus
/// [`RAFT_STATE_SLACK_ENTRIES`]) at [`RAFT_STATE_ENTRY_BYTES_MAX`] each, plus two
/// segments (the oldest is deleted only once a snapshot covers all of it; the newest is
/// being filled).
pub fn raft_state_bytes_bound(cfg: &KvConfig) -> u64 {
    let entries = cfg.snapshot_interval_entries + RAFT_STATE_SLACK_ENTRIES;
    entries * RAFT_STATE_ENTRY_BYTES_MAX + 2 * cfg.segment_bytes_max
}

/// Counters of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStats {
    /// Operations recorded in the history (sessions and compactions not counted).
    pub ops: u64,
    /// Operations that completed with a result.
    pub ok: u64,
    /// Reads given up on (they had no effect).
    pub failed: u64,
    /// Writes given up on, or whose session expired: their effect is unknown.
    pub unknown: u64,
    /// Operations answered with an auth refusal (permission denied, invalid token):
    /// a definite answer to the client, counted in `unknown` too because a copy of the
    /// command sent earlier may still be applied under a later grant.
    pub refused: u64,
    /// Requests sent again (same command) after a timeout, a redirect or a busy leader.
    pub resends: u64,
    /// Sessions registered by clients.
    pub registrations: u64,
    /// Writes refused because their session had expired.
    pub sessions_expired: u64,
    /// Compactions of the MVCC history requested by clients.
    pub compactions: u64,
    /// Auth changes clients proposed and got an answer to (refusals included).
    pub auth_ops: u64,
    /// Commands of clients acting as users applied while auth was on and served
    /// (see `auth_check`).
    pub auth_served: u64,
    /// The same, refused at apply (permission, user or old stamp).
    pub auth_refused: u64,
    /// Snapshots members took of their own state machine.
    pub snapshots_taken: u64,
    /// Snapshots members installed from a leader.
    pub snapshots_installed: u64,
    /// Members crashed (power cut).
    pub crashes: u64,
    /// Distinct log indices applied.
    pub entries_applied: u64,
    /// Payload bytes of those entries.
    pub entry_bytes_applied: u64,
    /// Messages between members.
    pub peer_messages: u64,
    /// Requests and replies between clients and members.
    pub client_messages: u64,
    /// Watch events received and checked against the committed history.
    pub watch_events: u64,
    /// Messages on watch streams.
    pub watch_messages: u64,
    /// Watch streams reopened after they broke or went unanswered.
    pub watch_reconnects: u64,
    /// Watchers told their start revision was compacted.
    pub watch_compacted: u64,
    /// Leases granted to clients.
    pub leases_granted: u64,
    /// Keep-alives acknowledged.
    pub keep_alives_acked: u64,
    /// Leases revoked by their expiry (a revoke the leader proposed).
    pub leases_expired: u64,
    /// Leases revoked by clients.
    pub leases_revoked: u64,
    /// Appends a member cut short because its applier was past the apply gap.
    pub appends_held_back: u64,
    /// Membership changes answered as done.
    pub member_changes: u64,
    /// Membership changes refused or not answered in time.
    pub member_changes_failed: u64,
    /// Spare members started as joining members after their addition.
    pub members_joined: u64,
    /// Members stopped for good after their removal was applied.
    pub members_removed: u64,
    /// Crashes of members that joined by a membership change (power cuts included).
    pub spare_crashes: u64,
    /// Most bytes any member's WAL held at one of its ticks (see
    /// [`KvCluster::raft_state_bytes`]).
    pub raft_state_bytes_max: u64,
}

/// Something that happens at a simulated instant.
pub(crate) enum KvEvent {
    Tick {
        member: usize,
        incarnation: u64,
    },
    Peer {
        msg: Message,
        incarnation: u64,
    },
    Request {
        member: usize,
        incarnation: u64,
        client: usize,
        op_no: u64,
        attempt: u64,
        request: Request,
    },
    Reply {
        client: usize,
        from: NodeId,
        op_no: u64,
        attempt: u64,
        /// When the member received the request it answers.
        received_us: u64,
        result: Result<Response, RequestError>,
    },
    SyncDone {
        member: usize,
        incarnation: u64,
    },
    /// The member's applier finished its oldest batch.
    ApplyDone {
        member: usize,
        incarnation: u64,
    },
    PowerLoss {
        member: usize,
        incarnation: u64,
    },
    Restart {
        member: usize,
        incarnation: u64,
    },
    ClientTimer {
        client: usize,
        token: u64,
    },
    WatchCreate {
        member: usize,
        incarnation: u64,
        watcher: usize,
        conn: u64,
        start_revision: u64,
    },
    WatchDeliver {
        watcher: usize,
        conn: u64,
        msg: WatchMsg,
    },
    WatchTimer {
        watcher: usize,
        token: u64,
    },
    /// A member's Hello reaches a peer it dials (see [`super::dial`]).
    PeerHello {
        member: usize,
        incarnation: u64,
        peer: usize,
        backoff_us: u64,
    },
    /// A member dials a peer again after a backoff.
    PeerDial {
        member: usize,
        incarnation: u64,
        peer: usize,
        backoff_us: u64,
    },
}

/// Which client operation a member's request id answers.
#[derive(Clone, Copy)]
struct Asker {
    client: usize,
    op_no: u64,
    attempt: u64,
    received_us: u64,
}

/// One member slot: a running node, or the disk of a crashed one.
pub(crate) struct Member {
    pub(crate) id: NodeId,
    tick_period_us: u64,
    pub(crate) incarnation: u64,
    pub(crate) node: Option<KvNode>,
    disk: Option<SimDisk>,
    sync_scheduled: bool,
    /// The applier of the running node; batches handed to it, oldest first; whether
    /// an `ApplyDone` is on its way.
    applier: Option<Applier>,
    apply_queue: VecDeque<ApplyBatch>,
    apply_scheduled: bool,
    /// Last index this incarnation applied (or jumped to by snapshot).
    applied: Index,
    snapshot_index: Index,
    requests: BTreeMap<RequestId, Asker>,
    next_request: RequestId,
    /// Ticks of this incarnation: its lease clock reads ticks × the nominal period.
    ticks: u64,
    /// Watch streams it serves, by watcher.
    pub(crate) watch_streams: BTreeMap<usize, WatchStream>,
    /// Removed from the cluster: stopped for good, never started again.
    pub(crate) retired: bool,
    /// Peers this incarnation dials until a Hello gets through (see [`super::dial`]).
    pub(crate) dialing: BTreeSet<usize>,
}

/// A simulated raftkv cluster with clients. See the module docs of [`crate::kv`].
pub struct KvCluster {
    pub(crate) cfg: KvConfig,
    pub(crate) now_us: u64,
    pub(crate) queue: EventQueue<KvEvent>,
    pub(crate) members: Vec<Member>,
    pub(crate) clients: Vec<Client>,
    pub(crate) watchers: Vec<Watcher>,
    pub(crate) net: Network,
    /// `client_cut[client * members + member]`: the client cannot reach the member.
    client_cut: Vec<bool>,
    rng_net: Rng,
    rng_disk: Rng,
    rng_clock: Rng,
    rng_apply: Rng,
    pub(crate) rng_ops: Rng,
    rng_faults: Rng,
    pub(crate) rng_watch: Rng,
    pub(crate) rng_dial: Rng,
    /// The committed history replayed: the watch and lease checkers' oracle.
    pub(crate) reference: Reference,
    /// Lease id → simulated time before which it must not expire.
    pub(crate) lease_protected_until: BTreeMap<i64, u64>,
    pub(crate) history: History<KvOp, KvResult>,
    pub(crate) trace: Trace,
    /// Every applied index: the entry's term and content hash.
    applied: BTreeMap<Index, (Term, u64)>,
    /// How many distinct indices carry each entry content.
    pub(crate) content_count: BTreeMap<u64, u32>,
    leaders: BTreeMap<Term, NodeId>,
    pub(crate) stats: KvStats,
    pub(crate) violation: Option<(Violation, u64)>,
    pub(crate) clients_active: bool,
    events: u64,
    /// Outcomes of membership changes asked through [`KvCluster::change_members`].
    member_outcomes: BTreeMap<RequestId, Result<MemberChanged, MemberFailure>>,
    next_member_request: RequestId,
}

/// The peer URL of simulated member `id` (the simulator gives an added member the id its
/// URL names, so spare slots map to ids; see [`NodeConfig::new_member_id`]).
pub fn sim_peer_url(id: NodeId) -> String {
    format!("sim://n{id}")
}

/// The id [`sim_peer_url`] names.
fn sim_member_id(peer_urls: &[String]) -> Option<NodeId> {
    peer_urls.first()?.strip_prefix("sim://n")?.parse().ok()
}

/// The state machine configuration of every member (and of the reference).
fn kv_config(cfg: &KvConfig) -> kv::Config {
    kv::Config { session_idle_entries_max: cfg.session_idle_entries_max, ..Default::default() }
}

macro_rules! kv_trace {
    ($self:ident, $($arg:tt)*) => {
        if let Some(line) = $self.trace.line($self.now_us) {
            let _ = write!(line, $($arg)*);
            $self.trace.end();
        }
    };
}
pub(crate) use kv_trace;

impl KvCluster {
    /// Boots a cluster: every member starts on an empty disk with its first tick at a
    /// random offset; every client registers a session first.
    pub fn new(cfg: KvConfig) -> KvCluster {
        let slots = cfg.members + cfg.spare_members;
        assert!((1..=crate::cluster::MAX_NODES).contains(&cfg.members), "members out of range");
        assert!(slots <= crate::cluster::MAX_NODES, "members and spares out of range");
        assert!(cfg.keys >= 1, "clients need at least one key");
        let mut rng_clock = Rng::new(stream_seed(cfg.seed, 0x4b56_0001));
        let members = (1..=slots as NodeId)
            .map(|id| {
                let drift = (rng_clock.next_u64() as f64 / u64::MAX as f64) * 2.0 - 1.0;
                let period = cfg.tick_interval_us as f64 * (1.0 + drift * cfg.clock_drift);
                Member {
                    id,
                    tick_period_us: (period.round() as u64).max(1),
                    incarnation: 0,
                    node: None,
                    disk: Some(SimDisk::new(stream_seed(cfg.seed, 0x4b56_1000 + id))),
                    sync_scheduled: false,
                    applier: None,
                    apply_queue: VecDeque::new(),
                    apply_scheduled: false,
                    applied: 0,
                    snapshot_index: 0,
                    requests: BTreeMap::new(),
                    next_request: 1,
                    ticks: 0,
                    watch_streams: BTreeMap::new(),
                    retired: false,
                    dialing: BTreeSet::new(),
                }
            })
            .collect();
        let servers: Vec<NodeId> = (1..=slots as NodeId).collect();
        let kv_config = kv_config(&cfg);
        let mut rng_ops = Rng::new(stream_seed(cfg.seed, 0x4b56_0004));
        let clients = (0..cfg.clients)
            .map(|c| Client::new(c, servers.clone(), rng_ops.range(0, cfg.members as u64)))
            .collect();
        let mut rng_watch = Rng::new(stream_seed(cfg.seed, 0x4b56_0007));
        let slot = |w: usize| (cfg.clients > 0).then(|| w % cfg.clients);
        let watchers = (0..cfg.watchers)
            .map(|w| Watcher::new(None, slot(w), rng_watch.range(0, cfg.members as u64) as usize))
            .collect();
        let mut c = KvCluster {
            now_us: 0,
            queue: EventQueue::default(),
            members,
            clients,
            watchers,
            net: Network::new(slots, cfg.net.clone()),
            client_cut: vec![false; cfg.clients * slots],
            rng_net: Rng::new(stream_seed(cfg.seed, 0x4b56_0002)),
            rng_disk: Rng::new(stream_seed(cfg.seed, 0x4b56_0003)),
            rng_clock,
            rng_apply: Rng::new(stream_seed(cfg.seed, 0x4b56_0008)),
            rng_ops,
            rng_faults: Rng::new(stream_seed(cfg.seed, 0x4b56_0005)),
            rng_watch,
            rng_dial: Rng::new(stream_seed(cfg.seed, 0x4b56_0009)),
            reference: Reference::new(kv_config),
            lease_protected_until: BTreeMap::new(),
            history: History::new(),
            trace: Trace::new(cfg.trace, cfg.verbose, cfg.recent_events_max),
            applied: BTreeMap::new(),
            content_count: BTreeMap::new(),
            leaders: BTreeMap::new(),
            stats: KvStats::default(),
            violation: None,
            clients_active: true,
            events: 0,
            member_outcomes: BTreeMap::new(),
            next_member_request: 1,
            cfg,
        };
        kv_trace!(
            c,
            "boot {} members {} clients seed {}",
            c.cfg.members,
            c.cfg.clients,
            c.cfg.seed
        );
        for idx in 0..c.cfg.members {
            c.boot(idx);
        }
        for client in 0..c.clients.len() {
            let at = c.rng_ops.range(0, c.cfg.think_us + 1);
            c.arm_client_timer(client, at);
        }
        for watcher in 0..c.watchers.len() {
            let at = c.rng_watch.range(0, c.cfg.watch_start_window_us + 1);
            c.queue.push(at, KvEvent::WatchTimer { watcher, token: 0 });
        }
        c
    }

    /// Runs events until simulated time `until_us` (or a violation). True if no invariant
    /// has been violated.
    pub fn run_until_us(&mut self, until_us: u64) -> bool {
        while self.violation.is_none() {
            let Some((t, event)) = self.queue.pop_due(until_us) else { break };
            self.now_us = t;
            self.events += 1;
            self.dispatch(event);
            if let Some(v) = self.queue.storm() {
                self.record(v);
            }
        }
        if self.violation.is_none() {
            self.now_us = self.now_us.max(until_us);
        }
        self.violation.is_none()
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) -> bool {
        self.run_until_us(self.now_us + d.as_micros() as u64)
    }

    /// Current simulated time.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// Events processed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Counters so far.
    pub fn stats(&self) -> &KvStats {
        &self.stats
    }

    /// What the clients saw so far.
    pub fn history(&self) -> &History<KvOp, KvResult> {
        &self.history
    }

    /// The FNV-1a 64 hash of the trace so far.
    pub fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }

    /// The most recent event lines, oldest first.
    pub fn recent_events(&self) -> Vec<String> {
        self.trace.recent()
    }

    /// Starts or stops printing each event.
    pub fn set_verbose(&mut self, verbose: bool) {
        self.trace.set_verbose(verbose);
    }

    /// The first violation, if any, with the simulated time it was found at.
    pub fn violation(&self) -> Option<&(Violation, u64)> {
        self.violation.as_ref()
    }

    /// A full report of the violation, with seed and the last events.
    pub fn violation_report(&self) -> Option<String> {
        let (v, at) = self.violation.as_ref()?;
        let mut out = format!(
            "invariant violated at {}.{:03} ms (seed {}): {v}\nlast events:\n",
            at / 1000,
            at % 1000,
            self.cfg.seed
        );
        for line in self.trace.recent() {
            let _ = writeln!(out, "  {line}");
        }
        Some(out)
    }

    pub(crate) fn record(&mut self, v: Violation) {
        if self.violation.is_some() {
            return;
        }
        kv_trace!(self, "VIOLATION {v}");
        self.violation = Some((v, self.now_us));
    }

    /// The running node of member `id`, if it is up.
    pub fn node(&self, id: NodeId) -> Option<&KvNode> {
        self.members.get((id as usize).wrapping_sub(1)).and_then(|m| m.node.as_ref())
    }

    /// True unless member `id` is crashed.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.node(id).is_some()
    }

    /// The member ids (spare slots included).
    pub fn ids(&self) -> Vec<NodeId> {
        (1..=self.slots() as NodeId).collect()
    }

    /// Member slots: the founding members and the spares.
    fn slots(&self) -> usize {
        self.cfg.members + self.cfg.spare_members
    }

    /// A member that leads in the highest term among up members, if there is one.
    pub fn leader(&self) -> Option<NodeId> {
        let up = self.members.iter().filter_map(|m| m.node.as_ref().map(|n| (m.id, n.raft())));
        let max_term = up.clone().map(|(_, r)| r.term()).max()?;
        up.filter(|(_, r)| r.role() == Role::Leader && r.term() == max_term)
            .map(|(id, _)| id)
            .next()
    }

    /// Member `id`'s disk: its running node's, or the one it left when it went down.
    fn disk_of(&self, id: NodeId) -> Option<&SimDisk> {
        let m = &self.members[id as usize - 1];
        match (&m.node, &m.disk) {
            (Some(n), _) => Some(n.store().disk()),
            (None, d) => d.as_ref(),
        }
    }

    /// Bytes on member `id`'s disk: WAL segments and snapshot files (live images).
    pub fn disk_bytes(&self, id: NodeId) -> u64 {
        let Some(disk) = self.disk_of(id) else { return 0 };
        let names = disk.list().expect("a simulated disk lists its files");
        names.iter().map(|n| disk.read(n).map_or(0, |b| b.len() as u64)).sum()
    }

    /// Bytes of member `id`'s persisted Raft state: its WAL segments (log entries and
    /// hard states, synced or not), without snapshot files (the state machine's data).
    pub fn raft_state_bytes(&self, id: NodeId) -> u64 {
        let Some(disk) = self.disk_of(id) else { return 0 };
        let names = disk.list().expect("a simulated disk lists its files");
        let segments = names.iter().filter(|n| n.starts_with(storage::SEGMENT_PREFIX));
        segments.map(|n| disk.live_len(n).unwrap_or(0) as u64).sum()
    }

    /// Times an entry with exactly this payload was applied at distinct indices.
    pub fn entries_with_payload(&self, payload: &[u8]) -> u32 {
        let hash = entry_hash(&raft::Entry {
            index: 0,
            term: 0,
            kind: raft::EntryKind::Normal,
            data: payload.to_vec().into(),
        });
        self.content_count.get(&hash).copied().unwrap_or(0)
    }

    fn node_config(&self, id: NodeId, incarnation: u64) -> NodeConfig {
        let founders: BTreeSet<NodeId> = (1..=self.cfg.members as NodeId).collect();
        let mut c = NodeConfig::new(id, founders);
        c.raft.election_timeout_ticks = self.cfg.election_timeout_ticks;
        c.raft.heartbeat_interval_ticks = self.cfg.heartbeat_interval_ticks;
        c.raft.snapshot_chunk_bytes = self.cfg.snapshot_chunk_bytes;
        c.raft.catch_up_entries = self.cfg.catch_up_entries;
        c.raft.rng_seed = stream_seed(self.cfg.seed, 0x4b56_2000 + id * 1_000 + incarnation);
        c.kv = kv_config(&self.cfg);
        c.snapshot_interval_entries = self.cfg.snapshot_interval_entries;
        c.request_timeout_ticks = self.cfg.request_timeout_ticks;
        c.record_events = true;
        c.background_snapshots = false;
        let founders = 1..=self.cfg.members as NodeId;
        c.initial_members = founders
            .map(|id| node::Member { id, peer_urls: vec![sim_peer_url(id)], ..Default::default() })
            .collect();
        c.joining = id > self.cfg.members as NodeId;
        c.new_member_id = Some(sim_member_id);
        // As the server: the node says when a read may be served, the driver serves it.
        c.hand_out_reads = true;
        // As the server: apply runs apart from the raft loop (after a seeded delay).
        c.apply_apart = true;
        c.apply_gap_entries_max = self.cfg.apply_gap_entries_max;
        c
    }

    /// Starts member `idx` from what its disk holds.
    fn boot(&mut self, idx: usize) {
        let id = self.members[idx].id;
        if self.members[idx].retired {
            return;
        }
        let Some(disk) = self.members[idx].disk.take() else { return };
        let opts = Options { segment_bytes_max: self.cfg.segment_bytes_max };
        let (storage, restored, report) = match Storage::open(disk, opts) {
            Ok(opened) => opened,
            Err(e) => {
                let details = format!("n{id} cannot recover its disk after a crash: {e}");
                return self.record(Violation::new("Recovery", details));
            }
        };
        let incarnation = self.members[idx].incarnation + 1;
        let cfg = self.node_config(id, incarnation);
        let node = match Node::new(cfg, storage, restored) {
            Ok(n) => n,
            Err(e) => return self.record(Violation::new("Recovery", format!("n{id}: {e}"))),
        };
        let m = &mut self.members[idx];
        m.incarnation = incarnation;
        m.applied = node.applied_index();
        m.snapshot_index = node.raft().snapshot_meta().index;
        m.sync_scheduled = false;
        m.applier = Some(node.applier());
        m.apply_queue.clear();
        m.apply_scheduled = false;
        m.requests.clear();
        m.ticks = 0;
        m.dialing.clear();
        let (applied, term, last) = (m.applied, node.raft().term(), node.raft().last_index());
        m.node = Some(node);
        let first_tick = self.rng_clock.range(1, m.tick_period_us + 1);
        self.queue.push(self.now_us + first_tick, KvEvent::Tick { member: idx, incarnation });
        kv_trace!(
            self,
            "n{id} starts (incarnation {incarnation}): term {term}, applied {applied}, last {last}, {} torn tail{}",
            report.warnings.len(),
            if report.warnings.len() == 1 { "" } else { "s" }
        );
        if let Err(v) = self.check_member_leases(idx, applied) {
            return self.record(v);
        }
        self.dial_peers_at_start(idx);
        self.drive(idx);
    }

    /// Power cut on member `idx`: the disk keeps what was synced and maybe part of the rest.
    fn crash_member(&mut self, idx: usize) {
        if self.members[idx].node.is_some() {
            self.stats.crashes += 1;
        }
        self.stop_member(idx);
    }

    /// Member `idx` stops as in a power cut (a crash, or a removed member stopping for
    /// good; only crashes are counted as such).
    fn stop_member(&mut self, idx: usize) {
        let m = &mut self.members[idx];
        let Some(node) = m.node.take() else { return };
        m.incarnation += 1;
        m.sync_scheduled = false;
        m.applier = None;
        m.apply_queue.clear();
        m.apply_scheduled = false;
        m.requests.clear();
        let mut disk = node.into_store().into_disk();
        disk.crash();
        m.disk = Some(disk);
        kv_trace!(self, "n{} crashes", m.id);
        self.break_watch_streams(idx);
    }

    /// Power loss on `id`: it stops; what its disk had not synced is lost or torn;
    /// messages in flight to it are dropped.
    pub fn crash(&mut self, id: NodeId) {
        self.count_spare_crash(id as usize - 1);
        self.crash_member(id as usize - 1);
    }

    fn count_spare_crash(&mut self, idx: usize) {
        let m = &self.members[idx];
        let joined = m.id > self.cfg.members as NodeId && m.node.is_some();
        self.stats.spare_crashes += u64::from(joined);
    }

    /// Starts `id` again from its disk (cutting its power first if it is up).
    pub fn restart(&mut self, id: NodeId) {
        self.crash_member(id as usize - 1);
        self.boot(id as usize - 1);
    }

    fn dispatch(&mut self, event: KvEvent) {
        match event {
            KvEvent::Tick { member, incarnation } => self.on_tick(member, incarnation),
            KvEvent::Peer { msg, incarnation } => self.on_peer(msg, incarnation),
            KvEvent::Request { member, incarnation, client, op_no, attempt, request } => {
                let asker = Asker { client, op_no, attempt, received_us: self.now_us };
                self.on_request(member, incarnation, asker, request)
            }
            KvEvent::Reply { client, from, op_no, attempt, received_us, result } => {
                self.on_client_reply(client, from, (op_no, attempt, received_us), result)
            }
            KvEvent::SyncDone { member, incarnation } => self.on_sync_done(member, incarnation),
            KvEvent::ApplyDone { member, incarnation } => self.on_apply_done(member, incarnation),
            KvEvent::PowerLoss { member, incarnation } => self.on_power_loss(member, incarnation),
            KvEvent::Restart { member, incarnation } => {
                let m = &self.members[member];
                if m.incarnation == incarnation && m.node.is_none() {
                    self.boot(member);
                }
            }
            KvEvent::ClientTimer { client, token } => self.on_client_timer(client, token),
            KvEvent::WatchCreate { member, incarnation, watcher, conn, start_revision } => {
                self.on_watch_create((member, incarnation), watcher, conn, start_revision)
            }
            KvEvent::WatchDeliver { watcher, conn, msg } => {
                self.on_watch_deliver(watcher, conn, msg)
            }
            KvEvent::WatchTimer { watcher, token } => self.on_watch_timer(watcher, token),
            KvEvent::PeerHello { member, incarnation, peer, backoff_us } => {
                self.on_peer_hello((member, incarnation), peer, backoff_us)
            }
            KvEvent::PeerDial { member, incarnation, peer, backoff_us } => {
                self.on_peer_dial((member, incarnation), peer, backoff_us)
            }
        }
    }

    fn live(&self, idx: usize, incarnation: u64) -> bool {
        let m = &self.members[idx];
        m.incarnation == incarnation && m.node.is_some()
    }

    fn on_tick(&mut self, idx: usize, incarnation: u64) {
        if !self.live(idx, incarnation) {
            return;
        }
        self.members[idx].ticks += 1;
        let lease_clock_ms = self.lease_clock_ms(idx);
        let m = &mut self.members[idx];
        let node = m.node.as_mut().expect("live");
        node.tick();
        // The server passes real elapsed time; here the member's own (drifting) clock.
        node.advance_lease_clock(lease_clock_ms);
        let (id, period) = (m.id, m.tick_period_us);
        self.queue.push(self.now_us + period, KvEvent::Tick { member: idx, incarnation });
        kv_trace!(self, "n{id} tick");
        self.drive(idx);
        self.check_raft_state_bound(id);
    }

    /// Bounded Raft state: a member's WAL never holds more than
    /// [`raft_state_bytes_bound`], whatever the faults. Checked at each of its
    /// ticks; the largest size seen is in [`KvStats::raft_state_bytes_max`].
    fn check_raft_state_bound(&mut self, id: NodeId) {
        let bytes = self.raft_state_bytes(id);
        self.stats.raft_state_bytes_max = self.stats.raft_state_bytes_max.max(bytes);
        let bound = raft_state_bytes_bound(&self.cfg);
        if bytes > bound {
            let details = format!("n{id}'s WAL holds {bytes} bytes, over the bound of {bound}");
            self.record(Violation::new("Bounded Raft state", details));
        }
    }

    fn on_peer(&mut self, msg: Message, incarnation: u64) {
        let idx = msg.to as usize - 1;
        let fate = if !self.net.link_up(msg.from, msg.to) {
            "dropped: link cut"
        } else if !self.live(idx, incarnation) {
            "dropped: receiver down"
        } else {
            ""
        };
        kv_trace!(self, "n{} <- n{} {} {fate}", msg.to, msg.from, MsgFmt(&msg));
        if !fate.is_empty() {
            return;
        }
        let node = self.members[idx].node.as_mut().expect("live");
        if node.is_removed_member(msg.from) {
            // As etcd's peers answer a removed member ("the member has been permanently
            // removed from the cluster"): it learns it and stops for good.
            return self.retire(msg.from as usize - 1, msg.to);
        }
        let before = node.appends_held_back();
        node.step(msg);
        let held = node.appends_held_back() - before;
        self.stats.appends_held_back += held;
        if held > 0 {
            kv_trace!(self, "n{} holds back the append: past the apply gap", self.members[idx].id);
        }
        self.drive(idx);
    }

    fn on_request(&mut self, idx: usize, incarnation: u64, asker: Asker, mut request: Request) {
        let id = self.members[idx].id;
        let reachable = self.client_link_up(asker.client, id);
        let fate = if !reachable {
            "dropped: link cut"
        } else if !self.live(idx, incarnation) {
            "dropped: member down"
        } else {
            ""
        };
        kv_trace!(self, "n{id} <- c{} op{}.{} {fate}", asker.client, asker.op_no, asker.attempt);
        if !fate.is_empty() {
            return;
        }
        let m = &mut self.members[idx];
        let rid = m.next_request;
        m.next_request += 1;
        m.requests.insert(rid, asker);
        let node = m.node.as_mut().expect("live");
        auth_check::stamp_at_member(&mut request, node.state().auth());
        node.submit(rid, request);
        self.drive(idx);
    }

    fn on_sync_done(&mut self, idx: usize, incarnation: u64) {
        if !self.live(idx, incarnation) {
            return;
        }
        let m = &mut self.members[idx];
        m.sync_scheduled = false;
        let id = m.id;
        if let Err(e) = m.node.as_mut().expect("live").sync() {
            return self.record(Violation::new("Member error", format!("n{id} sync: {e}")));
        }
        kv_trace!(self, "n{id} synced");
        self.drive(idx);
    }

    /// The applier applies the oldest batch handed to it; the node takes the report.
    fn on_apply_done(&mut self, idx: usize, incarnation: u64) {
        if !self.live(idx, incarnation) {
            return;
        }
        let m = &mut self.members[idx];
        m.apply_scheduled = false;
        let id = m.id;
        let batch = m.apply_queue.pop_front().expect("an ApplyDone follows a batch");
        let applied = m.applier.as_mut().expect("live").apply(batch);
        let node = m.node.as_mut().expect("live");
        if let Err(e) = applied.and_then(|a| node.on_applied(a)) {
            return self.record(Violation::new("Member error", format!("n{id} apply: {e}")));
        }
        kv_trace!(
            self,
            "n{id} applied to {}",
            self.members[idx].node.as_ref().expect("live").applied_index()
        );
        self.schedule_apply(idx);
        self.drive(idx);
    }

    /// Schedules the applier's next batch, after a seeded delay.
    fn schedule_apply(&mut self, idx: usize) {
        let m = &mut self.members[idx];
        if m.apply_scheduled || m.apply_queue.is_empty() {
            return;
        }
        m.apply_scheduled = true;
        let incarnation = m.incarnation;
        let delay_max = match self.cfg.slow_applier {
            Some((slow, us)) if slow == idx => us,
            _ => self.cfg.apply_delay_us_max,
        };
        let delay = self.rng_apply.range(0, delay_max + 1);
        self.queue.push(self.now_us + delay, KvEvent::ApplyDone { member: idx, incarnation });
    }

    fn on_power_loss(&mut self, idx: usize, incarnation: u64) {
        if !self.live(idx, incarnation) || self.cfg.crash_during_write <= 0.0 {
            return;
        }
        kv_trace!(self, "n{} loses power with a sync in flight", self.members[idx].id);
        self.count_spare_crash(idx);
        self.crash_member(idx);
        let incarnation = self.members[idx].incarnation;
        self.queue.push(
            self.now_us + self.cfg.crash_restart_us,
            KvEvent::Restart { member: idx, incarnation },
        );
    }

    /// Polls member `idx` after an input: sends what may leave, checks what it applied,
    /// answers clients, and schedules the sync its writes need.
    /// Member `idx`'s lease clock in ms: its ticks so far on its own (drifting) clock.
    fn lease_clock_ms(&self, idx: usize) -> u64 {
        let ticks = self.members[idx].ticks;
        let us = (ticks * self.cfg.tick_interval_us) as f64 * self.cfg.lease_clock_rate;
        us as u64 / 1000
    }

    fn drive(&mut self, idx: usize) {
        if self.violation.is_some() {
            return;
        }
        let id = self.members[idx].id;
        let lease_clock_ms = self.lease_clock_ms(idx);
        let Some(node) = self.members[idx].node.as_mut() else { return };
        if node.lease_clock_pending() {
            // Just elected: start the lease clock now, as the server does.
            node.advance_lease_clock(lease_clock_ms);
        }
        let mut outbox: Vec<Message> = Vec::new();
        let out = match node.poll(&mut |ms| outbox.extend(ms)) {
            Ok(out) => out,
            Err(e) => return self.record(Violation::new("Member error", format!("n{id}: {e}"))),
        };
        for m in outbox {
            self.send_peer(m);
        }
        let (changes, removed) = (out.member_changes, out.removed);
        self.members[idx].apply_queue.extend(out.apply);
        self.schedule_apply(idx);
        if let Err(v) = self.observe(idx, out.events) {
            return self.record(v);
        }
        for (rid, result) in out.replies {
            self.reply(idx, rid, result);
        }
        // The server serves these on worker threads from a view of the state after the
        // poll that handed them out; the state now is exactly that.
        for read in out.reads {
            let state = self.members[idx].node.as_ref().expect("live").state();
            let answer = node::answer_read(state, &read.query);
            self.reply(idx, read.id, Ok(answer));
        }
        self.schedule_sync(idx);
        if let Err(v) = self.check_leader(idx) {
            return self.record(v);
        }
        if !self.members[idx].watch_streams.is_empty() {
            self.serve_watches(idx);
        }
        self.after_member_changes(idx, changes, removed);
    }

    /// Apply consistency: each member applies densely from where it started, or jumps
    /// forward by a snapshot; every member applies the same entry at each index.
    fn observe(&mut self, idx: usize, events: Vec<NodeEvent>) -> Result<(), Violation> {
        let m = &self.members[idx];
        let (id, applied_before) = (m.id, m.applied);
        let commit = m.node.as_ref().expect("live").raft().commit_index();
        for ev in events {
            match ev {
                NodeEvent::Applied(e) => {
                    let applied = self.members[idx].applied;
                    let joiner = id > self.cfg.members as NodeId;
                    if joiner && self.members[idx].snapshot_index == 0 {
                        let details = format!(
                            "n{id} joined the cluster and applies index {} before any snapshot: its configuration and member table would come from a log that does not hold the founding ones",
                            e.index
                        );
                        return Err(Violation::new("Joining by snapshot", details));
                    }
                    if e.index != applied + 1 || e.index > commit {
                        let details = format!(
                            "n{id} applies index {} after {applied} (commit {commit}): applying must be dense and committed",
                            e.index
                        );
                        return Err(Violation::new("State Machine Safety", details));
                    }
                    let h = entry_hash(&e);
                    match self.applied.entry(e.index) {
                        MapEntry::Occupied(o) if *o.get() != (e.term, h) => {
                            let details = format!(
                                "n{id} applies (index {}, term {}, content {h:016x}) but another member applied (term {}, content {:016x}) there",
                                e.index, e.term, o.get().0, o.get().1
                            );
                            return Err(Violation::new("State Machine Safety", details));
                        }
                        MapEntry::Occupied(_) => {}
                        MapEntry::Vacant(v) => {
                            v.insert((e.term, h));
                            *self.content_count.entry(h).or_default() += 1;
                            self.stats.entries_applied += 1;
                            self.stats.entry_bytes_applied += e.data.len() as u64;
                            match self.reference.apply(&e) {
                                Ok(None) => {}
                                Ok(Some(revoke)) => self.on_reference_revoke(e.index, &revoke)?,
                                Err(details) => {
                                    return Err(Violation::new("Reference history", details));
                                }
                            }
                            if let Some(v) = self.reference.auth.take_violation() {
                                return Err(v);
                            }
                            self.stats.auth_served = self.reference.auth.served;
                            self.stats.auth_refused = self.reference.auth.refused;
                        }
                    }
                    let m = &mut self.members[idx];
                    m.applied = e.index;
                }
                NodeEvent::Installed(meta) => {
                    let known = self.applied.get(&meta.index).map(|(t, _)| *t);
                    let applied = self.members[idx].applied;
                    if meta.index <= applied || known.is_some_and(|t| t != meta.term) {
                        let details = format!(
                            "n{id} installs a snapshot at (index {}, term {}) after applying {applied}; applied term there: {known:?}",
                            meta.index, meta.term
                        );
                        return Err(Violation::new("State Machine Safety", details));
                    }
                    let m = &mut self.members[idx];
                    m.applied = meta.index;
                    m.snapshot_index = meta.index;
                    self.stats.snapshots_installed += 1;
                    kv_trace!(self, "n{id} installed snapshot ({}, t{})", meta.index, meta.term);
                }
                NodeEvent::Appended(_) | NodeEvent::Synced => {}
            }
        }
        let m = &mut self.members[idx];
        let snap = m.node.as_ref().expect("live").raft().snapshot_meta().index;
        if snap > m.snapshot_index {
            m.snapshot_index = snap;
            self.stats.snapshots_taken += 1;
            kv_trace!(self, "n{id} took snapshot at {snap}");
        }
        if self.members[idx].applied != applied_before {
            self.check_member_leases(idx, applied_before)?;
        }
        Ok(())
    }

    /// Election Safety: at most one leader per term.
    fn check_leader(&mut self, idx: usize) -> Result<(), Violation> {
        let m = &self.members[idx];
        let Some(node) = m.node.as_ref() else { return Ok(()) };
        let raft = node.raft();
        if raft.role() != Role::Leader {
            return Ok(());
        }
        let (id, term) = (m.id, raft.term());
        match self.leaders.insert(term, id) {
            Some(other) if other != id => Err(Violation::new(
                "Election Safety",
                format!("n{id} and n{other} both lead term {term}"),
            )),
            Some(_) => Ok(()),
            None => {
                kv_trace!(self, "n{id} becomes leader of term {term}");
                Ok(())
            }
        }
    }

    fn schedule_sync(&mut self, idx: usize) {
        let m = &mut self.members[idx];
        let Some(node) = m.node.as_ref() else { return };
        if m.sync_scheduled || !node.needs_sync() {
            return;
        }
        m.sync_scheduled = true;
        let incarnation = m.incarnation;
        let latency = self.cfg.disk.sample_latency_us(&mut self.rng_disk);
        self.queue.push(self.now_us + latency, KvEvent::SyncDone { member: idx, incarnation });
        let p = self.cfg.crash_during_write;
        if p > 0.0 && self.rng_disk.chance(p) {
            let at = self.now_us + self.rng_disk.range(0, latency + 1);
            self.queue.push(at, KvEvent::PowerLoss { member: idx, incarnation });
        }
    }

    /// The network's verdict on one message (`reply`: it answers a request): how many
    /// copies arrive, after which delays.
    fn fate(&mut self, link_up: bool, reply: bool) -> (&'static str, usize, [u64; 2]) {
        let cfg = &self.net.cfg;
        let (fate, copies) = if !link_up {
            ("cut", 0)
        } else if cfg.loss > 0.0 && self.rng_net.chance(cfg.loss) {
            ("lost", 0)
        } else if cfg.duplicate > 0.0 && self.rng_net.chance(cfg.duplicate) {
            ("dup", 2)
        } else {
            ("", 1)
        };
        let mut delays = [0u64; 2];
        for d in delays.iter_mut().take(copies) {
            *d = self.net.cfg.sample_delay_us(&mut self.rng_net, reply);
        }
        (fate, copies, delays)
    }

    fn send_peer(&mut self, m: Message) {
        let (from, to) = (m.from, m.to);
        assert!(to >= 1 && to as usize <= self.members.len() && to != from, "bad peer {to}");
        self.stats.peer_messages += 1;
        let (fate, copies, delays) = self.fate(self.net.link_up(from, to), is_reply(&m));
        kv_trace!(self, "n{from} -> n{to} {} {fate} +{}us", MsgFmt(&m), delays[0]);
        let incarnation = self.members[to as usize - 1].incarnation;
        if copies == 2 {
            let msg = m.clone();
            self.queue.push(self.now_us + delays[1], KvEvent::Peer { msg, incarnation });
        }
        if copies >= 1 {
            self.queue.push(self.now_us + delays[0], KvEvent::Peer { msg: m, incarnation });
        }
    }

    pub(crate) fn client_link_up(&self, client: usize, member: NodeId) -> bool {
        self.net.is_connected(member)
            && !self.client_cut[client * self.slots() + member as usize - 1]
    }

    /// A client sends one attempt of its operation to `to`.
    pub(crate) fn send_request(
        &mut self,
        client: usize,
        to: NodeId,
        (op_no, attempt): (u64, u64),
        request: Request,
    ) {
        self.stats.client_messages += 1;
        let (fate, copies, delays) = self.fate(self.client_link_up(client, to), false);
        kv_trace!(self, "c{client} -> n{to} op{op_no}.{attempt} {fate} +{}us", delays[0]);
        let member = to as usize - 1;
        let incarnation = self.members[member].incarnation;
        for &delay in delays.iter().take(copies) {
            let request = request.clone();
            let ev = KvEvent::Request { member, incarnation, client, op_no, attempt, request };
            self.queue.push(self.now_us + delay, ev);
        }
    }

    fn reply(&mut self, idx: usize, rid: RequestId, result: Result<Response, RequestError>) {
        let m = &mut self.members[idx];
        let from = m.id;
        let Some(Asker { client, op_no, attempt, received_us }) = m.requests.remove(&rid) else {
            return;
        };
        self.stats.client_messages += 1;
        let (fate, copies, delays) = self.fate(self.client_link_up(client, from), true);
        kv_trace!(
            self,
            "n{from} -> c{client} op{op_no}.{attempt} {} {fate} +{}us",
            if result.is_ok() { "ok" } else { "err" },
            delays[0]
        );
        for &delay in delays.iter().take(copies) {
            let result = result.clone();
            let ev = KvEvent::Reply { client, from, op_no, attempt, received_us, result };
            self.queue.push(self.now_us + delay, ev);
        }
    }

    pub(crate) fn arm_client_timer(&mut self, client: usize, after_us: u64) {
        let c = &mut self.clients[client];
        c.timer_token += 1;
        let token = c.timer_token;
        self.queue.push(self.now_us + after_us, KvEvent::ClientTimer { client, token });
    }

    fn trace_net(&mut self, what: &str) {
        let links = self.net.describe();
        kv_trace!(self, "net {what}:{links}");
    }

    /// Cuts every link to and from member `id`, its clients' included.
    pub fn disconnect(&mut self, id: NodeId) {
        self.net.set_connected(id, false);
        self.trace_net(&format!("disconnect n{id}"));
    }

    /// Undoes [`KvCluster::disconnect`] (links cut otherwise stay cut).
    pub fn connect(&mut self, id: NodeId) {
        self.net.set_connected(id, true);
        self.trace_net(&format!("connect n{id}"));
    }

    /// Replaces the network's behaviour (loss, duplication, delays).
    pub fn set_net(&mut self, cfg: NetConfig) {
        kv_trace!(self, "net config {cfg:?}");
        self.net.cfg = cfg;
    }

    /// Sets the chance, per sync, of a power loss before it completes.
    pub fn set_crash_during_write(&mut self, chance: f64) {
        kv_trace!(self, "crash during write chance {chance}");
        self.cfg.crash_during_write = chance;
    }

    /// Every link up, every member connected, no client confined.
    pub fn heal(&mut self) {
        self.net.heal();
        self.client_cut.fill(false);
        self.trace_net("heal");
    }

    /// A partition into `groups` (members in no group are isolated); each client is, with
    /// the configured chance, confined to one random group.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        self.net.heal();
        self.client_cut.fill(false);
        let group_of = |id: NodeId| groups.iter().position(|g| g.contains(&id));
        for from in self.ids() {
            for to in self.ids() {
                let same = group_of(from).is_some() && group_of(from) == group_of(to);
                self.net.set_link(from, to, same || from == to);
            }
        }
        let n = self.slots();
        for client in 0..self.clients.len() {
            if groups.is_empty() || !self.rng_faults.chance(self.cfg.client_confined) {
                continue;
            }
            let g = groups[self.rng_faults.range(0, groups.len() as u64) as usize];
            for id in 1..=n as NodeId {
                self.client_cut[client * n + id as usize - 1] = !g.contains(&id);
            }
        }
        self.trace_net(&format!("partition {groups:?}"));
    }

    /// Cuts the one-way link `from → to` between two members.
    pub fn cut_link(&mut self, from: NodeId, to: NodeId) {
        self.net.set_link(from, to, false);
        self.trace_net(&format!("cut n{from}>n{to}"));
    }

    /// True when every member is up, a leader has everything committed, and every member
    /// has applied exactly the leader's log: the cluster is quiet.
    pub fn quiescent(&self) -> bool {
        let Some(leader) = self.leader().and_then(|id| self.node(id)) else { return false };
        let (commit, last) = (leader.raft().commit_index(), leader.raft().last_index());
        // Retired members, spares never started and members the leader's configuration
        // no longer holds are not part of the cluster (a removed member that missed its
        // removal and never speaks again stays up, stale: seeds 794, 1271, 1341 of
        // --workload kv --membership always).
        let conf = leader.raft().conf_state().members();
        let in_cluster = |m: &&Member| {
            !m.retired && (m.incarnation > 0 || m.node.is_some()) && conf.contains(&m.id)
        };
        commit == last
            && self
                .members
                .iter()
                .filter(in_cluster)
                .all(|m| m.node.as_ref().is_some_and(|n| n.applied_index() == commit))
    }

    /// Checks that every member's state machine serializes to the same bytes (call when
    /// [`KvCluster::quiescent`]).
    pub fn check_states_identical(&mut self) -> Result<(), Violation> {
        let mut first: Option<(NodeId, Vec<u8>)> = None;
        let conf =
            self.leader().and_then(|id| self.node(id)).map(|l| l.raft().conf_state().members());
        for m in &self.members {
            let Some(node) = m.node.as_ref() else { continue };
            if conf.as_ref().is_some_and(|c| !c.contains(&m.id)) {
                continue;
            }
            let mut bytes = Vec::new();
            node.state().snapshot_view().write_to(&mut bytes).expect("in memory");
            match &first {
                None => first = Some((m.id, bytes)),
                Some((id, b)) if *b != bytes => {
                    let details = format!(
                        "n{} and n{id} applied up to {} but their states differ ({} vs {} bytes)",
                        m.id,
                        node.applied_index(),
                        bytes.len(),
                        b.len()
                    );
                    let v = Violation::new("State Machine Safety (replica states)", details);
                    self.record(v.clone());
                    return Err(v);
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

impl KvCluster {
    /// The end of a scripted run: heals the network, restarts crashed members, stops the
    /// clients, and waits (at most `bound_us` of simulated time) until every client is
    /// idle and every member has applied the whole log; then checks that the members'
    /// states are byte-identical. Any violation so far is returned too.
    pub fn drain(&mut self, bound_us: u64) -> Result<(), Violation> {
        self.heal();
        for id in self.ids() {
            if !self.is_up(id) {
                self.restart(id);
            }
        }
        self.set_clients_active(false);
        let start = self.now_us;
        while !(self.clients_idle() && self.quiescent()) {
            if let Some((v, _)) = &self.violation {
                return Err(v.clone());
            }
            if self.now_us - start > bound_us {
                let details = format!(
                    "not quiet {} ms after draining (clients idle: {}, leader: {:?})",
                    bound_us / 1000,
                    self.clients_idle(),
                    self.leader()
                );
                return Err(Violation::new("Liveness (drain)", details));
            }
            self.run_until_us(self.now_us + 10_000);
        }
        let stop = self.now_us;
        while let Some(step) = self.settled(stop) {
            step?;
            self.run_until_us(self.now_us + 10_000);
            if let Some((v, _)) = &self.violation {
                return Err(v.clone());
            }
        }
        if let Some((v, _)) = &self.violation {
            return Err(v.clone());
        }
        self.check_states_identical()
    }

    /// After the clients stopped and the members converged (at `since_us`): `None` once
    /// every lease has expired, the members have applied its revoke, and every watcher
    /// has every event of its range; `Some(Ok)` while that may still come;
    /// `Some(Err)` past [`LEASE_EXPIRY_BOUND_US`].
    pub(crate) fn settled(&self, since_us: u64) -> Option<Result<(), Violation>> {
        let leases = self.lease_count();
        let quiet = self.clients_idle() && self.quiescent();
        let watchers_done = self.watchers_caught_up();
        if leases == 0 && quiet && watchers_done {
            return None;
        }
        if self.now_us - since_us <= LEASE_EXPIRY_BOUND_US {
            return Some(Ok(()));
        }
        let details = format!(
            "{} s after the clients stopped: {leases} leases not expired, members quiet: {quiet}, watchers caught up: {watchers_done} ({})",
            LEASE_EXPIRY_BOUND_US / 1_000_000,
            self.watch_lag_report()
        );
        Some(Err(Violation::new("Liveness (lease expiry and watch delivery)", details)))
    }

    /// The history as checked: writes refused at apply that the log never executed
    /// count as failed, not unknown (see `auth_check`).
    pub fn settled_history(&self) -> History<KvOp, KvResult> {
        self.reference.auth.settled(&self.history)
    }

    /// Checks the history so far for linearizability within `max_steps` search steps.
    pub fn check_history(&self, max_steps: u64) -> lincheck::Verdict {
        let options = lincheck::CheckOptions { timeout: None, max_steps: Some(max_steps) };
        lincheck::check(&lincheck::KvModel::strict(), &self.settled_history(), &options)
    }
}

impl NetFaultTarget for KvCluster {
    fn heal(&mut self) {
        KvCluster::heal(self);
    }
    fn partition(&mut self, groups: &[&[NodeId]]) {
        KvCluster::partition(self, groups);
    }
    fn cut_link(&mut self, from: NodeId, to: NodeId) {
        KvCluster::cut_link(self, from, to);
    }
}

impl FaultTarget for KvCluster {
    fn now_us(&self) -> u64 {
        KvCluster::now_us(self)
    }
    fn is_up(&self, id: NodeId) -> bool {
        KvCluster::is_up(self, id)
    }
    fn crash(&mut self, id: NodeId) {
        KvCluster::crash(self, id);
    }
    /// Only members of the cluster come back: a spare the operator never added stays
    /// off, a removed member stays stopped.
    fn restart(&mut self, id: NodeId) {
        if self.ever_started(id) && !self.is_retired(id) {
            KvCluster::restart(self, id);
        }
    }
    fn fault_leader(&self) -> Option<NodeId> {
        self.leader()
    }
    fn set_net(&mut self, cfg: NetConfig) {
        KvCluster::set_net(self, cfg);
    }
    fn set_crash_during_write(&mut self, chance: f64) {
        KvCluster::set_crash_during_write(self, chance);
    }
}

/// Membership changes: the operator's side (as `etcdctl member ...` would drive it) and
/// what the driver does with their outcomes (start added spares, stop removed members).
impl KvCluster {
    /// Asks the current leader for a membership change; the id of the request, whose
    /// outcome [`KvCluster::member_outcome`] gives once the leader answers. `None` if
    /// there is no leader to ask.
    pub fn change_members(&mut self, change: MemberChange) -> Option<RequestId> {
        let leader = self.leader()?;
        let rid = self.next_member_request;
        self.next_member_request += 1;
        kv_trace!(self, "operator -> n{leader}: member change {rid} {change:?}");
        let idx = leader as usize - 1;
        self.members[idx].node.as_mut().expect("the leader is up").change_members(rid, change);
        self.drive(idx);
        Some(rid)
    }

    /// The outcome of membership change `rid`, once answered.
    pub fn member_outcome(&self, rid: RequestId) -> Option<&Result<MemberChanged, MemberFailure>> {
        self.member_outcomes.get(&rid)
    }

    /// The member table as the leader has applied it (`None` without a leader).
    pub fn members_table(&self) -> Option<Vec<node::Member>> {
        Some(self.node(self.leader()?)?.members())
    }

    /// True once member `id` ran (a founder, or a spare a membership change started).
    pub fn ever_started(&self, id: NodeId) -> bool {
        self.members.get((id as usize).wrapping_sub(1)).is_some_and(|m| m.incarnation > 0)
    }

    /// True once member `id` was removed and stopped for good.
    pub fn is_retired(&self, id: NodeId) -> bool {
        self.members.get((id as usize).wrapping_sub(1)).is_some_and(|m| m.retired)
    }

    /// Member `idx` learnt (from its own log, or from member `from` refusing it) that
    /// it was removed: it stops for good.
    pub(crate) fn retire(&mut self, idx: usize, from: NodeId) {
        if self.members[idx].retired {
            return;
        }
        let id = self.members[idx].id;
        kv_trace!(self, "n{id} was removed from the cluster (told by n{from}): stops for good");
        self.stop_member(idx);
        self.members[idx].retired = true;
        self.stats.members_removed += 1;
    }

    /// Records the outcomes member `idx` handed out, stops it if its removal is applied,
    /// and starts every spare its member table names that never ran.
    fn after_member_changes(
        &mut self,
        idx: usize,
        changes: Vec<(RequestId, Result<MemberChanged, MemberFailure>)>,
        removed: bool,
    ) {
        let id = self.members[idx].id;
        for (rid, outcome) in changes {
            match &outcome {
                Ok(done) => {
                    self.stats.member_changes += 1;
                    let m = done.member.as_ref().map(|m| (m.id, m.is_learner));
                    kv_trace!(self, "n{id}: member change {rid} done: {m:?}");
                }
                Err(e) => {
                    self.stats.member_changes_failed += 1;
                    kv_trace!(self, "n{id}: member change {rid} failed: {e}");
                }
            }
            self.member_outcomes.insert(rid, outcome);
        }
        if removed {
            return self.retire(idx, id);
        }
        // Reading the member table clones it (names, URLs): skip it once no spare is
        // left that never ran (always, in seeds without spares), as this runs after every
        // drive of every member.
        let never_ran = |m: &Member| m.incarnation == 0 && m.node.is_none();
        if !self.members.iter().skip(self.cfg.members).any(never_ran) {
            return;
        }
        let Some(node) = self.members[idx].node.as_ref() else { return };
        let named: Vec<NodeId> = node.members().iter().map(|m| m.id).collect();
        for new in named {
            let slot = (new as usize).wrapping_sub(1);
            let never_ran =
                self.members.get(slot).is_some_and(|m| m.incarnation == 0 && m.node.is_none());
            if never_ran && new > self.cfg.members as NodeId {
                kv_trace!(self, "n{new} starts as a joining member");
                self.stats.members_joined += 1;
                self.boot(slot);
            }
        }
    }
}
