//! The node thread: owns the [`Node`], drains its input channel in batches, ticks it,
//! and polls it. One batch of inputs → one `poll` → one WAL sync, so concurrent client
//! writes arriving while the previous sync runs share the next one (group commit).
//!
//! The thread is a plain OS thread, not a tokio task: `poll` blocks on fsync, and a
//! blocked tokio worker would stall unrelated network work.
//!
//! The node thread also sends heartbeats, so nothing that takes time in proportion to
//! the data may run on it. Committed entries are applied on the applier thread
//! ([`node::NodeConfig::apply_apart`]): the node thread hands it bounded batches, the
//! applier applies them, publishes a view of the applied state (a `kv::StateMachine`
//! clone: O(1), its maps are persistent) with its applied index and revision, and sends
//! its report back as an input; only then does the node thread answer the writes it
//! applied. Views the node thread replaces go back to the applier thread to be dropped
//! (freeing a tree a large delete left behind is O(keys)). Status comes from a small
//! record the node thread publishes after each batch, so it never queues behind the
//! node's input. Everything that reads the state runs from a view on a small pool of
//! blocking workers ([`READ_JOBS_MAX`]): serializable reads (which never reach the node thread),
//! linearizable reads once the node says their ReadIndex is applied
//! ([`node::NodeConfig::hand_out_reads`]), watch catch-up, lease listings and hashes.
//!
//! Back-pressure: at most [`NODE_INPUT_QUEUED_MAX`] inputs wait for the node thread.
//! When the queue is full a client request fails at once with etcd's "too many requests"
//! and a peer message is dropped (Raft tolerates loss); nothing ever blocks a tokio
//! worker on the node thread. Reads waiting for a worker are bounded the same way
//! ([`READS_QUEUED_MAX`]).

use crate::metrics::Metrics;
use kv::{Command, EventBatch, EventLimits, KvError, Response, StateMachine};
use node::{
    Applied, Applier, ApplyBatch, LogStore, Member, MemberChange, MemberChanged, MemberFailure,
    Node, ReadQuery, Request, RequestError, SnapshotJob, TransferFailure,
};
use raft::{Message, NodeId, Role};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch, Semaphore};

/// Most changes (of any key) one [`NodeHandle::events`] call visits: bounds the time one
/// watcher's catch-up holds a read worker (etcd sends at most 1000 revisions per batch);
/// the watcher asks again from where the batch ended.
pub const EVENTS_BUDGET_PER_QUERY: u64 = 1000;

/// Bytes of keys and values (previous key-values included) past which one
/// [`NodeHandle::events`] batch stops, at the next revision: bounds the memory one
/// watcher's catch-up holds (1000 changes of 1.5 MiB values would be 1.5 GB), as a kv
/// batch and again as its gRPC responses. A single larger revision still comes whole,
/// so a watcher always makes progress. About one watch response's worth.
pub const EVENTS_BYTES_PER_QUERY: u64 = 1 << 20;

/// Most inputs (peer messages, client requests, status queries) waiting for the node
/// thread. Past it client requests fail with "too many requests" and peer messages are
/// dropped. A batch this large is still processed in milliseconds, and each input is
/// small or bounded (a peer message by the peer message size limit).
pub const NODE_INPUT_QUEUED_MAX: usize = 4096;

/// Read jobs (ranges, watch catch-up, lease listings) running at once on tokio's
/// blocking pool. Small, so that a burst of huge ranges cannot take every core from the
/// node thread.
pub const READ_JOBS_MAX: usize = 4;

/// Client reads waiting for a read worker (or running) before more are refused with
/// "too many requests". Watch catch-up waits without this bound: its number is bounded
/// by the number of watchers, and a watcher must not fail for load.
pub const READS_QUEUED_MAX: usize = 1024;

/// The answer to a client request.
pub type Reply = Result<Response, RequestError>;

/// What the node thread answers a client request with.
#[derive(Debug)]
// A view is moved once per read and never stored in bulk: boxing it would only add an
// allocation per read.
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    /// The answer itself (writes, lease queries, errors).
    Done(Reply),
    /// A read whose ReadIndex is applied, with a view of the state that has applied it:
    /// the caller serves the read from the view, off the node thread.
    Read(StateMachine),
}

/// A snapshot of the member's Raft status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
    /// The messages of one batch from a peer, taken together (one wake-up).
    Peers(Vec<Message>),
    /// A client request and where to send its answer.
    Client(Request, oneshot::Sender<Answer>),
    /// Client requests submitted together (forwarded writes), each with its answer's way.
    Clients(Vec<(Request, oneshot::Sender<Answer>)>),
    /// A background snapshot's file is durable: what it covers and its data's length
    /// (`None`: it failed).
    SnapshotDone(Option<(raft::SnapshotMeta, u64)>),
    /// The applier thread applied the oldest batch handed to it.
    Applied(Box<Applied>),
    /// The applier thread failed (a snapshot from the leader could not be restored).
    ApplyFailed(String),
    /// Hand leadership to a member (`None`: the most caught-up other voter), and where
    /// to send the outcome (see [`node::Node::transfer_leader`]).
    Transfer(Option<NodeId>, oneshot::Sender<TransferOutcome>),
    /// A membership change (see [`node::Node::change_members`]), and where to send its
    /// outcome.
    Members(MemberChange, oneshot::Sender<MemberOutcome>),
    /// Stop the thread.
    Stop,
}

/// The outcome of a leadership transfer: the member that leads now, or why not.
pub type TransferOutcome = Result<NodeId, TransferFailure>;

/// The outcome of a membership change: every member after it, or why not.
pub type MemberOutcome = Result<MemberChanged, MemberFailure>;

impl Input {
    /// How much the input counts against [`NODE_INPUT_QUEUED_MAX`]: one per message or
    /// request that outside callers send; nothing for the member's own control inputs,
    /// which must never be lost (a lost `SnapshotDone` would stop snapshots for good).
    fn weight(&self) -> usize {
        match self {
            Input::Peer(_) | Input::Client(..) | Input::Transfer(..) | Input::Members(..) => 1,
            Input::Peers(msgs) => msgs.len(),
            Input::Clients(reqs) => reqs.len(),
            Input::SnapshotDone(_) | Input::Applied(_) | Input::ApplyFailed(_) | Input::Stop => 0,
        }
    }
}

