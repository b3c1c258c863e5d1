//! The hot peer path off gRPC: Raft messages between members on a plain framed stream
//! ([`crate::peer_frame`]), on the same peer port as the gRPC `raftkv.peer.Peer`
//! service, which keeps the cold calls (members, membership changes, forwarded writes)
//! and serves the stream to members of earlier versions.
//!
//! **One port.** Every accepted connection (after TLS, where the peer port has it) is
//! sniffed: its first eight bytes are the frame stream's [`PREFACE`] or they are not,
//! and then they go back in front of the connection, which goes to the gRPC server
//! (an HTTP/2 client starts with `PRI * HTTP/2.0`). Sniffing runs per connection, at
//! most [`SNIFFS_IN_FLIGHT_MAX`] at once, each within [`SNIFF_TIMEOUT`], so a client
//! that connects and says nothing holds up no one.
//!
//! **Opening.** The dialling member sends the preface and a `Hello` frame; the other
//! answers with its preface and a `Welcome` (the `HelloResponse`) or a `Refused` frame
//! with the reason (etcd's text for a removed member) and closes. The Hello is checked
//! as the gRPC Hello is ([`PeerService::check_hello`]), and the stream then speaks for
//! the member it named, a known member other than this one: the peer guard's rule (see
//! [`crate::peer_guard`]): a message whose sender differs is dropped and logged, every
//! field is validated, and a member removed since the stream opened gets etcd's text
//! and the stream closes (at its next frame, or at the next keepalive tick if it sends
//! only keepalives). With TLS on the peer port the connection has passed the
//! handshake (CA, `--peer-cert-allowed-cn`) before a byte of this is read.
//!
//! **Frames.** One `Batch` frame carries every message of one Ready for this peer (split
//! only past [`PEER_BATCH_BYTES_MAX`]); the sender writes whatever batches queued while
//! the previous write was on its way with one write (at most [`WRITE_BYTES_MAX`]). The
//! reader decodes a frame in place: entry data shares the read buffer until the core's
//! conversion copies it once.
//!
//! **Liveness.** Each side sends a `Keepalive` frame after [`KEEPALIVE_INTERVAL`]
//! without sending anything, and closes a stream that brought nothing for
//! [`IDLE_TIMEOUT`] or whose write does not finish within [`WRITE_TIMEOUT`]: a peer that
//! vanished without a FIN is noticed in seconds, as the HTTP/2 pings did before.

use crate::metrics::{Metrics, PeerSeries};
use crate::peer::{split_batch, ClientUrls, Identity, PeerService, PEER_BATCH_BYTES_MAX};
use crate::peer_forward::{self, Incoming, Outgoing, Pending, Route};
use crate::peer_frame::{self, put_message, put_raw, read_frame, Frame, Kind, Sniffed, PREFACE};
use bytes::BytesMut;
use prost::Message as _;
use proto::peer::{HelloRequest, HelloResponse, MessageBatch};
use raft::{Message, NodeId};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

/// Longest wait for the first eight bytes of an accepted connection.
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections being sniffed at once; more wait in the accept queue.
pub const SNIFFS_IN_FLIGHT_MAX: usize = 256;
/// Frame streams served at once; one past it is refused with a `Refused` frame.
pub const FRAME_STREAMS_MAX: usize = 64;
/// Longest wait for the other side's preface and Hello (or Welcome).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// A side that has sent nothing for this long sends a `Keepalive`.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// A stream that brought nothing (not even a keepalive) for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest one write may take before the stream is taken for dead.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the TCP connection (and TLS handshake) to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Most bytes of frames the sender gathers into one write.
pub const WRITE_BYTES_MAX: usize = 4 << 20;
/// Connections sniffed as HTTP/2, waiting for the gRPC server to take them.
const H2_QUEUE_MAX: usize = 64;
/// A write buffer that grew past this is dropped after use rather than kept.
const WRITE_BUFFER_KEEP_BYTES: usize = 1 << 20;

// ---------------------------------------------------------------------------------------
// The receiving side.

