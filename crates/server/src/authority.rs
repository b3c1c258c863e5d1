//! # authority: accept the `http://host:port` :authority that etcdctl sends
//!
//! etcdctl 3.4 dials each endpoint of `endpoint status`, `endpoint hashkv`, `defrag`...
//! as a connection of its own whose target is the endpoint as the user wrote it, and
//! grpc-go then sends that text, `http://127.0.0.1:2379`, as the HTTP/2 `:authority` of
//! every request on the connection. etcd's server (grpc-go) never parses the authority.
//! The `h2` crate under tonic does, finds a `/` in it, and resets the stream with
//! PROTOCOL_ERROR before any of our code runs; it has no setting to relax that check.
//!
//! [`AuthorityFix`] wraps each accepted client connection and fixes such an authority
//! before `h2` reads it. It must see the plaintext, so TLS ends in the accept stream
//! below it (`tls::ServerTls::accept_stream`, this wrapper around its streams), not in
//! tonic's `tls_config`, which would put the encryption between this wrapper and `h2`;
//! the wrapper would then see no HTTP/2 preface and pass every byte on unchanged.
//!
//! - It follows the client's bytes frame by frame (RFC 9113 §4.1). The first complete
//!   header block decides: if its `:authority` is well formed, or missing, or broken in
//!   a way no rewrite mends, every later byte passes through untouched and unparsed (the
//!   cost for ordinary clients is decoding one header block per connection).
//! - If it is `scheme://host:port[/...]` with a well-formed `host:port`, the connection
//!   is rewritten from then on: each header block is decoded with HPACK (RFC 7541),
//!   keeping the client's dynamic table, and re-encoded as literals that are never
//!   added to the server's table, with `:authority: host:port`. The server's HPACK table
//!   then stays as it was and is never referred to again, so the two cannot disagree.
//! - Every other frame passes through byte for byte. Flow control counts DATA frames
//!   only, so rewriting header blocks (and dropping their padding) leaves it untouched.
//! - Bounds: one header block of at most [`HEADER_BLOCK_BYTES_MAX`] encoded bytes is held
//!   at a time, decoding to at most [`HEADER_LIST_BYTES_MAX`]. A client past the first
//!   bound, or past the second on a rewritten connection, is disconnected (h2 with
//!   tonic's settings refuses far smaller header blocks and lists anyway). The re-encoded block is cut into frames of 16 KiB, the
//!   smallest frame size limit an HTTP/2 server may set, so `h2` always accepts them.

use crate::cert_user::ClientCertificateUser;
use bytes::{Buf, BytesMut};
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

/// The largest header block (HEADERS and CONTINUATION payloads) held while deciding or
/// rewriting. h2 with tonic's defaults accepts at most six 16 KiB frames per block.
pub const HEADER_BLOCK_BYTES_MAX: usize = 128 * 1024;
/// The largest decoded header list rewritten, counted as HPACK does (name + value + 32
/// per field); h2 with tonic's defaults refuses lists over 16 KiB.
pub const HEADER_LIST_BYTES_MAX: usize = 64 * 1024;
/// The HPACK dynamic table size the server allows its clients (h2 keeps HTTP/2's default
/// SETTINGS_HEADER_TABLE_SIZE); the client's table is tracked within this bound.
const HEADER_TABLE_BYTES_MAX: usize = 4096;
/// Payload size of the frames a rewritten block is cut into: the smallest
/// SETTINGS_MAX_FRAME_SIZE a server may announce.
const FRAME_PAYLOAD_BYTES_MAX: usize = 16_384;
/// How much is read from the connection at a time while frames are being followed.
const READ_CHUNK_BYTES: usize = 8 * 1024;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_BYTES: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const PRIORITY_BYTES: usize = 5;

/// Why a connection being rewritten was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for FilterError {}