/// Where the node thread hands messages for peers. Must never block.
pub trait Outbox: Send + 'static {
    /// Queues `msgs` for delivery; may drop them (Raft tolerates loss).
    fn send(&self, msgs: Vec<Message>);
}

/// The sending side of the node thread's input, with its bound.
#[derive(Clone)]
struct Inbox {
    tx: Sender<Input>,
    /// Bounded inputs sent and not yet taken by the node thread.
    queued: Arc<AtomicUsize>,
    /// [`NODE_INPUT_QUEUED_MAX`], smaller in tests.
    queued_max: usize,
}

/// Why an input did not reach the node thread.
#[derive(Debug, PartialEq, Eq)]
enum NotSent {
    /// The queue holds [`NODE_INPUT_QUEUED_MAX`] inputs.
    Full,
    /// The node thread stopped.
    Stopped,
}

impl Inbox {
    fn new(tx: Sender<Input>, queued_max: usize) -> Self {
        Inbox { tx, queued: Arc::new(AtomicUsize::new(0)), queued_max }
    }

    /// Queues `input` unless it does not fit (whole or not at all); never blocks.
    fn send(&self, input: Input) -> Result<(), NotSent> {
        let weight = input.weight();
        if weight > 0 && self.queued.fetch_add(weight, Ordering::AcqRel) + weight > self.queued_max
        {
            self.queued.fetch_sub(weight, Ordering::AcqRel);
            return Err(NotSent::Full);
        }
        self.tx.send(input).map_err(|e| {
            self.queued.fetch_sub(weight, Ordering::AcqRel);
            drop(e);
            NotSent::Stopped
        })
    }

    /// The node thread took `input` off the queue.
    fn taken(&self, input: &Input) {
        let weight = input.weight();
        if weight > 0 {
            self.queued.fetch_sub(weight, Ordering::AcqRel);
        }
    }
}

/// Read jobs: a few at a time on tokio's blocking pool, each from a view of the state.
struct Readers {
    running: Arc<Semaphore>,
    /// Client reads waiting or running (watch catch-up and lease listings not counted).
    queued: Arc<AtomicUsize>,
}

/// Decrements a counter when dropped: a read left the queue (done or abandoned).
struct Queued(Arc<AtomicUsize>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Readers {
    fn new(jobs_max: usize) -> Self {
        Readers { running: Arc::new(Semaphore::new(jobs_max)), queued: Arc::default() }
    }

    /// Runs `job` on a read worker once one is free. `bounded`: refuse it with
    /// [`RequestError::Busy`] if [`READS_QUEUED_MAX`] reads are already queued. A job
    /// whose caller goes away still holds its worker until it ends, so at most
    /// [`READ_JOBS_MAX`] run at once whatever the callers do.
    async fn run<T: Send + 'static>(
        &self,
        bounded: bool,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, RequestError> {
        // Only client reads count: a storm of watchers catching up must not make the
        // member refuse reads.
        let queued = bounded.then(|| Queued(self.queued.clone()));
        if bounded && self.queued.fetch_add(1, Ordering::AcqRel) >= READS_QUEUED_MAX {
            return Err(RequestError::Busy);
        }
        let permit = self.running.clone().acquire_owned().await.expect("never closed");
        let done = tokio::task::spawn_blocking(move || {
            let answer = job();
            drop((permit, queued));
            answer
        });
        match done.await {
            Ok(answer) => Ok(answer),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(RequestError::Timeout), // the runtime is shutting down
        }
    }
}

/// A cheap, cloneable way to talk to the node thread.
#[derive(Clone)]
pub struct NodeHandle {
    inbox: Inbox,
    revision: watch::Receiver<u64>,
    applied: watch::Receiver<u64>,
    view: watch::Receiver<StateMachine>,
    status: watch::Receiver<Status>,
    readers: Arc<Readers>,
    metrics: Arc<Metrics>,
    /// The applied members, and whether this member was removed.
    membership: watch::Receiver<Membership>,
}

/// The node's applied membership, as the node thread publishes it after each batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Membership {
    /// Every member (see [`node::Node::members`]).
    pub members: Vec<Member>,
    /// This member's applied configuration no longer has it (see `node::Output::removed`).
    pub removed: bool,
    /// The ids of every member removed from the cluster (refused for good).
    pub removed_ids: Vec<NodeId>,
}

