//! Member-to-member traffic over gRPC: a long-lived stream of Raft message batches to
//! each peer (pipelined, reconnecting with backoff), the receiving side of those streams,
//! and write forwarding from followers to the leader.
//!
//! Forwarded writes are batched: each leader has one queue of writes on this member, and
//! a forwarding task sends whatever queued while the previous batch was on the way as
//! one batch (at most [`FORWARD_BATCHES_IN_FLIGHT`] at a time): a `Forward` frame on the
//! frame stream to the leader ([`crate::peer_forward`]), or a `ForwardBatch` call to a
//! leader of an earlier version or while no frame stream is open. Under load one frame
//! (or RPC) and one node wake-up on the leader serve many writes instead of one each; a
//! lone write goes at once, alone, so latency does not change.
//!
//! The transport never blocks the node thread: each peer has a bounded queue, and a
//! batch that does not fit, or that arrives while the peer is unreachable, is dropped.
//! Raft tolerates lost messages; a blocked node thread would stall the whole member.

use crate::metrics::{Metrics, PeerSeries};
use crate::peer_forward::{self, Route, Unanswered};
use crate::peer_guard::{self, Guard, MemberTable};
use crate::peer_stream;
use crate::runtime::{NodeHandle, Outbox, Reply};
use kv::{Command, Response};
use node::{Request, RequestError};
use proto::peer::peer_client::PeerClient;
use proto::peer::peer_server::Peer;
use proto::peer::{
    ForwardBatchRequest, ForwardBatchResponse, ForwardError, ForwardRequest, ForwardResponse,
    HelloRequest, HelloResponse, MemberChangeRequest, MemberChangeResponse, MembersRequest,
    MembersResponse, MessageBatch, StreamAck,
};
use raft::{Message, NodeId};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

/// Longest wait for a peer's answer to the Hello that opens each stream: a peer that
/// accepts the connection but never answers must not hold the reconnect loop forever.
const PEER_HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on each connection to a peer after this long without a frame, and the
/// wait for their answer: a peer that vanished without a FIN (power cut, partition) is
/// noticed in seconds and the stream to it reconnects, instead of waiting minutes for TCP.
const PEER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const PEER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest pause before reconnecting a peer stream (doubling in between).
const PEER_RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const PEER_RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// While a peer stays unreachable, the warning is repeated at most this often (it is
/// redialled every [`PEER_RECONNECT_BACKOFF_MAX`]).
pub const PEER_UNREACHABLE_WARN_INTERVAL: Duration = Duration::from_secs(30);
/// How often each peer's round trip is sampled for `etcd_network_peer_round_trip_time_seconds`
/// ([`probe_loop`]); etcd's prober asks every 4 s and records every 30 s.
pub const PEER_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Batches queued per peer before new ones are dropped.
const PEER_QUEUE_BATCHES: usize = 4096;
/// Largest gRPC message between peers. Senders split batches at [`PEER_BATCH_BYTES_MAX`]
/// and one Raft message is at most a 2 MiB proposal or a 1 MiB snapshot chunk, so honest
/// traffic stays well below. It is also what one hostile message can make a member
/// decode: protobuf turns a 2-byte empty entry into a ~56-byte struct, so the bound
/// (16 MiB, once 64) keeps that under ~0.5 GB.
pub const PEER_MESSAGE_BYTES_MAX: usize = 16 << 20;
/// Most bytes (by [`Message::size_bytes`]) of Raft messages in one batch on the wire; a
/// single larger message goes alone.
pub const PEER_BATCH_BYTES_MAX: u64 = 4 << 20;
/// Forwarded writes queued per leader on this member; past that a write is refused at
/// once with `Busy` (etcd's "too many requests"), never executed.
pub const FORWARD_QUEUED_MAX: usize = 4096;
/// Most writes in one `ForwardBatch` call; the leader refuses larger calls.
pub const FORWARD_BATCH_COMMANDS_MAX: usize = 1024;
/// A batch stops growing once its commands reach this many bytes; with one command of
/// at most [`crate::etcd::REQUEST_BYTES_MAX`] past it, a call stays far below
/// [`PEER_MESSAGE_BYTES_MAX`].
pub const FORWARD_BATCH_BYTES_MAX: usize = 4 << 20;
/// `ForwardBatch` calls to one leader on the way at once: enough to keep the leader's
/// group commit fed while the previous answers travel back.
pub const FORWARD_BATCHES_IN_FLIGHT: usize = 4;
/// Most client URLs kept per member, and the longest one: a peer's hello is input too.
const CLIENT_URLS_MAX: usize = 16;
const CLIENT_URL_BYTES_MAX: usize = 512;

/// Every member's advertised client URLs, as far as this member has heard: its own from
/// the start, each peer's from the answer to the Hello this member sends when it dials
/// that peer at its configured peer URL. `MemberList` reads it, so every member lists
/// every member's client URLs as etcd does; a peer not heard from since this member
/// started has none yet.
///
/// Only answers count, never the URLs an incoming Hello offers: whoever dials in can
/// claim to be any member (issue 10: a forged Hello rewrote another member's URLs),
/// while the answer comes from the address `--initial-cluster` names for that member
/// (which TLS, where configured, also authenticates).
#[derive(Clone, Default)]
pub struct ClientUrls(Arc<Mutex<BTreeMap<NodeId, Vec<String>>>>);