/// The `host:port` to use instead of `authority`, if `authority` is not a well-formed
/// URI authority but `scheme://host:port[/path]` with a well-formed `host:port`.
pub fn fixed_authority(authority: &[u8]) -> Option<Vec<u8>> {
    if http::uri::Authority::try_from(authority).is_ok() {
        return None;
    }
    let text = std::str::from_utf8(authority).ok()?;
    let (scheme, rest) = text.split_once("://")?;
    if scheme.is_empty()
        || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    let host_port = rest.split(['/', '?', '#']).next()?;
    http::uri::Authority::try_from(host_port).ok()?;
    Some(host_port.as_bytes().to_vec())
}

/// A decoded header field: name and value.
type Field = (Vec<u8>, Vec<u8>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Matching the client connection preface; this many bytes matched so far.
    Preface(usize),
    /// Following frames until the first header block is complete.
    Deciding,
    /// Rewriting every header block.
    Rewriting,
    /// Passing everything through unparsed.
    Transparent,
}

/// A header block being gathered from a HEADERS frame and its CONTINUATION frames.
struct Block {
    /// The stream id field as sent (with its reserved bit).
    stream_id: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; PRIORITY_BYTES]>,
    fragment: Vec<u8>,
    /// The frames exactly as received (kept while deciding, to pass them on unchanged).
    raw: Vec<u8>,
}

struct FrameHead {
    length: usize,
    kind: u8,
    flags: u8,
    stream_id: [u8; 4],
}

impl FrameHead {
    fn parse(b: &[u8]) -> FrameHead {
        FrameHead {
            length: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream_id: [b[5], b[6], b[7], b[8]],
        }
    }
}

fn stream_number(id: [u8; 4]) -> u32 {
    u32::from_be_bytes(id) & 0x7fff_ffff
}

/// The sans-IO part of [`AuthorityFix`]: turns the client's bytes into the bytes `h2`
/// reads (see the module docs).
pub struct Filter {
    mode: Mode,
    /// Payload bytes of the current non-header frame still to pass through.
    skip_bytes: usize,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
}

impl Default for Filter {
    fn default() -> Self {
        Filter::new()
    }
}