impl NodeHandle {
    /// Hands a peer message to the node; drops it if the node's input is full (Raft
    /// tolerates loss, and a sender must never wait for the node thread).
    pub fn peer_message(&self, m: Message) {
        if self.inbox.send(Input::Peer(m)) == Err(NotSent::Full) {
            self.metrics.peer_messages_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Hands the messages of one peer batch to the node in one input (so one wake-up of
    /// the node thread takes them all); drops them all if they do not fit.
    pub fn peer_messages(&self, msgs: Vec<Message>) {
        let n = msgs.len() as u64;
        if n > 0 && self.inbox.send(Input::Peers(msgs)) == Err(NotSent::Full) {
            self.metrics.peer_messages_dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Submits a client request and waits for its answer: [`RequestError::Busy`] at
    /// once if the node's input is full, `Timeout` if the node stopped. Serializable
    /// reads never reach the node thread: they are served from the latest published
    /// view, which has applied everything the member acknowledged. Writes reach it
    /// already encoded for the log ([`Request::encoded`]).
    pub async fn request(&self, req: Request) -> Reply {
        let query = match &req {
            Request::Read { query, serializable: true } => {
                return self.read_view(query.clone(), self.view()).await;
            }
            Request::Read { query, serializable: false } => Some(query.clone()),
            Request::Write(_) | Request::Encoded(_) => None,
        };
        // Encode a write here, on the caller's task, and free its decoded form here too:
        // for the largest accepted txn that is ~20 ms the node thread must not spend.
        let req = match req {
            Request::Write(cmd) => Request::encoded(cmd),
            other => other,
        };
        let (tx, rx) = oneshot::channel();
        match self.inbox.send(Input::Client(req, tx)) {
            Ok(()) => {}
            Err(NotSent::Full) => {
                self.metrics.too_many_requests.fetch_add(1, Ordering::Relaxed);
                return Err(RequestError::Busy);
            }
            Err(NotSent::Stopped) => return Err(RequestError::Timeout),
        }
        match (rx.await, query) {
            (Ok(Answer::Done(reply)), _) => reply,
            (Ok(Answer::Read(view)), Some(query)) => self.read_view(query, view).await,
            (Ok(Answer::Read(_)), None) => unreachable!("only reads are answered with a view"),
            (Err(_), _) => Err(RequestError::Timeout),
        }
    }

    /// Submits writes together and waits for all their answers, in order. They reach
    /// the node thread as one input, so it takes them in one batch (one wake-up, one
    /// Ready, one sync) instead of one hand-off each. All are refused `Busy` if they do
    /// not fit in the node's input.
    pub async fn writes(&self, cmds: Vec<Command>) -> Vec<Reply> {
        let n = cmds.len();
        let (requests, answers): (Vec<_>, Vec<_>) = cmds
            .into_iter()
            .map(|cmd| {
                // Encoded here, as in `request`: a forwarded batch may carry the
                // largest accepted txn, which the node thread must not encode.
                let (tx, rx) = oneshot::channel();
                ((Request::encoded(cmd), tx), rx)
            })
            .unzip();
        let refused = match self.inbox.send(Input::Clients(requests)) {
            Ok(()) => None,
            Err(NotSent::Full) => {
                self.metrics.too_many_requests.fetch_add(n as u64, Ordering::Relaxed);
                Some(RequestError::Busy)
            }
            Err(NotSent::Stopped) => Some(RequestError::Timeout),
        };
        if let Some(e) = refused {
            return vec![Err(e); n];
        }
        let mut replies = Vec::with_capacity(n);
        for rx in answers {
            replies.push(match rx.await {
                Ok(Answer::Done(reply)) => reply,
                Ok(Answer::Read(_)) => unreachable!("only writes were submitted"),
                Err(_) => Err(RequestError::Timeout),
            });
        }
        replies
    }

    /// Serves a read from `view` on a read worker.
    async fn read_view(&self, query: ReadQuery, view: StateMachine) -> Reply {
        let answer = self.readers.run(true, move || node::answer_read(&view, &query)).await;
        if answer == Err(RequestError::Busy) {
            self.metrics.too_many_requests.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }

    /// The member's status as of the node thread's last batch (never queued behind its
    /// input); `None` if the node stopped.
    pub async fn status(&self) -> Option<Status> {
        if self.status.has_changed().is_err() {
            return None; // the node thread dropped its sender: it stopped
        }
        Some(self.status.borrow().clone())
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
    /// thread processes (watchers wait on it for new events), after the view
    /// ([`NodeHandle::state`]) that holds it.
    pub fn revision(&self) -> watch::Receiver<u64> {
        self.revision.clone()
    }

    /// The latest view the node thread published.
    fn view(&self) -> StateMachine {
        self.view.borrow().clone()
    }

    /// Events of a key range from revision `from` on, at most
    /// [`EVENTS_BUDGET_PER_QUERY`] changes and about [`EVENTS_BYTES_PER_QUERY`] bytes,
    /// read on a read worker from the latest view; `None` if the node stopped.
    pub async fn events(
        &self,
        key: Vec<u8>,
        range_end: Vec<u8>,
        from: u64,
        prev_kv: bool,
    ) -> Option<Result<EventBatch, KvError>> {
        let view = self.state().await?;
        let limits =
            EventLimits { changes: EVENTS_BUDGET_PER_QUERY, bytes: EVENTS_BYTES_PER_QUERY };
        let job = move || view.events_within(&key, &range_end, from, u64::MAX, prev_kv, limits);
        self.readers.run(false, job).await.ok()
    }

    /// The live leases `(id, granted TTL)` and the revision, from this member's state.
    pub async fn leases(&self) -> Option<(u64, Vec<(i64, i64)>)> {
        let view = self.state().await?;
        self.readers.run(false, move || (view.revision(), view.leases())).await.ok()
    }

    /// A view of this member's applied state machine (O(1): its maps are persistent),
    /// as of the last batch the node thread processed; `None` if the node stopped.
    pub async fn state(&self) -> Option<StateMachine> {
        if self.view.has_changed().is_err() {
            return None; // the node thread dropped its sender: it stopped
        }
        Some(self.view())
    }

    /// Hands leadership to `target` (`None`: the most caught-up other voter) and waits
    /// for the outcome; the node answers within two election timeouts. A full input
    /// or a stopped node is [`TransferFailure::TimedOut`].
    pub async fn transfer_leader(&self, target: Option<NodeId>) -> TransferOutcome {
        let (tx, rx) = oneshot::channel();
        if self.inbox.send(Input::Transfer(target, tx)).is_err() {
            return Err(TransferFailure::TimedOut);
        }
        rx.await.unwrap_or(Err(TransferFailure::TimedOut))
    }

    /// Runs a membership change on this member's node and waits for the outcome (the
    /// node answers once it is applied, or refuses it, within its request timeout). A
    /// full input or a stopped node is [`MemberFailure::Timeout`].
    pub async fn change_members(&self, change: MemberChange) -> MemberOutcome {
        let (tx, rx) = oneshot::channel();
        if self.inbox.send(Input::Members(change, tx)).is_err() {
            return Err(MemberFailure::Timeout);
        }
        rx.await.unwrap_or(Err(MemberFailure::Timeout))
    }

    /// Follows the applied membership (members, and whether this member was removed).
    pub fn membership(&self) -> watch::Receiver<Membership> {
        self.membership.clone()
    }

    /// Asks the node thread to stop.
    pub fn stop(&self) {
        let _ = self.inbox.send(Input::Stop);
    }
}

/// Starts the node thread and its applier thread. `node` must be configured with
/// [`node::NodeConfig::apply_apart`]. `on_fatal` runs if the node hits an unrecoverable
/// error (its disk failed, or a snapshot from the leader cannot be restored); the thread
/// then stops.
pub fn spawn<S: LogStore + Send + 'static>(
    node: Node<S>,
    tick: Duration,
    outbox: impl Outbox,
    metrics: Arc<Metrics>,
    snapshot_dir: PathBuf,
    on_fatal: impl FnOnce(String) + Send + 'static,
) -> (NodeHandle, std::thread::JoinHandle<()>) {
    let no_hook: AppliedHook = Box::new(|_| {});
    spawn_with_hook(node, tick, outbox, metrics, snapshot_dir, on_fatal, no_hook)
}

/// Sees each applied batch on the applier thread, before its applied index is published
/// (the member's token table, [`crate::tokens`], learns its assignments here). Must be
/// quick: apply waits for it.
pub type AppliedHook = Box<dyn Fn(&Applied) + Send>;

/// [`spawn`], with `hook` run on every applied batch.
pub fn spawn_with_hook<S: LogStore + Send + 'static>(
    mut node: Node<S>,
    tick: Duration,
    outbox: impl Outbox,
    metrics: Arc<Metrics>,
    snapshot_dir: PathBuf,
    on_fatal: impl FnOnce(String) + Send + 'static,
    hook: AppliedHook,
) -> (NodeHandle, std::thread::JoinHandle<()>) {
    // Snapshot bytes stay in their files (`snapshot_source`), not in the core.
    let source = crate::snapshot_source::FileSnapshotSource::new(snapshot_dir.clone());
    node.set_snapshot_source(Box::new(source));
    let (tx, rx) = std::sync::mpsc::channel();
    let (revision_tx, revision) = watch::channel(node.state().revision());
    let (applied_tx, applied) = watch::channel(node.applied_index());
    let (view_tx, view) = watch::channel(node.state().clone());
    let (status_tx, status_rx) = watch::channel(status(&node));
    let (membership_tx, membership) = watch::channel(membership(&node, false));
    let inbox = Inbox::new(tx.clone(), NODE_INPUT_QUEUED_MAX);
    let readers = Arc::new(Readers::new(READ_JOBS_MAX));
    let handle = NodeHandle {
        inbox: inbox.clone(),
        revision,
        applied,
        view,
        status: status_rx,
        readers,
        metrics: metrics.clone(),
        membership,
    };
    let applier = ApplierThread::spawn(
        node.applier(),
        AppliedViews { revision_tx, applied_tx, view_tx, hook },
        tx.clone(),
        metrics.clone(),
    );
    let join = std::thread::Builder::new()
        .name("raftkv-node".into())
        .spawn(move || {
            let snapshots = SnapshotWriter::new(snapshot_dir, tx, metrics.clone());
            let published = Published { status_tx, membership_tx, inbox };
            if let Err(e) = run(node, rx, tick, outbox, metrics, snapshots, applier, published) {
                on_fatal(e);
            }
        })
        .expect("spawning the node thread");
    (handle, join)
}

/// What the node thread shares with its handles (see [`NodeHandle`]): its status, and
/// its input's bound.
struct Published {
    /// Replaced after each batch when it changed.
    status_tx: watch::Sender<Status>,
    /// Replaced after each batch when it changed.
    membership_tx: watch::Sender<Membership>,
    /// To count inputs off the bounded queue.
    inbox: Inbox,
}

/// What the applier thread publishes after each batch, in this order (so whoever sees
/// the new applied index or revision finds a view that has it).
struct AppliedViews {
    /// The applied state.
    view_tx: watch::Sender<StateMachine>,
    applied_tx: watch::Sender<u64>,
    revision_tx: watch::Sender<u64>,
    /// Runs first.
    hook: AppliedHook,
}

/// What the node thread sends the applier thread.
enum ApplyInput {
    /// Apply this batch and report back.
    Batch(ApplyBatch),
    /// A view the node thread replaced: drop it here (it may be the last owner of a
    /// large tree).
    Retire(StateMachine),
}

/// The applier thread's input. Unbounded as a channel, bounded by the protocol: at
/// most [`node::APPLY_BATCHES_IN_FLIGHT_MAX`] batches, and one retired view per report.
struct ApplierThread {
    /// `None` once dropping.
    tx: Option<Sender<ApplyInput>>,
    join: Option<std::thread::JoinHandle<()>>,
}

/// The node thread waits for the applier thread when it stops, so that once the node
/// thread has ended nothing publishes any more (handles see the member stopped).
impl Drop for ApplierThread {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

impl ApplierThread {
    fn spawn(
        applier: Applier,
        views: AppliedViews,
        node_tx: Sender<Input>,
        metrics: Arc<Metrics>,
    ) -> ApplierThread {
        let (tx, rx) = std::sync::mpsc::channel();
        let join = std::thread::Builder::new()
            .name("raftkv-apply".into())
            .spawn(move || run_applier(applier, rx, views, node_tx, metrics))
            .expect("spawning the applier thread");
        ApplierThread { tx: Some(tx), join: Some(join) }
    }

    /// Hands the applier thread `input`. If it stopped, the node thread learns it from
    /// the `ApplyFailed` it sent, or is stopping itself.
    fn send(&self, input: ApplyInput) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(input);
        }
    }
}

/// The applier thread: applies each batch, publishes the new view, reports back. Ends
/// when the node thread drops its sender, or after the first failure.
fn run_applier(
    mut applier: Applier,
    rx: Receiver<ApplyInput>,
    views: AppliedViews,
    node_tx: Sender<Input>,
    metrics: Arc<Metrics>,
) {
    let _panic_guard = ApplierPanicGuard(node_tx.clone());
    for input in rx {
        let batch = match input {
            ApplyInput::Retire(view) => {
                drop(view);
                continue;
            }
            ApplyInput::Batch(batch) => batch,
        };
        let started = Instant::now();
        let applied = match applier.apply(batch) {
            Ok(applied) => applied,
            Err(e) => {
                let _ = node_tx.send(Input::ApplyFailed(e.to_string()));
                return;
            }
        };
        metrics.observe_apply(started.elapsed());
        (views.hook)(&applied);
        // The replaced view is dropped here, on this thread.
        drop(views.view_tx.send_replace(applied.view.clone()));
        views.applied_tx.send_replace(applier.applied_index());
        let revision = applier.state().revision();
        views.revision_tx.send_if_modified(|r| std::mem::replace(r, revision) != revision);
        if node_tx.send(Input::Applied(Box::new(applied))).is_err() {
            return; // the node thread stopped
        }
    }
}

/// Tells the node thread when the applier thread unwinds from a panic, so a member whose
/// applier died stops (through `on_fatal`) instead of staying up with writes in flight
/// forever. The `raftkv` binary's panic hook ends the process first; this guard covers
/// embeddings without it.
struct ApplierPanicGuard(Sender<Input>);

impl Drop for ApplierPanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.send(Input::ApplyFailed("the applier thread panicked".into()));
        }
    }
}

/// Pause before the first retry of a failed snapshot write; it doubles with each further
/// consecutive failure, up to [`SNAPSHOT_RETRY_BACKOFF_MAX`], and a success resets it.
/// Without it the node asks again at its next poll, and a failing disk is hammered with
/// full snapshot writes back to back.
pub const SNAPSHOT_RETRY_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest pause between two snapshot write attempts. Retries never stop: until a
/// snapshot succeeds the WAL keeps everything (nothing is lost, it only grows), and a
/// disk that fails WAL writes too stops the member through storage's poisoning.
pub const SNAPSHOT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Test fault injection, read once when the node thread starts: when this environment
/// variable is set (to anything), the first snapshot thread panics before it writes.
/// The integration test of the panic policy uses it to make a real member panic; no
/// client or peer can trigger it. A snapshot thread was chosen because a panic there is
/// the quietest failure the policy must catch (before it, snapshots just stopped), and
/// because injecting it touches nothing on the node thread's path.
pub const TEST_PANIC_IN_SNAPSHOT_THREAD_ENV: &str = "RAFTKV_TEST_PANIC_IN_SNAPSHOT_THREAD";

/// The pause before a snapshot write after `failures` consecutive failed ones.
pub fn snapshot_retry_backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let doublings = (failures - 1).min(16);
    SNAPSHOT_RETRY_BACKOFF_MIN.saturating_mul(1 << doublings).min(SNAPSHOT_RETRY_BACKOFF_MAX)
}

