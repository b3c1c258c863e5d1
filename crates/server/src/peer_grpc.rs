//! The gRPC peer service as the peer port serves it: the generated `PeerServer`, except
//! that the two calls whose request carries a repeated field a peer may fill at will —
//! `Stream`'s batches of Raft messages and `ForwardBatch`'s forwarded writes — decode
//! through a [`CountingCodec`], which counts that field in the encoded bytes and refuses
//! the message past its bound before anything is decoded.
//!
//! Why: protobuf spends 2 bytes on an empty element of a repeated field, the decoded
//! form far more (192 bytes for a Raft `Message`, 32 for a `Bytes` command, plus
//! the vector's spare capacity), so one gRPC message at [`PEER_MESSAGE_BYTES_MAX`] made
//! of empty elements had a member allocate over a gigabyte before any check could run.
//! The frame stream counts its `Batch` and `Forward` frames the same way, against the
//! same bounds ([`BATCH_MESSAGES_MAX`], [`FORWARD_BATCH_COMMANDS_MAX`]) with the same
//! code ([`count_field`]); a member of this version splits what it sends by count on
//! both transports, so only a buggy or hostile peer meets the refusal.
//!
//! The wire does not change: same paths, same messages, same encoding, so members of
//! earlier versions talk to this one as before; only the order (count, then decode) is
//! ours. A refused message ends the call with `INVALID_ARGUMENT` saying how many there
//! were, where, the bound, and that the sender must split.

use crate::peer::{PeerService, FORWARD_BATCH_COMMANDS_MAX, PEER_MESSAGE_BYTES_MAX};
use crate::peer_forward::count_field;
use crate::peer_frame::BATCH_MESSAGES_MAX;
use bytes::Buf;
use proto::peer::peer_server::{self, Peer, PeerServer};
use proto::peer::{ForwardBatchRequest, ForwardBatchResponse, MessageBatch, StreamAck};
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::codegen::{http, Body, BoxFuture, Context, Poll, Service, StdError};
use tonic::server::{ClientStreamingService, Grpc, NamedService, UnaryService};
use tonic::{Status, Streaming};

/// Which repeated field of a request message is counted before it is decoded, its
/// bound, and the words of the refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// The field's number (top level of the message).
    pub field: u64,
    /// The most occurrences accepted in one message.
    pub max: usize,
    /// What one occurrence is, plural ("Raft messages").
    pub items: &'static str,
    /// The message and the call it arrives on ("MessageBatch on the gRPC peer stream").
    pub place: &'static str,
}

/// `Stream`: the messages of one `MessageBatch` (field 2), as a `Batch` frame's.
pub const STREAM_BOUND: Bound = Bound {
    field: 2,
    max: BATCH_MESSAGES_MAX,
    items: "Raft messages",
    place: "MessageBatch on the gRPC peer stream (raftkv.peer.Peer/Stream)",
};

/// `ForwardBatch`: the commands of one `ForwardBatchRequest` (field 2), as a `Forward`
/// frame's.
pub const FORWARD_BATCH_BOUND: Bound = Bound {
    field: 2,
    max: FORWARD_BATCH_COMMANDS_MAX,
    items: "forwarded writes",
    place: "ForwardBatchRequest (raftkv.peer.Peer/ForwardBatch)",
};

impl Bound {
    /// `Ok` if `encoded` is a protobuf message with at most [`Bound::max`] occurrences
    /// of the field; else the refusal. Allocates nothing on the way.
    pub fn check(&self, encoded: &[u8]) -> Result<(), Status> {
        if count_field(encoded, self.field, self.max).is_ok() {
            return Ok(());
        }
        // Refused: walk it once more, to the end, for the count the refusal names.
        Err(match count_field(encoded, self.field, usize::MAX) {
            Ok(n) => Status::invalid_argument(format!(
                "{n} {} in one {} (at most {}): the sender must split larger batches",
                self.items, self.place, self.max
            )),
            Err(e) => self.undecodable(e),
        })
    }

    /// The refusal of a message that is not protobuf.
    fn undecodable(&self, why: impl std::fmt::Display) -> Status {
        Status::invalid_argument(format!("undecodable {}: {why}", self.place))
    }
}

/// Encodes `T` as tonic's prost codec does; decodes `U` only after [`Bound::check`].
#[derive(Debug)]
pub struct CountingCodec<T, U> {
    bound: Bound,
    _types: PhantomData<fn() -> (T, U)>,
}

impl<T, U> CountingCodec<T, U> {
    /// A codec refusing requests past `bound`.
    pub fn new(bound: Bound) -> Self {
        CountingCodec { bound, _types: PhantomData }
    }
}

impl<T, U> Codec for CountingCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = CountingDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CountingDecoder { bound: self.bound, _type: PhantomData }
    }
}

/// The decoding half of [`CountingCodec`].
#[derive(Debug)]
pub struct CountingDecoder<U> {
    bound: Bound,
    _type: PhantomData<fn() -> U>,
}

