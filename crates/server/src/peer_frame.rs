//! The framing of the peer stream ([`crate::peer_stream`]): a plain length-prefixed
//! stream of protobuf messages between members, instead of one gRPC call.
//!
//! Why: under load each member spent 11-15% of its CPU, plus part of the h2 connection
//! work, on gRPC/HTTP/2 framing of peer messages (stream bookkeeping, flow control,
//! per-message headers and wake-ups). A Raft stream needs none of that: it is one
//! ordered byte stream in each direction. etcd's own peer transport is plain HTTP
//! streaming for the same reason.
//!
//! | bytes | what |
//! |---|---|
//! | 8 | preface, once per direction: [`PREFACE`] (`raftkv` `P` and the version byte) |
//! | 4 | frame length `n` (big endian), the kind byte included: `1 ..= FRAME_BYTES_MAX` |
//! | 1 | frame kind ([`Kind`]) |
//! | n - 1 | payload: a `raftkv.peer` protobuf message, or text for [`Kind::Refused`] |
//!
//! Kinds 6 and 7 (forwarded writes and their answers) came with peer protocol version 2;
//! a member sends them only to a peer whose Welcome says 2 or later.
//!
//! The first bytes a client sends on an HTTP/2 connection are `PRI * HTTP/2.0`, so the
//! preface tells the two apart on the one peer port (see [`crate::peer_stream`]).
//!
//! Bounds: a frame announcing more than [`FRAME_BYTES_MAX`] (or 0) bytes ends the
//! connection before anything is allocated for it; the read buffer grows only by what
//! actually arrived, so a peer that announces a large frame and stops costs nothing.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;

/// The first bytes each side sends: `raftkvP` and the protocol version.
pub const PREFACE: [u8; 8] = *b"raftkvP\x01";
/// The preface without its version byte: a raftkv peer of another version sends it.
pub const PREFACE_NAME: &[u8] = b"raftkvP";
/// The largest frame (kind and payload); as gRPC's message limit between peers was.
pub const FRAME_BYTES_MAX: usize = crate::peer::PEER_MESSAGE_BYTES_MAX;
/// The most messages one `Batch` frame may carry; senders split larger batches
/// ([`crate::peer::split_batch`]). Why: a message costs 2 bytes on the wire but 192
/// decoded (`size_of::<proto::peer::Message>()`), so a frame of tiny messages at
/// [`FRAME_BYTES_MAX`] would make the receiver allocate over 1.5 GiB; this caps it under
/// a megabyte. The gRPC `Stream` call has the same bound ([`crate::peer_grpc`]).
pub const BATCH_MESSAGES_MAX: usize = 4096;
/// Bytes of the length prefix.
const LENGTH_BYTES: usize = 4;
/// The read buffer grows by at most this much before a read (more only as bytes arrive).
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// What the first bytes of a connection to the peer port say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// Our [`PREFACE`]: a frame stream of this version.
    Frames,
    /// A raftkv frame stream of another version (the byte it sent).
    OtherVersion(u8),
    /// Anything else (HTTP/2 for gRPC, or garbage gRPC will refuse).
    Other,
}

/// Tells a frame stream from anything else by the (up to [`PREFACE`]-long) `head` that
/// arrived before the connection went quiet or ended.
pub fn sniff(head: &[u8]) -> Sniffed {
    if head == PREFACE {
        Sniffed::Frames
    } else if head.len() == PREFACE.len() && head.starts_with(PREFACE_NAME) {
        Sniffed::OtherVersion(head[PREFACE.len() - 1])
    } else {
        Sniffed::Other
    }
}

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Dialling side, first frame: a `HelloRequest`.
    Hello = 1,
    /// Answering side, to a Hello it accepts: a `HelloResponse`.
    Welcome = 2,
    /// Answering side, before closing: why (UTF-8 text, etcd's words where there are).
    Refused = 3,
    /// Dialling side: a `MessageBatch` (the Raft messages of one Ready for this peer).
    Batch = 4,
    /// Either side, when it has sent nothing for a while: proof of life, empty.
    Keepalive = 5,
    /// Dialling side, to a peer that welcomed it with protocol version 2 or later: a
    /// `ForwardFrame` (client writes for the leader; see [`crate::peer_forward`]).
    Forward = 6,
    /// Answering side: a `ForwardAnswerFrame`, the answers to one `Forward` frame.
    ForwardAnswers = 7,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Welcome,
            3 => Kind::Refused,
            4 => Kind::Batch,
            5 => Kind::Keepalive,
            6 => Kind::Forward,
            7 => Kind::ForwardAnswers,
            _ => return None,
        })
    }
}