/// Builds and writes snapshots on their own thread, then reports back to the node. One
/// job at a time (the node asks for the next one only after the last one's report).
struct SnapshotWriter {
    dir: PathBuf,
    tx: Sender<Input>,
    metrics: Arc<Metrics>,
    /// Consecutive failed writes; the snapshot threads update it.
    failures: Arc<AtomicU32>,
    /// See [`TEST_PANIC_IN_SNAPSHOT_THREAD_ENV`].
    panic_for_test: bool,
}

impl SnapshotWriter {
    fn new(dir: PathBuf, tx: Sender<Input>, metrics: Arc<Metrics>) -> SnapshotWriter {
        let panic_for_test = std::env::var_os(TEST_PANIC_IN_SNAPSHOT_THREAD_ENV).is_some();
        if panic_for_test {
            tracing::warn!("{TEST_PANIC_IN_SNAPSHOT_THREAD_ENV} is set: the first snapshot panics");
        }
        SnapshotWriter { dir, tx, metrics, failures: Arc::default(), panic_for_test }
    }

    fn start(&self, job: SnapshotJob) {
        let (dir, tx, metrics) = (self.dir.clone(), self.tx.clone(), self.metrics.clone());
        let failures = self.failures.clone();
        let panic_for_test = self.panic_for_test;
        std::thread::Builder::new()
            .name("raftkv-snapshot".into())
            .spawn(move || {
                // The view is frozen, so waiting costs only the memory it pins.
                std::thread::sleep(snapshot_retry_backoff(failures.load(Ordering::Relaxed)));
                assert!(!panic_for_test, "injected by {TEST_PANIC_IN_SNAPSHOT_THREAD_ENV}");
                let started = Instant::now();
                let meta = job.meta.clone();
                match write_snapshot(&dir, &job) {
                    Ok(bytes) => {
                        failures.store(0, Ordering::Relaxed);
                        tracing::info!(
                            index = meta.index,
                            bytes,
                            ms = started.elapsed().as_millis() as u64,
                            "snapshot written"
                        );
                        let _ = tx.send(Input::SnapshotDone(Some((meta, bytes))));
                    }
                    Err(e) => {
                        let n = failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
                        metrics.snapshot_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            index = meta.index,
                            error = %e,
                            consecutive_failures = n,
                            retry_in_ms = snapshot_retry_backoff(n).as_millis() as u64,
                            "snapshot write failed; the WAL is kept and the write retried"
                        );
                        let _ = tx.send(Input::SnapshotDone(None));
                    }
                }
            })
            .expect("spawning the snapshot thread");
    }
}