impl ClientUrls {
    /// Records `member`'s client URLs (too many or too long ones are dropped).
    pub fn set(&self, member: NodeId, urls: &[String]) {
        let urls: Vec<String> = urls
            .iter()
            .filter(|u| !u.is_empty() && u.len() <= CLIENT_URL_BYTES_MAX)
            .take(CLIENT_URLS_MAX)
            .cloned()
            .collect();
        self.0.lock().expect("client URL map lock").insert(member, urls);
    }

    /// `member`'s client URLs (empty if not heard of).
    pub fn get(&self, member: NodeId) -> Vec<String> {
        self.0.lock().expect("client URL map lock").get(&member).cloned().unwrap_or_default()
    }
}

/// Who this member is, as peers see it.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The cluster's id.
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: NodeId,
    /// This member's name.
    pub name: String,
    /// This member's advertised client URLs.
    pub client_urls: Vec<String>,
}

impl Identity {
    /// The Hello this member opens a stream to member `target` with (the frame stream and
    /// the gRPC stream send the same one).
    pub fn hello(&self, target: NodeId) -> HelloRequest {
        HelloRequest {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            member_name: self.name.clone(),
            target_member_id: target,
            protocol_version: proto::PEER_PROTOCOL_VERSION,
            client_urls: self.client_urls.clone(),
        }
    }
}

/// The sending side: one queue and one connection task per peer. The peer set follows
/// the applied member table ([`Transport::set_peers`]): a member is dialled when it
/// appears, re-dialled when its peer URL changes, and dropped when it is removed.
#[derive(Clone)]
pub struct Transport {
    links: Arc<RwLock<HashMap<NodeId, Link>>>,
    dial: Arc<Dial>,
    metrics: Arc<Metrics>,
    forward_timeout: Duration,
}

/// What every connection task needs, to start one for a new peer.
struct Dial {
    me: Identity,
    metrics: Arc<Metrics>,
    client_urls: ClientUrls,
    tls: Option<tls::ClientTls>,
    /// Set once this member learns it was removed from the cluster: from its own node,
    /// or from a peer refusing its Hello with etcd's words.
    removed: tokio::sync::watch::Sender<bool>,
    /// How long a forwarded write waits for the leader's answer.
    forward_timeout: Duration,
}

/// One peer: where it is dialled, its queue, its connection task.
struct Link {
    url: String,
    queue: mpsc::Sender<Vec<Message>>,
    /// Writes to forward to it while it leads (its forwarding task ends with the link).
    forwards: mpsc::Sender<Forwarded>,
    channel: Channel,
    task: tokio::task::AbortHandle,
    /// Its round-trip probe.
    probe: tokio::task::AbortHandle,
    /// Since when a stream to it has been open (its Hello answered); `None`: not now.
    active_since: Arc<Mutex<Option<Instant>>>,
    /// Its series (`To`), for the messages its queue could not take.
    series: Arc<PeerSeries>,
}

impl Drop for Link {
    /// A peer dropped (removed, or re-dialled at a new URL) stops being dialled at once.
    fn drop(&mut self) {
        self.task.abort();
        self.probe.abort();
    }
}

impl Transport {
    /// Starts a connection task for each peer `(id, url)`; peers' client URLs learnt in
    /// the handshakes go into `client_urls`. A forwarded write gets `forward_timeout` (the
    /// request timeout) for its answer. `https://` peers are dialled with `tls`.
    pub fn start(
        me: Identity,
        peers: Vec<(NodeId, String)>,
        metrics: Arc<Metrics>,
        client_urls: ClientUrls,
        forward_timeout: Duration,
        tls: Option<tls::ClientTls>,
    ) -> Transport {
        let removed = tokio::sync::watch::Sender::new(false);
        let dial =
            Dial { me, metrics: metrics.clone(), client_urls, tls, removed, forward_timeout };
        let transport =
            Transport { links: Arc::default(), dial: Arc::new(dial), metrics, forward_timeout };
        transport.set_peers(&peers);
        transport
    }

    /// Makes the peer set `peers` (`(id, peer URL)`, this member left out): starts a
    /// connection task for each new peer or new URL, stops the tasks of peers no longer
    /// listed. Messages queued for a dropped peer are dropped with it, and so are the
    /// series of a peer no longer listed ([`crate::metrics::PeerMetrics`]); a peer
    /// re-dialled at a new URL keeps its series.
    pub fn set_peers(&self, peers: &[(NodeId, String)]) {
        let me = self.dial.me.member_id;
        let mut links = self.links.write().expect("peer links lock");
        links.retain(|id, link| peers.iter().any(|(p, url)| p == id && *url == link.url));
        self.metrics.peers.set_peers(peers.iter().map(|(id, _)| *id).filter(|id| *id != me));
        for (id, url) in peers {
            if *id == me || links.contains_key(id) {
                continue;
            }
            // Past `PEER_SERIES_MAX` peers, a detached series nothing renders.
            let series = self.metrics.peers.get(*id).unwrap_or_default();
            match self.dial.link(*id, url, series) {
                Ok(link) => {
                    tracing::info!(peer = format_args!("{id:x}"), url = %url, "dialling peer");
                    links.insert(*id, link);
                }
                Err(e) => {
                    tracing::warn!(peer = format_args!("{id:x}"), url = %url, error = %e, "cannot dial peer")
                }
            }
        }
    }

    /// Records that this member was removed from the cluster.
    pub fn set_removed(&self) {
        self.dial.removed.send_replace(true);
    }

