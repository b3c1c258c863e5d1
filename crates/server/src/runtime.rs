//! The node thread: owns the [`Node`], drains its input channel in batches, ticks it,
//! and polls it. One batch of inputs → one `poll` → one WAL sync, so concurrent client
//! writes arriving while the previous sync runs share the next one (group commit).
//!
//! The thread is a plain OS thread, not a tokio task: `poll` blocks on fsync, and a
//! blocked tokio worker would stall unrelated network work.

use crate::metrics::Metrics;
use kv::{EventBatch, KvError, Response};
use node::{LogStore, Node, Request, RequestError, SnapshotJob};
use raft::{Message, NodeId, Role};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Most changes (of any key) one [`Input::Events`] visits: bounds the time a watcher's
/// catch-up holds the node thread (etcd sends at most 1000 revisions per batch).
pub const EVENTS_BUDGET_PER_QUERY: u64 = 1000;

/// The answer to a client request.
pub type Reply = Result<Response, RequestError>;

/// A snapshot of the member's Raft status.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// This member's id.
    pub id: NodeId,
    /// Current term.
    pub term: u64,
    /// Known leader, if any.
    pub leader: Option<NodeId>,
    /// True if this member leads.
    pub is_leader: bool,
    /// Commit index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Store revision.
    pub revision: u64,
    /// Compacted revision.
    pub compact_revision: u64,
    /// Index of the last snapshot.
    pub snapshot_index: u64,
    /// The state machine's size estimate in bytes ([`kv::StateMachine::size_bytes`]):
    /// what the space quota is measured on, and what Status reports as etcd's db size.
    pub db_size_bytes: u64,
    /// The raised alarms (replicated state).
    pub alarms: Vec<kv::AlarmMember>,
}

/// What the node thread accepts.
pub enum Input {
    /// A message from a peer.
    Peer(Message),
    /// A client request and where to send its answer.
    Client(Request, oneshot::Sender<Reply>),
    /// A status query.
    Status(oneshot::Sender<Status>),
    /// A background snapshot finished (`None`: it failed).
    SnapshotDone(Option<raft::Snapshot>),
    /// A watcher's events: the changes of `key`..`range_end` from revision `from` on,
    /// from this member's applied state (at most [`EVENTS_BUDGET_PER_QUERY`] changes).
    Events {
        /// First key.
        key: Vec<u8>,
        /// End of the range, etcd's conventions.
        range_end: Vec<u8>,
        /// First revision wanted.
        from: u64,
        /// Include each event's previous key-value.
        prev_kv: bool,
        /// Where the batch goes.
        reply: oneshot::Sender<Result<EventBatch, KvError>>,
    },
    /// The live leases `(id, granted TTL)` and the current revision, from this member's
    /// applied state.
    Leases(oneshot::Sender<(u64, Vec<(i64, i64)>)>),
    /// A copy of the applied state machine (O(1): its maps are persistent), for work
    /// too long for the node thread, such as hashing every key.
    State(oneshot::Sender<kv::StateMachine>),
    /// Stop the thread.
    Stop,
}

/// Where the node thread hands messages for peers. Must never block.
pub trait Outbox: Send + 'static {
    /// Queues `msgs` for delivery; may drop them (Raft tolerates loss).
    fn send(&self, msgs: Vec<Message>);
}

/// A cheap, cloneable way to talk to the node thread.
#[derive(Clone)]
pub struct NodeHandle {
    tx: Sender<Input>,
    revision: watch::Receiver<u64>,
    applied: watch::Receiver<u64>,
}

impl NodeHandle {
    /// Hands a peer message to the node.
    pub fn peer_message(&self, m: Message) {
        let _ = self.tx.send(Input::Peer(m));
    }