/// Splits the connections `incoming` yields: frame streams are served here, by `svc`;
/// the others (HTTP/2) come out of the returned stream, their first bytes put back, for
/// the gRPC server. Must be called inside a tokio runtime.
pub fn split_incoming<S, IO>(
    incoming: S,
    svc: Arc<PeerService>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Rewound<IO>>>
where
    S: Stream<Item = io::Result<IO>> + Send + Unpin + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(H2_QUEUE_MAX);
    tokio::spawn(sniff_all(incoming, svc, tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn sniff_all<S, IO>(
    mut incoming: S,
    svc: Arc<PeerService>,
    h2: mpsc::Sender<io::Result<Rewound<IO>>>,
) where
    S: Stream<Item = io::Result<IO>> + Unpin,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let sniffing = Arc::new(Semaphore::new(SNIFFS_IN_FLIGHT_MAX));
    let streams = Arc::new(Semaphore::new(FRAME_STREAMS_MAX));
    while let Some(next) = incoming.next().await {
        let mut conn = match next {
            Ok(conn) => conn,
            Err(e) => {
                if h2.send(Err(e)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let Ok(slot) = sniffing.clone().acquire_owned().await else { return };
        let (svc, streams, h2) = (svc.clone(), streams.clone(), h2.clone());
        tokio::spawn(async move {
            let mut head = [0u8; PREFACE.len()];
            let read = tokio::time::timeout(SNIFF_TIMEOUT, read_head(&mut conn, &mut head)).await;
            drop(slot);
            let Ok(Ok(n)) = read else { return }; // silent or broken: dropped
            match peer_frame::sniff(&head[..n]) {
                Sniffed::Frames => serve_stream(conn, svc, streams).await,
                Sniffed::OtherVersion(v) => {
                    let ours = PREFACE[PREFACE.len() - 1];
                    let why =
                        format!("peer stream version {v} is not spoken here (version {ours})");
                    refuse(&mut conn, &why).await;
                }
                Sniffed::Other => {
                    let head = head[..n].to_vec();
                    let _ = h2.send(Ok(Rewound { head, at: 0, io: conn })).await;
                }
            }
        });
    }
}

/// Reads into `head` until it is full or the stream ends; how many bytes arrived.
async fn read_head<R: AsyncRead + Unpin>(io: &mut R, head: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < head.len() {
        match io.read(&mut head[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Sends our preface and a `Refused` frame with `why`, then closes (best effort).
async fn refuse<W: AsyncWrite + Unpin>(io: &mut W, why: &str) {
    let mut out = BytesMut::from(&PREFACE[..]);
    put_raw(&mut out, Kind::Refused, why.as_bytes());
    close_with(io, out).await;
}

/// Sends a `Refused` frame with `why` on a stream already welcomed (its preface sent),
/// then closes (best effort).
async fn refuse_open<W: AsyncWrite + Unpin>(io: &mut W, why: &str) {
    let mut out = BytesMut::new();
    put_raw(&mut out, Kind::Refused, why.as_bytes());
    close_with(io, out).await;
}

async fn close_with<W: AsyncWrite + Unpin>(io: &mut W, out: BytesMut) {
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        io.write_all(&out).await?;
        io.shutdown().await
    })
    .await;
}

/// The member a stream's opening frame speaks for, and the answer to send; or why it
/// is refused.
fn open(svc: &PeerService, frame: Frame) -> Result<(NodeId, HelloResponse), String> {
    if frame.kind != Kind::Hello {
        return Err(format!("a peer stream opens with a Hello frame, not {:?}", frame.kind));
    }
    let hello = HelloRequest::decode(frame.payload).map_err(|e| format!("bad Hello: {e}"))?;
    if hello.member_id == svc.me.member_id {
        return Err(format!(
            "a peer stream must speak for a member other than this one ({:x})",
            svc.me.member_id
        ));
    }
    let welcome = svc.check_hello(&hello)?;
    Ok((hello.member_id, welcome))
}

/// Serves one frame stream whose preface has been read, until it ends.
async fn serve_stream<IO>(io: IO, svc: Arc<PeerService>, streams: Arc<Semaphore>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut buf = BytesMut::new();
    let first = tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut rd, &mut buf)).await;
    let opened = match first {
        Ok(Ok(Some(frame))) => open(&svc, frame),
        Ok(Ok(None)) => return,
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no Hello within {HELLO_TIMEOUT:?}")),
    };
    let (member, welcome) = match opened {
        Ok(opened) => opened,
        Err(why) => return refuse(&mut wr, &why).await,
    };
    let Ok(_held) = streams.try_acquire_owned() else {
        let why = format!("too many peer streams open here (at most {FRAME_STREAMS_MAX})");
        return refuse(&mut wr, &why).await;
    };
    let mut out = BytesMut::from(&PREFACE[..]);
    put_message(&mut out, Kind::Welcome, &welcome);
    if write(&mut wr, &out).await.is_err() {
        return;
    }
    if let Err(why) = receive(&mut rd, &mut wr, buf, &svc, member).await {
        tracing::debug!(member = format_args!("{member:x}"), reason = %why, "peer stream closed");
    }
}

/// Reads `member`'s batches until the stream ends (`Ok`) or is closed for a reason.
async fn receive<R, W>(
    rd: &mut R,
    wr: &mut W,
    mut buf: BytesMut,
    svc: &PeerService,
    member: NodeId,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let keepalive = {
        let mut out = BytesMut::new();
        put_raw(&mut out, Kind::Keepalive, &[]);
        out
    };
    let mut ticker = tokio::time::interval(KEEPALIVE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_until = tokio::time::Instant::now() + IDLE_TIMEOUT;
    let mut forwarded = Incoming::default();
    loop {
        let frame = tokio::select! {
            read = tokio::time::timeout_at(idle_until, read_frame(rd, &mut buf)) => read,
            _ = ticker.tick() => {
                // A member removed since the stream opened that sends only keepalives
                // (it missed its removal and has nothing to say) is told at the next tick.
                // Only one this member's table marks removed: a member it does not know
                // (a table restored from a snapshot older than the member's addition)
                // is not told it was removed, or it would stop.
                if svc.members.is_removed(member) {
                    let why = crate::membership::removed_reason(member);
                    refuse_open(wr, &why).await;
                    return Err(why);
                }
                write(wr, &keepalive).await.map_err(|e| e.to_string())?;
                continue;
            }
            answer = forwarded.next() => {
                write_answers(wr, answer, &mut forwarded).await.map_err(|e| e.to_string())?;
                continue;
            }
        };
        let frame = match frame {
            Err(_) => return Err(format!("nothing for {IDLE_TIMEOUT:?}")),
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => {
                svc.guard.reject(member, "frame", &e.to_string(), &svc.metrics);
                return Err(e.to_string());
            }
        };
        idle_until = tokio::time::Instant::now() + IDLE_TIMEOUT;
        match frame.kind {
            Kind::Keepalive => {}
            Kind::Batch => {
                if let Err(why) = batch(svc, member, frame) {
                    refuse_open(wr, &why).await;
                    return Err(why);
                }
            }
            Kind::Forward => match forward(svc, member, frame, &forwarded) {
                Ok(None) => {}
                Ok(Some(busy)) => {
                    write(wr, &busy.frame).await.map_err(|e| e.to_string())?;
                }
                Err(why) => {
                    refuse_open(wr, &why).await;
                    return Err(why);
                }
            },
            other => {
                let why = format!("unexpected {other:?} frame on an open peer stream");
                svc.guard.reject(member, "frame", &why, &svc.metrics);
                refuse_open(wr, &why).await;
                return Err(why);
            }
        }
    }
}

/// `Err` with etcd's text once `member` has been removed (the stream is then refused
/// and closed; the member's redial is refused with the same text, and it stops).
fn still_member(svc: &PeerService, member: NodeId) -> Result<(), String> {
    if svc.members.contains(member) {
        Ok(())
    } else {
        Err(crate::membership::removed_reason(member))
    }
}

/// Checks and hands on one `Batch` frame of `member`'s stream; `Err`: close the stream.
fn batch(svc: &PeerService, member: NodeId, frame: Frame) -> Result<(), String> {
    match peer_frame::batch_message_count(&frame.payload) {
        Some(n) if n <= peer_frame::BATCH_MESSAGES_MAX => {}
        counted => {
            let why = match counted {
                Some(n) => {
                    format!("batch of {n} messages (at most {})", peer_frame::BATCH_MESSAGES_MAX)
                }
                None => "undecodable batch".to_string(),
            };
            svc.guard.reject(member, "batch", &why, &svc.metrics);
            return Err(why);
        }
    }
    let batch = match MessageBatch::decode(frame.payload) {
        Ok(batch) => batch,
        Err(e) => {
            let why = format!("undecodable batch: {e}");
            svc.guard.reject(member, "batch", &why, &svc.metrics);
            return Err(why);
        }
    };
    if batch.cluster_id != svc.me.cluster_id {
        return Err("batch from another cluster".into());
    }
    // Removed since the stream opened: its messages are dropped from now on.
    still_member(svc, member)?;
    svc.admit_batch(member, batch.messages);
    Ok(())
}

/// Checks and serves one `Forward` frame of `member`'s stream (see
/// [`Incoming::accept`]); `Err`: close the stream.
fn forward(
    svc: &PeerService,
    member: NodeId,
    frame: Frame,
    forwarded: &Incoming,
) -> Result<Option<peer_forward::Answer>, String> {
    // Removed since the stream opened: its writes are refused from now on.
    still_member(svc, member)?;
    forwarded.accept(&svc.node, svc.me.cluster_id, frame.payload).inspect_err(|why| {
        svc.guard.reject(member, "forward", why, &svc.metrics);
    })
}

/// Writes `first` and every other answer ready now, in one write (at most
/// [`WRITE_BYTES_MAX`] bytes gathered).
async fn write_answers<W: AsyncWrite + Unpin>(
    wr: &mut W,
    first: peer_forward::Answer,
    forwarded: &mut Incoming,
) -> io::Result<()> {
    let mut out = first.frame;
    let mut held = Vec::new();
    while out.len() < WRITE_BYTES_MAX {
        let Some(more) = forwarded.try_next() else { break };
        out.extend_from_slice(&more.frame);
        held.push(more); // each batch keeps its place until its answer is written
    }
    write(wr, &out).await
}

async fn write<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8]) -> io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(bytes)).await {
        Ok(written) => written,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "peer write timed out")),
    }
}