    /// Follows whether this member was removed from the cluster (see [`Dial`]).
    pub fn removed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.dial.removed.subscribe()
    }

    /// The peers dialled now, with the URL each is dialled at.
    pub fn peers(&self) -> Vec<(NodeId, String)> {
        let links = self.links.read().expect("peer links lock");
        let mut peers: Vec<_> = links.iter().map(|(id, l)| (*id, l.url.clone())).collect();
        peers.sort();
        peers
    }

    /// Since when a stream to `peer` has been open without a break; `None` if none is
    /// open now (or it is not a peer). etcd's "active since", for its health checks
    /// before membership changes.
    pub fn active_since(&self, peer: NodeId) -> Option<Instant> {
        let links = self.links.read().expect("peer links lock");
        links.get(&peer).and_then(|l| *l.active_since.lock().expect("active since lock"))
    }

    /// The forwarding queue of `peer`, if it is one.
    fn forward_queue(&self, peer: NodeId) -> Option<mpsc::Sender<Forwarded>> {
        self.links.read().expect("peer links lock").get(&peer).map(|l| l.forwards.clone())
    }

    /// A channel to `peer`, if it is one.
    pub fn channel(&self, peer: NodeId) -> Option<Channel> {
        self.links.read().expect("peer links lock").get(&peer).map(|l| l.channel.clone())
    }

    /// Hands a client's write to the leader `leader` and returns its answer.
    /// Returns the leader's answer and, when it is one, the leader's applied index then.
    /// `NotLeader` only when the leader said so (the write was not applied there), `Busy`
    /// when [`FORWARD_QUEUED_MAX`] writes already wait for that leader.
    ///
    /// The write travels in a batch (see the module docs). It has a deadline, the
    /// request timeout: sent to the leader (`grpc-timeout`, which tonic enforces there)
    /// and kept here, so a leader that accepted the connection but does not answer costs
    /// one request timeout, never a stuck task. Past it the outcome is unknown: `Timeout`.
    pub async fn forward(&self, leader: NodeId, cmd: &Command) -> (Reply, u64) {
        let Some(queue) = self.forward_queue(leader) else {
            return (Err(RequestError::NotLeader { leader: None }), 0);
        };
        let (reply, answer) = oneshot::channel();
        let item = Forwarded { command: cmd.encode().into(), reply };
        match queue.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.too_many_requests.fetch_add(1, Ordering::Relaxed);
                return (Err(RequestError::Busy), 0);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return (Err(RequestError::Timeout), 0),
        }
        match tokio::time::timeout(self.forward_timeout, answer).await {
            Ok(Ok(answered)) => answered,
            Ok(Err(_)) | Err(_) => (Err(RequestError::Timeout), 0),
        }
    }
}

/// A write waiting to be forwarded, and where its answer (with the leader's applied
/// index) goes.
struct Forwarded {
    command: bytes::Bytes,
    reply: oneshot::Sender<(Reply, u64)>,
}

/// Where a forwarding task sends its batches.
#[derive(Clone)]
struct ForwardLink {
    channel: Channel,
    cluster_id: u64,
    /// The frame stream to the peer, while one is open and the peer serves forwards.
    route: Route,
    /// Counts the batches per transport.
    metrics: Arc<Metrics>,
}

impl ForwardLink {
    fn client(&self) -> PeerClient<Channel> {
        PeerClient::new(self.channel.clone())
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
    }
}

/// Sends the writes queued for one leader in batches, at most
/// [`FORWARD_BATCHES_IN_FLIGHT`] calls at once; ends when the transport is dropped.
async fn forward_loop(link: ForwardLink, mut rx: mpsc::Receiver<Forwarded>, timeout: Duration) {
    let in_flight = Arc::new(Semaphore::new(FORWARD_BATCHES_IN_FLIGHT));
    loop {
        let permit = in_flight.clone().acquire_owned().await.expect("never closed");
        let Some(first) = rx.recv().await else { return };
        let batch = take_forward_batch(first, &mut rx);
        if batch.is_empty() {
            continue;
        }
        let link = link.clone();
        tokio::spawn(async move {
            send_forward_batch(&link, batch, timeout).await;
            drop(permit);
        });
    }
}

/// `first` and whatever else is queued, up to [`FORWARD_BATCH_COMMANDS_MAX`] writes and
/// about [`FORWARD_BATCH_BYTES_MAX`] bytes, without the writes whose caller stopped
/// waiting (timed out: their outcome is already "unknown", so not sending them is fine).
fn take_forward_batch(first: Forwarded, rx: &mut mpsc::Receiver<Forwarded>) -> Vec<Forwarded> {
    let mut bytes = first.command.len();
    let mut batch = vec![first];
    while batch.len() < FORWARD_BATCH_COMMANDS_MAX && bytes < FORWARD_BATCH_BYTES_MAX {
        let Ok(next) = rx.try_recv() else { break };
        bytes += next.command.len();
        batch.push(next);
    }
    batch.retain(|f| !f.reply.is_closed());
    batch
}