/// Frees the log entries a snapshot's compaction discarded on a short-lived thread of
/// their own, not on the node thread: freeing the 100k entries of a snapshot interval
/// held a loaded member's node thread 10-30 ms (spread put-256, 3 members on 2 cores),
/// and every forwarded write, heartbeat and answer waited for it. At most one such
/// thread per adopted snapshot, and the node adopts one snapshot at a time.
fn free_elsewhere(discarded: Vec<raft::Entry>) {
    if discarded.is_empty() {
        return;
    }
    // If no thread can be spawned, the closure, entries and all, is dropped right here.
    let _ =
        std::thread::Builder::new().name("raftkv-free-log".into()).spawn(move || drop(discarded));
}

/// Streams a snapshot's file (verified, see `storage::write_snapshot_file_with`) into
/// `dir`; returns the data's length.
fn write_snapshot(dir: &std::path::Path, job: &SnapshotJob) -> Result<u64, String> {
    let mut disk = storage::RealDisk::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    job.write_file(&mut disk).map_err(|e| match e {
        // Not the WAL's advice ("storage now refuses further writes, restart"): a snapshot
        // file is written apart from the WAL, which stays usable, and is retried.
        storage::StorageError::Io { op, file, source } => {
            format!("{op} {file:?} failed: {source}")
        }
        other => other.to_string(),
    })
}