/// One received frame; the payload shares the read buffer (no copy).
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// What it carries.
    pub kind: Kind,
    /// The payload.
    pub payload: Bytes,
}

/// Why a byte stream is not a valid peer stream; the connection is closed with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A frame length of 0 or over [`FRAME_BYTES_MAX`].
    BadLength(u64),
    /// A kind byte this build does not know.
    UnknownKind(u8),
    /// The stream ended inside a frame.
    Truncated {
        /// Bytes of the unfinished frame that had arrived.
        have: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadLength(n) => {
                write!(f, "peer frame of {n} bytes (allowed: 1 to {FRAME_BYTES_MAX})")
            }
            FrameError::UnknownKind(k) => write!(f, "unknown peer frame kind {k}"),
            FrameError::Truncated { have } => {
                write!(f, "peer stream ended inside a frame ({have} bytes of it arrived)")
            }
        }
    }
}
impl std::error::Error for FrameError {}

/// Appends one frame of `kind` carrying `msg` to `out`.
pub fn put_message(out: &mut BytesMut, kind: Kind, msg: &impl prost::Message) {
    let len = msg.encoded_len();
    out.reserve(LENGTH_BYTES + 1 + len);
    out.put_u32(frame_length(len));
    out.put_u8(kind as u8);
    msg.encode(out).expect("reserved enough");
}

/// Appends one frame of `kind` carrying `payload` as is to `out`.
pub fn put_raw(out: &mut BytesMut, kind: Kind, payload: &[u8]) {
    out.reserve(LENGTH_BYTES + 1 + payload.len());
    out.put_u32(frame_length(payload.len()));
    out.put_u8(kind as u8);
    out.put_slice(payload);
}

/// The length prefix for a payload of `len` bytes. Senders keep frames under the bound
/// (batches are split far below it), so a larger one is a bug here, not input.
fn frame_length(len: usize) -> u32 {
    assert!(len < FRAME_BYTES_MAX, "a peer frame of {len} bytes: batches are split below it");
    (len + 1) as u32
}

/// Takes the next whole frame off the front of `buf`, if it has arrived; `Ok(None)`:
/// more bytes are needed. An error means the stream is not valid (close it).
pub fn take_frame(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    if buf.len() < LENGTH_BYTES + 1 {
        return Ok(None);
    }
    let len = u32::from_be_bytes(buf[..LENGTH_BYTES].try_into().expect("4 bytes")) as usize;
    if len == 0 || len > FRAME_BYTES_MAX {
        return Err(FrameError::BadLength(len as u64));
    }
    let kind = buf[LENGTH_BYTES];
    let kind = Kind::from_byte(kind).ok_or(FrameError::UnknownKind(kind))?;
    if buf.len() < LENGTH_BYTES + len {
        // Room for what is still to come, but never more than one chunk ahead of it.
        let missing = LENGTH_BYTES + len - buf.len();
        buf.reserve(missing.min(READ_CHUNK_BYTES));
        return Ok(None);
    }
    buf.advance(LENGTH_BYTES + 1);
    Ok(Some(Frame { kind, payload: buf.split_to(len - 1).freeze() }))
}

/// Reads the next frame from `io` into `buf` (which keeps what arrived past it);
/// `Ok(None)` at a clean end of stream between frames.
pub async fn read_frame<R>(io: &mut R, buf: &mut BytesMut) -> std::io::Result<Option<Frame>>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(frame) = take_frame(buf).map_err(invalid)? {
            return Ok(Some(frame));
        }
        if buf.capacity() == buf.len() {
            buf.reserve(READ_CHUNK_BYTES);
        }
        if io.read_buf(buf).await? == 0 {
            return match buf.len() {
                0 => Ok(None),
                have => Err(invalid(FrameError::Truncated { have })),
            };
        }
    }
}