/// One batch and its answers: a `Forward` frame on the frame stream while one is open,
/// else (or if the stream ended before the frame was written) one `ForwardBatch` call.
/// A batch that may have reached the leader and been applied gets `Timeout` (unknown)
/// for every write, never `NotLeader` (not applied), which would be resent. A leader that
/// predates `ForwardBatch` gets the writes one `Forward` call each.
async fn send_forward_batch(link: &ForwardLink, batch: Vec<Forwarded>, timeout: Duration) {
    let commands: Vec<bytes::Bytes> = batch.iter().map(|f| f.command.clone()).collect();
    let started = tokio::time::Instant::now();
    let framed = link.route.forward(commands.clone(), timeout).await;
    if framed != Err(Unanswered::NotSent) {
        link.metrics.forwarded_batches[0].fetch_add(1, Ordering::Relaxed);
        return answer_forwarded(batch, framed.unwrap_or_default());
    }
    link.metrics.forwarded_batches[1].fetch_add(1, Ordering::Relaxed);
    let timeout = timeout.saturating_sub(started.elapsed());
    let mut req =
        tonic::Request::new(ForwardBatchRequest { cluster_id: link.cluster_id, commands });
    req.set_timeout(timeout);
    let answered = tokio::time::timeout(timeout, link.client().forward_batch(req)).await;
    let responses = match answered {
        Ok(Ok(r)) => r.into_inner().responses,
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
            for f in batch {
                let link = link.clone();
                tokio::spawn(async move {
                    let answer = forward_one(&link, f.command, timeout).await;
                    let _ = f.reply.send(answer);
                });
            }
            return;
        }
        Ok(Err(_)) | Err(_) => Vec::new(),
    };
    answer_forwarded(batch, responses);
}

/// Answers each write of `batch` with its response; `Timeout` (unknown) for all if the
/// responses are not one per write.
fn answer_forwarded(batch: Vec<Forwarded>, responses: Vec<ForwardResponse>) {
    if responses.len() != batch.len() {
        for f in batch {
            let _ = f.reply.send((Err(RequestError::Timeout), 0));
        }
        return;
    }
    for (f, resp) in batch.into_iter().zip(responses) {
        let _ = f.reply.send(forward_answer(resp));
    }
}

/// One write in its own `Forward` call (for a leader without `ForwardBatch`).
async fn forward_one(link: &ForwardLink, command: bytes::Bytes, timeout: Duration) -> (Reply, u64) {
    let mut req = tonic::Request::new(ForwardRequest { cluster_id: link.cluster_id, command });
    req.set_timeout(timeout);
    match tokio::time::timeout(timeout, link.client().forward(req)).await {
        Ok(Ok(r)) => forward_answer(r.into_inner()),
        Ok(Err(_)) | Err(_) => (Err(RequestError::Timeout), 0),
    }
}

/// The leader's answer to one forwarded write, and its applied index then.
fn forward_answer(resp: ForwardResponse) -> (Reply, u64) {
    let reply = match ForwardError::try_from(resp.error).unwrap_or(ForwardError::Busy) {
        ForwardError::None => Response::decode(&resp.response).map_err(|_| RequestError::Timeout),
        ForwardError::NotLeader => {
            Err(RequestError::NotLeader { leader: (resp.leader != 0).then_some(resp.leader) })
        }
        ForwardError::Timeout => Err(RequestError::Timeout),
        ForwardError::TooLarge => Err(RequestError::TooLarge { size: resp.size, max: resp.max }),
        ForwardError::Busy => Err(RequestError::Busy),
        // The leader decodes a forwarded write before it proposes it; one it cannot decode
        // is a request its build does not know (this member's is newer).
        ForwardError::Malformed => Err(RequestError::NotCapable),
    };
    (reply, resp.applied_index)
}