impl<U: prost::Message + Default> Decoder for CountingDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // Exactly one whole message; tonic holds it in one buffer, so this is no copy.
        let encoded = src.copy_to_bytes(src.remaining());
        self.bound.check(&encoded)?;
        U::decode(encoded).map(Some).map_err(|e| self.bound.undecodable(e))
    }
}

/// The `raftkv.peer.Peer` service of a [`PeerService`], with `Stream` and
/// `ForwardBatch` requests counted before decoding (the rest as generated).
#[derive(Clone)]
pub struct CountedPeerServer {
    svc: Arc<PeerService>,
    generated: PeerServer<PeerService>,
}

impl CountedPeerServer {
    /// Serves `svc`, with messages up to [`PEER_MESSAGE_BYTES_MAX`] each way.
    pub fn new(svc: Arc<PeerService>) -> Self {
        let generated = PeerServer::from_arc(svc.clone())
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
        CountedPeerServer { svc, generated }
    }
}

impl NamedService for CountedPeerServer {
    const NAME: &'static str = peer_server::SERVICE_NAME;
}

/// The paths of the two calls, as the generated client sends them.
const STREAM_PATH: &str = "/raftkv.peer.Peer/Stream";
const FORWARD_BATCH_PATH: &str = "/raftkv.peer.Peer/ForwardBatch";

fn grpc<T, U>(bound: Bound) -> Grpc<CountingCodec<T, U>>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    let max = Some(PEER_MESSAGE_BYTES_MAX);
    Grpc::new(CountingCodec::new(bound)).apply_max_message_size_config(max, max)
}

impl<B> Service<http::Request<B>> for CountedPeerServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let svc = self.svc.clone();
        match req.uri().path() {
            STREAM_PATH => Box::pin(async move {
                Ok(grpc(STREAM_BOUND).client_streaming(StreamCall(svc), req).await)
            }),
            FORWARD_BATCH_PATH => Box::pin(async move {
                Ok(grpc(FORWARD_BATCH_BOUND).unary(ForwardBatchCall(svc), req).await)
            }),
            _ => self.generated.call(req),
        }
    }
}

/// `Stream`, handed to [`PeerService`]'s own handler.
struct StreamCall(Arc<PeerService>);

impl ClientStreamingService<MessageBatch> for StreamCall {
    type Response = StreamAck;
    type Future = BoxFuture<tonic::Response<StreamAck>, Status>;

    fn call(&mut self, request: tonic::Request<Streaming<MessageBatch>>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move { svc.stream(request).await })
    }
}

/// `ForwardBatch`, handed to [`PeerService`]'s own handler.
struct ForwardBatchCall(Arc<PeerService>);

impl UnaryService<ForwardBatchRequest> for ForwardBatchCall {
    type Response = ForwardBatchResponse;
    type Future = BoxFuture<tonic::Response<ForwardBatchResponse>, Status>;

    fn call(&mut self, request: tonic::Request<ForwardBatchRequest>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move { svc.forward_batch(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use prost::Message as _;
    use proto::peer::Message;

    fn batch(n: usize) -> Vec<u8> {
        MessageBatch { cluster_id: u64::MAX, messages: vec![Message::default(); n] }.encode_to_vec()
    }

    fn forward_batch(n: usize) -> Vec<u8> {
        ForwardBatchRequest { cluster_id: 7, commands: vec![Bytes::new(); n] }.encode_to_vec()
    }

    /// Forgery: a batch of 2-byte empty elements is refused past the bound, naming the
    /// count, the bound and the call; at the bound it passes (both bounds, both fields).
    #[test]
    fn repeated_fields_past_the_bound_are_refused_by_count() {
        for (bound, encode) in
            [(STREAM_BOUND, batch as fn(usize) -> Vec<u8>), (FORWARD_BATCH_BOUND, forward_batch)]
        {
            assert!(bound.check(&encode(0)).is_ok());
            assert!(bound.check(&encode(bound.max)).is_ok(), "at the bound");
            // A whole 16 MiB message of them, as a hostile peer would send it.
            let most = PEER_MESSAGE_BYTES_MAX / 2;
            let hostile = [0x12, 0x00].repeat(most);
            for (n, encoded) in [(bound.max + 1, encode(bound.max + 1)), (most, hostile)] {
                let refused = bound.check(&encoded).unwrap_err();
                assert_eq!(refused.code(), tonic::Code::InvalidArgument);
                let counted =
                    format!("{n} {} in one {} (at most {})", bound.items, bound.place, bound.max);
                assert!(refused.message().starts_with(&counted), "{}", refused.message());
            }
        }
    }

    /// Bytes that are not protobuf are refused as such, not counted as a batch.
    #[test]
    fn garbage_is_refused_as_undecodable() {
        let mut truncated = batch(3);
        truncated.pop();
        for garbage in [&truncated[..], &[0x13], &[0xff; 11]] {
            let refused = STREAM_BOUND.check(garbage).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument);
            assert!(refused.message().starts_with("undecodable MessageBatch"), "{refused:?}");
        }
    }
}