/// How many messages a `MessageBatch` payload holds (its field 2), counted by walking
/// the top level of the encoding without decoding them
/// ([`crate::peer_forward::count_field`], which the gRPC calls' count uses too); `None`
/// if that top level is not well-formed protobuf.
pub fn batch_message_count(payload: &[u8]) -> Option<usize> {
    const MESSAGES_FIELD: u64 = 2;
    crate::peer_forward::count_field(payload, MESSAGES_FIELD, usize::MAX).ok()
}

/// A frame error as an I/O error of kind `InvalidData`.
pub fn invalid(e: FrameError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::peer::{HelloRequest, MessageBatch};

    fn frames(bytes: &[u8]) -> (Vec<Frame>, Result<(), FrameError>, usize) {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match take_frame(&mut buf) {
                Ok(Some(f)) => out.push(f),
                Ok(None) => return (out, Ok(()), buf.len()),
                Err(e) => return (out, Err(e), buf.len()),
            }
        }
    }

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let hello = HelloRequest { cluster_id: 7, member_id: 2, ..Default::default() };
        let batch = MessageBatch { cluster_id: 7, messages: Vec::new() };
        let mut out = BytesMut::new();
        put_message(&mut out, Kind::Hello, &hello);
        put_message(&mut out, Kind::Batch, &batch);
        put_raw(&mut out, Kind::Keepalive, &[]);
        put_raw(&mut out, Kind::Refused, b"no");
        let (got, end, rest) = frames(&out);
        assert_eq!((end, rest), (Ok(()), 0));
        let kinds: Vec<Kind> = got.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [Kind::Hello, Kind::Batch, Kind::Keepalive, Kind::Refused]);
        assert_eq!(<HelloRequest as prost::Message>::decode(got[0].payload.clone()), Ok(hello));
        assert_eq!(&got[3].payload[..], b"no");
        // Every prefix is "need more" after the whole frames in it, never an error.
        for cut in 0..out.len() {
            let (got_part, end, _) = frames(&out[..cut]);
            assert_eq!(end, Ok(()), "cut at {cut}");
            assert!(got_part.len() <= got.len());
            assert_eq!(got_part[..], got[..got_part.len()]);
        }
    }

    /// Forgery: lengths of 0 and 2^32-1, and one past the bound, end the stream at once,
    /// before anything is allocated for the frame they announce.
    #[test]
    fn lengths_out_of_bounds_are_refused_before_allocating() {
        for len in [0u32, u32::MAX, FRAME_BYTES_MAX as u32 + 1] {
            let mut buf = BytesMut::new();
            buf.put_u32(len);
            buf.put_u8(Kind::Batch as u8);
            let capacity = buf.capacity();
            assert_eq!(take_frame(&mut buf), Err(FrameError::BadLength(len as u64)));
            assert_eq!(buf.capacity(), capacity, "nothing reserved for {len}");
        }
        // The largest allowed frame is waited for, reserving at most one chunk ahead.
        let mut buf = BytesMut::new();
        buf.put_u32(FRAME_BYTES_MAX as u32);
        buf.put_u8(Kind::Batch as u8);
        assert_eq!(take_frame(&mut buf), Ok(None));
        assert!(buf.capacity() <= 5 + READ_CHUNK_BYTES + 64, "{}", buf.capacity());
    }

    /// Forgery: a batch of many tiny messages is counted before anything is decoded,
    /// so the receiver refuses it past [`BATCH_MESSAGES_MAX`] instead of allocating
    /// ~75 times the frame's size.
    #[test]
    fn batch_messages_are_counted_without_decoding() {
        let empty = proto::peer::Message::default();
        let many = MessageBatch { cluster_id: u64::MAX, messages: vec![empty; 10_000] };
        let bytes = prost::Message::encode_to_vec(&many);
        assert_eq!(bytes.len(), 11 + 2 * 10_000, "2 bytes a message on the wire");
        assert_eq!(batch_message_count(&bytes), Some(10_000));
        assert_eq!(batch_message_count(&bytes[..bytes.len() - 1]), None, "truncated");
        assert_eq!(batch_message_count(&[0x13]), None, "a group wire type");
        assert_eq!(batch_message_count(&[]), Some(0));
        assert!(std::mem::size_of::<proto::peer::Message>() > 50);
    }

    #[test]
    fn unknown_kinds_are_refused() {
        let (_, end, _) = frames(&[0, 0, 0, 1, 0]);
        assert_eq!(end, Err(FrameError::UnknownKind(0)));
        let (_, end, _) = frames(&[0, 0, 0, 1, 200]);
        assert_eq!(end, Err(FrameError::UnknownKind(200)));
    }

    /// Forgery: a stream that ends inside a frame is an error naming what arrived, a
    /// stream that ends between frames is a clean end.
    #[tokio::test]
    async fn truncated_frames_are_errors_and_clean_ends_are_not() {
        let mut whole = BytesMut::new();
        put_raw(&mut whole, Kind::Refused, b"reason");
        for cut in 1..whole.len() {
            let mut io = &whole[..cut];
            let err = read_frame(&mut io, &mut BytesMut::new()).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "cut at {cut}");
            assert!(err.to_string().contains(&format!("{cut} bytes")), "{err}");
        }
        let mut io = &whole[..];
        let mut buf = BytesMut::new();
        assert!(read_frame(&mut io, &mut buf).await.unwrap().is_some());
        assert!(read_frame(&mut io, &mut buf).await.unwrap().is_none());
    }

    /// Fuzz: random bytes, and valid streams with random bytes flipped, never panic;
    /// every frame that comes out is within the bounds; a batch payload that is garbage
    /// is a protobuf error, not a panic (what the stream does with it).
    #[test]
    fn garbage_never_panics_and_frames_stay_bounded() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut valid = BytesMut::new();
        for k in 0..20u64 {
            let hello = HelloRequest { cluster_id: k, member_id: k + 1, ..Default::default() };
            put_message(&mut valid, Kind::Hello, &hello);
        }
        for round in 0..2000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                (0..next() % 512).map(|_| next() as u8).collect()
            } else {
                let mut v = valid.to_vec();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % v.len();
                    v[at] = next() as u8;
                }
                v
            };
            let (got, _, _) = frames(&bytes);
            for f in got {
                assert!(f.payload.len() < FRAME_BYTES_MAX);
                let _ = <MessageBatch as prost::Message>::decode(f.payload);
            }
        }
    }

    /// Hands out a byte stream in chunks of random sizes (1 byte to 2 chunks), as a
    /// socket may.
    struct Chunked {
        bytes: Vec<u8>,
        at: usize,
        rng: raft::Rng,
    }

    impl tokio::io::AsyncRead for Chunked {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            out: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let this = &mut *self;
            let want = this.rng.range(1, 2 * READ_CHUNK_BYTES as u64 + 1) as usize;
            let n = want.min(out.remaining()).min(this.bytes.len() - this.at);
            out.put_slice(&this.bytes[this.at..this.at + n]);
            this.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// A varint of an extreme value.
    fn extreme(rng: &mut raft::Rng) -> u64 {
        [0, 1, u64::MAX, u64::MAX - 1, 1 << 62, u32::MAX as u64, FRAME_BYTES_MAX as u64]
            [rng.range(0, 7) as usize]
    }

    /// One piece of a hostile stream: a valid frame with extreme field values, a frame
    /// header announcing a length at or around the limits (then truncated), an unknown
    /// kind, a batch of very many tiny messages, or random bytes.
    fn piece(rng: &mut raft::Rng, out: &mut BytesMut) {
        use proto::peer::{HelloRequest, Message, MessageBatch};
        match rng.range(0, 6) {
            0 => {
                let hello = HelloRequest {
                    cluster_id: extreme(rng),
                    member_id: extreme(rng),
                    target_member_id: extreme(rng),
                    protocol_version: extreme(rng) as u32,
                    ..Default::default()
                };
                put_message(out, Kind::Hello, &hello);
            }
            1 => {
                let m = |rng: &mut raft::Rng| Message {
                    from: extreme(rng),
                    to: extreme(rng),
                    term: extreme(rng),
                    body: None,
                };
                let count = rng.range(0, 2000) as usize;
                let batch = MessageBatch {
                    cluster_id: extreme(rng),
                    messages: (0..count).map(|_| m(rng)).collect(),
                };
                put_message(out, Kind::Batch, &batch);
            }
            2 => {
                let len = [0, 1, 2, FRAME_BYTES_MAX - 1, FRAME_BYTES_MAX, FRAME_BYTES_MAX + 1]
                    .map(|l| l as u32)
                    .into_iter()
                    .chain([u32::MAX, u32::MAX / 2])
                    .nth(rng.range(0, 8) as usize)
                    .expect("8 lengths");
                out.put_u32(len);
                out.put_u8(rng.range(0, 7) as u8);
                for _ in 0..rng.range(0, 64) {
                    out.put_u8(rng.next_u64() as u8);
                }
            }
            3 => put_raw(out, Kind::Keepalive, &[]),
            4 => {
                out.put_u32(1 + rng.range(0, 16) as u32);
                out.put_u8(6 + rng.range(0, 250) as u8); // unknown kinds
            }
            _ => {
                for _ in 0..rng.range(0, 256) {
                    out.put_u8(rng.next_u64() as u8);
                }
            }
        }
    }

    /// Fuzz (issue 10): hostile streams, read as the receiver reads them (random chunk
    /// sizes), never panic; every frame that comes out is within the bound; the read
    /// buffer never holds more than what arrived plus one chunk (no allocation for a
    /// length that was only announced); every payload decodes to a value or an error
    /// (then its messages go through the same conversion the receiver uses); and the
    /// sniffing of the first bytes tells our preface, another version and anything
    /// else apart exactly.
    #[tokio::test]
    async fn hostile_streams_never_panic_nor_allocate_past_what_arrived() {
        use proto::peer::{HelloRequest, MessageBatch};
        let cases: u64 = std::env::var("PEER_FRAME_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000);
        let (mut frames_seen, mut messages_seen) = (0u64, 0u64);
        for case in 0..cases {
            let mut rng = raft::Rng::new(case);
            let mut bytes = BytesMut::new();
            for _ in 0..rng.range(1, 6) {
                piece(&mut rng, &mut bytes);
            }
            if rng.range(0, 4) == 0 && !bytes.is_empty() {
                let cut = rng.range(0, bytes.len() as u64) as usize;
                bytes.truncate(cut); // a stream that ends anywhere
            }
            let arrived = bytes.len();
            let mut io = Chunked { bytes: bytes.to_vec(), at: 0, rng: raft::Rng::new(!case) };
            let mut buf = BytesMut::new();
            loop {
                let read = read_frame(&mut io, &mut buf).await;
                // Growth may double a buffer, never follow an announced length.
                assert!(
                    buf.capacity() <= 2 * (arrived + 2 * READ_CHUNK_BYTES),
                    "case {case}: buffer of {} bytes for a stream of {arrived}",
                    buf.capacity()
                );
                let frame = match read {
                    Ok(Some(frame)) => frame,
                    Ok(None) | Err(_) => break,
                };
                frames_seen += 1;
                assert!(frame.payload.len() < FRAME_BYTES_MAX, "case {case}");
                match frame.kind {
                    Kind::Hello => drop(<HelloRequest as prost::Message>::decode(frame.payload)),
                    _ => {
                        let counted = batch_message_count(&frame.payload);
                        let Ok(batch) = <MessageBatch as prost::Message>::decode(frame.payload)
                        else {
                            continue;
                        };
                        assert_eq!(counted, Some(batch.messages.len()), "case {case}");
                        for m in batch.messages {
                            messages_seen += 1;
                            let _ = raft::Message::try_from(m);
                        }
                    }
                }
            }
            // The preface sniff over every cut of a random head, ours, and another
            // version's.
            let mut head = PREFACE.to_vec();
            match case % 3 {
                0 => head[7] = rng.next_u64() as u8,
                1 => head = (0..8).map(|_| rng.next_u64() as u8).collect(),
                _ => {}
            }
            for n in 0..=head.len() {
                let expected = if head[..n] == PREFACE {
                    Sniffed::Frames
                } else if n == 8 && head.starts_with(PREFACE_NAME) {
                    Sniffed::OtherVersion(head[7])
                } else {
                    Sniffed::Other
                };
                assert_eq!(sniff(&head[..n]), expected, "case {case}: {:?}", &head[..n]);
            }
        }
        assert_eq!(sniff(b"PRI * HT"), Sniffed::Other);
        println!("{cases} hostile streams: {frames_seen} frames, {messages_seen} messages");
        assert!(
            frames_seen > cases / 2 && messages_seen > cases,
            "the generator reaches the decoders"
        );
    }
}