impl Outbox for Transport {
    fn send(&self, msgs: Vec<Message>) {
        let mut by_peer: HashMap<NodeId, Vec<Message>> = HashMap::new();
        for m in msgs {
            by_peer.entry(m.to).or_default().push(m);
        }
        let links = self.links.read().expect("peer links lock");
        for (to, batch) in by_peer {
            let n = batch.len() as u64;
            let sent = match links.get(&to) {
                Some(link) => {
                    let sent = link.queue.try_send(batch).is_ok();
                    if !sent {
                        link.series.failed(n); // its queue is full
                    }
                    sent
                }
                None => {
                    // A member that could not be dialled (its URL) is a peer all the same.
                    if let Some(series) = self.metrics.peers.get(to) {
                        series.failed(n);
                    }
                    false
                }
            };
            if !sent {
                self.metrics.peer_messages_dropped.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

impl Dial {
    /// A connection task for peer `id` at `url`, started, counting in `series`.
    fn link(&self, id: NodeId, url: &str, series: Arc<PeerSeries>) -> Result<Link, String> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("not a URL: {e}"))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(PEER_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(PEER_KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        // An https:// peer is dialled with the peer certificate and CA (checked at
        // start-up for the peers of --initial-cluster).
        let dial = || match &self.tls {
            Some(tls) if tls::is_https(url) => {
                Ok(endpoint.connect_with_connector_lazy(tls.connector()))
            }
            Some(_) | None if tls::is_https(url) => {
                Err("an https:// peer needs --peer-trusted-ca-file and a peer certificate")
            }
            _ => Ok(endpoint.connect_lazy()),
        };
        let channel = dial()?;
        // The round-trip probe's own connection: on `channel` it would wait behind the
        // gRPC fallback stream's batches and forwarded writes.
        let probe_channel = dial()?;
        let (tx, rx) = mpsc::channel(PEER_QUEUE_BATCHES);
        let active_since = Arc::new(Mutex::new(None));
        let route = Route::default();
        let shared = Shared {
            metrics: self.metrics.clone(),
            client_urls: self.client_urls.clone(),
            active_since: active_since.clone(),
            forwards: route.clone(),
            series: series.clone(),
        };
        let removed = self.removed.clone();
        let dialled = (id, url.to_string(), self.tls.clone());
        let task = peer_loop(self.me.clone(), dialled, channel.clone(), rx, shared);
        let task = async move {
            if let Err(refusal) = task.await {
                // The peer says this member was removed: stop dialling, and stop.
                tracing::error!(peer = format_args!("{id:x}"), "{refusal}");
                removed.send_replace(true);
            }
        };
        let task = tokio::spawn(task).abort_handle();
        let (forwards, forward_rx) = mpsc::channel(FORWARD_QUEUED_MAX);
        let cluster_id = self.me.cluster_id;
        let metrics = self.metrics.clone();
        let link = ForwardLink { channel: channel.clone(), cluster_id, route, metrics };
        tokio::spawn(forward_loop(link, forward_rx, self.forward_timeout));
        let probe = tokio::spawn(probe_loop(probe_channel, self.me.hello(id), series.clone()));
        let probe = probe.abort_handle();
        Ok(Link {
            url: url.to_string(),
            queue: tx,
            forwards,
            channel,
            task,
            probe,
            active_since,
            series,
        })
    }
}

/// Samples the round trip to a peer every [`PEER_PROBE_INTERVAL`], the first at once,
/// for `etcd_network_peer_round_trip_time_seconds`: a `Hello` call on the peer's gRPC
/// channel (a connection of its own on the peer port, as etcd probes `/raft/probing`
/// on a connection of its own), from the request to its answer. A probe that fails or is
/// not answered within [`PEER_HELLO_TIMEOUT`] records nothing: the peer being down shows
/// in the failed sends. A probe that had to (re)connect the channel includes the
/// connection's set-up. Ends when aborted, with its [`Link`].
async fn probe_loop(channel: Channel, hello: HelloRequest, series: Arc<PeerSeries>) {
    let mut client = PeerClient::new(channel);
    let mut ticker = tokio::time::interval(PEER_PROBE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut request = tonic::Request::new(hello.clone());
        request.set_timeout(PEER_HELLO_TIMEOUT);
        let asked = Instant::now();
        let answered = tokio::time::timeout(PEER_HELLO_TIMEOUT, client.hello(request)).await;
        if let Ok(Ok(_)) = answered {
            series.observe_round_trip(asked.elapsed());
        }
    }
}

/// What a peer's connection task updates, shared with its [`Link`] and the transport.
struct Shared {
    /// Counters and the unlabelled round-trip histogram.
    metrics: Arc<Metrics>,
    /// Where the peer's client URLs from its Welcome go.
    client_urls: ClientUrls,
    /// Set while a stream to the peer is open.
    active_since: Arc<Mutex<Option<Instant>>>,
    /// Where forwarded writes for the peer go while a frame stream is open.
    forwards: Route,
    /// The peer's series (`To`): messages not sent.
    series: Arc<PeerSeries>,
}

/// Keeps one stream open to peer `id`, reconnecting with exponential backoff (from
/// [`PEER_RECONNECT_BACKOFF_MIN`] to at most [`PEER_RECONNECT_BACKOFF_MAX`]; back to the
/// minimum once a stream was open, so a peer back from a long absence is not kept
/// waiting for the maximum). Ends with `Err` (the peer's words) if the peer says this
/// member was removed from the cluster.
async fn peer_loop(
    me: Identity,
    (id, url, tls): (NodeId, String, Option<tls::ClientTls>),
    channel: Channel,
    mut rx: mpsc::Receiver<Vec<Message>>,
    shared: Shared,
) -> Result<(), String> {
    let Shared { metrics, client_urls, active_since, forwards, series } = shared;
    let mut backoff = PEER_RECONNECT_BACKOFF_MIN;
    let mut warned: Option<(Instant, String)> = None;
    loop {
        let mut opened = false;
        // The frame stream first; the gRPC stream for a peer that does not speak it.
        let frames = peer_stream::Links {
            metrics: &metrics,
            client_urls: &client_urls,
            active_since: &active_since,
            forwards: &forwards,
            series: &series,
        };
        let streamed = match peer_stream::stream_to_peer(
            &me,
            (id, &url, tls.as_ref()),
            &mut rx,
            frames,
            &mut opened,
        )
        .await
        {
            Err(peer_stream::Ended::NotSpoken(e)) => {
                tracing::debug!(peer = %url, answer = %e, "no frame stream; using gRPC");
                let links = (&*metrics, &client_urls, &*active_since, &*series);
                stream_to_peer(&me, id, channel.clone(), &mut rx, links, &mut opened)
                    .await
                    .map_err(peer_stream::Ended::Failed)
            }
            other => other,
        };
        *active_since.lock().expect("active since lock") = None;
        if opened {
            backoff = PEER_RECONNECT_BACKOFF_MIN;
            warned = None;
        }
        match streamed {
            Ok(()) => return Ok(()), // the node stopped: queue closed
            Err(peer_stream::Ended::Failed(e) | peer_stream::Ended::NotSpoken(e))
                if e.contains(crate::membership::REMOVED_MESSAGE) =>
            {
                return Err(e)
            }
            Err(ended) => {
                // Once, again when the cause changes, and a reminder now and then.
                let said = format!("{ended:?}");
                let repeat = warned.as_ref().is_some_and(|(at, before)| {
                    *before == said && at.elapsed() < PEER_UNREACHABLE_WARN_INTERVAL
                });
                if !repeat {
                    match ended {
                        peer_stream::Ended::Tls(why) => {
                            tracing::warn!(peer = %url, "peer {url} {why}; retrying with backoff")
                        }
                        peer_stream::Ended::Failed(e) | peer_stream::Ended::NotSpoken(e) => {
                            tracing::warn!(peer = %url, error = %e, "peer unreachable; retrying with backoff")
                        }
                    }
                    warned = Some((Instant::now(), said));
                }
            }
        }
        // Messages queued while the peer is down are stale by the time it is back.
        let deadline = Instant::now() + backoff;
        while let Ok(Some(batch)) =
            tokio::time::timeout_at(deadline.into(), rx.recv()).await.map_err(|_| ())
        {
            metrics.peer_messages_dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
            series.failed(batch.len() as u64);
        }
        if rx.is_closed() && rx.is_empty() {
            return Ok(());
        }
        backoff = (backoff * 2).min(PEER_RECONNECT_BACKOFF_MAX);
    }
}

/// One stream to peer `id`, until it fails (`Err`) or the node stops (`Ok`); `opened` is
/// set once the peer answered the Hello. Messages a closed stream did not take count as
/// failed sends.
async fn stream_to_peer(
    me: &Identity,
    id: NodeId,
    channel: Channel,
    rx: &mut mpsc::Receiver<Vec<Message>>,
    (metrics, client_urls, active_since, series): (
        &Metrics,
        &ClientUrls,
        &Mutex<Option<Instant>>,
        &PeerSeries,
    ),
    opened: &mut bool,
) -> Result<(), String> {
    let mut client = PeerClient::new(channel)
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
    let started = Instant::now();
    let hello = me.hello(id);
    let mut hello = tonic::Request::new(hello);
    hello.set_timeout(PEER_HELLO_TIMEOUT);
    let answer = match tokio::time::timeout(PEER_HELLO_TIMEOUT, client.hello(hello)).await {
        Ok(answer) => answer.map_err(|s| s.message().to_string())?.into_inner(),
        Err(_) => return Err(format!("no answer to hello within {PEER_HELLO_TIMEOUT:?}")),
    };
    *opened = true;
    *active_since.lock().expect("active since lock") = Some(Instant::now());
    if answer.member_id == id {
        client_urls.set(id, &answer.client_urls);
    }
    metrics.peer_rtt_seconds.observe(started.elapsed().as_secs_f64());
    let (tx, stream_rx) = mpsc::channel::<MessageBatch>(64);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(stream_rx));
    let member = format!("{:x}", me.member_id).parse().expect("hex digits are valid metadata");
    request.metadata_mut().insert(peer_guard::MEMBER_HEADER, member);
    let mut call = tokio::spawn(async move { client.stream(request).await });
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { return Ok(()) };
                let mut unsent = batch.len() as u64;
                for part in split_batch(&batch, PEER_BATCH_BYTES_MAX) {
                    let pb = MessageBatch::from_raft(me.cluster_id, part);
                    if tx.send(pb).await.is_err() {
                        series.failed(unsent);
                        return Err("stream closed".into());
                    }
                    unsent -= part.len() as u64;
                }
            }
            ended = &mut call => {
                return Err(match ended {
                    Ok(Ok(_)) => "peer closed the stream".to_string(),
                    Ok(Err(s)) => s.message().to_string(),
                    Err(e) => e.to_string(),
                });
            }
        }
    }
}