impl Filter {
    /// A filter for a new connection.
    pub fn new() -> Filter {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_BYTES_MAX);
        Filter { mode: Mode::Preface(0), skip_bytes: 0, block: None, decoder }
    }

    /// Whether every later byte passes through unchanged.
    pub fn is_transparent(&self) -> bool {
        self.mode == Mode::Transparent
    }

    /// Whether the connection's header blocks are being rewritten.
    pub fn is_rewriting(&self) -> bool {
        self.mode == Mode::Rewriting
    }

    /// Moves what can be decided from `input` to `output`; an incomplete frame header or
    /// header frame stays in `input` until more bytes come.
    pub fn process(
        &mut self,
        input: &mut BytesMut,
        output: &mut BytesMut,
    ) -> Result<(), FilterError> {
        while !input.is_empty() {
            match self.mode {
                Mode::Transparent => output.extend_from_slice(&input.split()),
                Mode::Preface(matched) => {
                    let n = (PREFACE.len() - matched).min(input.len());
                    self.mode = if input[..n] != PREFACE[matched..matched + n] {
                        Mode::Transparent // not HTTP/2: h2 answers it as it sees fit
                    } else if matched + n == PREFACE.len() {
                        Mode::Deciding
                    } else {
                        Mode::Preface(matched + n)
                    };
                    if self.mode != Mode::Transparent {
                        output.extend_from_slice(&input.split_to(n));
                    }
                }
                Mode::Deciding | Mode::Rewriting => {
                    if !self.frame(input, output)? {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Moves one frame (or part of a passed-through payload); false if more input is
    /// needed first.
    fn frame(&mut self, input: &mut BytesMut, output: &mut BytesMut) -> Result<bool, FilterError> {
        if self.skip_bytes > 0 {
            let n = self.skip_bytes.min(input.len());
            output.extend_from_slice(&input.split_to(n));
            self.skip_bytes -= n;
            return Ok(true);
        }
        if input.len() < FRAME_HEADER_BYTES {
            return Ok(false);
        }
        let head = FrameHead::parse(&input[..FRAME_HEADER_BYTES]);
        let in_block = self.block.is_some();
        let header_frame = head.kind == HEADERS || (head.kind == CONTINUATION && in_block);
        if !header_frame {
            if in_block {
                return Err(FilterError(format!(
                    "a frame of type {} inside a header block (only CONTINUATION may follow a \
                     HEADERS frame without END_HEADERS)",
                    head.kind
                )));
            }
            output.extend_from_slice(&input.split_to(FRAME_HEADER_BYTES));
            self.skip_bytes = head.length;
            return Ok(true);
        }
        let held = self.block.as_ref().map_or(0, |b| b.raw.len() + b.fragment.len());
        if held + head.length > HEADER_BLOCK_BYTES_MAX {
            return Err(FilterError(format!("a header block over {HEADER_BLOCK_BYTES_MAX} bytes")));
        }
        let frame_bytes = FRAME_HEADER_BYTES + head.length;
        if input.len() < frame_bytes {
            input.reserve(frame_bytes - input.len());
            return Ok(false);
        }
        let frame = input.split_to(frame_bytes);
        self.header_frame(&head, &frame, output)?;
        Ok(true)
    }

    /// Adds a HEADERS or CONTINUATION frame to the block; finishes it on END_HEADERS.
    fn header_frame(
        &mut self,
        head: &FrameHead,
        frame: &[u8],
        output: &mut BytesMut,
    ) -> Result<(), FilterError> {
        let payload = &frame[FRAME_HEADER_BYTES..];
        let keep_raw = self.mode == Mode::Deciding;
        match self.block.as_mut() {
            Some(block) => {
                if head.kind == HEADERS {
                    return Err(FilterError("a HEADERS frame inside a header block".into()));
                }
                if stream_number(head.stream_id) != stream_number(block.stream_id) {
                    return Err(FilterError("a CONTINUATION frame for another stream".into()));
                }
                block.fragment.extend_from_slice(payload);
                if keep_raw {
                    block.raw.extend_from_slice(frame);
                }
            }
            None => {
                let mut block = headers_frame(head, payload)?;
                if keep_raw {
                    block.raw.extend_from_slice(frame);
                }
                self.block = Some(block);
            }
        }
        if head.flags & END_HEADERS != 0 {
            let block = self.block.take().expect("a block is being gathered");
            self.finish(block, output)?;
        }
        Ok(())
    }

    /// Passes a complete block on: unchanged while deciding (unless it is the one that
    /// switches to rewriting), re-encoded while rewriting.
    fn finish(&mut self, block: Block, output: &mut BytesMut) -> Result<(), FilterError> {
        let decoded = self.decode(&block.fragment);
        if self.mode == Mode::Deciding {
            match decoded {
                Ok(fields) if needs_fix(&fields) => {
                    self.mode = Mode::Rewriting;
                    tracing::debug!("a client sends a URL as :authority; rewriting its requests");
                    emit(&block, &encode(fields), output);
                }
                _ => {
                    // Well formed, or not ours to mend: h2 sees exactly what was sent.
                    self.mode = Mode::Transparent;
                    output.extend_from_slice(&block.raw);
                }
            }
            return Ok(());
        }
        let fields = decoded?;
        emit(&block, &encode(fields), output);
        Ok(())
    }

    /// Decodes a block with the client's dynamic table, up to [`HEADER_LIST_BYTES_MAX`].
    fn decode(&mut self, fragment: &[u8]) -> Result<Vec<Field>, FilterError> {
        let mut fields = Vec::new();
        let mut list_bytes = 0usize;
        self.decoder
            .decode_with_cb(fragment, |name, value| {
                list_bytes = list_bytes.saturating_add(name.len() + value.len() + 32);
                if list_bytes <= HEADER_LIST_BYTES_MAX {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|e| FilterError(format!("a header block HPACK cannot decode: {e}")))?;
        if list_bytes > HEADER_LIST_BYTES_MAX {
            return Err(FilterError(format!("a header list over {HEADER_LIST_BYTES_MAX} bytes")));
        }
        Ok(fields)
    }
}

/// Reads a HEADERS frame's priority and header block fragment, dropping its padding.
fn headers_frame(head: &FrameHead, payload: &[u8]) -> Result<Block, FilterError> {
    let malformed = || FilterError("a HEADERS frame shorter than its padding".into());
    let mut rest = payload;
    let mut padding = 0;
    if head.flags & PADDED != 0 {
        let (&n, tail) = rest.split_first().ok_or_else(malformed)?;
        padding = usize::from(n);
        rest = tail;
    }
    let mut priority = None;
    if head.flags & PRIORITY != 0 {
        if rest.len() < PRIORITY_BYTES {
            return Err(malformed());
        }
        let (p, tail) = rest.split_at(PRIORITY_BYTES);
        priority = Some(p.try_into().expect("five bytes"));
        rest = tail;
    }
    let fragment_bytes = rest.len().checked_sub(padding).ok_or_else(malformed)?;
    Ok(Block {
        stream_id: head.stream_id,
        end_stream: head.flags & END_STREAM != 0,
        priority,
        fragment: rest[..fragment_bytes].to_vec(),
        raw: Vec::new(),
    })
}

/// Whether the block's `:authority` must and can be rewritten.
fn needs_fix(fields: &[Field]) -> bool {
    fields.iter().any(|(name, value)| name == b":authority" && fixed_authority(value).is_some())
}

/// The fields as HPACK literals never added to the dynamic table, with the authority
/// fixed.
fn encode(fields: Vec<Field>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        let value = match name.as_slice() {
            b":authority" => fixed_authority(&value).unwrap_or(value),
            _ => value,
        };
        out.push(0x00); // literal header field without indexing, new name (RFC 7541 §6.2.2)
        encode_string(&name, &mut out);
        encode_string(&value, &mut out);
    }
    out
}

/// An HPACK string literal without Huffman coding (RFC 7541 §5.2).
fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    encode_integer(s.len(), 7, out);
    out.extend_from_slice(s);
}

/// An HPACK integer with an N-bit prefix, the prefix's upper bits zero (RFC 7541 §5.1).
fn encode_integer(value: usize, prefix_bits: u32, out: &mut Vec<u8>) {
    let prefix_max = (1usize << prefix_bits) - 1;
    if value < prefix_max {
        out.push(value as u8);
        return;
    }
    out.push(prefix_max as u8);
    let mut rest = value - prefix_max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// Writes a block as a HEADERS frame and as many CONTINUATION frames as it needs.
fn emit(block: &Block, encoded: &[u8], output: &mut BytesMut) {
    let priority_bytes = if block.priority.is_some() { PRIORITY_BYTES } else { 0 };
    let first = encoded.len().min(FRAME_PAYLOAD_BYTES_MAX - priority_bytes);
    let (head, rest) = encoded.split_at(first);
    let mut flags = if rest.is_empty() { END_HEADERS } else { 0 };
    if block.end_stream {
        flags |= END_STREAM;
    }
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    frame_header(priority_bytes + head.len(), HEADERS, flags, block.stream_id, output);
    if let Some(p) = block.priority {
        output.extend_from_slice(&p);
    }
    output.extend_from_slice(head);
    let mut chunks = rest.chunks(FRAME_PAYLOAD_BYTES_MAX).peekable();
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() { END_HEADERS } else { 0 };
        frame_header(chunk.len(), CONTINUATION, flags, block.stream_id, output);
        output.extend_from_slice(chunk);
    }
}

fn frame_header(length: usize, kind: u8, flags: u8, stream_id: [u8; 4], output: &mut BytesMut) {
    debug_assert!(length <= FRAME_PAYLOAD_BYTES_MAX);
    output.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
    output.extend_from_slice(&[kind, flags]);
    output.extend_from_slice(&stream_id);
}

/// An accepted client connection whose HTTP/2 `:authority` is mended before the server
/// reads it (see the module docs). Writes pass straight through.
///
/// It is the one wrapper around every client connection, so it also carries the user
/// the connection's client certificate names (see [`crate::cert_user`]), as the
/// connection's info that tonic puts into each request.
pub struct AuthorityFix<IO> {
    io: IO,
    user: ClientCertificateUser,
    filter: Filter,
    /// Bytes read and not yet decided on (at most one header frame plus a read).
    input: BytesMut,
    /// Bytes decided on and not yet handed to the reader.
    output: BytesMut,
    read_ended: bool,
}

impl<IO> AuthorityFix<IO> {
    /// Wraps a freshly accepted connection that has no certificate user.
    pub fn new(io: IO) -> AuthorityFix<IO> {
        AuthorityFix::with_user(io, ClientCertificateUser::default())
    }

    /// Wraps a freshly accepted connection whose client certificate names `user`.
    pub fn with_user(io: IO, user: ClientCertificateUser) -> AuthorityFix<IO> {
        AuthorityFix {
            io,
            user,
            filter: Filter::new(),
            input: BytesMut::new(),
            output: BytesMut::new(),
            read_ended: false,
        }
    }
}

/// Wraps every connection a listener's stream accepts.
pub fn wrap_incoming<S, IO, E>(incoming: S) -> impl Stream<Item = Result<AuthorityFix<IO>, E>>
where
    S: Stream<Item = Result<IO, E>>,
{
    incoming.map(|accepted| accepted.map(AuthorityFix::new))
}

impl<IO> Connected for AuthorityFix<IO> {
    type ConnectInfo = ClientCertificateUser;

    fn connect_info(&self) -> ClientCertificateUser {
        self.user.clone()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityFix<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.read_ended || (this.filter.is_transparent() && this.input.is_empty()) {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            if read.filled().is_empty() {
                // The client is gone mid-frame: h2 sees what it sent, then the end.
                this.read_ended = true;
                let rest = this.input.split();
                this.output.extend_from_slice(&rest);
                continue;
            }
            this.input.extend_from_slice(read.filled());
            if let Err(e) = this.filter.process(&mut this.input, &mut this.output) {
                tracing::info!(error = %e, "closing a client connection whose requests are rewritten");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }
}

write_through!(AuthorityFix);

#[cfg(test)]
mod tests {
    use super::*;

    const AUTHORITY_URL: &[u8] = b"http://127.0.0.1:2379";
    /// RFC 7541 C.4.1: "www.example.com", Huffman coded.
    const HUFFMAN_WWW_EXAMPLE_COM: [u8; 12] =
        [0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff];

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// `:method: POST` and `:path: /x` (static and literal), then `:authority` as a
    /// literal added to the dynamic table, as grpc-go sends a connection's first request.
    fn first_block(authority: &[u8]) -> Vec<u8> {
        let mut b = vec![0x83, 0x04]; // :method POST (static 3); :path, new literal value
        encode_string(b"/x", &mut b);
        b.push(0x41); // literal with incremental indexing, name = static 1 (:authority)
        encode_string(authority, &mut b);
        b.push(0x40); // literal with incremental indexing, new name
        encode_string(b"te", &mut b);
        encode_string(b"trailers", &mut b);
        b
    }

    /// A later request: the authority and `te` by their dynamic table indices.
    fn later_block() -> Vec<u8> {
        vec![0x83, 0x80 | 63, 0x80 | 62] // :method POST; :authority (63); te (62)
    }

    fn connection(blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut c = PREFACE.to_vec();
        c.extend(frame(0x4, 0, 0, &[0, 4, 0, 0, 0xff, 0xff])); // SETTINGS
        for (i, b) in blocks.iter().enumerate() {
            let stream = 1 + 2 * i as u32;
            c.extend(frame(HEADERS, END_HEADERS, stream, b));
            c.extend(frame(0x0, END_STREAM, stream, b"\0\0\0\0\x05hello")); // DATA
        }
        c
    }

    fn run(filter: &mut Filter, bytes: &[u8], step: usize) -> Result<Vec<u8>, FilterError> {
        let (mut input, mut output) = (BytesMut::new(), BytesMut::new());
        for chunk in bytes.chunks(step) {
            input.extend_from_slice(chunk);
            filter.process(&mut input, &mut output)?;
        }
        assert!(input.is_empty(), "every complete frame is passed on");
        Ok(output.to_vec())
    }

    /// The frames after the preface: (type, flags, stream, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert_eq!(&bytes[..PREFACE.len()], PREFACE);
        bytes = &bytes[PREFACE.len()..];
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let head = FrameHead::parse(bytes);
            let end = FRAME_HEADER_BYTES + head.length;
            let stream = stream_number(head.stream_id);
            out.push((head.kind, head.flags, stream, bytes[FRAME_HEADER_BYTES..end].to_vec()));
            bytes = &bytes[end..];
        }
        out
    }

    /// The header lists the server decodes, with a decoder of its own.
    fn server_headers(bytes: &[u8]) -> Vec<Vec<(String, String)>> {
        let mut decoder = loona_hpack::Decoder::new();
        let mut lists = Vec::new();
        let mut block = Vec::new();
        for (kind, flags, _, payload) in frames(bytes) {
            if kind == HEADERS || kind == CONTINUATION {
                let priority = if flags & PRIORITY != 0 { PRIORITY_BYTES } else { 0 };
                block.extend(&payload[priority..]);
                if flags & END_HEADERS != 0 {
                    let list = decoder.decode(&std::mem::take(&mut block)).unwrap();
                    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
                    lists.push(list.into_iter().map(|(n, v)| (text(n), text(v))).collect());
                }
            }
        }
        lists
    }

    fn authorities(bytes: &[u8]) -> Vec<String> {
        let lists = server_headers(bytes);
        let authority = |l: &Vec<(String, String)>| {
            l.iter().find(|(n, _)| n == ":authority").map(|(_, v)| v.clone()).unwrap()
        };
        lists.iter().map(authority).collect()
    }

    #[test]
    fn a_url_authority_becomes_host_port_on_every_request() {
        let sent = connection(&[first_block(AUTHORITY_URL), later_block(), later_block()]);
        let mut filter = Filter::new();
        let seen = run(&mut filter, &sent, sent.len()).unwrap();
        assert!(filter.is_rewriting());
        assert_eq!(authorities(&seen), vec!["127.0.0.1:2379"; 3]);
        let field = |n: &str, v: &str| (n.to_string(), v.to_string());
        let (method, authority) = (field(":method", "POST"), field(":authority", "127.0.0.1:2379"));
        let te = field("te", "trailers");
        let first = vec![method.clone(), field(":path", "/x"), authority.clone(), te.clone()];
        let later = vec![method, authority, te];
        assert_eq!(server_headers(&seen), [first, later.clone(), later]);
        // Everything but the header blocks is passed on unchanged, in order.
        let kept =
            |b: &[u8]| -> Vec<_> { frames(b).into_iter().filter(|f| f.0 != HEADERS).collect() };
        assert_eq!(kept(&seen), kept(&sent));
        assert_eq!(frames(&seen).len(), frames(&sent).len());
    }

    #[test]
    fn a_well_formed_authority_leaves_the_connection_byte_for_byte() {
        let mut huffman = vec![0x83, 0x41, 0x80 | HUFFMAN_WWW_EXAMPLE_COM.len() as u8];
        huffman.extend_from_slice(&HUFFMAN_WWW_EXAMPLE_COM);
        let good = [
            (first_block(b"127.0.0.1:2379"), later_block(), "127.0.0.1:2379"),
            (huffman, vec![0x83, 0x80 | 62], "www.example.com"),
            (vec![0x83], vec![0x83], ""),
        ];
        for (first, later, authority) in good {
            let sent = connection(&[first, later]);
            let mut filter = Filter::new();
            assert_eq!(run(&mut filter, &sent, 7).unwrap(), sent);
            assert!(filter.is_transparent());
            if !authority.is_empty() {
                assert_eq!(authorities(&sent), [authority; 2], "the blocks decode as intended");
            }
        }
    }

    #[test]
    fn bytes_arriving_one_at_a_time_give_the_same_result() {
        let sent = connection(&[first_block(AUTHORITY_URL), later_block()]);
        let whole = run(&mut Filter::new(), &sent, sent.len()).unwrap();
        assert_eq!(run(&mut Filter::new(), &sent, 1).unwrap(), whole);
        assert_eq!(run(&mut Filter::new(), &sent, 10).unwrap(), whole);
    }

    #[test]
    fn continuation_padding_priority_and_end_stream_survive_the_rewrite() {
        let block = first_block(AUTHORITY_URL);
        let (a, b) = block.split_at(10);
        let mut payload = vec![3]; // pad length
        payload.extend_from_slice(&[0x80, 0, 0, 1, 200]); // exclusive, depends on 1, weight
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0, 0]);
        let mut sent = PREFACE.to_vec();
        sent.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 3, &payload));
        sent.extend(frame(CONTINUATION, END_HEADERS, 3, b));
        let seen = run(&mut Filter::new(), &sent, sent.len()).unwrap();
        let f = frames(&seen);
        assert_eq!(f.len(), 1, "the block fits one frame");
        let (kind, flags, stream, payload) = &f[0];
        assert_eq!((*kind, *flags, *stream), (HEADERS, PRIORITY | END_STREAM | END_HEADERS, 3));
        assert_eq!(payload[..5], [0x80, 0, 0, 1, 200]);
        assert_eq!(authorities(&seen), ["127.0.0.1:2379"]);
    }

    #[test]
    fn a_rewritten_block_larger_than_a_frame_is_cut_into_continuations() {
        let mut block = first_block(AUTHORITY_URL);
        block.push(0x00);
        encode_string(b"x-big", &mut block);
        encode_string(&vec![b'v'; 40_000], &mut block);
        let (a, b) = block.split_at(block.len() / 2);
        let (b, c) = b.split_at(b.len() / 2);
        let mut sent = PREFACE.to_vec();
        sent.extend(frame(HEADERS, 0, 1, a));
        sent.extend(frame(CONTINUATION, 0, 1, b));
        sent.extend(frame(CONTINUATION, END_HEADERS, 1, c));
        let seen = run(&mut Filter::new(), &sent, 1000).unwrap();
        let f = frames(&seen);
        let kinds: Vec<(u8, u8)> = f.iter().map(|f| (f.0, f.1)).collect();
        let c = (CONTINUATION, 0);
        assert_eq!(kinds, [(HEADERS, 0), c, (CONTINUATION, END_HEADERS)]);
        assert!(f.iter().all(|f| f.3.len() <= FRAME_PAYLOAD_BYTES_MAX && f.2 == 1));
        assert_eq!(authorities(&seen), ["127.0.0.1:2379"]);
        assert_eq!(server_headers(&seen)[0][4].1.len(), 40_000);
    }

    #[test]
    fn oversized_header_blocks_and_lists_close_a_rewritten_connection() {
        let mut sent = connection(&[first_block(AUTHORITY_URL)]);
        let len = HEADER_BLOCK_BYTES_MAX + 1;
        sent.extend(frame(HEADERS, END_HEADERS, 3, &vec![0x83; len]));
        let e = run(&mut Filter::new(), &sent, 4096).unwrap_err();
        assert!(e.0.contains("header block over"), "{e}");

        // 2000 references to a 100-byte dynamic entry: a small block, a large list.
        let mut sent = connection(&[first_block(AUTHORITY_URL)]);
        let mut big = vec![0x40];
        encode_string(b"x-a", &mut big);
        encode_string(&[b'a'; 100], &mut big);
        big.extend(std::iter::repeat_n(0x80 | 62, 2000));
        sent.extend(frame(HEADERS, END_HEADERS, 3, &big));
        let e = run(&mut Filter::new(), &sent, sent.len()).unwrap_err();
        assert!(e.0.contains("header list over"), "{e}");
    }

    #[test]
    fn broken_framing_inside_a_header_block_is_refused() {
        let mut sent = connection(&[first_block(AUTHORITY_URL)]);
        sent.extend(frame(HEADERS, 0, 3, &[0x83]));
        sent.extend(frame(0x0, 0, 3, b"data"));
        assert!(run(&mut Filter::new(), &sent, sent.len()).is_err());
        let mut sent = connection(&[first_block(AUTHORITY_URL)]);
        sent.extend(frame(HEADERS, 0, 3, &[0x83]));
        sent.extend(frame(CONTINUATION, END_HEADERS, 5, &[0x83]));
        assert!(run(&mut Filter::new(), &sent, sent.len()).is_err());
        let mut sent = connection(&[first_block(AUTHORITY_URL)]);
        sent.extend(frame(HEADERS, END_HEADERS | PADDED, 3, &[9, 0x83]));
        assert!(run(&mut Filter::new(), &sent, sent.len()).is_err());
    }

    #[test]
    fn what_is_not_http2_or_cannot_be_mended_passes_through() {
        let http1 = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(run(&mut Filter::new(), &http1, 3).unwrap(), http1);
        for authority in [&b"not an authority"[..], b"http://bad host:1"] {
            let sent = connection(&[first_block(authority), later_block()]);
            let mut filter = Filter::new();
            assert_eq!(run(&mut filter, &sent, sent.len()).unwrap(), sent);
            assert!(filter.is_transparent());
        }
        // An HPACK error is h2's to report: the block goes on as it came.
        let sent = connection(&[vec![0x80 | 70]]);
        assert_eq!(run(&mut Filter::new(), &sent, sent.len()).unwrap(), sent);
    }

    /// Reads everything the wrapper yields, `chunk` bytes at a time.
    async fn read_through(sent: Vec<u8>, chunk: usize) -> std::io::Result<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for piece in sent.chunks(3) {
                client.write_all(piece).await.unwrap();
            }
        });
        let mut fixed = AuthorityFix::new(server);
        let mut seen = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = fixed.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        writer.await.unwrap();
        Ok(seen)
    }

    #[tokio::test]
    async fn the_connection_wrapper_yields_what_the_filter_makes() {
        for first in [first_block(AUTHORITY_URL), first_block(b"127.0.0.1:2379")] {
            let sent = connection(&[first, later_block(), later_block()]);
            let expected = run(&mut Filter::new(), &sent, sent.len()).unwrap();
            for chunk in [1, 5, 4096] {
                assert_eq!(read_through(sent.clone(), chunk).await.unwrap(), expected);
            }
            // A client gone mid-frame: what it sent reaches h2, then the end.
            let cut = sent[..sent.len() - 4].to_vec();
            let seen = read_through(cut, 100).await.unwrap();
            assert_eq!(seen.len(), expected.len() - 4, "everything but the missing bytes");
            let inside_first_headers = PREFACE.len() + 15 + FRAME_HEADER_BYTES + 2;
            let cut = sent[..inside_first_headers].to_vec();
            assert_eq!(read_through(cut.clone(), 100).await.unwrap(), cut);
        }
        let mut broken = connection(&[first_block(AUTHORITY_URL)]);
        broken.extend(frame(HEADERS, 0, 3, &[0x83]));
        broken.extend(frame(0x0, 0, 3, b"data"));
        let e = read_through(broken, 100).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn fixed_authority_strips_the_scheme_and_path_of_a_url_only() {
        let fixed = |a: &str| fixed_authority(a.as_bytes()).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(fixed("http://127.0.0.1:2379").as_deref(), Some("127.0.0.1:2379"));
        assert_eq!(fixed("https://etcd.example:2379/").as_deref(), Some("etcd.example:2379"));
        assert_eq!(fixed("unix+tcp://[::1]:2379/x?y").as_deref(), Some("[::1]:2379"));
        assert_eq!(fixed("127.0.0.1:2379"), None, "already well formed");
        assert_eq!(fixed("localhost"), None);
        assert_eq!(fixed("://127.0.0.1:2379"), None, "no scheme");
        assert_eq!(fixed("http://"), None, "no host");
    }
}