#[allow(clippy::too_many_arguments)] // one call site: `spawn`
fn run<S: LogStore>(
    mut node: Node<S>,
    rx: Receiver<Input>,
    tick: Duration,
    outbox: impl Outbox,
    metrics: Arc<Metrics>,
    snapshots: SnapshotWriter,
    applier: ApplierThread,
    published: Published,
) -> Result<(), String> {
    let mut waiting: HashMap<u64, oneshot::Sender<Answer>> = HashMap::new();
    let mut transfers: HashMap<u64, oneshot::Sender<TransferOutcome>> = HashMap::new();
    let mut changes: HashMap<u64, oneshot::Sender<MemberOutcome>> = HashMap::new();
    let mut removed = false;
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
        let batch_started = Instant::now();
        // Take everything that is already queued: one batch, one poll, one sync.
        let batch = first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok()));
        for input in batch {
            published.inbox.taken(&input);
            match input {
                Input::Peer(m) => node.step(m),
                Input::Peers(msgs) => msgs.into_iter().for_each(|m| node.step(m)),
                Input::Client(req, reply) => {
                    let id = next_id;
                    next_id += 1;
                    waiting.insert(id, reply);
                    node.submit(id, req);
                }
                Input::Clients(reqs) => {
                    for (req, reply) in reqs {
                        let id = next_id;
                        next_id += 1;
                        waiting.insert(id, reply);
                        node.submit(id, req);
                    }
                }
                Input::Transfer(target, reply) => {
                    let id = next_id;
                    next_id += 1;
                    transfers.insert(id, reply);
                    node.transfer_leader(id, target);
                }
                Input::Members(change, reply) => {
                    let id = next_id;
                    next_id += 1;
                    changes.insert(id, reply);
                    node.change_members(id, change);
                }
                Input::SnapshotDone(s) => {
                    free_elsewhere(node.finish_snapshot_file(s).map_err(|e| e.to_string())?);
                }
                Input::Applied(applied) => {
                    let replaced = node.on_applied(*applied).map_err(|e| e.to_string())?;
                    applier.send(ApplyInput::Retire(replaced));
                }
                Input::ApplyFailed(e) => return Err(e),
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
        let mut out = node
            .run_once_with(&mut |msgs| outbox.send(msgs), |node| {
                let started = Instant::now();
                let synced = node.sync();
                metrics.observe_fsync(started.elapsed());
                synced
            })
            .map_err(|e| e.to_string())?;
        if let Some(job) = out.snapshot_job.take() {
            snapshots.start(job);
        }
        for batch in out.apply.drain(..) {
            applier.send(ApplyInput::Batch(batch));
        }
        // Before any answer leaves: a client's next write is checked against the quota
        // with a size that includes its previous one.
        metrics.db_size_bytes.store(node.state().size_bytes(), Ordering::Relaxed);
        publish(&node, &mut out, &mut waiting, &metrics);
        for (id, outcome) in out.transfers.drain(..) {
            if let Some(tx) = transfers.remove(&id) {
                let _ = tx.send(outcome);
            }
        }
        for (id, outcome) in out.member_changes.drain(..) {
            if let Some(tx) = changes.remove(&id) {
                let _ = tx.send(outcome);
            }
        }
        removed |= out.removed;
        let now = membership(&node, removed);
        published.membership_tx.send_if_modified(|m| std::mem::replace(m, now.clone()) != now);
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
        metrics.proposals_pending.store(node.writes_pending() as u64, Ordering::Relaxed);
        log_alarm_changes(&mut last_alarms, node.state().alarms());
        let now = status(&node);
        published.status_tx.send_if_modified(|s| std::mem::replace(s, now.clone()) != now);
        metrics.observe_node_loop(batch_started.elapsed());
    }
}