/// `batch` in consecutive parts of at most `max_bytes` each (by [`Message::size_bytes`])
/// and at most [`crate::peer_frame::BATCH_MESSAGES_MAX`] messages,
/// a message larger than that alone in its part.
pub(crate) fn split_batch(batch: &[Message], max_bytes: u64) -> Vec<&[Message]> {
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (k, m) in batch.iter().enumerate() {
        let size = m.size_bytes();
        let full = k - start >= crate::peer_frame::BATCH_MESSAGES_MAX;
        if k > start && (bytes + size > max_bytes || full) {
            parts.push(&batch[start..k]);
            (start, bytes) = (k, 0);
        }
        bytes += size;
    }
    if start < batch.len() {
        parts.push(&batch[start..]);
    }
    parts
}

/// The receiving side: the `raftkv.peer.Peer` service.
pub struct PeerService {
    /// Who we are.
    pub me: Identity,
    /// The members we accept (the applied member table).
    pub members: MemberTable,
    /// The node thread.
    pub node: NodeHandle,
    /// Checks every incoming message before the node thread sees it.
    pub guard: Guard,
    /// Where dropped messages are counted.
    pub metrics: Arc<Metrics>,
    /// Runs membership changes followers hand to this member.
    pub cluster: crate::cluster::Membership,
}