/// An accepted connection with the bytes read to sniff it put back in front.
pub struct Rewound<IO> {
    head: Vec<u8>,
    at: usize,
    io: IO,
}

impl<IO: Connected> Connected for Rewound<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewound<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.head.len() {
            let n = buf.remaining().min(this.head.len() - this.at);
            buf.put_slice(&this.head[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

write_through!(Rewound);

// ---------------------------------------------------------------------------------------
// The sending side.

/// How a frame stream to a peer ended.
#[derive(Debug)]
pub enum Ended {
    /// The peer does not answer with the frame stream's preface (a member of an earlier
    /// version, which serves only gRPC): use the gRPC stream.
    NotSpoken(String),
    /// The stream failed or was refused: the peer's or the error's words.
    Failed(String),
    /// The TLS handshake failed on a certificate, ours or the peer's: in TLS terms, with
    /// the flag to check (`tls::ClientTls::explain`), after "peer URL ".
    Tls(String),
}

/// `error` from a connection to a peer: a TLS failure said in TLS terms
/// ([`Ended::Tls`]), anything else as `other` makes it.
fn ended(
    error: &io::Error,
    tls: Option<&tls::ClientTls>,
    other: impl Fn(&io::Error) -> Ended,
) -> Ended {
    match tls.and_then(|t| t.explain(error)) {
        Some(why) => Ended::Tls(why),
        None => other(error),
    }
}

/// A connection to a peer, plain or TLS.
trait PeerIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> PeerIo for T {}

/// What one stream to a peer updates (as the gRPC stream does).
pub struct Links<'a> {
    /// Counters and the round-trip histogram.
    pub metrics: &'a Metrics,
    /// Where the peer's client URLs from its Welcome go.
    pub client_urls: &'a ClientUrls,
    /// Set while the stream is open.
    pub active_since: &'a Mutex<Option<Instant>>,
    /// Where forwarded writes for the peer go while the stream is open.
    pub forwards: &'a Route,
    /// The peer's series: the messages a failed write lost count as failed sends.
    pub series: &'a PeerSeries,
}

/// Dials `url` (with `tls` for `https://`) and connects within [`CONNECT_TIMEOUT`].
async fn connect(url: &str, tls: Option<&tls::ClientTls>) -> Result<Box<dyn PeerIo>, Ended> {
    let uri: http::Uri =
        url.parse().map_err(|e| Ended::Failed(format!("{url}: not a URL: {e}")))?;
    let dialled = async {
        match tls {
            Some(tls) if tls::is_https(url) => {
                tls.connect(&uri).await.map(|s| Box::new(s) as Box<dyn PeerIo>)
            }
            _ => {
                let host = uri.host().unwrap_or_default().trim_matches(|c| c == '[' || c == ']');
                let tcp =
                    tokio::net::TcpStream::connect((host, uri.port_u16().unwrap_or(80))).await?;
                tcp.set_nodelay(true)?;
                Ok(Box::new(tcp) as Box<dyn PeerIo>)
            }
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, dialled).await {
        Ok(Ok(io)) => Ok(io),
        Ok(Err(e)) => Err(ended(&e, tls, |e| Ended::Failed(format!("connecting to {url}: {e}")))),
        Err(_) => Err(Ended::Failed(format!(
            "connecting to {url}: no connection within {CONNECT_TIMEOUT:?}"
        ))),
    }
}

/// One frame stream to peer `id` at `url`, until it fails or the node stops (`Ok`: the
/// queue closed); `opened` is set once the peer welcomed it.
pub async fn stream_to_peer(
    me: &Identity,
    (id, url, tls): (NodeId, &str, Option<&tls::ClientTls>),
    rx: &mut mpsc::Receiver<Vec<Message>>,
    links: Links<'_>,
    opened: &mut bool,
) -> Result<(), Ended> {
    let started = Instant::now();
    let io = connect(url, tls).await?;
    let (mut rd, mut wr) = tokio::io::split(io);
    let hello = me.hello(id);
    let mut out = BytesMut::from(&PREFACE[..]);
    put_message(&mut out, Kind::Hello, &hello);
    let mut buf = BytesMut::new();
    if let Err(e) = write(&mut wr, &out).await {
        // A peer that refused our certificate may have closed before our Hello came and
        // so reset the connection: its alert may still wait to be read.
        let alert = tokio::time::timeout(CONNECT_TIMEOUT, welcome(&mut rd, &mut buf, tls)).await;
        if let Ok(Err(Ended::Tls(why))) = alert {
            return Err(Ended::Tls(why));
        }
        return Err(ended(&e, tls, |e| Ended::Failed(e.to_string())));
    }
    let welcome = tokio::time::timeout(HELLO_TIMEOUT, welcome(&mut rd, &mut buf, tls)).await;
    let welcome = welcome.unwrap_or_else(|_| {
        Err(Ended::Failed(format!("no answer to hello within {HELLO_TIMEOUT:?}")))
    })?;
    *opened = true;
    *links.active_since.lock().expect("active since lock") = Some(Instant::now());
    if welcome.member_id == id {
        links.client_urls.set(id, &welcome.client_urls);
    }
    links.metrics.peer_rtt_seconds.observe(started.elapsed().as_secs_f64());
    // Forwarded writes take this stream while it is open, if the peer serves them.
    let mut outgoing = (welcome.protocol_version >= peer_forward::FORWARD_FRAMES_VERSION)
        .then(|| links.forwards.open());
    let pending = outgoing.as_ref().map(Outgoing::pending);
    let reader = AbortOnDrop(tokio::spawn(async move { listen(&mut rd, buf, pending).await }));
    send(me.cluster_id, &mut wr, rx, &mut outgoing, reader, links.series).await
}

/// Reads the peer's preface and its Welcome (or refusal). With TLS 1.3, a peer that
/// refuses our certificate says so here, at our first read: that is no reason to try
/// gRPC instead.
async fn welcome<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    tls: Option<&tls::ClientTls>,
) -> Result<HelloResponse, Ended> {
    let mut head = [0u8; PREFACE.len()];
    let n = read_head(rd, &mut head)
        .await
        .map_err(|e| ended(&e, tls, |e| Ended::NotSpoken(e.to_string())))?;
    if head != PREFACE {
        return Err(Ended::NotSpoken(format!("the peer answered {:?}", &head[..n])));
    }
    match read_frame(rd, buf).await {
        Ok(Some(Frame { kind: Kind::Welcome, payload })) => HelloResponse::decode(payload)
            .map_err(|e| Ended::Failed(format!("bad Welcome from the peer: {e}"))),
        Ok(Some(Frame { kind: Kind::Refused, payload })) => {
            Err(Ended::Failed(String::from_utf8_lossy(&payload).into_owned()))
        }
        Ok(Some(frame)) => Err(Ended::Failed(format!("the peer answered a {:?}", frame.kind))),
        Ok(None) => Err(Ended::Failed("the peer closed the stream".into())),
        Err(e) => Err(Ended::Failed(e.to_string())),
    }
}

/// The reading half of an open stream to a peer: keepalives, answers to forwarded writes
/// (with `pending`: the peer serves them), or a refusal; ends with why the stream is over.
async fn listen<R: AsyncRead + Unpin>(
    rd: &mut R,
    mut buf: BytesMut,
    pending: Option<Pending>,
) -> String {
    loop {
        match tokio::time::timeout(IDLE_TIMEOUT, read_frame(rd, &mut buf)).await {
            Err(_) => return format!("nothing from the peer for {IDLE_TIMEOUT:?}"),
            Ok(Ok(Some(Frame { kind: Kind::Keepalive, .. }))) => {}
            Ok(Ok(Some(Frame { kind: Kind::ForwardAnswers, payload }))) if pending.is_some() => {
                if let Err(why) = pending.as_ref().expect("checked").answer(payload) {
                    return why;
                }
            }
            Ok(Ok(Some(Frame { kind: Kind::Refused, payload }))) => {
                return String::from_utf8_lossy(&payload).into_owned()
            }
            Ok(Ok(Some(frame))) => return format!("the peer sent a {:?} frame", frame.kind),
            Ok(Ok(None)) => return "the peer closed the stream".into(),
            Ok(Err(e)) => return e.to_string(),
        }
    }
}

/// The writing half: every queued batch (of Raft messages and, with `outgoing`, of
/// forwarded writes) as frames, as many as queued in one write. The Raft messages of a
/// write that fails count as failed sends in `series`.
async fn send<W: AsyncWrite + Unpin>(
    cluster_id: u64,
    wr: &mut W,
    rx: &mut mpsc::Receiver<Vec<Message>>,
    outgoing: &mut Option<Outgoing>,
    mut reader: AbortOnDrop,
    series: &PeerSeries,
) -> Result<(), Ended> {
    let mut out = BytesMut::new();
    // Raft messages in `out`.
    let mut messages = 0u64;
    loop {
        tokio::select! {
            job = next_job(outgoing) => {
                let outgoing = outgoing.as_mut().expect("a job came from it");
                outgoing.put(&mut out, cluster_id, job);
                while out.len() < WRITE_BYTES_MAX {
                    let Some(more) = outgoing.try_next() else { break };
                    outgoing.put(&mut out, cluster_id, more);
                }
                while out.len() < WRITE_BYTES_MAX {
                    let Ok(more) = rx.try_recv() else { break };
                    messages += put_batch(&mut out, cluster_id, &more);
                }
            }
            next = tokio::time::timeout(KEEPALIVE_INTERVAL, rx.recv()) => match next {
                Err(_) => put_raw(&mut out, Kind::Keepalive, &[]),
                Ok(None) => return Ok(()),
                Ok(Some(first)) => {
                    messages += put_batch(&mut out, cluster_id, &first);
                    while out.len() < WRITE_BYTES_MAX {
                        let Ok(more) = rx.try_recv() else { break };
                        messages += put_batch(&mut out, cluster_id, &more);
                    }
                    while let Some(outgoing) = outgoing.as_mut().filter(|_| out.len() < WRITE_BYTES_MAX) {
                        let Some(job) = outgoing.try_next() else { break };
                        outgoing.put(&mut out, cluster_id, job);
                    }
                }
            },
            ended = &mut reader.0 => {
                return Err(Ended::Failed(ended.unwrap_or_else(|e| e.to_string())));
            }
        }
        if let Err(e) = write(wr, &out).await {
            series.failed(messages);
            return Err(Ended::Failed(e.to_string()));
        }
        messages = 0;
        if out.capacity() > WRITE_BUFFER_KEEP_BYTES {
            out = BytesMut::new();
        } else {
            out.clear();
        }
    }
}

/// The next forwarded batch to send, if the stream carries them (else never).
async fn next_job(outgoing: &mut Option<Outgoing>) -> peer_forward::Job {
    match outgoing {
        Some(outgoing) => outgoing.next().await,
        None => std::future::pending().await,
    }
}

/// Appends `batch` (one Ready's messages for this peer) as one frame, or a few where it
/// passes [`PEER_BATCH_BYTES_MAX`]; how many messages it appended.
fn put_batch(out: &mut BytesMut, cluster_id: u64, batch: &[Message]) -> u64 {
    for part in split_batch(batch, PEER_BATCH_BYTES_MAX) {
        put_message(out, Kind::Batch, &MessageBatch::from_raft(cluster_id, part));
    }
    batch.len() as u64
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<String>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