/// After a batch: answers the batch's requests (the applier thread published the
/// applied state before it reported it, so whoever sees an answer finds a view that
/// has it); handed-out reads get the node's view to be served from, off this thread.
fn publish<S: LogStore>(
    node: &Node<S>,
    out: &mut node::Output,
    waiting: &mut HashMap<u64, oneshot::Sender<Answer>>,
    metrics: &Metrics,
) {
    let applied = node.applied_index();
    for (id, reply) in out.replies.drain(..) {
        let counter =
            if reply.is_ok() { &metrics.proposals_committed } else { &metrics.proposals_failed };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(tx) = waiting.remove(&id) {
            let _ = tx.send(Answer::Done(reply));
        }
    }
    for read in out.reads.drain(..) {
        debug_assert!(read.index <= applied, "handed out once applied");
        if let Some(tx) = waiting.remove(&read.id) {
            let _ = tx.send(Answer::Read(node.state().clone()));
        }
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

fn membership<S: LogStore>(node: &Node<S>, removed: bool) -> Membership {
    let removed_ids = node.state().members().removed();
    Membership { members: node.members(), removed, removed_ids }
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kv::{Command, Op, PutRequest};
    use node::{MemStore, NodeConfig};

    struct NoPeers;
    impl Outbox for NoPeers {
        fn send(&self, _msgs: Vec<Message>) {}
    }

    fn heartbeat() -> Message {
        Message {
            from: 2,
            to: 1,
            term: 1,
            body: raft::MessageBody::Heartbeat { commit: 0, read_round: 0 },
        }
    }

    /// A handle whose node thread never drains its input (`queued_max` inputs fit).
    fn stalled_handle(queued_max: usize) -> (NodeHandle, Receiver<Input>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let sm = StateMachine::new(kv::Config::default());
        let handle = NodeHandle {
            inbox: Inbox::new(tx, queued_max),
            revision: watch::channel(sm.revision()).1,
            applied: watch::channel(0).1,
            view: watch::channel(sm).1,
            status: watch::channel(Status::default()).1,
            readers: Arc::new(Readers::new(READ_JOBS_MAX)),
            metrics: Arc::default(),
            membership: watch::channel(Membership::default()).1,
        };
        (handle, rx)
    }

    /// A one-member cluster on its own node thread, leading.
    pub(crate) async fn leader() -> (NodeHandle, std::thread::JoinHandle<()>) {
        let store = MemStore::default();
        let restored = store.recover();
        let mut cfg = NodeConfig::new(1, [1].into());
        cfg.hand_out_reads = true;
        cfg.apply_apart = true;
        cfg.snapshot_interval_entries = 0;
        let node = Node::new(cfg, store, restored).unwrap();
        let dir = std::env::temp_dir().join(format!("raftkv-runtime-{}", std::process::id()));
        let metrics = Arc::new(Metrics::default());
        let (handle, join) =
            spawn(node, Duration::from_millis(5), NoPeers, metrics, dir, |e| panic!("{e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !handle.status().await.is_some_and(|s| s.is_leader) {
            assert!(Instant::now() < deadline, "a one-member cluster elects itself");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (handle, join)
    }

    fn put(key: &str, value: &str) -> Request {
        let put = PutRequest { key: key.into(), value: value.into(), ..Default::default() };
        Request::Write(Command::new(Op::Put(put)))
    }

    fn get(key: &str, serializable: bool) -> Request {
        Request::Read { query: ReadQuery::Get(key.into()), serializable }
    }

    fn value(reply: Reply) -> Option<Vec<u8>> {
        match reply {
            Ok(Response::Get(g)) => g.kv.map(|kv| kv.value),
            other => panic!("expected a get answer, got {other:?}"),
        }
    }

    /// A batch counts one per message or write against the input bound, and goes in
    /// whole or not at all: a batch of peer messages that does not fit is dropped (and
    /// counted), writes that do not fit are all refused `Busy` at once.
    #[tokio::test]
    async fn batches_count_per_item_against_the_input_bound() {
        let (handle, rx) = stalled_handle(3);
        handle.peer_messages(vec![heartbeat(), heartbeat()]);
        assert_eq!(handle.inbox.queued.load(Ordering::Acquire), 2);
        handle.peer_messages(vec![heartbeat(), heartbeat()]);
        assert_eq!(handle.metrics.peer_messages_dropped.load(Ordering::Relaxed), 2);
        let cmd =
            |k: &str| Command::new(Op::Put(PutRequest { key: k.into(), ..Default::default() }));
        let refused =
            tokio::time::timeout(Duration::from_secs(10), handle.writes(vec![cmd("a"), cmd("b")]));
        let replies = refused.await.expect("refused at once, not queued");
        assert_eq!(replies, vec![Err(RequestError::Busy), Err(RequestError::Busy)]);
        let taken = rx.try_recv().expect("the first batch was queued");
        assert!(matches!(&taken, Input::Peers(m) if m.len() == 2));
        handle.inbox.taken(&taken);
        assert_eq!(handle.inbox.queued.load(Ordering::Acquire), 0);
        assert!(rx.try_recv().is_err(), "nothing else was queued");
    }

    /// Writes submitted together are answered each with its own result, in order.
    #[tokio::test]
    async fn writes_submitted_together_get_their_own_answers_in_order() {
        let (handle, join) = leader().await;
        let cmds = ["a", "b", "c"].map(|k| {
            let put = PutRequest { key: k.into(), value: k.into(), ..Default::default() };
            Command::new(Op::Put(put))
        });
        let replies = handle.writes(cmds.to_vec()).await;
        let revisions: Vec<u64> = replies
            .iter()
            .map(|r| match r {
                Ok(Response::Put(p)) => p.revision,
                other => panic!("expected a put answer, got {other:?}"),
            })
            .collect();
        assert!(revisions.windows(2).all(|w| w[1] == w[0] + 1), "{revisions:?}");
        assert_eq!(value(handle.request(get("b", false)).await), Some(b"b".to_vec()));
        handle.stop();
        join.join().unwrap();
    }

    /// The node's input is bounded: when it is full a client request fails at once
    /// with etcd's "too many requests" (never waits), and a peer message is dropped.
    #[tokio::test]
    async fn a_full_node_input_refuses_requests_and_drops_peer_messages() {
        let (handle, rx) = stalled_handle(2);
        handle.peer_message(heartbeat());
        handle.stop(); // a control input: not counted, never refused
        handle.inbox.send(Input::Peer(heartbeat())).unwrap();
        // At once: a refused request never waits for the node thread.
        let refused = tokio::time::timeout(Duration::from_secs(10), handle.request(put("k", "v")));
        assert_eq!(refused.await, Ok(Err(RequestError::Busy)));
        let status = crate::etcd::request_error(&RequestError::Busy);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), "etcdserver: too many requests");
        assert_eq!(handle.metrics.too_many_requests.load(Ordering::Relaxed), 1);
        handle.peer_message(heartbeat());
        assert_eq!(handle.metrics.peer_messages_dropped.load(Ordering::Relaxed), 1);
        // The node thread takes one: there is room for one more.
        handle.inbox.taken(&rx.recv().unwrap());
        assert!(handle.inbox.send(Input::Peer(heartbeat())).is_ok());
        assert_eq!(rx.try_iter().count(), 3);
    }

    /// Status comes from what the node thread published after its last batch, not
    /// through its input: a member whose input is full (etcd's "too many requests")
    /// still reports its status, so `/health` does not call it stopping.
    #[tokio::test]
    async fn status_is_answered_while_the_node_input_is_full() {
        let (mut handle, _rx) = stalled_handle(1);
        let published = Status { id: 7, is_leader: true, applied_index: 42, ..Default::default() };
        let (status_tx, status_rx) = watch::channel(published.clone());
        handle.status = status_rx;
        handle.peer_message(heartbeat()); // the input is full now
        assert_eq!(handle.request(put("k", "v")).await, Err(RequestError::Busy));
        assert_eq!(handle.status().await, Some(published));
        drop(status_tx);
        assert_eq!(handle.status().await, None, "a stopped node has no status");
    }

    /// Client reads waiting for a worker are bounded: past [`READS_QUEUED_MAX`] a read
    /// is refused at once; watch catch-up still queues (a watcher must not fail).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_read_queue_refuses_client_reads_but_not_catch_up() {
        let readers = Arc::new(Readers::new(1));
        let held = readers.running.clone().acquire_owned().await.unwrap();
        let waiting: Vec<_> = (0..READS_QUEUED_MAX)
            .map(|i| {
                let readers = readers.clone();
                tokio::spawn(async move { readers.run(true, move || i).await })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while readers.queued.load(Ordering::Acquire) < READS_QUEUED_MAX {
            assert!(Instant::now() < deadline, "the reads queue up");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let refused = tokio::time::timeout(Duration::from_secs(10), readers.run(true, || 0));
        assert_eq!(refused.await, Ok(Err(RequestError::Busy)), "refused at once");
        let r = readers.clone();
        let catch_up = tokio::spawn(async move { r.run(false, || usize::MAX).await });
        drop(held);
        for (i, read) in waiting.into_iter().enumerate() {
            assert_eq!(read.await.unwrap(), Ok(i));
        }
        assert_eq!(catch_up.await.unwrap(), Ok(usize::MAX));
        assert_eq!(readers.queued.load(Ordering::Acquire), 0, "every read left the queue");
    }

    /// `raftkv_wal_fsync_seconds` counts the node thread's WAL syncs: a write is answered
    /// only after one (it read 0 for ever before stop 21: declared, never observed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_wal_sync_is_timed_in_the_metrics() {
        let (handle, join) = leader().await;
        let synced = || handle.metrics.fsync_seconds.count();
        let before = synced();
        assert!(handle.request(put("k", "v")).await.is_ok());
        assert!(synced() > before, "a write answered without a sync counted");
        assert!(handle.metrics.render().contains("raftkv_wal_fsync_seconds_count "));
        handle.stop();
        join.join().unwrap();
    }

    /// Reads are served on read workers from a view, never on the node thread: with
    /// every worker taken, reads wait while the node thread goes on committing writes
    /// and answering status queries; once a worker is free they are answered, each
    /// from a state that has its ReadIndex applied.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_wait_for_read_workers_not_the_node_thread() {
        let (handle, join) = leader().await;
        assert!(handle.request(put("k", "v1")).await.is_ok());
        let workers = handle.readers.running.clone();
        let all = workers.acquire_many_owned(READ_JOBS_MAX as u32).await.unwrap();
        let h = handle.clone();
        let serializable = tokio::spawn(async move { h.request(get("k", true)).await });
        let h = handle.clone();
        let linearizable = tokio::spawn(async move { h.request(get("k", false)).await });
        // Both reads are in (queued for a worker) once the read queue holds them.
        let deadline = Instant::now() + Duration::from_secs(10);
        while handle.readers.queued.load(Ordering::Acquire) < 2 {
            assert!(Instant::now() < deadline, "the reads reach the read queue");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let before = handle.applied_index();
        assert!(handle.request(put("k", "v2")).await.is_ok(), "the node thread is not held");
        assert!(handle.applied_index() > before);
        assert!(handle.status().await.is_some());
        assert!(!serializable.is_finished() && !linearizable.is_finished());
        drop(all);
        assert_eq!(value(serializable.await.unwrap()), Some(b"v1".to_vec()));
        // Its ReadIndex came after v1 was applied, before v2 was written.
        assert_eq!(value(linearizable.await.unwrap()), Some(b"v1".to_vec()));
        assert_eq!(value(handle.request(get("k", false)).await), Some(b"v2".to_vec()));
        handle.stop();
        join.join().unwrap();
    }

    /// A watcher's catch-up of `key..range_end` from revision 1: every batch, each
    /// resuming from the last one's next revision, until one says it caught up.
    async fn catch_up(handle: &NodeHandle, key: &[u8], range_end: &[u8]) -> Vec<EventBatch> {
        let (mut from, mut batches) = (1, Vec::new());
        loop {
            let batch = handle.events(key.to_vec(), range_end.to_vec(), from, false).await;
            let batch = batch.unwrap().unwrap();
            from = batch.next_revision;
            let caught_up = batch.next_revision > batch.revision;
            batches.push(batch);
            if caught_up {
                return batches;
            }
        }
    }

    /// The revisions of the events of `batches`, in delivery order.
    fn revisions(batches: &[EventBatch]) -> Vec<u64> {
        batches.iter().flat_map(|b| b.events.iter().map(|e| e.kv.mod_revision)).collect()
    }

    /// A watcher far behind catches up in budgeted batches, each resuming where the
    /// last ended, and gets every event once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn catch_up_resumes_batch_by_batch_from_the_returned_revision() {
        let (handle, join) = leader().await;
        let changes = 2 * EVENTS_BUDGET_PER_QUERY + 500;
        for i in 0..changes {
            assert!(handle.request(put(&format!("w/{i:05}"), "v")).await.is_ok());
        }
        let all = catch_up(&handle, b"w/", b"w0").await;
        for batch in &all {
            assert!(batch.events.len() as u64 <= EVENTS_BUDGET_PER_QUERY);
        }
        let batches = all.len();
        let seen = revisions(&all);
        assert!(batches >= 3, "{batches} batches");
        assert_eq!(seen.len() as u64, changes);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in revision order, each once");
        handle.stop();
        join.join().unwrap();
    }

    /// Over large values a catch-up batch stops at the byte budget, far below the
    /// change budget, and resuming still gives every event once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn catch_up_over_large_values_is_bounded_in_bytes() {
        let (handle, join) = leader().await;
        let value = "v".repeat(300 * 1024);
        for i in 0..10 {
            assert!(handle.request(put(&format!("b/{i}"), &value)).await.is_ok());
        }
        let all = catch_up(&handle, b"b/", b"b0").await;
        for batch in &all {
            let bytes: u64 = batch.events.iter().map(kv::Event::payload_bytes).sum();
            // Each event is one revision: the batch stops at the first past the budget.
            assert!(bytes < EVENTS_BYTES_PER_QUERY + 300 * 1024 + 100, "{bytes} bytes");
        }
        let batches = all.len();
        let seen = revisions(&all);
        assert_eq!(batches, 3, "4 values of 300 KiB reach a MiB: 4, 4, 2");
        assert_eq!(seen.len(), 10);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in revision order, each once");
        handle.stop();
        join.join().unwrap();
    }

    /// Watch catch-up and lease listings read the published view, which has everything
    /// the member acknowledged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_and_leases_come_from_the_published_view() {
        let (handle, join) = leader().await;
        assert!(handle.request(put("a", "1")).await.is_ok());
        let grant = Request::Write(Command::new(Op::LeaseGrant { id: 7, ttl_secs: 60 }));
        assert!(handle.request(grant).await.is_ok());
        let batch = handle.events(b"a".to_vec(), Vec::new(), 1, false).await.unwrap().unwrap();
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.next_revision, batch.revision + 1);
        let (revision, leases) = handle.leases().await.unwrap();
        assert_eq!((revision, leases), (batch.revision, vec![(7, 60)]));
        handle.stop();
        join.join().unwrap();
        assert!(handle.state().await.is_none(), "a stopped node has no view");
    }
}

#[cfg(test)]
mod snapshot_retry_tests {
    use super::*;

    #[test]
    fn snapshot_retries_back_off_exponentially_up_to_a_bound() {
        assert_eq!(snapshot_retry_backoff(0), Duration::ZERO, "a first attempt does not wait");
        assert_eq!(snapshot_retry_backoff(1), SNAPSHOT_RETRY_BACKOFF_MIN);
        assert_eq!(snapshot_retry_backoff(2), SNAPSHOT_RETRY_BACKOFF_MIN * 2);
        assert_eq!(snapshot_retry_backoff(3), SNAPSHOT_RETRY_BACKOFF_MIN * 4);
        for failures in [7, 8, 100, u32::MAX] {
            assert_eq!(snapshot_retry_backoff(failures), SNAPSHOT_RETRY_BACKOFF_MAX);
        }
    }
}