impl PeerService {
    /// The answer to a peer's Hello, or why it is refused (etcd's words for a removed
    /// member). Both transports (gRPC `Hello` and the frame stream's first frame) ask here.
    pub fn check_hello(&self, h: &HelloRequest) -> Result<HelloResponse, String> {
        if h.cluster_id != self.me.cluster_id {
            return Err(format!(
                "member {:?} belongs to cluster {:x}, this member ({}) to cluster {:x}: check \
                 --initial-cluster and --initial-cluster-token on both",
                h.member_name, h.cluster_id, self.me.name, self.me.cluster_id
            ));
        }
        // A removed member that missed its removal learns it here, as etcd's does.
        if self.members.is_removed(h.member_id) {
            return Err(crate::membership::removed_reason(h.member_id));
        }
        if !self.members.contains(h.member_id)
            || (h.target_member_id != 0 && h.target_member_id != self.me.member_id)
        {
            return Err(format!(
                "unknown member {:?} (id {:x}) or wrong target: check --initial-cluster",
                h.member_name, h.member_id
            ));
        }
        // The caller's client URLs are not taken from here (see `ClientUrls`).
        Ok(HelloResponse {
            cluster_id: self.me.cluster_id,
            member_id: self.me.member_id,
            member_name: self.me.name.clone(),
            protocol_version: proto::PEER_PROTOCOL_VERSION,
            client_urls: self.me.client_urls.clone(),
        })
    }

    /// Hands the messages of one batch received on `member`'s stream to the node
    /// thread, each checked by the guard first (the others dropped, counted, logged).
    pub fn admit_batch(&self, member: NodeId, messages: Vec<proto::peer::Message>) {
        let mut admitted = Vec::with_capacity(messages.len());
        for wire in messages {
            match Message::try_from(wire) {
                Ok(m) if self.guard.admit(member, &m, &self.metrics) => admitted.push(m),
                Ok(_) => {}
                Err(e) => self.guard.reject(member, "undecodable", &e.to_string(), &self.metrics),
            }
        }
        self.node.peer_messages(admitted);
    }
}

/// Served through [`crate::peer_grpc::CountedPeerServer`], which bounds the batches of
/// `stream` and `forward_batch` before they are decoded; these handlers rely on it.
#[tonic::async_trait]
impl Peer for PeerService {
    async fn hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloResponse>, Status> {
        self.check_hello(&request.into_inner())
            .map(tonic::Response::new)
            .map_err(Status::failed_precondition)
    }

    async fn stream(
        &self,
        request: tonic::Request<Streaming<MessageBatch>>,
    ) -> Result<tonic::Response<StreamAck>, Status> {
        let member = peer_guard::stream_member(&request, &self.members.ids(), self.me.member_id)?;
        let mut stream = request.into_inner();
        let mut ack = StreamAck::default();
        loop {
            let batch = match stream.message().await {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(status) => {
                    // Refused by the count before decoding (`peer_grpc`), or not protobuf.
                    if status.code() == tonic::Code::InvalidArgument {
                        self.guard.reject(member, "batch", status.message(), &self.metrics);
                    }
                    return Err(status);
                }
            };
            if batch.cluster_id != self.me.cluster_id {
                return Err(Status::failed_precondition("batch from another cluster"));
            }
            // Removed since the stream opened: its messages are dropped from now on.
            if !self.members.contains(member) {
                return Err(Status::permission_denied(crate::membership::removed_reason(member)));
            }
            ack.batches_received += 1;
            ack.messages_received += batch.messages.len() as u64;
            self.admit_batch(member, batch.messages);
        }
        Ok(tonic::Response::new(ack))
    }

    /// The applied member table, for a member joining the cluster.
    async fn members(
        &self,
        request: tonic::Request<MembersRequest>,
    ) -> Result<tonic::Response<MembersResponse>, Status> {
        let asking = request.into_inner().peer_urls;
        tracing::info!(peer_urls = ?asking, "a member asked for the member list (to join, or to check it may bootstrap)");
        let members = self.members.members();
        Ok(tonic::Response::new(MembersResponse { cluster_id: self.me.cluster_id, members }))
    }

    /// A membership change a follower hands to this member, believed to lead.
    async fn change_members(
        &self,
        request: tonic::Request<MemberChangeRequest>,
    ) -> Result<tonic::Response<MemberChangeResponse>, Status> {
        Ok(tonic::Response::new(self.cluster.serve(request.into_inner()).await))
    }

    async fn forward(
        &self,
        request: tonic::Request<ForwardRequest>,
    ) -> Result<tonic::Response<ForwardResponse>, Status> {
        let req = request.into_inner();
        if req.cluster_id != self.me.cluster_id {
            return Err(Status::failed_precondition("forward from another cluster"));
        }
        let out = match Command::decode(&req.command) {
            Err(_) => {
                ForwardResponse { error: ForwardError::Malformed as i32, ..Default::default() }
            }
            Ok(cmd) => {
                let reply = self.node.request(Request::Write(cmd)).await;
                peer_forward::response(reply, self.node.applied_index())
            }
        };
        Ok(tonic::Response::new(out))
    }