    /// Submits a client request and waits for its answer (or `Timeout` if the node
    /// stopped).
    pub async fn request(&self, req: Request) -> Reply {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Input::Client(req, tx)).is_err() {
            return Err(RequestError::Timeout);
        }
        rx.await.unwrap_or(Err(RequestError::Timeout))
    }

    /// The member's current status.
    pub async fn status(&self) -> Option<Status> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Input::Status(tx)).ok()?;
        rx.await.ok()
    }

    /// The member's applied log index now. Updated before the answers of a batch are
    /// sent, so after a write's answer it is at least the write's index.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the member has applied `index`, or until `deadline`; true if it has.
    /// A write forwarded to the leader waits for this before it is answered, so a
    /// serializable read on this member sees the member's own writes (as etcd's).
    pub async fn wait_applied(&self, index: u64, deadline: tokio::time::Instant) -> bool {
        let mut applied = self.applied.clone();
        let reached = tokio::time::timeout_at(deadline, applied.wait_for(|&a| a >= index)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Follows the member's applied store revision: updated after each batch the node
    /// thread processes (watchers wait on it for new events).
    pub fn revision(&self) -> watch::Receiver<u64> {
        self.revision.clone()
    }

    /// Events of a key range from revision `from` on (see [`Input::Events`]); `None` if
    /// the node stopped.
    pub async fn events(
        &self,
        key: Vec<u8>,
        range_end: Vec<u8>,
        from: u64,
        prev_kv: bool,
    ) -> Option<Result<EventBatch, KvError>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Events { key, range_end, from, prev_kv, reply }).ok()?;
        rx.await.ok()
    }

    /// The live leases and the revision, from this member's state.
    pub async fn leases(&self) -> Option<(u64, Vec<(i64, i64)>)> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Input::Leases(tx)).ok()?;
        rx.await.ok()
    }

    /// A copy of this member's applied state machine; `None` if the node stopped.
    pub async fn state(&self) -> Option<kv::StateMachine> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Input::State(tx)).ok()?;
        rx.await.ok()
    }

    /// Asks the node thread to stop.
    pub fn stop(&self) {
        let _ = self.tx.send(Input::Stop);
    }
}

/// Starts the node thread. `on_fatal` runs if the node hits an unrecoverable error
/// (its disk failed); the thread then stops.
pub fn spawn<S: LogStore + Send + 'static>(
    node: Node<S>,
    tick: Duration,
    outbox: impl Outbox,
    metrics: Arc<Metrics>,
    snapshot_dir: PathBuf,
    on_fatal: impl FnOnce(String) + Send + 'static,
) -> (NodeHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (revision_tx, revision) = watch::channel(node.state().revision());
    let (applied_tx, applied) = watch::channel(node.applied_index());
    let handle = NodeHandle { tx: tx.clone(), revision, applied };
    let join = std::thread::Builder::new()
        .name("raftkv-node".into())
        .spawn(move || {
            let snapshots = SnapshotWriter { dir: snapshot_dir, tx };
            if let Err(e) = run(
                node,
                rx,
                tick,
                outbox,
                metrics,
                snapshots,
                Published { revision_tx, applied_tx },
            ) {
                on_fatal(e);
            }
        })
        .expect("spawning the node thread");
    (handle, join)
}

/// What the node thread publishes for async tasks to follow (see [`NodeHandle`]).
struct Published {
    revision_tx: watch::Sender<u64>,
    applied_tx: watch::Sender<u64>,
}

/// Builds and writes snapshots on their own thread, then reports back to the node.
struct SnapshotWriter {
    dir: PathBuf,
    tx: Sender<Input>,
}

impl SnapshotWriter {
    fn start(&self, job: SnapshotJob) {
        let (dir, tx) = (self.dir.clone(), self.tx.clone());
        std::thread::Builder::new()
            .name("raftkv-snapshot".into())
            .spawn(move || {
                let started = Instant::now();
                let snapshot = job.build();
                let written = storage::RealDisk::open(&dir)
                    .map_err(|e| e.to_string())
                    .and_then(|mut d| {
                        storage::write_snapshot_file(&mut d, &snapshot).map_err(|e| e.to_string())
                    });
                match written {
                    Ok(()) => {
                        tracing::info!(
                            index = snapshot.meta.index,
                            bytes = snapshot.data.len(),
                            ms = started.elapsed().as_millis() as u64,
                            "snapshot written"
                        );
                        let _ = tx.send(Input::SnapshotDone(Some(snapshot)));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "snapshot failed; will retry at the next interval");
                        let _ = tx.send(Input::SnapshotDone(None));
                    }
                }
            })
            .expect("spawning the snapshot thread");
    }
}