    async fn forward_batch(
        &self,
        request: tonic::Request<ForwardBatchRequest>,
    ) -> Result<tonic::Response<ForwardBatchResponse>, Status> {
        let req = request.into_inner();
        if req.cluster_id != self.me.cluster_id {
            return Err(Status::failed_precondition("forward from another cluster"));
        }
        // At most FORWARD_BATCH_COMMANDS_MAX: counted before decoding (`peer_grpc`).
        // tonic ends the call at the caller's deadline (`grpc-timeout`).
        let timeout = peer_forward::FORWARD_TIMEOUT_MAX;
        let responses = peer_forward::serve(&self.node, &req.commands, timeout).await;
        Ok(tonic::Response::new(ForwardBatchResponse { responses }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv::{Op, PutRequest};

    #[test]
    fn batches_are_split_by_bytes_keeping_order() {
        let entry = |n: usize| raft::Entry {
            term: 1,
            index: 1,
            kind: raft::EntryKind::Normal,
            data: vec![0; n].into(),
        };
        let append = |n| Message {
            from: 1,
            to: 2,
            term: 1,
            body: raft::MessageBody::Append {
                prev_index: 0,
                prev_term: 0,
                entries: vec![entry(n)],
                commit: 0,
            },
        };
        // size_bytes: data + 24 per entry + 48 per message.
        let batch = vec![append(28), append(28), append(500), append(28)];
        let parts = split_batch(&batch, 200);
        let sizes: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        assert_eq!(sizes, [2, 1, 1], "two fit, the large one alone, then the rest");
        assert_eq!(parts.concat(), batch);
        assert!(split_batch(&[], 200).is_empty());
        // Tiny messages are split by count too, for the receiver's bound.
        let many = vec![append(0); 2 * crate::peer_frame::BATCH_MESSAGES_MAX + 1];
        let sizes: Vec<usize> = split_batch(&many, u64::MAX).iter().map(|p| p.len()).collect();
        let max = crate::peer_frame::BATCH_MESSAGES_MAX;
        assert_eq!(sizes, [max, max, 1]);
    }

    fn forwarded(bytes: usize) -> (Forwarded, oneshot::Receiver<(Reply, u64)>) {
        let (reply, answer) = oneshot::channel();
        (Forwarded { command: vec![0; bytes].into(), reply }, answer)
    }

    /// A forwarded batch takes what is queued up to its bounds (count, then bytes,
    /// the write that passes the byte bound included), leaves the rest queued in order,
    /// and skips writes whose caller stopped waiting.
    #[test]
    fn forward_batches_are_bounded_and_skip_abandoned_writes() {
        let (tx, mut rx) = mpsc::channel(FORWARD_QUEUED_MAX);
        let mut answers = Vec::new();
        for _ in 0..FORWARD_BATCH_COMMANDS_MAX + 5 {
            let (f, a) = forwarded(10);
            assert!(tx.try_send(f).is_ok());
            answers.push(a);
        }
        drop(answers.remove(1)); // its caller timed out
        let first = rx.try_recv().unwrap();
        let batch = take_forward_batch(first, &mut rx);
        assert_eq!(batch.len(), FORWARD_BATCH_COMMANDS_MAX - 1, "bounded by count, one dropped");
        let rest = take_forward_batch(rx.try_recv().unwrap(), &mut rx);
        assert_eq!(rest.len(), 5);

        let big = FORWARD_BATCH_BYTES_MAX / 2 + 1;
        let mut kept = Vec::new();
        for _ in 0..4 {
            let (f, a) = forwarded(big);
            assert!(tx.try_send(f).is_ok());
            kept.push(a);
        }
        let batch = take_forward_batch(rx.try_recv().unwrap(), &mut rx);
        assert_eq!(batch.len(), 2, "the write that passes the byte bound ends the batch");
        assert_eq!(take_forward_batch(rx.try_recv().unwrap(), &mut rx).len(), 2);
    }

    /// Issue 11: the Forward RPC had no deadline, so a leader that accepted the
    /// connection and then said nothing held the client's write (and its task) forever.
    /// Now the call ends at the request timeout with an unknown outcome (`Timeout`).
    #[tokio::test]
    async fn forward_to_a_leader_that_never_answers_times_out() {
        // Accepts connections and never reads or writes a byte.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut connections = Vec::new();
            while let Ok((c, _)) = silent.accept().await {
                connections.push(c);
            }
        });
        let me = Identity { cluster_id: 1, member_id: 1, name: "m1".into(), client_urls: vec![] };
        let metrics = Arc::new(Metrics::default());
        let timeout = Duration::from_millis(300);
        let transport =
            Transport::start(me, vec![(2, url)], metrics, ClientUrls::default(), timeout, None);
        let cmd = Command::new(Op::Put(PutRequest { key: b"k".to_vec(), ..Default::default() }));

        let started = Instant::now();
        // Well before the keep-alive (PEER_KEEPALIVE_*) would close the connection.
        let bounded = tokio::time::timeout(Duration::from_secs(5), transport.forward(2, &cmd));
        let (reply, applied) = bounded.await.expect("forward returned: it has a deadline");
        assert!(matches!(reply, Err(RequestError::Timeout)), "{reply:?}");
        assert_eq!(applied, 0);
        assert!(started.elapsed() >= timeout, "not before the deadline: {:?}", started.elapsed());
        held.abort();
    }

    /// A write the leader could not decode (a newer member forwarded a request an older
    /// leader does not know) is etcd's "not capable", never "too many requests", which
    /// clients retry.
    #[test]
    fn a_forwarded_write_the_leader_cannot_read_is_not_capable() {
        let answer = |error: ForwardError| {
            forward_answer(ForwardResponse { error: error as i32, ..Default::default() }).0
        };
        let reply = answer(ForwardError::Malformed);
        assert!(matches!(reply, Err(RequestError::NotCapable)), "{reply:?}");
        let status = crate::etcd::request_error(&RequestError::NotCapable);
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::Unavailable, "etcdserver: not capable")
        );
        assert!(matches!(answer(ForwardError::Busy), Err(RequestError::Busy)));
    }
}