fn run<S: LogStore>(
    mut node: Node<S>,
    rx: Receiver<Input>,
    tick: Duration,
    outbox: impl Outbox,
    metrics: Arc<Metrics>,
    snapshots: SnapshotWriter,
    published: Published,
) -> Result<(), String> {
    let Published { revision_tx, applied_tx } = published;
    let mut waiting: HashMap<u64, oneshot::Sender<Reply>> = HashMap::new();
    let mut next_id: u64 = 1;
    let started_at = Instant::now();
    let mut next_tick = Instant::now() + tick;
    let mut last_leader = None;
    let mut last_alarms = node.state().alarms();
    loop {
        let timeout = next_tick.saturating_duration_since(Instant::now());
        let first = match rx.recv_timeout(timeout) {
            Ok(input) => Some(input),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        // Take everything that is already queued: one batch, one poll, one sync.
        let batch = first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok()));
        for input in batch {
            match input {
                Input::Peer(m) => node.step(m),
                Input::Client(req, reply) => {
                    let id = next_id;
                    next_id += 1;
                    waiting.insert(id, reply);
                    node.submit(id, req);
                }
                Input::Status(reply) => {
                    let _ = reply.send(status(&node));
                }
                Input::SnapshotDone(s) => node.finish_snapshot(s).map_err(|e| e.to_string())?,
                Input::Events { key, range_end, from, prev_kv, reply } => {
                    let batch = node.state().events(
                        &key,
                        &range_end,
                        from,
                        u64::MAX,
                        prev_kv,
                        EVENTS_BUDGET_PER_QUERY,
                    );
                    let _ = reply.send(batch);
                }
                Input::Leases(reply) => {
                    let _ = reply.send((node.state().revision(), node.state().leases()));
                }
                Input::State(reply) => {
                    let _ = reply.send(node.state().clone());
                }
                Input::Stop => return Ok(()),
            }
        }
        if Instant::now() >= next_tick {
            node.tick();
            // Real elapsed time, not ticks: a tick loop that falls behind must not
            // stretch lease TTLs.
            node.advance_lease_clock(started_at.elapsed().as_millis() as u64);
            next_tick += tick;
            if next_tick < Instant::now() {
                // We fell behind (a long sync): do not fire a burst of ticks.
                next_tick = Instant::now() + tick;
            }
        }
        if node.lease_clock_pending() {
            // Just elected: start the lease clock now, so keep-alives and time-to-live
            // queries that complete before the next tick are answered, not refused.
            node.advance_lease_clock(started_at.elapsed().as_millis() as u64);
        }
        let started = Instant::now();
        let mut out = node.run_once(&mut |msgs| outbox.send(msgs)).map_err(|e| e.to_string())?;
        if let Some(job) = out.snapshot_job.take() {
            snapshots.start(job);
        }
        if node.applied_index() != metrics.applied_index.load(Ordering::Relaxed) {
            metrics.apply_seconds.observe(started.elapsed().as_secs_f64());
        }
        // Before any answer leaves: a client's next write is checked against the quota
        // with a size that includes its previous one.
        metrics.db_size_bytes.store(node.state().size_bytes(), Ordering::Relaxed);
        let applied = node.applied_index();
        applied_tx.send_if_modified(|a| std::mem::replace(a, applied) != applied);
        for (id, reply) in out.replies {
            let counter = if reply.is_ok() {
                &metrics.proposals_committed
            } else {
                &metrics.proposals_failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if let Some(tx) = waiting.remove(&id) {
                let _ = tx.send(reply);
            }
        }
        let raft = node.raft();
        if raft.leader() != last_leader {
            last_leader = raft.leader();
            metrics.leader_changes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(term = raft.term(), leader = %last_leader.map_or("none".to_string(), |l| format!("{l:x}")), "leader changed");
        }
        metrics.term.store(raft.term(), Ordering::Relaxed);
        metrics.leader.store(raft.leader().unwrap_or(0), Ordering::Relaxed);
        metrics.is_leader.store((raft.role() == Role::Leader) as u64, Ordering::Relaxed);
        metrics.commit_index.store(raft.commit_index(), Ordering::Relaxed);
        metrics.applied_index.store(node.applied_index(), Ordering::Relaxed);
        log_alarm_changes(&mut last_alarms, node.state().alarms());
        let revision = node.state().revision();
        revision_tx.send_if_modified(|r| std::mem::replace(r, revision) != revision);
    }
}

/// Logs alarms raised and cleared since the last batch (etcd: "alarm NOSPACE raised
/// by peer ...", "alarm disarmed").
fn log_alarm_changes(last: &mut Vec<kv::AlarmMember>, now: Vec<kv::AlarmMember>) {
    if *last == now {
        return;
    }
    for a in now.iter().filter(|a| !last.contains(a)) {
        tracing::warn!(member = format_args!("{:x}", a.member_id), alarm = ?a.alarm, "alarm raised");
    }
    for a in last.iter().filter(|a| !now.contains(a)) {
        tracing::info!(member = format_args!("{:x}", a.member_id), alarm = ?a.alarm, "alarm disarmed");
    }
    *last = now;
}

fn status<S: LogStore>(node: &Node<S>) -> Status {
    let raft = node.raft();
    Status {
        id: raft.id(),
        term: raft.term(),
        leader: raft.leader(),
        is_leader: raft.role() == Role::Leader,
        commit_index: raft.commit_index(),
        applied_index: node.applied_index(),
        revision: node.state().revision(),
        compact_revision: node.state().compact_revision(),
        snapshot_index: raft.snapshot_meta().index,
        db_size_bytes: node.state().size_bytes(),
        alarms: node.state().alarms(),
    }
}
